"""The one train loop, shared by pretraining and fine-tuning.

A `Task` supplies the model, a pure loss function, the batches and how to summarise metrics; `train`
does the rest: mesh and shardings, optimizer, jitted steps with donation, evaluation, orbax
checkpoints (resume, keep-last-K, save on SIGTERM/Ctrl-C) and metric writing.

Determinism: batch `i` is a pure function of (seed, i) and the dropout key of micro-step `i` is
`fold_in(PRNGKey(seed), i)`, so the saved micro-step is the whole data/rng position and a resumed run
computes exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from typing import Any, Callable, Iterable, Optional, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import struct
from jax.experimental import multihost_utils

from albert_jax.training import checkpoints, optimizers, sharding
from albert_jax.training.metrics import MetricWriter


@struct.dataclass
class TrainState:
    step: jax.Array  # micro-steps done (optimizer steps x grad_accum_steps)
    params: Any
    opt_state: Any


class BatchSource(Protocol):
    """Deterministic batches: `batch(i)` is the i-th global micro-batch (dict of numpy arrays [B, ...])."""
    def batch(self, index: int) -> dict[str, np.ndarray]: ...


@dataclasses.dataclass
class Task:
    """What a training job is made of.

    loss_fn(params, batch, dropout_rng, deterministic) -> (scalar loss, dict of metric *sums*)
    summarize(dict of summed metric sums) -> dict of reported metrics (e.g. accuracy = correct / count)
    init_params(rng) -> boxed params (as `model.init(...)["params"]`, logical-axis metadata kept)
    """
    model: nn.Module
    loss_fn: Callable
    summarize: Callable[[dict], dict]
    init_params: Callable[[jax.Array], Any]
    train_batches: BatchSource
    eval_batches: Optional[Iterable[dict]] = None
    tokens_key: str = "input_mask"


class _StopRequested:
    """SIGTERM / SIGINT set a flag; at the next optimizer-step boundary every process saves a checkpoint
    and returns (a preempted host in a multi-process job stops the whole job cleanly)."""

    def __init__(self):
        self.requested = False
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a notebook worker): no handler
                pass
        return self

    def _handle(self, signum, frame):
        logging.warning("signal %d: saving a checkpoint and stopping", signum)
        self.requested = True

    def agreed(self) -> bool:
        """Whether any process was asked to stop. Every process must take the same branch (the
        checkpoint save and the next step are collective), so a multi-process job shares the flag."""
        if jax.process_count() == 1:
            return self.requested
        return bool(multihost_utils.process_allgather(np.asarray(self.requested)).any())

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def validate_batch(config: ml_collections.ConfigDict, mesh) -> int:
    """Micro-batch size; ValueError when the batch does not split over accumulation steps and devices."""
    accum = int(config.optimizer.grad_accum_steps)
    if config.batch_size % accum:
        raise ValueError(f"config.batch_size ({config.batch_size}) must be divisible by "
                         f"config.optimizer.grad_accum_steps ({accum})")
    micro = config.batch_size // accum
    devices = sharding.data_parallel_size(mesh)
    if micro % devices:
        raise ValueError(f"the micro-batch (config.batch_size {config.batch_size} / grad_accum_steps {accum} = "
                         f"{micro}) must be divisible by the {devices} data-parallel devices")
    return micro


def _local_rows(batch: dict) -> dict:
    """This process's contiguous share of a global batch."""
    if jax.process_count() == 1:
        return batch
    n = next(iter(batch.values())).shape[0]
    per = n // jax.process_count()
    start = jax.process_index() * per
    return {k: v[start:start + per] for k, v in batch.items()}


