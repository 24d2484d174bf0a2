"""Model structure: parameter counts (transformers and the paper), shared gradients, compile size, dtypes,
the fused attention path against the explicit one."""

import gc
import re
import types

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import albert_jax as aj
from albert_jax import convert, modeling


def hf_param_count(config: aj.AlbertConfig) -> int:
    hf = transformers.AlbertConfig(**convert.hf_config_dict(config))
    with torch.device("meta"):
        return sum(p.numel() for p in transformers.AlbertModel(hf).parameters())


@pytest.mark.parametrize(
    "preset,paper_millions",
    [
        ("albert-base-v2", 12),
        ("albert-large-v2", 18),
        ("albert-xlarge-v2", 59),
        ("albert-xxlarge-v2", 223),
        ("albert-base-v1", 12),
        ("bert-base-equivalent", 110),
    ],
)
def test_param_count_matches_transformers_and_paper(preset, paper_millions):
    config = aj.AlbertConfig.from_preset(preset)
    count = aj.count_params(config)
    assert count == hf_param_count(config)
    assert round(count / 1e6) == paper_millions


def block_sizes(e, h=768, i=3072, v=30000, positions=512, types=2):
    """Parameter counts of ALBERT-base's parts, from the layer shapes (independent of the model code)."""
    embeddings = (v + positions + types) * e + 2 * e + e * h + h  # tables, LayerNorm, E->H projection
    attention = 4 * (h * h + h) + 2 * h  # q, k, v, output + LayerNorm
    ffn = (h * i + i) + (i * h + h) + 2 * h  # two dense layers + LayerNorm
    pooler = h * h + h
    return embeddings, attention, ffn, pooler


@pytest.mark.parametrize("e,shared,not_shared", [(64, 10, 88), (128, 12, 90), (256, 16, 94), (768, 32, 110)])
def test_embedding_size_ablation_counts(e, shared, not_shared):
    """Paper, Table 3 (ALBERT-base): all-shared and not-shared parameter counts for E in {64,128,256,768}."""
    for sharing, millions in (("all", shared), ("none", not_shared)):
        config = aj.AlbertConfig.from_preset("albert-base-v2", embedding_size=e, sharing=sharing)
        embeddings, attention, ffn, pooler = block_sizes(e)
        sets = 1 if sharing == "all" else 12
        assert aj.count_params(config) == embeddings + sets * (attention + ffn) + pooler
        assert round(aj.count_params(config) / 1e6) == millions


@pytest.mark.parametrize("e,attention_shared,ffn_shared", [(768, 83, 57), (128, 64, 38)])
def test_partial_sharing_counts(e, attention_shared, ffn_shared):
    """Paper, Table 4: shared-attention and shared-FFN ALBERT-base. Counts follow from the block sizes;
    the paper's rounding is matched within 1M (it does not say how the pooler/embeddings were counted)."""
    embeddings, attention, ffn, pooler = block_sizes(e)
    expected = {
        "attention": embeddings + attention + 12 * ffn + pooler,
        "ffn": embeddings + 12 * attention + ffn + pooler,
    }
    for sharing, millions in (("attention", attention_shared), ("ffn", ffn_shared)):
        count = aj.count_params(aj.AlbertConfig.from_preset("albert-base-v2", embedding_size=e, sharing=sharing))
        assert count == expected[sharing]
        assert abs(count / 1e6 - millions) <= 1.0


def tiny(**overrides):
    base = dict(
        vocab_size=60,
        embedding_size=8,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=16,
    )
    return aj.AlbertConfig(**{**base, **overrides})


def mlm_loss(model, params, ids, mask):
    logits = model.apply({"params": params}, ids, mask).logits
    return jnp.mean(jax.nn.log_softmax(logits)[..., 7])


