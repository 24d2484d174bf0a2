"""What a training job is made of (`Task`) and the jitted step built from it (`build_step`), which the train
loop (`loop.train`) runs and the planner (`plan`) compiles for other devices: one function, so a plan is the
program a run executes.

`train_step` is the pure micro-step: gradients, the optimizer update (MultiSteps accumulates) and metric sums,
with a non-finite loss or gradient leaving the state unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from albert_jax.data.batches import local_rows
from albert_jax.training import optimizers, sharding, spikes

Predict = Callable[[dict], dict]  # all rows of a dict of numpy arrays -> per-row numpy outputs


@struct.dataclass
class TrainState:
    step: jax.Array  # micro-steps done (optimizer steps x grad_accum_steps)
    params: Any
    opt_state: Any


class BatchSource(Protocol):
    """Deterministic batches: global micro-batch i is a pure function of (seed, i); `iterate(start)` yields
    this process's rows of micro-batches start, start + 1, ... (dicts of numpy arrays [B / processes, ...])."""

    def iterate(self, start: int) -> Iterator[dict[str, np.ndarray]]: ...


@dataclasses.dataclass
class Task:
    """What a training job is made of.

    loss_fn(params, batch, dropout_rng, deterministic) -> (scalar loss, dict of metric *sums*)
    summarize(dict of summed metric sums) -> dict of reported training metrics
    init_params(rng) -> boxed params (as `model.init(...)["params"]`, logical-axis metadata kept)
    predict_fn(params, batch) -> dict of per-row arrays [B, ...] (jitted by the loop)
    evaluate(predict) -> metrics, where `predict(arrays)` runs `predict_fn` over every row of a dict of
      numpy arrays (in padded, sharded batches) and returns the per-row outputs as numpy arrays
    finish(predict) -> None: end-of-run outputs (e.g. test-set predictions), on every process
    example_spec, predict_keys: the batches' layout without reading them (what `build_step` compiles for)
    flops_per_example: for `model_tflops_per_sec` and `mfu` in the training log
    """

    loss_fn: Callable
    summarize: Callable[[dict], dict]
    init_params: Callable[[jax.Array], Any]
    train_batches: BatchSource | None  # None: nothing to train on (config.total_steps 0)
    predict_fn: Callable | None = None
    evaluate: Callable[[Predict], dict] | None = None
    finish: Callable[[Predict], None] | None = None
    # What a training batch holds, per row: key -> (shape, dtype); planning compiles the step from it
    example_spec: dict[str, tuple[tuple[int, ...], Any]] | None = None
    predict_keys: tuple[str, ...] | None = None  # the keys of example_spec that predict_fn reads (None: all)
    flops_per_example: float | None = None  # model FLOPs of one training row (forward + backward, flops.py)


def train_step(
    state: TrainState, batch: dict, *, loss_fn: Callable, tx: optax.GradientTransformation, dropout_root: jax.Array
) -> tuple[TrainState, dict]:
    """One micro-step: gradients of `loss_fn` on `batch`, the optimizer update (MultiSteps accumulates),
    and the metric sums of the batch plus `grad_norm` and `nonfinite`.

    A non-finite loss or gradient changes nothing but the data position: parameters and optimizer state
    stay those of the last finite step, its sums are zeroed and `nonfinite` is 1, so the host can stop or
    count it at its next synchronisation without a check of its own per step."""
    rng = jax.random.fold_in(dropout_root, state.step)
    (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng, False)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params, opt_state = jax.tree_util.tree_map(
        lambda new, old: jnp.where(finite, new, old),
        (optax.apply_updates(state.params, updates), opt_state),
        (state.params, state.opt_state),
    )
    sums = {k: jnp.where(finite, v, 0) for k, v in dict(sums, grad_norm=grad_norm).items()}
    sums["nonfinite"] = 1 - finite.astype(jnp.float32)
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), sums


def make_predict(jit_predict: Callable, params, mesh, batch_size: int, rules=sharding.DEFAULT_RULES) -> Predict:
    """`predict(arrays)`: every row of `arrays` through `jit_predict(params, batch)` in batches of
    `batch_size` (the last one padded with copies of row 0, whose outputs are dropped), outputs as numpy."""

    def predict(arrays: dict) -> dict:
        n = len(next(iter(arrays.values())))
        outputs = []
        for start in range(0, n, batch_size):
            rows = np.arange(start, start + batch_size)
            real = rows < n
            batch = {k: np.asarray(v)[np.where(real, rows, 0)] for k, v in arrays.items()}
            out = jax.device_get(jit_predict(params, sharding.global_batch(local_rows(batch), mesh, rules)))
            outputs.append({k: np.asarray(v)[real] for k, v in out.items()})
        return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]} if outputs else {}

    return predict


