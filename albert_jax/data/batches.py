"""Deterministic batches over in-memory examples, shared by pretraining and fine-tuning."""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np


def local_rows(batch: dict) -> dict:
    """This process's contiguous share of a global batch (the whole batch in a one-process job)."""
    if jax.process_count() == 1:
        return batch
    n = next(iter(batch.values())).shape[0]
    per = n // jax.process_count()
    start = jax.process_index() * per
    return {k: v[start : start + per] for k, v in batch.items()}


class ArrayBatches:
    """Batch `i` of an endless, seeded stream over `arrays` (dict of [N, ...] numpy arrays): epoch e visits
    the examples in the permutation drawn from (seed, e); batch i is the i-th run of `batch_size` of them.
    A pure function of (seed, i), so a checkpoint's step is the whole data position."""

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, seed: int):
        self.arrays, self.batch_size, self.seed = arrays, batch_size, seed
        self.size = len(next(iter(arrays.values())))
        if self.size < batch_size:
            raise ValueError(
                f"only {self.size} examples for a batch of {batch_size}: use more data or a smaller batch_size"
            )
        self._cached: tuple[int, np.ndarray] | None = None  # (epoch, its permutation)

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.size)
        return self._cached[1]

    def batch(self, index: int) -> dict[str, np.ndarray]:
        """The `index`-th batch: dict of [batch_size, ...] arrays."""
        positions = np.arange(index * self.batch_size, (index + 1) * self.batch_size)
        rows = np.concatenate(
            [
                self._permutation(int(e))[positions[positions // self.size == e] % self.size]
                for e in np.unique(positions // self.size)
            ]
        )
        return {k: v[rows] for k, v in self.arrays.items()}

    def iterate(self, start: int) -> Iterator[dict[str, np.ndarray]]:
        """This process's rows of batches start, start + 1, ... (`steps.BatchSource`)."""
        index = start
        while True:
            yield local_rows(self.batch(index))
            index += 1