def test_shared_gradient_is_sum_over_layers():
    """The shared layer's gradient equals the sum of the per-layer gradients of an unrolled copy
    (sharing='none' with the shared weights tiled L times)."""
    shared_config = tiny(sharing="all")
    model = aj.AlbertForMaskedLM(shared_config)
    params = aj.init_params(model, jax.random.PRNGKey(0))
    ids = jax.random.randint(jax.random.PRNGKey(1), (2, 6), 0, 60)
    mask = jnp.ones_like(ids).at[1, 4:].set(0)
    grads = jax.grad(lambda p: mlm_loss(model, p, ids, mask))(params)

    unrolled = aj.AlbertForMaskedLM(tiny(sharing="none"))
    layer_path = ("albert", "encoder", "albert_layer_groups")

    def tile(x):
        return jnp.tile(x, (3,) + (1,) * (x.ndim - 1))

    unrolled_params = jax.tree_util.tree_map(lambda x: x, params)
    unrolled_params["albert"]["encoder"]["albert_layer_groups"] = jax.tree_util.tree_map(
        tile, params["albert"]["encoder"]["albert_layer_groups"]
    )
    unrolled_grads = jax.grad(lambda p: mlm_loss(unrolled, p, ids, mask))(unrolled_params)

    shared = grads[layer_path[0]][layer_path[1]][layer_path[2]]
    per_layer = unrolled_grads[layer_path[0]][layer_path[1]][layer_path[2]]
    for g_shared, g_layers in zip(jax.tree_util.tree_leaves(shared), jax.tree_util.tree_leaves(per_layer)):
        assert g_layers.shape[0] == 3 and g_shared.shape[0] == 1
        np.testing.assert_allclose(g_shared[0], g_layers.sum(0), atol=1e-6, rtol=1e-5)
        assert float(jnp.abs(g_layers[0] - g_layers[1]).max()) > 0  # the layers really differ


def test_shared_gradient_matches_torch(tmp_path):
    """Same check against PyTorch autograd of transformers' shared-layer model."""
    config = tiny(num_hidden_groups=1)
    model = aj.AlbertForMaskedLM(config)
    params = aj.init_params(model, jax.random.PRNGKey(0))
    convert.save_hf(config, params, str(tmp_path))
    hf_model = transformers.AlbertForMaskedLM.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    ids = np.random.RandomState(0).randint(0, 60, (2, 6))
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    logits = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    torch.log_softmax(logits, -1)[..., 7].mean().backward()
    grads = jax.grad(lambda p: mlm_loss(model, p, jnp.asarray(ids), jnp.asarray(mask)))(params)
    ours = grads["albert"]["encoder"]["albert_layer_groups"]["ffn"]["kernel"][0, 0]
    theirs = hf_model.albert.encoder.albert_layer_groups[0].albert_layers[0].ffn.weight.grad.numpy().T
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("sharing", ["all", "none", "attention"])
def test_compiled_size_does_not_grow_with_depth(sharing):
    """One layer body is scanned: the lowered HLO of 24 layers is the 2-layer HLO plus a small constant."""

    def hlo_size(layers):
        config = tiny(num_hidden_layers=layers, sharing=sharing)
        model = aj.AlbertForPreTraining(config)
        params = jax.eval_shape(lambda: aj.init_params(model, jax.random.PRNGKey(0)))
        ids = jax.ShapeDtypeStruct((2, 8), jnp.int32)

        def loss(p, x):
            return model.apply({"params": p}, x).prediction_logits.sum()

        return len(jax.jit(jax.grad(loss)).lower(params, ids).as_text())

    small, large = hlo_size(2), hlo_size(24)
    assert large <= small + 2000, (small, large)


def test_bfloat16_compute_close_to_float32():
    """dtype=bfloat16 with float32 parameters: hidden states within bfloat16 precision of float32, logits float32."""
    config = aj.AlbertConfig.from_preset("albert-tiny", vocab_size=100, num_hidden_layers=2)
    model32, model16 = aj.AlbertForPreTraining(config), aj.AlbertForPreTraining(config.replace(dtype="bfloat16"))
    params = aj.init_params(model32, jax.random.PRNGKey(0))
    ids = jax.random.randint(jax.random.PRNGKey(1), (2, 10), 0, 100)
    mask = jnp.ones_like(ids).at[1, 6:].set(0)
    out32, out16 = (m.apply({"params": params}, ids, mask, output_hidden_states=True) for m in (model32, model16))
    for h32, h16 in zip(out32.hidden_states, out16.hidden_states):
        assert h16.dtype == jnp.bfloat16 and h32.dtype == jnp.float32
        assert float(jnp.linalg.norm(h16.astype(jnp.float32) - h32) / jnp.linalg.norm(h32)) < 2e-2
    for name in ("prediction_logits", "sop_logits"):
        logits32, logits16 = getattr(out32, name), getattr(out16, name)
        assert logits16.dtype == jnp.float32
        assert float(jnp.linalg.norm(logits16 - logits32) / jnp.linalg.norm(logits32)) < 2e-2


