"""albert_jax.data.sources, the text sources: the source specs (the built-in corpus among them), text files in
the google-research/albert format, tfds."""

import sys
import time

import numpy as np
import pytest

from albert_jax.data.corpus import builtin_corpus, write_corpus
from albert_jax.data.sources import load_source, load_tfds_text, read_text_files, text_to_sentences


def test_text_files_round_trip_and_globs(tmp_path):
    docs_a = [["First sentence of doc one.", "Second sentence."], ["Doc two only line."]]
    docs_b = [["Another file.", "With two lines."]]
    write_corpus(docs_a, tmp_path / "part1.txt")
    write_corpus(docs_b, tmp_path / "part2.txt")
    assert read_text_files(tmp_path / "part1.txt") == docs_a
    assert read_text_files(str(tmp_path / "part*.txt")) == docs_a + docs_b
    assert read_text_files([str(tmp_path / "part2.txt"), str(tmp_path / "part1.txt")]) == docs_b + docs_a
    assert load_source(f"files:{tmp_path}/part2.txt,{tmp_path}/part1.txt") == docs_b + docs_a
    # Several blank lines and surrounding whitespace separate documents just the same.
    (tmp_path / "messy.txt").write_text("\n\n  a b c  \nd e\n\n\n\nf g\n")
    assert read_text_files(tmp_path / "messy.txt") == [["a b c", "d e"], ["f g"]]


def test_text_file_errors_name_the_path(tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="nope.txt"):
        read_text_files(missing)
    with pytest.raises(ValueError, match=r"none\*\.txt"):
        read_text_files(str(tmp_path / "none*.txt"))
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="empty.txt"):
        read_text_files(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="empty.txt"):
        load_source(f"files:{tmp_path}/empty.txt")


def test_invalid_utf8_names_file_line_and_column(tmp_path):
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    # Line 3 (a blank line counts, "\r\n" is one line break) holds 0xff after the 5 characters "Abcdé" (6 bytes).
    (corpus_dir / "a.txt").write_bytes(b"One line.\r\n\nAbcd\xc3\xa9\xff tail.\n")
    with pytest.raises(ValueError, match=r"corpus/a\.txt line 3: not valid UTF-8 \(byte 0xff at column 6\)$"):
        read_text_files(str(corpus_dir / "*.txt"))
    (corpus_dir / "a.txt").write_bytes(b"fine\n\nb\xc3(c\n")  # a truncated two-byte sequence
    with pytest.raises(ValueError, match=r"a\.txt line 3: not valid UTF-8 \(byte 0xc3 at column 2\)"):
        load_source(f"files:{corpus_dir}/a.txt")


def test_tfds_without_tensorflow_datasets_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes `import tensorflow_datasets` fail
    with pytest.raises(
        ImportError,
        match='need tensorflow-datasets .*; install them with: pip install "albert-jax'
        r'\[tfds\]"',
    ) as error:
        load_source("tfds:imdb_reviews")
    assert "tensorflow_datasets" in str(error.value)
    assert error.value.__cause__ is None and error.value.__suppress_context__  # no ModuleNotFoundError traceback


def test_load_source_specs():
    assert load_source("builtin") == builtin_corpus()
    assert load_source("builtin", max_documents=3) == builtin_corpus()[:3]
    for bad in ("", "builtins", "files:", "tfds:", "hub:bert", "builtin:x"):
        with pytest.raises(ValueError, match="spec"):
            load_source(bad)


def test_text_to_sentences():
    assert text_to_sentences("Line one. Still line one!\n\nLine two\n") == ["Line one.", "Still line one!", "Line two"]


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    """A tfds text dataset built locally: 'train' has 4 examples, 'test' 2; features text/title/label."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class AlbertJaxTinyText(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "title": tfds.features.Text(),
                        "text": tfds.features.Text(),
                        "label": tfds.features.Scalar(np.int64),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(4), "test": self._generate_examples(2, offset=10)}

        def _generate_examples(self, n, offset=0):
            for i in range(offset, offset + n):
                text = f"Document {i} starts here. It goes on!\nA new line {i}." if i != 2 else ""
                yield i, {"title": f"Title {i}.", "text": text, "label": i}

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    return "albert_jax_tiny_text", data_dir


def test_tfds_text(tiny_tfds):
    name, data_dir = tiny_tfds
    docs = load_tfds_text(name, data_dir=data_dir)
    # Example 2 has no text and is skipped; the order is tfds' own (deterministic).
    assert sorted(docs) == [[f"Document {i} starts here.", "It goes on!", f"A new line {i}."] for i in (0, 1, 3)]
    assert load_tfds_text(name, data_dir=data_dir) == docs
    assert len(load_tfds_text(name, data_dir=data_dir, max_documents=2)) == 2
    titles = load_tfds_text(name, split="test", data_dir=data_dir, text_key="title")
    assert sorted(titles) == [["Title 10."], ["Title 11."]]
    assert load_source(f"tfds:{name}", data_dir=data_dir) == docs
    assert sorted(load_source(f"tfds:{name}:1.0.0:test", data_dir=data_dir)) == sorted(
        [[f"Document {i} starts here.", "It goes on!", f"A new line {i}."] for i in (10, 11)]
    )
    assert len(load_source(f"tfds:{name}:train[:2]", data_dir=data_dir)) <= 2
    with pytest.raises(ValueError, match="no_such_feature"):
        load_tfds_text(name, data_dir=data_dir, text_key="no_such_feature")


def test_tfds_unknown_dataset_fails_fast(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    start = time.perf_counter()
    with pytest.raises(ValueError, match="no_such_dataset_xyz.*list_builders"):
        load_tfds_text("no_such_dataset_xyz", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="no_such_dataset_xyz"):
        load_source("tfds:no_such_dataset_xyz:train")
    assert time.perf_counter() - start < 10
    assert not any(tmp_path.iterdir()), "nothing downloaded or created"
