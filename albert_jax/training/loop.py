"""The one train loop, shared by pretraining and fine-tuning.

A `steps.Task` supplies the model, a pure loss function, the batches, a prediction function and an evaluator;
`train` does the rest: the jitted step (`steps.build_step`: shardings, optimizer, donation), initialisation (resume ->
`init_from` -> scratch), evaluation (with `config.best_metric`, the best so far handed to the job to save),
orbax checkpoints (resume, keep-last-K, save on SIGTERM/Ctrl-C) and metric writing. `claim_run` runs the checks
that cost nothing (mesh, batch split, work dir claim) and must be entered before a job does any expensive work;
it holds the work dir's lock until the run ends. A run stopped by SIGTERM raises `Preempted` (by Ctrl-C,
KeyboardInterrupt) once its checkpoint is saved, so that nothing after `train` (final/, exports) treats a
half-trained model as finished.

Determinism: batch `i` is a pure function of (seed, i) and the dropout key of micro-step `i` is
`fold_in(PRNGKey(seed), i)`, so the saved micro-step (with the count of batches loss-spike rollbacks skipped,
`spikes`) is the whole data/rng position and a resumed run computes exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from ml_collections.config_dict import placeholder

from albert_jax import experiment, flops
from albert_jax.training import checkpoints, initialization, optimizers, sharding, spikes, steps
from albert_jax.training.metrics import MetricWriter

RUN_CONFIG_NAME = initialization.RUN_CONFIG_NAME  # the claim: the run's fingerprint


def base_config() -> ml_collections.ConfigDict:
    """The loop's own fields, which every job config (pretraining, fine-tuning) extends."""
    c = ml_collections.ConfigDict()
    c.job = "pretrain"  # what run.py runs: 'pretrain' or 'finetune'
    c.seed = 0  # everything (init, data, dropout) derives from it
    c.total_steps = 1000  # optimizer steps (0 with init_from: evaluate only)
    c.batch_size = 32  # global batch per optimizer step
    c.eval_batch_size = placeholder(int)  # rows per evaluation batch; None: the training micro-batch
    c.log_every = 100  # steps between training-metric rows
    c.eval_every = 1000  # steps between evaluations (0 = only at the end)
    c.best_metric = placeholder(str)  # eval key whose best writes best/ ('-loss': lower is better); None: off
    c.checkpoint_every = 1000  # steps between checkpoints (and always at the end / on SIGTERM)
    c.keep_checkpoints = 3  # how many checkpoints to keep (at least 1)
    c.profile_steps = ()  # (first, last): a jax.profiler trace of these optimizer steps in <workdir>/profile
    c.nonfinite = "stop"  # a NaN/inf loss or gradient: 'stop' (error, last finite checkpoint kept)
    # or 'skip' (that update is dropped and counted in `skipped_steps`)
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})  # -1: all remaining devices
    c.sharding_rules = sharding.DEFAULT_RULES  # logical parameter axis -> mesh axis
    c.init_from = placeholder(str)  # HF dir, albert-jax dir, pretraining work dir or hub name (local cache)
    c.init_from_skip = ()  # regexes over '/'-joined parameter paths not to load from init_from
    c.optimizer = ml_collections.ConfigDict(
        dict(
            optimizer="lamb",
            learning_rate=0.00176,
            warmup_steps=100,
            weight_decay=0.01,
            b1=0.9,
            b2=0.999,
            eps=1e-6,
            clip_norm=1.0,
            grad_accum_steps=1,
        )
    )
    c.spike = ml_collections.ConfigDict(  # loss-spike rollback (albert_jax/training/spikes.py)
        dict(
            enabled=False,  # roll back to the last checkpoint before a loss spike and skip its batches
            factor=3.0,  # a logged training loss over factor x its running median is suspect
            patience=3,  # suspect logged steps in a row that make a spike
            window=50,  # logged steps (the newest not suspect) the running median is taken over
            lr_scale=1.0,  # multiplies the learning rate after each rollback
            max_rollbacks=3,  # the spike after this many rollbacks stops the run (SpikeError)
        )
    )
    return c


