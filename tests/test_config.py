"""AlbertConfig: transformers field names and defaults, lossless JSON, presets, validation errors."""

import dataclasses
import json

import pytest
import transformers

import albert_jax as aj


def test_defaults_equal_transformers():
    ours, theirs = aj.AlbertConfig(), transformers.AlbertConfig()
    for field in dataclasses.fields(ours):
        if hasattr(theirs, field.name) and field.name not in ("dtype", "extra"):
            assert getattr(ours, field.name) == getattr(theirs, field.name), field.name


def test_hf_json_roundtrip_is_lossless(tmp_path):
    hf = transformers.AlbertConfig(
        hidden_size=64,
        num_attention_heads=4,
        intermediate_size=99,
        num_labels=3,
        num_hidden_groups=2,
        num_hidden_layers=4,
    )
    hf.save_pretrained(tmp_path)
    original = json.loads((tmp_path / "config.json").read_text())
    config = aj.AlbertConfig.from_json_file(tmp_path / "config.json")
    assert (config.hidden_size, config.num_labels, config.num_hidden_groups) == (64, 3, 2)
    config.to_json_file(tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    for key, value in original.items():
        if key != "dtype":  # null in transformers' file: "the default" (float32) in ours
            assert again[key] == value, key
    reloaded = transformers.AlbertConfig.from_pretrained(tmp_path / "again.json")
    assert reloaded.num_labels == 3 and reloaded.hidden_size == 64


def test_unknown_fields_are_kept(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 32, "num_attention_heads": 4, "something_new": [1, 2]}))
    config = aj.AlbertConfig.from_json_file(path)
    assert config.extra == {"something_new": [1, 2]}
    config.to_json_file(path)
    assert json.loads(path.read_text())["something_new"] == [1, 2]


def test_presets():
    base = aj.AlbertConfig.from_preset("albert-base-v2")
    assert (base.hidden_size, base.num_hidden_layers, base.embedding_size, base.hidden_act) == (
        768,
        12,
        128,
        "gelu_new",
    )
    assert aj.AlbertConfig.from_preset("albert-xxlarge-v1").num_attention_heads == 64
    bert = aj.AlbertConfig.from_preset("bert-base-equivalent")
    assert (bert.embedding_size, bert.sharing) == (768, "none")
    assert aj.AlbertConfig.from_preset("albert-tiny", num_hidden_layers=2).num_hidden_layers == 2
    with pytest.raises(ValueError, match="unknown preset 'albert-huge'"):
        aj.AlbertConfig.from_preset("albert-huge")


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(hidden_size=100, num_attention_heads=3), r"hidden_size \(100\) must be divisible by num_attention_heads"),
        (dict(sharing="some"), r"sharing must be one of .*'some'"),
        (dict(hidden_act="gelu2"), r"hidden_act must be one of .*'gelu2'"),
        (
            dict(num_hidden_layers=12, num_hidden_groups=5),
            r"num_hidden_layers \(12\) must be divisible by num_hidden_groups",
        ),
        (dict(embedding_size=0), r"embedding_size must be a positive integer, got 0"),
        (dict(vocab_size=-3), r"vocab_size must be a positive integer"),
        (dict(hidden_dropout_prob=1.5), r"hidden_dropout_prob must be in \[0, 1\)"),
        (dict(dtype="float8"), r"dtype must be one of"),
    ],
)
def test_invalid_values_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        aj.AlbertConfig(**overrides)


def test_bad_json_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config file"):
        aj.AlbertConfig.from_json_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        aj.AlbertConfig.from_json_file(tmp_path / "bad.json")
    (tmp_path / "wrong.json").write_text(json.dumps({"hidden_size": 10, "num_attention_heads": 3}))
    with pytest.raises(ValueError, match="wrong.json: AlbertConfig.hidden_size"):
        aj.AlbertConfig.from_json_file(tmp_path / "wrong.json")
