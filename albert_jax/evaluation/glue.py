"""GLUE's official metrics and leaderboard submission files.

Metrics are the ones the GLUE leaderboard reports: accuracy for every classification task, plus
Matthews correlation for CoLA, F1 of the positive class ('1') for MRPC and QQP, and Pearson and
Spearman correlations (and their mean) for STS-B.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn import metrics

from albert_jax.data.glue import get_task

# The leaderboard names MNLI's two test files; every other task has one test split.
_SUBMISSION_SUFFIX = {"test_matched": "-m", "test_mismatched": "-mm"}
_STSB_RANGE = (0.0, 5.0)


def glue_metrics(task: str, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """GLUE metrics of one task's predictions.

    Args:
      task: a task name (see `albert_jax.data.glue.get_task`).
      predictions: [N] class ids (classification) or scores (STS-B).
      labels: [N] the true class ids (indices into the task's labels) or scores.

    Returns:
      Python floats: 'accuracy' for classification tasks, plus 'mcc' (CoLA) or 'f1' (MRPC, QQP);
      'pearson', 'spearman' and 'corr' (their mean) for STS-B.

    Raises:
      ValueError: empty or differently shaped inputs, or labels of unlabelled test rows (class ids outside
        the task's labels, such as -1, or NaN scores).
    """
    info = get_task(task)
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim != 1 or predictions.shape != labels.shape or not len(labels):
        raise ValueError(
            f"need non-empty predictions and labels of the same shape [N]; got {predictions.shape} and {labels.shape}"
        )
    if info.labels is None:
        if np.isnan(labels).any():
            raise ValueError("labels hold NaN: STS-B scores are unknown for test rows")
        pearson = float(stats.pearsonr(predictions, labels).statistic)
        spearman = float(stats.spearmanr(predictions, labels).statistic)
        return {"pearson": pearson, "spearman": spearman, "corr": (pearson + spearman) / 2}
    _check_class_ids(info, "predictions", predictions)
    _check_class_ids(info, "labels", labels)
    out = {"accuracy": float(metrics.accuracy_score(labels, predictions))}
    if info.name == "cola":
        out["mcc"] = float(metrics.matthews_corrcoef(labels, predictions))
    if info.name in ("mrpc", "qqp"):
        positive = info.labels.index("1")
        out["f1"] = float(metrics.f1_score(labels, predictions, pos_label=positive, zero_division=0.0))
    return out


def _check_class_ids(info, name, ids):
    if len(ids) and (ids.min() < 0 or ids.max() >= info.num_labels):
        raise ValueError(
            f"{name} must be class ids in [0, {info.num_labels}) for GLUE {info.name}; "
            f"got values from {ids.min()} to {ids.max()}"
        )


def write_submission(task: str, split: str, guids: Sequence[str], predictions: np.ndarray, out_dir: str) -> str:
    """Writes predictions on a test split in the GLUE leaderboard format.

    Args:
      task: a task name.
      split: one of the task's test_splits ('test'; MNLI: 'test_matched' or 'test_mismatched').
      guids: the test examples' guids, which are their GLUE indices.
      predictions: [N] class ids (classification) or scores (STS-B).
      out_dir: the folder to write into (created if missing).

    Returns:
      The path written, `<out_dir>/<submission_name>.tsv` ('MNLI-m.tsv' / 'MNLI-mm.tsv' for MNLI): a header
      `index<TAB>prediction`, then one row per example with the label string, or for STS-B the score
      clipped to [0, 5] with 3 decimals.

    Raises:
      ValueError: not a test split, a guid that is not a GLUE index, a count mismatch, or class ids out
        of range.
    """
    info = get_task(task)
    if split not in info.test_splits:
        raise ValueError(f"submissions are for GLUE {info.name}'s test splits {list(info.test_splits)}; got {split!r}")
    predictions = np.asarray(predictions)
    if predictions.shape != (len(guids),):
        raise ValueError(f"need one prediction per guid: {len(guids)} guids, predictions of shape {predictions.shape}")
    bad = [g for g in guids if not re.fullmatch(r"\d+", g)]
    if bad:
        raise ValueError(f"guids must be GLUE test indices (digits), as read from a test split; got {bad[:3]}")
    if info.labels is None:
        values = [f"{x:.3f}" for x in np.clip(predictions, *_STSB_RANGE)]
    else:
        _check_class_ids(info, "predictions", predictions)
        values = [info.labels[int(i)] for i in predictions]
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, info.submission_name + _SUBMISSION_SUFFIX.get(split, "") + ".tsv")
    with open(path, "w", encoding="utf-8") as f:
        f.write("index\tprediction\n")
        f.writelines(f"{guid}\t{value}\n" for guid, value in zip(guids, values))
    return path
