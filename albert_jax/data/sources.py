"""Text sources for pretraining. Each returns documents: ``list[list[str]]``, a document being a
list of sentence strings (the google-research/albert format).

Sources: the built-in corpus (``albert_jax.data.corpus``), local text files (one sentence per line,
a blank line between documents) and any tensorflow-datasets text dataset. ``load_source`` picks one
from a string spec, so a config can name its corpus with one field.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from collections.abc import Iterator, Sequence

from albert_jax.data.corpus import builtin_corpus, split_sentences

_GLOB_CHARS = re.compile(r"[*?\[]")
# "name", "name:1.2.0", "name:train", "name:1.2.0:train[:10%]": a version is the only ':'-part
# made of three dot-separated numbers (or '*'), everything after the next ':' is the split.
_TFDS_SPEC = re.compile(r"^(?P<name>[^:\[]+(?::(?:\d+|\*)(?:\.(?:\d+|\*)){2})?)(?::(?P<split>.+))?$")
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # a byte that is not UTF-8, read with errors="surrogateescape"
_PREFERRED_TEXT_KEYS = ("text", "content", "document", "article", "body", "sentence")


def read_text_files(patterns: str | Sequence[str]) -> list[list[str]]:
    """Reads text files in the google-research/albert format.

    Args:
      patterns: a path or glob, or a sequence of them. Each pattern's matches are read in sorted
        order, patterns in the given order.

    Returns:
      Documents (lists of non-empty, stripped lines); blank lines separate documents.

    Raises:
      ValueError: a pattern matches no file (the pattern is named), a file holds no text, or a line is
        not valid UTF-8 (the file, line and column are named).
    """
    return list(iter_text_files(patterns))


def iter_text_files(patterns: str | Sequence[str]) -> Iterator[list[str]]:
    """`read_text_files` as a stream: one document in memory at a time. The patterns are expanded (and a
    pattern matching no file is reported) on the call, before the first document."""
    return _iter_files(expand_patterns(patterns))


def expand_patterns(patterns: str | Sequence[str]) -> list[str]:
    """The files of paths/globs (each pattern's matches sorted, patterns in order); ValueError naming a
    pattern that matches no file."""
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    files = []
    for pattern in map(os.fspath, patterns):
        paths = sorted(glob.glob(pattern)) if _GLOB_CHARS.search(pattern) else [pattern]
        paths = [p for p in paths if os.path.isfile(p)]
        if not paths:
            raise ValueError(f"No file matches {pattern!r}")
        files.extend(paths)
    return files


def _iter_files(paths: list[str]) -> Iterator[list[str]]:
    for path in paths:
        empty = True
        for document in _read_text_file(path):
            empty = False
            yield document
        if empty:
            raise ValueError(f"Text file {path!r} is empty (no non-blank line)")


def _read_text_file(path: str) -> Iterator[list[str]]:
    """Documents of one file; ValueError naming the line and column of a byte that is not UTF-8."""
    current = []
    # surrogateescape turns each undecodable byte into one lone surrogate, so that the line, which
    # a strict decoder's chunk offsets do not give, can be named.
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for number, line in enumerate(f, 1):
            if bad := _ESCAPED_BYTE.search(line):
                raise ValueError(
                    f"{path} line {number}: not valid UTF-8 (byte 0x{ord(bad.group()) - 0xDC00:02x} "
                    f"at column {bad.start() + 1})"
                )
            line = line.strip()
            if line:
                current.append(line)
            elif current:
                yield current
                current = []
    if current:
        yield current


def text_to_sentences(text: str) -> list[str]:
    """Splits a document's text into sentences: by lines first, then with the regex splitter of
    ``albert_jax.data.corpus.split_sentences``."""
    return [s for line in text.splitlines() for s in split_sentences(line)]


def load_tfds_text(
    name: str,
    split: str = "train",
    text_key: str | None = None,
    data_dir: str | None = None,
    max_documents: int | None = None,
) -> list[list[str]]:
    """Loads a text dataset from tensorflow-datasets, one example = one document.

    Args:
      name: a tfds name, e.g. ``"wikipedia/20230601.en"`` or ``"imdb_reviews:1.0.0"``. The dataset
        is downloaded and prepared if it is not in ``data_dir`` yet (a no-op otherwise).
      split: a tfds split, slicing allowed (``"train[:1%]"``).
      text_key: the feature holding the text; found automatically when None (the only text
        feature, else one named like ``text``/``content``/``article``).
      data_dir: tfds data directory (tfds' default when None).
      max_documents: read at most this many examples.

    Returns:
      Documents: each example's text split into sentences (by lines, then by the regex sentence
      splitter); examples without text are skipped. Order is the dataset's deterministic order.

    Raises:
      ValueError: unknown dataset (raised before any download), no usable text feature, or no text.
      ImportError: tensorflow-datasets or tensorflow is missing (the message names the pip extra).
    """
    documents = list(iter_tfds_text(name, split, text_key, data_dir, max_documents))
    if not documents:
        raise ValueError(f"tfds dataset {name!r} split {split!r} holds no text")
    return documents


def iter_tfds_text(
    name: str,
    split: str = "train",
    text_key: str | None = None,
    data_dir: str | None = None,
    max_documents: int | None = None,
) -> Iterator[list[str]]:
    """`load_tfds_text` as a stream: examples are read one at a time, never the whole split. The dataset
    is checked (and prepared if needed) on the call, before the first document."""
    try:  # tensorflow_datasets first: without it, fail before the slow tensorflow import
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            f"tfds sources need tensorflow-datasets and tensorflow ({e}); install them with: "
            'pip install "albert-jax[tfds]"'
        ) from None

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(
            f"Unknown tfds dataset {name!r} (not registered and not found in data_dir={data_dir!r}); "
            "see tfds.list_builders() for the available names"
        ) from e
    key = text_key or _find_text_key(builder.info.features, name)
    if key not in builder.info.features:
        raise ValueError(f"tfds dataset {name!r} has no feature {key!r}; features: {sorted(builder.info.features)}")
    builder.download_and_prepare()
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    if max_documents is not None:
        dataset = dataset.take(max_documents)
    dataset = dataset.map(lambda example: example[key], num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _tfds_documents(tfds.as_numpy(dataset))


def _tfds_documents(texts) -> Iterator[list[str]]:
    for text in texts:
        sentences = text_to_sentences(text.decode("utf-8") if isinstance(text, bytes) else str(text))
        if sentences:
            yield sentences


def _find_text_key(features, name: str) -> str:
    import tensorflow_datasets as tfds

    keys = sorted(k for k, f in features.items() if isinstance(f, tfds.features.Text))
    preferred = [k for k in _PREFERRED_TEXT_KEYS if k in keys]
    if len(keys) == 1 or preferred:
        return preferred[0] if preferred else keys[0]
    raise ValueError(
        f"Cannot tell which feature of tfds dataset {name!r} holds the text (text features: {keys}); pass text_key"
    )


def load_source(spec: str, *, data_dir: str | None = None, max_documents: int | None = None) -> list[list[str]]:
    """Loads documents from a string spec into memory (`iter_source` streams them).

    Specs:
      ``"builtin"``: the built-in corpus (``albert_jax.data.corpus.builtin_corpus``).
      ``"files:<glob>[,<glob>...]"``: text files, see ``read_text_files``.
      ``"tfds:<name>[:<version>][:<split>]"``: see ``load_tfds_text`` (split defaults to train).

    ``data_dir`` is tfds' data directory; ``max_documents`` keeps the first documents only.

    Returns:
      Documents (``list[list[str]]``), never empty.

    Raises:
      ValueError: a malformed or unknown spec, or a source without text.
    """
    documents = list(iter_source(spec, data_dir=data_dir, max_documents=max_documents))
    if not documents:
        raise ValueError(f"Source {spec!r} holds no text")
    return documents


def iter_source(spec: str, *, data_dir: str | None = None, max_documents: int | None = None) -> Iterator[list[str]]:
    """The documents of a source spec (see `load_source`) as a stream, one document in memory at a time.
    The spec, the files and the tfds dataset are checked on the call."""
    kind, _, rest = spec.partition(":")
    if kind == "builtin" and not rest:
        documents = iter(builtin_corpus())
    elif kind == "files" and rest:
        documents = iter_text_files([p for p in rest.split(",") if p])
    elif kind == "tfds" and (match := _TFDS_SPEC.match(rest)):
        documents = iter_tfds_text(
            match["name"], split=match["split"] or "train", data_dir=data_dir, max_documents=max_documents
        )
    else:
        raise ValueError(
            f"Bad source spec {spec!r}: expected 'builtin', 'files:<glob>[,<glob>]', "
            "'tfds:<name>[:<split>]' or 'tfrecord:<glob>[,<glob>]'"
        )
    return itertools.islice(documents, max_documents)
