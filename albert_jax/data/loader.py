"""The pretraining loader: grain over the ArrayRecord shards of a prepared directory (see `prepare`).

Records are globally shuffled by the seed (a new permutation every epoch), decoded, masked when the data is
stored unmasked (dynamic masking: masks drawn from (seed, position in the stream), so every epoch masks
anew), and batched. Global micro-batch i is rows [i*B, (i+1)*B) of that stream, a pure function of
(seed, i): a checkpoint's step is the whole data position. Process p of P reads only its B/P rows of each
batch (their shares, stacked in process order, are the one-process batch), in `workers` processes with
prefetch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import grain
import jax
import ml_collections
import numpy as np
from absl import flags

from albert_jax.data import records
from albert_jax.data.manifest import damaged_shard, read_manifest
from albert_jax.data.pretraining import Masker

_DYNAMIC_MASK_STREAM = 4
_PREFETCH_BATCHES = 4


class Decoder:
    """Record -> padded example features; for unmasked pairs the masks come from (seed, stream position).
    Picklable (grain sends it to its worker processes)."""

    def __init__(self, manifest: dict, data: ml_collections.ConfigDict, seed: int):
        self.dtype = np.dtype(manifest["record_dtype"])
        self.masking, self.seed = manifest["masking"], seed
        self.max_seq_length, self.max_predictions = manifest["max_seq_length"], data.max_predictions_per_seq
        self.pad = manifest["special_ids"]["pad"]
        self.masker = Masker(
            manifest["special_ids"],
            manifest["vocab_size"],
            self.max_seq_length,
            self.max_predictions,
            data.masked_lm_prob,
            data.ngram,
        )

    def __call__(self, index: int, record: bytes) -> dict[str, np.ndarray]:
        if self.masking == "static":
            return records.decode_example(record, self.dtype, self.max_seq_length, self.max_predictions, self.pad)
        rng = np.random.default_rng([self.seed, _DYNAMIC_MASK_STREAM, index])
        return self.masker(*records.decode_pair(record, self.dtype), rng)


class ShardSource:
    """The records of ArrayRecord shards (grain's ArrayRecordDataSource) with a record that cannot be read (a
    damaged shard fails its checksums) raised as a ValueError naming the shard and the command that makes it
    again, in grain's worker processes too (grain re-raises it as it is). Picklable."""

    def __init__(self, paths: list[str], examples: list[int]):
        self.paths, self.ends = paths, np.cumsum(examples)
        self.source = grain.sources.ArrayRecordDataSource(paths)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> bytes:
        try:
            return self.source[index]
        except (RuntimeError, OSError) as e:  # riegeli's "Corrupted Riegeli/records file: ... hash mismatch"
            shard = int(np.searchsorted(self.ends, index, side="right"))
            record = index - (int(self.ends[shard - 1]) if shard else 0)
            reason = str(e).strip().splitlines()[0]
            raise ValueError(damaged_shard(self.paths[shard], f"record {record}: {reason}")) from e


class PretrainingDataset:
    """The examples of one split of a prepared directory, as grain datasets."""

    def __init__(self, directory: str, split: str, data: ml_collections.ConfigDict, seed: int):
        self.manifest = read_manifest(directory)
        if self.manifest["masking"] == "static" and data.max_predictions_per_seq != _static_predictions(self.manifest):
            raise ValueError(
                f"{directory} was prepared with max_predictions_per_seq="
                f"{_static_predictions(self.manifest)}, the config asks for {data.max_predictions_per_seq}"
            )
        if data.max_seq_length != self.manifest["max_seq_length"]:
            raise ValueError(
                f"{directory} was prepared with max_seq_length={self.manifest['max_seq_length']}, the "
                f"config asks for {data.max_seq_length}"
            )
        shards = [s for s in self.manifest["shards"] if s["split"] == split and s["examples"]]
        self.source = ShardSource(
            [os.path.join(directory, "examples", s["name"] + ".array_record") for s in shards],
            [s["examples"] for s in shards],
        )
        self.size = len(self.source)
        self.decoder = Decoder(self.manifest, data, seed)
        self.seed = seed

    def examples(self, shuffle: bool = True) -> grain.MapDataset:
        """The endless example stream: epoch e is the records in the permutation of (seed, e), decoded."""
        dataset = grain.MapDataset.source(self.source)
        if shuffle:
            dataset = dataset.seed(self.seed).shuffle()
        return dataset.repeat().map_with_index(self.decoder)

    def first(self, count: int) -> dict[str, np.ndarray]:
        """The first `count` examples in stored order (held-out evaluation) as [count, ...] arrays."""
        return self.examples(shuffle=False).batch(count)[0]


class PretrainingBatches:
    """`steps.BatchSource` over a prepared split: batch i holds rows [i*B, (i+1)*B) of the shuffled stream."""

    def __init__(
        self,
        data: PretrainingDataset,
        batch_size: int,
        *,
        workers: int = 0,
        process_index: int | None = None,
        process_count: int | None = None,
    ):
        self.data, self.batch_size, self.workers = data, batch_size, workers
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if data.size < batch_size:
            raise ValueError(
                f"only {data.size} examples for a batch of {batch_size}: use more data or a smaller batch_size"
            )
        if batch_size % self.process_count:
            raise ValueError(f"batch size {batch_size} does not split over {self.process_count} processes")

    def batch(self, index: int) -> dict[str, np.ndarray]:
        """The whole global batch `index` (every process's rows)."""
        return self.data.examples().batch(self.batch_size)[index]

    def _local(self) -> grain.MapDataset:
        per = self.batch_size // self.process_count
        return self.data.examples().batch(per)[self.process_index :: self.process_count]

    def iterate(self, start: int) -> Iterator[dict[str, np.ndarray]]:
        """This process's rows of batches start, start + 1, ..., prefetched (by `workers` processes)."""
        dataset = self._local()[start:].to_iter_dataset(
            grain.ReadOptions(num_threads=1, prefetch_buffer_size=_PREFETCH_BATCHES)
        )
        if self.workers:
            if not flags.FLAGS.is_parsed():  # grain reads absl flags; outside an absl app (notebook) use defaults
                flags.FLAGS.mark_as_parsed()
            dataset = dataset.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=self.workers, per_worker_buffer_size=_PREFETCH_BATCHES)
            )
        return iter(dataset)


def _static_predictions(manifest: dict) -> int:
    return manifest["settings"]["max_predictions_per_seq"]
