"""Orbax checkpoints of the whole run: train state (params, optimizer state, step), the data position
and the run's config. Saves are atomic (orbax writes to a temporary directory and renames), the last
`keep` are kept, and a work dir that holds another run's checkpoints is refused unless overwriting.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import orbax.checkpoint as ocp

RUN_CONFIG_NAME = "run_config.json"


class WorkdirError(ValueError):
    """The work dir belongs to a different run."""


def check_workdir(workdir: str, fingerprint: dict, overwrite: bool) -> None:
    """Records `fingerprint` (what defines the run) in `workdir`; refuses a work dir of another run.

    With `overwrite`, the other run's checkpoints are deleted first. Only process 0 writes.
    """
    path = os.path.join(workdir, RUN_CONFIG_NAME)
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if previous != fingerprint:
            if not overwrite:
                changed = sorted(k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k))
                raise WorkdirError(
                    f"{workdir} holds checkpoints of a different run (differs in: {', '.join(changed)}); "
                    "use another --workdir, or pass --overwrite to delete them")
            if jax.process_index() == 0:
                shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(fingerprint, f, indent=2, sort_keys=True)


class Checkpointer:
    """`save(step, state, data_state)` / `restore_latest(abstract_state)` over an orbax CheckpointManager."""

    def __init__(self, workdir: str, keep: int = 3):
        self.manager = ocp.CheckpointManager(
            os.path.join(os.path.abspath(workdir), "checkpoints"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

    def save(self, step: int, state, data_state: dict, force: bool = False) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=force)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore_latest(self, abstract_state):
        """(state, data_state) of the newest checkpoint, or None. `abstract_state` carries the shardings."""
        step = self.manager.latest_step()
        if step is None:
            return None
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return restored["state"], restored["data"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
