"""SQuAD: the official metrics, reading JSON and tfds, windowed features, n-best post-processing."""

import json
import logging
import random
import re

import numpy as np
import pytest

from albert_jax.data.squad import SquadExample, featurize, load_squad, read_squad_json, read_squad_tfds
from albert_jax.evaluation.squad import evaluate, normalize_answer, postprocess, write_predictions
from albert_jax.tokenizer import AlbertTokenizer, train_spm

WORDS = (
    "the a of in and to was were is on at by for with from near river city bridge music festival garden "
    "museum painter night morning people story house small large old new green quiet famous north south "
    "east west market station library school window table letter friend winter summer autumn spring "
    "mountain valley island harbour castle tower church village street road train ship teacher student "
    "doctor writer singer dancer farmer baker soldier king queen prince history science theatre concert "
    "picture colour yellow purple orange silver golden wooden stone ancient modern beautiful strange dark "
    "bright cold warm heavy light open closed built opened painted wrote sang visited travelled "
    "remembered discovered believed walked"
).split()
NAMES = ("Café", "Müller", "Paris", "Zoë", "Señor", "naïve")
ANSWER = "Café  Müller, (Paris)"


def _sentences(count, seed):
    rng = random.Random(seed)
    sentences = []
    for i in range(count):
        sentence = " ".join(rng.choice(WORDS + list(NAMES)) for _ in range(rng.randint(5, 12))).capitalize()
        sentence += f", ({rng.choice(NAMES)})" if i % 3 == 0 else ""
        sentences.append(sentence + rng.choice(".?!"))
    return sentences


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = train_spm(iter(_sentences(400, seed=0)), 150, str(tmp_path_factory.mktemp("spm") / "spm"), num_threads=1)
    return AlbertTokenizer(path)


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


# --- reading -----------------------------------------------------------------------------------------


CONTEXT = "Café  Müller is in Paris."
V2 = {
    "version": "v2.0",
    "data": [
        {
            "title": "T",
            "paragraphs": [
                {
                    "context": CONTEXT,
                    "qas": [
                        {
                            "id": "q1",
                            "question": "Where?",
                            "answers": [{"text": "Paris", "answer_start": CONTEXT.index("Paris")}],
                            "is_impossible": False,
                        },
                        {
                            "id": "q2",
                            "question": "Who?",
                            "answers": [],
                            "is_impossible": True,
                            "plausible_answers": [{"text": "Müller", "answer_start": CONTEXT.index("Müller")}],
                        },
                    ],
                }
            ],
        }
    ],
}
V11 = {
    "version": "1.1",
    "data": [
        {
            "title": "T",
            "paragraphs": [
                {
                    "context": CONTEXT,
                    "qas": [
                        {
                            "id": "q1",
                            "question": "Where?",
                            "answers": [
                                {"text": "Paris", "answer_start": 19},
                                {"text": "in Paris", "answer_start": 16},
                            ],
                        }
                    ],
                }
            ],
        }
    ],
}


def _write(path, content):
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)


def test_read_squad_json_v2_and_v11(tmp_path):
    examples, dataset = read_squad_json(_write(tmp_path / "dev-v2.0.json", V2))
    assert examples == [
        SquadExample("q1", "Where?", CONTEXT, (("Paris", 19),), False),
        SquadExample("q2", "Who?", CONTEXT, (), True),
    ]
    assert dataset == V2["data"]
    examples, dataset = load_squad("v1.1", "dev", dev_file=_write(tmp_path / "dev-v1.1.json", V11))
    assert examples == [SquadExample("q1", "Where?", CONTEXT, (("Paris", 19), ("in Paris", 16)), False)]
    assert evaluate(dataset, {"q1": "Paris"})["exact"] == 100


