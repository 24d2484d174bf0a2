"""albert_jax.training.loop, in process: the work dir claim, the evaluators' predict, the pure train step
(gradient accumulation, non-finite micro-steps), signals, and the best evaluation (config.best_metric) across
a kill and resume."""

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from albert_jax import experiment
from albert_jax.training import checkpoints, loop, optimizers, sharding, steps


def test_claim_refuses_another_run_and_overwrite_clears_everything(tmp_path):
    loop.claim_workdir(str(tmp_path), {"seed": 0}, overwrite=False)
    for name in ("metrics.jsonl", "spiece.model", "examples_train_x.npz"):
        (tmp_path / name).write_text("old")
    (tmp_path / "checkpoints" / "4").mkdir(parents=True)
    loop.claim_workdir(str(tmp_path), {"seed": 0}, overwrite=False)  # same run: kept
    assert (tmp_path / "spiece.model").exists()
    with pytest.raises(experiment.ClaimError, match=r"different run \(differs in: seed\)"):
        loop.claim_workdir(str(tmp_path), {"seed": 1}, overwrite=False)
    loop.claim_workdir(str(tmp_path), {"seed": 1}, overwrite=True)
    assert os.listdir(tmp_path) == [loop.RUN_CONFIG_NAME]
    assert json.loads((tmp_path / loop.RUN_CONFIG_NAME).read_text()) == {"seed": 1}


def test_claim_refuses_an_unwritable_work_dir(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(experiment.ClaimError, match="cannot write to the work dir"):
        loop.claim_workdir(str(tmp_path / "file" / "run"), {"seed": 0}, overwrite=False)


@pytest.mark.parametrize("rows", [1, 7, 8, 13])
def test_predict_sees_every_row_exactly_once(rows):
    mesh = sharding.create_mesh({"data": -1})
    calls = []

    def predict_fn(params, batch):
        calls.append(batch["x"].shape)
        return {"double": batch["x"] * params["scale"], "id": batch["id"]}

    jit_predict = jax.jit(predict_fn, out_shardings=sharding.replicated(mesh))
    predict = steps.make_predict(jit_predict, {"scale": jnp.float32(2)}, mesh, batch_size=4)
    x = np.random.RandomState(0).rand(rows, 3).astype(np.float32)
    out = predict({"x": x, "id": np.arange(rows)})
    np.testing.assert_array_equal(out["id"], np.arange(rows))
    np.testing.assert_allclose(out["double"], 2 * x)
    assert set(calls) == {(4, 3)}  # one compiled shape: the last batch is padded, its padding dropped


# -- the pure step ---------------------------------------------------------------------------------------
def regression_loss(params, batch, rng, deterministic):
    """Mean squared error of a two-layer net: the mean over rows, so equal micro-batches average to the batch."""
    hidden = jnp.tanh(batch["x"] @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    errors = ((hidden @ params["out"]["kernel"] - batch["y"]) ** 2).sum(-1)
    return errors.mean(), {"loss": errors.sum(), "rows": jnp.float32(len(errors))}


def regression_batch(seed, rows=8):
    rng = np.random.RandomState(seed)
    return {"x": rng.randn(rows, 4).astype(np.float32), "y": rng.randn(rows, 2).astype(np.float32)}


def step_setup(grad_accum_steps):
    """(jitted `train_step` with the loop's optimizer (LAMB, clipping, MultiSteps), its first TrainState, tx)."""
    rng = np.random.RandomState(0)
    params = {"hidden": {"kernel": rng.randn(4, 8), "bias": rng.randn(8)}, "out": {"kernel": rng.randn(8, 2)}}
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    config = ml_collections.ConfigDict(
        dict(
            loop.base_config().optimizer,
            learning_rate=0.05,
            warmup_steps=0,
            total_steps=10,
            grad_accum_steps=grad_accum_steps,
        )
    )
    tx = optimizers.create_optimizer(config, params)
    step = jax.jit(
        functools.partial(steps.train_step, loss_fn=regression_loss, tx=tx, dropout_root=jax.random.PRNGKey(0))
    )
    return step, steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params)), tx


def assert_trees(check, a, b):
    jax.tree_util.tree_map(check, jax.device_get(a), jax.device_get(b))


