"""albert_jax.convert.hf, HF <-> albert-jax conversion: parity with transformers (PyTorch) for every head, both
directions; bad checkpoints are named."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import albert_jax as aj
from albert_jax import convert, pretrained
from helpers import hf_config

# (transformers class, our class, output fields to compare (ours, theirs))
HEAD_PAIRS = [
    ("AlbertModel", [("last_hidden_state", "last_hidden_state"), ("pooler_output", "pooler_output")]),
    ("AlbertForPreTraining", [("prediction_logits", "prediction_logits"), ("sop_logits", "sop_logits")]),
    ("AlbertForMaskedLM", [("logits", "logits")]),
    ("AlbertForSequenceClassification", [("logits", "logits")]),
    ("AlbertForTokenClassification", [("logits", "logits")]),
    ("AlbertForQuestionAnswering", [("start_logits", "start_logits"), ("end_logits", "end_logits")]),
    ("AlbertForMultipleChoice", [("logits", "logits")]),
]

CONFIGS = {
    "shared-gelu_new": dict(num_hidden_layers=2, num_hidden_groups=1, inner_group_num=1, hidden_act="gelu_new"),
    "groups-between-inner2-gelu": dict(
        num_hidden_layers=4, num_hidden_groups=2, inner_group_num=2, hidden_act="gelu", num_labels=3
    ),
    "groups-eq-layers-relu": dict(
        num_hidden_layers=3, num_hidden_groups=3, inner_group_num=1, hidden_act="relu", num_labels=1
    ),
    "unshared-inner2-gelu_new": dict(
        num_hidden_layers=2, num_hidden_groups=2, inner_group_num=2, hidden_act="gelu_new", embedding_size=24
    ),
}
TOL = 1e-5


def head_config(head, config_name):
    """transformers' QA head splits `num_labels` logits into start/end, so it only exists for 2 labels."""
    overrides = dict(CONFIGS[config_name])
    if head == "AlbertForQuestionAnswering":
        overrides["num_labels"] = 2
    return hf_config(**overrides)


def make_inputs(head, seed=0, batch=3, length=11, vocab=101):
    rng = np.random.RandomState(seed)
    shape = (batch, 2, length) if head == "AlbertForMultipleChoice" else (batch, length)
    ids = rng.randint(5, vocab, shape)
    mask = np.ones(shape, np.int64)
    mask.reshape(-1, length)[1, 7:] = 0  # padding in the second (flattened) row
    types = np.zeros(shape, np.int64)
    types[..., 5:] = 1
    return ids, mask, types


def torch_outputs(model, ids, mask, types):
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            token_type_ids=torch.tensor(types),
            output_hidden_states=True,
            output_attentions=True,
        )


def our_outputs(head, config, params, ids, mask, types):
    model = aj.HEADS[head](config)
    return model.apply(
        {"params": params},
        jnp.asarray(ids),
        jnp.asarray(mask),
        jnp.asarray(types),
        output_hidden_states=True,
        output_attentions=True,
    )


def assert_close(ours, theirs, fields):
    for mine, ref in fields:
        a, b = np.asarray(getattr(ours, mine)), getattr(theirs, ref).numpy()
        assert a.shape == b.shape, (mine, a.shape, b.shape)
        np.testing.assert_allclose(a, b, atol=TOL, rtol=0, err_msg=mine)
    assert len(ours.hidden_states) == len(theirs.hidden_states)
    for a, b in zip(ours.hidden_states, theirs.hidden_states):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=TOL, rtol=0, err_msg="hidden_states")
    assert len(ours.attentions) == len(theirs.attentions)
    for a, b in zip(ours.attentions, theirs.attentions):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=TOL, rtol=0, err_msg="attentions")


def randomize(params, seed):
    """Random values everywhere (init leaves biases at 0 and LayerNorm scales at 1, which hides mistakes)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [np.asarray(x) + 0.2 * np.asarray(jax.random.normal(k, x.shape)) for k, x in zip(keys, leaves)]
    )


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.parametrize("head,fields", HEAD_PAIRS, ids=[h for h, _ in HEAD_PAIRS])
def test_hf_to_ours(tmp_path, head, fields, config_name):
    torch.manual_seed(hash((head, config_name)) % 1000)
    model = getattr(transformers, head)(head_config(head, config_name)).eval()
    with torch.no_grad():  # non-trivial biases / LayerNorm parameters
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    config, params = convert.load_hf(str(tmp_path))
    inputs = make_inputs(head)
    assert_close(our_outputs(head, config, params, *inputs), torch_outputs(model, *inputs), fields)


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.parametrize("head,fields", HEAD_PAIRS, ids=[h for h, _ in HEAD_PAIRS])
def test_ours_to_hf(tmp_path, head, fields, config_name):
    config = aj.AlbertConfig.from_dict(head_config(head, config_name).to_dict())
    model = aj.HEADS[head](config)
    params = randomize(aj.init_params(model, jax.random.PRNGKey(1)), seed=2)
    convert.save_hf(config, params, str(tmp_path))
    hf_model, info = getattr(transformers, head).from_pretrained(
        str(tmp_path), output_loading_info=True, attn_implementation="eager"
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    inputs = make_inputs(head, seed=3)
    assert_close(our_outputs(head, config, params, *inputs), torch_outputs(hf_model.eval(), *inputs), fields)


def test_pretraining_checkpoint_loads_in_every_hf_head(tmp_path):
    """A pretraining export is what users fine-tune from: exact for AlbertForPreTraining, and every other
    transformers head finds the whole backbone (only its own new head is missing, as in transformers)."""
    config = aj.AlbertConfig.from_preset("albert-tiny", vocab_size=50, num_hidden_layers=2)
    params = aj.init_params(aj.AlbertForPreTraining(config), jax.random.PRNGKey(0))
    convert.save_hf(config, params, str(tmp_path))
    _, info = transformers.AlbertForPreTraining.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    new_heads = {
        "AlbertModel": set(),
        "AlbertForMaskedLM": set(),
        "AlbertForSequenceClassification": {"classifier.weight", "classifier.bias"},
        "AlbertForQuestionAnswering": {"qa_outputs.weight", "qa_outputs.bias"},
    }
    for head, expected_missing in new_heads.items():
        _, info = getattr(transformers, head).from_pretrained(str(tmp_path), output_loading_info=True)
        assert set(info["missing_keys"]) == expected_missing, (head, info)
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["architectures"] == ["AlbertForPreTraining"]


def test_unshared_model_exports_as_groups(tmp_path):
    """sharing='none' is transformers' num_hidden_groups = num_hidden_layers."""
    config = aj.AlbertConfig.from_dict(hf_config(num_hidden_layers=3).to_dict()).replace(sharing="none")
    params = randomize(aj.init_params(aj.AlbertModel(config), jax.random.PRNGKey(0)), seed=1)
    convert.save_hf(config, params, str(tmp_path))
    hf_model = transformers.AlbertModel.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    assert hf_model.config.num_hidden_groups == 3
    inputs = make_inputs("AlbertModel")
    assert_close(
        our_outputs("AlbertModel", config, params, *inputs),
        torch_outputs(hf_model, *inputs),
        [("last_hidden_state", "last_hidden_state")],
    )


