"""Pretraining examples (albert_jax.data.pretraining) checked against the definitions of the ALBERT
paper / google-research/albert create_pretraining_data.py, not against our own earlier output.

Most tests use a synthetic whitespace tokenizer whose every piece is unique, so that each token of
an example tells which document, sentence and position it came from.
"""

import pydoc_data.topics
import string

import numpy as np
import pytest

from albert_jax.data.corpus import builtin_corpus
from albert_jax.data.pretraining import (
    FEATURES,
    choose_masked_spans,
    create_examples,
    create_pairs,
    examples_to_arrays,
    is_start_piece,
    ngram_probabilities,
    truncation_counts,
)
from helpers import CLS, MASK, PAD, SEP, UNK, PieceTokenizer, epoch, restore, synthetic_corpus

SPECIALS = {PAD, UNK, CLS, SEP, MASK}


def doc_of_ids(docs):
    """Corpus stream index -> document index."""
    return np.concatenate([[d] * sum(len(s.split()) for s in doc) for d, doc in enumerate(docs)])


def split_segments(ids):
    seps = np.flatnonzero(ids == SEP)
    assert ids[0] == CLS and len(seps) == 2 and seps[1] == len(ids) - 1
    return ids[1 : seps[0]], ids[seps[0] + 1 : seps[1]]


# The masking tests hold for examples masked once when prepared (static, create_examples) and for every
# epoch of dynamic masking (pairs stored unmasked, masks drawn by the loader).
@pytest.fixture(scope="module", params=["static", "dynamic epoch 0", "dynamic epoch 1"])
def sample(corpus, request):
    docs, tok = corpus
    if request.param == "static":
        return list(create_examples(docs, tok, max_seq_length=128, max_predictions_per_seq=20, seed=1))
    return epoch(request.getfixturevalue("dynamic"), int(request.param[-1]))


def test_format_shapes_dtypes(sample):
    assert len(sample) > 2000
    arrays = examples_to_arrays(sample)
    n = len(sample)
    expected = {
        "input_ids": ((n, 128), np.int32),
        "attention_mask": ((n, 128), np.int32),
        "token_type_ids": ((n, 128), np.int32),
        "masked_lm_positions": ((n, 20), np.int32),
        "masked_lm_ids": ((n, 20), np.int32),
        "masked_lm_weights": ((n, 20), np.float32),
        "sentence_order_label": ((n,), np.int32),
    }
    assert set(arrays) == set(FEATURES) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert arrays[key].shape == shape and arrays[key].dtype == dtype, key
    for ex in sample[:3]:
        assert ex["sentence_order_label"].shape == () and ex["sentence_order_label"].dtype == np.int32


def test_special_tokens_segments_and_padding(sample):
    for ex in sample:
        length = int(ex["attention_mask"].sum())
        assert 5 <= length <= 128 and ex["attention_mask"][:length].all() and not ex["attention_mask"][length:].any()
        ids = ex["input_ids"]
        assert (ids[length:] == PAD).all()
        a, b = split_segments(restore(ex))
        assert len(a) >= 1 and len(b) >= 1
        assert not SPECIALS & (set(a.tolist()) | set(b.tolist()))
        expected_segments = np.zeros(128, np.int32)
        expected_segments[len(a) + 2 : length] = 1
        np.testing.assert_array_equal(ex["token_type_ids"], expected_segments)
        # The specials stay in place: masking never touches [CLS]/[SEP].
        assert ids[0] == CLS and ids[len(a) + 1] == SEP and ids[length - 1] == SEP


def test_masked_positions_and_labels(corpus, sample):
    docs, tok = corpus
    unmasked = list(
        create_examples(docs, tok, max_seq_length=128, max_predictions_per_seq=20, seed=1, masked_lm_prob=0.0)
    )
    assert len(unmasked) == len(sample)
    for ex, plain in zip(sample, unmasked):
        assert plain["masked_lm_weights"].sum() == 0
        # The labels are the original tokens (segments do not depend on the masking settings).
        np.testing.assert_array_equal(restore(ex), restore(plain))
        k = int(ex["masked_lm_weights"].sum())
        positions = ex["masked_lm_positions"][:k]
        assert (np.diff(positions) > 0).all(), "sorted, no duplicates"
        assert not ex["masked_lm_positions"][k:].any() and not ex["masked_lm_ids"][k:].any()
        assert not ex["masked_lm_weights"][k:].any()
        assert not SPECIALS & set(ex["masked_lm_ids"][:k].tolist())


