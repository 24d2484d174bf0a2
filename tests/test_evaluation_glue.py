"""albert_jax.evaluation.glue: the official metrics against formulas, and leaderboard submission files."""

import math

import numpy as np
import pytest

from albert_jax.data.glue import get_task, read_glue_tsv
from albert_jax.evaluation.glue import glue_metrics, write_submission

# --- metrics ----------------------------------------------------------------------------------------

LABELS = np.array([1, 1, 1, 0, 0, 1, 0, 1, 0, 1])
PREDS = np.array([1, 0, 1, 0, 1, 1, 0, 1, 1, 1])


def _confusion(labels, preds):
    tp = sum(1 for y, p in zip(labels, preds) if y == 1 and p == 1)
    tn = sum(1 for y, p in zip(labels, preds) if y == 0 and p == 0)
    fp = sum(1 for y, p in zip(labels, preds) if y == 0 and p == 1)
    fn = sum(1 for y, p in zip(labels, preds) if y == 1 and p == 0)
    return tp, tn, fp, fn


def test_cola_mcc_and_accuracy():
    tp, tn, fp, fn = _confusion(LABELS, PREDS)
    assert (tp, tn, fp, fn) == (5, 2, 2, 1)
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    result = glue_metrics("cola", PREDS, LABELS)
    assert result == pytest.approx({"accuracy": 0.7, "mcc": mcc})
    assert all(type(v) is float for v in result.values())


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_f1_of_the_positive_class(task):
    tp, _, fp, fn = _confusion(LABELS, PREDS)
    assert glue_metrics(task, PREDS, LABELS) == pytest.approx({"accuracy": 0.7, "f1": 2 * tp / (2 * tp + fp + fn)})
    # No positive prediction: F1 is 0, not a warning.
    assert glue_metrics(task, np.zeros(4, int), np.array([0, 1, 0, 1]))["f1"] == 0.0


def test_accuracy_only_tasks():
    result = glue_metrics("mnli", np.array([0, 2, 1, 1, 2]), np.array([0, 2, 2, 1, 0]))
    assert result == {"accuracy": 0.6} and type(result["accuracy"]) is float
    assert set(glue_metrics("rte", PREDS, LABELS)) == {"accuracy"}


def test_stsb_correlations():
    # Hand-computed: ranks differ by one swap, d^2 sums to 2: spearman = 1 - 6*2 / (4*15) = 0.8.
    assert glue_metrics("stsb", np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(
        {"pearson": 0.8, "spearman": 0.8, "corr": 0.8}
    )
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 5, 50)
    preds = labels + rng.normal(0, 1, 50)
    x, y = preds - preds.mean(), labels - labels.mean()
    pearson = (x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum())
    rx, ry = np.argsort(np.argsort(preds)).astype(float), np.argsort(np.argsort(labels)).astype(float)
    n = len(labels)
    spearman = 1 - 6 * ((rx - ry) ** 2).sum() / (n * (n * n - 1))  # no ties in continuous draws
    result = glue_metrics("stsb", preds, labels)
    assert result == pytest.approx({"pearson": pearson, "spearman": spearman, "corr": (pearson + spearman) / 2})
    assert all(type(v) is float for v in result.values())


def test_metric_errors():
    with pytest.raises(ValueError, match="non-empty"):
        glue_metrics("rte", np.array([], int), np.array([], int))
    with pytest.raises(ValueError, match=r"same shape.*\(3,\) and \(2,\)"):
        glue_metrics("stsb", np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\).*-1"):
        glue_metrics("mnli", np.array([0, 1]), np.array([0, -1]))
    with pytest.raises(ValueError, match="NaN"):
        glue_metrics("stsb", np.array([1.0, 2.0]), np.array([1.0, np.nan]))


# --- submissions ------------------------------------------------------------------------------------


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def test_submission_mnli_matched_and_mismatched(tmp_path, glue_dir):
    matched = read_glue_tsv(str(glue_dir), "mnli", "test_matched")
    path = write_submission("mnli", "test_matched", [e.guid for e in matched], np.array([2, 0]), str(tmp_path))
    assert path == str(tmp_path / "MNLI-m.tsv")
    assert _read(path) == ["index\tprediction", "0\tneutral", "1\tcontradiction"]
    path = write_submission("MNLI", "test_mismatched", ["0"], np.array([1]), str(tmp_path / "new"))
    assert path == str(tmp_path / "new" / "MNLI-mm.tsv") and _read(path) == ["index\tprediction", "0\tentailment"]


@pytest.mark.parametrize(
    "task, predictions, rows",
    [
        ("rte", [1, 0], ["not_entailment", "entailment"]),
        ("sst2", [1, 0], ["1", "0"]),
        ("stsb", [-0.2, 5.7], ["0.000", "5.000"]),
    ],
)
def test_submission_labels(tmp_path, glue_dir, task, predictions, rows):
    guids = [e.guid for e in read_glue_tsv(str(glue_dir), task, "test")]
    path = write_submission(task, "test", guids, np.array(predictions), str(tmp_path))
    assert path == str(tmp_path / f"{get_task(task).submission_name}.tsv")
    assert _read(path) == ["index\tprediction"] + [f"{i}\t{row}" for i, row in enumerate(rows)]


def test_submission_stsb_rounds_to_three_decimals(tmp_path):
    path = write_submission("stsb", "test", ["3"], np.array([2.34567]), str(tmp_path))
    assert _read(path)[1] == "3\t2.346"


def test_submission_errors(tmp_path):
    with pytest.raises(ValueError, match=r"test splits \['test'\]; got 'dev'"):
        write_submission("rte", "dev", ["0"], np.array([0]), str(tmp_path))
    with pytest.raises(ValueError, match=r"GLUE test indices.*'dev-3'"):
        write_submission("rte", "test", ["dev-3"], np.array([0]), str(tmp_path))
    with pytest.raises(ValueError, match=r"one prediction per guid: 2 guids"):
        write_submission("rte", "test", ["0", "1"], np.array([0]), str(tmp_path))
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
        write_submission("rte", "test", ["0"], np.array([2]), str(tmp_path))
