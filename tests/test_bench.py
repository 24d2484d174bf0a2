"""experiments.bench: workloads, their FLOP count and report, and `python -m experiments.bench --quick` writing
every column."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import albert_jax as aj
from albert_jax.flops import model_flops
from albert_jax.training import hostmem
from experiments.bench import flops, report, workloads
from experiments.bench.machine import ROOT


def test_workload_flops_are_the_library_count_of_the_workload():
    config = aj.AlbertConfig.from_preset("albert-tiny")
    pretrain = workloads.Workload("pretrain", "pretraining", "mlm_masked_sop", 4, 64, positions=20, layers=2)
    two_layers = config.replace(num_hidden_layers=2)
    assert flops.workload_flops(config, pretrain) == model_flops(two_layers, 4, 64, "pretraining", 20, training=True)
    forward = workloads.Workload("forward", "backbone", None, 4, 64)
    assert flops.workload_flops(config, forward) == model_flops(config, 4, 64, "backbone")


def test_inputs_are_deterministic_and_masked_positions_distinct():
    w = workloads.Workload("pretrain", "pretraining", "mlm_masked_sop", 4, 64, positions=20)
    a, b = workloads.make_inputs(w, 300), workloads.make_inputs(w, 300)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    positions = a["masked_lm_positions"]
    assert all(len(set(row)) == 20 for row in positions) and positions.min() >= 1 and positions.max() < 63


def test_report_names_a_system_that_did_not_run():
    item = dict(
        title="a. forward",
        kind="throughput",
        ratio={"transformers": 2.0},
        systems={
            "albert_jax": dict(status="ok", seconds=0.5, tokens_per_s=100.0, mfu=0.1),
            "transformers": dict(status="ok", seconds=1.0, tokens_per_s=50.0),
            "keras_hub": dict(status="not installed", reason="pip install -e .[bench]"),
        },
    )
    meta = dict(
        command="python -m experiments.bench",
        device="cpu",
        settings=dict(dtype="float32", preset="p", quick=True, repeats=1),
        environment=dict(date="d", cpu="c", cpus_usable=1, cpu_count=1, versions={}, env={}),
        threads={},
    )
    row = [
        line
        for line in report.markdown(dict(meta=meta, items={"forward": item})).splitlines()
        if line.startswith("| a. forward")
    ][0]
    assert "not installed: pip install -e .[bench]" in row and "2.00×" in row and "MFU 10.0%" in row


@pytest.mark.integration
def test_quick_run_writes_every_column(tmp_path):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user runs it
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.bench",
            "--quick",
            "--only",
            "peak,forward,train",
            "--repeats",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    meta = results["meta"]
    assert {"date", "cpu", "versions", "env"} <= meta["environment"].keys()
    assert meta["threads"]["torch_num_threads"] >= 1 and meta["settings"]["quick"]
    # albert-jax's steps ran in a worker set up as run.py sets itself up (hostmem), the others at the defaults
    assert meta["albert_jax_worker"]["host_memory_reused"] is (hostmem.glibc() is not None)
    # compiles are real even where a persistent cache is configured (this suite's conftest sets one)
    assert os.environ.get("JAX_COMPILATION_CACHE_DIR")
    for where in (meta["environment"], meta["albert_jax_worker"]):
        assert where["jax_compilation_cache"] is False
    assert results["matmul_peak"]["xla_float32"]["flops_per_s"] > 0
    assert results["matmul_peak"]["pytorch_float32"]["flops_per_s"] > 0
    diffs = results["checks"]["transformers backbone outputs vs albert-jax"]["max_abs_diff"]
    assert max(diffs.values()) <= 1e-4
    assert list(results["items"]) == ["forward", "train"]
    keras_installed = importlib.util.find_spec("keras_hub") is not None
    for name, item in results["items"].items():
        assert item["model_flops"] > 0
        for system in ("albert_jax", "transformers"):
            record = item["systems"][system]
            assert record["status"] == "ok", (name, system, record)
            assert record["seconds"] > 0 and record["tokens_per_s"] > 0 and 0 < record["mfu"]
        assert item["ratio"]["transformers"] > 0
        keras = item["systems"]["keras_hub"]
        assert keras["status"] == ("ok" if keras_installed else "not installed"), keras
    train = results["items"]["train"]["systems"]
    assert train["transformers"]["loss"] == pytest.approx(train["albert_jax"]["loss"], rel=1e-4)
    markdown = (tmp_path / "results.md").read_text()
    assert "| a. forward" in markdown and "| b. train step" in markdown


@pytest.mark.parametrize(
    "module", ["experiments.bench", "experiments.bench.data_pipeline", "experiments.bench.data_vs_step"]
)
@pytest.mark.integration
def test_entry_points_run_as_modules_from_the_checkout(module):
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-3000:]
