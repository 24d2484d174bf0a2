"""Reading google-research/albert's pretraining TFRecords (albert_jax.data.tfrecord).

The files are written by ``write_original_example_files``, a line-by-line reproduction of
``write_instance_to_example_files`` in google-research/albert's ``create_pretraining_data.py``
(that script is not on PyPI: the albert-tensorflow wheel leaves it out, so it cannot be imported).
The instances mimic its ``create_instances_from_document``: A and B are consecutive sentences of a
document, swapped when ``is_random_next`` is True.
"""

import collections
import gzip
import random
import sys

import numpy as np
import pytest

from albert_jax.data.pretraining import FEATURES, create_examples
from albert_jax.data.tfrecord import expand_tfrecord_patterns, read_original_tfrecords
from helpers import PieceTokenizer

tf = pytest.importorskip("tensorflow")

# The original's TrainingInstance, as a namedtuple.
TrainingInstance = collections.namedtuple(
    "TrainingInstance",
    ["tokens", "segment_ids", "masked_lm_positions", "masked_lm_labels", "is_random_next", "token_boundary"],
)


def int_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def float_feature(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def write_original_example_files(
    instances, tokenizer, max_seq_length, max_predictions_per_seq, output_files, do_permutation=False
):
    """The original's ``write_instance_to_example_files`` (FLAGS.do_permutation as an argument)."""
    writers = [tf.io.TFRecordWriter(output_file) for output_file in output_files]
    writer_index = 0
    for instance in instances:
        input_ids = tokenizer.convert_tokens_to_ids(instance.tokens)
        input_mask = [1] * len(input_ids)
        segment_ids = list(instance.segment_ids)
        token_boundary = list(instance.token_boundary)
        assert len(input_ids) <= max_seq_length
        while len(input_ids) < max_seq_length:
            input_ids.append(0)
            input_mask.append(0)
            segment_ids.append(0)
            token_boundary.append(0)
        masked_lm_positions = list(instance.masked_lm_positions)
        masked_lm_ids = tokenizer.convert_tokens_to_ids(instance.masked_lm_labels)
        masked_lm_weights = [1.0] * len(masked_lm_ids)
        multiplier = 1 + int(do_permutation)
        while len(masked_lm_positions) < max_predictions_per_seq * multiplier:
            masked_lm_positions.append(0)
            masked_lm_ids.append(0)
            masked_lm_weights.append(0.0)
        sentence_order_label = 1 if instance.is_random_next else 0
        features = collections.OrderedDict()
        features["input_ids"] = int_feature(input_ids)
        features["input_mask"] = int_feature(input_mask)
        features["segment_ids"] = int_feature(segment_ids)
        features["token_boundary"] = int_feature(token_boundary)
        features["masked_lm_positions"] = int_feature(masked_lm_positions)
        features["masked_lm_ids"] = int_feature(masked_lm_ids)
        features["masked_lm_weights"] = float_feature(masked_lm_weights)
        features["next_sentence_labels"] = int_feature([sentence_order_label])
        tf_example = tf.train.Example(features=tf.train.Features(feature=features))
        writers[writer_index].write(tf_example.SerializeToString())
        if random.randint(1, 100) >= 97:
            writers[writer_index].flush()
        writer_index = (writer_index + 1) % len(writers)
    for writer in writers:
        writer.close()


def make_instances(num, max_seq_length=16, max_predictions_per_seq=3, seed=0):
    """Instances as the original builds them from documents of pieces "w<doc>_<k>" (k counts up
    through the document, so the order of A and B can be read off the pieces): a chunk of
    consecutive sentences cut at a_end, swapped with is_random_next = True, then 1 or 2 masks."""
    rng = random.Random(seed)
    instances, pieces = [], []
    for doc in range(num):
        sentences = [[f"w{doc}_{3 * s + j}" for j in range(rng.randint(1, 3))] for s in range(3)]
        pieces += [p for s in sentences for p in s]
        a_end = rng.randint(1, 2)
        tokens_a, tokens_b = sum(sentences[:a_end], []), sum(sentences[a_end:], [])
        is_random_next = rng.random() < 0.5
        if is_random_next:
            tokens_a, tokens_b = tokens_b, tokens_a
        tokens = ["[CLS]", *tokens_a, "[SEP]", *tokens_b, "[SEP]"]
        segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
        assert len(tokens) <= max_seq_length
        positions = sorted(
            rng.sample([i for i, t in enumerate(tokens) if t.startswith("w")], rng.randint(1, max_predictions_per_seq))
        )
        labels = [tokens[i] for i in positions]
        tokens = ["[MASK]" if i in positions else t for i, t in enumerate(tokens)]
        token_boundary = [1] * len(tokens)  # every piece here starts a word
        instances.append(TrainingInstance(tokens, segment_ids, positions, labels, is_random_next, token_boundary))
    return instances, PieceTokenizer(pieces)


def expected_example(instance, tokenizer, max_seq_length, max_predictions_per_seq):
    """The instance in our layout, computed without the TFRecord round trip."""
    length, num_masked = len(instance.tokens), len(instance.masked_lm_positions)
    pad = lambda values, n, dtype: np.array(list(values) + [0] * (n - len(values)), dtype)  # noqa: E731
    return {
        "input_ids": pad(tokenizer.convert_tokens_to_ids(instance.tokens), max_seq_length, np.int32),
        "attention_mask": pad([1] * length, max_seq_length, np.int32),
        "token_type_ids": pad(instance.segment_ids, max_seq_length, np.int32),
        "masked_lm_positions": pad(instance.masked_lm_positions, max_predictions_per_seq, np.int32),
        "masked_lm_ids": pad(
            tokenizer.convert_tokens_to_ids(instance.masked_lm_labels), max_predictions_per_seq, np.int32
        ),
        "masked_lm_weights": pad([1.0] * num_masked, max_predictions_per_seq, np.float32),
        "sentence_order_label": np.array(int(instance.is_random_next), np.int32),
    }


def assert_examples_equal(actual, expected):
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype and actual[key].shape == value.shape, key
        np.testing.assert_array_equal(actual[key], value, err_msg=key)


def write_example(path, features):
    """One record holding the given {name: list of int or float} features."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        feature = {
            name: (float_feature if isinstance(values[0], float) else int_feature)(values)
            for name, values in features.items()
        }
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def original_features(max_seq_length=16, max_predictions_per_seq=3, label=1):
    return {
        "input_ids": [2, 5, 3, 6, 3] + [0] * (max_seq_length - 5),
        "input_mask": [1] * 5 + [0] * (max_seq_length - 5),
        "segment_ids": [0, 0, 0, 1, 1] + [0] * (max_seq_length - 5),
        "token_boundary": [1] * 5 + [0] * (max_seq_length - 5),
        "masked_lm_positions": [1] + [0] * (max_predictions_per_seq - 1),
        "masked_lm_ids": [5] + [0] * (max_predictions_per_seq - 1),
        "masked_lm_weights": [1.0] + [0.0] * (max_predictions_per_seq - 1),
        "next_sentence_labels": [label],
    }


# --- values, layout and order ---


def test_reads_exactly_what_the_original_writes_in_sorted_path_order(tmp_path):
    instances, tokenizer = make_instances(11)
    assert {i.is_random_next for i in instances} == {True, False}
    files = [str(tmp_path / "part-b.tfrecord"), str(tmp_path / "part-a.tfrecord")]
    write_original_example_files(instances, tokenizer, 16, 3, files)  # round-robin: 6 to part-b, 5 to part-a

    examples = list(read_original_tfrecords(files, max_seq_length=16, max_predictions_per_seq=3))

    in_file_order = instances[1::2] + instances[0::2]  # part-a's records, then part-b's
    assert len(examples) == len(instances)
    for example, instance in zip(examples, in_file_order):
        assert_examples_equal(example, expected_example(instance, tokenizer, 16, 3))


def test_label_is_1_exactly_when_segment_a_comes_after_b_in_the_document(tmp_path):
    instances, tokenizer = make_instances(20, seed=1)
    write_original_example_files(instances, tokenizer, 16, 3, [str(tmp_path / "data.tfrecord")])
    examples = list(read_original_tfrecords([tmp_path / "data.tfrecord"], 16, 3))
    for example, instance in zip(examples, instances, strict=True):
        tokens = list(instance.tokens)
        for position, label in zip(instance.masked_lm_positions, instance.masked_lm_labels):
            tokens[position] = label
        # First piece of each segment: its index k in "w<doc>_<k>" orders it in the document.
        first = {
            s: next(t for t, seg in zip(tokens, instance.segment_ids) if seg == s and t.startswith("w")) for s in (0, 1)
        }
        a_after_b = int(first[0].split("_")[1]) > int(first[1].split("_")[1])
        assert example["sentence_order_label"] == int(a_after_b)
        assert example["sentence_order_label"] == int(instance.is_random_next)


def test_layout_matches_create_examples(tmp_path):
    instances, tokenizer = make_instances(3)
    write_original_example_files(instances, tokenizer, 16, 3, [str(tmp_path / "data.tfrecord")])
    read = next(read_original_tfrecords(str(tmp_path / "data.tfrecord"), 16, 3))
    documents = [[" ".join(tokenizer.pieces[5:9]), " ".join(tokenizer.pieces[9:13])]]
    ours = next(create_examples(documents, tokenizer, max_seq_length=16, max_predictions_per_seq=3))
    assert tuple(read) == FEATURES
    for key in FEATURES:
        assert (read[key].dtype, read[key].shape) == (ours[key].dtype, ours[key].shape), key


def test_streams_batches_across_many_records_and_files(tmp_path):
    # More records than one parse batch, in three files: order and values survive the batching.
    instances, tokenizer = make_instances(700, seed=2)
    files = [str(tmp_path / f"shard-{i}.tfrecord") for i in range(3)]
    write_original_example_files(instances, tokenizer, 16, 3, files)
    examples = read_original_tfrecords(f"{tmp_path}/shard-2.tfrecord,{tmp_path}/shard-[01].tfrecord", 16, 3)
    in_file_order = instances[0::3] + instances[1::3] + instances[2::3]
    for example, instance in zip(examples, in_file_order, strict=True):
        assert_examples_equal(example, expected_example(instance, tokenizer, 16, 3))


def test_records_without_token_boundary_are_read(tmp_path):
    # BERT's create_pretraining_data.py writes the same features without token_boundary.
    features = original_features()
    del features["token_boundary"]
    write_example(tmp_path / "bert.tfrecord", features)
    (example,) = read_original_tfrecords([tmp_path / "bert.tfrecord"], 16, 3)
    assert example["input_ids"].tolist() == features["input_ids"] and example["sentence_order_label"] == 1


# --- patterns ---


def test_expand_tfrecord_patterns_sorts_and_deduplicates(tmp_path):
    for name in ("b.tfrecord", "a.tfrecord", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.tfrecord").mkdir()
    spec = f"{tmp_path}/*.tfrecord, {tmp_path}/a.tfrecord,"
    assert expand_tfrecord_patterns(spec) == [str(tmp_path / "a.tfrecord"), str(tmp_path / "b.tfrecord")]
    assert expand_tfrecord_patterns([tmp_path / "c.txt"]) == [str(tmp_path / "c.txt")]


def test_expand_tfrecord_patterns_names_the_pattern_matching_nothing(tmp_path):
    (tmp_path / "a.tfrecord").write_bytes(b"")
    with pytest.raises(ValueError, match=r"No file matches '.*/b-\*\.tfrecord'"):
        expand_tfrecord_patterns(f"{tmp_path}/a.tfrecord,{tmp_path}/b-*.tfrecord")
    with pytest.raises(ValueError, match="No file matches '.*/missing.tfrecord'"):
        expand_tfrecord_patterns(f"{tmp_path}/missing.tfrecord")
    with pytest.raises(ValueError, match="No TFRecord pattern"):
        expand_tfrecord_patterns(" , ")


# --- errors ---


def test_sequence_length_mismatch_names_file_feature_and_both_lengths(tmp_path):
    instances, tokenizer = make_instances(2)
    write_original_example_files(instances, tokenizer, 128, 3, [str(tmp_path / "len128.tfrecord")])
    with pytest.raises(ValueError) as error:
        list(read_original_tfrecords([tmp_path / "len128.tfrecord"], max_seq_length=512, max_predictions_per_seq=3))
    message = str(error.value)
    assert "len128.tfrecord', record 0: feature 'input_ids' has 128 values, expected 512" in message
    assert "max_seq_length is 512 in the config but 128 in the file" in message


def test_prediction_count_mismatch_names_both_counts_and_do_permutation(tmp_path):
    instances, tokenizer = make_instances(2)
    write_original_example_files(instances, tokenizer, 16, 3, [str(tmp_path / "perm.tfrecord")], do_permutation=True)
    with pytest.raises(
        ValueError,
        match=r"perm.tfrecord', record 0: feature 'masked_lm_positions' has 6 values, "
        r"expected 3 \(max_predictions_per_seq is 3 in the config but 6 in the "
        r"file: .* 6 = 2 x 3 suggests --do_permutation",
    ):
        list(read_original_tfrecords([tmp_path / "perm.tfrecord"], 16, 3))
    assert len(list(read_original_tfrecords([tmp_path / "perm.tfrecord"], 16, 6))) == 2


def test_missing_feature_names_file_record_and_feature(tmp_path):
    good, bad = original_features(), original_features()
    del bad["masked_lm_weights"]
    with tf.io.TFRecordWriter(str(tmp_path / "x.tfrecord")) as writer:
        for features in (good, good, bad):
            feature = {k: (float_feature if isinstance(v[0], float) else int_feature)(v) for k, v in features.items()}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    with pytest.raises(ValueError, match=r"x.tfrecord', record 2 has no feature 'masked_lm_weights'"):
        list(read_original_tfrecords([tmp_path / "x.tfrecord"], 16, 3))


def test_wrong_feature_type_and_bad_label_are_named(tmp_path):
    features = original_features()
    features["masked_lm_weights"] = [1, 0, 0]
    write_example(tmp_path / "ints.tfrecord", features)
    with pytest.raises(
        ValueError,
        match=r"ints.tfrecord', record 0: feature 'masked_lm_weights' is a int64_list, "
        "expected a float_list",
    ):
        list(read_original_tfrecords([tmp_path / "ints.tfrecord"], 16, 3))
    write_example(tmp_path / "label.tfrecord", original_features(label=2))
    with pytest.raises(ValueError, match=r"label.tfrecord', record 0: next_sentence_labels is 2"):
        list(read_original_tfrecords([tmp_path / "label.tfrecord"], 16, 3))


def test_corrupted_truncated_or_compressed_file_is_named_after_the_good_records(tmp_path):
    instances, tokenizer = make_instances(600, seed=3)
    path = tmp_path / "data.tfrecord"
    write_original_example_files(instances, tokenizer, 16, 3, [str(path)])
    data = path.read_bytes()
    damaged = {
        "corrupt.tfrecord": data[:-200] + bytes([data[-200] ^ 0xFF]) + data[-199:],
        "truncated.tfrecord": data[:-7],
        "gzipped.tfrecord": gzip.compress(data),
    }
    for name, content in damaged.items():
        (tmp_path / name).write_bytes(content)
        examples = read_original_tfrecords([tmp_path / name], 16, 3)
        if name != "gzipped.tfrecord":  # streamed: the first batches come before the damage is reached
            for instance, example in zip(instances[:512], examples):  # instances first: no 513th read
                assert_examples_equal(example, expected_example(instance, tokenizer, 16, 3))
        with pytest.raises(ValueError, match=rf"TFRecord file '.*{name}' is corrupted or truncated"):
            list(examples)


def test_record_that_is_not_an_example_is_named(tmp_path):
    with tf.io.TFRecordWriter(str(tmp_path / "junk.tfrecord")) as writer:
        writer.write(b"\xff\xff not a proto")
    with pytest.raises(ValueError, match=r"junk.tfrecord', record 0 is not a tf.train.Example"):
        list(read_original_tfrecords([tmp_path / "junk.tfrecord"], 16, 3))


def test_missing_file_and_bad_arguments_fail_on_the_call(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tfrecord' does not exist"):
        read_original_tfrecords([tmp_path / "nope.tfrecord"], 16, 3)
    with pytest.raises(ValueError, match="No file matches"):
        read_original_tfrecords(f"{tmp_path}/*.tfrecord", 16, 3)
    with pytest.raises(ValueError, match="must be >= 1"):
        read_original_tfrecords([], 0, 3)


def test_without_tensorflow_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` fail
    with pytest.raises(ImportError, match=r'reading TFRecords needs tensorflow .*pip install "albert-jax\[tfds\]"'):
        read_original_tfrecords(["x.tfrecord"], 16, 3)
