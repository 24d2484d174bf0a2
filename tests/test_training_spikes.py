"""Loss-spike rollback: the detector and its bookkeeping, and a pretraining run with a spike put into its data."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from albert_jax import experiment
from albert_jax.data import loader
from albert_jax.training import loop, pretrain, spikes
from albert_jax.training.metrics import MetricWriter
from tests.helpers import TINY_PRETRAIN, read_metrics, untimed


def spike_config(**overrides) -> ml_collections.ConfigDict:
    config = loop.base_config().spike
    config.update(dict(enabled=True, **overrides))
    return config


# -- the detector -----------------------------------------------------------------------------------------
def test_a_loss_is_suspect_over_factor_times_the_median_of_the_history():
    history = [1.0, 2.0, 100.0]  # median 2: the outlier does not move it
    assert spikes.exceeds(history, 6.1, 3.0)
    assert not spikes.exceeds(history, 5.9, 3.0)
    assert not spikes.exceeds(history, 6.1, 4.0)
    assert spikes.exceeds(history, float("nan"), 3.0)
    assert not spikes.exceeds([], 1e9, 3.0)


def test_a_spike_is_patience_suspect_rows_in_a_row():
    guard = spikes.Guard(spike_config(factor=2.0, patience=3, window=10))
    assert not any(guard.observe(step, 1.0) for step in (1, 2, 3))
    assert not guard.observe(4, 5.0) and guard.suspected
    assert not guard.observe(5, 5.0)
    assert not guard.observe(6, 1.5) and not guard.suspected  # back under 2 x median: the count starts again
    assert not guard.observe(7, 5.0)
    assert not guard.observe(8, 5.0)
    assert guard.observe(9, 5.0)
    assert guard.clean_step == 6 and guard.history == [1.0, 1.0, 1.0, 1.5]  # suspect rows stay out of the median


def test_the_median_is_over_the_newest_window_clean_rows():
    guard = spikes.Guard(spike_config(factor=2.0, patience=1, window=2))
    for step, loss in enumerate([1.0, 1.0, 1.8, 2.7, 4.0], 1):  # a steady rise moves the median along (4.0 is
        assert not guard.observe(step, loss)  # over 2 x the median of all five, 1.8)
    assert guard.history == [2.7, 4.0]
    assert not spikes.exceeds(guard.history, 6.6, 2.0) and guard.observe(6, 6.8)  # 2 x 3.35 = 6.7


def test_off_by_default_the_guard_never_fires():
    guard = spikes.Guard(loop.base_config().spike)
    assert not any(guard.observe(step, loss) for step, loss in enumerate([1.0, 100.0, 100.0, 100.0, 100.0], 1))
    assert guard.state() == spikes.Guard(loop.base_config().spike).state()


def test_the_guard_survives_a_checkpoint_exactly():
    guard = spikes.Guard(spike_config(), history=[0.1, 1 / 3], clean_step=4, suspects=1, rollbacks=2, lr_scale=0.7)
    guard.data_offset = 12
    restored = spikes.Guard.restore(guard.config, json.loads(json.dumps(guard.state())))
    assert restored == guard


def test_a_rollback_skips_the_batches_since_the_checkpoint_and_scales_the_learning_rate():
    guard = spikes.Guard(spike_config(lr_scale=0.5), history=[9.0], clean_step=8, suspects=3, data_offset=3)
    event = guard.roll_back(from_step=10, to_step=6, saved={"history": [2.0, 1.0], "clean_step": 6}, accum=2)
    # micro-step 12 read batch 15 (offset 3); the 8 micro-batches of steps 7..10 are skipped: it now reads 23
    assert event == {
        "step": 6,
        "split": "event",
        "event": "rollback",
        "rollback": 1,
        "from_step": 10,
        "to_step": 6,
        "skipped_batches_start": 15,
        "skipped_batches_end": 23,
        "lr_scale": 0.5,
    }
    assert guard.data_offset == 11 and 12 + guard.data_offset == 23
    assert (guard.history, guard.clean_step, guard.suspects, guard.rollbacks) == ([2.0, 1.0], 6, 0, 1)
    guard.roll_back(from_step=9, to_step=6, saved=None, accum=2)
    assert (guard.rollbacks, guard.lr_scale, guard.data_offset, guard.history) == (2, 0.25, 17, [])


class NoCheckpoint:
    def restore_latest(self, abstract_state, at_most=None):
        return None


def test_no_checkpoint_before_the_spike_or_too_many_rollbacks_is_an_error():
    guard = spikes.Guard(spike_config(max_rollbacks=1), clean_step=5)
    with pytest.raises(spikes.SpikeError, match=r"loss spike at step 9 .* no checkpoint from before it \(step <= 5\)"):
        spikes.roll_back(guard, NoCheckpoint(), None, 9, 1)
    guard.rollbacks = 1
    with pytest.raises(spikes.SpikeError, match="after 1 rollbacks .*max_rollbacks"):
        spikes.roll_back(guard, NoCheckpoint(), None, 9, 1)


@pytest.mark.parametrize(
    "field, value", [("factor", 1.0), ("patience", 0), ("window", 0), ("lr_scale", 0.0), ("max_rollbacks", -1)]
)
def test_bad_settings_are_refused_naming_the_field(field, value):
    config = loop.base_config()
    config.spike.enabled = True
    spikes.check_config(config)
    config.spike[field] = value
    with pytest.raises(ValueError, match=f"config.spike.{field} must"):
        spikes.check_config(config)
    config.spike.enabled = False
    spikes.check_config(config)


def test_scaled_updates_are_the_learning_rate_scaled():
    params = {"w": jnp.arange(4.0), "b": jnp.ones(2)}
    grads = {"w": jnp.asarray([0.5, -1.0, 2.0, 0.1]), "b": jnp.asarray([1.0, -1.0])}
    tx, half = optax.adamw(0.1), optax.adamw(0.05)
    assert spikes.scale_updates(tx, 1.0) is tx  # no rollback: the very same step is compiled
    scaled = spikes.scale_updates(tx, 0.5)
    updates, state = scaled.update(grads, scaled.init(params), params)
    expected, expected_state = half.update(grads, half.init(params), params)
    jax.tree_util.tree_map(np.testing.assert_allclose, (updates, state), (expected, expected_state))


def test_a_resume_drops_the_rollbacks_its_checkpoint_had_not_seen(tmp_path):
    writer = MetricWriter(str(tmp_path), 10)
    for row in ({"step": 1, "loss": 1.0}, {"step": 2, "split": "event", "event": "rollback", "rollback": 1}):
        writer.write(row)
    writer.write({"step": 2, "loss": 2.0})
    writer.write({"step": 3, "loss": 3.0})
    writer.close()
    with open(tmp_path / "metrics.csv") as f:
        assert [line.split(",")[0] for line in f] == ["step", "1", "2", "3"]  # no event in the curve
    MetricWriter(str(tmp_path), 10, start_step=2, rollbacks=1).close()
    assert [r["step"] for r in read_metrics(tmp_path)] + [r["step"] for r in read_metrics(tmp_path, "event")] == [
        1,
        2,
        2,
    ]
    MetricWriter(str(tmp_path), 10, start_step=2, rollbacks=0).close()
    assert read_metrics(tmp_path, "event") == [] and len(read_metrics(tmp_path)) == 2


# -- a pretraining run with a spike in its data --------------------------------------------------------------
@pytest.fixture
def spiking_data(monkeypatch):
    """The set of batches (initially 6 and 7) whose pretraining loss, gradient and logged sums are multiplied by
    10; by data position, so a rollback that skips them escapes the spike."""
    iterate, loss, spiked = loader.PretrainingBatches.iterate, pretrain.pretraining_loss, {6, 7}

    def flagged(self, start):
        for index, batch in enumerate(iterate(self, start), start):
            yield dict(batch, spike=np.full(len(batch["input_ids"]), float(index in spiked), np.float32))

    def spiking_loss(model, params, batch, rng, deterministic, objective="sop"):
        value, sums = loss(model, params, batch, rng, deterministic, objective)
        scale = 1 + 9 * batch["spike"].max()
        return value * scale, dict(sums, mlm_loss=sums["mlm_loss"] * scale, sop_loss=sums["sop_loss"] * scale)

    monkeypatch.setattr(loader.PretrainingBatches, "iterate", flagged)
    monkeypatch.setattr(pretrain, "pretraining_loss", spiking_loss)
    return spiked


def run(workdir, **spike):
    config = experiment.load_config(TINY_PRETRAIN)
    config.total_steps, config.eval_every, config.keep_checkpoints = 12, 0, 10
    config.spike.update(dict(enabled=True, factor=3.0, patience=2, window=5, lr_scale=0.5, **spike))
    return pretrain.run(config, str(workdir))[1]


def rows_without_timing(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [untimed(json.loads(line)) for line in f]


def test_a_spike_is_rolled_back_and_skipped_exactly(tmp_path, spiking_data):
    """The batches of steps 7 and 8 blow the loss up 10-fold: at step 8 the run goes back to step 6's
    checkpoint, skips batches 6 and 7, halves the learning rate and ends near a run that never saw them; a rerun,
    and a resume from step 6's checkpoint (a crash right after the rollback), give the same bits and rows."""
    params = run(tmp_path / "spiked")
    rows = read_metrics(tmp_path / "spiked")
    spiking_data.clear()
    run(tmp_path / "clean")
    clean = read_metrics(tmp_path / "clean")
    spiking_data.update({6, 7})
    assert not read_metrics(tmp_path / "clean", "event")  # no spike there: no rollback
    assert read_metrics(tmp_path / "spiked", "event") == [
        {
            "step": 6,
            "split": "event",
            "event": "rollback",
            "rollback": 1,
            "from_step": 8,
            "to_step": 6,
            "skipped_batches_start": 6,
            "skipped_batches_end": 8,
            "lr_scale": 0.5,
        }
    ]
    assert [r["step"] for r in rows] == list(range(1, 13))  # the rows of the rolled-back steps are gone
    assert max(r["loss"] for r in rows) < 2 * rows[0]["loss"]
    assert [r["loss"] for r in rows[:6]] == [r["loss"] for r in clean[:6]]
    assert [r["learning_rate"] for r in rows[6:]] == [0.5 * r["learning_rate"] for r in clean[6:]]
    assert rows[-1]["loss"] == pytest.approx(clean[-1]["loss"], rel=0.1)

    rerun = run(tmp_path / "rerun")
    jax.tree_util.tree_map(np.testing.assert_array_equal, rerun, params)
    assert rows_without_timing(tmp_path / "rerun") == rows_without_timing(tmp_path / "spiked")

    checkpoints = tmp_path / "rerun" / "checkpoints"
    for step in os.listdir(checkpoints):
        if step.isdigit() and int(step) > 6:
            shutil.rmtree(checkpoints / step)
    resumed = run(tmp_path / "rerun")
    jax.tree_util.tree_map(np.testing.assert_array_equal, resumed, params)
    assert rows_without_timing(tmp_path / "rerun") == rows_without_timing(tmp_path / "spiked")


def test_the_spike_after_max_rollbacks_stops_the_run(tmp_path, spiking_data):
    with pytest.raises(spikes.SpikeError, match="loss spike at step 8 .* after 0 rollbacks"):
        run(tmp_path, max_rollbacks=0)
