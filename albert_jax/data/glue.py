"""GLUE: the nine tasks, their readers (the official TSV download or tensorflow-datasets) and featurization.

The TSV readers follow google-research/albert's `classifier_utils.py` processors (BERT's
`run_classifier.py`): a line is split on tabs with no quote handling, because real rows hold unbalanced
`"` characters that a CSV reader would merge with the following lines. Labels keep the original strings
and order (MNLI: contradiction, entailment, neutral), so label ids match the released fine-tuned heads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GlueTaskInfo:
    """One GLUE task.

    Attributes:
      name: the short name, e.g. 'sst2', 'mnli'.
      dir_name: the task's folder in the official download, e.g. 'SST-2'.
      labels: the label strings in the original order; None for regression (STS-B).
      eval_splits: the labelled evaluation splits, ('dev',) or MNLI's ('dev_matched', 'dev_mismatched').
      test_splits: the unlabelled splits, ('test',) or MNLI's ('test_matched', 'test_mismatched').
      submission_name: the GLUE leaderboard file stem; MNLI's 'MNLI' becomes 'MNLI-m' / 'MNLI-mm'.
    """

    name: str
    dir_name: str
    labels: tuple[str, ...] | None
    eval_splits: tuple[str, ...]
    test_splits: tuple[str, ...]
    submission_name: str

    @property
    def num_labels(self) -> int:
        """Number of classes; 1 for regression."""
        return 1 if self.labels is None else len(self.labels)


_BINARY = ("0", "1")
_NLI = ("entailment", "not_entailment")
_DEV, _TEST = ("dev",), ("test",)
TASKS: dict[str, GlueTaskInfo] = {
    task.name: task
    for task in (
        GlueTaskInfo("cola", "CoLA", _BINARY, _DEV, _TEST, "CoLA"),
        GlueTaskInfo("sst2", "SST-2", _BINARY, _DEV, _TEST, "SST-2"),
        GlueTaskInfo("mrpc", "MRPC", _BINARY, _DEV, _TEST, "MRPC"),
        GlueTaskInfo("stsb", "STS-B", None, _DEV, _TEST, "STS-B"),
        GlueTaskInfo("qqp", "QQP", _BINARY, _DEV, _TEST, "QQP"),
        GlueTaskInfo(
            "mnli",
            "MNLI",
            ("contradiction", "entailment", "neutral"),
            ("dev_matched", "dev_mismatched"),
            ("test_matched", "test_mismatched"),
            "MNLI",
        ),
        GlueTaskInfo("qnli", "QNLI", _NLI, _DEV, _TEST, "QNLI"),
        GlueTaskInfo("rte", "RTE", _NLI, _DEV, _TEST, "RTE"),
        GlueTaskInfo("wnli", "WNLI", _BINARY, _DEV, _TEST, "WNLI"),
    )
}


def get_task(name: str) -> GlueTaskInfo:
    """The task called `name`, case and '-'/'_' ignored ('SST-2', 'sst2', 'sts-b', 'MNLI'); ValueError if unknown."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; valid names: {sorted(TASKS)}")
    return TASKS[key]


@dataclasses.dataclass(frozen=True)
class GlueExample:
    """One GLUE row.

    Attributes:
      guid: '<split>-<row>' for labelled rows (row counted from 0 after any header); for test rows the
        GLUE index/id column, which the leaderboard submission is keyed by.
      text_a, text_b: the sentence(s); text_b is None for single-sentence tasks (CoLA, SST-2).
      label: the label string, a float for STS-B, None for test rows.
    """

    guid: str
    text_a: str
    text_b: str | None
    label: str | float | None


def _splits(task: GlueTaskInfo) -> tuple[str, ...]:
    return ("train", *task.eval_splits, *task.test_splits)


def _check_split(task: GlueTaskInfo, split: str) -> None:
    if split not in _splits(task):
        raise ValueError(f"GLUE {task.name} has no split {split!r}; splits: {list(_splits(task))}")


class _Columns(NamedTuple):
    """0-based columns of a labelled TSV row; label -1 means the last column."""

    text_a: int
    text_b: int | None
    label: int


# Columns of labelled rows, as google-research/albert's processors read them. Test files have no label;
# their column 0 is the index/id (the guid) and their texts sit where the labelled files have them, except
# for the tasks in `_TSV_TEST_TEXT`.
_TSV_COLUMNS = {
    "cola": _Columns(3, None, 1),  # no header: source, label, original label, sentence
    "sst2": _Columns(0, None, 1),
    "mrpc": _Columns(3, 4, 0),
    "stsb": _Columns(7, 8, -1),
    "qqp": _Columns(3, 4, 5),
    "mnli": _Columns(8, 9, -1),
    "qnli": _Columns(1, 2, -1),
    "rte": _Columns(1, 2, -1),
    "wnli": _Columns(1, 2, -1),
}
_TSV_TEST_TEXT = {"cola": (1, None), "sst2": (1, None), "qqp": (1, 2)}
_COLA_COLUMNS = 4  # CoLA's train/dev files have no header to count columns from


