"""albert_jax.data.race: the official-download and tfds readers, the multiple-choice inputs of race_utils.py.

The fixture is a RACE folder in the official layout; the tfds reader is checked on that same folder, read
by tfds' own `race` builder (its `_generate_examples`) and sent through the builder's feature encoding.
Expected inputs are spelled out from the original's rules, not computed by the code under test.
"""

import json
import os
import re

import numpy as np
import pytest

from albert_jax.data.corpus import builtin_corpus
from albert_jax.data.race import RaceExample, featurize, load_race, read_race_dir, read_race_tfds
from albert_jax.tokenizer import AlbertTokenizer, train_spm

FILES = {  # (split, level, file name) -> the file's JSON, as in RACE.tar.gz
    ("dev", "middle", "2.txt"): {
        "answers": ["B", "D"],
        "options": [
            ["in the park", "on the mat", "at school", "under the tree"],
            ["a dog", "a bird", "a fish", "a cat"],
        ],
        "questions": ["Where did the cat sit?", "The story is mainly about _ ."],
        "article": "The cat sat on the mat. It was a sunny day and the cat was happy.",
        "id": "middle2.txt",
    },
    ("dev", "middle", "10.txt"): {
        "answers": ["A"],
        "options": [["happy", "sad", "angry", "tired"]],
        "questions": ["How did Tom feel?"],
        "article": "Tom went to school early. He met his friends and played football.",
        "id": "middle10.txt",
    },
    ("dev", "high", "7.txt"): {
        "answers": ["C", "A", "B"],
        "options": [
            ["one", "two", "three", "four"],
            ["yes", "no", "maybe", "never"],
            ["the sea", "the river", "the lake", "the sky"],
        ],
        "questions": ["How many boats were there?", "Did the boats come back?", "The boats sailed on _ and _ ."],
        "article": "Three boats sailed on the river at dawn. They came back at night.",
        "id": "high7.txt",
    },
    ("train", "middle", "1.txt"): {
        "answers": ["D"],
        "options": [["a", "b", "c", "d"]],
        "questions": ["Pick one."],
        "article": "A short text.",
        "id": "middle1.txt",
    },
}
DEV = [  # read_race_dir(dev): levels middle then high, files sorted by name ("10.txt" < "2.txt")
    RaceExample(
        "middle/10.txt-0",
        FILES["dev", "middle", "10.txt"]["article"],
        "How did Tom feel?",
        ("happy", "sad", "angry", "tired"),
        0,
        "middle",
    ),
    RaceExample(
        "middle/2.txt-0",
        FILES["dev", "middle", "2.txt"]["article"],
        "Where did the cat sit?",
        ("in the park", "on the mat", "at school", "under the tree"),
        1,
        "middle",
    ),
    RaceExample(
        "middle/2.txt-1",
        FILES["dev", "middle", "2.txt"]["article"],
        "The story is mainly about _ .",
        ("a dog", "a bird", "a fish", "a cat"),
        3,
        "middle",
    ),
    RaceExample(
        "high/7.txt-0",
        FILES["dev", "high", "7.txt"]["article"],
        "How many boats were there?",
        ("one", "two", "three", "four"),
        2,
        "high",
    ),
    RaceExample(
        "high/7.txt-1",
        FILES["dev", "high", "7.txt"]["article"],
        "Did the boats come back?",
        ("yes", "no", "maybe", "never"),
        0,
        "high",
    ),
    RaceExample(
        "high/7.txt-2",
        FILES["dev", "high", "7.txt"]["article"],
        "The boats sailed on _ and _ .",
        ("the sea", "the river", "the lake", "the sky"),
        1,
        "high",
    ),
]


def write_race(root, files=FILES):
    for (split, level, name), record in files.items():
        folder = os.path.join(root, split, level)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "w") as f:
            f.write(record if isinstance(record, str) else json.dumps(record))
    return str(root)


@pytest.fixture(scope="module")
def race_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("RACE")
    write_race(root)
    for split in ("train", "test"):  # every split holds both levels, as the download does
        for level in ("middle", "high"):
            os.makedirs(root / split / level, exist_ok=True)
    return str(root)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    # the fixture's texts plus a few hundred sentences of the built-in corpus
    texts = [r["article"] + " " + " ".join(r["questions"]) for r in FILES.values()]
    sentences = texts + [s for doc in builtin_corpus()[:60] for s in doc][:400]
    return AlbertTokenizer(train_spm(iter(sentences), 200, str(tmp_path_factory.mktemp("spm") / "sp"), num_threads=1))


