"""RACE accuracy, overall and per level (RACE-M middle school, RACE-H high school), as the ALBERT paper reports it."""

from __future__ import annotations

import numpy as np

from albert_jax.data.race import LEVELS


def race_metrics(predictions: np.ndarray, labels: np.ndarray, levels: np.ndarray) -> dict[str, float]:
    """Accuracy of multiple-choice predictions.

    Args:
      predictions: int [N], the chosen option of each question (argmax of the 4 logits).
      labels: int [N], the right option (0..3), as `featurize` gives it.
      levels: int [N], 0 middle, 1 high (`featurize`'s 'level').

    Returns:
      {'accuracy', 'accuracy_middle', 'accuracy_high', 'num_middle', 'num_high'}; the two entries of a level
      with no question are left out.

    Raises:
      ValueError: no questions, arrays of different shapes, a label of -1 (unknown) or a level other than 0/1.
    """
    predictions, labels, levels = np.asarray(predictions), np.asarray(labels), np.asarray(levels)
    if predictions.ndim != 1 or not len(predictions) or not predictions.shape == labels.shape == levels.shape:
        raise ValueError(
            f"need non-empty predictions, labels and levels of one shape [N]; got "
            f"{predictions.shape}, {labels.shape}, {levels.shape}"
        )
    if (labels < 0).any():
        raise ValueError(f"{int((labels < 0).sum())} questions have no label (-1); unlabelled data cannot be scored")
    if not np.isin(levels, range(len(LEVELS))).all():
        raise ValueError(f"levels must be 0 ({LEVELS[0]}) or 1 ({LEVELS[1]}); got {sorted(set(levels.tolist()))}")
    correct = predictions == labels
    metrics = {"accuracy": float(correct.mean())}
    for index, name in enumerate(LEVELS):
        at_level = levels == index
        if at_level.any():
            metrics[f"accuracy_{name}"] = float(correct[at_level].mean())
            metrics[f"num_{name}"] = int(at_level.sum())
    return metrics
