"""The tables and plots of an ablation sweep (`sweep`), assembled from whatever cells have finished:
`results.csv`, `results.md` (the paper's layout, a row per cell), `accuracy_vs_params.png` and
`loss_curves.png` in the sweep's work dir."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from albert_jax import experiment
from albert_jax.modeling import count_params
from albert_jax.training.sweep import DONE_NAME, cell_config, cells

COLUMNS = (
    "cell",
    "sharing",
    "embedding_size",
    "parameters",
    "paper_parameters",
    "mlm_accuracy",
    "sop_accuracy",
    "tokens_per_sec",
    "wall_seconds",
)


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
        model = experiment.albert_config(cell_config(config, name).model)
        paper = experiment.model_section("albert-base-v2")
        paper.update(overrides.get("model", {}))
        metrics = _rows(os.path.join(cell_dir, "metrics.jsonl"))
        evals = [r for r in metrics if r.get("split") == "eval"]
        train = [r for r in metrics if r.get("split", "train") == "train"]
        row: dict[str, Any] = dict(
            cell=name,
            sharing=model.sharing,
            embedding_size=model.embedding_size,
            parameters=count_params(model),
            paper_parameters=count_params(experiment.albert_config(paper)),
            mlm_accuracy=evals[-1]["mlm_accuracy"] if evals else float("nan"),
            sop_accuracy=evals[-1]["sop_accuracy"] if evals else float("nan"),
            tokens_per_sec=float(np.median([r["tokens_per_sec"] for r in train])) if train else float("nan"),
            wall_seconds=done["wall_seconds"],
        )
        tuned = [r for r in _rows(os.path.join(cell_dir, "finetune", "metrics.jsonl")) if r.get("split") == "eval"]
        if tuned:
            row.update({f"finetune_{k}": v for k, v in tuned[-1].items() if k not in ("step", "split")})
        row["loss_curve"] = [(r["step"], r["loss"]) for r in train]
        rows.append(row)
    return rows


def write_results(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
    """`results.csv`, `results.md` (the paper's layout: a row per cell), `accuracy_vs_params.png` and
    `loss_curves.png` in `workdir`; returns their paths by kind."""
    rows = collect(config, workdir)
    columns = list(COLUMNS) + sorted({k for r in rows for k in r if k.startswith("finetune_")})
    paths = {"csv": os.path.join(workdir, "results.csv"), "markdown": os.path.join(workdir, "results.md")}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with open(paths["markdown"], "w") as f:
        f.write(markdown_table(rows, columns))
    paths.update(_plot(rows, workdir))
    return paths


def markdown_table(rows: list[dict], columns: Sequence[str]) -> str:
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

    paths = {
        "accuracy_vs_params": os.path.join(workdir, "accuracy_vs_params.png"),
        "loss_curves": os.path.join(workdir, "loss_curves.png"),
    }
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
