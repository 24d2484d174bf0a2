"""SQuAD's official metrics: exact match and token F1, as the official `evaluate-v2.0.py` computes them.

The same numbers as the official script, key for key, including its best-threshold search over the
no-answer probabilities. For v1.1 data (every question answerable) exact and f1 are those of
`evaluate-v1.1.py` too, when every question has a prediction.
"""

from __future__ import annotations

import collections
import logging
import re
import string

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


def evaluate(dataset_json: list[dict], predictions: dict[str, str], na_probs: dict[str, float] | None = None,
             na_prob_thresh: float = 1.0) -> dict[str, float]:
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
        logger.warning("%d of %d questions have no prediction; scoring the %d others",
                       len(gold) - len(scored), len(gold), len(scored))
    if na_probs is None:
        na_probs = dict.fromkeys(predictions, 0.0)
    absent = [qid for qid in scored if qid not in na_probs]
    if absent:
        raise ValueError(f"na_probs has no value for {len(absent)} predicted questions, e.g. {absent[:3]}")

    raw = {name: {qid: max(metric(g, predictions[qid]) for g in gold[qid]) for qid in scored}
           for name, metric in (("exact", _exact), ("f1", _f1))}
    # Above the threshold the question is predicted unanswerable: right exactly when it is.
    final = {name: {qid: float(not has_answer[qid]) if na_probs[qid] > na_prob_thresh else s
                    for qid, s in scores.items()} for name, scores in raw.items()}
    result = _summary(final, scored)
    for prefix, answerable in (("HasAns", True), ("NoAns", False)):
        subset = [qid for qid in scored if has_answer[qid] == answerable]
        if subset:
            result.update({f"{prefix}_{key}": value for key, value in _summary(final, subset).items()})
    for name, scores in raw.items():
        result[f"best_{name}"], result[f"best_{name}_thresh"] = _best_threshold(
            scores, predictions, na_probs, has_answer)
    return result


def _summary(scores: dict[str, dict[str, float]], qids: list[str]) -> dict[str, float]:
    """exact and f1 (percent) over `qids`, and their number."""
    return {"exact": 100.0 * sum(scores["exact"][q] for q in qids) / len(qids),
            "f1": 100.0 * sum(scores["f1"][q] for q in qids) / len(qids), "total": len(qids)}


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