class Preempted(RuntimeError):
    """The run was stopped by SIGTERM (on this or another process of the job) after saving a checkpoint: it
    has not finished, and running it again with the same work dir resumes it."""


# What the entry points exit with when preempted: sysexits' EX_TEMPFAIL, "try again" (a failure exits 1).
PREEMPTED_EXIT_STATUS = 75


class _StopRequested:
    """SIGTERM / SIGINT set a flag; at the next optimizer-step boundary every process saves a checkpoint
    and stops (a preempted host in a multi-process job stops the whole job cleanly); `train` then raises
    `stopped(step)`."""

    def __init__(self, mesh):
        self.requested = False
        self.signum = None  # the signal this process received
        self.previous = {}
        self._flag_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names))
        self._any = jax.jit(jnp.any, out_shardings=sharding.replicated(mesh))
        self._pending = None

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a notebook worker): no handler
                pass
        return self

    def _handle(self, signum, frame):
        logging.warning("signal %d: saving a checkpoint and stopping", signum)
        self.requested, self.signum = True, signum

    def stopped(self, step: int) -> BaseException:
        """What `train` raises after stopping at `step`: KeyboardInterrupt for a Ctrl-C to this process,
        else Preempted (SIGTERM here, or a stop agreed with another process)."""
        message = f"stopped at step {step}; run again with the same --workdir to resume"
        return KeyboardInterrupt(message) if self.signum == signal.SIGINT else Preempted(message)

    def agreed(self) -> bool:
        """Whether any process was asked to stop. Every process must take the same branch (the
        checkpoint save and the next step are collective), so a multi-process job combines the flags on the
        devices without waiting for them: each call starts one combination and reads the previous call's,
        which the devices run before the step just dispatched, so the host prepares the next batch while
        that step runs (a stop lands one optimizer step later)."""
        if jax.process_count() == 1:
            return self.requested
        where, local = self._flag_sharding, np.asarray([self.requested])
        flags = jax.make_array_from_single_device_arrays(
            (where.mesh.size,), where, [jax.device_put(local, device) for device in where.addressable_devices]
        )
        previous, self._pending = self._pending, self._any(flags)
        return previous is not None and bool(previous.addressable_data(0))

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def validate_batch(config: ml_collections.ConfigDict, mesh) -> int:
    """Micro-batch size; ValueError when the batch does not split over accumulation steps and devices."""
    accum = int(config.optimizer.grad_accum_steps)
    if config.batch_size % accum:
        raise ValueError(
            f"config.batch_size ({config.batch_size}) must be divisible by config.optimizer.grad_accum_steps ({accum})"
        )
    micro = config.batch_size // accum
    devices = sharding.data_parallel_size(mesh)
    if micro % devices:
        raise ValueError(
            f"the micro-batch (config.batch_size {config.batch_size} / grad_accum_steps {accum} = "
            f"{micro}) must be divisible by the {devices} data-parallel devices"
        )
    if eval_batch_size(config) % devices:
        raise ValueError(
            f"config.eval_batch_size ({eval_batch_size(config)}) must be divisible by the "
            f"{devices} data-parallel devices"
        )
    return micro


def eval_batch_size(config: ml_collections.ConfigDict) -> int:
    """Rows per evaluation batch: `config.eval_batch_size`, else the training micro-batch."""
    return config.get("eval_batch_size") or config.batch_size // int(config.optimizer.grad_accum_steps)


