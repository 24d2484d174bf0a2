"""Orbax checkpoints of the whole run: train state (params, optimizer state, step), the data position
and the run's config. Saves are atomic (orbax writes to a temporary directory and renames), the last
`keep` are kept, restores place every array on the sharding its abstract target carries (so a run
saved on one mesh resumes on another), and a work dir that holds another run is refused unless
overwriting.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

RUN_CONFIG_NAME = "run_config.json"


class WorkdirError(ValueError):
    """The work dir belongs to a different run."""


def claim_workdir(workdir: str, fingerprint: dict, overwrite: bool) -> None:
    """Makes `workdir` this run's: refuses a work dir of another run (a different `fingerprint`) and one
    that cannot be written; `overwrite` first deletes everything in it (checkpoints, metrics, caches,
    vocabulary). Every process takes the same decision from the same file before process 0 writes, and
    the fingerprint is written atomically, so no process ever reads a half-written file."""
    path = os.path.join(workdir, RUN_CONFIG_NAME)
    previous = None
    if os.path.exists(path) and not overwrite:
        with open(path) as f:
            previous = json.load(f)
    if previous is not None and previous != fingerprint:
        changed = sorted(k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k))
        raise WorkdirError(f"{workdir} holds a different run (differs in: {', '.join(changed)}); use another "
                           "--workdir, or pass --overwrite to delete it")
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("claim_workdir")
    error = None
    if jax.process_index() == 0:
        try:
            if overwrite and os.path.isdir(workdir):
                for name in os.listdir(workdir):
                    target = os.path.join(workdir, name)
                    if os.path.isdir(target) and not os.path.islink(target):
                        shutil.rmtree(target)
                    else:
                        os.remove(target)
            os.makedirs(workdir, exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump(fingerprint, f, indent=2, sort_keys=True)
            os.replace(path + ".tmp", path)
        except OSError as e:
            error = f"cannot write to the work dir {workdir}: {e.strerror} ({e.filename})"
    if jax.process_count() > 1 and multihost_utils.process_allgather(np.asarray(error is not None)).any():
        error = error or f"process 0 could not write the work dir {workdir}"
    if error:
        raise WorkdirError(error)


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