def read_glue_tsv(glue_dir: str, task: str, split: str) -> list[GlueExample]:
    """Reads `<glue_dir>/<dir_name>/<split>.tsv` of the official GLUE download.

    Args:
      glue_dir: the folder holding the task folders ('CoLA', 'MNLI', ...).
      task: a task name (see `get_task`).
      split: 'train', one of the task's eval_splits or test_splits (MNLI: 'dev_matched', ...).

    Returns:
      The rows in file order. Texts are verbatim (no preprocessing); labels are strings (float for STS-B),
      None in test splits. QQP's train/dev rows with a wrong number of columns are skipped with a warning,
      as the original reader skips them (its train file has a few rows broken by line breaks in questions).

    Raises:
      FileNotFoundError: the file is missing (the path is named).
      ValueError: unknown split; a row with a wrong number of columns, an STS-B score that is not a
        number or bytes that are not UTF-8 (the file and 1-based line are named); a file without examples.
    """
    info = get_task(task)
    _check_split(info, split)
    path = os.path.join(os.fspath(glue_dir), info.dir_name, f"{split}.tsv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GLUE {info.name} {split} file not found: {path}")
    is_test = split in info.test_splits
    columns = _TSV_COLUMNS[info.name]
    text_a, text_b = _TSV_TEST_TEXT.get(info.name, columns[:2]) if is_test else columns[:2]
    has_header = is_test or info.name != "cola"
    needed = 1 + max(i for i in (text_a, text_b, 0 if is_test else columns.label) if i is not None)
    examples, skipped = [], 0
    # Binary lines: only "\n" ends a row (a stray "\r" inside a text stays there; "\r\n" endings are stripped),
    # and each line is decoded alone, so that bytes that are not UTF-8 are reported with their line.
    with open(path, "rb") as f:
        lines = (_decode(line, path, number).rstrip("\r\n").split("\t") for number, line in enumerate(f, 1))
        expected = _COLA_COLUMNS
        if has_header:
            header = next(lines, None)
            if header is None:
                raise ValueError(f"{path} is empty: expected a header line")
            if len(header) < needed:
                raise ValueError(
                    f"{path} line 1: expected a header of at least {needed} tab-separated columns, got {len(header)}"
                )
            expected = len(header)
        first_line = 1 + has_header
        for row, fields in enumerate(lines):
            if len(fields) != expected:
                if info.name == "qqp" and not is_test:
                    skipped += 1
                    continue
                raise ValueError(
                    f"{path} line {row + first_line}: expected {expected} tab-separated columns, got {len(fields)}"
                )
            if is_test:
                guid, label = fields[0], None
            else:
                guid, label = f"{split}-{row}", fields[columns.label]
                if info.labels is None:
                    try:
                        label = float(label)
                    except ValueError:
                        raise ValueError(
                            f"{path} line {row + first_line}: expected a number as the STS-B score, got {label!r}"
                        ) from None
            examples.append(GlueExample(guid, fields[text_a], None if text_b is None else fields[text_b], label))
    if skipped:
        logger.warning(
            "%s: skipped %d malformed rows (wrong number of columns), as the original reader does", path, skipped
        )
    if not examples:
        raise ValueError(f"{path} holds no examples" + (f" ({skipped} malformed rows skipped)" if skipped else ""))
    return examples


