"""albert_jax.data.glue: the task table, TSV readers against hand-written files in the official layout, tfds
reading on mocked data, featurization."""

import csv
import logging
import math
import re

import numpy as np
import pytest

from albert_jax.data import glue as glue_data
from albert_jax.data.glue import TASKS, GlueExample, featurize, get_task, load_glue, read_glue_tfds, read_glue_tsv
from albert_jax.tokenizer import AlbertTokenizer, train_spm
from helpers import GLUE_FILES as FILES
from helpers import QUOTE
from helpers import write_files as _write_files

# What each split of the official download's files (FILES) reads as: (guid, text_a, text_b, label).
EXPECTED = {
    ("cola", "train"): [
        ("train-0", "Our friends won't buy this analysis, let alone the next one.", None, "1"),
        ("train-1", QUOTE, None, "0"),
    ],
    ("cola", "dev"): [("dev-0", "The sailors rode the breeze clear of the rocks.", None, "1")],
    ("cola", "test"): [("0", QUOTE, None, None), ("1", "Bill whistled past the house.", None, None)],
    ("sst2", "train"): [
        ("train-0", "hide new secretions from the parental units ", None, "0"),
        ("train-1", QUOTE, None, "1"),
        ("train-2", "contains no wit , only labored gags ", None, "0"),
    ],
    ("sst2", "dev"): [("dev-0", "it 's a charming and often affecting journey . ", None, "1")],
    ("sst2", "test"): [("0", "uneasy mishmash of styles and genres .", None, None), ("1", QUOTE, None, None)],
    ("mrpc", "train"): [
        (
            "train-0",
            'Amrozi accused his brother , whom he called " the witness " , of lying .',
            'Referring to him as only " the witness " , Amrozi accused his brother of lying .',
            "1",
        ),
        ("train-1", QUOTE, "Yucaipa bought Dominick 's in 1995 for $ 693 million .", "0"),
    ],
    ("mrpc", "dev"): [("dev-0", "He is a doctor .", "He is a physician .", "1")],
    ("mrpc", "test"): [("0", QUOTE, "Ms Stewart left .", None), ("1", "Shares rose .", "The stock went up .", None)],
    ("stsb", "train"): [
        ("train-0", "A plane is taking off.", "An air plane is taking off.", 5.0),
        ("train-1", QUOTE, "A man left.", 0.5),
    ],
    ("stsb", "dev"): [("dev-0", "A man is dancing.", "A man wearing a hat is dancing.", 3.8)],
    ("stsb", "test"): [("0", QUOTE, "Rain falls.", None), ("1", "Sun.", "Moon.", None)],
    ("qqp", "train"): [
        ("train-0", "How is the life of a math student?", "Which level is enough?", "0"),
        ("train-3", QUOTE, "How do I get a job?", "1"),
    ],
    ("qqp", "dev"): [("dev-0", "Why is the sky blue?", "What makes the sky blue?", "1")],
    ("qqp", "test"): [("0", QUOTE, "Is it so?", None), ("1", "Why?", "Why not?", None)],
    ("mnli", "train"): [
        (
            "train-0",
            "Conceptually cream skimming has two dimensions.",
            "Product and geography are what make cream skimming work. ",
            "neutral",
        ),
        ("train-1", QUOTE, "He stayed.", "contradiction"),
    ],
    ("mnli", "dev_matched"): [
        ("dev_matched-0", "The new rights are nice enough", "Everyone really likes the newest benefits ", "neutral")
    ],
    ("mnli", "dev_mismatched"): [("dev_mismatched-0", QUOTE, "He left.", "entailment")],
    ("mnli", "test_matched"): [("0", QUOTE, "No.", None), ("1", "Yes.", "Maybe.", None)],
    ("mnli", "test_mismatched"): [("0", "Hi.", "Bye.", None)],
    ("qnli", "train"): [
        ("train-0", "When did the third Digimon series begin?", QUOTE, "not_entailment"),
        ("train-1", "Which missile batteries were deployed?", "Patriot batteries were deployed.", "entailment"),
    ],
    ("qnli", "dev"): [("dev-0", "What came into force?", "The constitution.", "entailment")],
    ("qnli", "test"): [("0", "What?", QUOTE, None)],
    ("rte", "train"): [
        (
            "train-0",
            "No Weapons of Mass Destruction Found in Iraq Yet.",
            "Weapons of Mass Destruction Found in Iraq.",
            "not_entailment",
        )
    ],
    ("rte", "dev"): [("dev-0", QUOTE, "He left.", "entailment")],
    ("rte", "test"): [("0", "Mangla was a dam.", QUOTE, None), ("1", "A.", "B.", None)],
    ("wnli", "train"): [
        ("train-0", "I stuck a pin through a carrot. It had a hole.", "The carrot had a hole.", "1"),
        ("train-1", QUOTE, "He left.", "0"),
    ],
    ("wnli", "dev"): [("dev-0", "The drain is clogged with hair.", "The hair has to be removed.", "1")],
    ("wnli", "test"): [("0", "Maude and Dora had seen the trains.", "The trains rushed.", None)],
}


