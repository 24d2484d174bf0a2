"""Original google-research/albert TF checkpoints -> albert-jax / HF (`python -m albert_jax.convert from-tf`).

A random transformers `AlbertForPreTraining` is written as a TF1 checkpoint under the original variable
names (spelled out here independently of `convert.TF_TO_HF`, plus optimizer slots), converted through the
command line, and the result must compute what the transformers model computes.
"""

import json
import pydoc_data.topics
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import albert_jax as aj
from albert_jax import convert, pretrained
from albert_jax.convert import cli
from albert_jax.tokenizer import AlbertTokenizer, train_spm

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-5
CONFIGS = {
    "groups2-inner2": dict(embedding_size=16, num_hidden_layers=4, num_hidden_groups=2, inner_group_num=2),
    # E == H: the original has no embedding_hidden_mapping_in; transformers' must be the identity
    "embedding-eq-hidden": dict(embedding_size=32, num_hidden_layers=2, num_hidden_groups=1, inner_group_num=1),
}
LAYER_PARTS = [
    ("attention_1/self/query", "attention.query"),
    ("attention_1/self/key", "attention.key"),
    ("attention_1/self/value", "attention.value"),
    ("attention_1/output/dense", "attention.dense"),
    ("ffn_1/intermediate/dense", "ffn"),
    ("ffn_1/intermediate/output/dense", "ffn_output"),
]


def hf_model(seed, **overrides):
    config = transformers.AlbertConfig(
        vocab_size=200,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=40,
        hidden_act="gelu_new",
        attn_implementation="eager",
        **overrides,
    )
    torch.manual_seed(seed)
    model = transformers.AlbertForPreTraining(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        if config.embedding_size == config.hidden_size:
            model.albert.encoder.embedding_hidden_mapping_in.weight.copy_(torch.eye(config.hidden_size))
            model.albert.encoder.embedding_hidden_mapping_in.bias.zero_()
    return model


def original_variables(model):
    """The model's weights under google-research/albert's variable names and layouts."""
    c, sd = model.config, {k: v.numpy() for k, v in model.state_dict().items()}
    out = {
        f"bert/embeddings/{n}": sd[f"albert.embeddings.{n}.weight"]
        for n in ("word_embeddings", "token_type_embeddings", "position_embeddings")
    }
    out.update(
        {
            "bert/embeddings/LayerNorm/gamma": sd["albert.embeddings.LayerNorm.weight"],
            "bert/embeddings/LayerNorm/beta": sd["albert.embeddings.LayerNorm.bias"],
        }
    )
    if c.embedding_size != c.hidden_size:
        mapping = "albert.encoder.embedding_hidden_mapping_in"
        out["bert/encoder/embedding_hidden_mapping_in/kernel"] = sd[f"{mapping}.weight"].T
        out["bert/encoder/embedding_hidden_mapping_in/bias"] = sd[f"{mapping}.bias"]
    for g in range(c.num_hidden_groups):
        for k in range(c.inner_group_num):
            tf_prefix = f"bert/encoder/transformer/group_{g}/inner_group_{k}/"
            hf_prefix = f"albert.encoder.albert_layer_groups.{g}.albert_layers.{k}."
            for tf_part, hf_part in LAYER_PARTS:
                out[f"{tf_prefix}{tf_part}/kernel"] = sd[f"{hf_prefix}{hf_part}.weight"].T
                out[f"{tf_prefix}{tf_part}/bias"] = sd[f"{hf_prefix}{hf_part}.bias"]
            for tf_part, hf_part in (("LayerNorm", "attention.LayerNorm"), ("LayerNorm_1", "full_layer_layer_norm")):
                out[f"{tf_prefix}{tf_part}/gamma"] = sd[f"{hf_prefix}{hf_part}.weight"]
                out[f"{tf_prefix}{tf_part}/beta"] = sd[f"{hf_prefix}{hf_part}.bias"]
    out.update(
        {
            "bert/pooler/dense/kernel": sd["albert.pooler.weight"].T,
            "bert/pooler/dense/bias": sd["albert.pooler.bias"],
            "cls/predictions/transform/dense/kernel": sd["predictions.dense.weight"].T,
            "cls/predictions/transform/dense/bias": sd["predictions.dense.bias"],
            "cls/predictions/transform/LayerNorm/gamma": sd["predictions.LayerNorm.weight"],
            "cls/predictions/transform/LayerNorm/beta": sd["predictions.LayerNorm.bias"],
            "cls/predictions/output_bias": sd["predictions.bias"],
            "cls/seq_relationship/output_weights": sd["sop_classifier.classifier.weight"],  # [2, H]
            "cls/seq_relationship/output_bias": sd["sop_classifier.classifier.bias"],
        }
    )
    return out


def original_config(model):
    """albert_config.json as google-research writes it ("gelu" there is the tanh approximation)."""
    c = model.config
    fields = (
        "vocab_size",
        "embedding_size",
        "hidden_size",
        "num_hidden_layers",
        "num_hidden_groups",
        "num_attention_heads",
        "intermediate_size",
        "inner_group_num",
        "max_position_embeddings",
        "type_vocab_size",
        "initializer_range",
    )
    return {
        **{f: getattr(c, f) for f in fields},
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0,
        "attention_probs_dropout_prob": 0,
        "down_scale_factor": 1,
        "net_structure_type": 0,
        "gap_size": 0,
        "num_memory_blocks": 0,
    }


def write_tf1_checkpoint(variables, prefix):
    """A TF1 (name-based) checkpoint, as the original code's Saver wrote them."""
    with tf.Graph().as_default():
        for name, value in variables.items():
            tf.compat.v1.get_variable(name, initializer=value)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, prefix)
    assert {name for name, _ in tf.train.list_variables(prefix)} == set(variables)
    return prefix


