"""run.py on what goes wrong in real runs, tried on purpose: divergence, corrupted checkpoints, --overwrite, bad
input before any file is written, one-line errors, a failing process in a multi-process job. (A killed run's
resume, parameters and metrics: tests/test_training_pretrain.py.)"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import helpers
from albert_jax import pretrained
from helpers import read_metrics, run_command, untimed

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
    assert [untimed(r) for r in read_metrics(tmp_path / "dirty")] == [
        untimed(r) for r in read_metrics(tmp_path / "clean")
    ]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["--config.keep_checkpoints=0"], "config.keep_checkpoints must be positive"),
        (["--config.nonfinite=ignore"], "config.nonfinite must be 'stop' or 'skip'"),
        (["--config.batch_size=6", "--config.mesh.data=4"], "divisible by the 4 data-parallel devices"),
        (["--config.model.vocab_size=50000", "--config.model.sharing=half"], "sharing must be one of"),
        (["--config.checkpoint_every=-1"], "config.checkpoint_every must be positive or 0"),
        (["--config.data.source=files:/missing/*.txt"], "config.data.source: No file matches '/missing/*.txt'"),
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


def test_a_sigterm_exits_75_leaves_no_final_and_a_rerun_finishes(tmp_path):
    """A preempted run (SIGTERM) saves its checkpoint and exits 75 ("run again"), writing neither final/ nor the
    export; fine-tuning from its work dir is refused saying how far it got; run again, it finishes and exports."""
    from albert_jax.training import export, initialization

    overrides = ("--config.total_steps=200", "--config.checkpoint_every=0", "--config.eval_every=0")
    overrides += ("--config.export.hf_dir=hf",)
    proc = subprocess.Popen(
        run_command(TINY, tmp_path, *overrides),
        env=helpers.device_env(),
        cwd=helpers.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (tmp_path / "metrics.jsonl").exists() and len(read_metrics(tmp_path)) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 75, stderr[-2000:]
    assert "preempted: stopped at step" in stderr and "run again" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "final").exists() and not (tmp_path / "hf").exists()
    step = checkpoint_steps(tmp_path)[-1]
    with pytest.raises(FileNotFoundError, match=rf"has not finished \(step {step} of 200\); run it again"):
        initialization.resolve(str(tmp_path))
    run_py(tmp_path, *overrides)
    done = {"step": 200, "total_steps": 200, "complete": True}
    assert export.read_run_state(str(tmp_path / "final")) == export.read_run_state(str(tmp_path / "hf")) == done
    assert initialization.resolve(str(tmp_path)).directory == str(tmp_path / "final")


def test_a_second_launch_on_a_work_dir_is_refused_naming_the_first(tmp_path):
    """Two launches at once: one runs, the other is refused at once naming the host and PID of the one that holds the
    work dir; the metrics hold each step once."""
    procs = [
        subprocess.Popen(
            run_command(TINY, tmp_path, "--config.total_steps=40"),
            env=helpers.device_env(),
            cwd=helpers.ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=400)[1] for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 1], errors
    ran, refused = (0, 1) if procs[0].returncode == 0 else (1, 0)
    assert re.search(rf"is in use by another run.*held by host .+, pid {procs[ran].pid}\)", errors[refused])
    assert "Traceback" not in errors[refused], errors[refused]
    assert [r["step"] for r in read_metrics(tmp_path)] == list(range(1, 41))


def test_overwrite_refuses_a_directory_that_is_not_a_work_dir(tmp_path):
    """--overwrite deletes a work dir's contents; a directory of something else is refused and left alone."""
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_text("mine too")
    result = run_py(tmp_path, "--overwrite", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{tmp_path} holds notes.txt, photos: nothing was deleted" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "photos" / "a.jpg").read_text() == "mine too"


def test_a_torn_metrics_line_resumes_and_a_failed_save_is_one_line(tmp_path):
    """A run cut off with a partial last line in metrics.jsonl and metrics.csv (a write cut short) resumes:
    the torn line is dropped and the redone rows are the uninterrupted run's; a checkpoint save that then
    fails (a file-size limit, as a full disk) ends the run with one line naming the directory and the reason."""
    args = ("--config.total_steps=4", "--config.eval_every=0")
    run_py(tmp_path, *args)
    done = read_metrics(tmp_path)
    shutil.rmtree(tmp_path / "checkpoints" / "4")  # as if killed after step 4's rows, before its checkpoint
    for name in ("metrics.jsonl", "metrics.csv"):
        text = (tmp_path / name).read_text()
        (tmp_path / name).write_text(text[: text.rindex("\n", 0, -1) + 9])  # 8 characters of the last line
    # run.py under a 10 kB file-size limit, set by a small launcher that then execs it (a preexec_fn would fork
    # this multithreaded JAX process)
    limited = "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000)); "
    limited += "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    command = run_command(TINY, tmp_path, *args)
    result = subprocess.run(
        [sys.executable, "-c", limited, *command[1:]],
        env=helpers.device_env(),
        capture_output=True,
        text=True,
        timeout=400,
        cwd=helpers.ROOT,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "metrics.jsonl: dropped its last line" in result.stderr and "metrics.csv: dropped" in result.stderr
    # run.py's error, written as one line; tensorstore's background threads print tracebacks of their own
    # (callbacks into orbax's closed event loops) that can interleave with it on stderr, so it is found as text.
    message = f"error: cannot write a checkpoint in {tmp_path / 'checkpoints'}: File too large"
    assert message in result.stderr, result.stderr[-3000:]
    resumed = read_metrics(tmp_path)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert [untimed(r) for r in resumed] == [untimed(r) for r in done]
    with open(tmp_path / "metrics.csv") as f:
        assert [line.split(",")[0] for line in f] == ["step", "1", "2", "3", "4"]