def test_whole_words_are_masked(corpus, sample):
    docs, tok = corpus
    multi_piece_words = 0
    for ex in sample[:1000]:
        ids = restore(ex)
        a, b = split_segments(ids)
        masked = np.zeros(len(ids), bool)
        masked[ex["masked_lm_positions"][: int(ex["masked_lm_weights"].sum())]] = True
        for offset, segment in ((1, a), (len(a) + 2, b)):
            starts = np.array([is_start_piece(p) for p in tok.convert_ids_to_tokens(segment.tolist())])
            starts[0] = True  # a segment's first piece starts a word even if truncation cut it
            word = np.cumsum(starts)
            multi_piece_words += int((np.bincount(word) > 1).sum())
            for w in np.unique(word):
                flags = masked[offset : offset + len(segment)][word == w]
                assert flags.all() or not flags.any(), "a word is masked whole or not at all"
    assert multi_piece_words > 10_000, "the corpus has words of several pieces"


def test_mask_rate_and_budget(sample):
    lengths = np.array([ex["attention_mask"].sum() for ex in sample])
    counts = np.array([ex["masked_lm_weights"].sum() for ex in sample])
    budgets = np.minimum(20, np.maximum(1, np.round(lengths * 0.15)))  # num_to_predict
    assert (counts <= budgets).all() and (counts >= 1).all()
    assert counts.sum() / budgets.sum() > 0.97  # the n-gram search nearly always fills the budget
    assert abs(counts.sum() / lengths.sum() - 0.15) < 0.01


def test_replacement_80_10_10(sample):
    inputs, labels = [], []
    for ex in sample:
        k = int(ex["masked_lm_weights"].sum())
        inputs.append(ex["input_ids"][ex["masked_lm_positions"][:k]])
        labels.append(ex["masked_lm_ids"][:k])
    inputs, labels = np.concatenate(inputs), np.concatenate(labels)
    n = len(inputs)
    assert n > 20000
    is_mask, kept = inputs == MASK, inputs == labels
    is_random = ~is_mask & ~kept
    # 4.5 standard deviations of a binomial fraction: deterministic here, and not a loose bound.
    for fraction, p in ((is_mask.mean(), 0.8), (kept.mean(), 0.1), (is_random.mean(), 0.1)):
        assert abs(fraction - p) < 4.5 * np.sqrt(p * (1 - p) / n), (fraction, p)
    assert not SPECIALS & set(inputs[is_random].tolist()), "random replacements are never special ids"


def test_sentence_order_labels(corpus, sample):
    docs, _ = corpus
    doc_of = doc_of_ids(docs)
    labels = np.array([int(ex["sentence_order_label"]) for ex in sample])
    assert abs(labels.mean() - 0.5) < 4.5 * np.sqrt(0.25 / len(labels))
    for ex, label in zip(sample, labels):
        a, b = (seg - 5 for seg in split_segments(restore(ex)))
        assert len(set(doc_of[np.concatenate([a, b])])) == 1, "both segments come from one document"
        assert (np.diff(a) == 1).all() and (np.diff(b) == 1).all(), "each segment is a contiguous run"
        assert (a[-1] < b[0]) == (label == 0), "label 1 <=> B precedes A in the document"


def test_ngram_length_distribution():
    """The n drawn for an n-gram follows p(n) ∝ 1/n. The first n-gram chosen in a sequence is never
    rejected (nothing is covered yet, the budget fits a 3-gram), so its length is the drawn n unless
    it starts on one of the last two words."""
    probs = ngram_probabilities(3)
    np.testing.assert_allclose(probs, [6 / 11, 3 / 11, 2 / 11])
    rng = np.random.default_rng(0)
    counts = np.zeros(3)
    for _ in range(6000):
        first = choose_masked_spans([1] * 60, 9, probs, rng)[0]
        if first[0] < 58:
            counts[len(first) - 1] += 1
    expected = counts.sum() * probs
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 13.8, (counts / counts.sum(), chi2)  # chi-square, 2 dof, p = 0.001