@contextlib.contextmanager
def claim_run(
    config: ml_collections.ConfigDict, workdir: str, fingerprint: dict, overwrite: bool = False
) -> Iterator[jax.sharding.Mesh]:
    """Everything that can refuse a run cheaply, before any data or vocabulary work: the mesh, the batch
    split, step counts and the work dir claim (`claim_workdir`), made under the work dir's lock
    (`<workdir>/.lock`, taken by process 0 for the whole job): a second run of the same work dir is refused
    at once, naming the host and PID that hold it. Yields the mesh; the lock is held until the block ends.

        with loop.claim_run(config, workdir, fingerprint) as mesh:
            ... loop.train(config, workdir, task, mesh) ...
    """
    for name in ("batch_size", "log_every", "keep_checkpoints"):
        if config[name] <= 0:
            raise ValueError(f"config.{name} must be positive, got {config[name]}")
    for name in ("eval_every", "checkpoint_every"):
        if config[name] < 0:
            raise ValueError(f"config.{name} must be positive or 0 (only at the end), got {config[name]}")
    if config.nonfinite not in ("stop", "skip"):
        raise ValueError(f"config.nonfinite must be 'stop' or 'skip', got {config.nonfinite!r}")
    spikes.check_config(config)
    _Trace.check(config)
    if config.total_steps < 0 or (config.total_steps == 0 and not config.get("init_from")):
        raise ValueError(
            f"config.total_steps must be positive (0 evaluates a checkpoint given by "
            f"config.init_from), got {config.total_steps}"
        )
    mesh = sharding.create_mesh(config.mesh)
    validate_batch(config, mesh)
    with contextlib.ExitStack() as held:
        if jax.process_index() == 0:  # one lock per job: the job's processes must not refuse each other
            busy = f"{workdir} is in use by another run, which must end first"
            try:
                held.enter_context(experiment.exclusive(os.path.join(workdir, experiment.LOCK_NAME), busy=busy))
            except OSError as e:
                raise experiment.ClaimError(_cannot_write(workdir, e)) from None
        claim_workdir(workdir, fingerprint, overwrite)
        yield mesh


def claim_workdir(workdir: str, fingerprint: dict, overwrite: bool) -> None:
    """Makes `workdir` this run's: refuses a work dir of another run (a different `fingerprint` in its
    run_config.json) and one that cannot be written; `overwrite` first deletes everything in it (checkpoints,
    metrics, caches, vocabulary). Every process decides from the same file before process 0 writes."""
    experiment.check_claim(
        workdir,
        RUN_CONFIG_NAME,
        fingerprint,
        overwrite=overwrite,
        conflict="holds a different run",
        fix="use another --workdir, or pass --overwrite to delete it",
        ours=("checkpoints",),
    )
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("claim_workdir")
    error = None
    if jax.process_index() == 0:
        try:
            experiment.write_claim(workdir, RUN_CONFIG_NAME, fingerprint, overwrite=overwrite)
        except OSError as e:
            error = _cannot_write(workdir, e)
    if jax.process_count() > 1 and multihost_utils.process_allgather(np.asarray(error is not None)).any():
        error = error or f"process 0 could not write the work dir {workdir}"
    if error:
        raise experiment.ClaimError(error)


def _cannot_write(workdir: str, e: OSError) -> str:
    return f"cannot write to the work dir {workdir}: {e.strerror} ({e.filename})"