def test_accumulated_micro_steps_take_the_step_of_the_whole_batch():
    """k micro-batches of B/k rows with grad_accum_steps=k end each window on the parameters of one step on
    the B rows (whose reference is optax applied to the batch's gradient), and leave them alone inside it;
    three windows, so the schedule and Adam's moments must count optimizer steps, not micro-steps."""
    k, close = 4, functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
    full_step, full, tx = step_setup(1)
    accum_step, accum, _ = step_setup(k)
    params, opt_state = full.params, tx.init(full.params)
    for window in range(3):
        batch = regression_batch(window + 1)
        full, _ = full_step(full, batch)
        grads, _ = jax.grad(regression_loss, has_aux=True)(params, batch, None, True)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        assert_trees(close, full.params, params)
        before = accum.params
        for i in range(k):
            accum, sums = accum_step(accum, {key: v[i * 2 : (i + 1) * 2] for key, v in batch.items()})
            assert float(sums["nonfinite"]) == 0 and float(sums["rows"]) == 2
            if i < k - 1:
                assert_trees(np.testing.assert_array_equal, accum.params, before)
        assert int(accum.step) == (window + 1) * k
        assert not np.allclose(accum.params["out"]["kernel"], before["out"]["kernel"])
        assert_trees(close, accum.params, full.params)


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("grad_accum_steps", [1, 3])
def test_a_nonfinite_micro_step_changes_nothing_but_the_step(grad_accum_steps, bad):
    """A NaN/inf loss after a finite micro-step (mid-window with accumulation): params and opt_state (MultiSteps'
    accumulated gradients included) stay bit for bit, the sums are zeroed and flagged, and the finite micro-steps
    after it compute exactly what they would have had the bad batch never come."""
    step, state, _ = step_setup(grad_accum_steps)
    state, sums = step(state, regression_batch(1))
    assert float(sums["nonfinite"]) == 0 and float(sums["loss"]) > 0
    poisoned = regression_batch(2)
    poisoned["y"][3, 1] = bad
    after, sums = step(state, poisoned)
    assert int(after.step) == int(state.step) + 1
    assert_trees(np.testing.assert_array_equal, (after.params, after.opt_state), (state.params, state.opt_state))
    assert {k: float(v) for k, v in sums.items()} == {"loss": 0, "rows": 0, "grad_norm": 0, "nonfinite": 1}
    resumed, never_poisoned = after, state
    for seed in range(3, 3 + max(grad_accum_steps - 1, 1)):  # up to the end of the window: an update
        resumed, sums = step(resumed, regression_batch(seed))
        never_poisoned, _ = step(never_poisoned, regression_batch(seed))
        assert float(sums["nonfinite"]) == 0 and np.isfinite(float(sums["grad_norm"])) and float(sums["rows"]) == 8
    assert not np.allclose(resumed.params["out"]["kernel"], state.params["out"]["kernel"])
    assert_trees(
        np.testing.assert_array_equal,
        (resumed.params, resumed.opt_state),
        (never_poisoned.params, never_poisoned.opt_state),
    )


# -- a run stopped by a signal ---------------------------------------------------------------------------
class SignalledBatches:
    """Regression batches (micro-batch i = `regression_batch(i)`) that send `signum` to this process when micro-batch
    `at` is drawn, as a scheduler's SIGTERM or a Ctrl-C would arrive mid-run."""

    def __init__(self, signum=None, at=-1):
        self.signum, self.at = signum, at

    def iterate(self, start):
        for i in range(start, 1 << 30):
            if i == self.at:
                os.kill(os.getpid(), self.signum)
            yield regression_batch(i)


def regression_task(batches):
    def init_params(rng):
        k1, k2 = jax.random.split(rng)
        return {
            "hidden": {"kernel": jax.random.normal(k1, (4, 8)), "bias": jnp.zeros(8)},
            "out": {"kernel": jax.random.normal(k2, (8, 2))},
        }

    return steps.Task(
        loss_fn=regression_loss,
        summarize=lambda sums: {"loss": sums["loss"] / sums["rows"]},
        init_params=init_params,
        train_batches=batches,
    )


