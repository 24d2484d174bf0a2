"""albert_jax.flops: the model FLOP count against a count by hand and XLA's own, and the accelerator table against
the device kinds libtpu reports."""

import importlib.util

import jax
import jax.numpy as jnp
import optax
import pytest

import albert_jax as aj
from albert_jax import flops

# One layer: XLA's cost analysis counts the body of the scan (a while loop) once, whatever its trip count.
TINY = aj.AlbertConfig.from_preset("albert-tiny").replace(
    num_hidden_layers=1,
    vocab_size=1024,
    embedding_size=128,
    hidden_size=256,
    num_attention_heads=4,
    intermediate_size=1024,
    max_position_embeddings=128,
    num_labels=3,
)
B, T, P, C = 2, 128, 20, 4


def xla_flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    assert cost is not None
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


def _ce(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def test_model_flops_equals_a_count_by_hand_for_albert_base_pretraining():
    config = aj.AlbertConfig.from_preset("albert-base-v2")
    assert (config.vocab_size, config.embedding_size, config.hidden_size, config.intermediate_size) == (
        30000,
        128,
        768,
        3072,
    )
    assert (config.num_hidden_layers, config.inner_group_num, config.num_labels) == (12, 1, 2)
    # batch 2 x seq 8 = 16 tokens, MLM at 3 positions of each sequence = 6 predictions
    embedding_projection = 2 * 16 * 128 * 768
    layer = 4 * 2 * 16 * 768 * 768 + 2 * 2 * 2 * 8 * 8 * 768 + 2 * 2 * 16 * 768 * 3072
    pooler = 2 * 2 * 768 * 768
    mlm = 2 * 6 * 768 * 128 + 2 * 6 * 128 * 30000
    sop = 2 * 2 * 768 * 2
    forward = embedding_projection + 12 * layer + pooler + mlm + sop
    assert flops.model_flops(config, 2, 8, "pretraining", positions=3) == forward
    assert flops.model_flops(config, 2, 8, "pretraining", positions=3, training=True) == 3 * forward


def test_model_flops_equals_a_count_by_hand_for_a_tiny_classifier():
    # 2 layers of 2 inner layers: 4 layer applications; batch 3 x seq 5 = 15 tokens, 3 labels
    config = aj.AlbertConfig(
        vocab_size=50,
        embedding_size=4,
        hidden_size=8,
        num_hidden_layers=2,
        inner_group_num=2,
        num_attention_heads=2,
        intermediate_size=16,
        num_labels=3,
    )
    embedding_projection = 2 * 15 * 4 * 8
    layer = 4 * 2 * 15 * 8 * 8 + 2 * 2 * 3 * 5 * 5 * 8 + 2 * 2 * 15 * 8 * 16
    pooler = 2 * 3 * 8 * 8
    classifier = 2 * 3 * 8 * 3
    assert flops.model_flops(config, 3, 5, "classification") == embedding_projection + 4 * layer + pooler + classifier
    # multiple choice: 3 questions x 2 choices are 6 rows of 5 tokens, one score each
    embedding_projection = 2 * 30 * 4 * 8
    layer = 4 * 2 * 30 * 8 * 8 + 2 * 2 * 6 * 5 * 5 * 8 + 2 * 2 * 30 * 8 * 16
    pooler = 2 * 6 * 8 * 8
    classifier = 2 * 6 * 8 * 1
    expected = embedding_projection + 4 * layer + pooler + classifier
    assert flops.model_flops(config, 3, 5, "multiple_choice", choices=2) == expected


def test_model_flops_grows_with_depth_and_sequence_as_the_formula_says():
    one, two = (flops.model_flops(TINY.replace(num_hidden_layers=n), B, T, "backbone") for n in (1, 2))
    h, i = TINY.hidden_size, TINY.intermediate_size
    assert two - one == 8 * B * T * h * h + 4 * B * T * T * h + 4 * B * T * h * i
    assert flops.model_flops(TINY, B, T, "qa", training=True) == 3 * flops.model_flops(TINY, B, T, "qa")


def test_model_flops_refuses_what_it_cannot_count():
    with pytest.raises(ValueError, match="unknown head"):
        flops.model_flops(TINY, B, T, "ner")
    with pytest.raises(ValueError, match="positions"):
        flops.model_flops(TINY, B, T, "qa", positions=P)
    with pytest.raises(ValueError, match="choices"):
        flops.model_flops(TINY, B, T, "classification", choices=C)


def test_model_flops_matches_xla_cost_analysis():
    ids = jnp.ones((B, T), jnp.int32)
    positions = jnp.tile(jnp.arange(P), (B, 1))
    models = {
        head: cls(TINY)
        for head, cls in {
            "backbone": aj.AlbertModel,
            "pretraining": aj.AlbertForPreTraining,
            "masked_lm": aj.AlbertForMaskedLM,
            "classification": aj.AlbertForSequenceClassification,
            "token_classification": aj.AlbertForTokenClassification,
            "qa": aj.AlbertForQuestionAnswering,
            "multiple_choice": aj.AlbertForMultipleChoice,
        }.items()
    }
    assert set(models) == set(flops.HEADS)
    params = {head: aj.init_params(model, jax.random.PRNGKey(0)) for head, model in models.items()}

    def apply(head, **kwargs):
        return lambda p, x: models[head].apply({"params": p}, x, **kwargs)

    def pretraining_loss(p, x):
        out = apply("pretraining")(p, x)
        return _ce(out.prediction_logits, x) + _ce(out.sop_logits, x[:, 0] % 2)

    def classification_loss(p, x):
        return _ce(apply("classification")(p, x).logits, x[:, 0] % TINY.num_labels)

    choices = jnp.ones((B, C, T), jnp.int32)
    cases = [  # (what, the head whose parameters it takes, function of (params, input ids), its input ids, FLOPs)
        ("backbone", "backbone", apply("backbone"), ids, flops.model_flops(TINY, B, T, "backbone")),
        ("pretraining", "pretraining", apply("pretraining"), ids, flops.model_flops(TINY, B, T, "pretraining")),
        (
            "pretraining at masked positions",
            "pretraining",
            apply("pretraining", masked_lm_positions=positions),
            ids,
            flops.model_flops(TINY, B, T, "pretraining", positions=P),
        ),
        ("masked_lm", "masked_lm", apply("masked_lm"), ids, flops.model_flops(TINY, B, T, "masked_lm")),
        (
            "classification",
            "classification",
            apply("classification"),
            ids,
            flops.model_flops(TINY, B, T, "classification"),
        ),
        (
            "token_classification",
            "token_classification",
            apply("token_classification"),
            ids,
            flops.model_flops(TINY, B, T, "token_classification"),
        ),
        ("qa", "qa", apply("qa"), ids, flops.model_flops(TINY, B, T, "qa")),
        (
            "multiple_choice",
            "multiple_choice",
            apply("multiple_choice"),
            choices,
            flops.model_flops(TINY, B, T, "multiple_choice", choices=C),
        ),
        (
            "pretraining gradient",
            "pretraining",
            jax.grad(pretraining_loss),
            ids,
            flops.model_flops(TINY, B, T, "pretraining", training=True),
        ),
        (
            "classification gradient",
            "classification",
            jax.grad(classification_loss),
            ids,
            flops.model_flops(TINY, B, T, "classification", training=True),
        ),
    ]
    for what, head, fn, x, analytic in cases:
        ratio = xla_flops(fn, params[head], x) / analytic
        # XLA also counts element-wise work (GELU, softmax, LayerNorm, biases, the loss), a few % here
        assert 1.0 <= ratio < 1.04, f"{what}: XLA counts {ratio:.4f}x the analytic FLOPs"


# ---------------------------------------------------------------------------------------------------------
# Accelerators
# ---------------------------------------------------------------------------------------------------------
def test_every_accelerator_is_complete_and_found_by_its_device_kind():
    assert len({a.device_kind for a in flops.ACCELERATORS}) == len({a.generation for a in flops.ACCELERATORS})
    for a in flops.ACCELERATORS:
        assert a.hbm_bytes > 0 and a.peak_flops > 0 and a.cores_per_chip >= 1 and a.devices_per_chip >= 1, a
        assert a.cores_per_chip % a.devices_per_chip == 0, a  # a device is one core or a megacore of several
        assert a.hbm_bytes * a.devices_per_chip == a.chip_hbm_bytes, a
        assert flops.accelerator(a.device_kind) is a
    v4 = flops.accelerator("TPU v4")
    assert v4 is not None and v4.generation == "v4" and v4.peak_flops == 275e12
    v3 = flops.accelerator("TPU v3")
    assert v3 is not None and v3.peak_flops == 123e12 / 2 and v3.hbm_bytes == 16 * 2**30  # per TensorCore
    assert flops.accelerator("TPU v7") is None and flops.accelerator("cpu") is None
    assert flops.accelerator(jax.devices()[0].device_kind) is None  # this suite runs on CPU


TPUS = [a for a in flops.ACCELERATORS if a.chip_config is not None]


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed")
@pytest.mark.parametrize("chip", TPUS, ids=[a.generation for a in TPUS])
def test_device_kinds_are_the_ones_libtpu_reports(chip, monkeypatch):
    """A deviceless one-chip topology of each generation (what the planner compiles for): its devices carry the
    table's device_kind, and there are devices_per_chip of them."""
    from jax.experimental import topologies

    # libtpu takes /tmp/libtpu_lockfile, one process per machine, unless told otherwise: the suite runs several
    monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

    devices = topologies.get_topology_desc(
        topology_name=f"{chip.generation}:1x1x1",
        platform="tpu",
        chip_config_name=chip.chip_config,
        chips_per_host_bounds=(1, 1, 1),
    ).devices
    assert [d.device_kind for d in devices] == [chip.device_kind] * chip.devices_per_chip


def test_xla_matmul_peak_times_a_matmul_on_this_machine():
    peak = flops.xla_matmul_peak("float32", repeats=1, size=64)
    assert peak["flops_per_s"] > 0 and peak["seconds"] <= peak["median_seconds"] and peak["size"] == 64
    assert peak["device"] == jax.devices()[0].device_kind and peak["dtype"] == "float32"
