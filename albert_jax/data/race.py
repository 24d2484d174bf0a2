"""RACE (reading comprehension from English exams): examples and the 4-way multiple-choice inputs.

Examples come from the official download (``RACE/{train,dev,test}/{middle,high}/*.txt``, one JSON object
per file holding an article and its questions) or from tensorflow-datasets (``race/middle``,
``race/high``); both give the same `RaceExample`s. `featurize` builds the inputs as google-research/albert's
`race_utils.py` does: one ``[CLS] article [SEP] question+option [SEP]`` row per option.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np

LEVELS = ("middle", "high")  # `featurize` encodes a level as its index here
SPLITS = ("train", "dev", "test")
ANSWERS = "ABCD"
NUM_OPTIONS = len(ANSWERS)


@dataclasses.dataclass(frozen=True)
class RaceExample:
    """One question of an article.

    `example_id` is ``<level>/<file name>-<question index>`` (e.g. ``high/1001.txt-0``), unique within a
    split; `label` is the index of the right option (``A``..``D`` -> 0..3), -1 where the file has no answers.
    """

    example_id: str
    article: str
    question: str
    options: tuple[str, str, str, str]
    label: int
    level: str


def read_race_dir(race_dir: str, split: str, levels: Sequence[str] = LEVELS) -> list[RaceExample]:
    """Reads a split of the official RACE download.

    Args:
      race_dir: the folder holding ``train/``, ``dev/`` and ``test/`` (``RACE/`` of ``RACE.tar.gz``).
      split: 'train', 'dev' or 'test'.
      levels: which of 'middle', 'high' to read, in this order.

    Returns:
      The questions of ``<race_dir>/<split>/<level>/*.txt``, levels in the given order, files sorted by name,
      questions in file order.

    Raises:
      FileNotFoundError: a ``<split>/<level>`` folder is missing (it is named).
      ValueError: a bad split or level, or a malformed file (named, with the question index where there is
        one): not JSON, a missing key, not 4 options, an answer outside A-D, or answers/options/questions of
        different lengths.
    """
    _check(split, levels)
    examples = []
    for level in levels:
        folder = os.path.join(os.fspath(race_dir), split, level)
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"no RACE folder {folder}: expected <race_dir>/{split}/{level}/*.txt, "
                "race_dir being the RACE folder of RACE.tar.gz"
            )
        for name in sorted(n for n in os.listdir(folder) if n.endswith(".txt")):
            path = os.path.join(folder, name)
            try:
                with open(path, encoding="utf-8") as f:
                    record = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not a JSON object ({e})") from None
            examples.extend(_examples(record, level, name, path))
    return examples


def read_race_tfds(split: str, data_dir: str | None = None, levels: Sequence[str] = LEVELS) -> list[RaceExample]:
    """Reads a split of tensorflow-datasets' ``race/middle`` and ``race/high`` (prepared into `data_dir` if not
    there yet, which downloads RACE). Same examples, ids and errors as `read_race_dir` on the same files,
    in the dataset's order within each level."""
    _check(split, levels)
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("read_race_tfds needs tensorflow-datasets: pip install 'albert-jax[tfds]'") from e
    examples = []
    for level in levels:
        builder = tfds.builder(f"race/{level}", data_dir=data_dir)
        builder.download_and_prepare()
        for row in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
            record = {key: _decode(value) for key, value in row.items()}
            # tfds keeps the file's JSON "id", which is the level followed by the file name ("high1001.txt")
            file_id = record.pop("example_id", "")
            if not isinstance(file_id, str):
                raise ValueError(f"tfds race/{level} {split}: example_id must be a string, got {file_id!r}")
            name = file_id[len(level) :] if file_id.startswith(level) else file_id
            examples.extend(_examples(record, level, name, f"tfds race/{level} {split} example {file_id!r}"))
    return examples


def load_race(
    split: str, *, race_dir: str | None = None, tfds_data_dir: str | None = None, levels: Sequence[str] = LEVELS
) -> list[RaceExample]:
    """A RACE split from the official download when `race_dir` is given (`read_race_dir`; `tfds_data_dir` is
    then unused), else from tensorflow-datasets (`read_race_tfds`, prepared in `tfds_data_dir`)."""
    if race_dir is not None:
        return read_race_dir(race_dir, split, levels)
    return read_race_tfds(split, tfds_data_dir, levels)


def _check(split: str, levels: Sequence[str]) -> None:
    if split not in SPLITS:
        raise ValueError(f"RACE split must be one of {SPLITS}; got {split!r}")
    bad = [level for level in levels if level not in LEVELS]
    if bad or not levels:
        raise ValueError(f"RACE levels must be a non-empty subset of {LEVELS}; got {tuple(levels)!r}")


def _decode(value):
    """tfds text (bytes; arrays, lists or ragged tensors of them) -> str / nested lists of str."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "to_list"):  # `options`, a sequence of sequences, stays a tf.RaggedTensor in as_numpy
        value = value.to_list()
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_decode(v) for v in value]
    return value


def _examples(record, level: str, name: str, source: str) -> list[RaceExample]:
    """The questions of one article record ({"article", "questions", "options"[, "answers"]}); `source`
    names it in errors."""
    if not isinstance(record, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in ("article", "questions", "options") if key not in record]
    if missing:
        raise ValueError(f"{source}: missing key(s) {missing}")
    article, questions, options = record["article"], record["questions"], record["options"]
    if not isinstance(article, str):
        raise ValueError(f"{source}: 'article' must be a string")
    if not isinstance(questions, list):
        raise ValueError(f"{source}: 'questions' must be a list")
    # Files without "answers" (unlabelled data to predict on) get label -1.
    labelled = "answers" in record
    answers = record["answers"] if labelled else [None] * len(questions)
    lengths = {"questions": len(questions), "options": _length(options), "answers": _length(answers)}
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"{source}: questions, options and answers must be lists of one length; got {lengths} (None: not a list)"
        )
    examples = []
    for index, (question, choices, answer) in enumerate(zip(questions, options, answers)):
        where = f"{source}: question {index}"
        if not isinstance(question, str):
            raise ValueError(f"{where}: the question must be a string, got {question!r}")
        if not (isinstance(choices, list) and len(choices) == NUM_OPTIONS and all(isinstance(c, str) for c in choices)):
            raise ValueError(f"{where}: needs {NUM_OPTIONS} option strings, got {choices!r}")
        if labelled and answer not in tuple(ANSWERS):
            raise ValueError(f"{where}: answer {answer!r} is not one of {', '.join(ANSWERS)}")
        examples.append(
            RaceExample(
                example_id=f"{level}/{name}-{index}",
                article=article,
                question=question,
                options=tuple(choices),
                label=-1 if answer is None else ANSWERS.index(answer),
                level=level,
            )
        )
    return examples


def _length(value) -> int | None:
    return len(value) if isinstance(value, list) else None


def option_text(question: str, option: str) -> str:
    """The second segment of an option's row: the option put in the question's blank(s) ("_") if it has
    any, else ``question + " " + option`` (race_utils.py)."""
    return question.replace("_", option) if "_" in question else f"{question} {option}"


def featurize(
    examples: Iterable[RaceExample], tokenizer, max_seq_length: int = 512, max_qa_length: int = 128
) -> dict[str, np.ndarray]:
    """Model inputs for `AlbertForMultipleChoice`, as google-research/albert's `race_utils.py` builds them.

    Each option gives ``[CLS] article [SEP] qa [SEP]`` with qa = `option_text(question, option)`, its
    tokens cut to the *last* `max_qa_length`, and the article cut at the end so the row fits
    `max_seq_length`. Token types are 0 up to the first [SEP], 1 after; padding is <pad> with mask 0.

    Args:
      examples: RaceExamples.
      tokenizer: an `AlbertTokenizer` (or anything with its `encode`, `build_inputs_with_special_tokens`,
        `create_token_type_ids_from_sequences` and `pad_token_id`).
      max_seq_length: row length.
      max_qa_length: most tokens kept of question+option; at most `max_seq_length` - 3.

    Returns:
      'input_ids', 'attention_mask', 'token_type_ids': int32 [N, 4, max_seq_length]; 'label': int32 [N]
      (-1 unknown); 'level': int32 [N] (index in LEVELS: 0 middle, 1 high).
    """
    if not 0 < max_qa_length <= max_seq_length - 3:
        raise ValueError(
            f"need 0 < max_qa_length <= max_seq_length - 3 (room for [CLS] [SEP] [SEP]); got "
            f"max_qa_length={max_qa_length}, max_seq_length={max_seq_length}"
        )
    examples = list(examples)
    shape = (len(examples), NUM_OPTIONS, max_seq_length)
    input_ids = np.full(shape, tokenizer.pad_token_id, np.int32)
    token_type_ids = np.zeros(shape, np.int32)
    attention_mask = np.zeros(shape, np.int32)
    last_article, article = None, []
    for n, example in enumerate(examples):
        if example.article != last_article:  # an article's questions come together: tokenize it once
            last_article, article = example.article, tokenizer.encode(example.article, add_special_tokens=False)
        for k, option in enumerate(example.options):
            qa = tokenizer.encode(option_text(example.question, option), add_special_tokens=False)[-max_qa_length:]
            context = article[: max_seq_length - 3 - len(qa)]
            ids = tokenizer.build_inputs_with_special_tokens(context, qa)
            input_ids[n, k, : len(ids)] = ids
            token_type_ids[n, k, : len(ids)] = tokenizer.create_token_type_ids_from_sequences(context, qa)
            attention_mask[n, k, : len(ids)] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "label": np.array([e.label for e in examples], np.int32).reshape(-1),
        "level": np.array([LEVELS.index(e.level) for e in examples], np.int32).reshape(-1),
    }
