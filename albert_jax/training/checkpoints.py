"""Orbax checkpoints of the whole run: train state (params, optimizer state, step) and the data position.
Saves are atomic (orbax writes to a temporary directory and renames), the last `keep` are kept, and restores
place every array on the sharding its abstract target carries (so a run saved on one mesh resumes on another).
A save that fails (orbax writes in the background: the error surfaces at the next save or at close) is a
one-line CheckpointError naming the checkpoint directory and the OS's reason.
"""

from __future__ import annotations

import contextlib
import logging as py_logging
import os
import re
import shutil

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was expected, or a checkpoint that could not be written."""


def _one_line(e: BaseException) -> str:
    """An orbax/tensorstore error's type and first line (their messages run to many lines)."""
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def _write_reason(e: BaseException) -> str:
    """Why a save failed: the OS's reason when the error gives one (an OSError, or tensorstore's
    `os_error_code='28'`), else `_one_line(e)`."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if code := re.search(r"os_error_code='?(\d+)", str(e)):
        return os.strerror(int(code.group(1)))
    return _one_line(e)


class _OrbaxErrorsInOneLine(py_logging.Filter):
    """orbax logs a failed background save with its thread's traceback, four times, before the error reaches the
    main thread, where `Checkpointer` raises it in one line naming the directory: orbax's messages stay, their
    tracebacks (hundreds of lines of orbax internals) go."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        if f"{os.sep}orbax{os.sep}" in record.pathname:
            record.exc_info = record.exc_text = None
        return True


_ORBAX_ERRORS_IN_ONE_LINE = _OrbaxErrorsInOneLine()


@jax.jit
def checksum(tree) -> jax.Array:
    """Wrapping uint32 sum of the bits of every array in `tree`: exact, so the same on any mesh and in
    any reduction order; a flipped byte changes it."""

    def bits(x):
        x = jnp.asarray(x)
        words = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
        if x.dtype == jnp.bool_:
            x = x.astype(jnp.uint8)
        return jnp.sum(jax.lax.bitcast_convert_type(x, words).astype(jnp.uint32), dtype=jnp.uint32)

    return sum((bits(x) for x in jax.tree_util.tree_leaves(tree)), jnp.uint32(0))


def _all_finite(tree) -> bool:
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return bool(jax.jit(lambda xs: jnp.all(jnp.stack([jnp.isfinite(x).all() for x in xs])))(leaves))


class Checkpointer:
    """`save(step, state, data_state)` / `restore_latest(abstract_state)` over an orbax CheckpointManager.

    Each save records a checksum of the state beside the data state; a restore checks it and that every
    float is finite, and a checkpoint that fails (or cannot be read) is moved aside to `corrupt-<step>`
    with a warning naming it, and the previous one is used."""

    def __init__(self, workdir: str, keep: int = 3):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        logging.get_absl_logger().addFilter(_ORBAX_ERRORS_IN_ONE_LINE)  # once: addFilter skips one it holds
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )

    def save(self, step: int, state, data_state: dict) -> None:
        """Saves `state` (a pytree of jax arrays) and `data_state` (JSON) as checkpoint `step`."""
        data_state = dict(data_state, checksum=int(checksum(state)))
        with self._naming_write_errors():
            self.manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
                force=True,
            )

    @contextlib.contextmanager
    def _naming_write_errors(self):
        try:
            yield
        except Exception as e:  # noqa: BLE001 - whatever orbax or tensorstore raise, the save failed
            raise CheckpointError(f"cannot write a checkpoint in {self.directory}: {_write_reason(e)}") from e

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore_latest(self, abstract_state, at_most: int | None = None):
        """(state, data_state) of the newest good checkpoint (at step `at_most` or before, when given), or None
        when there is none at all. `abstract_state` carries the shardings; CheckpointError when every
        checkpoint is bad."""
        with self._naming_write_errors():  # a rollback restores while a save may be in flight
            self.manager.wait_until_finished()
        set_aside = []
        while (step := self._newest(at_most)) is not None:
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
                    ),
                )
                state, data = restored["state"], restored["data"]
                problem = None
                if "checksum" in data and int(checksum(state)) != data["checksum"]:
                    problem = "its contents do not match the checksum written when it was saved"
                elif not _all_finite(state):
                    problem = "it holds non-finite values"
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is handled the same way
                problem = f"it cannot be read ({_one_line(e)})"
            if problem is None:
                return state, data
            self._set_aside(step, problem)
            set_aside.append(step)
        if set_aside:
            raise CheckpointError(
                f"no usable checkpoint in {self.directory} (steps {set_aside} were moved to "
                "corrupt-<step>); run with --overwrite to start over"
            )
        return None

    def _newest(self, at_most: int | None) -> int | None:
        return max((s for s in self.manager.all_steps() if at_most is None or s <= at_most), default=None)

    def discard_after(self, step: int) -> None:
        """Deletes the checkpoints after `step` (a loss-spike rollback: they hold the spike)."""
        for later in self.manager.all_steps():
            if later > step:
                self.manager.delete(later)

    def _set_aside(self, step: int, problem: str) -> None:
        path = os.path.join(self.directory, str(step))
        aside = os.path.join(self.directory, f"corrupt-{step}")
        logging.warning(
            "checkpoint step %d (%s) is unusable: %s; moved to %s, trying the previous one", step, path, problem, aside
        )
        if jax.process_index() == 0:
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(path, aside)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"checkpoint_aside_{step}")
        self.manager.reload()

    def close(self) -> None:
        """Waits for the saves in flight (CheckpointError when one failed) and closes the manager."""
        with self._naming_write_errors():
            self.manager.close()  # waits for the saves in flight first
