"""Sweeps: one experiment config plus named cells (field overrides), each cell run once per seed in its own work
dir; `reporting` assembles the tables and plots from whatever runs have finished.

A sweep config is a job config (pretraining or fine-tuning) with `cells` ((name, nested overrides) pairs in table
order, e.g. `("E128-all", {"model": {"embedding_size": 128, "sharing": "all"}})`) and `sweep`: `seeds` (a tuple of
training seeds; empty: one run per cell with the config's own seed), `reference` (the cell the others are compared
with, seed by seed; None: the first), `finetune` (a fine-tuning config spec such as `glue.py:task=sst2` run from
each pretrained cell's `final/`, or None) and `finetune_overrides` (fields set on it). Any job config is a sweep of
one cell (`as_sweep`), so "RTE over 5 seeds" needs no cells.

The unit of work is a (cell, seed) run in `<workdir>/<cell>/seed<k>` (`<workdir>/<cell>` without seeds). A seed
changes `config.seed` (initialization, dropout, data order, dynamic masks) and not the prepared data, which every
seed reads from one directory per distinct data section (`data.seed` is pinned to the sweep's), so cells and
seeds differ only in what they are meant to. A re-run skips finished runs and resumes interrupted ones;
`shard=(i, n)` runs every n-th unit so n machines share a sweep.
"""

from __future__ import annotations

import copy
import json
import os
import time

import ml_collections

from albert_jax import experiment
from albert_jax.data import manifest, prepare
from albert_jax.training import finetune, pretrain

DONE_NAME = "sweep_cell.json"  # written into a run's work dir when it has finished
SINGLE_CELL = "default"  # the cell of a job config run as a sweep (`as_sweep`)


def sweep_config(
    base: ml_collections.ConfigDict,
    grid: dict,
    finetune_spec: str | None = None,
    finetune_overrides: dict | None = None,
    seeds: tuple[int, ...] = (),
    reference: str | None = None,
    paper_model: str = "albert-base-v2",
) -> ml_collections.ConfigDict:
    """`base` (a job config) with `cells` (name -> nested overrides, kept in this order) and the `sweep` section
    set; `paper_model` is the preset whose dims the table's `paper_parameters` column counts each cell on."""
    config = ml_collections.ConfigDict(base)
    config.cells = tuple(grid.items())
    config.sweep = ml_collections.ConfigDict(
        dict(
            finetune=ml_collections.config_dict.placeholder(str) if finetune_spec is None else finetune_spec,
            finetune_overrides=ml_collections.ConfigDict(finetune_overrides or {}),
            seeds=tuple(seeds),
            reference=ml_collections.config_dict.placeholder(str) if reference is None else reference,
            paper_model=paper_model,
        )
    )
    return config