# ---------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------
def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    task: steps.Task,
    mesh,
    *,
    resume: bool = True,
    init_from: initialization.Pretrained | None = None,
    on_best: Callable[[Any, dict], None] | None = None,
) -> steps.TrainState:
    """Runs (or resumes) the job described by `config` in `workdir` (claimed by `claim_run`, which gave
    `mesh`); returns the final TrainState (params sharded over `mesh`). A run that does not resume starts
    from the weights of `init_from` (the job's `initialization.resolve(config.init_from)`), else from scratch.
    Stopped by a signal, it saves a checkpoint and raises `Preempted` (SIGTERM) or KeyboardInterrupt (Ctrl-C)
    instead of returning: only a run that did all its steps returns.

    With `config.best_metric`, each evaluation that beats the best so far of the whole run (`Best`) calls
    `on_best(params, best)` on every process, with the params sharded over `mesh` and `best` = {"step",
    "metric", "value", "metrics": the evaluation's row}: the job saves that model (`export.save_best`).

    Config fields used: those of `base_config`.
    """
    if config.get("best_metric") and (on_best is None or task.evaluate is None):
        raise ValueError(
            f"config.best_metric={config.best_metric!r} needs a job that evaluates and saves its best model "
            "(fine-tuning); leave it unset here"
        )
    accum = int(config.optimizer.grad_accum_steps)
    total_micro = int(config.total_steps) * accum
    step_fns = steps.build_step(config, task, mesh)
    opt_config, tx, abstract_state = step_fns.opt_config, step_fns.tx, step_fns.abstract_state
    jit_predict = step_fns.predict()

    # -- initialise: resume -> init_from -> scratch --------------------------------------------------------
    checkpointer = checkpoints.Checkpointer(workdir, keep=config.keep_checkpoints)
    restored = checkpointer.restore_latest(abstract_state) if resume else None
    if restored is not None:
        state, data_state = restored
        logging.warning("resumed from micro-step %d", int(state.step))
        if int(state.step) != data_state["micro_step"]:
            raise RuntimeError(
                f"checkpoint in {workdir}: data position {data_state['micro_step']} and step {int(state.step)} disagree"
            )
    else:
        state, data_state = step_fns.init(), {}
        if init_from is not None:
            params = initialization.load_into(state.params, init_from.directory, tuple(config.init_from_skip))
            opt_state = jax.jit(tx.init, out_shardings=step_fns.state_shardings.opt_state)(params)
            state = state.replace(params=params, opt_state=opt_state)

    # -- loop ----------------------------------------------------------------------------------------------
    # Metric rows after the start step (written before an interruption) are dropped, and the sums of the
    # micro-steps between the last log row and the checkpoint come back with it: a resumed run's metrics
    # read row for row as an uninterrupted run's.
    guard = spikes.Guard.restore(config.spike, data_state.get("spike"))
    # The best is the checkpoint's, as the pending sums are: a resumed run compares against the best of the steps
    # it keeps, and redoes (deterministically, so identically) the evaluations and best/ writes after them.
    best = Best(config.get("best_metric"), data_state.get("best"))
    jit_train_step = step_fns.train(guard.lr_scale)
    writer = MetricWriter(workdir, config.total_steps, start_step=int(state.step) // accum, rollbacks=guard.rollbacks)
    pending = [(micro, sums) for micro, sums in data_state.get("pending", [])]

    def predict_with_current_params(arrays: dict) -> dict:
        if jit_predict is None:
            raise ValueError("the task's evaluate and finish need its predict_fn")
        return steps.make_predict(jit_predict, state.params, mesh, eval_batch_size(config), step_fns.rules)(arrays)

    def write_eval(step: int) -> None:
        if task.evaluate is None:
            return
        row = {"step": step, "split": "eval", **task.evaluate(predict_with_current_params)}
        writer.write(row)
        if on_best is not None and (record := best.observe(row)) is not None:
            on_best(state.params, record)

    if config.total_steps == 0:
        write_eval(0)
    tokens, rows, t0 = 0, 0, time.time()
    trace = _Trace(config, workdir)
    batches: Iterator[dict[str, np.ndarray]] = iter(())
    stopped: BaseException | None = None  # a SIGTERM / Ctrl-C: raised once the checkpoint is saved

    def open_batches(micro: int) -> Iterator[dict[str, np.ndarray]]:  # micro-step m reads batch m + data_offset
        if task.train_batches is None:
            raise ValueError(f"config.total_steps={config.total_steps} but the task has no train_batches")
        return task.train_batches.iterate(micro + guard.data_offset)

    if int(state.step) < total_micro:
        batches = open_batches(int(state.step))
    try:
        with mesh, _StopRequested(mesh) as stop:
            next_micro = int(state.step)
            while next_micro < total_micro:
                micro, next_micro = next_micro, next_micro + 1
                if micro % accum == 0:
                    trace.step_starts(micro // accum + 1)
                host_batch = next(batches)
                rows += len(next(iter(host_batch.values()))) * jax.process_count()
                tokens += int(np.asarray(host_batch.get("attention_mask", 0)).sum()) * jax.process_count()
                state, sums = jit_train_step(state, sharding.global_batch(host_batch, mesh, step_fns.rules))
                pending.append((micro, sums))
                done_micro = micro + 1
                if done_micro % accum:
                    continue
                step = done_micro // accum
                trace.step_ends(step, state)
                last = step == config.total_steps
                stopping = stop.agreed()
                log = step % config.log_every == 0 or last
                save = (config.checkpoint_every and step % config.checkpoint_every == 0) or last or stopping
                if log or save:
                    pending = _to_host(pending)
                    _check_finite(config, pending, accum, checkpointer)
                if log:
                    row = {
                        "step": step,
                        **_summarize(task, pending),
                        "learning_rate": float(optimizers.current_learning_rate(opt_config, step - 1)) * guard.lr_scale,
                        "tokens_per_sec": tokens / max(time.time() - t0, 1e-9),
                        **_model_throughput(task, rows / max(time.time() - t0, 1e-9)),
                    }
                    writer.write(row)
                    pending, tokens, rows, t0 = [], 0, 0, time.time()
                    if guard.observe(step, row.get("loss")):  # a loss spike: back to a checkpoint before it
                        # `best` is kept: the undone steps' evaluations did run, and best/ may hold one's model
                        state, data_state, event = spikes.roll_back(guard, checkpointer, abstract_state, step, accum)
                        writer.close()
                        writer = MetricWriter(
                            workdir, config.total_steps, start_step=event["to_step"], rollbacks=guard.rollbacks
                        )
                        writer.write(event)
                        pending, next_micro = list(data_state["pending"]), int(state.step)
                        _close_batches(batches)
                        batches = open_batches(next_micro)
                        jit_train_step = step_fns.train(guard.lr_scale)
                        continue
                if (config.eval_every and step % config.eval_every == 0) or last:
                    write_eval(step)
                if save and (last or stopping or not guard.suspected):  # keep the checkpoints from before a spike
                    # a copy: orbax writes the JSON in the background while the loop appends to `pending`
                    checkpointer.save(
                        step,
                        state,
                        {
                            "micro_step": done_micro,
                            "pending": list(pending),
                            "spike": guard.state(),
                            "best": best.record,
                        },
                    )
                if stopping and not last:
                    stopped = stop.stopped(step)
                    break
    finally:  # an error too waits for checkpoint writes in flight, or they die with the interpreter
        trace.stop()
        _close_batches(batches)
        checkpointer.close()
        writer.close()
    if stopped is not None:  # after the checkpoint is written: the caller must not treat the run as finished
        raise stopped
    if task.finish is not None and int(state.step) == total_micro:
        task.finish(predict_with_current_params)
    return state


class Best:
    """The best evaluation so far by `metric` (`config.best_metric`: a key of the evaluation rows, higher is
    better; with a leading '-', lower is), as `record` = {"step", "metric", "value", "metrics": the row with
    non-finite values as None} or None before the first. A tie keeps the earlier evaluation; a non-finite value
    is never best. `saved` (a checkpoint's record) is taken when it tracked the same metric."""

    def __init__(self, metric: str | None, saved: dict | None = None):
        self.metric = metric
        self.record = saved if metric and saved and saved["metric"] == metric else None
        if metric and saved and self.record is None:
            logging.warning("config.best_metric is now %r (was %r): the best is tracked anew", metric, saved["metric"])

    def observe(self, row: dict) -> dict | None:
        """The new `record` when the evaluation `row` beats the best so far, else None (always without a
        metric). ValueError when the row has no such key."""
        if not self.metric:
            return None
        key = self.metric.removeprefix("-")
        sign = -1.0 if key != self.metric else 1.0
        if key not in row:
            shown = ", ".join(sorted(k for k in row if k not in ("step", "split")))
            raise ValueError(f"config.best_metric={self.metric!r}: the evaluation has no {key!r}; it has: {shown}")
        value = float(row[key])
        if not math.isfinite(value) or (self.record is not None and sign * value <= sign * self.record["value"]):
            return None
        metrics = {
            k: v if isinstance(v, (str, int)) else float(v) if math.isfinite(v) else None for k, v in row.items()
        }
        self.record = {"step": row["step"], "metric": self.metric, "value": value, "metrics": metrics}
        return self.record


class NonFiniteError(RuntimeError):
    """A non-finite loss or gradient with `config.nonfinite='stop'`."""


def host_params(params):
    """Numpy copies of a pytree of global arrays on every process, whole even where a process holds only its
    shards (fsdp across hosts): a collective then, which every process calls."""
    return jax.tree_util.tree_map(
        lambda x: jax.device_get(x) if x.is_fully_addressable else multihost_utils.process_allgather(x, tiled=True),
        params,
    )


def _model_throughput(task: steps.Task, rows_per_sec: float) -> dict:
    """`model_tflops_per_sec` (the task's model FLOPs, flops.py) and, on a device of flops.ACCELERATORS, `mfu`."""
    if task.flops_per_example is None:
        return {}
    per_sec = rows_per_sec * task.flops_per_example
    out = {"model_tflops_per_sec": per_sec / 1e12}
    chip = flops.accelerator(jax.devices()[0].device_kind)
    if chip is not None:
        out["mfu"] = per_sec / (chip.peak_flops * jax.device_count())
    return out


class _Trace:
    """A `jax.profiler` trace of the optimizer steps `config.profile_steps` = (first, last) in
    `<workdir>/profile` (TensorBoard's profile plugin reads it); nothing when the field is empty."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.steps: tuple[int, ...] = tuple(config.get("profile_steps") or ())
        self.directory = os.path.join(workdir, "profile")
        self.active = False

    @staticmethod
    def check(config: ml_collections.ConfigDict) -> None:
        steps = tuple(config.get("profile_steps") or ())
        if steps and not (len(steps) == 2 and 1 <= steps[0] <= steps[1] <= config.total_steps):
            raise ValueError(
                f"config.profile_steps must be empty or first,last with 1 <= first <= last <= total_steps "
                f"({config.total_steps}), got {steps}"
            )

    def step_starts(self, step: int) -> None:
        if self.steps and step == self.steps[0]:
            jax.profiler.start_trace(self.directory)
            self.active = True

    def step_ends(self, step: int, state) -> None:
        if self.active and step == self.steps[1]:
            jax.block_until_ready(state)  # the trace holds the steps' device work, not only their dispatch
            self.stop()

    def stop(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
            logging.warning("wrote a profile of steps %d-%d to %s", *self.steps, self.directory)


def _close_batches(batches: Iterator) -> None:
    """Ends a batch iterator's loader worker processes (if it has any)."""
    close = getattr(batches, "close", None)
    if close is not None:
        close()


def _to_host(pending: list) -> list:
    """(micro-step, sums) pairs with the sums as Python floats (JSON-ready for the checkpoint)."""
    return [(micro, {k: float(v) for k, v in sums.items()}) for micro, sums in jax.device_get(pending)]


def _check_finite(config: ml_collections.ConfigDict, pending: list, accum: int, checkpointer) -> None:
    """With `config.nonfinite='stop'`, raises NonFiniteError at the first non-finite micro-step."""
    bad = [micro for micro, sums in pending if sums["nonfinite"]]
    if bad and config.nonfinite == "stop":
        raise NonFiniteError(
            f"non-finite loss or gradient at step {bad[0] // accum + 1} (no update was applied); the last "
            f"checkpoint, step {checkpointer.latest_step()}, is finite. Lower optimizer.learning_rate, or set "
            "config.nonfinite=skip to drop such updates and go on"
        )


def _summarize(task: steps.Task, pending: list) -> dict:
    """The task's training metrics over the finite micro-steps of `pending`, mean `grad_norm` and
    `skipped_steps` (micro-steps whose update was dropped as non-finite)."""
    rows = [sums for _, sums in pending]
    skipped = int(sum(r["nonfinite"] for r in rows))
    kept = len(rows) - skipped
    # float64 sums of float32 values: the same whether the values came from the device or a checkpoint.
    totals = {k: float(np.sum(np.asarray([r[k] for r in rows], np.float64))) for k in rows[0]}
    metrics = task.summarize({k: v for k, v in totals.items() if k not in ("grad_norm", "nonfinite")}) if kept else {}
    return {**metrics, "grad_norm": totals["grad_norm"] / max(kept, 1), "skipped_steps": skipped}