@pytest.mark.parametrize("signum,raised", [("SIGTERM", loop.Preempted), ("SIGINT", KeyboardInterrupt)])
def test_a_signal_saves_a_checkpoint_and_train_raises_instead_of_returning(tmp_path, signum, raised):
    """SIGTERM (Preempted) or Ctrl-C (KeyboardInterrupt) while drawing step 3's batch: step 3 is checkpointed, then
    `train` raises saying so, so that no caller writes final/ for a half-trained model; run again, it resumes there
    and returns the finished state."""
    import signal

    config = loop.base_config()
    config.update(dict(total_steps=6, batch_size=8, log_every=1, eval_every=0, checkpoint_every=0))
    config.optimizer.warmup_steps = 0
    mesh = sharding.create_mesh(config.mesh)
    with pytest.raises(raised, match=r"stopped at step 3; run again with the same --workdir to resume"):
        loop.train(config, str(tmp_path), regression_task(SignalledBatches(getattr(signal, signum), at=2)), mesh)
    assert os.listdir(tmp_path / "checkpoints") == ["3"]
    state = loop.train(config, str(tmp_path), regression_task(SignalledBatches()), mesh)
    assert int(state.step) == 6 and sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]


# -- observability ---------------------------------------------------------------------------------------
def test_the_log_reports_model_flops_per_second_and_profile_steps_writes_a_trace(tmp_path):
    """A task's flops_per_example gives `model_tflops_per_sec` (rows per second x FLOPs per row); the steps of
    config.profile_steps are traced into <workdir>/profile, which TensorBoard's profile plugin reads."""
    import glob

    config = loop.base_config()
    config.update(dict(total_steps=4, batch_size=8, log_every=2, eval_every=0, checkpoint_every=0))
    config.profile_steps = (2, 3)
    task = dataclasses.replace(regression_task(SignalledBatches()), flops_per_example=1e9)
    loop.train(config, str(tmp_path), task, sharding.create_mesh(config.mesh))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    for row in rows:
        assert row["model_tflops_per_sec"] > 0 and "mfu" not in row
    assert glob.glob(str(tmp_path / "profile" / "plugins" / "profile" / "*" / "*.xplane.pb"))


@pytest.mark.parametrize("steps", [(0, 2), (3, 2), (2, 9), (1,)])
def test_bad_profile_steps_are_refused_before_the_run(tmp_path, steps):
    config = loop.base_config()
    config.update(dict(total_steps=4, batch_size=8))
    config.profile_steps = steps
    with pytest.raises(ValueError, match=r"config.profile_steps must be empty or first,last"):
        with loop.claim_run(config, str(tmp_path), {}):
            pass


# -- the best evaluation (config.best_metric) ------------------------------------------------------------
class Crash(RuntimeError):
    """A process killed mid-run: no checkpoint is saved for it."""


class ClockBatches:
    """Regression batches that count those drawn (`drawn`: the step, with one micro-step per step, when the
    loop evaluates) and raise Crash when micro-batch `crash_at` is drawn."""

    def __init__(self, crash_at=-1):
        self.drawn, self.crash_at = 0, crash_at

    def iterate(self, start):
        for i in range(start, 1 << 30):
            if i == self.crash_at:
                raise Crash(f"killed drawing micro-batch {i}")
            self.drawn = i + 1
            yield regression_batch(i)


def peaked_task(batches, peak):
    """The regression task with an evaluator whose `score` peaks at step `peak` (`distance` is its negative)."""

    def evaluate(predict):
        return {"score": -abs(batches.drawn - peak), "distance": float(abs(batches.drawn - peak)), "rows": 8}

    return dataclasses.replace(regression_task(batches), evaluate=evaluate)


def best_config(**fields):
    config = loop.base_config()
    config.update({**dict(total_steps=8, batch_size=8, log_every=1, eval_every=1, checkpoint_every=4), **fields})
    config.optimizer.warmup_steps = 0
    return config


def train_recording_best(config, workdir, batches, peak, calls):
    """`loop.train` of `peaked_task` with an `on_best` that appends (host params, best record) to `calls`."""
    mesh = sharding.create_mesh(config.mesh)
    on_best = lambda params, best: calls.append((jax.device_get(params), best))  # noqa: E731
    return loop.train(config, str(workdir), peaked_task(batches, peak), mesh, on_best=on_best)


