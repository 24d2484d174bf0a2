"""The machine a benchmark runs on: the checkout it runs from, the CPU, library versions and environment, and the
memory and CPU time of a process or a process tree, read from /proc (Linux)."""

import datetime
import importlib.metadata
import os
import platform
import sys
import threading

# The repository root: subprocesses start here, so that `python -m experiments.bench.<module>` finds the package.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIB = 1 << 20
LIBRARIES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "torch",
    "transformers",
    "keras",
    "keras-hub",
    "tensorflow-cpu",
    "tensorflow",
    "numpy",
    "sentencepiece",
    "tokenizers",
)


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
    env = {
        k: os.environ.get(k)
        for k in (
            "XLA_FLAGS",
            "JAX_PLATFORMS",
            "OMP_NUM_THREADS",
            "MKL_NUM_THREADS",
            "TF_CPP_MIN_LOG_LEVEL",
            "KERAS_BACKEND",
        )
    }
    out = dict(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        cpu=cpu_model(),
        cpu_count=os.cpu_count(),
        cpus_usable=len(os.sched_getaffinity(0)),
        load_average=os.getloadavg(),
        platform=platform.platform(),
        versions=versions(),
        env=env,
    )
    if "jax" in sys.modules:
        config = sys.modules["jax"].config
        out["jax_compilation_cache"] = bool(config.jax_enable_compilation_cache and config.jax_compilation_cache_dir)
    return out


# ---------------------------------------------------------------------------------------------------------
# Memory and CPU time, from /proc
# ---------------------------------------------------------------------------------------------------------
def proc_status(field: str, pid: int | str = "self") -> int:
    """A memory field (VmRSS, VmHWM) of /proc/<pid>/status in bytes. OSError: no such process; KeyError: no
    such field (a zombie has no memory left)."""
    with open(f"/proc/{pid}/status") as f:
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


def descendants(pid: int) -> list[int]:
    """pid and every process below it (via /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:  # exited meanwhile
            pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return 0.0


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in descendants(pid))


def _rss_or_zero(pid: int) -> int:
    try:
        return proc_status("VmRSS", pid)
    except (OSError, KeyError):  # exited meanwhile, or a zombie
        return 0


class TreeSampler(threading.Thread):
    """Samples the summed VmRSS of a process tree every `interval` seconds until `stop()`; keeps the peak sum,
    the main process's peak, the most processes seen and each process's last CPU seconds."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.halt = pid, interval, threading.Event()
        self.peak_sum = self.peak_main = self.samples = self.processes = 0
        self.cpu: dict[int, float] = {}

    def run(self):
        while not self.halt.is_set():
            pids = descendants(self.pid)
            rss = {p: _rss_or_zero(p) for p in pids}
            self.peak_sum = max(self.peak_sum, sum(rss.values()))
            self.peak_main = max(self.peak_main, rss.get(self.pid, 0))
            self.processes = max(self.processes, sum(1 for v in rss.values() if v))
            self.cpu.update({p: cpu_seconds(p) or self.cpu.get(p, 0.0) for p in pids})
            self.samples += 1
            self.halt.wait(self.interval)

    def stop(self) -> dict:
        """Stops sampling; returns peak_tree_mb, peak_main_mb (MiB), processes, tree_cpu_seconds,
        main_cpu_seconds and samples."""
        self.halt.set()
        self.join()
        return dict(
            peak_tree_mb=self.peak_sum / MIB,
            peak_main_mb=self.peak_main / MIB,
            processes=self.processes,
            tree_cpu_seconds=sum(self.cpu.values()),
            main_cpu_seconds=self.cpu.get(self.pid, 0.0),
            samples=self.samples,
        )
