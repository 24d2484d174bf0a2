"""albert_jax.data.loader, the grain loader over prepared data: batches do not depend on the number of workers
or processes, each epoch visits every example once in a new order, and dynamic masking draws new masks every
epoch, deterministically."""

import re

import numpy as np
import pytest

from albert_jax.data import prepare
from albert_jax.data.loader import PretrainingBatches, PretrainingDataset
from albert_jax.data.pretraining import FEATURES
from helpers import VOCAB, dynamic_data, epoch, restore, tiny_config


@pytest.mark.parametrize("masking", ["static", "dynamic"])
def test_batches_do_not_depend_on_workers_or_processes(tmp_path, masking):
    config = tiny_config(masking=masking, max_documents=80)
    prepare.prepare(config, str(tmp_path), VOCAB)
    data = PretrainingDataset(str(tmp_path), "train", config.data, seed=5)
    one = PretrainingBatches(data, 8, process_index=0, process_count=1)
    expected = [one.batch(i) for i in range(6)]
    assert not all(np.array_equal(expected[0]["input_ids"], b["input_ids"]) for b in expected[1:])
    iterators = [one.iterate(2), PretrainingBatches(data, 8, workers=2, process_index=0, process_count=1).iterate(2)]
    for it in iterators:
        for i in range(2, 6):
            got = next(it)
            for key in FEATURES:
                np.testing.assert_array_equal(got[key], expected[i][key])
        it.close()
    shares = [PretrainingBatches(data, 8, process_index=p, process_count=2).iterate(0) for p in range(2)]
    for i in range(6):
        parts = [next(share) for share in shares]
        for key in FEATURES:
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), expected[i][key])


def test_epochs_visit_every_example_once_in_a_new_order(prepared):
    config, directory = prepared
    data = PretrainingDataset(directory, "train", config.data, seed=0)
    batches = PretrainingBatches(data, 4, process_index=0, process_count=1)
    stream = data.examples()
    keys = [stream[i]["input_ids"].tobytes() for i in range(2 * data.size)]
    stored = {data.examples(shuffle=False)[i]["input_ids"].tobytes() for i in range(data.size)}
    assert set(keys[: data.size]) == set(keys[data.size :]) == stored
    assert keys[: data.size] != keys[data.size :]
    np.testing.assert_array_equal(batches.batch(1)["input_ids"][0], stream[4]["input_ids"])


def test_dynamic_masking_draws_new_masks_every_epoch_deterministically(corpus, dynamic, tmp_path):
    first, second = epoch(dynamic, 0), epoch(dynamic, 1)
    assert len(first) > 2000
    for a, b in zip(first, second):
        np.testing.assert_array_equal(restore(a), restore(b))  # the same pair, other masks
    different = np.mean(
        [not np.array_equal(a["masked_lm_positions"], b["masked_lm_positions"]) for a, b in zip(first, second)]
    )
    assert different > 0.9
    docs, tok = corpus
    again = dynamic_data(tmp_path / "again", docs, tok, 128, 20, seed=3)
    other_seed = dynamic_data(tmp_path / "other", docs, tok, 128, 20, seed=4)
    for a, b in zip(first[:200], epoch(again, 0)[:200]):
        for key in FEATURES:
            np.testing.assert_array_equal(a[key], b[key])
    assert (
        np.mean(
            [
                not np.array_equal(a["input_ids"], b["input_ids"])
                for a, b in zip(first[:200], epoch(other_seed, 0)[:200])
            ]
        )
        > 0.9
    )


def test_an_unreadable_record_names_its_shard_and_the_repair(prepared, tmp_path):
    from test_data_prepare import damaged_copy, repair_command, shard_path

    config, directory = prepared
    damaged = damaged_copy(directory, tmp_path / "data", flip=["train-00001"])
    data = PretrainingDataset(damaged, "train", config.data, seed=0)
    message = (
        rf"{re.escape(shard_path(damaged, 'train-00001'))} is damaged \(record \d+: Corrupted Riegeli.*\); "
        rf"make it again: {re.escape(repair_command(damaged))}"
    )
    stream = data.examples(shuffle=False)
    with pytest.raises(ValueError) as error:
        for i in range(data.size):
            stream[i]
    assert re.fullmatch(message, str(error.value)), error.value  # one line: what run.py prints after "error: "
    batches = PretrainingBatches(data, 8, workers=2, process_index=0, process_count=1).iterate(0)
    with pytest.raises(ValueError) as error:  # raised in a worker process (grain adds a note, not to str())
        for _ in range(data.size // 8 + 1):
            next(batches)
    assert re.fullmatch(message, str(error.value)), error.value