def _decode(line: bytes, path: str, number: int) -> str:
    """Line `number` of `path` as text; ValueError naming the file and line when it is not UTF-8."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} line {number}: not UTF-8 text ({e.reason} at byte {e.start})") from None


# tensorflow-datasets' GLUE features: the text fields, and the ClassLabel names that stand for the GLUE label
# strings (in GlueTaskInfo.labels order) where tfds renamed them; MNLI, QNLI and RTE keep the GLUE strings.
_TFDS_TEXT = {
    "cola": ("sentence", None),
    "sst2": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}
_TFDS_LABEL_NAMES = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "wnli": ("not_entailment", "entailment"),
}


def read_glue_tfds(task: str, split: str, data_dir: str | None = None) -> list[GlueExample]:
    """Reads a GLUE split from tensorflow-datasets (`glue/<name>`), downloading it if not in `data_dir`.

    Args:
      task: a task name (see `get_task`).
      split: as for `read_glue_tsv` ('dev' is tfds' 'validation', MNLI's 'dev_matched' its
        'validation_matched').
      data_dir: tfds data directory (tfds' default when None).

    Returns:
      GlueExamples as `read_glue_tsv` gives them: guid '<split>-<idx>' (labelled) or '<idx>' (test), the
      GLUE label strings (tfds' class names mapped back, e.g. 'acceptable' -> '1'), None in test splits.

    Raises:
      ValueError: unknown split, or tfds class names that do not match the task's labels.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("read_glue_tfds needs tensorflow-datasets: pip install 'albert-jax[tfds]'") from e
    info = get_task(task)
    _check_split(info, split)
    tfds_split = "validation" + split[len("dev") :] if split.startswith("dev") else split
    dataset, ds_info = tfds.load(
        f"glue/{info.name}", split=tfds_split, data_dir=data_dir, with_info=True, shuffle_files=False
    )
    to_label = None
    if info.labels is not None:
        names = tuple(ds_info.features["label"].names)
        glue_names = _TFDS_LABEL_NAMES.get(info.name, info.labels)
        if sorted(names) != sorted(glue_names):
            raise ValueError(
                f"tfds glue/{info.name} has label names {names}; expected {glue_names} "
                f"(standing for the GLUE labels {info.labels})"
            )
        to_label = [info.labels[glue_names.index(name)] for name in names]
    key_a, key_b = _TFDS_TEXT[info.name]
    is_test = split in info.test_splits
    examples = []
    for row in tfds.as_numpy(dataset):
        idx = int(row["idx"])
        if is_test:
            guid, label = str(idx), None
        elif to_label is None:
            guid, label = f"{split}-{idx}", float(row["label"])
        else:
            guid, label = f"{split}-{idx}", to_label[int(row["label"])]
        text_b = None if key_b is None else row[key_b].decode("utf-8")
        examples.append(GlueExample(guid, row[key_a].decode("utf-8"), text_b, label))
    return examples


def load_glue(
    task: str, split: str, *, glue_dir: str | None = None, tfds_data_dir: str | None = None
) -> list[GlueExample]:
    """A GLUE split: from the TSV download in `glue_dir` if given (`read_glue_tsv`), else from tfds
    (`read_glue_tfds` with `tfds_data_dir`)."""
    if glue_dir is not None:
        return read_glue_tsv(glue_dir, task, split)
    return read_glue_tfds(task, split, data_dir=tfds_data_dir)


def featurize(examples: Sequence[GlueExample], tokenizer, task: str, max_seq_length: int) -> dict[str, np.ndarray]:
    """Tokenizes examples into fixed-length model inputs.

    Args:
      examples: GlueExamples of one task, all with a text_b or all without.
      tokenizer: an `albert_jax.tokenizer.AlbertTokenizer` (or any callable with its batch signature).
      task: the task name, which gives the label vocabulary.
      max_seq_length: the row length; pairs are truncated 'longest_first', then padded.

    Returns:
      'input_ids', 'attention_mask', 'token_type_ids': int32 [N, max_seq_length]; 'label': int32 [N], the
      index into the task's labels (-1 for None), or float32 [N] for STS-B (nan for None).

    Raises:
      ValueError: no examples, a mix of single sentences and pairs, or a label the task does not have
        (the label and the guid are named).
    """
    info = get_task(task)
    if not examples:
        raise ValueError("featurize needs at least one example")
    pairs = [e.text_b is not None for e in examples]
    if any(pairs) and not all(pairs):
        odd = examples[pairs.index(not pairs[0])]
        raise ValueError(f"examples mix single sentences and pairs (e.g. {examples[0].guid!r} and {odd.guid!r})")
    features = dict(
        tokenizer(
            [e.text_a for e in examples],
            [e.text_b for e in examples] if pairs[0] else None,
            max_length=max_seq_length,
            truncation="longest_first",
            padding="max_length",
        )
    )
    if info.labels is None:
        features["label"] = np.array([np.nan if e.label is None else e.label for e in examples], np.float32)
    else:
        index, ids = {label: i for i, label in enumerate(info.labels)}, []
        for e in examples:
            if e.label is None:
                ids.append(-1)
            elif e.label in index:
                ids.append(index[e.label])
            else:
                raise ValueError(
                    f"example {e.guid!r} has label {e.label!r}, which GLUE {info.name} does not have "
                    f"(labels: {list(info.labels)})"
                )
        features["label"] = np.array(ids, np.int32)
    return features
