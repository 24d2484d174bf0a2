"""run.py on what goes wrong in real runs, tried on purpose: divergence, corrupted checkpoints, --overwrite, bad
input before any file is written, one-line errors, a failing process in a multi-process job. (A killed run's
resume, parameters and metrics: tests/test_training_pretrain.py.)"""

import json
import os
import subprocess
import time

import jax
import numpy as np
import pytest

import helpers
from albert_jax import pretrained
from helpers import read_metrics, run_command

TINY = os.path.join(helpers.ROOT, "tests", "configs", "tiny_pretrain.py")
DIVERGE = ("--config.optimizer.learning_rate=1000", "--config.optimizer.clip_norm=0", "--config.total_steps=12")

pytestmark = pytest.mark.integration


def run_py(workdir, *overrides, check=True):
    return helpers.run_py(TINY, workdir, *overrides, check=check)


def checkpoint_steps(workdir):
    return sorted(int(p) for p in os.listdir(os.path.join(workdir, "checkpoints")) if p.isdigit())


def strict_json_rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl")) for line in f]


def finite(params):
    return all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(params))


def test_divergence_stops_with_a_message_and_keeps_a_finite_checkpoint(tmp_path):
    result = run_py(tmp_path, *DIVERGE, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "non-finite loss or gradient at step" in result.stderr and "nonfinite=skip" in result.stderr
    strict_json_rows(tmp_path)
    assert not (tmp_path / "final").exists()
    from albert_jax.training import checkpoints

    steps = checkpoint_steps(tmp_path)
    assert steps, "the last finite checkpoint must be kept"
    restored = checkpoints.Checkpointer(str(tmp_path)).restore_latest(None)  # checksum and finiteness checked
    assert restored is not None and finite(restored[0]["params"])


def test_divergence_with_skip_drops_and_counts_the_updates(tmp_path):
    run_py(tmp_path, *DIVERGE, "--config.nonfinite=skip")
    rows = [r for r in strict_json_rows(tmp_path) if r.get("split", "train") == "train"]
    assert sum(r["skipped_steps"] for r in rows) > 0
    assert finite(pretrained.from_pretrained(str(tmp_path / "final"))[1])


def test_a_corrupted_latest_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path):
    run_py(tmp_path, "--config.total_steps=6")
    latest = checkpoint_steps(tmp_path)[-1]
    files = [
        os.path.join(d, f)
        for d, _, fs in os.walk(tmp_path / "checkpoints" / str(latest))
        for f in fs
        if "state" in d and os.path.getsize(os.path.join(d, f)) > 2000
    ]
    target = max(files, key=os.path.getsize)
    data = bytearray(open(target, "rb").read())
    rng = np.random.default_rng(0)
    for i in rng.choice(len(data) - 200, 400, replace=False) + 100:
        data[i] ^= 0xFF
    open(target, "wb").write(bytes(data))
    result = run_py(tmp_path, "--config.total_steps=6")
    assert f"checkpoint step {latest}" in result.stderr and "unusable" in result.stderr
    assert f"corrupt-{latest}" in os.listdir(tmp_path / "checkpoints")
    assert "resumed from micro-step 4" in result.stderr
    assert finite(pretrained.from_pretrained(str(tmp_path / "final"))[1])


def test_a_truncated_only_checkpoint_is_a_one_line_error(tmp_path):
    run_py(tmp_path, "--config.total_steps=2", "--config.checkpoint_every=0")
    for d, _, fs in os.walk(tmp_path / "checkpoints" / "2"):
        for f in fs:
            if "state" in d and os.path.getsize(os.path.join(d, f)) > 2000:
                os.truncate(os.path.join(d, f), 100)
    result = run_py(tmp_path, "--config.total_steps=2", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no usable checkpoint" in result.stderr and "--overwrite" in result.stderr


def test_overwrite_after_a_different_corpus_equals_a_clean_run(tmp_path):
    run_py(tmp_path / "dirty", "--config.total_steps=3", "--config.data.max_documents=100")
    run_py(tmp_path / "dirty", "--config.total_steps=3", "--overwrite")
    run_py(tmp_path / "clean", "--config.total_steps=3")
    for a, b in zip(
        jax.tree_util.tree_leaves(pretrained.from_pretrained(str(tmp_path / "dirty" / "final"))[1]),
        jax.tree_util.tree_leaves(pretrained.from_pretrained(str(tmp_path / "clean" / "final"))[1]),
    ):
        np.testing.assert_array_equal(a, b)
    assert read_metrics(tmp_path / "dirty") == [
        dict(r, tokens_per_sec=d["tokens_per_sec"])
        for r, d in zip(read_metrics(tmp_path / "clean"), read_metrics(tmp_path / "dirty"))
    ]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["--config.keep_checkpoints=0"], "config.keep_checkpoints must be positive"),
        (["--config.nonfinite=ignore"], "config.nonfinite must be 'stop' or 'skip'"),
        (["--config.batch_size=6", "--config.mesh.data=4"], "divisible by the 4 data-parallel devices"),
        (["--config.model.vocab_size=50000", "--config.model.sharing=half"], "sharing must be one of"),
    ],
)
def test_config_checks_fire_before_any_file_is_written(tmp_path, overrides, message):
    result = helpers.run_py(TINY, tmp_path / "run", *overrides, devices=4, check=False)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_errors_are_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    cases = [
        (run_command(os.path.join(helpers.ROOT, "no_such_config.py"), tmp_path / "a"), "no_such_config.py"),
        (run_command(TINY, tmp_path / "file"), "cannot write to the work dir"),
    ]
    for command, message in cases:
        result = subprocess.run(
            command, env=helpers.device_env(), capture_output=True, text=True, timeout=300, cwd=helpers.ROOT
        )
        assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_failing_process_ends_the_whole_job(tmp_path):
    """Process 1 gets an override process 0 does not (its batch cannot split): it fails at once, and
    process 0, waiting for it in a collective, ends within the heartbeat timeout. Both exit non-zero."""
    address = f"127.0.0.1:{helpers.free_port()}"
    common = (
        "--config.total_steps=3",
        f"--coordinator_address={address}",
        "--num_processes=2",
        "--heartbeat_timeout=10",
    )
    start = time.time()
    procs = [
        subprocess.Popen(
            run_command(TINY, tmp_path, *common, f"--process_id={i}", *(["--config.batch_size=7"] if i == 1 else [])),
            env=helpers.device_env(),
            cwd=helpers.ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    errors = [p.communicate(timeout=150)[1] for p in procs]
    assert all(p.returncode != 0 for p in procs), errors
    assert "process 1: error:" in errors[1] and "divisible" in errors[1]
    assert time.time() - start < 120
