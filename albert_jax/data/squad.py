"""SQuAD v1.1/v2.0: reading and windowed features (post-processing and scoring: `albert_jax.evaluation.squad`).

Windows follow the original BERT/ALBERT ``run_squad``: ``[CLS] question [SEP] context-window [SEP]``,
window starts ``doc_stride`` context tokens apart, a token scored only in the window where it has the
most context. Tokens are mapped to characters with the tokenizer's offsets (`SquadFeatures.offsets`), so a
predicted answer is an exact substring of the original context (accents, punctuation and spacing as written).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import numpy as np

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SquadExample:
    """One question: `answers` holds every gold (text, answer_start char index); empty if impossible."""

    qas_id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]
    is_impossible: bool


@dataclasses.dataclass(frozen=True)
class SquadFeatures:
    """What `postprocess` needs of `featurize`'s F windows of T tokens.

    example_index: int32 [F], the window's index into the examples.
    offsets: int32 [F, T, 2], character span in the example's context of each context token, -1 elsewhere.
    token_is_max_context: bool [F, T], the window is the one where this context token has the most context.
    context_mask: bool [F, T], the token belongs to the context.
    """

    example_index: np.ndarray
    offsets: np.ndarray
    token_is_max_context: np.ndarray
    context_mask: np.ndarray


# --- reading ---------------------------------------------------------------------------------------


def read_squad_json(path: str) -> tuple[list[SquadExample], list[dict]]:
    """Reads an official SQuAD v1.1 or v2.0 JSON file.

    Returns (examples, dataset): one `SquadExample` per question in file order, and the file's "data"
    list (the input of the official evaluator). Answers whose text is not found at `answer_start` are
    kept (the official dev data has some).

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: invalid JSON, or a missing/mistyped key, named with its place in the file, e.g.
        "dev-v2.0.json: data[3].paragraphs[1].qas[0]: no 'id'".
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SQuAD file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            content = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
    dataset = _field(content, "data", list, path, "top level")
    examples = []
    for a, article in enumerate(dataset):
        where = f"data[{a}]"
        for p, paragraph in enumerate(_field(article, "paragraphs", list, path, where)):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, path, where)
            for q, qa in enumerate(_field(paragraph, "qas", list, path, where)):
                where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                answers = tuple(
                    (
                        _field(answer, "text", str, path, f"{where}.answers[{n}]"),
                        _field(answer, "answer_start", int, path, f"{where}.answers[{n}]"),
                    )
                    for n, answer in enumerate(_field(qa, "answers", list, path, where))
                )
                examples.append(
                    SquadExample(
                        qas_id=str(_field(qa, "id", (str, int), path, where)),
                        question=_field(qa, "question", str, path, where),
                        context=context,
                        answers=answers,
                        is_impossible=bool(qa.get("is_impossible", False)),
                    )
                )
    return examples, dataset