# --- tasks ------------------------------------------------------------------------------------------


def test_task_table():
    assert list(TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    assert {t.dir_name for t in TASKS.values()} == {path.split("/")[0] for path in FILES}
    assert TASKS["mnli"].labels == ("contradiction", "entailment", "neutral") and TASKS["mnli"].num_labels == 3
    assert TASKS["stsb"].labels is None and TASKS["stsb"].num_labels == 1
    assert TASKS["rte"].labels == ("entailment", "not_entailment") and TASKS["cola"].num_labels == 2
    # Every split of every task has a fixture file and an expectation.
    assert sorted(EXPECTED) == sorted(
        (t.name, s) for t in TASKS.values() for s in ("train", *t.eval_splits, *t.test_splits)
    )


@pytest.mark.parametrize(
    "alias, name",
    [
        ("SST-2", "sst2"),
        ("sst-2", "sst2"),
        ("sst2", "sst2"),
        ("STS-B", "stsb"),
        ("sts-b", "stsb"),
        ("MNLI", "mnli"),
        ("CoLA", "cola"),
        ("qqp", "qqp"),
    ],
)
def test_get_task_aliases(alias, name):
    assert get_task(alias) is TASKS[name]


def test_get_task_unknown_lists_names():
    with pytest.raises(ValueError, match=r"unknown GLUE task 'squad'.*'cola'.*'wnli'"):
        get_task("squad")


# --- TSV --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task, split", sorted(EXPECTED))
def test_read_tsv(glue_dir, task, split):
    examples = read_glue_tsv(str(glue_dir), task, split)
    assert examples == [GlueExample(*row) for row in EXPECTED[task, split]]
    assert load_glue(task, split, glue_dir=str(glue_dir)) == examples


def test_quote_is_not_csv_quoting(glue_dir):
    # Python's csv module would have merged rows at the unbalanced quote; the reader keeps one row per line.
    with open(glue_dir / "SST-2/train.tsv", encoding="utf-8", newline="") as f:
        assert len(list(csv.reader(f, delimiter="\t"))) < len(FILES["SST-2/train.tsv"])
    assert len(read_glue_tsv(str(glue_dir), "sst2", "train")) == len(FILES["SST-2/train.tsv"]) - 1


def test_crlf_line_endings(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE/dev.tsv").write_bytes(b"index\tsentence1\tsentence2\tlabel\r\n0\tA.\tB.\tentailment\r\n")
    assert read_glue_tsv(str(tmp_path), "rte", "dev") == [GlueExample("dev-0", "A.", "B.", "entailment")]


def test_qqp_skips_malformed_rows_with_a_warning(glue_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="albert_jax.data.glue"):
        read_glue_tsv(str(glue_dir), "qqp", "train")
    assert "skipped 2 malformed rows" in caplog.text and "train.tsv" in caplog.text


def _malformed_cases():
    for task in TASKS.values():
        for split in (task.eval_splits[0], task.test_splits[0]):
            yield task.name, f"{task.dir_name}/{split}.tsv"


@pytest.mark.parametrize("task, name", list(_malformed_cases()))
def test_row_with_missing_column_is_an_error(tmp_path, caplog, task, name):
    lines = FILES[name] + [FILES[name][-1].rsplit("\t", 1)[0]]
    _write_files(tmp_path, {name: lines})
    split = name.split("/")[1][: -len(".tsv")]
    columns = len(FILES[name][-1].split("\t"))
    if task == "qqp" and split == "dev":
        with caplog.at_level(logging.WARNING, logger="albert_jax.data.glue"):
            assert len(read_glue_tsv(str(tmp_path), task, split)) == len(lines) - 2
        assert "skipped 1 malformed rows" in caplog.text
        return
    expected = f"{tmp_path / name} line {len(lines)}: expected {columns} tab-separated columns, got {columns - 1}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        read_glue_tsv(str(tmp_path), task, split)


def test_other_malformed_files(tmp_path):
    _write_files(
        tmp_path,
        {
            "STS-B/dev.tsv": FILES["STS-B/dev.tsv"] + [FILES["STS-B/dev.tsv"][1][:-5] + "n/a"],
            "MNLI/dev_matched.tsv": ["index\tsentence1\tlabel", "0\tA\tneutral"],
            "RTE/dev.tsv": [],
        },
    )
    with pytest.raises(ValueError, match=r"STS-B/dev.tsv line 3: expected a number as the STS-B score, got 'n/a'"):
        read_glue_tsv(str(tmp_path), "stsb", "dev")
    with pytest.raises(ValueError, match=r"dev_matched.tsv line 1: expected a header of at least 10 .* got 3"):
        read_glue_tsv(str(tmp_path), "mnli", "dev_matched")
    with pytest.raises(ValueError, match=r"RTE/dev.tsv is empty"):
        read_glue_tsv(str(tmp_path), "rte", "dev")


def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_bytes(b"sentence\tlabel\nfine .\t1\ncaf\xe9 au lait\t0\n")
    expected = f"{tmp_path / 'SST-2' / 'train.tsv'} line 3: not UTF-8 text (invalid continuation byte at byte 3)"
    with pytest.raises(ValueError, match=re.escape(expected)):
        read_glue_tsv(str(tmp_path), "sst2", "train")


def test_a_file_without_examples_is_an_error(tmp_path):
    qqp_header = FILES["QQP/train.tsv"][0]
    _write_files(tmp_path, {"SST-2/train.tsv": ["sentence\tlabel"], "QQP/train.tsv": [qqp_header, "1\t2"]})
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'SST-2' / 'train.tsv'} holds no examples")):
        read_glue_tsv(str(tmp_path), "sst2", "train")
    with pytest.raises(ValueError, match=re.escape("QQP/train.tsv holds no examples (1 malformed rows skipped)")):
        read_glue_tsv(str(tmp_path), "qqp", "train")


def test_missing_file_and_unknown_split(tmp_path, glue_dir):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "QNLI" / "dev.tsv"))):
        read_glue_tsv(str(tmp_path), "qnli", "dev")
    with pytest.raises(ValueError, match=r"GLUE mnli has no split 'dev'.*'dev_matched'"):
        read_glue_tsv(str(glue_dir), "mnli", "dev")
    with pytest.raises(ValueError, match=r"no split 'validation'"):
        load_glue("rte", "validation", glue_dir=str(glue_dir))