@dataclasses.dataclass
class Step:
    """A job's jitted functions on a mesh and the abstract state and batches they take: `train` runs them and
    `training.plan` compiles the same ones for other devices (`jax.jit(...).lower(...).compile()`), so a plan
    is the program the run executes."""

    config: ml_collections.ConfigDict
    task: Task
    mesh: jax.sharding.Mesh
    opt_config: ml_collections.ConfigDict  # config.optimizer with total_steps (the schedule's length)
    tx: optax.GradientTransformation
    init_rng: jax.Array
    dropout_root: jax.Array
    state_shardings: Any  # TrainState of NamedShardings
    abstract_state: Any  # TrainState of ShapeDtypeStructs carrying those shardings

    @property
    def rules(self):
        return self.config.get("sharding_rules", sharding.DEFAULT_RULES)

    def init(self):
        """A freshly initialised TrainState, made sharded on the mesh."""
        init = functools.partial(_init_state, self.task, self.tx)
        return jax.jit(lambda r: nn.meta.unbox(init(r)), out_shardings=self.state_shardings)(self.init_rng)

    def train(self, lr_scale: float = 1.0) -> Callable:
        """The jitted `train_step` (state donated) with the updates scaled by `lr_scale` (spike rollbacks)."""
        step = functools.partial(
            train_step,
            loss_fn=self.task.loss_fn,
            tx=spikes.scale_updates(self.tx, lr_scale),
            dropout_root=self.dropout_root,
        )
        return jax.jit(
            sharding.constrained(step, self.mesh, self.rules),
            in_shardings=(self.state_shardings, sharding.batch_sharding(self.mesh, self.rules)),
            out_shardings=(self.state_shardings, sharding.replicated(self.mesh)),
            donate_argnums=0,
        )

    def predict(self) -> Callable | None:
        """The jitted `task.predict_fn(params, batch)` (outputs replicated), or None."""
        if self.task.predict_fn is None:
            return None
        return jax.jit(
            sharding.constrained(self.task.predict_fn, self.mesh, self.rules),
            in_shardings=(self.state_shardings.params, sharding.batch_sharding(self.mesh, self.rules)),
            out_shardings=sharding.replicated(self.mesh),
        )

    def abstract_batch(self, rows: int, keys: tuple[str, ...] | None = None) -> dict:
        """ShapeDtypeStructs of a batch of `rows` rows as `task.example_spec` describes it (only `keys`)."""
        if self.task.example_spec is None:
            raise ValueError("the task has no example_spec: its batches cannot be described without reading them")
        where = sharding.batch_sharding(self.mesh, self.rules)
        return {
            k: jax.ShapeDtypeStruct((rows, *shape), jnp.dtype(dtype), sharding=where)
            for k, (shape, dtype) in self.task.example_spec.items()
            if keys is None or k in keys
        }


def build_step(config: ml_collections.ConfigDict, task: Task, mesh: jax.sharding.Mesh) -> Step:
    """The optimizer, the shardings of the train state (from the parameters' logical axes and
    `config.sharding_rules`) and the abstract state for `task` on `mesh`; nothing is allocated."""
    opt_config = ml_collections.ConfigDict(dict(config.optimizer, total_steps=config.total_steps))
    init_rng, dropout_root = jax.random.split(jax.random.PRNGKey(config.seed))
    tx = optimizers.create_optimizer(opt_config, nn.meta.unbox(jax.eval_shape(task.init_params, init_rng)))
    boxed_state = jax.eval_shape(functools.partial(_init_state, task, tx), init_rng)
    state_shardings = sharding.param_shardings(boxed_state, mesh, config.get("sharding_rules", sharding.DEFAULT_RULES))
    abstract_state = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.meta.unbox(boxed_state), state_shardings
    )
    return Step(config, task, mesh, opt_config, tx, init_rng, dropout_root, state_shardings, abstract_state)


def _init_state(task: Task, tx: optax.GradientTransformation, rng) -> TrainState:
    params = task.init_params(rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