def _field(node, key, kind, path, where):
    """`node[key]`, checked to be of type `kind`; the ValueError names the file and the place in it."""
    if not isinstance(node, dict):
        raise ValueError(f"{path}: {where}: not a JSON object")
    if key not in node:
        raise ValueError(f"{path}: {where}: no {key!r}")
    value = node[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{path}: {where}: {key!r} has type {type(value).__name__}")
    return value


def read_squad_tfds(version: str, split: str, data_dir: str | None = None) -> tuple[list[SquadExample], list[dict]]:
    """Reads tfds `squad/v1.1` or `squad/v2.0` (`version` "v1.1"/"v2.0"), split "train" or "validation".

    Returns (examples, dataset) like `read_squad_json`; the dataset list is rebuilt in the official
    format (one article per title, one paragraph per context, in first-seen order) for the evaluator.
    The dataset is downloaded and prepared into `data_dir` when not there yet.
    """
    if version not in ("v1.1", "v2.0"):
        raise ValueError(f"SQuAD version must be 'v1.1' or 'v2.0'; got {version!r}")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("read_squad_tfds needs tensorflow-datasets: pip install 'albert-jax[tfds]'") from e
    records = tfds.as_numpy(tfds.load(f"squad/{version}", split=split, data_dir=data_dir, shuffle_files=False))

    def text(value):
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    examples, articles = [], {}
    for record in records:
        answers = tuple((text(t), int(s)) for t, s in zip(record["answers"]["text"], record["answers"]["answer_start"]))
        example = SquadExample(
            qas_id=text(record["id"]),
            question=text(record["question"]),
            context=text(record["context"]),
            answers=answers,
            is_impossible=bool(record.get("is_impossible", False)),
        )
        examples.append(example)
        qa = {
            "id": example.qas_id,
            "question": example.question,
            "answers": [{"text": t, "answer_start": s} for t, s in answers],
        }
        if version == "v2.0":
            qa["is_impossible"] = example.is_impossible
        paragraphs = articles.setdefault(text(record["title"]), {})
        paragraphs.setdefault(example.context, []).append(qa)
    dataset = [
        {"title": title, "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()]}
        for title, paragraphs in articles.items()
    ]
    return examples, dataset


def load_squad(
    version: str,
    split: str,
    *,
    train_file: str | None = None,
    dev_file: str | None = None,
    tfds_data_dir: str | None = None,
) -> tuple[list[SquadExample], list[dict]]:
    """SQuAD `split` ("train" or "dev"): from `train_file`/`dev_file` when given, else from tfds `version`.

    Returns (examples, dataset) as `read_squad_json`.
    """
    if split not in ("train", "dev"):
        raise ValueError(f"SQuAD split must be 'train' or 'dev'; got {split!r}")
    path = train_file if split == "train" else dev_file
    if path is not None:
        return read_squad_json(path)
    return read_squad_tfds(version, "train" if split == "train" else "validation", data_dir=tfds_data_dir)


# --- features --------------------------------------------------------------------------------------


def featurize(
    examples,
    tokenizer,
    *,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    is_training: bool,
    source: str | None = None,
) -> tuple[dict[str, np.ndarray], SquadFeatures]:
    """Cuts examples into model inputs, the way the original run_squad does.

    Each window is `[CLS] question [SEP] context-window [SEP]`, the question cut to `max_query_length`
    tokens, the window holding at most `max_seq_length - len(question) - 3` context tokens, window starts
    `doc_stride` context tokens apart (the step, not the overlap). Answer positions come from the first
    gold answer: its char span maps to the context tokens overlapping it; positions are 0 ([CLS]) when
    the example is impossible or the span is not wholly inside the window. With `is_training`, examples
    whose answer text is not at its `answer_start` (whitespace aside) are skipped, as the original does,
    with a warning that counts them; a ValueError when that is every answerable question (the answer
    offsets do not fit the contexts). `source` (the file the examples come from) is named in both.

    Returns (arrays, features). arrays: int32 `input_ids`, `attention_mask`, `token_type_ids`
    [F, max_seq_length] (padded with the pad id / 0) and `start_positions`, `end_positions`,
    `example_index` [F]. features: the `SquadFeatures` that `postprocess` takes.
    """
    inputs, windows, last = [], [], None  # last: (context, its encoding) of the previous example
    answerable = skipped = 0  # training questions with an answer; those whose answer is not at answer_start
    for index, example in enumerate(examples):
        question_ids = _encode(tokenizer, example.question)[0][:max_query_length]
        if last is None or example.context != last[0]:  # the questions on one paragraph come in a row
            last = example.context, _encode(tokenizer, example.context)
        context, (context_ids, context_offsets) = last
        window_size = max_seq_length - len(question_ids) - 3
        if window_size <= 0:
            raise ValueError(
                f"max_seq_length={max_seq_length} leaves no room for context after a question of "
                f"{len(question_ids)} tokens; lower max_query_length"
            )
        answer = None
        if example.answers and not example.is_impossible:
            text, char_start = example.answers[0]
            char_end = char_start + len(text)
            if is_training:
                answerable += 1
                if " ".join(context[char_start:char_end].split()) != " ".join(text.split()):
                    skipped += 1
                    continue
            answer = _token_span(context_offsets, char_start, char_end)
        spans = _doc_spans(len(context_ids), window_size, doc_stride)
        max_context = _max_context_windows(spans, len(context_ids))
        for window, (start, length) in enumerate(spans):
            row, post = _window(
                tokenizer,
                question_ids,
                context_ids,
                context_offsets,
                start,
                length,
                answer,
                max_context == window,
                max_seq_length,
            )
            inputs.append({**row, "example_index": np.int32(index)})
            windows.append(post)
    where = f"{source}: " if source else ""
    if skipped and skipped == answerable:
        raise ValueError(
            f"{where}the answer text of every one of the {answerable} answerable training questions is not at "
            "its answer_start: are the answer_start values character offsets into these contexts?"
        )
    if skipped:
        logger.warning(
            "%sskipped %d of %d answerable training questions whose answer text is not at answer_start, as the "
            "original run_squad does",
            where,
            skipped,
            answerable,
        )
    if not inputs:
        raise ValueError(f"{where}no examples to featurize")
    arrays = {key: np.stack([row[key] for row in inputs]) for key in inputs[0]}
    offsets, is_max_context, context_mask = (np.stack(column) for column in zip(*windows))
    return arrays, SquadFeatures(arrays["example_index"], offsets, is_max_context, context_mask)


def _encode(tokenizer, text):
    """(ids [n], offsets [n, 2]) of `text` without special tokens."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return encoded["input_ids"][0], encoded["offset_mapping"][0]


def _token_span(offsets, char_start, char_end):
    """(first, last) token overlapping chars [char_start, char_end), or None when no token does."""
    after_start = np.flatnonzero(offsets[:, 1] > char_start)
    before_end = np.flatnonzero(offsets[:, 0] < char_end)
    if not len(after_start) or not len(before_end) or after_start[0] > before_end[-1]:
        return None
    return int(after_start[0]), int(before_end[-1])


def _doc_spans(num_tokens, window_size, doc_stride):
    """(start, length) of each window; one empty window for an empty context."""
    spans, start = [], 0
    while True:
        length = min(num_tokens - start, window_size)
        spans.append((start, length))
        if start + length >= num_tokens:
            return spans
        start += min(length, doc_stride)


def _max_context_windows(spans, num_tokens):
    """[num_tokens]: the window where each token has the most context (original _check_is_max_context).

    The original scores min(left, right context) + 0.01 * window length, the first window winning a tie;
    windows are never longer than the ones before them, so the length term changes no winner.
    """
    position = np.arange(num_tokens)
    scores = np.full((len(spans), num_tokens), -1)
    for window, (start, length) in enumerate(spans):
        inside = (position >= start) & (position < start + length)
        scores[window, inside] = np.minimum(position - start, start + length - 1 - position)[inside]
    return np.argmax(scores, axis=0)  # the first of equal maxima


def _window(
    tokenizer, question_ids, context_ids, context_offsets, start, length, answer, is_max_context, max_seq_length
):
    """One window: (padded input arrays, (offsets, token_is_max_context, context_mask))."""
    first = len(question_ids) + 2  # position of the window's first context token
    ids = [
        tokenizer.cls_token_id,
        *question_ids,
        tokenizer.sep_token_id,
        *context_ids[start : start + length],
        tokenizer.sep_token_id,
    ]
    pad = max_seq_length - len(ids)
    in_context = np.zeros(max_seq_length, bool)
    in_context[first : first + length] = True
    offsets = np.full((max_seq_length, 2), -1, np.int32)
    offsets[first : first + length] = context_offsets[start : start + length]
    max_context = np.zeros(max_seq_length, bool)
    max_context[first : first + length] = is_max_context[start : start + length]
    start_position = end_position = 0
    if answer is not None and start <= answer[0] and answer[1] < start + length:
        start_position, end_position = answer[0] - start + first, answer[1] - start + first
    row = {
        "input_ids": np.array(ids + [tokenizer.pad_token_id] * pad, np.int32),
        "attention_mask": np.array([1] * len(ids) + [0] * pad, np.int32),
        "token_type_ids": np.array([0] * first + [1] * (length + 1) + [0] * pad, np.int32),
        "start_positions": np.int32(start_position),
        "end_positions": np.int32(end_position),
    }
    return row, (offsets, max_context, in_context)
