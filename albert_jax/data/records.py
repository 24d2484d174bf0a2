"""The bytes of one prepared pretraining example (one ArrayRecord record).

A record is a flat array of one integer dtype (`record_dtype`: uint16 when every id fits, else int32):
``[length, b_start, label, k, ids[:length], positions[:k], masked ids[:k]]`` for a masked example
(static masking), where ``length`` counts ``[CLS] A [SEP] B [SEP]``, ``b_start`` is B's first position and
``k`` the number of predictions; an unmasked pair (dynamic masking) has k = 0 and is followed by its
word-start flags as packed bits. Padding, the attention mask and the token type ids are implied, so a record
holds only what varies: ~2 bytes per token instead of the 4 x 3 of the padded int32 features.
"""

from __future__ import annotations

import numpy as np

from albert_jax.data.pretraining import Segment

_HEADER = 4


def record_dtype(vocab_size: int, max_seq_length: int) -> np.dtype:
    """uint16 when every id and position fits in it, else int32."""
    return np.dtype("<u2") if max(vocab_size, max_seq_length + 1) <= 1 << 16 else np.dtype("<i4")


def encode_example(example: dict[str, np.ndarray], dtype: np.dtype) -> bytes:
    """A masked example (the padded features of `create_examples`) -> record bytes.

    Raises:
      ValueError: the features are not laid out as ``[CLS] A [SEP] B [SEP]`` + padding (attention mask a run
        of ones, then zeros; token type ids zeros then one run of ones ending where the mask does; masked
        weights ones then zeros).
    """
    mask = np.asarray(example["attention_mask"])
    length = int(mask.sum())
    segments = np.asarray(example["token_type_ids"])
    b_start = int(np.argmax(segments)) if segments.any() else length
    weights = np.asarray(example["masked_lm_weights"])
    k = int(np.count_nonzero(weights))
    if (
        not mask[:length].all()
        or segments[length:].any()
        or not segments[b_start:length].all()
        or np.count_nonzero(weights[:k]) != k
    ):
        raise ValueError(
            "not an example of the [CLS] A [SEP] B [SEP] layout: attention_mask must be ones then "
            "zeros, token_type_ids zeros then ones up to the mask's end, masked_lm_weights ones then "
            "zeros"
        )
    return (
        np.concatenate(
            [
                [length, b_start, int(example["sentence_order_label"]), k],
                example["input_ids"][:length],
                example["masked_lm_positions"][:k],
                example["masked_lm_ids"][:k],
            ]
        )
        .astype(dtype)
        .tobytes()
    )


def decode_example(
    record: bytes, dtype: np.dtype, max_seq_length: int, max_predictions: int, pad_id: int
) -> dict[str, np.ndarray]:
    """Record bytes of a masked example -> its padded features (int32, weights float32)."""
    values = np.frombuffer(record, dtype)
    length, b_start, label, k = (int(v) for v in values[:_HEADER])
    T, P = max_seq_length, max_predictions
    ids = np.full(T, pad_id, np.int32)
    ids[:length] = values[_HEADER : _HEADER + length]
    positions, masked_ids = np.zeros(P, np.int32), np.zeros(P, np.int32)
    rest = values[_HEADER + length :]
    positions[:k], masked_ids[:k] = rest[:k], rest[k : 2 * k]
    where = np.arange(T)
    return {
        "input_ids": ids,
        "attention_mask": (where < length).astype(np.int32),
        "token_type_ids": ((where >= b_start) & (where < length)).astype(np.int32),
        "masked_lm_positions": positions,
        "masked_lm_ids": masked_ids,
        "masked_lm_weights": (np.arange(P) < k).astype(np.float32),
        "sentence_order_label": np.asarray(label, np.int32),
    }


def encode_pair(a: Segment, b: Segment, label: bool, dtype: np.dtype) -> bytes:
    """An unmasked pair of `create_pairs` (SOP or NSP: `label` is its sentence_order_label) -> record bytes (ids,
    then the word-start flags as bits)."""
    length = len(a[0]) + len(b[0]) + 3
    header = np.array([length, len(a[0]) + 2, int(label), 0, *a[0], *b[0]], dtype).tobytes()
    return header + np.packbits(np.array(a[1] + b[1], bool)).tobytes()


def decode_pair(record: bytes, dtype: np.dtype) -> tuple[Segment, Segment, bool]:
    """Record bytes of an unmasked pair -> (A, B, label) as `create_pairs` gave them."""
    length, b_start, label = (int(v) for v in np.frombuffer(record, dtype, count=3))
    num_ids = length - 3
    ids = np.frombuffer(record, dtype, count=num_ids, offset=_HEADER * dtype.itemsize).tolist()
    starts = (
        np.unpackbits(np.frombuffer(record, np.uint8, offset=(_HEADER + num_ids) * dtype.itemsize), count=num_ids)
        .astype(bool)
        .tolist()
    )
    len_a = b_start - 2
    return (ids[:len_a], starts[:len_a]), (ids[len_a:], starts[len_a:]), bool(label)
