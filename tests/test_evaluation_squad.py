"""albert_jax.evaluation.squad: the official metrics, n-best post-processing of windowed features, the
prediction files (the `tokenizer` fixture is conftest's, trained on helpers.squad_sentences)."""

import json
import logging

import numpy as np
import pytest

from albert_jax.data.squad import SquadExample, featurize
from albert_jax.evaluation.squad import evaluate, normalize_answer, postprocess, write_predictions
from helpers import SQUAD_ANSWER as ANSWER
from helpers import context_ids as _context_ids
from helpers import long_squad_example as _long_example


def _dataset(*qas, context="Some context."):
    """An official-format "data" list holding one paragraph with `qas` = (id, [gold texts])."""
    return [
        {
            "title": "t",
            "paragraphs": [
                {
                    "context": context,
                    "qas": [
                        {"id": qid, "question": "?", "answers": [{"text": t, "answer_start": 0} for t in golds]}
                        for qid, golds in qas
                    ],
                }
            ],
        }
    ]


# --- the evaluator -----------------------------------------------------------------------------------


def test_normalize_answer_lowercases_drops_punctuation_articles_and_extra_space():
    assert normalize_answer("The  Cat, a DOG!") == "cat dog"
    assert normalize_answer("An apple.\t(Red) ") == "apple red"
    assert normalize_answer("theatre another") == "theatre another"  # articles only as whole words
    assert normalize_answer("the") == ""


def test_evaluate_takes_max_over_golds_and_scores_unanswerable_questions():
    dataset = _dataset(
        ("q1", ["the Eiffel Tower", "Eiffel Tower in Paris"]),
        ("q2", ["big red barn"]),
        ("q3", ["Paris", "city of Paris"]),
        ("q4", []),
        ("q5", []),
    )
    predictions = {"q1": "eiffel  tower!", "q2": "red barn door", "q3": "the city", "q4": "", "q5": "something"}
    # q2: 2 common of 3 predicted, 3 gold tokens; q3: "city" against "city of paris" (P 1, R 1/3).
    f1_q2, f1_q3 = 2 * (2 / 3) * (2 / 3) / (2 / 3 + 2 / 3), 2 * 1 * (1 / 3) / (1 + 1 / 3)
    result = evaluate(dataset, predictions)
    assert result["exact"] == pytest.approx(100 * 2 / 5)
    assert result["f1"] == pytest.approx(100 * (1 + f1_q2 + f1_q3 + 1 + 0) / 5)
    assert result["total"] == 5
    assert result["HasAns_exact"] == pytest.approx(100 * 1 / 3)
    assert result["HasAns_f1"] == pytest.approx(100 * (1 + f1_q2 + f1_q3) / 3)
    assert (result["HasAns_total"], result["NoAns_total"]) == (3, 2)
    assert result["NoAns_exact"] == result["NoAns_f1"] == pytest.approx(100 * 1 / 2)
    assert list(result) == [
        "exact",
        "f1",
        "total",
        "HasAns_exact",
        "HasAns_f1",
        "HasAns_total",
        "NoAns_exact",
        "NoAns_f1",
        "NoAns_total",
        "best_exact",
        "best_exact_thresh",
        "best_f1",
        "best_f1_thresh",
    ]


@pytest.mark.parametrize(
    "gold, prediction, expected",
    [
        ("red red barn", "red red", 2 * 1 * (2 / 3) / (1 + 2 / 3)),  # tokens count as a multiset
        ("big red barn", "barn", 2 * 1 * (1 / 3) / (1 + 1 / 3)),
        ("big red barn", "a small house", 0.0),
        ("the big barn", "Big, barn.", 1.0),
    ],
)
def test_f1_is_token_overlap(gold, prediction, expected):
    assert evaluate(_dataset(("q", [gold])), {"q": prediction})["f1"] == pytest.approx(100 * expected)


def test_answer_that_normalises_to_nothing_is_answerable_with_empty_gold():
    # The official rule: HasAns goes by the answers list, the gold texts by their normalised form.
    result = evaluate(_dataset(("q", ["The"])), {"q": ""})
    assert (result["exact"], result["HasAns_total"]) == (100, 1) and "NoAns_total" not in result


