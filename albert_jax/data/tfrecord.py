"""Pretraining examples from the TFRecords of google-research/albert's ``create_pretraining_data.py``.

That script's ``write_instance_to_example_files`` writes one ``tf.train.Example`` per instance, each
feature zero-padded to a fixed length:

* int64 ``input_ids``, ``input_mask``, ``segment_ids``, ``token_boundary`` [max_seq_length]
  (``token_boundary``, 1 where a word starts, feeds only its ``--masked_lm_budget`` on-the-fly
  masking; BERT's script does not write it, and it is ignored here);
* int64 ``masked_lm_positions``, ``masked_lm_ids`` and float ``masked_lm_weights``
  [max_predictions_per_seq] (twice that with ``--do_permutation``);
* int64 ``next_sentence_labels`` [1]: despite the name, ALBERT's sentence-order label,
  ``1 if is_random_next else 0``, where ``is_random_next`` is True when A and B were swapped (and for
  the original's rare single-sentence chunk, whose B comes from another document).

Our layout (``albert_jax.data.pretraining.FEATURES``) keeps the values, casts to int32 and float32, and
renames ``input_mask`` to ``attention_mask``, ``segment_ids`` to ``token_type_ids`` and the label to
``sentence_order_label`` (1 = A and B swapped): the same convention, so ``sentence_order_label =
next_sentence_labels[0]`` unchanged. Padding is 0 everywhere, as in ``create_examples`` with ALBERT's
vocabulary (``<pad>`` has id 0).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence

import numpy as np

from albert_jax.data.sources import expand_patterns

# Records parsed per tf.io.parse_example call: parsing one proto at a time in Python is ~8x slower.
_PARSE_BATCH = 256
_READ_BUFFER_BYTES = 8 << 20
# The op name and location that eager tensorflow wraps around an iterator's error message.
_TF_NOISE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$", re.DOTALL)
# The file's int features and our names for them (transformers' where it has one).
_INT_FEATURES = {
    "input_ids": "input_ids",
    "input_mask": "attention_mask",
    "segment_ids": "token_type_ids",
    "masked_lm_positions": "masked_lm_positions",
    "masked_lm_ids": "masked_lm_ids",
}


def expand_tfrecord_patterns(spec: str | Sequence[str]) -> list[str]:
    """Files matched by comma-separated globs (or a sequence of globs), sorted and without duplicates.

    Local patterns are expanded with ``glob``; patterns with a scheme (``gs://...``) with
    ``tf.io.gfile.glob``. A pattern without glob characters names one file.

    Raises:
      ValueError: the spec holds no pattern, or a pattern matches no file (the pattern is named).
    """
    patterns = spec.split(",") if isinstance(spec, str) else [os.fspath(p) for p in spec]
    patterns = [p.strip() for p in patterns if p.strip()]
    if not patterns:
        raise ValueError(f"No TFRecord pattern in {spec!r}")
    paths = set()
    for pattern in patterns:
        if "://" in pattern:
            matches = _import_tensorflow().io.gfile.glob(pattern)
            if not matches:
                raise ValueError(f"No file matches {pattern!r}")
            paths.update(matches)
        else:
            paths.update(expand_patterns(pattern))
    return sorted(paths)


def read_original_tfrecords(
    paths: str | Sequence[str], max_seq_length: int, max_predictions_per_seq: int
) -> Iterator[dict[str, np.ndarray]]:
    """Streams the examples of ``create_pretraining_data.py`` TFRecords in our layout.

    Args:
      paths: TFRecord files (uncompressed, as the script writes them), or a string of
        comma-separated globs (see ``expand_tfrecord_patterns``). Files are read in sorted order,
        each record by record (a file is never loaded whole), records in file order.
      max_seq_length: T, the script's ``--max_seq_length``; every record must match it.
      max_predictions_per_seq: P, the script's ``--max_predictions_per_seq``; every record must match.

    Returns:
      An iterator (lazy; the arguments, tensorflow and the files' existence are checked at once)
      over dicts with the keys of ``albert_jax.data.pretraining.FEATURES``: ``input_ids``,
      ``attention_mask``, ``token_type_ids`` [T] int32 (the file's ``input_mask``, ``segment_ids``),
      ``masked_lm_positions``, ``masked_lm_ids`` [P] int32, ``masked_lm_weights`` [P] float32, and
      ``sentence_order_label`` [] int32, which is the file's ``next_sentence_labels[0]`` unchanged: the
      script writes 1 when A and B were swapped, our convention too. The arrays are views into a batch of
      records (copy to mutate).

    Raises:
      ValueError: on the call, T or P < 1 or a pattern that matches nothing; on iteration, a record
        that lacks a feature or holds one of the wrong type or length (the file, record, feature,
        expected and found lengths are named), a label other than 0/1, or a corrupted or truncated
        file (named).
      FileNotFoundError: a listed file does not exist (on the call).
      ImportError: tensorflow is missing (the message names the pip extra).
    """
    if max_seq_length < 1 or max_predictions_per_seq < 1:
        raise ValueError(
            f"max_seq_length and max_predictions_per_seq must be >= 1, got "
            f"{max_seq_length} and {max_predictions_per_seq}"
        )
    tf = _import_tensorflow()
    paths = expand_tfrecord_patterns(paths) if isinstance(paths, str) else sorted(map(os.fspath, paths))
    for path in paths:
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"TFRecord file {path!r} does not exist")
    lengths = {name: max_seq_length for name in ("input_ids", "input_mask", "segment_ids")}
    lengths.update(
        {name: max_predictions_per_seq for name in ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")}
    )
    lengths["next_sentence_labels"] = 1
    return _stream(tf, paths, lengths)


def _import_tensorflow():
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(
            f'reading TFRecords needs tensorflow ({e}); install it with: pip install "albert-jax[tfds]"'
        ) from None
    return tf


def _stream(tf, paths, lengths):
    """The body of ``read_original_tfrecords``, a generator so that arguments are checked on the call."""
    spec = {
        name: tf.io.FixedLenFeature([n], tf.float32 if name == "masked_lm_weights" else tf.int64)
        for name, n in lengths.items()
    }
    for path in paths:
        records = iter(tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER_BYTES).batch(_PARSE_BATCH))
        first = 0  # index in the file of the batch's first record
        while True:
            try:
                serialized = next(records)
            except StopIteration:
                break
            except tf.errors.DataLossError as e:  # a bad length or CRC: corrupted, truncated or compressed
                raise ValueError(
                    f"TFRecord file {path!r} is corrupted or truncated at or after record {first} (an "
                    "uncompressed TFRecord file, as create_pretraining_data.py writes, was expected): "
                    f"{_TF_NOISE.sub('', e.message)}"
                ) from None
            try:
                parsed = tf.io.parse_example(serialized, spec)
            # A record that is no proto makes eager tensorflow fail on decoding its own error message.
            except (tf.errors.InvalidArgumentError, UnicodeDecodeError) as e:
                raise ValueError(
                    _describe_bad_record(tf, serialized.numpy(), path, first, lengths)
                    or f"TFRecord file {path!r}, records {first}+: {e}"
                ) from None
            batch = {ours: parsed[name].numpy().astype(np.int32) for name, ours in _INT_FEATURES.items()}
            batch["masked_lm_weights"] = parsed["masked_lm_weights"].numpy()
            labels = parsed["next_sentence_labels"].numpy()[:, 0]
            if bad := np.flatnonzero((labels != 0) & (labels != 1)).tolist():
                raise ValueError(
                    f"TFRecord file {path!r}, record {first + bad[0]}: next_sentence_labels is "
                    f"{labels[bad[0]]}, expected 0 (in order) or 1 (swapped)"
                )
            batch["sentence_order_label"] = labels.astype(np.int32)
            for i in range(len(labels)):
                yield {name: array[i, ...] for name, array in batch.items()}  # [i, ...]: 0-d label array
            first += len(labels)


def _describe_bad_record(tf, serialized: Sequence[bytes], path: str, first: int, lengths: dict[str, int]) -> str | None:
    """What is wrong with the first bad record of a batch that failed to parse, or None if no record
    is found wrong (then the caller reports tensorflow's message)."""
    from google.protobuf.message import DecodeError

    for index, record in enumerate(serialized, first):
        where = f"TFRecord file {path!r}, record {index}"
        try:
            features = tf.train.Example.FromString(record).features.feature
        except DecodeError:
            return f"{where} is not a tf.train.Example"
        for name, expected in lengths.items():
            kind = "float_list" if name == "masked_lm_weights" else "int64_list"
            if name not in features:
                return (
                    f"{where} has no feature {name!r} (features: {sorted(features)}); "
                    "create_pretraining_data.py writes it"
                )
            found_kind = features[name].WhichOneof("kind")
            if found_kind != kind:
                return f"{where}: feature {name!r} is a {found_kind}, expected a {kind}"
            found = len(getattr(features[name], kind).value)
            if found != expected:
                return f"{where}: feature {name!r} has {found} values, expected {expected}" + _length_hint(
                    name, expected, found
                )
    return None


def _length_hint(name: str, expected: int, found: int) -> str:
    if name in ("input_ids", "input_mask", "segment_ids"):
        return (
            f" (max_seq_length is {expected} in the config but {found} in the file: set max_seq_length "
            f"to {found} or regenerate the file with --max_seq_length={expected})"
        )
    if name.startswith("masked_lm"):
        permutation = (
            f"; {found} = 2 x {expected} suggests --do_permutation, which doubles it" if found == 2 * expected else ""
        )
        return (
            f" (max_predictions_per_seq is {expected} in the config but {found} in the file: set "
            f"max_predictions_per_seq to {found} or regenerate the file with --max_predictions_per_seq="
            f"{expected}{permutation})"
        )
    return ""