def test_read_squad_json_errors_name_the_file_and_place(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        read_squad_json(str(tmp_path / "nowhere.json"))
    bad = _write(tmp_path / "bad.json", '{"data": [')
    with pytest.raises(ValueError, match=re.escape(f"{bad}: not valid JSON")):
        read_squad_json(bad)
    qa = {"id": "x", "question": "?", "answers": []}
    good = {"title": "T", "paragraphs": [{"context": "c", "qas": [qa]}]}
    bad = {
        "title": "T",
        "paragraphs": [{"context": "c", "qas": [qa]}, {"context": "c", "qas": [{"question": "?", "answers": []}]}],
    }
    path = _write(tmp_path / "dev-v2.0.json", {"data": [good, bad]})
    with pytest.raises(ValueError, match=r"dev-v2\.0\.json: data\[1\]\.paragraphs\[1\]\.qas\[0\]: no 'id'"):
        read_squad_json(path)
    article = {
        "title": "T",
        "paragraphs": [{"context": "c", "qas": [{**qa, "answers": [{"text": "c", "answer_start": "0"}]}]}],
    }
    with pytest.raises(ValueError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answers\[0\]: 'answer_start'"):
        read_squad_json(_write(tmp_path / "x.json", {"data": [article]}))
    with pytest.raises(ValueError, match="split must be"):
        load_squad("v2.0", "validation")


def test_read_squad_tfds_rebuilds_the_official_format():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        examples, dataset = read_squad_tfds("v2.0", "validation")
        v11, _ = load_squad("v1.1", "train")
    assert len(examples) == len(v11) == 6 and not any(e.is_impossible for e in v11)
    by_id = {e.qas_id: e for e in examples}
    qas = [
        (paragraph["context"], qa)
        for article in dataset
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]
    assert sorted(qa["id"] for _, qa in qas) == sorted(by_id)
    for context, qa in qas:
        example = by_id[qa["id"]]
        assert (context, qa["question"], qa["is_impossible"]) == (
            example.context,
            example.question,
            example.is_impossible,
        )
        assert [(a["text"], a["answer_start"]) for a in qa["answers"]] == list(example.answers)
    assert len({article["title"] for article in dataset}) == len(dataset)
    assert evaluate(dataset, {e.qas_id: "" for e in examples})["total"] == 6
    with pytest.raises(ValueError, match="version must be"):
        read_squad_tfds("2", "train")


# --- features and post-processing --------------------------------------------------------------------


def _context_ids(tokenizer, text):
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return encoded["input_ids"][0], encoded["offset_mapping"][0]


def _long_example(tokenizer):
    """A context of many sentences with ANSWER in the middle; returns it and its answer's token span."""
    before, after = " ".join(_sentences(6, seed=1)), " ".join(_sentences(6, seed=2))
    context = f"{before} Near the  {ANSWER} was a  café.  {after}"
    start = context.index(ANSWER)
    example = SquadExample("q", "Where was the old painter ?", context, ((ANSWER, start),), False)
    _, offsets = _context_ids(tokenizer, context)
    first = int(np.flatnonzero(offsets[:, 0] == start)[0])
    last = int(np.flatnonzero(offsets[:, 1] == start + len(ANSWER))[0])  # the answer ends on token bounds
    return example, first, last


def test_featurize_windows_positions_and_layout(tokenizer):
    example, first, last = _long_example(tokenizer)
    impossible = SquadExample("n", example.question, example.context, (), True)
    ids, offsets = _context_ids(tokenizer, example.context)
    question = _context_ids(tokenizer, example.question)[0]
    max_seq_length, stride = 40, 8
    window = max_seq_length - len(question) - 3
    arrays, features = featurize(
        [example, impossible], tokenizer, max_seq_length=max_seq_length, doc_stride=stride, is_training=True
    )
    n = int(np.ceil((len(ids) - window) / stride)) + 1  # windows until one reaches the last token
    assert list(arrays["example_index"]) == [0] * n + [1] * n and n > 3
    for k in range(n):
        length = min(window, len(ids) - k * stride)
        c = len(question) + 2
        expected = [
            tokenizer.cls_token_id,
            *question,
            tokenizer.sep_token_id,
            *ids[k * stride : k * stride + length],
            tokenizer.sep_token_id,
        ]
        np.testing.assert_array_equal(arrays["input_ids"][k][: len(expected)], expected)
        assert (arrays["input_ids"][k][len(expected) :] == tokenizer.pad_token_id).all()
        pad = max_seq_length - len(expected)
        assert list(arrays["attention_mask"][k]) == [1] * len(expected) + [0] * pad
        assert list(arrays["token_type_ids"][k]) == [0] * c + [1] * (length + 1) + [0] * pad
        np.testing.assert_array_equal(features.offsets[k][c : c + length], offsets[k * stride : k * stride + length])
        assert (features.offsets[k][:c] == -1).all() and (features.offsets[k][c + length :] == -1).all()
        assert list(np.flatnonzero(features.context_mask[k])) == list(range(c, c + length))
        s, e = arrays["start_positions"][k], arrays["end_positions"][k]
        if k * stride <= first and last < k * stride + length:
            assert example.context[features.offsets[k, s, 0] : features.offsets[k, e, 1]] == ANSWER
        else:
            assert s == e == 0
    assert 0 < arrays["start_positions"].sum() and (arrays["start_positions"][n:] == 0).all()
    assert (arrays["end_positions"][n:] == 0).all()
    assert k * stride + length == len(ids)
    assert all(arrays[key].dtype == np.int32 for key in arrays)


@pytest.mark.parametrize(
    "answer, expected", [("Paris", "Paris"), ("Müller", "Müller"), ("ülle", "Müller"), (ANSWER, ANSWER)]
)
def test_featurize_maps_an_answer_to_the_tokens_overlapping_it(tokenizer, answer, expected):
    context = f"Near the  {ANSWER} was a café."
    example = SquadExample("q", "Where ?", context, ((answer, context.index(answer)),), False)
    arrays, features = featurize([example], tokenizer, max_seq_length=64, is_training=True)
    s, e = arrays["start_positions"][0], arrays["end_positions"][0]
    assert context[features.offsets[0, s, 0] : features.offsets[0, e, 1]] == expected


def test_featurize_token_is_max_context_matches_the_original_rule(tokenizer):
    example, _, _ = _long_example(tokenizer)
    n_ids = len(_context_ids(tokenizer, example.context)[0])
    _, features = featurize([example], tokenizer, max_seq_length=48, doc_stride=10, is_training=False)
    spans = [np.flatnonzero(features.context_mask[k]) for k in range(len(features.example_index))]
    starts = [10 * k for k in range(len(spans))]
    for position in range(n_ids):
        best, best_k = None, None
        for k, columns in enumerate(spans):
            end = starts[k] + len(columns) - 1
            if starts[k] <= position <= end:
                score = min(position - starts[k], end - position) + 0.01 * len(columns)
                if best is None or score > best:
                    best, best_k = score, k
        for k, columns in enumerate(spans):
            if starts[k] <= position < starts[k] + len(columns):
                assert features.token_is_max_context[k, columns[position - starts[k]]] == (k == best_k)
    assert not features.token_is_max_context[~features.context_mask].any()


def test_featurize_truncates_the_question(tokenizer):
    long_question = " ".join(WORDS[:30])
    question = _context_ids(tokenizer, long_question)[0]
    example = SquadExample("q", long_question, "The old bridge.", (("old", 4),), False)
    arrays, _ = featurize([example], tokenizer, max_seq_length=32, max_query_length=5, is_training=True)
    assert len(question) > 5
    np.testing.assert_array_equal(
        arrays["input_ids"][0, :7], [tokenizer.cls_token_id, *question[:5], tokenizer.sep_token_id]
    )
    assert arrays["token_type_ids"][0, 6] == 0 and arrays["token_type_ids"][0, 7] == 1
    with pytest.raises(ValueError, match="leaves no room"):
        featurize([example], tokenizer, max_seq_length=8, max_query_length=5, is_training=True)


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
