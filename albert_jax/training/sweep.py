"""Ablation sweeps: one experiment config plus named cells (field overrides), each cell a pretraining run
in its own work dir (optionally followed by fine-tuning from its `final/`), and the paper-style tables and
plots assembled from whatever cells have finished.

A sweep config is a pretraining config with `cells` ((name, nested overrides) pairs in table order, e.g.
`("E128-all", {"model": {"embedding_size": 128, "sharing": "all"}})`) and `sweep` (`finetune`: a
fine-tuning config spec such as `glue.py:task=sst2` or None, `finetune_overrides`: fields set on it). A
re-run skips finished cells and resumes interrupted ones (their work dirs resume exactly); `shard=(i, n)`
runs every n-th cell so n machines share a sweep.
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import os
import time

import ml_collections
import numpy as np

from albert_jax.data import prepare
from albert_jax.modeling import count_params
from albert_jax.training import configs, finetune, pretrain

DONE_NAME = "sweep_cell.json"
COLUMNS = ("cell", "sharing", "embedding_size", "parameters", "paper_parameters", "mlm_accuracy", "sop_accuracy",
           "tokens_per_sec", "wall_seconds")


def ablation_base(scale: str) -> ml_collections.ConfigDict:
    """The pretraining setup the paper's ablations share. 'paper': ALBERT-base dims, the paper's 125k
    steps on tfds Wikipedia. 'demo': the README demo's small model (H=128, 4 layers, 6k vocabulary) for
    150 steps on the built-in corpus, about a minute per cell on a 2-core CPU."""
    if scale == "paper":
        return pretrain.paper_config("base")
    if scale != "demo":
        raise ValueError(f"scale must be 'demo' or 'paper', got {scale!r}")
    c = pretrain.default_config()
    c.total_steps, c.batch_size, c.log_every, c.eval_every, c.checkpoint_every = 150, 64, 25, 150, 50
    c.model = configs.model_config("albert-tiny", vocab_size=6000, hidden_size=128, intermediate_size=512,
                                   num_attention_heads=2)
    c.data.max_seq_length, c.data.max_predictions_per_seq = 64, 10
    c.data.dupe_factor, c.data.spm_sentences, c.data.eval_batches = 2, 200_000, 8
    c.optimizer.learning_rate, c.optimizer.warmup_steps = 0.01, 15
    return c


def sweep_config(base: ml_collections.ConfigDict, grid: dict, finetune_spec: str | None = None,
                 finetune_overrides: dict | None = None) -> ml_collections.ConfigDict:
    """`base` (a pretraining config) with `cells` (name -> nested overrides, kept in this order) and the
    `sweep` section set."""
    config = ml_collections.ConfigDict(base)
    config.cells = tuple(grid.items())
    config.sweep = ml_collections.ConfigDict(dict(
        finetune=ml_collections.config_dict.placeholder(str) if finetune_spec is None else finetune_spec,
        finetune_overrides=ml_collections.ConfigDict(finetune_overrides or {})))
    return config


def load_sweep(spec: str) -> ml_collections.ConfigDict:
    """A sweep config file given as `path[:arg]` (`experiments/configs/ablation_*.py:scale=demo`)."""
    config = configs.load_config(spec)
    if "cells" not in config or not config.cells:
        raise ValueError(f"{spec} is not a sweep config: it has no `cells`")
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
    """Cell name -> nested overrides, in the sweep's order."""
    return dict(config.cells)


def run_sweep(config: ml_collections.ConfigDict, workdir: str, *, shard: tuple[int, int] = (0, 1),
              only=None) -> list[str]:
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
            tuned = configs.load_config(config.sweep.finetune)
            tuned.update(config.sweep.finetune_overrides)
            tuned.init_from = cell_dir
            finetune.run(tuned, os.path.join(cell_dir, "finetune"))
        with open(os.path.join(cell_dir, DONE_NAME), "w") as f:
            json.dump({"wall_seconds": time.time() - start}, f)
        ran.append(name)
    return ran


