"""A prepared directory's contract and integrity: the settings it is a function of (`settings`, recorded in
`settings.json` and hashed into the manifest), its splits and their seeds, its manifest (`manifest.json`,
written last by `prepare`), and the integrity of its shards: the manifest records each shard's size and sha256,
a run checks the sizes when it starts (`check_sizes`, a stat per shard) and names the shard of a record it cannot
read (`damaged_shard`), and `verify` reads every shard against its checksum
(`python -m albert_jax.data.prepare --verify DIR`)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import ml_collections
import numpy as np

MANIFEST = "manifest.json"
# 2: the manifest records each shard's bytes and sha256; 3: eval_nsp shards (NSP pairs of the held-out documents)
# and the sentence objective in the settings (the train and eval shards of SOP are format 2's, byte for byte)
FORMAT = 3
SPLITS = ("train", "eval", "eval_nsp")  # eval_nsp: NSP pairs of the eval documents
SENTENCE_OBJECTIVES = ("sop", "nsp", "none")


def data_seed(config: ml_collections.ConfigDict) -> int:
    """The seed of the prepared data (vocabulary sample and training, held-out split, examples):
    `config.data.seed`, or `config.seed` when it is None."""
    seed = config.data.get("seed")
    return config.seed if seed is None else seed


def sentence_objective(config: ml_collections.ConfigDict) -> str:
    """`config.data.sentence_objective` ('sop', 'nsp' or 'none'); ValueError for another value."""
    objective = config.data.sentence_objective
    if objective not in SENTENCE_OBJECTIVES:
        raise ValueError(f"config.data.sentence_objective must be one of {SENTENCE_OBJECTIVES}, got {objective!r}")
    return objective


def settings(config: ml_collections.ConfigDict, vocab_size: int) -> dict:
    """What the prepared data is a function of (hashed into the manifest). With dynamic masking the masking
    settings are the loader's, so they are left out: changing them needs no new preparation. ValueError for
    data settings that cannot be prepared (before anything is read or written)."""
    d = config.data
    objective = sentence_objective(config)
    if d.masking not in ("static", "dynamic"):
        raise ValueError(f"config.data.masking must be 'static' or 'dynamic', got {d.masking!r}")
    if d.source.startswith("tfrecord:") and (d.masking != "static" or not d.vocab_file or objective == "nsp"):
        raise ValueError(
            "config.data.source tfrecord:... holds masked sentence-order examples: it needs "
            "config.data.masking='static' and config.data.vocab_file (the files' spiece.model), and "
            "config.data.sentence_objective 'sop' or 'none'"
        )
    vocabulary = (
        {"file_sha256": sha256(d.vocab_file)}
        if d.vocab_file
        else {"vocab_size": vocab_size, "spm_sentences": d.spm_sentences}
    )
    out = dict(
        format=FORMAT,
        source=d.source,
        max_documents=d.max_documents,
        eval_fraction=d.eval_fraction,
        docs_per_shard=d.docs_per_shard,
        seed=data_seed(config),
        vocabulary=vocabulary,
        masking=d.masking,
        max_seq_length=d.max_seq_length,
        short_seq_prob=d.short_seq_prob,
        dupe_factor=d.dupe_factor,
        sentence_objective=objective,
    )
    if d.masking == "static":
        out.update(max_predictions_per_seq=d.max_predictions_per_seq, masked_lm_prob=d.masked_lm_prob, ngram=d.ngram)
    return out


def settings_hash(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def shard_seed(seed: int, split: str, shard: int) -> int:
    """The example seed of one shard: a function of (data seed, split, shard) only."""
    return int(np.random.SeedSequence([seed, SPLITS.index(split), shard]).generate_state(1)[0])


def read_manifest(directory: str) -> dict:
    """The manifest of a finished preparation; ValueError when `directory` holds none."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        raise ValueError(
            f"{directory} holds no prepared data (no {MANIFEST}); run "
            "python -m albert_jax.data.prepare --config=... --out=DIR"
        )
    with open(path) as f:
        return json.load(f)


def shard_path(out: str, name: str) -> str:
    return os.path.join(out, "examples", name + ".array_record")


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sizes(directory: str) -> None:
    """Raises ValueError naming a shard of `directory` that is missing or not of the size in the manifest
    (truncated): a stat per shard, no reading, so that a run checks it before it starts training."""
    damaged = {}
    for shard in _manifest_of_this_version(directory)["shards"]:
        path = shard_path(directory, shard["name"])
        if problem := _size_problem(path, shard):
            damaged[path] = problem
    if damaged:
        path, problem = next(iter(damaged.items()))
        more = f" (and {len(damaged) - 1} more shards: --verify lists them)" if len(damaged) > 1 else ""
        raise ValueError(damaged_shard(path, problem + more))


def verify(directory: str) -> dict[str, str]:
    """Reads every shard of `directory` against the manifest (missing, size, sha256), with progress on stderr;
    returns damaged shard path -> what is wrong with it. ValueError when `directory` holds no prepared data of
    this version."""
    shards = _manifest_of_this_version(directory)["shards"]
    total, read, last = sum(s["bytes"] for s in shards), 0, time.time()
    damaged = {}
    for i, shard in enumerate(shards, 1):
        path = shard_path(directory, shard["name"])
        problem = _size_problem(path, shard)
        if not problem and sha256(path) != shard["sha256"]:
            problem = "its sha256 is not the manifest's: its bytes changed"
        if problem:
            damaged[path] = problem
        read += shard["bytes"]
        if time.time() - last > 10:
            gib = f"{read / 2**30:.1f} of {total / 2**30:.1f} GiB"
            print(f"[prepare] verified {i} / {len(shards)} shards ({gib})", file=sys.stderr, flush=True)
            last = time.time()
    return damaged


def damaged_shard(path: str, problem: str) -> str:
    """The one-line error of a damaged shard `path` (`directory/examples/NAME.array_record`): what is wrong
    and the command that makes it again."""
    return f"{path} is damaged ({problem}); make it again: {repair_command(os.path.dirname(os.path.dirname(path)))}"


def repair_command(directory: str) -> str:
    return f"python -m albert_jax.data.prepare --config=<the config it was prepared with> --out={directory} --repair"


def _size_problem(path: str, shard: dict) -> str | None:
    if not os.path.exists(path):
        return "missing"
    size = os.path.getsize(path)
    return None if size == shard["bytes"] else f"{size} bytes, the manifest records {shard['bytes']}"


def _manifest_of_this_version(directory: str) -> dict:
    manifest = read_manifest(directory)
    check_format(directory, manifest["settings"])
    return manifest


def check_format(directory: str, values: dict) -> None:
    """ValueError when `values` (settings.json) were written by another version of the prepare stage."""
    if values.get("format") != FORMAT:
        raise ValueError(
            f"{directory} was prepared by another version of albert-jax (format {values.get('format')}, this one "
            f"reads {FORMAT}); prepare again (--overwrite)"
        )
