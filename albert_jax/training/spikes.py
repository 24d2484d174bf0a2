"""Loss-spike rollback (`config.spike`, off by default), as PaLM did by hand: when the logged training loss stays
over `factor` x its running median for `patience` logged steps in a row, the loop restores the newest checkpoint
from before the spike, skips the batches the run consumed since that checkpoint, optionally scales the learning
rate, and goes on; after `max_rollbacks` rollbacks the next spike stops the run with SpikeError.

Skipping is exact: batch i is a pure function of (seed, i), and micro-step m reads batch m + `data_offset`. The
detector and the bookkeeping (`Guard.state()`) travel in each checkpoint's data state, so a resumed run decides
exactly as an uninterrupted one. While a spike is suspected the loop saves no periodic checkpoint, so the
checkpoints of a suspected spike never evict the last one from before it (a stop on SIGTERM still saves;
a rollback that finds no checkpoint from before the spike is a SpikeError saying so).
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np
import optax


class SpikeError(RuntimeError):
    """A loss spike that cannot be rolled back: `max_rollbacks` reached, or no checkpoint from before it."""


def check_config(config: ml_collections.ConfigDict) -> None:
    """ValueError naming the field when `config.spike` is enabled with values it cannot run with."""
    spike = config.spike
    if not spike.enabled:
        return
    for name, ok, must in (
        ("factor", spike.factor > 1, "be above 1"),
        ("patience", spike.patience >= 1, "be at least 1"),
        ("window", spike.window >= 1, "be at least 1"),
        ("lr_scale", 0 < spike.lr_scale <= 1, "be in (0, 1]"),
        ("max_rollbacks", spike.max_rollbacks >= 0, "be at least 0"),
    ):
        if not ok:
            raise ValueError(f"config.spike.{name} must {must}, got {spike[name]}")


def exceeds(history: list[float], loss: float, factor: float) -> bool:
    """Whether `loss` is over `factor` x the median of `history` (a non-finite loss is); never with no history."""
    return bool(history) and not loss <= factor * float(np.median(history))


def scale_updates(tx: optax.GradientTransformation, lr_scale: float) -> optax.GradientTransformation:
    """`tx` with its updates multiplied by `lr_scale` (the learning rate's last factor in `optimizers`), the same
    optimizer state; `tx` itself when the scale is 1, so a run without rollbacks compiles the same step."""
    if lr_scale == 1.0:
        return tx

    def update(updates, state, params=None):
        updates, state = tx.update(updates, state, params)
        return optax.tree_utils.tree_scale(lr_scale, updates), state

    return optax.GradientTransformation(tx.init, update)


@dataclasses.dataclass
class Guard:
    """The detector and the rollback bookkeeping of a run; `state()` is JSON for the checkpoint's data state."""

    config: ml_collections.ConfigDict  # the run's config.spike
    history: list[float] = dataclasses.field(default_factory=list)  # newest non-suspect logged losses
    clean_step: int = 0  # the last logged step that was not suspect (0: the start)
    suspects: int = 0  # suspect logged steps in a row
    rollbacks: int = 0
    data_offset: int = 0  # micro-step m reads batch m + data_offset
    lr_scale: float = 1.0  # the factor on the scheduled learning rate

    @classmethod
    def restore(cls, config: ml_collections.ConfigDict, state: dict | None) -> Guard:
        """The guard of `config` (`config.spike`) as saved in a checkpoint (`state`; None: a new run)."""
        return cls(config, **(state or {}))

    def state(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "config"}

    @property
    def suspected(self) -> bool:
        return self.suspects > 0

    def observe(self, step: int, loss: float | None) -> bool:
        """Takes the logged training loss of `step` (None: the row has none); True when it completes a spike."""
        if not self.config.enabled or loss is None:
            return False
        if exceeds(self.history, loss, self.config.factor):
            self.suspects += 1
            return self.suspects >= self.config.patience
        self.history = (self.history + [loss])[-self.config.window :]
        self.clean_step, self.suspects = step, 0
        return False

    def roll_back(self, from_step: int, to_step: int, saved: dict | None, accum: int) -> dict:
        """Goes back from `from_step` to the checkpoint of `to_step` (whose guard state was `saved`): the detector
        as it was then, the bookkeeping carried on, the batches of steps (to_step, from_step] skipped. Returns
        the event's metrics row."""
        skipped = (from_step - to_step) * accum
        first = to_step * accum + self.data_offset  # the batch micro-step to_step * accum read before
        self.history = Guard.restore(self.config, saved).history
        self.clean_step, self.suspects = to_step, 0
        self.rollbacks += 1
        self.data_offset += skipped
        self.lr_scale *= self.config.lr_scale
        return {
            "step": to_step,
            "split": "event",  # not a training row (readers of metrics.jsonl pick rows by split)
            "event": "rollback",
            "rollback": self.rollbacks,  # the number of this rollback: 1, 2, ...
            "from_step": from_step,
            "to_step": to_step,
            "skipped_batches_start": first,  # micro-batches [start, end) are skipped
            "skipped_batches_end": first + skipped,
            "lr_scale": self.lr_scale,
        }


def roll_back(guard: Guard, checkpointer, abstract_state, step: int, accum: int):
    """Restores the newest checkpoint at or before `guard.clean_step` (the spike began after it), deletes the
    later ones and updates `guard`. Returns (state, data_state, the event's metrics row). SpikeError when
    `max_rollbacks` rollbacks are done or no checkpoint from before the spike is left."""
    config = guard.config
    spike = (
        f"loss spike at step {step} (the logged loss over {config.factor} x its running median "
        f"{config.patience} logged steps in a row)"
    )
    if guard.rollbacks >= config.max_rollbacks:
        raise SpikeError(
            f"{spike} after {guard.rollbacks} rollbacks (config.spike.max_rollbacks); lower "
            "optimizer.learning_rate or set config.spike.lr_scale below 1"
        )
    restored = checkpointer.restore_latest(abstract_state, at_most=guard.clean_step)
    if restored is None:
        raise SpikeError(
            f"{spike}: no checkpoint from before it (step <= {guard.clean_step}) is left to roll back to; lower "
            "config.checkpoint_every or raise config.keep_checkpoints"
        )
    state, data_state = restored
    to_step = int(state.step) // accum
    checkpointer.discard_after(to_step)
    return state, data_state, guard.roll_back(step, to_step, data_state.get("spike"), accum)
