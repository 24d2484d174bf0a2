"""The prepare stage of pretraining data, streamed so that memory does not grow with the corpus:

    python -m albert_jax.data.prepare --config=experiments/configs/pretrain.py:size=base --out=DIR [--overwrite]

source (streamed) -> held-out split -> document shards of `data.docs_per_shard` documents -> a SentencePiece
vocabulary trained on a bounded sample of sentences (`data.spm_sentences`, reservoir-sampled while
streaming) -> examples made in parallel worker processes (`data.prepare_workers`), one ArrayRecord file per
shard -> `manifest.json`. `run.py` prepares into `config.data.prepared_dir` (default `<workdir>/data`)
when it finds no manifest there.

Shard k of a split holds `create_examples(documents of shard k, seed=shard_seed(data_seed(config), split, k))`
(static masking: masks fixed here, `dupe_factor` passes) or the unmasked pairs of `create_pairs` (dynamic
masking: the loader draws masks per epoch). The train split holds pairs of `data.sentence_objective` (SOP pairs
for 'none'); the held-out documents give two splits whatever the objective, `eval` (SOP pairs) and `eval_nsp`
(NSP pairs), so that every model is measured on both. A `tfrecord:<glob>` source (files of
google-research/albert's `create_pretraining_data.py`, made SOP examples without their documents) is converted
file by file instead, its records kept as they are: it has no `eval_nsp` split.

The data is a function of `data.seed` (`data_seed`: `config.seed` when None) and not of the training seed, so
runs with other `config.seed`s (initialization, dropout, data order, dynamic masks) share one prepared directory.

Resumable: every shard is written to a temporary name and renamed, so an interrupted run redoes only the
missing shards; a finished directory is reused when its settings hash matches, and a directory made with
other settings is refused unless `overwrite`. One prepare of a directory runs at a time (a lock file
`<out>.lock` beside it): a concurrent one waits, then reuses the result.

A prepared directory holds `settings.json` (written first), `spiece.model`, `documents/` (deleted when
done), `examples/{train,eval,eval_nsp}-NNNNN.array_record` and `manifest.json` (written last), which records each
shard's size and sha256. A run checks the sizes when it starts (`check_sizes`: a stat per shard) and names the
shard of a record it cannot read; `--verify DIR` reads every shard against its checksum; `--repair` deletes the
damaged shards and makes them again, identical to the originals:

    python -m albert_jax.data.prepare --verify DIR
    python -m albert_jax.data.prepare --config=... --out=DIR --repair
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import multiprocessing
import os
import random
import shutil
import sys
import time

import ml_collections
import numpy as np

from albert_jax import experiment
from albert_jax.data.manifest import (
    MANIFEST,
    SPLITS,
    check_format,
    check_sizes,
    data_seed,
    read_manifest,
    repair_command,
    sentence_objective,
    settings,
    settings_hash,
    sha256,
    shard_path,
    shard_seed,
    verify,
)

SETTINGS = "settings.json"
_SOURCE_SPLITS = SPLITS[:2]  # what the source (its documents or records) is split into
_EVAL_OFFSET_STREAM = 7


def prepared_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Where a run's prepared data lives: `config.data.prepared_dir`, else `<workdir>/data`."""
    return config.data.prepared_dir or os.path.join(workdir, "data")


def prepare(
    config: ml_collections.ConfigDict, out: str, vocab_size: int, *, overwrite: bool = False, repair: bool = False
) -> dict:
    """Prepares (or finishes preparing, or reuses) the pretraining data of `config` in `out`; returns the
    manifest. ValueError when `out` was prepared with other settings (or by another version) and not
    `overwrite`. `repair` first deletes the shards of a finished `out` that fail `verify`, and its manifest."""
    values = settings(config, vocab_size)
    with _exclusive(out):
        return _prepare(config, out, vocab_size, values, overwrite, repair)