def test_best_threshold_search():
    dataset = _dataset(
        ("h1", ["paris"]), ("h2", ["rome"]), ("n1", []), ("h4", ["oslo"]), ("h3", ["big red barn"]), ("n2", [])
    )
    predictions = {"h1": "paris", "h2": "rome", "n1": "wrong", "h4": "oslo", "h3": "barn", "n2": "x"}
    na_probs = {"h1": 0.1, "h2": 0.2, "n1": 0.6, "h4": 0.65, "h3": 0.7, "n2": 0.9}
    f1_h3 = 2 * 1 * (1 / 3) / (1 + 1 / 3)
    result = evaluate(dataset, predictions, na_probs)
    # Threshold 1.0 answers everything: both unanswerable questions wrong.
    assert result["exact"] == pytest.approx(100 * 3 / 6)
    assert result["f1"] == pytest.approx(100 * (3 + f1_h3) / 6)
    # Exact: answering only h1, h2 (threshold 0.2) gets n1, n2 right too; h4 would only win n1's point back.
    assert (result["best_exact"], result["best_exact_thresh"]) == (pytest.approx(100 * 4 / 6), 0.2)
    # F1: answering up to h3 (threshold 0.7) adds h4 and h3's partial credit for n1's point.
    assert (result["best_f1"], result["best_f1_thresh"]) == (pytest.approx(100 * (4 + f1_h3) / 6), 0.7)
    # Any threshold in [0.2, 0.6) gives the best exact, and the one found reproduces it.
    assert evaluate(dataset, predictions, na_probs, na_prob_thresh=0.4)["exact"] == pytest.approx(100 * 4 / 6)
    assert evaluate(dataset, predictions, na_probs, na_prob_thresh=0.7)["f1"] == pytest.approx(result["best_f1"])
    with pytest.raises(ValueError, match="na_probs has no value"):
        evaluate(dataset, predictions, {"h1": 0.0})


def test_v11_style_data_and_missing_predictions(caplog):
    dataset = _dataset(("a", ["Denver Broncos"]), ("b", ["Santa Clara, California", "Levi's Stadium"]), ("c", ["gold"]))
    predictions = {"a": "Broncos", "b": "levis stadium", "c": "gold"}
    f1_a = 2 * 1 * (1 / 2) / (1 + 1 / 2)
    result = evaluate(dataset, predictions)
    assert not any(key.startswith("NoAns") for key in result)
    assert result["exact"] == pytest.approx(100 * 2 / 3)  # "levi's" loses its apostrophe: exact
    assert result["f1"] == pytest.approx(100 * (f1_a + 1 + 1) / 3)
    assert (result["best_exact"], result["best_f1"]) == (result["exact"], result["f1"])
    with caplog.at_level(logging.WARNING):
        partial = evaluate(dataset, {"a": "Broncos", "c": "gold"})
    assert "1 of 3 questions have no prediction" in caplog.text
    assert (partial["total"], partial["exact"]) == (2, pytest.approx(100 * 1 / 2))


# --- post-processing ---------------------------------------------------------------------------------


