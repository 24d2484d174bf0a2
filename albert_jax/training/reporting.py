"""The tables and plots of a sweep (`sweep`), assembled from whatever runs have finished, in the sweep's work dir:
`results.csv` (a row per (cell, seed) run), `results.md` (a row per cell: every metric as mean ± std with its 95%
Student-t confidence interval over seeds, then each cell's paired difference from the reference cell), and
plots with 95% error bars: `accuracy_vs_params.png` (when the cells differ in parameter count; else `metrics.png`,
metrics by cell) and `loss_curves.png` (training loss, mean over seeds)."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import ml_collections
import numpy as np
from scipy import stats

from albert_jax import experiment
from albert_jax.modeling import count_params
from albert_jax.training.sweep import DONE_NAME, cell_config, cells, reference, run_dir, seeds

# Model columns of a pretraining sweep; `paper_parameters` counts the cell on the dims of `sweep.paper_model`.
MODEL_COLUMNS = ("sharing", "embedding_size", "hidden_size", "num_hidden_layers", "parameters", "paper_parameters")
COST_COLUMNS = ("tokens_per_sec", "wall_seconds")
# Shown first, in this order, when present; every other metric of the evaluation rows follows.
_FIRST_METRICS = ("mlm_accuracy", "sop_accuracy", "nsp_accuracy")
_NOT_METRICS = ("step", "split", "num_examples")
BEST_NAME = os.path.join("best", "best.json")  # the best evaluation of a run with config.best_metric


class Estimate(NamedTuple):
    """A mean over n seeds with its sample std and 95% Student-t interval (nan where n is too small)."""

    mean: float
    std: float
    low: float
    high: float
    n: int


def estimate(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Mean, sample std (ddof 1) and the two-sided Student-t interval of the mean of the finite `values`."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    n = len(x)
    if not n:
        return Estimate(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Estimate(mean, math.nan, math.nan, math.nan, 1)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Estimate(mean, std, mean - half, mean + half, n)


def paired_difference(rows: list[dict], cell: str, ref: str, metric: str) -> Estimate:
    """`metric` of `cell` minus that of `ref`, seed by seed over the seeds both have, as an `Estimate`."""
    by_seed = {(r["cell"], r["seed"]): r.get(metric, math.nan) for r in rows}
    common = sorted({s for c, s in by_seed if c == cell} & {s for c, s in by_seed if c == ref})
    return estimate([by_seed[(cell, s)] - by_seed[(ref, s)] for s in common])


def _last_eval(directory: str) -> dict:
    rows = [r for r in _jsonl(os.path.join(directory, "metrics.jsonl")) if r.get("split") == "eval"]
    return {k: v for k, v in rows[-1].items() if k not in _NOT_METRICS} if rows else {}


def _jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def _evaluations(directory: str, prefix: str = "") -> dict:
    """The final evaluation of the run in `directory` and, with a best checkpoint, the best one (`best_` keys and
    `best_step`), with `prefix` on every key."""
    out = {f"{prefix}{k}": v for k, v in _last_eval(directory).items()}
    best_path = os.path.join(directory, BEST_NAME)
    if os.path.exists(best_path):
        with open(best_path) as f:
            best = json.load(f)
        out[f"{prefix}best_step"] = best["step"]
        out.update({f"{prefix}best_{k}": v for k, v in best["metrics"].items() if k not in _NOT_METRICS})
    return out


def collect(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
    """One row per finished (cell, seed) run, cells in the sweep's order and seeds ascending: `cell`, `seed`, for a
    pretraining sweep the model's sharing, E, H, L and parameter counts (this cell's model, and the same cell on
    the dims of `sweep.paper_model`, default albert-base-v2, as in the paper), the last held-out evaluation (every
    metric; `best_*` from a best checkpoint), median training tokens/s, wall time, the fine-tuning evaluations
    (prefixed `finetune_`) and the training loss curve (`loss_curve`, not a column)."""
    rows = []
    for name, overrides in cells(config).items():
        for seed in seeds(config):
            directory = run_dir(workdir, name, seed)
            if not os.path.exists(os.path.join(directory, DONE_NAME)):
                continue
            with open(os.path.join(directory, DONE_NAME)) as f:
                done = json.load(f)
            cell = cell_config(config, name, seed)
            row: dict[str, Any] = dict(cell=name, seed=cell.seed)
            if cell.get("job", "pretrain") == "pretrain":
                row.update(_model_columns(config, cell, overrides))
            train = [r for r in _jsonl(os.path.join(directory, "metrics.jsonl")) if r.get("split", "train") == "train"]
            row.update(_evaluations(directory))
            row.update(
                tokens_per_sec=float(np.median([r["tokens_per_sec"] for r in train])) if train else math.nan,
                wall_seconds=done["wall_seconds"],
            )
            row.update(_evaluations(os.path.join(directory, "finetune"), "finetune_"))
            row["loss_curve"] = [(r["step"], r["loss"]) for r in train]
            rows.append(row)
    return rows


def _model_columns(config: ml_collections.ConfigDict, cell: ml_collections.ConfigDict, overrides: dict) -> dict:
    model = experiment.albert_config(cell.model)
    paper = experiment.model_section(config.sweep.get("paper_model") or "albert-base-v2")
    paper.update(overrides.get("model", {}))
    return dict(
        sharing=model.sharing,
        embedding_size=model.embedding_size,
        hidden_size=model.hidden_size,
        num_hidden_layers=model.num_hidden_layers,
        parameters=count_params(model),
        paper_parameters=count_params(experiment.albert_config(paper)),
    )


def metric_columns(rows: list[dict]) -> list[str]:
    """The metrics the rows hold (losses left to the CSV): `_FIRST_METRICS`, then the others in first-seen order,
    fine-tuning ones last."""
    seen = dict.fromkeys(k for r in rows for k in r)
    fixed = set(("cell", "seed", "loss_curve", *MODEL_COLUMNS, *COST_COLUMNS))
    found = [k for k in seen if k not in fixed and "loss" not in k and k not in _FIRST_METRICS and "best_step" not in k]
    first = [k for k in _FIRST_METRICS if k in seen]
    return first + sorted(found, key=lambda k: k.startswith("finetune_"))


def write_results(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
    """`results.csv`, `results.md` and the plots in `workdir` (see the module docstring); returns their paths by
    kind."""
    rows = collect(config, workdir)
    model = [c for c in MODEL_COLUMNS if any(c in r for r in rows)]
    metrics = metric_columns(rows)
    every = dict.fromkeys(k for r in rows for k in r if k != "loss_curve")
    columns = ["cell", "seed", *model, *metrics, *COST_COLUMNS]
    columns += [k for k in every if k not in columns]
    paths = {"csv": os.path.join(workdir, "results.csv"), "markdown": os.path.join(workdir, "results.md")}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with open(paths["markdown"], "w") as f:
        f.write(markdown_tables(rows, list(cells(config)), reference(config), model, metrics))
    paths.update(_plot(rows, list(cells(config)), metrics, workdir))
    return paths


def markdown_tables(rows: list[dict], names: list[str], ref: str, model: Sequence[str], metrics: Sequence[str]) -> str:
    """Two Markdown tables: a row per cell with its seeds, `model` columns, every metric as `mean ± std [95% CI]`
    and the mean costs; then each cell's paired difference from `ref` (mean [95% CI] over common seeds; `*` when
    the interval excludes 0). One seed: plain values, no second table."""
    present = [n for n in names if any(r["cell"] == n for r in rows)]
    n_seeds = {n: sum(r["cell"] == n for r in rows) for n in present}
    header = ["cell", "seeds", *model, *metrics, *COST_COLUMNS]
    lines = [_row(header), "|" + "---|" * len(header)]
    for name in present:
        mine = [r for r in rows if r["cell"] == name]
        values = [name, str(n_seeds[name])]
        values += [_plain(k, mine[0].get(k, math.nan)) for k in model]
        values += [_estimate(estimate([r.get(k, math.nan) for r in mine])) for k in metrics]
        values += [_plain(k, estimate([r.get(k, math.nan) for r in mine]).mean) for k in COST_COLUMNS]
        lines.append(_row(values))
    text = "\n".join(lines) + "\n"
    if max(n_seeds.values(), default=0) < 2 or ref not in present:
        return text
    lines = [
        f"\nPaired difference from `{ref}` (same seeds; mean [95% CI], * = the interval excludes 0):\n",
        _row(["cell", "pairs", *metrics]),
        "|" + "---|" * (len(metrics) + 2),
    ]
    for name in present:
        if name == ref:
            continue
        diffs = [paired_difference(rows, name, ref, k) for k in metrics]
        lines.append(_row([name, str(max((d.n for d in diffs), default=0)), *(_difference(d) for d in diffs)]))
    return text + "\n".join(lines) + "\n"


def _row(values: Sequence[str]) -> str:
    return "| " + " | ".join(values) + " |"


def _plain(key: str, value) -> str:
    if isinstance(value, float) and not np.isfinite(value):
        return "-"
    if key.endswith("parameters"):
        return f"{value / 1e6:.1f}M"
    if isinstance(value, float):
        return f"{value:.0f}" if key in COST_COLUMNS else f"{value:.3f}"
    return str(value)


def _estimate(e: Estimate) -> str:
    if not e.n:
        return "-"
    if e.n < 2:
        return f"{e.mean:.3f}"
    return f"{e.mean:.3f} ± {e.std:.3f} [{e.low:.3f}, {e.high:.3f}]"


def _difference(e: Estimate) -> str:
    if e.n < 2:
        return "-" if not e.n else f"{e.mean:+.3f}"
    star = "*" if e.low > 0 or e.high < 0 else ""
    return f"{e.mean:+.3f} [{e.low:+.3f}, {e.high:+.3f}]{star}"


def _plot(rows: list[dict], names: list[str], metrics: Sequence[str], workdir: str) -> dict[str, str]:
    # Figures without pyplot: no global backend switch in the caller's process (a notebook keeps its own).
    from matplotlib.figure import Figure

    present = [n for n in names if any(r["cell"] == n for r in rows)]
    # parameters on the x axis when they tell the cells apart (not for fine-tuning sweeps or Table 5's cells)
    by_params = len({r.get("parameters") for r in rows}) == len(present) and all("parameters" in r for r in rows)
    paths = {
        "metrics": os.path.join(workdir, "accuracy_vs_params.png" if by_params else "metrics.png"),
        "loss_curves": os.path.join(workdir, "loss_curves.png"),
    }
    shown = list(metrics[:4]) or ["wall_seconds"]
    fig = Figure(figsize=(5 * len(shown), 4))
    for ax, key in zip(np.atleast_1d(fig.subplots(1, len(shown))), shown):
        for i, name in enumerate(present):
            mine = [r for r in rows if r["cell"] == name]
            e = estimate([r.get(key, math.nan) for r in mine])
            x = mine[0]["parameters"] / 1e6 if by_params else i
            bar = [[e.mean - e.low], [e.high - e.mean]] if e.n > 1 else None
            ax.errorbar([x], [e.mean], yerr=bar, fmt="o", capsize=4)
            ax.scatter([x] * len(mine), [r.get(key, math.nan) for r in mine], s=8, color="gray", alpha=0.6)
            ax.annotate(name, (x, e.mean), fontsize=8, xytext=(4, 4), textcoords="offset points")
        xlabel = "parameters (M)" if by_params else "cell"
        ax.set(xlabel=xlabel, ylabel=key.replace("_", " "), title=f"{key} (mean, 95% CI, seeds)")
        if not by_params:
            ax.set_xticks(range(len(present)), present, rotation=30, fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["metrics"], dpi=100)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name in present:
        curves = [dict(r["loss_curve"]) for r in rows if r["cell"] == name and r["loss_curve"]]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if not steps:
            continue
        losses = np.array([[c[s] for s in steps] for c in curves])
        line = ax.plot(steps, losses.mean(0), label=name)[0]
        if len(curves) > 1:
            band = losses.std(0, ddof=1)
            ax.fill_between(steps, losses.mean(0) - band, losses.mean(0) + band, color=line.get_color(), alpha=0.2)
    ax.set(xlabel="step", ylabel="training loss (mean ± std over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["loss_curves"], dpi=100)
    return paths