@pytest.mark.parametrize("metric", ["score", "-distance"])
def test_each_better_evaluation_hands_over_that_steps_params_and_row(tmp_path, metric):
    """Evaluations every step, the metric peaking at step 5 of 8 (higher `score`, or lower `distance` with '-'):
    on_best gets steps 1..5, each with the parameters that step's checkpoint holds and the row metrics.jsonl
    has; later (worse) evaluations do not call it; the checkpoints carry the best so far."""
    config = best_config(best_metric=metric, checkpoint_every=1, keep_checkpoints=10)
    calls = []
    train_recording_best(config, tmp_path, ClockBatches(), 5, calls)
    assert [best["step"] for _, best in calls] == [1, 2, 3, 4, 5]
    evals = {
        row["step"]: row for row in map(json.loads, open(tmp_path / "metrics.jsonl")) if row.get("split") == "eval"
    }
    params, best = calls[-1]
    assert best == {"step": 5, "metric": metric, "value": evals[5][metric.lstrip("-")], "metrics": evals[5]}
    assert evals[5]["score"] == 0 and sorted(evals) == list(range(1, 9))

    task = peaked_task(ClockBatches(), 5)
    abstract = steps.build_step(config, task, sharding.create_mesh(config.mesh)).abstract_state
    saver = checkpoints.Checkpointer(str(tmp_path), keep=10)
    at_best, data = saver.restore_latest(abstract, at_most=5)
    assert int(at_best.step) == 5 and data["best"] == best
    assert_trees(np.testing.assert_array_equal, params, at_best.params)
    last, data = saver.restore_latest(abstract)
    assert int(last.step) == 8 and data["best"] == best
    assert not np.array_equal(last.params["out"]["kernel"], params["out"]["kernel"])
    saver.close()


@pytest.mark.parametrize("peak", [2, 6], ids=["best before the checkpoint", "best after the checkpoint"])
def test_a_run_killed_after_its_best_and_resumed_ends_with_the_best_of_an_uninterrupted_run(tmp_path, peak):
    """Checkpoints at steps 4 and 8, killed drawing step 7's batch (its evaluations up to step 6 done, the last
    checkpoint step 4), resumed from step 4: with the best at step 2 the resumed run compares against it (the
    checkpoint's best) and hands over nothing more; with the best at step 6 it redoes steps 5-6 and hands over
    the same parameters again. Either way the last hand-over is the uninterrupted run's, bit for bit."""
    config = best_config(best_metric="score")
    uninterrupted, calls = [], []
    train_recording_best(config, tmp_path / "reference", ClockBatches(), peak, uninterrupted)
    with pytest.raises(Crash):
        train_recording_best(config, tmp_path / "killed", ClockBatches(crash_at=6), peak, calls)
    assert os.listdir(tmp_path / "killed" / "checkpoints") == ["4"] and calls[-1][1]["step"] == peak
    handed_before = len(calls)
    train_recording_best(config, tmp_path / "killed", ClockBatches(), peak, calls)
    assert [best["step"] for _, best in calls[handed_before:]] == ([] if peak < 4 else [5, 6])
    assert calls[-1][1] == uninterrupted[-1][1] and calls[-1][1]["step"] == peak
    assert_trees(np.testing.assert_array_equal, calls[-1][0], uninterrupted[-1][0])


def test_an_unknown_best_metric_names_the_evaluations_keys(tmp_path):
    config = best_config(best_metric="accuracy")
    message = r"config.best_metric='accuracy': the evaluation has no 'accuracy'; it has: distance, rows, score$"
    with pytest.raises(ValueError, match=message):
        train_recording_best(config, tmp_path, ClockBatches(), 5, [])


def test_without_best_metric_nothing_is_handed_over_and_a_job_without_on_best_may_not_set_it(tmp_path):
    calls = []
    train_recording_best(best_config(total_steps=2), tmp_path / "off", ClockBatches(), 1, calls)
    assert calls == []
    with pytest.raises(ValueError, match=r"config.best_metric='score' needs a job that evaluates and saves"):
        loop.train(
            best_config(best_metric="score"),
            str(tmp_path / "no_hook"),
            peaked_task(ClockBatches(), 1),
            sharding.create_mesh(loop.base_config().mesh),
        )