def test_postprocess_recovers_an_answer_across_a_window_boundary_exactly(tokenizer):
    example, first, last = _long_example(tokenizer)
    stride, question = 4, _context_ids(tokenizer, example.question)[0]
    window = first + 2  # window 0 ends inside the answer
    arrays, features = featurize(
        [example], tokenizer, max_seq_length=window + len(question) + 3, doc_stride=stride, is_training=False
    )
    c, n_ids = len(question) + 2, len(_context_ids(tokenizer, example.context)[0])
    lengths = [min(window, n_ids - k * stride) for k in range(len(arrays["input_ids"]))]
    holding = [k for k, length in enumerate(lengths) if k * stride <= first and last < k * stride + length]
    assert arrays["start_positions"][0] == 0 and len(holding) >= 2
    # The original rule, independently: the window where the start token has the most context.
    best_k = max(
        holding, key=lambda k: (min(first - k * stride, k * stride + lengths[k] - 1 - first) + 0.01 * lengths[k], -k)
    )
    rng = np.random.default_rng(0)
    start_logits = rng.normal(0, 0.1, arrays["input_ids"].shape)
    end_logits = rng.normal(0, 0.1, arrays["input_ids"].shape)
    start_logits[0] = -30.0  # so that only the decoy below can start a span in window 0
    for k in holding:  # the same span, scored higher where it is not max-context
        start_logits[k, first - k * stride + c] = 5.0 if k == best_k else 9.0
        end_logits[k, last - k * stride + c] = 5.0 if k == best_k else 9.0
    start_logits[0, first + c], end_logits[0, c + window - 1] = 20.0, 20.0  # a cut answer, not max-context
    predictions, nbest, null_odds = postprocess(
        [example], features, start_logits, end_logits, version_2_with_negative=False
    )
    assert predictions == {"q": ANSWER} and null_odds == {}
    assert predictions["q"] == example.context[example.answers[0][1] :][: len(ANSWER)]
    assert (nbest["q"][0]["start_logit"], nbest["q"][0]["end_logit"]) == (5.0, 5.0)
    probabilities = [e["probability"] for e in nbest["q"]]
    assert sum(probabilities) == pytest.approx(1) and probabilities == sorted(probabilities, reverse=True)
    assert len({e["text"] for e in nbest["q"]}) == len(nbest["q"]) <= 20
    assert (
        evaluate(
            [
                {
                    "paragraphs": [
                        {
                            "context": example.context,
                            "qas": [{"id": "q", "answers": [{"text": ANSWER, "answer_start": 0}]}],
                        }
                    ]
                }
            ],
            predictions,
        )["exact"]
        == 100
    )
    short, _, _ = postprocess(
        [example], features, start_logits, end_logits, max_answer_length=last - first, version_2_with_negative=False
    )
    assert short["q"] != ANSWER

    # v2.0: the null score is the lowest [CLS] score over the windows; it wins when above the best span.
    start_logits[:, 0], end_logits[:, 0] = 8.0, 8.0
    start_logits[1, 0], end_logits[1, 0] = 7.0, 7.0
    predictions, nbest, null_odds = postprocess(
        [example], features, start_logits, end_logits, version_2_with_negative=True
    )
    assert predictions == {"q": ""} and null_odds["q"] == pytest.approx(14.0 - 10.0)
    assert {"text": "", "start_logit": 7.0, "end_logit": 7.0}.items() <= nbest["q"][0].items()
    start_logits[:, 0], end_logits[:, 0] = 2.0, 2.0
    predictions, nbest, null_odds = postprocess(
        [example], features, start_logits, end_logits, version_2_with_negative=True
    )
    assert predictions == {"q": ANSWER} and null_odds["q"] == pytest.approx(4.0 - 10.0)
    assert "" in [e["text"] for e in nbest["q"]]


def test_postprocess_without_valid_span_and_write_predictions(tokenizer, tmp_path):
    example = SquadExample("é1", "Who ?", "", (), True)
    arrays, features = featurize([example], tokenizer, max_seq_length=16, is_training=False)
    logits = np.zeros(arrays["input_ids"].shape)
    assert postprocess([example], features, logits, logits, version_2_with_negative=False)[0] == {"é1": ""}
    predictions, nbest, null_odds = postprocess([example], features, logits, logits, version_2_with_negative=True)
    assert predictions == {"é1": ""} and null_odds == {"é1": float("inf")}
    with pytest.raises(ValueError, match="logits have shapes"):
        postprocess([example], features, logits[:, :3], logits, version_2_with_negative=True)

    write_predictions(tmp_path / "v1", {"é1": "Café"}, nbest, {})
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == ["nbest_predictions.json", "predictions.json"]
    assert "Café" in (tmp_path / "v1" / "predictions.json").read_text(encoding="utf-8")
    write_predictions(tmp_path / "v2", predictions, nbest, null_odds)
    read = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in (tmp_path / "v2").iterdir()}
    assert read == {"predictions": predictions, "nbest_predictions": nbest, "null_odds": null_odds}
