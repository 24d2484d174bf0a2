"""ALBERT pretraining examples: sentence-order (or next-sentence) pairs with n-gram masked-LM targets.

Follows ``create_pretraining_data.py`` of google-research/albert and the ALBERT paper (Lan et al.,
2020): segments are runs of consecutive sentences of one document, swapped with probability 0.5 for
sentence-order prediction (SOP), and masked with whole-word n-grams, n <= 3 with p(n) ∝ 1/n. For the
paper's NSP baseline (``sentence_objective="nsp"``), pairs are made as BERT's script of that name does
(google-research/bert, ``create_instances_from_document``): with probability 0.5 B is replaced by a run of
sentences of a random other document, and the chunk's unused sentences start the next chunk. The
features carry transformers' names (``attention_mask``, ``token_type_ids``, ``sentence_order_label``; the
original TFRecords call them ``input_mask``, ``segment_ids``, ``next_sentence_labels``) and the original's
``masked_lm_*`` names, for which transformers has none.
Differences from that script, all deliberate:

* Everything is a function of (seed, documents): each document gets its own generators, seeded from
  (seed, pass, document index), so an example never depends on the iteration order, and an SOP
  example never depends on the other documents (an NSP "random next" B does, through a generator of
  its own); masking draws from a generator of its own, so the segments do not depend on the masking
  settings.
* A chunk always has two or more sentences, for both objectives. The originals pair a
  single-sentence chunk with a segment of a random *other* document and label it 1 (for SOP an
  NSP-style negative mislabelled as "swapped"; for NSP a label that the length of A gives away); here
  the chunk keeps growing to two sentences, and a single sentence left at the end of a document is
  dropped. So NSP labels are 1 with probability exactly 0.5, and a one-sentence document only
  serves as the source of random B segments.
* NSP's random document is uniform among the *other* non-empty documents (BERT's script tries 10
  draws and may keep the same document). Documents are only those given in one call (one prepared
  shard, as the original draws from the files of one run); with no other document every pair is
  "is next" (label 0).
* A segment's first piece always starts a word, even if truncation cut a word there (the original
  glued such a piece to the last word before ``[SEP]``).
* Random replacements (10% of the masked tokens) are drawn uniformly from the vocabulary without
  the special ids (pad, unk, [CLS], [SEP], [MASK]); the original drew from the whole vocabulary.
* Examples are streamed document by document (documents in a seeded random order per pass)
  instead of being shuffled globally in memory.
* Truncation picks the same side to trim as the original (the longer, ties trim B) one token at a
  time; the front/back coin flips of one segment are drawn at once as a binomial count.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Callable, Iterator, Sequence

import numpy as np

FEATURES = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "sentence_order_label",
)
# The original's `special_pieces`: string.punctuation without "'", "<", "=" and ">" (its literal has
# '"' where string.punctuation has "'"). It also adds "€" and "£" as UTF-8 bytes, which never equal a
# str, so they are left out here.
_START_PUNCTUATION = frozenset('!"#$%&()*+,-./:;?@[\\]^_`{|}~')
_CONTINUATION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz") | _START_PUNCTUATION
# Seed-sequence tags, so that the generators of different purposes never share a stream.
_SEGMENT_STREAM, _MASK_STREAM, _ORDER_STREAM, _RANDOM_NEXT_STREAM = 1, 2, 3, 5
# The pairs `create_examples` makes; a model trained without a sentence loss ('none') reads SOP pairs.
SENTENCE_OBJECTIVES = ("sop", "nsp")


class NoExamplesError(ValueError):
    """No document holds two sentences, so no sentence pair can be made."""


def is_start_piece(piece: str) -> bool:
    """Whether a sentencepiece piece starts a word, by the original ``_is_start_piece_sp``: it starts
    with "▁" or "<", or it is a single ASCII punctuation character other than ' < = >, or it holds a
    character that, lowercased, is neither an ASCII letter nor such punctuation (a digit, "'", "=", a
    letter of another script, ...). So "▁the", "5", "x2", "'s", "." and "é" start a word, while "ing",
    "..", "s." and "[MASK]" continue the previous one."""
    return (
        piece.startswith(("▁", "<"))
        or piece in _START_PUNCTUATION
        or not all(c.lower() in _CONTINUATION_CHARS for c in piece)
    )


def ngram_probabilities(ngram: int) -> np.ndarray:
    """p(n) ∝ 1/n for n = 1..ngram, float64 [ngram] (for 3: 6/11, 3/11, 2/11)."""
    inverse = 1.0 / np.arange(1, ngram + 1)
    return inverse / inverse.sum()


def create_examples(
    documents: Sequence[Sequence[str]],
    tokenizer,
    *,
    max_seq_length: int,
    max_predictions_per_seq: int,
    masked_lm_prob: float = 0.15,
    short_seq_prob: float = 0.1,
    ngram: int = 3,
    dupe_factor: int = 1,
    seed: int = 0,
    sentence_objective: str = "sop",
) -> Iterator[dict[str, np.ndarray]]:
    """ALBERT pretraining examples (SOP or NSP pairs with n-gram masking) from documents.

    Args:
      documents: documents, each a sequence of sentence strings.
      tokenizer: provides ``pieces_and_ids(text) -> (pieces, ids)`` (sentencepiece pieces and their ids),
        ``cls_token_id``, ``sep_token_id``, ``mask_token_id``,
        ``pad_token_id``, ``unk_token_id`` and ``vocab_size``.
      max_seq_length: T, the length of every example, ``[CLS] A [SEP] B [SEP]`` plus padding.
      max_predictions_per_seq: P, the most masked positions per example.
      masked_lm_prob: fraction of the tokens (specials included, as in the original) to predict.
      short_seq_prob: probability that a document (per pass) aims at a random length in
        [2, T - 3] instead of T - 3, so that the model also sees short sequences.
      ngram: longest masked n-gram, in words; n is drawn with p(n) ∝ 1/n.
      dupe_factor: passes over the documents, each with different segments and masks.
      seed: non-negative int; the output is a function of (seed, documents, arguments).
      sentence_objective: 'sop' (A and B swapped with p = 0.5) or 'nsp' (B from a random other document
        with p = 0.5, see `_segment_pairs`).

    Returns:
      An iterator (lazy; the arguments are checked at once) over dicts of numpy arrays:
      ``input_ids`` [T] int32 (pad id after the last [SEP]), ``attention_mask``
      [T] int32 (1 on tokens, 0 on padding), ``token_type_ids`` [T] int32 (0 for [CLS] A [SEP], 1 for
      B [SEP], 0 on padding), ``masked_lm_positions`` [P] int32 (sorted, zero-padded),
      ``masked_lm_ids`` [P] int32 (the original token ids there, zero-padded), ``masked_lm_weights``
      [P] float32 (1 per real prediction), ``sentence_order_label`` [] int32 (1 = B is not A's
      continuation in order: swapped for SOP, from another document for NSP).

    Raises:
      ValueError: bad arguments (on the call), or no document with two sentences (on iteration).
    """
    _check_arguments(max_seq_length, sentence_objective)
    if max_predictions_per_seq < 1 or ngram < 1 or dupe_factor < 1 or seed < 0:
        raise ValueError("max_predictions_per_seq, ngram and dupe_factor must be >= 1 and seed >= 0")
    if not 0.0 <= masked_lm_prob <= 1.0 or not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError("masked_lm_prob and short_seq_prob must be in [0, 1]")
    masker = Masker(
        special_ids(tokenizer), tokenizer.vocab_size, max_seq_length, max_predictions_per_seq, masked_lm_prob, ngram
    )
    pairs = _pair_stream(
        documents, tokenizer, max_seq_length - 3, short_seq_prob, dupe_factor, seed, sentence_objective == "nsp"
    )
    return (masker(a, b, label, mask_rng) for a, b, label, mask_rng in pairs)


def create_pairs(
    documents: Sequence[Sequence[str]],
    tokenizer,
    *,
    max_seq_length: int,
    short_seq_prob: float = 0.1,
    dupe_factor: int = 1,
    seed: int = 0,
    sentence_objective: str = "sop",
) -> Iterator[tuple[Segment, Segment, bool]]:
    """The unmasked sentence pairs `create_examples` masks, in the same order: (A, B, label), A and B as
    (piece ids, word-start flags), together at most ``max_seq_length - 3`` pieces. Dynamic masking stores
    these and masks them per epoch with `Masker`. Arguments as for `create_examples`."""
    _check_arguments(max_seq_length, sentence_objective)
    pairs = _pair_stream(
        documents, tokenizer, max_seq_length - 3, short_seq_prob, dupe_factor, seed, sentence_objective == "nsp"
    )
    return ((a, b, label) for a, b, label, _ in pairs)


def _check_arguments(max_seq_length: int, sentence_objective: str) -> None:
    if max_seq_length < 5:
        raise ValueError(f"max_seq_length must be >= 5 to hold two segments, got {max_seq_length}")
    if sentence_objective not in SENTENCE_OBJECTIVES:
        raise ValueError(f"sentence_objective must be one of {SENTENCE_OBJECTIVES}, got {sentence_objective!r}")


def _pair_stream(documents, tokenizer, max_num_tokens, short_seq_prob, dupe_factor, seed, nsp):
    """(A, B, label, the document's masking generator) per pair; a generator, so that the arguments are
    checked on the call of `create_examples` and the documents read on iteration."""
    specials = {tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id}
    tokenized = _tokenize_documents(documents, tokenizer, specials)
    if not any(len(document) >= 2 for document in tokenized):
        # Every document with two sentences gives at least one pair per pass, so this is the only case.
        raise NoExamplesError(
            f"No pretraining example can be made from these {len(documents)} documents: an example pairs "
            "two segments of one document (for NSP, half of the time only its first), so a document needs at "
            "least two (non-empty) sentences, and none has. Text files need one sentence per line and a blank "
            "line only between documents."
        )
    # the documents a random B can come from, sorted
    sources = [i for i, document in enumerate(tokenized) if document] if nsp else []
    for pass_index in range(dupe_factor):
        order_rng = np.random.default_rng([seed, _ORDER_STREAM, pass_index, 0])
        for doc_index in order_rng.permutation(len(tokenized)):
            segment_rng = np.random.default_rng([seed, _SEGMENT_STREAM, pass_index, doc_index])
            mask_rng = np.random.default_rng([seed, _MASK_STREAM, pass_index, doc_index])
            random_next = None
            if nsp:
                next_rng = np.random.default_rng([seed, _RANDOM_NEXT_STREAM, pass_index, doc_index])
                random_next = functools.partial(_random_next, tokenized, sources, int(doc_index), rng=next_rng)
            pairs = _segment_pairs(tokenized[doc_index], max_num_tokens, short_seq_prob, segment_rng, random_next)
            for a, b, label in pairs:
                yield a, b, label, mask_rng


def examples_to_arrays(examples: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stacks example dicts into one dict of [N, ...] arrays (dtypes kept)."""
    if not examples:
        raise ValueError("No examples to stack")
    return {key: np.stack([example[key] for example in examples]) for key in examples[0]}


# A tokenized sentence or segment: (piece ids, word-start flags), both lists of the same length.
Segment = tuple[list[int], list[bool]]


def _tokenize_documents(documents, tokenizer, dropped_ids) -> list[list[Segment]]:
    """Tokenizes every distinct sentence once. Special tokens written in the text (e.g. a literal
    "[SEP]") are dropped so that specials only appear where the example format puts them."""
    cache: dict[str, Segment] = {}
    tokenized = []
    for document in documents:
        sentences = []
        for text in document:
            if text not in cache:
                pieces, ids = tokenizer.pieces_and_ids(text)
                kept = [(i, is_start_piece(p)) for p, i in zip(pieces, ids) if i not in dropped_ids]
                cache[text] = ([i for i, _ in kept], [s for _, s in kept])
            if cache[text][0]:
                sentences.append(cache[text])
        tokenized.append(sentences)
    return tokenized


def _segment_pairs(
    document: list[Segment],
    max_num_tokens: int,
    short_seq_prob: float,
    rng: np.random.Generator,
    random_next: Callable[[int], Segment | None] | None = None,
) -> Iterator[tuple[Segment, Segment, bool]]:
    """Cuts a document into chunks of consecutive sentences (two or more, until the target length) and
    yields (A, B, label) per chunk, truncated to ``max_num_tokens`` together: A = the chunk's first k
    sentences (k uniform in [1, len - 1]), B = the rest, and with probability 1/2 label 1 and

    * SOP (``random_next`` None): A and B swapped;
    * NSP: B = ``random_next(target length - len(A))`` (sentences of another document), and the chunk's
      unused sentences are put back: the next chunk starts at A's end, as in BERT's script. When
      ``random_next`` gives None (no other document) the pair stays "is next", label 0.
    """
    target_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_length = int(rng.integers(2, max_num_tokens, endpoint=True))
    chunk: list[Segment] = []
    length, i = 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i][0])
        if len(chunk) >= 2 and (length >= target_length or i == len(document) - 1):
            a_end = int(rng.integers(1, len(chunk)))
            a, b = _concat(chunk[:a_end]), _concat(chunk[a_end:])
            label = bool(rng.random() < 0.5)
            if random_next is None:
                if label:
                    a, b = b, a
            elif label:
                other = random_next(target_length - len(a[0]))
                if other is None:
                    label = False
                else:
                    b = other
                    i -= len(chunk) - a_end
            yield (*_truncate_pair(a, b, max_num_tokens, rng), label)
            chunk, length = [], 0
        i += 1