def test_ngram_spans_respect_budget_and_overlap():
    rng = np.random.default_rng(0)
    probs = ngram_probabilities(3)
    for _ in range(300):
        lengths = rng.integers(1, 4, size=int(rng.integers(5, 80))).tolist()
        budget = int(rng.integers(1, 20))
        spans = choose_masked_spans(lengths, budget, probs, rng)
        words = [w for span in spans for w in span]
        assert len(words) == len(set(words)), "n-grams never overlap"
        assert sum(lengths[w] for w in words) <= budget
        for span in spans:
            assert 1 <= len(span) <= 3 and span == list(range(span[0], span[0] + len(span)))
    assert all(len(s) == 1 for s in choose_masked_spans([1] * 50, 10, ngram_probabilities(1), rng))
    # Words of 3 pieces and a budget of 4: a single word fits, two do not.
    assert [len(s) for s in choose_masked_spans([3] * 20, 4, probs, rng)] == [1]


def _reference_truncation(len_a, len_b, max_num_tokens):
    """The original truncate_seq_pair loop, counting removals."""
    removed = [0, 0]
    while len_a + len_b > max_num_tokens:
        if len_a > len_b:
            len_a, removed[0] = len_a - 1, removed[0] + 1
        else:
            len_b, removed[1] = len_b - 1, removed[1] + 1
    return tuple(removed)


def test_truncation_counts_match_original_loop():
    for len_a in range(1, 25):
        for len_b in range(1, 25):
            for max_num in range(2, 30):
                assert truncation_counts(len_a, len_b, max_num) == _reference_truncation(len_a, len_b, max_num)


def test_truncation_of_long_sentences():
    """Two sentences of 200 pieces per chunk, T = 64: both segments are cut as the original loop
    would, off the front or the back at random, and stay contiguous."""
    docs, tok = synthetic_corpus(200, (4, 200), continuation_prob=0.0)
    examples = list(create_examples(docs, tok, max_seq_length=64, max_predictions_per_seq=10, seed=3))
    assert len(examples) == 400
    removed_a, removed_b = truncation_counts(200, 200, 61)
    front = total = 0
    for ex in examples:
        assert ex["attention_mask"].sum() == 64
        for segment, removed in zip(split_segments(restore(ex)), (removed_a, removed_b)):
            stream = segment - 5
            assert len(segment) == 200 - removed and (np.diff(stream) == 1).all()
            front += stream[0] % 200  # sentences start at multiples of 200 in the stream
            total += removed
    assert abs(front / total - 0.5) < 0.02


def test_short_seq_prob():
    """With sentences of 10 pieces and T = 128 (max 125 tokens), a document's first chunk is full
    length unless its target t (uniform in [2, 125] with probability short_seq_prob) is <= 120:
    P(first example shorter than T) = short_seq_prob * 119 / 124."""
    docs, tok = synthetic_corpus(2000, (20, 10), continuation_prob=0.0)
    doc_of = doc_of_ids(docs)
    for prob in (0.0, 0.1, 1.0):
        first_lengths = {}
        for ex in create_examples(docs, tok, max_seq_length=128, max_predictions_per_seq=20, short_seq_prob=prob):
            first_lengths.setdefault(doc_of[restore(ex)[1] - 5], int(ex["attention_mask"].sum()))
        short = np.mean([length < 128 for length in first_lengths.values()])
        expected = prob * 119 / 124
        assert abs(short - expected) < 4.5 * np.sqrt(max(expected * (1 - expected), 1e-9) / len(first_lengths)) + 1e-9