# --- tfds -------------------------------------------------------------------------------------------

# Rows tfds' glue builder yields (its feature names; its class ids, -1 on test), per (config, tfds split).
TFDS_ROWS = {
    ("mnli", "train"): [
        {"premise": "P é.", "hypothesis": "H.", "label": 2, "idx": 0},
        {"premise": QUOTE, "hypothesis": "Q.", "label": 0, "idx": 1},
    ],
    ("mnli", "validation_mismatched"): [{"premise": "A.", "hypothesis": "B.", "label": 1, "idx": 0}],
    ("mnli", "test_matched"): [{"premise": "A.", "hypothesis": "B.", "label": -1, "idx": 7}],
    ("cola", "validation"): [{"sentence": "Bill left.", "label": 1, "idx": 3}],
    ("cola", "test"): [{"sentence": "Bill.", "label": -1, "idx": 0}],
    ("wnli", "train"): [{"sentence1": "A.", "sentence2": "B.", "label": 0, "idx": 5}],
    ("stsb", "validation"): [{"sentence1": "A.", "sentence2": "B.", "label": 3.25, "idx": 0}],
    ("stsb", "test"): [{"sentence1": "A.", "sentence2": "B.", "label": -1.0, "idx": 4}],
    ("qnli", "validation"): [{"question": "Q?", "sentence": "S.", "label": 1, "idx": 0}],
    ("qqp", "train"): [{"question1": "Q1?", "question2": "Q2?", "label": 1, "idx": 2}],
}
TFDS_EXPECTED = {
    ("mnli", "train"): [("train-0", "P é.", "H.", "contradiction"), ("train-1", QUOTE, "Q.", "entailment")],
    ("mnli", "dev_mismatched"): [("dev_mismatched-0", "A.", "B.", "neutral")],
    ("mnli", "test_matched"): [("7", "A.", "B.", None)],
    ("cola", "dev"): [("dev-3", "Bill left.", None, "1")],
    ("cola", "test"): [("0", "Bill.", None, None)],
    ("wnli", "train"): [("train-5", "A.", "B.", "0")],
    ("stsb", "dev"): [("dev-0", "A.", "B.", 3.25)],
    ("stsb", "test"): [("4", "A.", "B.", None)],
    ("qnli", "dev"): [("dev-0", "Q?", "S.", "not_entailment")],
    ("qqp", "train"): [("train-2", "Q1?", "Q2?", "1")],
}