def optimizer_slots(variables):
    return {
        "global_step": np.int64(1000),
        "bert/embeddings/word_embeddings/adam_m": np.zeros_like(variables["bert/embeddings/word_embeddings"]),
        "bert/embeddings/word_embeddings/adam_v": np.ones_like(variables["bert/embeddings/word_embeddings"]),
        "bert/pooler/dense/kernel/lamb_m": np.zeros_like(variables["bert/pooler/dense/kernel"]),
    }


def inputs(vocab, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(5, vocab, (2, 11))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    types = np.zeros_like(ids)
    types[:, 5:] = 1
    return ids, mask, types


def assert_same_outputs(config, params, model):
    ids, mask, types = inputs(model.config.vocab_size)
    ours = aj.AlbertForPreTraining(config).apply(
        {"params": params}, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)
    )
    with torch.no_grad():
        theirs = model(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types)
        )
    for field in ("prediction_logits", "sop_logits"):
        np.testing.assert_allclose(
            np.asarray(getattr(ours, field)), getattr(theirs, field).numpy(), atol=TOL, rtol=0, err_msg=field
        )


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cli_converts_an_original_checkpoint(tmp_path, name):
    model = hf_model(0, **CONFIGS[name])
    variables = original_variables(model)
    prefix = write_tf1_checkpoint({**variables, **optimizer_slots(variables)}, str(tmp_path / "tf" / "model.ckpt-7"))
    config_file = tmp_path / "albert_config.json"
    config_file.write_text(json.dumps(original_config(model)))
    assert (
        cli.main(
            [
                "from-tf",
                "--tf-checkpoint",
                prefix,
                "--albert-config",
                str(config_file),
                "--out",
                str(tmp_path / "ours"),
                "--hf-out",
                str(tmp_path / "hf"),
            ]
        )
        == 0
    )

    config, params = pretrained.from_pretrained(str(tmp_path / "ours"))
    assert config.hidden_act == "gelu_new" and config.extra["net_structure_type"] == 0
    assert_same_outputs(config, params, model)

    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["hidden_act"] == "gelu_new" and hf_config["architectures"] == ["AlbertForPreTraining"]
    reloaded, info = transformers.AlbertForPreTraining.from_pretrained(
        str(tmp_path / "hf"), output_loading_info=True, attn_implementation="eager"
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert_same_outputs(config, params, reloaded.eval())


def test_checkpoint_directory_heads_optional_and_spiece_model(tmp_path):
    """A directory with a `checkpoint` file works; a checkpoint without cls/ gives the bare model; the
    SentencePiece model is saved where the pipelines and transformers look for it."""
    model = hf_model(1, **CONFIGS["groups2-inner2"])
    variables = {k: v for k, v in original_variables(model).items() if not k.startswith("cls/")}
    write_tf1_checkpoint(variables, str(tmp_path / "tf" / "model.ckpt"))
    config_file = tmp_path / "albert_config.json"
    config_file.write_text(json.dumps(original_config(model)))
    docs = "\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    spm_model = train_spm(iter(docs[:30_000].splitlines()), 200, str(tmp_path / "30k-clean"))
    assert (
        cli.main(
            [
                "from-tf",
                "--tf-checkpoint",
                str(tmp_path / "tf"),
                "--albert-config",
                str(config_file),
                "--hf-out",
                str(tmp_path / "hf"),
                "--spiece-model",
                spm_model,
            ]
        )
        == 0
    )
    hf = transformers.AlbertModel.from_pretrained(str(tmp_path / "hf"), attn_implementation="eager").eval()
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["AlbertModel"]
    ids, mask, types = inputs(200)
    with torch.no_grad():
        expected = model.albert(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types)
        ).last_hidden_state.numpy()
        np.testing.assert_allclose(
            hf(
                input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types)
            ).last_hidden_state.numpy(),
            expected,
            atol=TOL,
            rtol=0,
        )
    assert AlbertTokenizer.from_pretrained(str(tmp_path / "hf")).vocab_size == 200
    features = aj.pipeline("feature-extraction", model=tmp_path / "hf")("Hello world.", return_tensors=True)
    assert features.shape[0] == 1 and features.shape[2] == 32