def test_determinism_and_seeds(corpus):
    docs, tok = corpus
    docs = docs[:60]

    def run(**kw):
        args = dict(max_seq_length=64, max_predictions_per_seq=10, seed=5) | kw
        return examples_to_arrays(list(create_examples(docs, tok, **args)))

    first, again, other = run(), run(), run(seed=6)
    for key in FEATURES:
        np.testing.assert_array_equal(first[key], again[key])
    seen = {row.tobytes() for row in first["input_ids"]}
    assert np.mean([row.tobytes() in seen for row in other["input_ids"]]) < 0.1
    two = run(dupe_factor=2)
    n = len(first["input_ids"])
    assert len(two["input_ids"]) > 1.5 * n
    for key in FEATURES:  # pass 0 is the single-pass run; pass 1 masks and cuts differently
        np.testing.assert_array_equal(two[key][:n], first[key])
    assert np.mean([row.tobytes() in seen for row in two["input_ids"][n:]]) < 0.1


def test_examples_of_a_document_do_not_depend_on_other_documents(corpus):
    docs, tok = corpus
    docs = docs[:30]
    changed = list(docs)
    changed[7] = docs[8]  # the document at index 7 differs, every other one is the same
    doc_of = doc_of_ids(docs)

    def by_document(documents):
        out = {}
        for ex in create_examples(documents, tok, max_seq_length=64, max_predictions_per_seq=10, seed=2):
            key = doc_of[restore(ex)[1] - 5]
            out.setdefault(key, []).append(tuple(np.concatenate([v.ravel() for v in ex.values()]).tolist()))
        return out

    before, after = by_document(docs), by_document(changed)
    for d in range(30):
        if d not in (7, 8):
            assert before[d] == after[d], d


def original_is_start_piece(piece):
    """google-research/albert create_pretraining_data.py `_is_start_piece_sp`, transcribed as it runs
    under Python 3 (six.ensure_str is the identity on str; the bytes it adds never equal a str)."""
    special_pieces = set(list('!"#$%&"()*+,-./:;?@[\\]^_`{|}~'))
    special_pieces.add("€".encode())
    special_pieces.add("£".encode())
    english_chars = set(list("abcdefghijklmnopqrstuvwxyz"))
    return bool(
        piece.startswith("▁")
        or piece.startswith("<")
        or piece in special_pieces
        or not all([str(i).lower() in english_chars.union(special_pieces) for i in piece])
    )


# Pieces on which the former rule ("the first character is not an ASCII letter or digit") and the
# original disagreed: digits anywhere make a start, "'" "=" "<" ">" are not in the original's punctuation
# set, and a piece of several punctuation characters (or "[MASK]") is a continuation.
FORMERLY_WRONG = {
    "1": True,
    "100": True,
    "3.14": True,
    "x2": True,
    "a=": True,
    "s'": True,
    "..": False,
    "--": False,
    '",': False,
    ").": False,
    "()": False,
    "[MASK]": False,
    "": False,
}


def test_is_start_piece():
    for piece in ("▁the", "▁", ",", ".", "(", "<unk>", "é", "€", "'s", "=", "5", *FORMERLY_WRONG):
        assert is_start_piece(piece) == original_is_start_piece(piece), piece
    for piece in ("▁the", "▁", ",", ".", "(", "<unk>", "é", "€", "'s", "="):
        assert is_start_piece(piece), piece
    for piece in ("ing", "s", "X", "s.", "e.g"):
        assert not is_start_piece(piece), piece
    assert {piece: is_start_piece(piece) for piece in FORMERLY_WRONG} == FORMERLY_WRONG


def test_is_start_piece_agrees_with_the_original_on_a_trained_vocabulary(tmp_path):
    """Every piece of a vocabulary trained on text with code, numbers and punctuation (Python's
    language reference): no disagreement with the original rule; the former rule disagreed on ~5%."""
    from albert_jax.tokenizer import AlbertTokenizer, train_spm

    text = "\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    lines = [line for line in text.splitlines() if line.strip()][:8000]
    tok = AlbertTokenizer(train_spm(iter(lines), 1000, str(tmp_path / "sp")))
    pieces = tok.convert_ids_to_tokens(range(tok.vocab_size))
    assert [p for p in pieces if is_start_piece(p) != original_is_start_piece(p)] == []
    formerly = [p for p in pieces if (p[0] not in string.ascii_letters + string.digits) != original_is_start_piece(p)]
    assert len(formerly) > 30 and {"1", "100", "3.14", '",', ").", "()", "[MASK]"} <= set(formerly)