def _exclusive(out: str):
    """A lock on `<out>.lock` (`experiment.exclusive`), so that one prepare of a directory runs at a time:
    concurrent runs, e.g. sweep shards on several hosts over a shared file system, wait for the first and then
    reuse what it made. The lock file stays beside the directory."""
    busy = f"waiting for another prepare of {out} to finish"
    return experiment.exclusive(os.path.abspath(out).rstrip(os.sep) + ".lock", busy=busy, wait=True)


def _prepare(
    config: ml_collections.ConfigDict, out: str, vocab_size: int, values: dict, overwrite: bool, repair: bool
) -> dict:
    from albert_jax.tokenizer import AlbertTokenizer, check_vocab_size

    digest = settings_hash(values)
    _claim(out, values, overwrite)
    manifest_path = os.path.join(out, MANIFEST)
    if repair and os.path.exists(manifest_path):
        _delete_damaged(out)
    if os.path.exists(manifest_path):
        return read_manifest(out)
    data = config.data
    os.makedirs(os.path.join(out, "examples"), exist_ok=True)
    if data.source.startswith("tfrecord:"):
        vocab = _copy_vocab(data.vocab_file, out)
        jobs = _tfrecord_jobs(config, out)
    else:
        shards = _document_shards(config, out)
        vocab = _copy_vocab(data.vocab_file, out) if data.vocab_file else os.path.join(out, "spiece.model")
        if not os.path.exists(vocab):
            _train_vocabulary(out, vocab_size, data.spm_sentences, data_seed(config))
        jobs = _document_jobs(config, out, shards, vocab)
    tokenizer = AlbertTokenizer(vocab)
    check_vocab_size(tokenizer, vocab_size)
    made = _run_jobs(jobs, data.prepare_workers)
    shards = [made[name] for name in sorted(made)]
    splits = _SOURCE_SPLITS if data.source.startswith("tfrecord:") else SPLITS  # made SOP examples: no eval_nsp
    examples = {split: sum(s["examples"] for s in shards if s["split"] == split) for split in splits}
    # eval_nsp has examples whenever eval has (the same documents, chunked alike): its check is eval's
    for split in _SOURCE_SPLITS:
        if not examples[split]:
            raise ValueError(
                f"No {split} pretraining example can be made from {data.source}: an example pairs two segments of "
                "one document, so a document needs at least two (non-empty) sentences. Text files need one "
                "sentence per line and a blank line only between documents"
                + ("; a small corpus may need a larger config.data.eval_fraction" if split == "eval" else "")
            )
    from albert_jax.data.pretraining import special_ids
    from albert_jax.data.records import record_dtype

    manifest = dict(
        settings_hash=digest,
        settings=values,
        vocab_file="spiece.model",
        vocab_size=tokenizer.vocab_size,
        special_ids=special_ids(tokenizer),
        masking=data.masking,
        max_seq_length=data.max_seq_length,
        record_dtype=record_dtype(tokenizer.vocab_size, data.max_seq_length).str,
        shards=shards,
        examples=examples,
    )
    experiment.write_json(manifest_path, manifest)
    shutil.rmtree(os.path.join(out, "documents"), ignore_errors=True)
    counts = ", ".join(f"{count} {split}" for split, count in examples.items())
    _progress(f"done: {counts} examples in {len(shards)} shards in {out}")
    return manifest


def ensure_prepared(config: ml_collections.ConfigDict, workdir: str, vocab_size: int) -> str:
    """The prepared data of a run (prepared by process 0 if missing; the other processes wait for it), its shards'
    sizes checked by every process (`check_sizes`)."""
    import jax
    from jax.experimental import multihost_utils

    out = prepared_dir(config, workdir)
    if jax.process_index() == 0:
        prepare(config, out, vocab_size)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("prepared data")
    check_sizes(out)
    return out


