"""What every benchmark shares: results go to experiments/bench/results/<name>.json and to stdout; timing with a
warm-up call and medians; the machine and library versions; the process's resident memory."""

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "torch", "transformers", "keras", "keras-hub", "tensorflow-cpu",
             "tensorflow", "numpy", "sentencepiece", "tokenizers")


def write_result(name: str, result: dict) -> None:
    """Writes `result` to results/<name>.json and prints it."""
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


# ---------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------
def _timed(fn):
    if hasattr(fn, "timed"):  # a runner in another process: its own measurement, without the message passing
        return fn.timed()
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def interleaved(fns: dict, repeats: int) -> dict:
    """Times each zero-argument blocking callable of `fns` once as warm-up, then `repeats` times, the systems
    taking turns (so a slow spell of a shared machine hits all of them). Returns per name: first_seconds
    (the warm-up call: compilation included), first_value (what it returned, e.g. the initial loss), times
    and seconds (their median)."""
    out = {}
    for name, fn in fns.items():
        seconds, value = _timed(fn)
        out[name] = dict(first_seconds=seconds, first_value=value, times=[])
    for _ in range(repeats):
        for name, fn in fns.items():
            out[name]["times"].append(_timed(fn)[0])
    for record in out.values():
        record["seconds"] = statistics.median(record["times"])
    return out


def measure(fn, repeats: int) -> dict:
    """`interleaved` for one callable."""
    return interleaved({"fn": fn}, repeats)["fn"]


# ---------------------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    """Installed versions of the libraries that matter here (None: not installed), read without importing."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment() -> dict:
    """Date, host CPU and its load average (1, 5, 15 min: other work on a shared machine), library versions,
    the thread-relevant environment variables of this process and, where it runs JAX, whether JAX's persistent
    compilation cache is on (it must not be: compile times would be cache loads)."""
    env = {k: os.environ.get(k) for k in ("XLA_FLAGS", "JAX_PLATFORMS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                          "TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")}
    out = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               cpu=cpu_model(), cpu_count=os.cpu_count(), cpus_usable=len(os.sched_getaffinity(0)),
               load_average=os.getloadavg(), platform=platform.platform(), versions=versions(), env=env)
    if "jax" in sys.modules:
        config = sys.modules["jax"].config
        out["jax_compilation_cache"] = bool(config.jax_enable_compilation_cache and config.jax_compilation_cache_dir)
    return out


# ---------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------
def proc_status(field: str) -> int:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Sets VmHWM to the current RSS (Linux >= 4.0: '5' into /proc/self/clear_refs); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
