"""Input data: text sources (built-in corpus, text files, tfds) and ALBERT pretraining examples."""

from albert_jax.data.corpus import builtin_corpus, write_corpus
from albert_jax.data.pretraining import create_examples, examples_to_arrays
from albert_jax.data.sources import load_source, load_tfds_text, read_text_files

__all__ = [
    "builtin_corpus",
    "write_corpus",
    "read_text_files",
    "load_tfds_text",
    "load_source",
    "create_examples",
    "examples_to_arrays",
]
