"""The benchmark's subprocesses, started by its main process (`python -m experiments.bench`).

    python -m experiments.bench.worker serve SPEC.json            # Keras-Hub or albert-jax, call by call
    python -m experiments.bench.worker memory SPEC.json OUT.json  # one system's peak memory, in a fresh process

Keras-Hub cannot share the main process (KERAS_BACKEND is read when keras is first imported), nor can albert-jax
set up as run.py sets itself up (hostmem's allocator setting is process-wide and would speed transformers up
too), so `serve` keeps one system's models in this process and runs one call per request over stdin/stdout: the
main process interleaves their calls with transformers' as it does its own. Requests and replies are JSON lines:
  {"op": "check", "reference": npz} -> {"max_abs_diff": {...}} or {"mismatch": message}: backbone outputs vs
                                      albert-jax's (an npz of last_hidden_state, pooler_output)
  {"op": "outputs", "path": npz}    -> {}: albert-jax's backbone outputs, written to `path` (the reference of the
                                      checks; its forward runner, compiled, is kept for the forward measurement)
  {"op": "build", "item": name}    -> {}: the runner of workload `name` (forward, train, pretrain, squad, compile_<L>)
  {"op": "call", "item": name}     -> {"seconds", "value"}: one call (a train step returns its loss)
  {"op": "drop", "item": name}     -> {}
  {"op": "environment"}            -> machine.environment() of the worker and host_memory_reused (hostmem's setting)
any failure -> {"error": message}. SPEC: {"system", "settings", "dirs" ({"pretraining", "qa"}: HF directories)};
`memory` writes {"environment", "record"} to OUT.
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"  # before anything imports keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Keras-Hub imports TensorFlow (and tensorflow-text) when installed, for its tokenizers and tf.data paths; the
# models here never use them. Blocking the import keeps the worker a pure JAX process (~2.5 s and a few hundred
# MiB of RSS less) and its memory baseline comparable with albert-jax's.
sys.modules.setdefault("tensorflow", None)
sys.modules.setdefault("tensorflow_text", None)

import gc  # noqa: E402
import json  # noqa: E402
import traceback  # noqa: E402

import numpy as np  # noqa: E402

from . import systems  # noqa: E402
from .machine import environment  # noqa: E402
from .workloads import Settings, workloads  # noqa: E402


def _handle(request: dict, spec: dict, s: Settings, runners: dict) -> dict:
    op, name = request["op"], request.get("item")

    def runner(item):  # built (and compiled) once; the measurements reuse it
        if item not in runners:
            runners[item] = systems.make_runner(spec["system"], workloads(s)[item], spec["dirs"], s)
        return runners[item]

    if op == "environment":
        return dict(environment(), host_memory_reused=spec["host_memory_reused"])
    if op == "check":
        with np.load(request["reference"]) as reference:
            try:
                diffs = systems.check_outputs(spec["system"], runner("forward").outputs(), dict(reference))
            except systems.ModelMismatch as e:
                return {"mismatch": str(e)}
        return {"max_abs_diff": diffs}
    if op == "outputs":
        np.savez(request["path"], **runner("forward").outputs())
        return {}
    if op == "build":
        runner(name)
        return {}
    if op == "call":
        seconds, value = systems.timed(runners[name])
        return {"seconds": seconds, "value": value}
    if op == "drop":
        runners.pop(name, None)
        gc.collect()
        return {}
    raise ValueError(f"unknown request {request!r}")


def _set_up_like_run_py(spec: dict, s: Settings) -> bool:
    """albert-jax's worker reuses host memory as run.py does (before jax's backend starts); whether it does."""
    if spec["system"] == "albert_jax" and s.reuse_host_memory:
        from albert_jax.training import hostmem

        return hostmem.reuse_cpu_step_memory()
    return False


def serve(spec_path: str) -> int:
    """Answers requests from stdin until it closes. Anything else printed (by Keras, XLA) goes to stderr."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    with open(spec_path) as f:
        spec = json.load(f)
    s = Settings.from_dict(spec["settings"])
    spec["host_memory_reused"] = _set_up_like_run_py(spec, s)
    runners = {}
    for line in sys.stdin:
        try:
            reply = _handle(json.loads(line), spec, s, runners)
        except Exception as e:  # reported to the main process, which records it for this item and goes on
            traceback.print_exc()
            reply = {"error": f"{type(e).__name__}: {e}"[:500]}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


def memory(spec_path: str, out_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    s = Settings.from_dict(spec["settings"])
    _set_up_like_run_py(spec, s)
    record = systems.memory_record(spec["system"], workloads(s)["memory"], spec["dirs"], s)
    with open(out_path, "w") as f:
        json.dump({"environment": environment(), "record": record}, f, indent=2)
    return 0


if __name__ == "__main__":
    mode, *paths = sys.argv[1:]
    sys.exit({"serve": serve, "memory": memory}[mode](*paths))