def is_eval(index: int, eval_fraction: float, offset: float) -> bool:
    """Whether document (or record) `index` is held out: a systematic sample, one in every 1/eval_fraction
    with a seeded `offset` in [0, 1), so a stream is split without knowing its length."""
    return math.floor((index + 1) * eval_fraction + offset) > math.floor(index * eval_fraction + offset)


def eval_offset(seed: int, stream: int = 0) -> float:
    return float(np.random.default_rng([seed, _EVAL_OFFSET_STREAM, stream]).random())


def _delete_damaged(out: str) -> None:
    """Deletes the damaged shards of a finished `out` (`verify`) and its manifest, so that the resumable prepare
    makes those shards again: from the source streamed anew (the document shards are gone), each a function
    of its documents and seed only, so identical to the originals."""
    damaged = verify(out)
    for path in damaged:
        _progress(f"deleting {path}: {damaged[path]}")
        if os.path.exists(path):
            os.remove(path)
    if damaged:
        os.remove(os.path.join(out, MANIFEST))
    else:
        _progress(f"every shard of {out} is intact: nothing to repair")


# ---------------------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------------------
def _claim(out: str, values: dict, overwrite: bool) -> None:
    """Makes `out` this preparation's (resuming one with the same settings); refuses other data, or data of
    another version, unless `overwrite`, which starts over."""
    path = os.path.join(out, SETTINGS)
    if not overwrite and os.path.exists(path):
        with open(path) as f:
            check_format(out, json.load(f))
    ours = experiment.check_claim(
        out,
        SETTINGS,
        values,
        overwrite=overwrite,
        conflict="holds pretraining data prepared with other settings",
        fix="use --overwrite to prepare it anew, or another directory",
        foreign="holds no prepared data; use another directory or --overwrite",
        ours=(MANIFEST,),
    )
    if not ours:
        experiment.write_claim(out, SETTINGS, values, overwrite=overwrite)


def _document_shards(config: ml_collections.ConfigDict, out: str) -> dict[str, int]:
    """Streams the source once into document shards (documents/<split>-NNNNN.txt, the original text format)
    and a reservoir sample of training sentences for the vocabulary; returns shard name -> documents.
    Redone from the start if interrupted (only the example stage resumes shard by shard)."""
    from albert_jax.data.sources import iter_source

    directory = os.path.join(out, "documents")
    index_path = os.path.join(directory, "index.json")
    if os.path.exists(index_path):
        with open(index_path) as f:
            return json.load(f)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    data = config.data
    # no sample when the vocabulary is given or already trained (a --repair streams the source again)
    sampled = not data.vocab_file and not os.path.exists(os.path.join(out, "spiece.model"))
    sample = _Reservoir(data.spm_sentences if sampled else 0, data_seed(config))
    buffers: dict[str, list] = {split: [] for split in _SOURCE_SPLITS}
    shards: dict[str, int] = {}
    offset, start, count = eval_offset(data_seed(config)), time.time(), 0

    def flush(split):
        name = f"{split}-{sum(n.startswith(split) for n in shards):05d}"
        with open(os.path.join(directory, name + ".txt"), "w", encoding="utf-8") as f:
            f.write("\n\n".join("\n".join(document) for document in buffers[split]) + "\n")
        shards[name] = len(buffers[split])
        buffers[split] = []

    for count, document in enumerate(
        iter_source(data.source, data_dir=data.tfds_data_dir, max_documents=data.max_documents), 1
    ):
        split = "eval" if is_eval(count - 1, data.eval_fraction, offset) else "train"
        if len(buffers[split]) == data.docs_per_shard:  # flushed lazily: the last document stays in memory
            flush(split)
        buffers[split].append(document)
        if split == "train":
            sample.add(document)
        if count % 100_000 == 0:
            _progress(f"read {count} documents ({count / (time.time() - start):.0f}/s)")
    if count < 2:
        raise ValueError(f"the corpus has {count} document(s); at least 2 are needed (train + eval)")
    if not shards.get("eval-00000") and not buffers["eval"] and data.eval_fraction > 0:
        buffers["eval"].append(buffers["train"].pop())  # a small corpus still holds one document out
    if not buffers["train"] and not any(n.startswith("train") for n in shards):
        raise ValueError(f"config.data.eval_fraction={data.eval_fraction} leaves no training document")
    for split in _SOURCE_SPLITS:
        if buffers[split]:
            flush(split)
    if sampled:
        sample.save(os.path.join(out, "spm_sample.txt"))
    experiment.write_json(index_path, shards)
    _progress(f"read {count} documents into {len(shards)} shards")
    return shards