def test_validation():
    docs, tok = synthetic_corpus(2, (3, 5))
    with pytest.raises(ValueError, match="max_seq_length"):
        create_examples(docs, tok, max_seq_length=4, max_predictions_per_seq=2)
    with pytest.raises(ValueError):
        create_examples(docs, tok, max_seq_length=16, max_predictions_per_seq=2, masked_lm_prob=1.5)
    with pytest.raises(ValueError):
        examples_to_arrays([])


def test_documents_of_one_sentence_give_a_clear_error():
    """Sentence-order pairs need two sentences of one document; without any such document the error
    says so (it used to be numpy's "No examples to stack" from examples_to_arrays)."""
    tok = PieceTokenizer(["▁a", "▁b", "▁c"])
    one_sentence_each = [["▁a ▁b"], ["▁c"], ["▁a", "[SEP]"]]  # a sentence of specials only is empty
    message = r"No pretraining example .* 3 documents: .* at least two \(non-empty\) sentences"
    with pytest.raises(ValueError, match=message):
        examples_to_arrays(list(create_examples(one_sentence_each, tok, max_seq_length=16, max_predictions_per_seq=2)))
    assert (
        len(
            list(create_examples([*one_sentence_each, ["▁a", "▁b"]], tok, max_seq_length=16, max_predictions_per_seq=2))
        )
        == 1
    )


def test_builtin_corpus_with_trained_tokenizer(tmp_path):
    """End to end: a sentencepiece vocabulary trained on the built-in corpus."""
    from albert_jax.tokenizer import AlbertTokenizer, train_spm

    docs = builtin_corpus()
    tok = AlbertTokenizer(train_spm((s for d in docs for s in d), 2000, str(tmp_path / "sp")))
    special_ids = (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id)
    assert special_ids == (PAD, UNK, CLS, SEP, MASK)
    examples = list(create_examples(docs[:400], tok, max_seq_length=128, max_predictions_per_seq=20, seed=0))
    arrays = examples_to_arrays(examples)
    assert len(examples) > 300 and arrays["input_ids"].shape[1] == 128
    assert (arrays["input_ids"][:, 0] == tok.cls_token_id).all()
    assert abs(arrays["masked_lm_weights"].sum() / arrays["attention_mask"].sum() - 0.15) < 0.015
    text = " ".join(tok.convert_ids_to_tokens(restore(examples[0]).tolist()))
    assert text.startswith("[CLS] ▁") and text.count("[SEP]") == 2


# -- next-sentence prediction (BERT's pairs, the paper's NSP baseline) ------------------------------------------
def sentence_bounds(docs):
    """Per document, the corpus stream positions [begin, end) of each of its sentences."""
    bounds, position = [], 0
    for doc in docs:
        bounds.append([])
        for sentence in doc:
            bounds[-1].append((position, position + len(sentence.split())))
            position = bounds[-1][-1][1]
    return bounds


@pytest.fixture(scope="module")
def nsp_corpus():
    """Documents of 1-9 sentences of 2-6 pieces: a pair never exceeds T = 128, so nothing is truncated and
    every segment is whole sentences; half the documents aim at a random shorter length (several chunks)."""
    docs, tok = synthetic_corpus(2000, ((1, 10), (2, 7)), seed=4)
    examples = list(
        create_examples(docs, tok, max_seq_length=128, max_predictions_per_seq=20, short_seq_prob=0.5, seed=7, **NSP)
    )
    return docs, tok, examples


NSP = dict(sentence_objective="nsp")