@pytest.mark.parametrize("sharing", ["attention", "ffn"])
def test_partial_sharing_refuses_hf_export_but_roundtrips_ours(tmp_path, sharing):
    config = aj.AlbertConfig.from_preset("albert-tiny", vocab_size=50, num_hidden_layers=2, sharing=sharing)
    params = aj.init_params(aj.AlbertForPreTraining(config), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="no transformers representation"):
        convert.save_hf(config, params, str(tmp_path / "hf"))
    assert not (tmp_path / "hf" / "model.safetensors").exists()
    pretrained.save_pretrained(config, params, str(tmp_path / "ours"))
    config2, params2 = pretrained.from_pretrained(str(tmp_path / "ours"))
    assert config2 == config
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, params2)


def test_sharded_safetensors_index(tmp_path):
    model = transformers.AlbertForMaskedLM(hf_config()).eval()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    config, params = convert.load_hf(str(tmp_path))
    inputs = make_inputs("AlbertForMaskedLM")
    assert_close(
        our_outputs("AlbertForMaskedLM", config, params, *inputs), torch_outputs(model, *inputs), [("logits", "logits")]
    )


# -- bad checkpoints ----------------------------------------------------------------------------------------
@pytest.fixture
def hf_dir(tmp_path):
    transformers.AlbertForPreTraining(hf_config()).save_pretrained(tmp_path)
    return tmp_path


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(convert.ConversionError, match="not a directory"):
        convert.load_hf(str(tmp_path / "nope"))
    with pytest.raises(convert.ConversionError, match="no config.json"):
        convert.load_hf(str(tmp_path))
    hf_config().save_pretrained(tmp_path)
    with pytest.raises(convert.ConversionError, match="no weights.*model.safetensors"):
        convert.load_hf(str(tmp_path))


def test_pickle_refused_unless_allowed(hf_dir):
    model = transformers.AlbertForPreTraining.from_pretrained(str(hf_dir))
    os.remove(hf_dir / "model.safetensors")
    torch.save(model.state_dict(), hf_dir / "pytorch_model.bin")
    with pytest.raises(convert.ConversionError, match="pickle.*arbitrary code"):
        convert.load_hf(str(hf_dir))
    _, params = convert.load_hf(str(hf_dir), allow_pickle=True)
    np.testing.assert_array_equal(params["predictions"]["bias"], model.predictions.bias.detach().numpy())


def test_corrupt_safetensors(hf_dir):
    (hf_dir / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(convert.ConversionError, match="model.safetensors is not a readable safetensors"):
        convert.load_hf(str(hf_dir))


def test_missing_unexpected_and_mismatched_tensors_are_named(hf_dir):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(hf_dir / "model.safetensors")
    del tensors["albert.encoder.embedding_hidden_mapping_in.weight"]
    tensors["albert.encoder.extra_thing.weight"] = np.zeros(3, np.float32)
    tensors["albert.embeddings.position_embeddings.weight"] = np.zeros((7, 16), np.float32)
    save_file(tensors, hf_dir / "model.safetensors")
    with pytest.raises(convert.ConversionError) as err:
        convert.load_hf(str(hf_dir))
    message = str(err.value)
    assert "missing tensors: albert.encoder.embedding_hidden_mapping_in.weight" in message
    assert "unexpected tensors: albert.encoder.extra_thing.weight" in message
    assert "albert.embeddings.position_embeddings.weight: checkpoint (7, 16), model expects (40, 16)" in message


def test_wrong_model_type(hf_dir):
    data = json.loads((hf_dir / "config.json").read_text())
    data["model_type"] = "bert"
    (hf_dir / "config.json").write_text(json.dumps(data))
    with pytest.raises(convert.ConversionError, match="model_type='bert'"):
        convert.load_hf(str(hf_dir))