def as_sweep(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` itself when it is a sweep config, else a sweep of one cell (`SINGLE_CELL`) running it as it is."""
    return config if config.get("cells") else sweep_config(config, {SINGLE_CELL: {}})


def cells(config: ml_collections.ConfigDict) -> dict[str, dict]:
    """Cell name -> nested overrides, in the sweep's order; ValueError for a config that is no sweep."""
    if not config.get("cells"):
        raise ValueError("the config is not a sweep config: it has no `cells` (see experiments/configs/ablation_*.py)")
    return dict(config.cells)


def seeds(config: ml_collections.ConfigDict) -> tuple[int | None, ...]:
    """The sweep's seeds; (None,) for a sweep without seeds (one run per cell, with the config's seed)."""
    values = tuple(config.sweep.get("seeds") or ())
    if len(set(values)) != len(values) or any(not isinstance(s, int) or s < 0 for s in values):
        raise ValueError(f"config.sweep.seeds must be distinct non-negative integers, got {values}")
    return values or (None,)


def reference(config: ml_collections.ConfigDict) -> str:
    """The cell the others are compared with: `sweep.reference`, else the first cell."""
    names = list(cells(config))
    name = config.sweep.get("reference") or names[0]
    if name not in names:
        raise ValueError(f"config.sweep.reference={name!r} is not a cell of the sweep; it has {names}")
    return name


def units(
    config: ml_collections.ConfigDict, shard: tuple[int, int] = (0, 1), only=None
) -> list[tuple[str, int | None]]:
    """The (cell, seed) runs this process does: seed by seed, cells in config order (so a half-finished sweep has
    whole seeds to compare), every `shard[1]`-th from `shard[0]`, restricted to the cells `only`."""
    names = list(cells(config))
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"unknown cells {unknown}; the sweep has {names}")
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")
    every = [(name, seed) for seed in seeds(config) for name in names]
    return [u for k, u in enumerate(every) if k % count == index and (not only or u[0] in only)]


def run_dir(workdir: str, name: str, seed: int | None) -> str:
    """The work dir of one run: `<workdir>/<cell>/seed<k>`, or `<workdir>/<cell>` in a sweep without seeds."""
    return os.path.join(workdir, name) if seed is None else os.path.join(workdir, name, f"seed{seed}")


def cell_config(config: ml_collections.ConfigDict, name: str, seed: int | None = None) -> ml_collections.ConfigDict:
    """The job config of cell `name` (and `seed`): the sweep's fields with the cell's overrides on top; a seed sets
    `seed` and pins a pretraining job's `data.seed` to the sweep's data seed."""
    cell = copy.deepcopy(config)
    with cell.unlocked():
        del cell["cells"], cell["sweep"]
    cell.update(cells(config)[name])
    if seed is not None:
        if _is_pretraining(cell):
            cell.data.seed = manifest.data_seed(config)
        cell.seed = seed
    return cell


def run_sweep(
    config: ml_collections.ConfigDict, workdir: str, *, shard: tuple[int, int] = (0, 1), only=None
) -> list[tuple[str, int | None]]:
    """Runs the unfinished (cell, seed) units of this shard (`run_dir`); returns the units it ran. Pretraining data
    (vocabulary and examples) is prepared once per distinct data section (`data_dirs`), so every run of a cell
    trains on the same examples, and cells with the same data share them."""
    reference(config)  # a bad reference fails before any run
    prepared = data_dirs(config, workdir)
    ran = []
    for name, seed in units(config, shard, only):
        directory = run_dir(workdir, name, seed)
        label = name if seed is None else f"{name} seed {seed}"
        if os.path.exists(os.path.join(directory, DONE_NAME)):
            print(f"[sweep] {label}: finished, skipped")
            continue
        cell = cell_config(config, name, seed)
        start = time.time()
        if _is_pretraining(cell):
            print(f"[sweep] {label}: pretraining into {directory}")
            cell.data.prepared_dir = prepared[name]
            pretrain.run(cell, directory)
        else:
            print(f"[sweep] {label}: fine-tuning into {directory}")
            finetune.run(cell, directory)
        if config.sweep.get("finetune"):
            tuned = experiment.load_config(config.sweep.finetune)
            tuned.update(config.sweep.finetune_overrides)
            tuned.init_from = directory
            if seed is not None:
                tuned.seed = seed
            finetune.run(tuned, os.path.join(directory, "finetune"))
        with open(os.path.join(directory, DONE_NAME), "w") as f:
            json.dump({"wall_seconds": time.time() - start}, f)
        ran.append((name, seed))
    return ran


def data_dirs(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
    """Pretraining cell -> its prepared data: `data.prepared_dir` when the config names one, else `<workdir>/data`
    for the cells whose data section is the sweep's and `<workdir>/data-<cell>` for the others (named after the
    first cell with that data section, which later cells with the same section share)."""
    base = cell_config(config, list(cells(config))[0])
    if not _is_pretraining(base):
        return {}
    by_section = {_data_key(config): prepare.prepared_dir(config, workdir)}
    out = {}
    for name in cells(config):
        key = _data_key(cell_config(config, name))
        if config.data.prepared_dir:
            out[name] = config.data.prepared_dir
        else:
            out[name] = by_section.setdefault(key, os.path.join(workdir, f"data-{name}"))
    return out


def _data_key(config: ml_collections.ConfigDict) -> str:
    """What makes two cells' prepared data differ: the data section and the vocabulary size."""
    return json.dumps([config.data.to_dict(), config.model.vocab_size], sort_keys=True, default=str)


def _is_pretraining(config: ml_collections.ConfigDict) -> bool:
    return config.get("job", "pretrain") == "pretrain"