# -- bad checkpoints ----------------------------------------------------------------------------------------
def test_missing_checkpoint_prefix(tmp_path, capsys):
    config_file = tmp_path / "albert_config.json"
    config_file.write_text(json.dumps(original_config(hf_model(0, **CONFIGS["groups2-inner2"]))))
    with pytest.raises(convert.ConversionError, match="no TF checkpoint at .*model.ckpt-1"):
        convert.load_tf(str(tmp_path / "model.ckpt-1"), str(config_file))
    assert (
        cli.main(
            [
                "from-tf",
                "--tf-checkpoint",
                str(tmp_path / "nope"),
                "--albert-config",
                str(config_file),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 1
    )
    assert "no TF checkpoint at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["from-tf", "--tf-checkpoint", "x", "--albert-config", str(config_file)])


def test_missing_and_unexpected_variables_are_named(tmp_path):
    model = hf_model(0, **CONFIGS["groups2-inner2"])
    config = convert.tf_config(_write(tmp_path / "albert_config.json", original_config(model)))
    variables = original_variables(model)
    del variables["bert/encoder/transformer/group_1/inner_group_0/ffn_1/intermediate/dense/kernel"]
    del variables["cls/predictions/output_bias"]  # a head that is there must be complete
    variables["bert/encoder/transformer/group_2/inner_group_0/LayerNorm/gamma"] = np.ones(32, np.float32)
    variables["cls/squad/output_weights"] = np.ones((2, 32), np.float32)
    with pytest.raises(convert.ConversionError) as err:
        convert.tf_to_hf_state_dict({**variables, **optimizer_slots(variables)}, config)
    message = str(err.value)
    assert (
        "missing variables: bert/encoder/transformer/group_1/inner_group_0/ffn_1/intermediate/dense/kernel, "
        "cls/predictions/output_bias"
    ) in message
    assert (
        "unexpected variables: bert/encoder/transformer/group_2/inner_group_0/LayerNorm/gamma, cls/squad/output_weights"
    ) in message

    variables = original_variables(model)
    variables["bert/embeddings/word_embeddings"] = variables["bert/embeddings/word_embeddings"][:100]
    with pytest.raises(
        convert.ConversionError,
        match=r"word_embeddings.weight: checkpoint \(100, 16\), model "
        r"expects \(200, 16\)",
    ):
        convert.load_tf(
            write_tf1_checkpoint(variables, str(tmp_path / "tf" / "ckpt")), str(tmp_path / "albert_config.json")
        )


def test_unknown_activation(tmp_path):
    data = {**original_config(hf_model(0, **CONFIGS["groups2-inner2"])), "hidden_act": "linear"}
    with pytest.raises(ValueError, match="hidden_act"):
        convert.tf_config(_write(tmp_path / "albert_config.json", data))


def _write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


# -- layer -> group assignment ------------------------------------------------------------------------------
def test_group_check_matches_both_formulas_for_every_layer():
    """google-research/albert: `int(layer_idx / num_hidden_layers * num_hidden_groups)` (float);
    transformers / albert-jax: `layer * G // L`. The check names the first layer where they differ."""
    refused = []
    for layers in range(1, 65):
        for groups in range(1, layers + 1):
            differing = [i for i in range(layers) if int(i / layers * groups) != i * groups // layers]
            assert convert.tf_group_mismatch(layers, groups) == (differing[0] if differing else None)
            refused += [(layers, groups)] if differing else []
    assert (44, 22) in refused and (12, 1) not in refused and len(refused) == 18


def test_layouts_the_model_cannot_express_are_refused(tmp_path):
    base = original_config(hf_model(0, **CONFIGS["groups2-inner2"]))
    for layers in (12, 24):  # albert-{base,xxlarge} and albert-{large,xlarge}
        config = convert.tf_config(
            _write(tmp_path / "released.json", {**base, "num_hidden_layers": layers, "num_hidden_groups": 1})
        )
        assert (config.num_hidden_layers, config.num_hidden_groups) == (layers, 1)
    config_file = _write(tmp_path / "albert_config.json", {**base, "num_hidden_layers": 44, "num_hidden_groups": 22})
    message = (
        "num_hidden_layers=44 with num_hidden_groups=22 cannot be imported: the original code puts layer 30 "
        "in group int(30 / 44 * 22) = 14"
    )
    with pytest.raises(convert.ConversionError, match=r"transformers and albert-jax .* cannot represent") as err:
        convert.tf_config(config_file)
    assert message in str(err.value)
    assert (
        cli.main(
            [
                "from-tf",
                "--tf-checkpoint",
                str(tmp_path / "unused"),
                "--albert-config",
                config_file,
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 1
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_unreadable_or_missing_checkpoint_is_a_one_line_error(tmp_path):
    """Through `python -m albert_jax.convert`, so that TF's own start-up output on stderr counts too."""
    model = hf_model(0, **CONFIGS["groups2-inner2"])
    prefix = write_tf1_checkpoint(original_variables(model), str(tmp_path / "tf" / "model.ckpt"))
    data = tmp_path / "tf" / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    config_file = _write(tmp_path / "albert_config.json", original_config(model))
    for checkpoint, error in (
        (prefix, f"error: {prefix} is not a readable TF checkpoint"),
        (str(tmp_path / "nope"), "error: no TF checkpoint at"),
    ):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "albert_jax.convert",
                "from-tf",
                "--tf-checkpoint",
                checkpoint,
                "--albert-config",
                config_file,
                "--hf-out",
                str(tmp_path / "hf"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(error), result.stderr
    assert not (tmp_path / "hf").exists()