@pytest.fixture
def mock_tfds():
    tfds = pytest.importorskip("tensorflow_datasets")
    import tensorflow as tf

    def as_dataset(self, split, **kwargs):
        rows = TFDS_ROWS[self.builder_config.name, str(split)]
        return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=self.info.features.get_tensor_spec())

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        yield


@pytest.mark.parametrize("task, split", sorted(TFDS_EXPECTED))
def test_read_tfds(mock_tfds, task, split):
    expected = [GlueExample(*row) for row in TFDS_EXPECTED[task, split]]
    assert read_glue_tfds(task, split) == expected
    assert load_glue(task, split) == expected


def test_tfds_label_names_are_checked(mock_tfds, monkeypatch):
    monkeypatch.setitem(glue_data._TFDS_LABEL_NAMES, "cola", ("bad", "good"))
    with pytest.raises(ValueError, match=r"label names \('unacceptable', 'acceptable'\); expected \('bad', 'good'\)"):
        read_glue_tfds("cola", "dev")


# --- featurize --------------------------------------------------------------------------------------

_WORDS = (
    "the cat dog bird sat ran on a mat log tree quickly slowly red blue green big small house river and but "
    "then it was is very happy sad old new man woman child saw heard liked yes no maybe question answer "
    "government letters fiction travel telephone weapons found iraq plane taking off air dancing wearing "
    "hat brother witness accused evidence shares rose stock went up drain clogged hair removed carrot pin "
    "hole trains rushed station morning evening winter summer paper table window door garden kitchen "
    "teacher student school lesson music painting quietly loudly because although never always"
).split()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    rng = np.random.default_rng(0)
    sentences = [" ".join(rng.choice(_WORDS, size=rng.integers(4, 12))) + "." for _ in range(400)]
    return AlbertTokenizer(train_spm(iter(sentences), 100, str(tmp_path_factory.mktemp("spm") / "spiece")))


PAIRS = [
    GlueExample("dev-0", "The cat sat on a mat.", "A dog ran.", "entailment"),
    GlueExample("dev-1", "Big red house " * 6, "small blue river " * 5, "not_entailment"),
    GlueExample("7", "It was old.", "It is new.", None),
]


