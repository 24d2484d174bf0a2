"""SQuAD v1.1/v2.0: reading, windowed features, and n-best post-processing back to the context text.

Windows follow the original BERT/ALBERT ``run_squad``: ``[CLS] question [SEP] context-window [SEP]``,
window starts ``doc_stride`` context tokens apart, a token scored only in the window where it has the
most context. Tokens are mapped to characters with the tokenizer's offsets, so a predicted answer is an
exact substring of the original context (accents, punctuation and spacing as written). Score predictions
with ``albert_jax.evaluation.squad.evaluate``.
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
                    (_field(answer, "text", str, path, f"{where}.answers[{n}]"),
                     _field(answer, "answer_start", int, path, f"{where}.answers[{n}]"))
                    for n, answer in enumerate(_field(qa, "answers", list, path, where)))
                examples.append(SquadExample(
                    qas_id=str(_field(qa, "id", (str, int), path, where)),
                    question=_field(qa, "question", str, path, where), context=context, answers=answers,
                    is_impossible=bool(qa.get("is_impossible", False))))
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
        answers = tuple((text(t), int(s)) for t, s in zip(record["answers"]["text"],
                                                           record["answers"]["answer_start"]))
        example = SquadExample(qas_id=text(record["id"]), question=text(record["question"]),
                               context=text(record["context"]), answers=answers,
                               is_impossible=bool(record.get("is_impossible", False)))
        examples.append(example)
        qa = {"id": example.qas_id, "question": example.question,
              "answers": [{"text": t, "answer_start": s} for t, s in answers]}
        if version == "v2.0":
            qa["is_impossible"] = example.is_impossible
        paragraphs = articles.setdefault(text(record["title"]), {})
        paragraphs.setdefault(example.context, []).append(qa)
    dataset = [{"title": title, "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()]}
               for title, paragraphs in articles.items()]
    return examples, dataset


def load_squad(version: str, split: str, *, train_file: str | None = None, dev_file: str | None = None,
               tfds_data_dir: str | None = None) -> tuple[list[SquadExample], list[dict]]:
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


def featurize(examples, tokenizer, *, max_seq_length: int = 384, doc_stride: int = 128,
              max_query_length: int = 64, is_training: bool) -> tuple[dict[str, np.ndarray], SquadFeatures]:
    """Cuts examples into model inputs, the way the original run_squad does.

    Each window is `[CLS] question [SEP] context-window [SEP]`, the question cut to `max_query_length`
    tokens, the window holding at most `max_seq_length - len(question) - 3` context tokens, window starts
    `doc_stride` context tokens apart (the step, not the overlap). Answer positions come from the first
    gold answer: its char span maps to the context tokens overlapping it; positions are 0 ([CLS]) when
    the example is impossible or the span is not wholly inside the window. With `is_training`, examples
    whose answer text is not at its `answer_start` (whitespace aside) are skipped, as the original does.

    Returns (arrays, features). arrays: int32 `input_ids`, `attention_mask`, `token_type_ids`
    [F, max_seq_length] (padded with the pad id / 0) and `start_positions`, `end_positions`,
    `example_index` [F]. features: the `SquadFeatures` that `postprocess` takes.
    """
    inputs, windows, skipped, context, encoded_context = [], [], 0, None, None
    for index, example in enumerate(examples):
        question_ids = _encode(tokenizer, example.question)[0][:max_query_length]
        if example.context != context:  # the questions on one paragraph come in a row
            context, encoded_context = example.context, _encode(tokenizer, example.context)
        context_ids, context_offsets = encoded_context
        window_size = max_seq_length - len(question_ids) - 3
        if window_size <= 0:
            raise ValueError(f"max_seq_length={max_seq_length} leaves no room for context after a question of "
                             f"{len(question_ids)} tokens; lower max_query_length")
        answer = None
        if example.answers and not example.is_impossible:
            text, char_start = example.answers[0]
            char_end = char_start + len(text)
            if is_training and " ".join(context[char_start:char_end].split()) != " ".join(text.split()):
                skipped += 1
                continue
            answer = _token_span(context_offsets, char_start, char_end)
        spans = _doc_spans(len(context_ids), window_size, doc_stride)
        max_context = _max_context_windows(spans, len(context_ids))
        for window, (start, length) in enumerate(spans):
            row, post = _window(tokenizer, question_ids, context_ids, context_offsets, start, length, answer,
                                max_context == window, max_seq_length)
            inputs.append({**row, "example_index": np.int32(index)})
            windows.append(post)
    if skipped:
        logger.warning("skipped %d training examples whose answer text is not at answer_start", skipped)
    if not inputs:
        raise ValueError("no features: no example, or every training answer is misplaced")
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


def _window(tokenizer, question_ids, context_ids, context_offsets, start, length, answer, is_max_context,
            max_seq_length):
    """One window: (padded input arrays, (offsets, token_is_max_context, context_mask))."""
    first = len(question_ids) + 2  # position of the window's first context token
    ids = [tokenizer.cls_token_id, *question_ids, tokenizer.sep_token_id, *context_ids[start:start + length],
           tokenizer.sep_token_id]
    pad = max_seq_length - len(ids)
    in_context = np.zeros(max_seq_length, bool)
    in_context[first:first + length] = True
    offsets = np.full((max_seq_length, 2), -1, np.int32)
    offsets[first:first + length] = context_offsets[start:start + length]
    max_context = np.zeros(max_seq_length, bool)
    max_context[first:first + length] = is_max_context[start:start + length]
    start_position = end_position = 0
    if answer is not None and start <= answer[0] and answer[1] < start + length:
        start_position, end_position = answer[0] - start + first, answer[1] - start + first
    row = {
        "input_ids": np.array(ids + [tokenizer.pad_token_id] * pad, np.int32),
        "attention_mask": np.array([1] * len(ids) + [0] * pad, np.int32),
        "token_type_ids": np.array([0] * first + [1] * (length + 1) + [0] * pad, np.int32),
        "start_positions": np.int32(start_position), "end_positions": np.int32(end_position),
    }
    return row, (offsets, max_context, in_context)


# --- predictions -----------------------------------------------------------------------------------


def postprocess(examples, features: SquadFeatures, start_logits: np.ndarray, end_logits: np.ndarray, *,
                n_best_size: int = 20, max_answer_length: int = 30, version_2_with_negative: bool
                ) -> tuple[dict[str, str], dict[str, list[dict]], dict[str, float]]:
    """Answers from the model's start/end logits (float [F, T]), as the original write_predictions.

    Per example, over its windows: the `n_best_size` highest start and end logits, kept when both are
    context tokens, the start token is max-context in that window, start <= end and the span has at most
    `max_answer_length` tokens; score = start + end logit; text = the context characters the span covers.
    v2.0: the null score is the lowest [CLS] score (start + end logit at position 0) over the windows; the
    empty answer joins the n-best; the prediction is "" when null score - best non-null score > 0.

    Returns (predictions {qas_id: text}, nbest {qas_id: [{text, probability, start_logit, end_logit}],
    best first, probability a softmax over the n-best scores}, null_odds {qas_id: null score - best
    non-null score}, +inf when no span is valid; empty for v1.1). Examples without features are left out.
    """
    start_logits, end_logits = np.asarray(start_logits, np.float64), np.asarray(end_logits, np.float64)
    if start_logits.shape != features.context_mask.shape or end_logits.shape != features.context_mask.shape:
        raise ValueError(f"start/end logits have shapes {start_logits.shape}/{end_logits.shape}; the features "
                         f"need {features.context_mask.shape}")
    windows_of = {}
    for feature, example_index in enumerate(features.example_index):
        windows_of.setdefault(int(example_index), []).append(feature)
    predictions, nbest, null_odds = {}, {}, {}
    for example_index, windows in windows_of.items():
        example = examples[example_index]
        candidates = [c for w in windows for c in _span_candidates(
            features, w, start_logits[w], end_logits[w], n_best_size, max_answer_length)]
        null_logits = None
        if version_2_with_negative:
            w = min(windows, key=lambda w: start_logits[w, 0] + end_logits[w, 0])  # first one on a tie
            null_logits = (start_logits[w, 0], end_logits[w, 0])
            candidates.append((w, 0, 0, *null_logits))
        entries = _nbest_entries(example.context, features.offsets, candidates, null_logits, n_best_size)
        nbest[example.qas_id] = entries
        best_span = next((e for e in entries if e["text"]), None)
        if not version_2_with_negative:
            predictions[example.qas_id] = entries[0]["text"]
            continue
        best_score = -np.inf if best_span is None else best_span["start_logit"] + best_span["end_logit"]
        null_odds[example.qas_id] = float(sum(null_logits) - best_score)
        predictions[example.qas_id] = "" if null_odds[example.qas_id] > 0 else best_span["text"]
    return predictions, nbest, null_odds


def _span_candidates(features, w, start_logits, end_logits, n_best_size, max_answer_length):
    """(window, start, end, start logit, end logit) of the valid spans among the top starts x top ends."""
    starts = np.argsort(-start_logits, kind="stable")[:n_best_size]
    ends = np.argsort(-end_logits, kind="stable")[:n_best_size]
    s, e = starts[:, None], ends[None, :]
    valid = (features.context_mask[w][s] & features.token_is_max_context[w][s] & features.context_mask[w][e]
             & (e >= s) & (e - s + 1 <= max_answer_length))
    rows, cols = np.nonzero(valid)  # start-major, as the original's nested loops
    return [(w, int(starts[r]), int(ends[c]), start_logits[starts[r]], end_logits[ends[c]])
            for r, c in zip(rows, cols)]


def _nbest_entries(context, offsets, candidates, null_logits, n_best_size):
    """The n-best list: candidates by score, one entry per distinct text, the empty one always (v2.0)."""
    order = np.argsort([-(c[3] + c[4]) for c in candidates], kind="stable")
    entries, seen = [], set()
    for i in order:
        if len(entries) >= n_best_size:
            break
        w, start, end, start_logit, end_logit = candidates[i]
        text = context[offsets[w, start, 0]:offsets[w, end, 1]] if start > 0 else ""  # position 0: null
        if text not in seen:
            seen.add(text)
            entries.append({"text": text, "start_logit": float(start_logit), "end_logit": float(end_logit)})
    if null_logits is not None and "" not in seen:
        entries.append({"text": "", "start_logit": float(null_logits[0]), "end_logit": float(null_logits[1])})
    if not entries:
        entries.append({"text": "", "start_logit": 0.0, "end_logit": 0.0})
    scores = np.array([e["start_logit"] + e["end_logit"] for e in entries])
    probabilities = np.exp(scores - scores.max())
    probabilities /= probabilities.sum()
    return [{"text": e["text"], "probability": float(p), "start_logit": e["start_logit"],
             "end_logit": e["end_logit"]} for e, p in zip(entries, probabilities)]


def write_predictions(out_dir: str, predictions: dict[str, str], nbest: dict[str, list[dict]],
                      null_odds: dict[str, float]) -> None:
    """Writes `postprocess`'s output to `out_dir` in the official formats (utf-8, non-ASCII kept).

    predictions.json {qas_id: text}, nbest_predictions.json {qas_id: [entries]} and, when `null_odds` is
    not empty, null_odds.json {qas_id: float} (the evaluator's `na_probs`).
    """
    os.makedirs(out_dir, exist_ok=True)
    files = {"predictions.json": predictions, "nbest_predictions.json": nbest}
    if null_odds:
        files["null_odds.json"] = null_odds
    for name, content in files.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(content, f, indent=4, ensure_ascii=False)
