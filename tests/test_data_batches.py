"""albert_jax.data.batches: a batch is a pure function of the seed and its index, so that a resume reads the
batches it would have read."""

import numpy as np

from albert_jax.data.batches import ArrayBatches


def test_batches_are_a_pure_function_of_seed_and_index():
    arrays = {"x": np.arange(10), "y": np.arange(10) * 2}
    source = ArrayBatches(arrays, batch_size=4, seed=3)
    stream = [source.batch(i)["x"] for i in range(10)]
    resumed = ArrayBatches(arrays, batch_size=4, seed=3)
    for i in (7, 3, 9):  # any order, fresh object: the same batch
        np.testing.assert_array_equal(resumed.batch(i)["x"], stream[i])
    flat = np.concatenate(stream)
    for epoch in range(4):  # each epoch visits every example once
        assert sorted(flat[epoch * 10 : (epoch + 1) * 10]) == list(range(10))
    assert not np.array_equal(flat[:10], flat[10:20])  # epochs are shuffled differently
    np.testing.assert_array_equal(resumed.batch(2)["y"], stream[2] * 2)
    iterator = resumed.iterate(7)  # what the loop reads from a resume at micro-step 7
    for i in (7, 8, 9):
        np.testing.assert_array_equal(next(iterator)["x"], stream[i])