def _rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def collect(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
    """One row per finished cell: its sharing and E, parameter counts (this cell's model, and the same
    ablation on albert-base-v2 dims as in the paper), the last held-out MLM/SOP accuracies, median
    training tokens/s, wall time, and the last fine-tuning evaluation (prefixed `finetune_`)."""
    rows = []
    for name, overrides in cells(config).items():
        cell_dir = os.path.join(workdir, name)
        if not os.path.exists(os.path.join(cell_dir, DONE_NAME)):
            continue
        with open(os.path.join(cell_dir, DONE_NAME)) as f:
            done = json.load(f)
        model = configs.build_model_config(cell_config(config, name).model)
        paper = configs.model_config("albert-base-v2")
        paper.update(overrides.get("model", {}))
        metrics = _rows(os.path.join(cell_dir, "metrics.jsonl"))
        evals = [r for r in metrics if r.get("split") == "eval"]
        train = [r for r in metrics if r.get("split", "train") == "train"]
        row = dict(cell=name, sharing=model.sharing, embedding_size=model.embedding_size,
                   parameters=count_params(model), paper_parameters=count_params(configs.build_model_config(paper)),
                   mlm_accuracy=evals[-1]["mlm_accuracy"] if evals else float("nan"),
                   sop_accuracy=evals[-1]["sop_accuracy"] if evals else float("nan"),
                   tokens_per_sec=float(np.median([r["tokens_per_sec"] for r in train])) if train else float("nan"),
                   wall_seconds=done["wall_seconds"])
        tuned = [r for r in _rows(os.path.join(cell_dir, "finetune", "metrics.jsonl")) if r.get("split") == "eval"]
        if tuned:
            row.update({f"finetune_{k}": v for k, v in tuned[-1].items() if k not in ("step", "split")})
        row["loss_curve"] = [(r["step"], r["loss"]) for r in train]
        rows.append(row)
    return rows


def write_results(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
    """`results.csv`, `results.md` (the paper's layout: a row per cell) and, with matplotlib installed,
    `accuracy_vs_params.png` and `loss_curves.png` in `workdir`; returns their paths by kind."""
    rows = collect(config, workdir)
    columns = list(COLUMNS) + sorted({k for r in rows for k in r if k.startswith("finetune_")})
    paths = {"csv": os.path.join(workdir, "results.csv"), "markdown": os.path.join(workdir, "results.md")}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with open(paths["markdown"], "w") as f:
        f.write(markdown_table(rows, columns))
    if importlib.util.find_spec("matplotlib") is None:
        print("[sweep] matplotlib is not installed (pip install 'albert-jax[notebooks]'): no plots")
        return paths
    paths.update(_plot(rows, workdir))
    return paths


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of `rows` over `columns` (parameters in millions, accuracies with 3 decimals)."""
    def cell(key, value):
        if isinstance(value, float) and not np.isfinite(value):
            return "-"
        if key.endswith("parameters"):
            return f"{value / 1e6:.1f}M"
        if isinstance(value, float):
            return f"{value:.0f}" if key in ("tokens_per_sec", "wall_seconds") else f"{value:.3f}"
        return str(value)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(k, r.get(k, float("nan"))) for k in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], workdir: str) -> dict[str, str]:
    # Figures without pyplot: no global backend switch in the caller's process (a notebook keeps its own).
    from matplotlib.figure import Figure
    paths = {"accuracy_vs_params": os.path.join(workdir, "accuracy_vs_params.png"),
             "loss_curves": os.path.join(workdir, "loss_curves.png")}
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("mlm_accuracy", "sop_accuracy")):
        for r in rows:
            ax.scatter(r["parameters"] / 1e6, r[key])
            ax.annotate(r["cell"], (r["parameters"] / 1e6, r[key]), fontsize=8)
        ax.set(xlabel="parameters (M)", ylabel=f"held-out {key.replace('_', ' ')}")
    fig.tight_layout()
    fig.savefig(paths["accuracy_vs_params"], dpi=100)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for r in rows:
        steps, losses = zip(*r["loss_curve"]) if r["loss_curve"] else ((), ())
        ax.plot(steps, losses, label=r["cell"])
    ax.set(xlabel="step", ylabel="training loss (MLM + SOP)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["loss_curves"], dpi=100)
    return paths