def _random_next(
    documents: list[list[Segment]], sources: list[int], doc_index: int, target_length: int, rng: np.random.Generator
) -> Segment | None:
    """B of an NSP "random next" pair: consecutive sentences of a document drawn uniformly among ``sources``
    (sorted indices of the non-empty documents) other than ``doc_index``, from a uniformly drawn sentence
    until ``target_length`` pieces (at least one sentence) or the document's end; None when there is no
    other document."""
    if len(sources) < 2:
        return None
    k = int(rng.integers(len(sources) - 1))
    other = documents[sources[k + (k >= bisect.bisect_left(sources, doc_index))]]
    sentences, length = [], 0
    for sentence in other[int(rng.integers(len(other))) :]:
        sentences.append(sentence)
        length += len(sentence[0])
        if length >= target_length:
            break
    return _concat(sentences)


def _concat(sentences: list[Segment]) -> Segment:
    ids, starts = [], []
    for sentence_ids, sentence_starts in sentences:
        ids.extend(sentence_ids)
        starts.extend(sentence_starts)
    return ids, starts


def truncation_counts(len_a: int, len_b: int, max_num_tokens: int) -> tuple[int, int]:
    """How many tokens the original's loop ("while too long: trim one token off the longer
    segment, B on ties") removes from A and from B."""
    excess = max(0, len_a + len_b - max_num_tokens)
    first = min(abs(len_a - len_b), excess)  # until both have the same length
    rest = excess - first  # then alternately, B first
    return (first if len_a > len_b else 0) + rest // 2, (first if len_a <= len_b else 0) + rest - rest // 2


