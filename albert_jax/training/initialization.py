"""`config.init_from`: where pretrained weights come from, and how they enter a run's sharded state.

A spec is a transformers model directory, an albert-jax directory (`save_pretrained`), a pretraining
work dir (its `final/` is used, once the run has finished) or a hub name such as `albert/albert-base-v2`,
looked up in the local huggingface_hub cache only (never downloaded at run time).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import cast

import jax
import numpy as np
from absl import logging
from flax import traverse_util

from albert_jax import pretrained
from albert_jax.config import AlbertConfig
from albert_jax.tokenizer import VOCAB_FILE, AlbertTokenizer
from albert_jax.training import export

RUN_CONFIG_NAME = "run_config.json"  # what marks a work dir (written by loop.claim_workdir)


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A resolved `config.init_from`: the model directory, its AlbertConfig (config.json) and its tokenizer
    (None when the directory holds no spiece.model)."""

    directory: str
    config: AlbertConfig
    tokenizer: AlbertTokenizer | None


def resolve(spec: str) -> Pretrained:
    """The model that `spec` names, read once (config.json and the tokenizer; the weights are read by
    `load_into`); FileNotFoundError saying what was tried otherwise."""
    directory = _directory(spec)
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config.init_from={spec!r}: no config.json in {directory}")
    has_tokenizer = os.path.isfile(os.path.join(directory, VOCAB_FILE))
    return Pretrained(
        directory,
        AlbertConfig.from_json_file(path),
        AlbertTokenizer.from_pretrained(directory) if has_tokenizer else None,
    )


def _directory(spec: str) -> str:
    if os.path.isfile(os.path.join(spec, RUN_CONFIG_NAME)):
        return _finished_run(spec)
    if os.path.isdir(spec):
        final = os.path.join(spec, "final")
        if not os.path.isfile(os.path.join(spec, "config.json")) and os.path.isdir(final):
            return final
        return spec
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec) and not os.path.exists(spec):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return snapshot_download(spec, local_files_only=True)
        except LocalEntryNotFoundError:
            pass
    raise FileNotFoundError(
        f"config.init_from={spec!r} is neither a model directory (transformers or "
        "albert-jax), a pretraining work dir with final/, nor a model in the local "
        "huggingface_hub cache (download it once with `huggingface-cli download`)"
    )


def _finished_run(workdir: str) -> str:
    """The `final/` of the run in `workdir`; FileNotFoundError naming how far it got when it has not finished
    (no final/ with a complete run_state.json: stopped, killed or still running)."""
    final = os.path.join(workdir, "final")
    if (export.read_run_state(final) or {}).get("complete"):
        return final
    with open(os.path.join(workdir, RUN_CONFIG_NAME)) as f:
        total = json.load(f).get("total_steps", "?")
    saved = os.path.join(workdir, "checkpoints")
    steps = [int(p) for p in os.listdir(saved) if p.isdigit()] if os.path.isdir(saved) else []
    raise FileNotFoundError(
        f"config.init_from={workdir!r}: the run in {workdir} has not finished (step {max(steps, default=0)} of "
        f"{total}); run it again to finish it"
    )


def merge(fresh: dict, loaded: dict, skip: tuple[str, ...] = ()) -> tuple[dict, list[str], list[str]]:
    """`fresh` with every parameter that `loaded` has (and no `skip` regex matches) taken from `loaded`.

    Both are nested dicts of arrays; paths are compared '/'-joined. Returns (params, fresh paths kept,
    loaded paths not used). A loaded array whose shape differs from the fresh one is a ValueError naming it.
    """
    # flax types flatten_dict's leaves as possibly nested dicts; here they are arrays
    flat_fresh = cast(dict[str, jax.Array | np.ndarray], traverse_util.flatten_dict(fresh, sep="/"))
    flat_loaded = cast(dict[str, jax.Array | np.ndarray], traverse_util.flatten_dict(loaded, sep="/"))
    patterns = [re.compile(p) for p in skip]
    merged, kept = {}, []
    for path, value in flat_fresh.items():
        if path in flat_loaded and not any(p.search(path) for p in patterns):
            if tuple(flat_loaded[path].shape) != tuple(value.shape):
                raise ValueError(
                    f"init_from: parameter {path} has shape {tuple(flat_loaded[path].shape)} in "
                    f"the checkpoint but {tuple(value.shape)} in the model (skip it with "
                    "config.init_from_skip)"
                )
            merged[path] = flat_loaded[path]
        else:
            merged[path] = value
            kept.append(path)
    taken = set(flat_fresh) - set(kept)
    return traverse_util.unflatten_dict(merged, sep="/"), kept, sorted(set(flat_loaded) - taken)


def load_into(params: dict, directory: str, skip: tuple[str, ...] = ()) -> dict:
    """`params` (sharded jax arrays, freshly initialised) with the weights of the model in `directory` (a
    `Pretrained.directory`) loaded where present.

    Loaded arrays are placed on the sharding of the array they replace; parameters the checkpoint lacks (a
    new head) or that `skip` names keep their fresh values. Both lists are reported in the log."""
    _, loaded = pretrained.from_pretrained(directory)
    merged, kept, unused = merge(params, loaded, skip)

    def place(fresh, value):
        if isinstance(value, jax.Array):
            return value
        value = np.asarray(value, dtype=fresh.dtype)
        return jax.make_array_from_callback(value.shape, fresh.sharding, lambda index: value[index])

    merged = jax.tree_util.tree_map(place, params, merged)
    logging.warning(
        "init_from %s: loaded %d parameters; freshly initialised: %s; not used: %s",
        directory,
        len(traverse_util.flatten_dict(params)) - len(kept),
        ", ".join(kept) or "none",
        ", ".join(unused) or "none",
    )
    return merged