def test_bfloat16_compute_normalises_in_float32():
    """Every reduction of the bfloat16 forward pass (LayerNorm statistics, softmax max and sum) is float32."""
    model = aj.AlbertForPreTraining(aj.AlbertConfig.from_preset("albert-tiny", vocab_size=100, dtype="bfloat16"))
    params = aj.init_params(model, jax.random.PRNGKey(0))
    jaxpr = str(jax.make_jaxpr(lambda p: model.apply({"params": p}, jnp.ones((2, 10), jnp.int32)))(params))
    reductions = re.findall(r"\w+:(\w+)\[[^\]]*\] = (reduce_\w+)", jaxpr)
    assert {"reduce_max", "reduce_sum"} <= {op for _, op in reductions}
    assert {dtype for dtype, _ in reductions} == {"f32"}


@pytest.mark.parametrize(
    "head",
    [
        aj.AlbertForSequenceClassification,
        aj.AlbertForTokenClassification,
        aj.AlbertForQuestionAnswering,
        aj.AlbertForMultipleChoice,
    ],
)
def test_bfloat16_compute_gives_float32_logits(head):
    model = head(aj.AlbertConfig.from_preset("albert-tiny", vocab_size=100, num_hidden_layers=1, dtype="bfloat16"))
    ids = jnp.ones((2, 2, 6) if head is aj.AlbertForMultipleChoice else (2, 6), jnp.int32)
    out = model.apply({"params": aj.init_params(model, jax.random.PRNGKey(0))}, ids)
    for logits in (out.start_logits, out.end_logits) if head is aj.AlbertForQuestionAnswering else (out.logits,):
        assert logits.dtype == jnp.float32


def test_bfloat16_compute_trains_float32_params():
    """Mixed precision: parameters and their gradients stay float32 (finite, close in direction to float32's)."""
    config = aj.AlbertConfig.from_preset("albert-tiny", vocab_size=100, num_hidden_layers=2)
    ids = jax.random.randint(jax.random.PRNGKey(1), (2, 10), 0, 100)
    mask = jnp.ones_like(ids).at[1, 6:].set(0)
    model16 = aj.AlbertForPreTraining(config.replace(dtype="bfloat16"))
    params = aj.init_params(model16, jax.random.PRNGKey(0))
    assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float32")}

    def flat_grads(model):
        def loss(p):
            out = model.apply({"params": p}, ids, mask)
            mlm = jnp.mean(jax.nn.log_softmax(out.prediction_logits)[..., 7])
            return -mlm - jax.nn.log_softmax(out.sop_logits)[0, 1]

        leaves = jax.tree_util.tree_leaves(jax.grad(loss)(params))
        assert {g.dtype for g in leaves} == {jnp.dtype("float32")}
        return jnp.concatenate([g.ravel() for g in leaves])

    grads16, grads32 = flat_grads(model16), flat_grads(aj.AlbertForPreTraining(config))
    assert bool(jnp.all(jnp.isfinite(grads16)))
    assert float(grads16 @ grads32 / (jnp.linalg.norm(grads16) * jnp.linalg.norm(grads32))) > 0.99


def test_bfloat16_params():
    config = aj.AlbertConfig.from_preset(
        "albert-tiny", vocab_size=100, num_hidden_layers=2, param_dtype="bfloat16", dtype="bfloat16"
    )
    params = aj.init_params(aj.AlbertForPreTraining(config), jax.random.PRNGKey(0))
    assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype("bfloat16")}


