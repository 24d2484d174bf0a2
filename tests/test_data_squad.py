"""albert_jax.data.squad: reading the official JSON and tfds, windowed features (the `tokenizer` fixture is
conftest's, trained on helpers.squad_sentences)."""

import json
import logging
import re

import numpy as np
import pytest

from albert_jax.data.squad import SquadExample, featurize, load_squad, read_squad_json, read_squad_tfds
from albert_jax.evaluation.squad import evaluate
from helpers import SQUAD_ANSWER as ANSWER
from helpers import SQUAD_WORDS as WORDS
from helpers import context_ids as _context_ids
from helpers import long_squad_example as _long_example

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


# --- features ----------------------------------------------------------------------------------------


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


def test_misplaced_answers_are_counted_and_all_misplaced_is_an_error(tokenizer, caplog):
    good = SquadExample("a", "which bridge ?", "The old bridge.", (("old", 4),), False)
    misplaced = SquadExample("b", "which bridge ?", "The old bridge.", (("old", 0),), False)
    impossible = SquadExample("c", "which bridge ?", "The old bridge.", (), True)
    with caplog.at_level(logging.WARNING, logger="albert_jax.data.squad"):
        arrays, _ = featurize(
            [good, misplaced, impossible], tokenizer, max_seq_length=32, is_training=True, source="t.json"
        )
    assert list(arrays["example_index"]) == [0, 2]
    assert (
        "t.json: skipped 1 of 2 answerable training questions whose answer text is not at answer_start" in caplog.text
    )
    with pytest.raises(ValueError, match="t.json: the answer text of every one of the 1 answerable training questions"):
        featurize([misplaced, impossible], tokenizer, max_seq_length=32, is_training=True, source="t.json")
    arrays, _ = featurize([misplaced], tokenizer, max_seq_length=32, is_training=False)  # dev: kept
    assert list(arrays["example_index"]) == [0]