def _truncate_pair(a: Segment, b: Segment, max_num_tokens: int, rng: np.random.Generator) -> tuple[Segment, Segment]:
    """Trims A and B to ``max_num_tokens`` in total, each removed token off the front or the back
    with probability 1/2. The first remaining piece of a segment always starts a word."""
    out = []
    for (ids, starts), count in zip((a, b), truncation_counts(len(a[0]), len(b[0]), max_num_tokens)):
        front = int(rng.binomial(count, 0.5)) if count else 0
        end = len(ids) - (count - front)
        ids, starts = ids[front:end], starts[front:end]
        starts[0] = True
        out.append((ids, starts))
    return out[0], out[1]


def choose_masked_spans(
    word_lengths: Sequence[int], budget: int, probs: np.ndarray, rng: np.random.Generator
) -> list[list[int]]:
    """Chooses the n-grams of whole words to mask, as the original does.

    Every word is tried once as an n-gram start, in random order, until ``budget`` tokens are
    chosen: n is drawn from ``probs`` (p[n - 1]), the n-gram is clipped at the last word, shortened
    word by word while it has more tokens than the budget left, and skipped if it still does or if
    it overlaps a chosen n-gram.

    Args:
      word_lengths: pieces per word, [W] ints.
      budget: most tokens to choose.
      probs: [ngram] probabilities of n = 1..ngram.

    Returns:
      The chosen n-grams in the order they were chosen, each a list of consecutive word indices.
    """
    num_words = len(word_lengths)
    offsets = [0, *itertools.accumulate(word_lengths)]
    starts = rng.permutation(num_words).tolist()
    cdf = np.cumsum(probs)
    cdf[-1] = 1.0  # so that rounding never draws n = ngram + 1
    sizes = (np.searchsorted(cdf, rng.random(num_words), side="right") + 1).tolist()
    covered = bytearray(num_words)
    spans, num_tokens = [], 0
    for start, n in zip(starts, sizes):
        if num_tokens >= budget:
            break
        n = min(n, num_words - start)
        while n and offsets[start + n] - offsets[start] > budget - num_tokens:
            n -= 1
        if not n or any(covered[start : start + n]):
            continue
        covered[start : start + n] = b"\x01" * n
        spans.append(list(range(start, start + n)))
        num_tokens += offsets[start + n] - offsets[start]
    return spans


