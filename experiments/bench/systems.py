"""One interface over the three systems: `make_runner(system, workload, ...)` gives a blocking zero-argument
callable (a forward, or a train step returning its loss), and the measurements every system gets the same way
(step times, compile time, peak memory of a train step, the forward-output equality check).

Only the worker may build 'keras_hub' runners (KERAS_BACKEND must be set before keras is imported); the main
process reaches them through `Server` / `RemoteRunner`, which time each call inside the worker.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from .machine import MIB, ROOT, proc_status, reset_peak_rss
from .workloads import Settings, Workload

MODULES = {"albert_jax": "jax_steps", "transformers": "torch_steps", "keras_hub": "keras_steps"}
FORWARD_TOLERANCE = 1e-4  # max abs difference of float32 backbone outputs that counts as the same model


class ModelMismatch(RuntimeError):
    """Two systems given the same weights and inputs compute different outputs or losses."""


def installed(system: str) -> bool:
    try:
        return importlib.util.find_spec(system) is not None  # the systems' names are their packages'
    except ValueError:  # sys.modules holds None for it: imports of it are blocked
        return False


def make_runner(system: str, w: Workload, dirs: dict, s: Settings):
    """A `Forward` (no loss) or `TrainStep` of `system` for `w`, from the HF directory of its head."""
    module = importlib.import_module(f".{MODULES[system]}", __package__)
    cls = module.Forward if w.loss is None else module.TrainStep
    hf_dir = dirs["qa" if w.head == "qa" else "pretraining"]
    if system == "transformers":
        return cls(hf_dir, w, s.device, s.dtype)
    return cls(hf_dir, w, s.dtype)


def check_outputs(system: str, outputs: dict, reference: dict) -> dict:
    """Max abs differences of `outputs` from albert-jax's `reference`; ModelMismatch above FORWARD_TOLERANCE."""
    diffs = {}
    for name, want in reference.items():
        got = outputs[name]
        if got.shape != want.shape:
            raise ModelMismatch(f"{system} {name} has shape {got.shape}, albert-jax {want.shape}")
        diffs[name] = float(np.max(np.abs(got - want)))
    bad = {k: v for k, v in diffs.items() if not v <= FORWARD_TOLERANCE}
    if bad:
        raise ModelMismatch(
            f"{system} computes a different model than albert-jax from the same weights and inputs: "
            f"max abs differences {bad} > {FORWARD_TOLERANCE}"
        )
    return diffs


def timed(fn) -> tuple[float, object]:
    """(seconds, value) of one call of `fn`; a RemoteRunner's own measurement, without the message passing."""
    if isinstance(fn, RemoteRunner):
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
        seconds, value = timed(fn)
        out[name] = dict(first_seconds=seconds, first_value=value, times=[])
    for _ in range(repeats):
        for name, fn in fns.items():
            out[name]["times"].append(timed(fn)[0])
    for record in out.values():
        record["seconds"] = statistics.median(record["times"])
    return out


def ok(timing: dict, **extra) -> dict:
    """A system's record of a timed workload: median seconds, the repeats, the warm-up call and its value."""
    record = dict(status="ok", seconds=timing["seconds"], times=timing["times"], first_seconds=timing["first_seconds"])
    if timing.get("first_value") is not None:
        record["loss"] = timing["first_value"]
    record.update(extra)
    return record


def error(exc: BaseException) -> dict:
    return dict(status="error", reason=f"{type(exc).__name__}: {exc}"[:500])


def time_alone(runner, repeats: int) -> dict:
    return ok(interleaved({"x": runner}, repeats)["x"])


def keras_compile_record(runner, repeats: int) -> dict:
    """Keras compiles inside its first call: compile time = first call - median steady call."""
    t = interleaved({"x": runner}, repeats)["x"]
    return ok(
        t,
        seconds=t["first_seconds"] - t["seconds"],
        steady_seconds=t["seconds"],
        method="first train_on_batch minus the median of the next calls",
    )


