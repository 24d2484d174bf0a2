"""SQuAD's predictions and official metrics: n-best post-processing of the model's start/end logits back to
the context text, the official prediction files, and exact match and token F1 as the official
`evaluate-v2.0.py` computes them.

The same numbers as the official script, key for key, including its best-threshold search over the
no-answer probabilities. For v1.1 data (every question answerable) exact and f1 are those of
`evaluate-v1.1.py` too, when every question has a prediction.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import string

import numpy as np

from albert_jax.data.squad import SquadExample, SquadFeatures

logger = logging.getLogger(__name__)

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """The official normalisation: lowercase, drop ASCII punctuation, drop articles, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _exact(gold: str, prediction: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(prediction))


def _f1(gold: str, prediction: str) -> float:
    """F1 of the normalised tokens in common; two empty answers agree (1), one empty one does not (0)."""
    gold_tokens, predicted_tokens = normalize_answer(gold).split(), normalize_answer(prediction).split()
    if not gold_tokens or not predicted_tokens:
        return float(gold_tokens == predicted_tokens)
    common = sum((collections.Counter(gold_tokens) & collections.Counter(predicted_tokens)).values())
    if not common:
        return 0.0
    precision, recall = common / len(predicted_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def evaluate(
    dataset_json: list[dict],
    predictions: dict[str, str],
    na_probs: dict[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """Scores `predictions` {question id: answer text} against an official-format "data" list.

    A question's gold answers are its answers whose normalised text is not empty, or [""] when none is
    (unanswerable: only a prediction that normalises to "" is right); its score is the max over them. A question counts
    as answerable (HasAns) when its "answers" list is not empty. A question whose `na_probs` value is above
    `na_prob_thresh` is taken as predicted unanswerable. `na_probs` None means 0 for every question.

    Missing predictions: like the official get_raw_scores, a question without a prediction is skipped
    (with a warning), so every number, totals and splits included, is over the predicted questions. (The
    official v2.0 script then fails with a KeyError in its HasAns/NoAns splits; v1.1 scores it 0.)

    Returns, as percentages (0-100) and counts, the official keys: exact, f1, total; HasAns_exact,
    HasAns_f1, HasAns_total and NoAns_* when such questions are present; best_exact, best_exact_thresh,
    best_f1, best_f1_thresh, the best scores over no-answer thresholds. Like the official search, that one
    walks the questions by increasing na_prob and may stop inside a run of equal values (as all of them
    are with na_probs None), a score no single threshold gives. With na_probs None on v1.1 data,
    best_exact/best_f1 equal exact/f1.

    Raises:
      ValueError: no question has a prediction, or `na_probs` lacks a predicted question.
    """
    gold, has_answer = {}, {}
    for article in dataset_json:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                texts = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])]
                gold[qa["id"]], has_answer[qa["id"]] = texts or [""], bool(qa["answers"])
    scored = [qid for qid in gold if qid in predictions]
    if not scored:
        raise ValueError(f"none of the {len(gold)} questions has a prediction")
    if len(scored) < len(gold):
        logger.warning(
            "%d of %d questions have no prediction; scoring the %d others",
            len(gold) - len(scored),
            len(gold),
            len(scored),
        )
    if na_probs is None:
        na_probs = dict.fromkeys(predictions, 0.0)
    absent = [qid for qid in scored if qid not in na_probs]
    if absent:
        raise ValueError(f"na_probs has no value for {len(absent)} predicted questions, e.g. {absent[:3]}")

    raw = {
        name: {qid: max(metric(g, predictions[qid]) for g in gold[qid]) for qid in scored}
        for name, metric in (("exact", _exact), ("f1", _f1))
    }
    # Above the threshold the question is predicted unanswerable: right exactly when it is.
    final = {
        name: {qid: float(not has_answer[qid]) if na_probs[qid] > na_prob_thresh else s for qid, s in scores.items()}
        for name, scores in raw.items()
    }
    result = _summary(final, scored)
    for prefix, answerable in (("HasAns", True), ("NoAns", False)):
        subset = [qid for qid in scored if has_answer[qid] == answerable]
        if subset:
            result.update({f"{prefix}_{key}": value for key, value in _summary(final, subset).items()})
    for name, scores in raw.items():
        result[f"best_{name}"], result[f"best_{name}_thresh"] = _best_threshold(
            scores, predictions, na_probs, has_answer
        )
    return result


def _summary(scores: dict[str, dict[str, float]], qids: list[str]) -> dict[str, float]:
    """exact and f1 (percent) over `qids`, and their number."""
    return {
        "exact": 100.0 * sum(scores["exact"][q] for q in qids) / len(qids),
        "f1": 100.0 * sum(scores["f1"][q] for q in qids) / len(qids),
        "total": len(qids),
    }


