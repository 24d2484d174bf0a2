"""Ablation sweeps: one experiment config plus named cells (field overrides), each cell a pretraining run
in its own work dir (optionally followed by fine-tuning from its `final/`); `reporting` assembles the
tables and plots from whatever cells have finished.

A sweep config is a pretraining config with `cells` ((name, nested overrides) pairs in table order, e.g.
`("E128-all", {"model": {"embedding_size": 128, "sharing": "all"}})`) and `sweep` (`finetune`: a
fine-tuning config spec such as `glue.py:task=sst2` or None, `finetune_overrides`: fields set on it). A
re-run skips finished cells and resumes interrupted ones (their work dirs resume exactly); `shard=(i, n)`
runs every n-th cell so n machines share a sweep.
"""

from __future__ import annotations

import copy
import json
import os
import time

import ml_collections

from albert_jax import experiment
from albert_jax.data import prepare
from albert_jax.training import finetune, pretrain

DONE_NAME = "sweep_cell.json"  # written into a cell's work dir when the cell has finished


def sweep_config(
    base: ml_collections.ConfigDict,
    grid: dict,
    finetune_spec: str | None = None,
    finetune_overrides: dict | None = None,
) -> ml_collections.ConfigDict:
    """`base` (a pretraining config) with `cells` (name -> nested overrides, kept in this order) and the
    `sweep` section set."""
    config = ml_collections.ConfigDict(base)
    config.cells = tuple(grid.items())
    config.sweep = ml_collections.ConfigDict(
        dict(
            finetune=ml_collections.config_dict.placeholder(str) if finetune_spec is None else finetune_spec,
            finetune_overrides=ml_collections.ConfigDict(finetune_overrides or {}),
        )
    )
    return config


def cell_names(config: ml_collections.ConfigDict, shard: tuple[int, int] = (0, 1), only=None) -> list[str]:
    """The cells this process runs: config order, every `shard[1]`-th from `shard[0]`, restricted to `only`."""
    names = list(cells(config))
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"unknown cells {unknown}; the sweep has {names}")
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")
    return [n for k, n in enumerate(names) if k % count == index and (not only or n in only)]


def cell_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """The pretraining config of cell `name`: the sweep's fields with the cell's overrides on top."""
    cell = copy.deepcopy(config)
    with cell.unlocked():
        del cell["cells"], cell["sweep"]
    cell.update(cells(config)[name])
    return cell


def cells(config: ml_collections.ConfigDict) -> dict[str, dict]:
    """Cell name -> nested overrides, in the sweep's order; ValueError for a config that is no sweep."""
    if not config.get("cells"):
        raise ValueError("the config is not a sweep config: it has no `cells` (see experiments/configs/ablation_*.py)")
    return dict(config.cells)


def run_sweep(
    config: ml_collections.ConfigDict, workdir: str, *, shard: tuple[int, int] = (0, 1), only=None
) -> list[str]:
    """Runs the unfinished cells of this shard into `<workdir>/<cell>`; returns the names it ran. The data
    (vocabulary and examples) is prepared once for the sweep (`<workdir>/data/` unless the config names a
    `data.prepared_dir`), so every cell trains on the same examples."""
    names = cell_names(config, shard, only)
    data_dir = prepare.prepared_dir(config, workdir)
    ran = []
    for name in names:
        cell_dir = os.path.join(workdir, name)
        if os.path.exists(os.path.join(cell_dir, DONE_NAME)):
            print(f"[sweep] {name}: finished, skipped")
            continue
        print(f"[sweep] {name}: pretraining into {cell_dir}")
        cell = cell_config(config, name)
        cell.data.prepared_dir = data_dir
        start = time.time()
        pretrain.run(cell, cell_dir)
        if config.sweep.get("finetune"):
            tuned = experiment.load_config(config.sweep.finetune)
            tuned.update(config.sweep.finetune_overrides)
            tuned.init_from = cell_dir
            finetune.run(tuned, os.path.join(cell_dir, "finetune"))
        with open(os.path.join(cell_dir, DONE_NAME), "w") as f:
            json.dump({"wall_seconds": time.time() - start}, f)
        ran.append(name)
    return ran