def test_featurize_pairs_match_the_tokenizer(tokenizer):
    features = featurize(PAIRS, tokenizer, "rte", max_seq_length=64)
    assert set(features) == {"input_ids", "attention_mask", "token_type_ids", "label"}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert features[key].shape == (3, 64) and features[key].dtype == np.int32
    np.testing.assert_array_equal(features["label"], np.array([0, 1, -1], np.int32))
    assert features["label"].dtype == np.int32
    for row, example in enumerate(PAIRS):
        a = tokenizer.encode(example.text_a, add_special_tokens=False)
        b = tokenizer.encode(example.text_b, add_special_tokens=False)
        ids = [tokenizer.cls_token_id, *a, tokenizer.sep_token_id, *b, tokenizer.sep_token_id]
        pad = 64 - len(ids)
        np.testing.assert_array_equal(features["input_ids"][row], ids + [tokenizer.pad_token_id] * pad)
        np.testing.assert_array_equal(
            features["token_type_ids"][row], [0] * (len(a) + 2) + [1] * (len(b) + 1) + [0] * pad
        )
        np.testing.assert_array_equal(features["attention_mask"][row], [1] * len(ids) + [0] * pad)


def test_featurize_truncates_longest_first(tokenizer):
    features = featurize(PAIRS, tokenizer, "rte", max_seq_length=16)
    assert features["input_ids"].shape == (3, 16)
    long_row = features["input_ids"][1].tolist()
    assert features["attention_mask"][1].all()
    # [CLS] a' [SEP] b' [SEP]: both long texts cut to prefixes that share the 13-token budget evenly.
    first_sep = long_row.index(tokenizer.sep_token_id)
    a, b = long_row[1:first_sep], long_row[first_sep + 1 : -1]
    assert long_row[0] == tokenizer.cls_token_id and long_row[-1] == tokenizer.sep_token_id
    assert a == tokenizer.encode(PAIRS[1].text_a, add_special_tokens=False)[: len(a)]
    assert b == tokenizer.encode(PAIRS[1].text_b, add_special_tokens=False)[: len(b)]
    assert len(a) + len(b) == 13 and abs(len(a) - len(b)) <= 1
    expected = tokenizer(
        [e.text_a for e in PAIRS],
        [e.text_b for e in PAIRS],
        max_length=16,
        truncation="longest_first",
        padding="max_length",
    )
    for key, value in expected.items():
        np.testing.assert_array_equal(features[key], value)


def test_featurize_single_sentences_and_regression(tokenizer):
    single = featurize([GlueExample("dev-0", "The dog sat.", None, "1")], tokenizer, "cola", 8)
    ids = [tokenizer.cls_token_id, *tokenizer.encode("The dog sat.", add_special_tokens=False), tokenizer.sep_token_id]
    assert single["input_ids"][0].tolist() == ids + [tokenizer.pad_token_id] * (8 - len(ids))
    assert not single["token_type_ids"].any() and single["label"].tolist() == [1]
    stsb = featurize([GlueExample("dev-0", "A.", "B.", 3.8), GlueExample("0", "A.", "B.", None)], tokenizer, "sts-b", 8)
    assert stsb["label"].dtype == np.float32
    assert stsb["label"][0] == np.float32(3.8) and math.isnan(stsb["label"][1])


def test_featurize_errors(tokenizer):
    with pytest.raises(ValueError, match=r"'dev-4' has label 'maybe'.*labels: \['entailment', 'not_entailment'\]"):
        featurize([GlueExample("dev-4", "A.", "B.", "maybe")], tokenizer, "rte", 16)
    with pytest.raises(ValueError, match=r"mix single sentences and pairs \(e.g. 'dev-0' and 'dev-1'\)"):
        featurize([GlueExample("dev-0", "A.", "B.", "1"), GlueExample("dev-1", "A.", None, "1")], tokenizer, "mrpc", 16)
    with pytest.raises(ValueError, match="at least one example"):
        featurize([], tokenizer, "mrpc", 16)
