"""albert_jax.evaluation.race: accuracy overall and per level (middle, high), and bad inputs."""

import numpy as np
import pytest

from albert_jax.evaluation.race import race_metrics


def test_race_metrics():
    predictions = np.array([0, 1, 2, 3, 0, 1, 2])
    labels = np.array([0, 1, 0, 3, 1, 2, 2])
    levels = np.array([0, 0, 0, 1, 1, 1, 1])
    # middle: right, right, wrong -> 2/3; high: right, wrong, wrong, right -> 2/4; all: 4/7
    assert race_metrics(predictions, labels, levels) == pytest.approx(
        {"accuracy": 4 / 7, "accuracy_middle": 2 / 3, "accuracy_high": 0.5, "num_middle": 3, "num_high": 4}
    )
    assert race_metrics(predictions[:3], labels[:3], levels[:3]) == pytest.approx(
        {"accuracy": 2 / 3, "accuracy_middle": 2 / 3, "num_middle": 3}
    )
    assert race_metrics(predictions[3:], labels[3:], levels[3:]) == pytest.approx(
        {"accuracy": 0.5, "accuracy_high": 0.5, "num_high": 4}
    )


def test_race_metrics_errors():
    with pytest.raises(ValueError, match="no label"):
        race_metrics(np.array([0, 1]), np.array([0, -1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="one shape"):
        race_metrics(np.array([0, 1]), np.array([0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="one shape"):
        race_metrics(np.zeros((2, 4)), np.array([0, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="one shape"):
        race_metrics(np.array([]), np.array([]), np.array([]))
    with pytest.raises(ValueError, match="levels must be 0"):
        race_metrics(np.array([0, 1]), np.array([0, 1]), np.array([0, 2]))
