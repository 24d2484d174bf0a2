"""albert_jax.data.corpus, the built-in corpus: deterministic, its size and English prose, code and markup
dropped from its documents."""

from albert_jax.data import corpus
from albert_jax.data.corpus import builtin_corpus, clean_document, split_sentences, write_corpus


def test_builtin_corpus_is_deterministic():
    docs = builtin_corpus()
    assert builtin_corpus() == docs  # cached
    corpus._builtin_corpus.cache_clear()  # built again by a fresh interpreter
    assert builtin_corpus() == docs


def test_builtin_corpus_size_and_english(tmp_path):
    docs = builtin_corpus()
    sentences = [s for doc in docs for s in doc]
    write_corpus(docs, tmp_path / "corpus.txt")
    size = (tmp_path / "corpus.txt").stat().st_size
    assert 0.8e6 < size < 20e6, size
    assert len(docs) > 1500 and len(sentences) > 8000
    assert all(len(doc) >= 2 for doc in docs)
    assert sum(" " in s for s in sentences) > 0.99 * len(sentences)
    assert sum(">>>" in s or "::" in s for s in sentences) < 0.001 * len(sentences)
    assert sum(s[-1] in ".!?:\"')”" for s in sentences) > 0.99 * len(sentences)
    words = " ".join(sentences).lower().split()
    for common in ("the", "is", "of", "a", "to"):
        assert words.count(common) > 0.005 * len(words), common
    assert sum(w.isalpha() for w in words) > 0.7 * len(words)


def test_clean_document_drops_code_and_markup():
    doc = """Short summary of :func:`foo` and ``bar``.

    Longer text with *emphasis* and **strong** words. It has a second sentence, e.g. this one!

    Example::

        x = foo(1)
        print(x)

    >>> foo(2)
    4

    Parameters
    ----------
    .. versionadded:: 3.2

    * A list item that is prose.
    """
    assert clean_document(doc) == [
        "Short summary of foo and bar.",
        "Longer text with emphasis and strong words.",
        "It has a second sentence, e.g. this one!",
        "A list item that is prose.",
    ]
    assert split_sentences("One two three. Four five six?  Seven (etc.) eight.") == [
        "One two three.",
        "Four five six?",
        "Seven (etc.) eight.",
    ]