def train(config: ml_collections.ConfigDict, workdir: str, task: Task, *, fingerprint: dict,
          overwrite: bool = False, resume: bool = True) -> TrainState:
    """Runs (or resumes) the job described by `config` in `workdir`; returns the final TrainState.

    Config fields used: seed, total_steps (optimizer steps), batch_size (global, per optimizer step),
    log_every, eval_every, checkpoint_every, keep_checkpoints, mesh, sharding_rules, optimizer.*.
    """
    # -- mesh --------------------------------------------------------------------------------------------
    mesh = sharding.create_mesh(config.mesh)
    validate_batch(config, mesh)
    accum = int(config.optimizer.grad_accum_steps)
    total_micro = int(config.total_steps) * accum
    checkpoints.check_workdir(workdir, fingerprint, overwrite)

    # -- model, optimizer, shardings -----------------------------------------------------------------------
    opt_config = ml_collections.ConfigDict(dict(config.optimizer, total_steps=config.total_steps))
    root = jax.random.PRNGKey(config.seed)
    init_rng, dropout_root = jax.random.split(root)
    abstract_params = jax.eval_shape(task.init_params, init_rng)
    tx = optimizers.create_optimizer(opt_config, nn.meta.unbox(abstract_params))

    def init_state(rng):
        params = task.init_params(rng)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    abstract_state = jax.eval_shape(init_state, init_rng)
    rules = config.get("sharding_rules", sharding.DEFAULT_RULES)
    state_shardings = sharding.param_shardings(abstract_state, mesh, rules)
    abstract_state = nn.meta.unbox(abstract_state)
    batch_sharding = sharding.batch_sharding(mesh)
    replicated = sharding.replicated(mesh)

    def train_step(state: TrainState, batch):
        rng = jax.random.fold_in(dropout_root, state.step)
        (loss, sums), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(state.params, batch, rng, False)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        sums = dict(sums, grad_norm=optax.global_norm(grads))
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), sums

    def eval_step(params, batch):
        return task.loss_fn(params, batch, dropout_root, True)[1]

    p_train_step = jax.jit(train_step, in_shardings=(state_shardings, batch_sharding),
                           out_shardings=(state_shardings, replicated), donate_argnums=0)
    p_eval_step = jax.jit(eval_step, in_shardings=(state_shardings.params, batch_sharding),
                          out_shardings=replicated)

    # -- initialise or resume ----------------------------------------------------------------------------
    checkpointer = checkpoints.Checkpointer(workdir, keep=config.get("keep_checkpoints", 3))
    restored = checkpointer.restore_latest(abstract_state) if resume else None
    if restored is not None:
        state, data_state = restored
        logging.info("resumed from micro-step %d", int(state.step))
        if int(state.step) != data_state["micro_step"]:
            raise RuntimeError(f"checkpoint in {workdir}: data position {data_state['micro_step']} and step "
                               f"{int(state.step)} disagree")
    else:
        state = jax.jit(lambda r: nn.meta.unbox(init_state(r)), out_shardings=state_shardings)(init_rng)
    start = int(state.step)

    writer = MetricWriter(workdir, config.total_steps)
    tokens_key = task.tokens_key
    train_rows, tokens, t0 = [], 0, time.time()
    with mesh, _StopRequested() as stop:
        for micro in range(start, total_micro):
            host_batch = task.train_batches.batch(micro)
            tokens += int(np.asarray(host_batch[tokens_key]).sum()) if tokens_key in host_batch else 0
            state, sums = p_train_step(state, sharding.global_batch(_local_rows(host_batch), mesh))
            train_rows.append(sums)
            done_micro = micro + 1
            if done_micro % accum:
                continue
            step = done_micro // accum
            if step % config.log_every == 0 or step == config.total_steps:
                rows = jax.device_get(train_rows)
                elapsed = time.time() - t0
                metrics = task.summarize({k: np.sum([r[k] for r in rows], 0) for k in rows[0] if k != "grad_norm"})
                writer.write({"step": step, **metrics, "grad_norm": float(np.mean([r["grad_norm"] for r in rows])),
                              "learning_rate": float(optimizers.current_learning_rate(opt_config, step - 1)),
                              "tokens_per_sec": tokens / max(elapsed, 1e-9)})
                train_rows, tokens, t0 = [], 0, time.time()
            if task.eval_batches is not None and config.eval_every and (
                    step % config.eval_every == 0 or step == config.total_steps):
                writer.write({"step": step, "split": "eval", **evaluate(p_eval_step, state.params, task, mesh)})
            stopping = stop.agreed()
            if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.total_steps \
                    or stopping:
                checkpointer.save(step, state, {"micro_step": done_micro}, force=True)
            if stopping:
                logging.warning("stopped at step %d; run again with the same --workdir to resume", step)
                break
    checkpointer.close()
    writer.close()
    return state


def evaluate(p_eval_step, params, task: Task, mesh) -> dict:
    """Metrics of `params` over all of `task.eval_batches` (sums accumulated, then summarised)."""
    totals = None
    for batch in task.eval_batches:
        sums = jax.device_get(p_eval_step(params, sharding.global_batch(_local_rows(batch), mesh)))
        totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
    return task.summarize(totals)
