"""albert-jax entry point: `python run.py --config=experiments/configs/demo.py [--config.a.b=v] --workdir=DIR`.

Joins a multi-process job when one is described (--coordinator_address/--num_processes/--process_id or
JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID), then runs the config's job (`config.job`:
'pretrain' or 'finetune').
A run in an existing work dir resumes from its last checkpoint (--noresume to start over in place).
`--plan=TARGET[,TARGET...]` compiles the job's step for those targets instead of running it
(albert_jax/training/plan.py) and writes <workdir>/plan.json and plan.md.
Exit status: 0 finished (planned: everything fits; 3: a target does not fit); 75 (EX_TEMPFAIL) stopped by
SIGTERM after saving a checkpoint, run again to resume;
130 stopped by Ctrl-C (also after a checkpoint when training); 1 failed.
"""

import os
import signal
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (experiments/configs/*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "work dir: checkpoints, metrics, exports")
_RESUME = flags.DEFINE_bool("resume", True, "resume from the work dir's last checkpoint")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "delete everything in the work dir first (a fresh run)")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "multi-process: host:port of process 0")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-process: number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-process: this process's index")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout", 60, "multi-process: seconds after which a silent process counts as dead and the whole job ends"
)
_PLAN = flags.DEFINE_list(
    "plan",
    [],
    "plan instead of running: compile the job's step for these targets (v3-512, v4-32, v5e-256, v6e-8, cpu, ...) and "
    "write <workdir>/plan.json and plan.md; exit status 3 when one does not fit",
)
_PLAN_SEARCH = flags.DEFINE_bool("plan_search", True, "with --plan: search settings that fit when a target does not")
_REUSE_HOST_MEMORY = flags.DEFINE_bool(
    "reuse_host_memory",
    True,
    "CPU: each step reuses the last step's scratch memory (albert_jax/training/hostmem.py; ~8% faster steps)",
)


def main(argv):
    del argv
    if _PLAN.value:
        sys.exit(plan_job())
    import jax

    from albert_jax.training import checkpoints, finetune, hostmem, loop, pretrain, sharding, spikes

    config = _CONFIG.value
    if config is None or _WORKDIR.value is None:
        sys.exit("error: --config and --workdir are required")
    jobs = {"pretrain": pretrain.run, "finetune": finetune.run}
    job = config.get("job", "pretrain")
    if job not in jobs:
        sys.exit(f"error: config.job must be one of {sorted(jobs)}, got {job!r}")
    sharding.initialize_distributed(
        _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, heartbeat_timeout=_HEARTBEAT.value
    )
    if _REUSE_HOST_MEMORY.value:  # before the backend starts
        hostmem.reuse_cpu_step_memory()
    logging.set_verbosity(logging.WARNING)
    expected = (ValueError, OSError, ImportError, loop.NonFiniteError, checkpoints.CheckpointError, spikes.SpikeError)
    try:
        jobs[job](config, _WORKDIR.value, overwrite=_OVERWRITE.value, resume=_RESUME.value)
    except (loop.Preempted, KeyboardInterrupt) as e:  # every process of a job stops here: a normal exit
        preempted = isinstance(e, loop.Preempted)
        print(f"{'preempted' if preempted else 'interrupted'}: {e}".rstrip(": "), file=sys.stderr, flush=True)
        sys.exit(loop.PREEMPTED_EXIT_STATUS if preempted else 128 + signal.SIGINT)
    except BaseException as e:  # noqa: BLE001 - every failure ends the job: see below
        message = f"error: {e}" if isinstance(e, expected) else traceback.format_exc()
        if sharding.is_multiprocess():
            # The other processes wait in a collective: leaving through jax.distributed.shutdown would
            # wait for them forever. Exit now; the coordination service's heartbeat then ends them.
            print(f"process {jax.process_index()}: {message}", file=sys.stderr, flush=True)
            os._exit(1)
        if isinstance(e, expected):
            sys.exit(message)
        raise


def plan_job() -> int:
    """--plan: JAX on this machine's CPU (TPU targets compile through libtpu's deviceless topologies)."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from albert_jax.training import plan

    if _CONFIG.value is None or _WORKDIR.value is None:
        sys.exit("error: --config and --workdir are required")
    try:
        return plan.run([(None, _CONFIG.value)], _WORKDIR.value, _PLAN.value, search=_PLAN_SEARCH.value)
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    from albert_jax.experiment import parse_flags

    app.run(
        main,
        flags_parser=lambda argv: parse_flags(
            argv, "python run.py --config=experiments/configs/NAME.py[:arg] [--config.field=value ...] --workdir=DIR"
        ),
    )
