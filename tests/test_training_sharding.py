"""Shardings of a pretraining step over 4 CPU devices: the model's activation constraints (active under
`sharding.constrained`) make `tensor` Megatron-style (all-reduces of the attention and FFN outputs inside the
scanned layer) and `fsdp` gather parameters for batch-sharded activations; the batch sharding comes from the rules;
the numbers equal one device's; outside the context the constraints are no-ops."""

import contextlib
import functools
import re
from collections import Counter

import flax.linen as nn
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen.spmd import logical_to_mesh_axes
from jax.sharding import PartitionSpec

from albert_jax import modeling
from albert_jax.config import AlbertConfig
from albert_jax.training import sharding

TINY = AlbertConfig.from_preset(
    "albert-tiny",
    vocab_size=128,
    embedding_size=32,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=32,
)
B, T, P = 8, 16, 4
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
WHILE = r" while\(.*?body=%([\w.\-]+).*?op_name=\"([^\"]*)\""  # a while loop's (body computation, op_name)


def make_batch(batch_size=B, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    ints = functools.partial(rng.integers, dtype=np.int32)
    return dict(
        input_ids=ints(0, TINY.vocab_size, (batch_size, T)),
        attention_mask=(np.arange(T) < ints(T // 2, T + 1, (batch_size, 1))).astype(np.int32),
        token_type_ids=(np.arange(T) >= T // 2).astype(np.int32)[None].repeat(batch_size, 0),
        masked_lm_positions=ints(0, T, (batch_size, P)),
        masked_lm_ids=ints(0, TINY.vocab_size, (batch_size, P)),
        sentence_order_label=ints(0, 2, (batch_size,)),
    )


def loss_and_grads(model, params, batch):
    """(MLM + SOP cross-entropy, its gradient): the shape of a pretraining step."""

    def loss_fn(params):
        out = model.apply(
            {"params": params},
            batch["input_ids"],
            batch["attention_mask"],
            batch["token_type_ids"],
            masked_lm_positions=batch["masked_lm_positions"],
        )
        mlm = jax.nn.log_softmax(out.prediction_logits)
        sop = jax.nn.log_softmax(out.sop_logits)
        return (
            -jnp.take_along_axis(mlm, batch["masked_lm_ids"][..., None], -1).mean()
            - jnp.take_along_axis(sop, batch["sentence_order_label"][:, None], -1).mean()
        )

    return jax.value_and_grad(loss_fn)(params)


def jit_step(config: AlbertConfig, mesh_shape: dict, constrain: bool = True):
    """The step jitted as the loop does: parameter shardings from their logical axes, the batch sharding from the
    rules, the activation constraints on (`sharding.constrained`) or off."""
    model = modeling.AlbertForPreTraining(config)
    mesh = sharding.create_mesh(mesh_shape)
    params = sharding.param_shardings(modeling.abstract_params(model), mesh)
    step = functools.partial(loss_and_grads, model)
    return jax.jit(
        sharding.constrained(step, mesh) if constrain else step,
        in_shardings=(params, sharding.batch_sharding(mesh)),
        out_shardings=(sharding.replicated(mesh), params),
    )


@functools.cache
def compiled(mesh_items: tuple, constrain: bool = True, sharing: str = "all"):
    config = TINY.replace(sharing=sharing)
    shapes = nn.meta.unbox(modeling.abstract_params(modeling.AlbertForPreTraining(config)))
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in make_batch().items()}
    return jit_step(config, dict(mesh_items), constrain).lower(shapes, batch).compile()


def computations(hlo: str) -> dict[str, str]:
    """Optimized HLO text -> {computation name: its text} (computations are separated by blank lines)."""
    blocks = {}
    for block in hlo.split("\n\n"):
        header = re.match(r"(?:ENTRY )?%([\w.\-]+) ", block.strip())
        if header:
            blocks[header[1]] = block
    return blocks


def count(text: str) -> Counter:
    return Counter(re.findall(rf" ({'|'.join(COLLECTIVES)})(?:-start)?\(", text))


def loop_collectives(executable) -> dict[str, Counter]:
    """Collectives inside the encoder's scanned layer: {'forward': Counter, 'backward': Counter}."""
    hlo = executable.as_text()
    blocks = computations(hlo)
    loops = {}
    for body, op_name in re.findall(WHILE, hlo):
        assert op_name.endswith("/encoder/while"), op_name
        loops["backward" if "transpose(" in op_name else "forward"] = count(blocks[body])
    assert set(loops) == {"forward", "backward"}
    return loops


def forward_all_reduce_shapes(executable) -> list[str]:
    hlo = executable.as_text()
    (body,) = [body for body, op_name in re.findall(WHILE, hlo) if "transpose(" not in op_name]
    return re.findall(r"= (\S+) all-reduce(?:-start)?\(", computations(hlo)[body])


def activation_constraints(jaxpr) -> list[tuple[tuple, PartitionSpec]]:
    """(shape, spec) of every sharding constraint in a jaxpr and the jaxprs inside it (scan, remat, jit)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "sharding_constraint":
            found.append((eqn.invars[0].aval.shape, eqn.params["sharding"].spec))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += activation_constraints(sub)
    return found


def argument_bytes(executable) -> int:
    return executable.memory_analysis().argument_size_in_bytes


# ---------------------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------------------
def test_rules_map_activations_and_parameters_differently():
    """flax gives a mesh axis to the first dimension (in rule order) that claims it: 'batch' takes fsdp from an
    activation's 'hidden', a kernel's 'hidden' keeps it."""
    rules = sharding.DEFAULT_RULES
    resolve = logical_to_mesh_axes  # flax's resolution, what the model's constraints use
    assert resolve(("batch", "length", "hidden"), rules) == PartitionSpec(("data", "fsdp"), None, None)
    assert resolve(("batch", "length", "heads", None), rules) == PartitionSpec(("data", "fsdp"), None, "tensor", None)
    assert resolve(("batch", "length", "mlp"), rules) == PartitionSpec(("data", "fsdp"), None, "tensor")
    assert resolve(("hidden", "heads"), rules) == PartitionSpec("fsdp", "tensor")
    assert resolve(("mlp", "hidden"), rules) == PartitionSpec("tensor", "fsdp")


def test_batch_sharding_comes_from_the_rules():
    mesh = sharding.create_mesh({"data": 2, "fsdp": 2})
    assert sharding.batch_sharding(mesh).spec == PartitionSpec(("data", "fsdp"))
    rules = (("batch", "data"),) + sharding.DEFAULT_RULES[1:]
    assert sharding.batch_sharding(mesh, rules).spec == PartitionSpec("data")
    arrays = sharding.global_batch({"input_ids": np.zeros((4, T), np.int32)}, mesh, rules)
    assert arrays["input_ids"].sharding.spec == PartitionSpec("data")
    assert arrays["input_ids"].addressable_shards[0].data.shape == (2, T)


# ---------------------------------------------------------------------------------------------------------
# Compiled programs
# ---------------------------------------------------------------------------------------------------------
def test_tensor_axis_all_reduces_inside_the_layer_and_shards_the_kernels():
    data = compiled((("data", 4),))
    tensor = compiled((("data", 2), ("tensor", 2)))
    data_loops, tensor_loops = loop_collectives(data), loop_collectives(tensor)
    assert data_loops["forward"]["all-reduce"] == 0  # data parallel: the gradients' all-reduce only, backward
    # Megatron: attention output and FFN output are reduced from the heads' / intermediate's partial sums, once
    # each per layer, as the [B/data * T, H] hidden state (`_matmul` flattens it); backward likewise the inputs'
    # gradients, besides the data-parallel reduction of the parameters' gradients.
    assert forward_all_reduce_shapes(tensor) == [f"f32[{B // 2 * T},{TINY.hidden_size}]{{1,0}}"] * 2
    assert tensor_loops["backward"]["all-reduce"] > data_loops["backward"]["all-reduce"]
    assert not any(tensor_loops[k][c] for k in tensor_loops for c in COLLECTIVES if c != "all-reduce")
    assert argument_bytes(tensor) < 0.7 * argument_bytes(data)


def test_tensor_with_fsdp_is_megatron_only_with_the_constraints():
    """With both `fsdp` and `tensor` the parameter shardings alone let XLA split the hidden state over fsdp and
    reduce it in pieces; the constraints keep it batch-sharded and leave the two Megatron all-reduces."""
    mesh = (("fsdp", 2), ("tensor", 2))
    on, off = loop_collectives(compiled(mesh)), loop_collectives(compiled(mesh, constrain=False))
    assert forward_all_reduce_shapes(compiled(mesh)) == [f"f32[{B // 2 * T},{TINY.hidden_size}]{{1,0}}"] * 2
    assert on["forward"] == Counter({"all-reduce": 2})  # the parameters are gathered once, before the loop
    assert off["forward"]["all-reduce"] > 2


def test_fsdp_gathers_parameters_and_keeps_activations_batch_sharded():
    data = compiled((("data", 4),))
    fsdp = compiled((("fsdp", 4),))
    counts = count(fsdp.as_text())
    assert counts["all-gather"] > 0
    # The gradients are reduced and each device keeps its fsdp shard: on TPU a reduce-scatter; XLA's CPU backend
    # has no reduce-scatter and emits an all-reduce followed by the slice.
    assert counts["reduce-scatter"] + counts["all-reduce"] > 0
    assert 2 * argument_bytes(fsdp) <= argument_bytes(data)
    # The MLM logits stay batch-sharded: the softmax over the (fsdp-split) vocabulary needs no collective.
    assert not re.findall(rf" ({'|'.join(COLLECTIVES)})(?:-start)?\(.*log_softmax", fsdp.as_text())
    # Fully shared parameters are gathered once, outside the loop; the activations never need a collective.
    assert loop_collectives(fsdp)["forward"] == Counter()
    assert loop_collectives(compiled((("fsdp", 4),), constrain=False))["forward"]["all-reduce"] > 0


def test_fsdp_gathers_unshared_layers_one_at_a_time():
    """sharing='none': each step's parameter set is gathered inside the loop (and its gradient reduced there),
    not every layer's at once before it."""
    loops = loop_collectives(compiled((("fsdp", 4),), sharing="none"))
    assert set(loops["forward"]) == {"all-gather"}
    assert loops["backward"]["all-gather"] > 0 and loops["backward"]["all-reduce"] > 0


# ---------------------------------------------------------------------------------------------------------
# Numerics and no-ops
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mesh_shape", [{"data": 2, "tensor": 2}, {"data": 2, "fsdp": 2}, {"fsdp": 2, "tensor": 2}])
def test_sharded_step_equals_one_device(mesh_shape):
    model = modeling.AlbertForPreTraining(TINY)
    params = modeling.init_params(model, jax.random.PRNGKey(0))
    batch = make_batch(seed=1)
    loss, grads = jax.jit(functools.partial(loss_and_grads, model))(params, batch)
    sharded_loss, sharded_grads = jit_step(TINY, mesh_shape)(params, batch)
    np.testing.assert_allclose(sharded_loss, loss, rtol=0, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(sharded_grads), jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "mesh_shape,config,batch_size",
    [({"tensor": 4}, TINY.replace(num_attention_heads=2), B), ({"data": 4}, TINY, 3)],
    ids=["2-heads-over-tensor-4", "batch-3-over-data-4"],
)
def test_dimensions_the_mesh_does_not_divide_are_replicated(mesh_shape, config, batch_size):
    model = modeling.AlbertForPreTraining(config)
    params = modeling.init_params(model, jax.random.PRNGKey(0))
    batch = make_batch(batch_size)
    mesh = sharding.create_mesh(mesh_shape)
    step = functools.partial(loss_and_grads, model)
    shardings = sharding.param_shardings(modeling.abstract_params(model), mesh)
    constrained = sharding.constrained(step, mesh)
    constraints = activation_constraints(jax.make_jaxpr(constrained)(params, batch).jaxpr)
    assert len(constraints) > 10 and all(modeling.fit_spec(spec, shape, mesh) == spec for shape, spec in constraints)
    sharded = jax.jit(constrained, in_shardings=(shardings, sharding.replicated(mesh)))
    loss, grads = sharded(params, batch)
    expected_loss, expected_grads = jax.jit(step)(params, batch)
    np.testing.assert_allclose(loss, expected_loss, rtol=0, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected_grads)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_constraints_are_no_ops_outside_the_context():
    model = modeling.AlbertForPreTraining(TINY)
    params = modeling.init_params(model, jax.random.PRNGKey(0))
    ids = make_batch()["input_ids"]
    mesh = sharding.create_mesh({"data": 2, "tensor": 2})

    def apply(ids):
        return model.apply({"params": params}, ids).prediction_logits

    def traced_with(*contexts):
        # A new function each time: jax caches a trace by the function and the mesh, not by flax's rules.
        with contextlib.ExitStack() as stack:
            for context in contexts:
                stack.enter_context(context)
            return str(jax.make_jaxpr(lambda ids: apply(ids))(ids))

    assert "sharding_constraint" not in traced_with()
    assert "sharding_constraint" not in traced_with(nn.logical_axis_rules(sharding.DEFAULT_RULES))  # no mesh
    assert "sharding_constraint" not in traced_with(jax.set_mesh(mesh))  # no rules
    assert "sharding_constraint" in traced_with(sharding.activation_sharding(mesh))
    expected = apply(ids)
    with jax.set_mesh(mesh):
        np.testing.assert_array_equal(apply(ids), expected)
    with nn.logical_axis_rules(sharding.DEFAULT_RULES):
        np.testing.assert_array_equal(apply(ids), expected)


def test_a_cluster_in_the_environment_makes_a_multi_process_job(monkeypatch):
    """TPU pod slices and Slurm/Open MPI jobs describe themselves in the environment; a lone process does not."""
    for name in ("TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert sharding._cluster_size() == 1
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5")
    assert sharding._cluster_size() == 4
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert sharding._cluster_size() == 8
