"""Runs a sweep (an ablation config, or any job config over seeds) and writes its tables and plots.

    python experiments/ablate.py --config=experiments/configs/ablation_sharing.py:scale=demo --workdir=runs/sharing \
        [--seeds=3] [--config.total_steps=50] [--shard=0/2] [--cells=E768-all,E128-all]
    python experiments/ablate.py --config=experiments/configs/glue.py:task=rte --workdir=runs/rte --seeds=5

Each cell runs once per seed (`--seeds=N`: seeds 0..N-1, or the config's `sweep.seeds`) into
<workdir>/<cell>/seed<k> (<workdir>/<cell> without seeds), pretraining (and fine-tuning into .../finetune when
the sweep config names a fine-tuning config) or fine-tuning, as the config's job; a config without cells is
one cell, `default`. A re-run skips finished runs and resumes interrupted ones. The results (results.csv a row
per run, results.md a row per cell with mean ± std and 95% confidence intervals over seeds and paired
differences from the reference cell, plots with error bars, in <workdir>) are assembled from every finished
run, so n machines running --shard=i/n fill one table. A cell stopped by SIGTERM stops
the sweep with run.py's status 75 (run again to resume it). `--plan=TARGET[,...]` plans every cell instead
(run.py --plan): one plan.json / plan.md in <workdir>, a row per cell and target.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "sweep config file (experiments/configs/ablation_*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "the sweep's work dir: one sub-directory per cell, the results")
_SHARD = flags.DEFINE_string("shard", "0/1", "i/n: run every n-th cell starting at the i-th")
_CELLS = flags.DEFINE_list("cells", [], "run only these cells (comma-separated names)")
_SEEDS = flags.DEFINE_integer("seeds", None, "run every cell with seeds 0..N-1 (default: the config's sweep.seeds)")
_PLAN = flags.DEFINE_list(
    "plan", [], "plan instead of running: every cell's step compiled for these targets (run.py --plan); exit 3: no fit"
)
_PLAN_SEARCH = flags.DEFINE_bool("plan_search", True, "with --plan: search settings that fit when a target does not")
_REUSE_HOST_MEMORY = flags.DEFINE_bool(
    "reuse_host_memory",
    True,
    "CPU: each step reuses the last step's scratch memory, as in run.py (albert_jax/training/hostmem.py)",
)


def main(argv):
    del argv
    from albert_jax.training import hostmem, loop, reporting, sweep

    if _CONFIG.value is None or _WORKDIR.value is None:
        sys.exit("error: --config and --workdir are required")
    config = sweep.as_sweep(_CONFIG.value)
    if _SEEDS.value is not None:
        if _SEEDS.value < 1:
            sys.exit(f"error: --seeds must be a positive number of seeds, got {_SEEDS.value}")
        config.sweep.seeds = tuple(range(_SEEDS.value))
    try:
        index, count = (int(x) for x in _SHARD.value.split("/"))
    except ValueError:
        sys.exit(f"error: --shard must be i/n, got {_SHARD.value!r}")
    if _PLAN.value:
        sys.exit(plan_sweep(config, (index, count)))
    if _REUSE_HOST_MEMORY.value:  # before the backend starts
        hostmem.reuse_cpu_step_memory()
    logging.set_verbosity(logging.WARNING)
    try:
        sweep.run_sweep(config, _WORKDIR.value, shard=(index, count), only=_CELLS.value)
        paths = reporting.write_results(config, _WORKDIR.value)
    except loop.Preempted as e:
        print(f"preempted: {e}", file=sys.stderr, flush=True)
        sys.exit(loop.PREEMPTED_EXIT_STATUS)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    with open(paths["markdown"]) as f:
        print(f.read())
    print("\n".join(f"wrote {path}" for path in paths.values()))


def plan_sweep(config, shard) -> int:
    """--plan: every cell of this shard planned (run.py --plan; seeds do not change a plan), one plan.json /
    plan.md in the sweep's work dir."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from albert_jax.training import plan, sweep

    try:
        names = dict.fromkeys(name for name, _ in sweep.units(config, shard, _CELLS.value))
        jobs = [(name, sweep.cell_config(config, name)) for name in names]
        return plan.run(jobs, _WORKDIR.value, _PLAN.value, search=_PLAN_SEARCH.value)
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    from albert_jax.experiment import parse_flags

    app.run(
        main,
        flags_parser=lambda argv: parse_flags(
            argv,
            "python experiments/ablate.py --config=experiments/configs/ablation_X.py[:scale=demo] "
            "--workdir=DIR [--seeds=N] [--config.field=value ...] [--shard=i/n] [--cells=a,b]",
        ),
    )