def _train_vocabulary(out: str, vocab_size: int, spm_sentences: int, seed: int) -> None:
    from albert_jax.tokenizer import train_spm

    sample_path = os.path.join(out, "spm_sample.txt")
    _progress(f"training a {vocab_size}-piece SentencePiece vocabulary")
    with open(sample_path, encoding="utf-8") as f:
        train_spm(
            (line.rstrip("\n") for line in f),
            vocab_size,
            os.path.join(out, "spiece.tmp"),
            input_sentence_size=spm_sentences,
            seed=seed,
        )
    os.replace(os.path.join(out, "spiece.tmp.model"), os.path.join(out, "spiece.model"))
    for leftover in ("spiece.tmp.vocab", "spm_sample.txt"):
        if os.path.exists(os.path.join(out, leftover)):
            os.remove(os.path.join(out, leftover))


def _copy_vocab(vocab_file: str, out: str) -> str:
    path = os.path.join(out, "spiece.model")
    if not os.path.exists(path):
        shutil.copyfile(vocab_file, path + ".tmp")
        os.replace(path + ".tmp", path)
    return path


class _Reservoir:
    """A uniform sample of at most `size` sentences of a stream (algorithm R), seeded."""

    def __init__(self, size: int, seed: int):
        self.size, self.items, self.seen, self.rng = size, [], 0, random.Random(seed)

    def add(self, document: list[str]) -> None:
        if not self.size:
            return
        for sentence in document:
            self.seen += 1
            if len(self.items) < self.size:
                self.items.append(sentence)
            elif (j := self.rng.randrange(self.seen)) < self.size:
                self.items[j] = sentence

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(s + "\n" for s in self.items)


def _document_jobs(config: ml_collections.ConfigDict, out: str, shards: dict[str, int], vocab: str) -> list:
    """A job per example shard: each train document shard gives a train shard of the objective's pairs, each eval
    document shard an `eval` shard of SOP pairs and an `eval_nsp` shard of NSP pairs."""
    data = config.data
    args = dict(max_seq_length=data.max_seq_length, short_seq_prob=data.short_seq_prob, dupe_factor=data.dupe_factor)
    if data.masking == "static":
        args.update(
            max_predictions_per_seq=data.max_predictions_per_seq, masked_lm_prob=data.masked_lm_prob, ngram=data.ngram
        )
    pairs = {
        "train": "nsp" if sentence_objective(config) == "nsp" else "sop",  # 'none' trains on SOP pairs
        "eval": "sop",
        "eval_nsp": "nsp",
    }
    jobs = []
    for documents in shards:
        source_split, number = documents.split("-")
        for split in ("train",) if source_split == "train" else ("eval", "eval_nsp"):
            jobs.append(
                (
                    _make_document_shard,
                    dict(
                        documents=os.path.join(out, "documents", documents + ".txt"),
                        out=shard_path(out, f"{split}-{number}"),
                        vocab=vocab,
                        masking=data.masking,
                        args=dict(
                            args,
                            seed=shard_seed(data_seed(config), split, int(number)),
                            sentence_objective=pairs[split],
                        ),
                    ),
                )
            )
    return jobs