def _best_threshold(scores, predictions, na_probs, has_answer):
    """(best percent score, its threshold) when questions with na_prob above the threshold answer "".

    Starts from every question answered "" (right for the unanswerable ones), then lowers the threshold
    question by question in increasing na_prob: an answerable one gains its score, an unanswerable one
    loses its point when its prediction is not the empty string.
    """
    current = best = sum(not has_answer[qid] for qid in scores)
    best_thresh = 0.0
    for qid in sorted(na_probs, key=na_probs.get):
        if qid not in scores:
            continue
        current += scores[qid] if has_answer[qid] else -1 if predictions[qid] else 0
        if current > best:
            best, best_thresh = current, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


# --- predictions -----------------------------------------------------------------------------------
def score(
    dataset_json: list[dict],
    examples: list[SquadExample],
    features: SquadFeatures,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    out_dir: str | None,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2_with_negative: bool,
) -> dict[str, float]:
    """The official metrics (`evaluate`) of the model's logits on `examples`: `postprocess`, then the
    prediction files written into `out_dir` (when not None), then the questions of `examples` scored against
    their gold answers in `dataset_json` (questions it holds beyond `examples` are left out)."""
    predictions, nbest, null_odds = postprocess(
        examples,
        features,
        start_logits,
        end_logits,
        n_best_size=n_best_size,
        max_answer_length=max_answer_length,
        version_2_with_negative=version_2_with_negative,
    )
    if out_dir is not None:
        write_predictions(out_dir, predictions, nbest, null_odds)
    kept = {e.qas_id for e in examples}
    dataset = [
        {
            **article,
            "paragraphs": [{**p, "qas": [q for q in p["qas"] if q["id"] in kept]} for p in article["paragraphs"]],
        }
        for article in dataset_json
    ]
    return evaluate(dataset, predictions, null_odds if version_2_with_negative else None)


def postprocess(
    examples,
    features: SquadFeatures,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2_with_negative: bool,
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
        raise ValueError(
            f"start/end logits have shapes {start_logits.shape}/{end_logits.shape}; the features "
            f"need {features.context_mask.shape}"
        )
    windows_of = {}
    for feature, example_index in enumerate(features.example_index):
        windows_of.setdefault(int(example_index), []).append(feature)
    predictions, nbest, null_odds = {}, {}, {}
    for example_index, windows in windows_of.items():
        example = examples[example_index]
        candidates = [
            c
            for w in windows
            for c in _span_candidates(features, w, start_logits[w], end_logits[w], n_best_size, max_answer_length)
        ]
        null_logits = None
        if version_2_with_negative:
            w = min(windows, key=lambda w: start_logits[w, 0] + end_logits[w, 0])  # first one on a tie
            null_logits = (start_logits[w, 0], end_logits[w, 0])
            candidates.append((w, 0, 0, *null_logits))
        entries = _nbest_entries(example.context, features.offsets, candidates, null_logits, n_best_size)
        nbest[example.qas_id] = entries
        best_span = next((e for e in entries if e["text"]), None)
        if null_logits is None:  # not version_2_with_negative
            predictions[example.qas_id] = entries[0]["text"]
            continue
        best_score = -np.inf if best_span is None else best_span["start_logit"] + best_span["end_logit"]
        null_odds[example.qas_id] = float(sum(null_logits) - best_score)
        predictions[example.qas_id] = "" if best_span is None or null_odds[example.qas_id] > 0 else best_span["text"]
    return predictions, nbest, null_odds


def _span_candidates(features, w, start_logits, end_logits, n_best_size, max_answer_length):
    """(window, start, end, start logit, end logit) of the valid spans among the top starts x top ends."""
    starts = np.argsort(-start_logits, kind="stable")[:n_best_size]
    ends = np.argsort(-end_logits, kind="stable")[:n_best_size]
    s, e = starts[:, None], ends[None, :]
    valid = (
        features.context_mask[w][s]
        & features.token_is_max_context[w][s]
        & features.context_mask[w][e]
        & (e >= s)
        & (e - s + 1 <= max_answer_length)
    )
    rows, cols = np.nonzero(valid)  # start-major, as the original's nested loops
    return [(w, int(starts[r]), int(ends[c]), start_logits[starts[r]], end_logits[ends[c]]) for r, c in zip(rows, cols)]


def _nbest_entries(context, offsets, candidates, null_logits, n_best_size):
    """The n-best list: candidates by score, one entry per distinct text, the empty one always (v2.0)."""
    order = np.argsort([-(c[3] + c[4]) for c in candidates], kind="stable")
    entries, seen = [], set()
    for i in order:
        if len(entries) >= n_best_size:
            break
        w, start, end, start_logit, end_logit = candidates[i]
        text = context[offsets[w, start, 0] : offsets[w, end, 1]] if start > 0 else ""  # position 0: null
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
    return [
        {"text": e["text"], "probability": float(p), "start_logit": e["start_logit"], "end_logit": e["end_logit"]}
        for e, p in zip(entries, probabilities)
    ]


def write_predictions(
    out_dir: str, predictions: dict[str, str], nbest: dict[str, list[dict]], null_odds: dict[str, float]
) -> None:
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