class Masker:
    """Builds the feature arrays of one example, ``[CLS] A [SEP] B [SEP]``, masked (whole-word n-grams, the
    original's 80/10/10 rule) and padded; `create_examples` and the dynamic-masking loader share it."""

    def __init__(
        self,
        specials: dict[str, int],
        vocab_size: int,
        max_seq_length: int,
        max_predictions: int,
        masked_lm_prob: float,
        ngram: int,
    ):
        self.cls, self.sep, self.mask = specials["cls"], specials["sep"], specials["mask"]
        self.pad = specials["pad"]
        self.max_seq_length, self.max_predictions = max_seq_length, max_predictions
        self.masked_lm_prob, self.ngram_probs = masked_lm_prob, ngram_probabilities(ngram)
        # random replacements never draw a special id
        self.random_ids = np.setdiff1d(np.arange(vocab_size), list(specials.values()))

    def __call__(self, a: Segment, b: Segment, label: bool, rng: np.random.Generator) -> dict[str, np.ndarray]:
        T, P = self.max_seq_length, self.max_predictions
        ids = np.full(T, self.pad, np.int32)
        length = len(a[0]) + len(b[0]) + 3
        ids[:length] = [self.cls, *a[0], self.sep, *b[0], self.sep]
        token_type_ids = np.zeros(T, np.int32)
        token_type_ids[len(a[0]) + 2 : length] = 1
        # Words are numbered across both segments (an n-gram may span the middle [SEP], as in the
        # original); [CLS]/[SEP] belong to no word and are never masked.
        begins_a, ends_a = _word_bounds(a[1], 1)
        begins_b, ends_b = _word_bounds(b[1], len(a[0]) + 2)
        begins, ends = begins_a + begins_b, ends_a + ends_b
        positions = np.zeros(0, np.int64)
        if self.masked_lm_prob > 0:
            budget = min(P, max(1, int(round(length * self.masked_lm_prob))))
            spans = choose_masked_spans([e - s for s, e in zip(begins, ends)], budget, self.ngram_probs, rng)
            positions = np.sort(
                np.array([p for span in spans for w in span for p in range(begins[w], ends[w])], np.int64)
            )
        labels = ids[positions]
        u = rng.random(len(positions))
        random_ids = self.random_ids[rng.integers(len(self.random_ids), size=len(positions))]
        ids[positions] = np.where(u < 0.8, self.mask, np.where(u < 0.9, random_ids, labels))
        k = len(positions)
        masked_lm_positions, masked_lm_ids = np.zeros(P, np.int32), np.zeros(P, np.int32)
        masked_lm_positions[:k], masked_lm_ids[:k] = positions, labels
        return {
            "input_ids": ids,
            "attention_mask": (np.arange(T) < length).astype(np.int32),
            "token_type_ids": token_type_ids,
            "masked_lm_positions": masked_lm_positions,
            "masked_lm_ids": masked_lm_ids,
            "masked_lm_weights": (np.arange(P) < k).astype(np.float32),
            "sentence_order_label": np.asarray(label, np.int32),
        }


def special_ids(tokenizer) -> dict[str, int]:
    """The ids the example format places itself (pad, unk, [CLS], [SEP], [MASK]), by role."""
    return dict(
        pad=tokenizer.pad_token_id,
        unk=tokenizer.unk_token_id,
        cls=tokenizer.cls_token_id,
        sep=tokenizer.sep_token_id,
        mask=tokenizer.mask_token_id,
    )


def _word_bounds(starts: list[bool], offset: int) -> tuple[list[int], list[int]]:
    """[begin, end) positions of the words of a segment placed at ``offset``."""
    begins = [offset + i for i, is_start in enumerate(starts) if is_start]
    return begins, begins[1:] + [offset + len(starts)]