def _tfrecord_jobs(config: ml_collections.ConfigDict, out: str) -> list:
    from albert_jax.data.tfrecord import expand_tfrecord_patterns

    data = config.data
    files = expand_tfrecord_patterns(data.source.partition(":")[2])
    return [
        (
            _convert_tfrecord,
            dict(
                path=path,
                out={split: shard_path(out, f"{split}-{i:05d}") for split in _SOURCE_SPLITS},
                vocab=os.path.join(out, "spiece.model"),
                eval_fraction=data.eval_fraction,
                offset=eval_offset(data_seed(config), i),
                max_seq_length=data.max_seq_length,
                max_predictions=data.max_predictions_per_seq,
            ),
        )
        for i, path in enumerate(files)
    ]


def _run_jobs(jobs: list, workers: int) -> dict[str, dict]:
    """Runs the shard jobs not done yet (in `workers` processes when more than one is left); returns shard
    name -> manifest entry (`_shard_entry`) for every shard."""
    shards, todo = {}, []
    for job in jobs:
        done = _done_shards(job[1])
        if done is None:
            todo.append(job)
        else:
            shards.update(done)
    if len(jobs) > len(todo):
        _progress(f"{len(jobs) - len(todo)} of {len(jobs)} shards already prepared")
    start, made = time.time(), 0

    def finished(result):
        nonlocal made
        shards.update(result)
        made += sum(entry["examples"] for entry in result.values())
        _progress(f"shard {len(shards)} / {len(jobs)}: {made} examples ({made / (time.time() - start):.0f}/s)")

    workers = min(workers or os.cpu_count() or 1, len(todo))
    if workers <= 1:
        for fn, kwargs in todo:
            finished(fn(**kwargs))
    else:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for future in concurrent.futures.as_completed([pool.submit(fn, **kwargs) for fn, kwargs in todo]):
                finished(future.result())
    return shards


def _done_shards(kwargs: dict) -> dict[str, dict] | None:
    """Shard name -> manifest entry of a job's outputs when they all exist (made by an interrupted prepare),
    else None."""
    outputs = kwargs["out"] if isinstance(kwargs["out"], dict) else {"": kwargs["out"]}
    if not all(os.path.exists(p) for p in outputs.values()):
        return None
    from array_record.python.array_record_module import ArrayRecordReader

    shards = {}
    for path in outputs.values():
        reader = ArrayRecordReader(path)
        shards.update(_shard_entry(path, reader.num_records()))
        reader.close()
    return shards


def _shard_entry(path: str, examples: int) -> dict[str, dict]:
    """{name: the manifest entry of the written shard `path`}: split, examples, and the bytes and sha256 that
    `check_sizes` and `verify` compare against."""
    name = os.path.basename(path).split(".")[0]
    return {
        name: dict(
            name=name, split=name.split("-")[0], examples=examples, bytes=os.path.getsize(path), sha256=sha256(path)
        )
    }


# ---------------------------------------------------------------------------------------------------------
# Worker jobs (module-level: they run in spawned processes)
# ---------------------------------------------------------------------------------------------------------
def _make_document_shard(documents: str, out: str, vocab: str, masking: str, args: dict) -> dict[str, dict]:
    from albert_jax.data import pretraining, records
    from albert_jax.data.sources import read_text_files
    from albert_jax.tokenizer import AlbertTokenizer

    tokenizer = AlbertTokenizer(vocab)
    dtype = records.record_dtype(tokenizer.vocab_size, args["max_seq_length"])
    docs = read_text_files(documents)
    if masking == "static":
        encoded = (records.encode_example(e, dtype) for e in pretraining.create_examples(docs, tokenizer, **args))
    else:
        encoded = (
            records.encode_pair(a, b, label, dtype) for a, b, label in pretraining.create_pairs(docs, tokenizer, **args)
        )
    return _shard_entry(out, _write_records(out, _skip_empty(encoded)))


def _skip_empty(encoded):
    """No record for a shard whose documents hold no two-sentence document (another shard may)."""
    from albert_jax.data.pretraining import NoExamplesError

    try:
        yield from encoded
    except NoExamplesError:
        return