def test_dropout_needs_rng_and_changes_outputs():
    config = tiny(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
    model = aj.AlbertForSequenceClassification(config)
    params = aj.init_params(model, jax.random.PRNGKey(0))
    ids = jnp.ones((2, 5), jnp.int32)
    eval_out = model.apply({"params": params}, ids).logits
    train = [
        model.apply({"params": params}, ids, deterministic=False, rngs={"dropout": jax.random.PRNGKey(s)}).logits
        for s in (1, 2)
    ]
    assert not np.allclose(train[0], train[1]) and not np.allclose(train[0], eval_out)
    np.testing.assert_array_equal(eval_out, model.apply({"params": params}, ids).logits)


def test_masked_positions_gather_matches_full_logits():
    config = tiny()
    model = aj.AlbertForPreTraining(config)
    params = aj.init_params(model, jax.random.PRNGKey(0))
    ids = jax.random.randint(jax.random.PRNGKey(1), (2, 8), 0, 60)
    positions = jnp.array([[1, 5], [0, 7]])
    full = model.apply({"params": params}, ids).prediction_logits
    gathered = model.apply({"params": params}, ids, masked_lm_positions=positions).prediction_logits
    np.testing.assert_allclose(gathered, np.take_along_axis(np.asarray(full), positions[..., None], 1), atol=1e-6)


def test_count_params_allocates_nothing():
    """xxlarge has 223M parameters: counting must come from shapes alone (jax.eval_shape)."""
    gc.collect()  # arrays of earlier tests in this worker, which the collector may free during the call
    before = {id(a) for a in jax.live_arrays()}
    aj.count_params(aj.AlbertConfig.from_preset("albert-xxlarge-v2"))
    assert [a.shape for a in jax.live_arrays() if id(a) not in before] == []


@pytest.mark.parametrize("lead", [(), (5,), (2, 3), (2, 3, 4)])
@pytest.mark.parametrize("rhs_axis", [0, 1])
def test_matmul_equals_dot_general_and_its_gradients(lead, rhs_axis):
    """The 2-D matmul every dense layer uses computes `dot_general`'s value and gradients for any leading axes."""
    x = jax.random.normal(jax.random.PRNGKey(0), lead + (6,))
    w = jax.random.normal(jax.random.PRNGKey(1), (6, 4) if rhs_axis == 0 else (4, 6))
    dims = (((x.ndim - 1,), (rhs_axis,)), ((), ()))

    def ours(x, w):
        return jnp.sum(jnp.sin(modeling._matmul(x, w, dims)))

    def reference(x, w):
        return jnp.sum(jnp.sin(jax.lax.dot_general(x, w, dims)))

    np.testing.assert_allclose(modeling._matmul(x, w, dims), jax.lax.dot_general(x, w, dims), rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.grad(ours, (0, 1))(x, w), jax.grad(reference, (0, 1))(x, w)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_matmul_refuses_what_it_does_not_flatten():
    x, w = jnp.ones((2, 3, 4)), jnp.ones((4, 5))
    with pytest.raises(ValueError, match="last axis with a 2-D rhs"):
        modeling._matmul(x, w, (((1,), (0,)), ((), ())))
    with pytest.raises(ValueError, match="last axis with a 2-D rhs"):
        modeling._matmul(x, jnp.ones((2, 4, 5)), (((2,), (1,)), ((0,), (0,))))


@pytest.mark.parametrize("policy", ["none", "nothing_saveable", "dots_saveable"])
def test_remat_policy_changes_memory_not_results(policy):
    """Gradients are the same whatever the scanned layer keeps for the backward pass."""
    default = tiny(hidden_dropout_prob=0.1)
    ids = jax.random.randint(jax.random.PRNGKey(1), (2, 6), 0, 60)
    mask = jnp.ones_like(ids)

    def grads(config):
        model = aj.AlbertForMaskedLM(config)
        params = aj.init_params(model, jax.random.PRNGKey(0))

        def loss(p):
            out = model.apply({"params": p}, ids, mask, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)})
            return jnp.mean(out.logits**2)

        return jax.grad(loss)(params)

    for a, b in zip(
        jax.tree_util.tree_leaves(grads(default)),
        jax.tree_util.tree_leaves(grads(default.replace(remat_policy=policy))),
    ):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