# --- readers --------------------------------------------------------------------------------------------------


def test_read_race_dir(race_dir):
    assert read_race_dir(race_dir, "dev") == DEV
    assert read_race_dir(race_dir, "dev", levels=("high",)) == DEV[3:]
    assert read_race_dir(race_dir, "dev", levels=("high", "middle")) == DEV[3:] + DEV[:3]
    assert [e.example_id for e in read_race_dir(race_dir, "train")] == ["middle/1.txt-0"]
    assert read_race_dir(race_dir, "test") == []
    assert load_race("dev", race_dir=race_dir) == DEV


def test_read_race_dir_bad_arguments(race_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(os.path.join(str(tmp_path), "dev", "middle"))):
        read_race_dir(str(tmp_path), "dev")
    with pytest.raises(ValueError, match="split must be one of"):
        read_race_dir(race_dir, "validation")
    with pytest.raises(ValueError, match="levels must be"):
        read_race_dir(race_dir, "dev", levels=("primary",))


GOOD = FILES["dev", "middle", "2.txt"]


@pytest.mark.parametrize(
    "record, message",
    [
        ('{"answers": ["A"], "options": [', "not a JSON object"),
        (json.dumps([GOOD]), "expected a JSON object, got list"),
        ({k: v for k, v in GOOD.items() if k != "article"}, r"missing key\(s\) \['article'\]"),
        ({**GOOD, "options": [GOOD["options"][0], ["a", "b", "c"]]}, "question 1: needs 4 option strings"),
        ({**GOOD, "answers": ["B", "E"]}, "question 1: answer 'E' is not one of A, B, C, D"),
        ({**GOOD, "answers": ["B", "AB"]}, "question 1: answer 'AB'"),
        ({**GOOD, "answers": ["B"]}, "questions, options and answers must be lists of one length"),
        ({**GOOD, "options": GOOD["options"][:1]}, "questions, options and answers must be lists of one length"),
        ({**GOOD, "questions": [GOOD["questions"][0], None]}, "question 1: the question must be a string"),
    ],
)
def test_read_race_dir_malformed_file(tmp_path, record, message):
    root = write_race(
        tmp_path,
        {("dev", "middle", "1.txt"): GOOD, ("dev", "middle", "bad.txt"): record, ("dev", "high", "1.txt"): GOOD},
    )
    with pytest.raises(ValueError, match=re.escape(os.path.join(root, "dev", "middle", "bad.txt")) + ".*" + message):
        read_race_dir(root, "dev")


def test_read_race_dir_without_answers_gives_label_minus_one(tmp_path, tokenizer):
    record = {k: v for k, v in GOOD.items() if k != "answers"}
    root = write_race(tmp_path, {("test", "high", "3.txt"): record})
    examples = read_race_dir(root, "test", levels=("high",))
    assert [(e.example_id, e.label) for e in examples] == [("high/3.txt-0", -1), ("high/3.txt-1", -1)]
    assert featurize(examples, tokenizer, 16, 4)["label"].tolist() == [-1, -1]


@pytest.fixture
def mock_tfds(race_dir):
    """tfds' `race/{middle,high}` served from the fixture folder: the rows of tfds' own `_generate_examples`,
    encoded and decoded by the builder's features, as `download_and_prepare` + `as_dataset` would do."""
    tfds = pytest.importorskip("tensorflow_datasets")
    import tensorflow as tf
    from etils import epath

    rows = {
        (split, level): [
            row for _, row in tfds.builder(f"race/{level}")._generate_examples(epath.Path(race_dir) / split / level)
        ]
        for split in ("train", "dev", "test")
        for level in ("middle", "high")
    }

    def as_dataset(builder, split, **kwargs):
        features = builder.info.features
        records = [
            features.serialize_example(features.encode_example(row)) for row in rows[split, builder.builder_config.name]
        ]
        return tf.data.Dataset.from_tensor_slices(tf.constant(records, tf.string)).map(features.deserialize_example)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        yield