def test_nsp_pairs_are_continuations_or_segments_of_another_document(nsp_corpus):
    docs, _, examples = nsp_corpus
    doc_of, bounds = doc_of_ids(docs), sentence_bounds(docs)
    starts = {begin for doc in bounds for begin, _ in doc}
    labels = np.array([int(ex["sentence_order_label"]) for ex in examples])
    assert len(labels) > 1500
    assert abs(labels.mean() - 0.5) < 4.5 * np.sqrt(0.25 / len(labels))
    from_one_sentence_documents = 0
    for ex, label in zip(examples, labels):
        assert ex["attention_mask"].sum() < 128  # nothing truncated
        a, b = (segment - 5 for segment in split_segments(restore(ex)))
        for segment in (a, b):
            assert (np.diff(segment) == 1).all() and len(set(doc_of[segment])) == 1, "a run of one document"
            assert segment[0] in starts, "whole sentences"
        if label == 0:
            assert b[0] == a[-1] + 1, "is next: B continues A in its document"
        else:
            assert doc_of[b[0]] != doc_of[a[0]], "random next: B comes from another document"
            from_one_sentence_documents += len(docs[doc_of[b[0]]]) == 1
    assert from_one_sentence_documents > 0, "one-sentence documents are sources of random B segments"


def test_nsp_puts_the_unused_sentences_back(nsp_corpus):
    """After a random-next pair the walk goes back to A's end, as BERT's script does: a document's own
    segments (every A, and B when it is next) cover each of its sentences once (the last one may be left
    alone and dropped); without putting back, a random-next pair's unused sentences would be missing."""
    docs, _, examples = nsp_corpus
    doc_of, bounds = doc_of_ids(docs), sentence_bounds(docs)
    own: dict[int, list[int]] = {}
    for ex in examples:
        a, b = (segment - 5 for segment in split_segments(restore(ex)))
        tokens = own.setdefault(int(doc_of[a[0]]), [])
        tokens.extend(a.tolist() + (b.tolist() if ex["sentence_order_label"] == 0 else []))
    assert all(len(docs[d]) >= 2 for d in own), "a one-sentence document gives no A"
    put_back = 0
    for d, tokens in own.items():
        assert len(tokens) == len(set(tokens)), "no sentence used twice by its own document"
        everything = list(range(bounds[d][0][0], bounds[d][-1][1]))
        assert sorted(tokens) in (everything, list(range(bounds[d][0][0], bounds[d][-1][0])))
        put_back += len(bounds[d]) > 2
    assert len(own) == sum(len(doc) >= 2 for doc in docs) and put_back > 500


def test_nsp_is_deterministic_per_seed_and_creates_the_stored_pairs(nsp_corpus):
    docs, tok, examples = nsp_corpus
    docs = docs[:300]

    def run(seed, **kw):
        args = dict(max_seq_length=128, max_predictions_per_seq=20, short_seq_prob=0.5, seed=seed) | NSP | kw
        return list(create_examples(docs, tok, **args))

    first, again, other = run(7), run(7), run(8)
    assert len(first) == len(again)
    for x, y in zip(first, again):
        for key in FEATURES:
            np.testing.assert_array_equal(x[key], y[key])
    seen = {restore(ex).tobytes() for ex in first}
    assert np.mean([restore(ex).tobytes() in seen for ex in other]) < 0.5
    # create_pairs (what dynamic masking stores) gives the same pairs, unmasked
    pairs = list(create_pairs(docs, tok, max_seq_length=128, short_seq_prob=0.5, seed=7, **NSP))
    assert len(pairs) == len(first)
    for (a, b, label), ex in zip(pairs, first):
        assert restore(ex).tolist() == [CLS, *a[0], SEP, *b[0], SEP] and label == ex["sentence_order_label"]


def test_nsp_without_another_document_makes_is_next_pairs_only():
    docs, tok = synthetic_corpus(1, (40, 3))
    empty = ["[SEP]"]  # a document whose sentences hold only special tokens is empty: no source of random B
    for corpus in (docs, [*docs, empty]):
        examples = list(create_examples(corpus, tok, max_seq_length=16, max_predictions_per_seq=2, seed=1, **NSP))
        assert len(examples) > 5
        for ex in examples:
            a, b = split_segments(restore(ex))
            assert ex["sentence_order_label"] == 0 and b[0] > a[-1]


def test_unknown_sentence_objective_is_refused():
    docs, tok = synthetic_corpus(2, (3, 5))
    with pytest.raises(ValueError, match=r"sentence_objective must be one of \('sop', 'nsp'\), got 'none'"):
        create_examples(docs, tok, max_seq_length=16, max_predictions_per_seq=2, sentence_objective="none")