@pytest.fixture
def fused_attention_calls(monkeypatch):
    """Routes attention through `jax.nn.dot_product_attention` with its XLA implementation (the cuDNN one
    needs a GPU) and records the calls."""
    calls = []
    fused = jax.nn.dot_product_attention
    monkeypatch.setattr(modeling, "_fused_attention", lambda dtype, head_dim, length: "xla")
    monkeypatch.setattr(jax.nn, "dot_product_attention", lambda *a, **k: calls.append(k) or fused(*a, **k))
    return calls


def padded_batch():
    ids = jax.random.randint(jax.random.PRNGKey(1), (3, 10), 0, 60)
    return ids, jnp.ones_like(ids).at[1, 6:].set(0).at[2, 2:].set(0)


@pytest.mark.parametrize("heads,dtype,tolerance", [(2, "float32", 1e-5), (4, "float32", 1e-5), (2, "bfloat16", 1e-2)])
def test_fused_attention_matches_explicit_path(heads, dtype, tolerance, fused_attention_calls):
    """`jax.nn.dot_product_attention` (taken where `_fused_attention` allows it, unless the probabilities are
    returned) gives the outputs and gradients of the explicit einsum-softmax-einsum path."""
    model = aj.AlbertForMaskedLM(tiny(num_attention_heads=heads, dtype=dtype))
    params = aj.init_params(model, jax.random.PRNGKey(0))
    ids, mask = padded_batch()

    def loss(p, explicit):
        logits = model.apply({"params": p}, ids, mask, output_attentions=explicit).logits
        return jnp.mean(jax.nn.log_softmax(logits)[..., 7]), logits

    fused_attention_calls.clear()
    (_, fused_logits), fused_grads = jax.value_and_grad(loss, has_aux=True)(params, False)
    assert fused_attention_calls and all(k["implementation"] == "xla" for k in fused_attention_calls)
    fused_attention_calls.clear()
    (_, explicit_logits), explicit_grads = jax.value_and_grad(loss, has_aux=True)(params, True)
    assert not fused_attention_calls
    np.testing.assert_allclose(fused_logits, explicit_logits, atol=tolerance / 10, rtol=tolerance / 10)
    leaves = jax.tree_util.tree_leaves(explicit_grads)
    rounding = tolerance * 1e-4 * max(float(jnp.abs(b).max()) for b in leaves)
    for a, b in zip(jax.tree_util.tree_leaves(fused_grads), leaves):
        # tolerance relative to each leaf's scale; the key bias's gradient is zero up to rounding, which is
        # compared with the largest gradient's scale
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=max(tolerance * float(jnp.abs(b).max()), rounding))


def test_attention_dropout_in_training_takes_explicit_path(fused_attention_calls):
    model = aj.AlbertModel(tiny(attention_probs_dropout_prob=0.1))
    params = aj.init_params(model, jax.random.PRNGKey(0))
    ids, mask = padded_batch()
    fused_attention_calls.clear()
    train = model.apply({"params": params}, ids, mask, deterministic=False, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not fused_attention_calls and bool(jnp.all(jnp.isfinite(train.last_hidden_state)))
    model.apply({"params": params}, ids, mask)
    assert fused_attention_calls


def test_fused_attention_only_where_cudnn_applies(monkeypatch):
    """cuDNN flash attention on a CUDA GPU for half precision, head size a multiple of 8 up to 128 and an
    even length; the explicit path (None) everywhere else, this CPU included."""
    choose = modeling._fused_attention
    assert choose(jnp.bfloat16, 64, 128) is None and choose(jnp.float32, 64, 128) is None  # CPU
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax.extend.backend, "get_backend", lambda: types.SimpleNamespace(platform_version="cuda 12"))
    assert choose(jnp.bfloat16, 64, 128) == choose(jnp.float16, 128, 512) == "cudnn"
    assert choose(jnp.float32, 64, 128) is None
    assert choose(jnp.bfloat16, 60, 128) is None and choose(jnp.bfloat16, 256, 128) is None
    assert choose(jnp.bfloat16, 64, 127) is None
    monkeypatch.setattr(jax.extend.backend, "get_backend", lambda: types.SimpleNamespace(platform_version="rocm"))
    assert choose(jnp.bfloat16, 64, 128) is None