def memory_record(system: str, w: Workload, dirs: dict, s: Settings) -> dict:
    """Peak memory of two train steps of `w` over the process's memory once the model, its optimizer state and
    the inputs exist. CPU: resident set size, value = the peak over both steps (the first one compiles, for
    albert-jax and Keras-Hub) minus the baseline; steady_increase_mib = the second step's own peak over the
    memory it started with. GPU: the framework allocator's peak minus its use at the baseline."""
    runner = make_runner(system, w, dirs, s)
    if hasattr(runner, "allocate_optimizer_state"):
        runner.allocate_optimizer_state()
    device_stats = _device_stats(system)
    gc.collect()
    before = device_stats(reset=True)
    baseline = proc_status("VmRSS")
    hwm_reset = reset_peak_rss()
    loss = runner()
    first_peak = proc_status("VmHWM")
    steady_start = proc_status("VmRSS")
    reset_peak_rss()
    runner()
    steady_peak = proc_status("VmHWM")
    peak = max(first_peak, steady_peak)
    record = dict(
        status="ok",
        loss=loss,
        rss_baseline_mib=baseline / MIB,
        rss_peak_mib=peak / MIB,
        rss_increase_mib=(peak - baseline) / MIB,
        steady_increase_mib=(steady_peak - steady_start) / MIB,
        hwm_reset=hwm_reset,
    )
    if not hwm_reset:
        record["note"] = "VmHWM could not be reset: the peak may predate the baseline (an over-estimate)"
    after = device_stats(reset=False)
    if before is not None and after is not None:
        record["device_increase_mib"] = (after["peak"] - before["current"]) / MIB
    record["value"] = record.get("device_increase_mib", record["rss_increase_mib"])
    if system == "albert_jax":  # XLA's own estimate of the step's scratch memory (compiled again, after the peak)
        record["xla_temp_mib"] = runner.compile().get("xla_temp_bytes", 0) / MIB
    return record


def _device_stats(system: str):
    """A function (reset) -> {'current', 'peak'} bytes of the accelerator allocator, or None on CPU."""
    if system == "transformers":
        import torch

        if not torch.cuda.is_available():
            return lambda reset: None

        def stats(reset):
            if reset:
                torch.cuda.reset_peak_memory_stats()
            return dict(current=torch.cuda.memory_allocated(), peak=torch.cuda.max_memory_allocated())

        return stats
    import jax

    if jax.devices()[0].platform == "cpu":
        return lambda reset: None

    def stats(reset):  # XLA's allocator keeps its peak for the process: the baseline is the current use
        m = jax.devices()[0].memory_stats() or {}
        return dict(current=m.get("bytes_in_use", 0), peak=m.get("peak_bytes_in_use", 0))

    return stats


# ---------------------------------------------------------------------------------------------------------
# Systems in another process
# ---------------------------------------------------------------------------------------------------------
WORKER = "experiments.bench.worker"


class Server:
    """A `python -m experiments.bench.worker serve` process holding one system's models (Keras-Hub: its backend
    is fixed at import). `request(op=..., ...)` sends one request and returns the reply; RuntimeError for a failed
    request (with the worker's message) or a worker that died (with the end of its log)."""

    def __init__(self, system: str, s: Settings, dirs: dict, work: str):
        spec_path = os.path.join(work, f"{system}.spec.json")
        with open(spec_path, "w") as f:
            json.dump(dict(system=system, settings=s.to_dict(), dirs=dirs), f)
        self.system, self.log_path = system, os.path.join(work, f"{system}.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", WORKER, "serve", spec_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=ROOT,
        )

    def request(self, **request) -> dict:
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            with open(self.log_path) as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f"the {self.system} worker exited ({self.proc.poll()}); its log ends:\n{tail}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


class RemoteRunner:
    """The runner of workload `item` inside a Server: `timed()` -> (seconds measured there, value)."""

    def __init__(self, server: Server, item: str):
        self.server, self.item = server, item
        server.request(op="build", item=item)

    def timed(self):
        reply = self.server.request(op="call", item=self.item)
        return reply["seconds"], reply["value"]

    def __call__(self):
        return self.timed()[1]

    def drop(self):
        self.server.request(op="drop", item=self.item)


def run_memory(system: str, s: Settings, dirs: dict, work: str) -> dict:
    """`memory_record` of `system` in a fresh `experiments.bench.worker memory` process (an error record if it
    fails)."""
    spec_path, out_path = os.path.join(work, f"memory-{system}.json"), os.path.join(work, f"memory-{system}.out.json")
    with open(spec_path, "w") as f:
        json.dump(dict(system=system, settings=s.to_dict(), dirs=dirs), f)
    proc = subprocess.run(
        [sys.executable, "-m", WORKER, "memory", spec_path, out_path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0 or not os.path.exists(out_path):
        sys.stderr.write(proc.stderr[-3000:])
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        return dict(status="error", reason=f"worker exited with {proc.returncode}: {last}"[:500])
    with open(out_path) as f:
        return json.load(f)["record"]