def test_read_race_tfds_equals_read_race_dir(mock_tfds, race_dir):
    def by_id(examples):
        return sorted(examples, key=lambda e: e.example_id)

    for split in ("train", "dev", "test"):
        assert by_id(read_race_tfds(split)) == by_id(read_race_dir(race_dir, split))
    assert by_id(read_race_tfds("dev", levels=("middle",))) == by_id(DEV[:3])
    assert by_id(load_race("dev")) == by_id(DEV)
    with pytest.raises(ValueError, match="split must be one of"):
        read_race_tfds("validation")


# --- featurize ------------------------------------------------------------------------------------------------


def _ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def _row(tokenizer, article, qa):
    """[CLS] article [SEP] qa [SEP] from the given texts, untruncated."""
    return [
        tokenizer.cls_token_id,
        *_ids(tokenizer, article),
        tokenizer.sep_token_id,
        *_ids(tokenizer, qa),
        tokenizer.sep_token_id,
    ]


def test_featurize_rows(tokenizer):
    width = 128
    features = featurize(DEV, tokenizer, max_seq_length=width, max_qa_length=64)
    assert {k: (v.shape, v.dtype) for k, v in features.items()} == {
        "input_ids": ((6, 4, width), np.int32),
        "attention_mask": ((6, 4, width), np.int32),
        "token_type_ids": ((6, 4, width), np.int32),
        "label": ((6,), np.int32),
        "level": ((6,), np.int32),
    }
    assert features["label"].tolist() == [0, 1, 3, 2, 0, 1]
    assert features["level"].tolist() == [0, 0, 0, 1, 1, 1]
    qa_texts = {  # no "_": question + " " + option; with "_": the option in every blank
        (1, 1): "Where did the cat sit? on the mat",
        (2, 3): "The story is mainly about a cat .",
        (5, 0): "The boats sailed on the sea and the sea .",
    }
    for (n, k), qa in qa_texts.items():
        expected = _row(tokenizer, DEV[n].article, qa)
        length = len(expected)
        assert length < width
        padding = [tokenizer.pad_token_id] * (width - length)
        np.testing.assert_array_equal(features["input_ids"][n, k], expected + padding)
        np.testing.assert_array_equal(features["attention_mask"][n, k], [1] * length + [0] * (width - length))
        first_sep = expected.index(tokenizer.sep_token_id)
        np.testing.assert_array_equal(
            features["token_type_ids"][n, k],
            [0] * (first_sep + 1) + [1] * (length - first_sep - 1) + [0] * (width - length),
        )


def test_featurize_truncation(tokenizer):
    article = " ".join(["the cat sat on the mat and it was happy"] * 6)
    question = "where did the dog and the bird and the fish sit in the park under the tree"
    long = RaceExample("x-0", article, question, ("at school", "b", "c", "d"), 0, "high")
    features = featurize([long], tokenizer, max_seq_length=32, max_qa_length=8)
    qa, art = _ids(tokenizer, question + " at school"), _ids(tokenizer, article)
    assert len(qa) > 8 and len(art) > 32
    # the qa keeps its LAST 8 tokens (race_utils: ending_tokens[-max_qa_length:]); the article fills the rest
    expected = [tokenizer.cls_token_id, *art[: 32 - 3 - 8], tokenizer.sep_token_id, *qa[-8:], tokenizer.sep_token_id]
    np.testing.assert_array_equal(features["input_ids"][0, 0], expected)
    assert features["attention_mask"][0].sum(-1).tolist() == [32] * 4
    # a qa within max_qa_length is kept whole and only the article is cut
    short = RaceExample("x-1", article, "why", ("a", "b", "c", "d"), 0, "middle")
    row = featurize([short], tokenizer, max_seq_length=32, max_qa_length=8)["input_ids"][0, 1]
    qa = _ids(tokenizer, "why b")
    assert len(qa) < 8
    np.testing.assert_array_equal(
        row, [tokenizer.cls_token_id, *art[: 32 - 3 - len(qa)], tokenizer.sep_token_id, *qa, tokenizer.sep_token_id]
    )


def test_featurize_bad_lengths(tokenizer):
    with pytest.raises(ValueError, match="max_qa_length <= max_seq_length - 3"):
        featurize(DEV, tokenizer, max_seq_length=16, max_qa_length=14)
    empty = featurize([], tokenizer, max_seq_length=16, max_qa_length=8)
    assert empty["input_ids"].shape == (0, 4, 16) and empty["label"].shape == (0,)