def _convert_tfrecord(
    path: str,
    out: dict[str, str],
    vocab: str,
    eval_fraction: float,
    offset: float,
    max_seq_length: int,
    max_predictions: int,
) -> dict[str, dict]:
    from albert_jax.data import records
    from albert_jax.data.tfrecord import read_original_tfrecords
    from albert_jax.tokenizer import AlbertTokenizer

    dtype = records.record_dtype(AlbertTokenizer(vocab).vocab_size, max_seq_length)
    examples = read_original_tfrecords([path], max_seq_length, max_predictions)
    writers = {split: _RecordWriter(out[split]) for split in _SOURCE_SPLITS}
    for i, example in enumerate(examples):
        writers["eval" if is_eval(i, eval_fraction, offset) else "train"].write(records.encode_example(example, dtype))
    shards = {}
    for split in _SOURCE_SPLITS:
        shards.update(_shard_entry(out[split], writers[split].close()))
    return shards


def _write_records(path: str, encoded) -> int:
    writer = _RecordWriter(path)
    for record in encoded:
        writer.write(record)
    return writer.close()


class _RecordWriter:
    """An ArrayRecord file written under a temporary name and renamed when closed (so a file that exists
    is complete)."""

    def __init__(self, path: str):
        from array_record.python.array_record_module import ArrayRecordWriter

        self.path, self.count = path, 0
        self.writer = ArrayRecordWriter(path + ".tmp", "group_size:1")

    def write(self, record: bytes) -> None:
        self.writer.write(record)
        self.count += 1

    def close(self) -> int:
        self.writer.close()
        os.replace(self.path + ".tmp", self.path)
        return self.count


def _progress(message: str) -> None:
    print(f"[prepare] {message}", file=sys.stderr, flush=True)


def main(argv=None) -> None:
    """The CLI: --config (an experiment config, as for run.py) --out DIR [--overwrite | --repair], or
    --verify DIR."""
    from absl import app, flags
    from ml_collections import config_flags

    holder = config_flags.DEFINE_config_file("config", None, "pretraining config (experiments/configs/*.py)")
    out = flags.DEFINE_string("out", None, "directory of the prepared data")
    overwrite = flags.DEFINE_bool("overwrite", False, "prepare anew even if the directory holds other data")
    repair = flags.DEFINE_bool("repair", False, "make the shards that fail --verify again (and only those)")
    check = flags.DEFINE_string("verify", None, "check every shard of this prepared directory against its sha256")

    def run(_):
        try:
            if check.value is not None:
                _verify_command(check.value)
                return
            config = holder.value
            if config is None or out.value is None:
                sys.exit("error: --config and --out are required")
            vocab_size = experiment.albert_config(config.model).vocab_size
            prepare(config, out.value, vocab_size, overwrite=overwrite.value, repair=repair.value)
        except (ValueError, OSError, ImportError) as e:
            sys.exit(f"error: {e}")

    app.run(
        run,
        argv=argv,
        flags_parser=lambda args: experiment.parse_flags(
            args,
            "python -m albert_jax.data.prepare --config=experiments/configs/NAME.py[:arg] [--config.data.x=v] "
            "--out=DIR [--overwrite | --repair]\n       python -m albert_jax.data.prepare --verify=DIR",
        ),
    )


def _verify_command(directory: str) -> None:
    """--verify: one line per damaged shard on stdout and exit status 1, or a summary line."""
    damaged = verify(directory)
    for path, problem in damaged.items():
        print(f"{path}: {problem}", flush=True)
    shards = read_manifest(directory)["shards"]
    if damaged:
        sys.exit(
            f"error: {len(damaged)} of {len(shards)} shards of {directory} are damaged; make them again: "
            + repair_command(directory)
        )
    size = sum(s["bytes"] for s in shards)
    print(f"{directory}: all {len(shards)} shards intact ({size / 2**20:.1f} MiB, sizes and sha256 as in the manifest)")


if __name__ == "__main__":
    main()
