"""albert_jax.training.pretrain end to end, in process and through run.py: learning, exact resume, sharding,
multi-process, bad input, gradient accumulation."""

import json
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

import helpers
from albert_jax import experiment, pretrained
from albert_jax.training import pretrain
from helpers import ROOT, device_env, read_metrics, run_command, untimed

TINY = os.path.join(ROOT, "tests", "configs", "tiny_pretrain.py")


def load_tiny_config():
    return experiment.load_config(TINY)


def run_py(workdir, *overrides, devices=1, check=True, timeout=300):
    """`python run.py` on the tiny config in a subprocess with `devices` CPU devices."""
    return helpers.run_py(TINY, workdir, *overrides, devices=devices, check=check, timeout=timeout)


def final_params(workdir):
    return pretrained.from_pretrained(os.path.join(workdir, "final"))[1]


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)


# -- learning --------------------------------------------------------------------------------------------
def test_tiny_pretraining_learns(tmp_path):
    config = load_tiny_config()
    config.total_steps, config.log_every, config.eval_every, config.checkpoint_every = 150, 10, 75, 0
    config.batch_size = 16
    config.optimizer.warmup_steps = 10
    pretrain.run(config, str(tmp_path))
    train = read_metrics(tmp_path)
    assert train[0]["step"] == 10 and train[-1]["step"] == 150
    assert train[-1]["loss"] < train[0]["loss"] - 0.8
    assert train[-1]["mlm_accuracy"] > train[0]["mlm_accuracy"] + 0.03
    for key in ("step", "loss", "mlm_accuracy", "sop_accuracy", "learning_rate", "tokens_per_sec"):
        assert key in train[-1]
    assert train[-1]["model_tflops_per_sec"] > 0 and "mfu" not in train[-1]  # no peak known for a CPU
    evals = read_metrics(tmp_path, "eval")
    assert [r["step"] for r in evals] == [75, 150]
    assert evals[-1]["mlm_accuracy"] > 10 / 600  # chance is 1/600
    assert os.path.exists(tmp_path / "metrics.csv") and os.listdir(tmp_path / "tensorboard")


# -- determinism and resume ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.integration
def test_sigkill_and_restart_is_bit_exact(tmp_path):
    """Kill a run (SIGKILL) once it has written a checkpoint; the restarted run ends with the same
    parameters, bit for bit, as an uninterrupted run of the same config, and its metrics files (train and eval
    rows, metrics.csv) read as that run's. Masks are drawn by the loader (dynamic masking), in two worker
    processes for the killed run and in the main process for the reference."""
    steps = (
        "--config.total_steps=60",
        "--config.data.masking=dynamic",
        "--config.log_every=3",
        "--config.checkpoint_every=4",
        "--config.eval_every=10",
    )
    reference = tmp_path / "reference"
    run_py(reference, *steps)
    killed = tmp_path / "killed"
    workers = (*steps, "--config.data.loader_workers=2")
    killed_at = helpers.kill_after_checkpoint(run_command(TINY, killed, *workers), killed / "checkpoints", min_step=12)
    assert 12 <= killed_at < 60
    run_py(killed, *workers)
    assert_trees_equal(final_params(killed), final_params(reference))
    for split in ("train", "eval"):
        want, got = read_metrics(reference, split), read_metrics(killed, split)
        assert [r["step"] for r in got] == [r["step"] for r in want] and got[-1]["step"] == 60
        for a, b in zip(want, got):
            assert untimed(a) == untimed(b), (split, a["step"])
    with open(killed / "metrics.csv") as f:
        assert [line.split(",")[0] for line in f][1:] == [str(r["step"]) for r in read_metrics(killed)]


@pytest.mark.integration
def test_sigterm_saves_and_resumes(tmp_path):
    cmd = run_command(TINY, tmp_path, "--config.total_steps=100000", "--config.checkpoint_every=0")
    proc = subprocess.Popen(
        cmd, env=device_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (tmp_path / "metrics.jsonl").exists() and len(read_metrics(tmp_path)) >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 75, stderr[-2000:]  # preempted: run again
    saved = sorted(int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit())
    assert saved and saved[-1] >= 3
    assert "resume" in stderr


# -- sharding and multi-process --------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("mesh", [("4", "1"), ("2", "2")], ids=["data4", "data2-fsdp2"])
@pytest.mark.integration
def test_sharded_training_matches_one_device(tmp_path, mesh):
    run_py(tmp_path / "one", "--config.total_steps=3")
    run_py(
        tmp_path / "many",
        "--config.total_steps=3",
        f"--config.mesh.data={mesh[0]}",
        f"--config.mesh.fsdp={mesh[1]}",
        devices=4,
    )
    one, many = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "many")
    np.testing.assert_allclose([r["loss"] for r in many], [r["loss"] for r in one], rtol=1e-5)
    for a, b in zip(
        jax.tree_util.tree_leaves(final_params(tmp_path / "one")),
        jax.tree_util.tree_leaves(final_params(tmp_path / "many")),
    ):
        np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.slow
@pytest.mark.integration
def test_two_processes_match_one_process(tmp_path):
    """Two local CPU processes (jax.distributed, one device each) train with the same losses as one
    process with two devices on the same global batch, their parameters sharded across the processes
    (fsdp=2); final/ holds the whole parameters, those of the one-process run."""
    run_py(tmp_path / "single", "--config.total_steps=3", devices=2)
    address = f"127.0.0.1:{helpers.free_port()}"
    procs = [
        subprocess.Popen(
            run_command(
                TINY,
                tmp_path / "multi",
                "--config.total_steps=3",
                "--config.mesh.data=1",
                "--config.mesh.fsdp=2",
                f"--coordinator_address={address}",
                "--num_processes=2",
                f"--process_id={i}",
            ),
            env=device_env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    single, multi = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "multi")
    assert len(multi) == len(single) == 3
    np.testing.assert_allclose([r["loss"] for r in multi], [r["loss"] for r in single], rtol=1e-5)
    _, want = pretrained.from_pretrained(str(tmp_path / "single" / "final"))
    _, got = pretrained.from_pretrained(str(tmp_path / "multi" / "final"))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), got, want)


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_to_one_process_stops_the_whole_job(tmp_path):
    """A preempted host (SIGTERM to process 1 only): both processes save the same checkpoint and exit 75."""
    address = f"127.0.0.1:{helpers.free_port()}"
    procs = [
        subprocess.Popen(
            run_command(
                TINY,
                tmp_path,
                "--config.total_steps=100000",
                "--config.checkpoint_every=0",
                f"--coordinator_address={address}",
                "--num_processes=2",
                f"--process_id={i}",
            ),
            env=device_env(),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.time() + 240
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if (tmp_path / "metrics.jsonl").exists() and len(read_metrics(tmp_path)) >= 3:
            break
        time.sleep(0.1)
    procs[1].send_signal(signal.SIGTERM)
    errors = [p.communicate(timeout=120)[1] for p in procs]
    for p, err in zip(procs, errors):
        assert p.returncode == 75, err[-3000:]
    saved = [int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit()]
    assert len(saved) == 1 and saved[0] >= 3


# -- bad input stops before compute ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides,message",
    [
        (["--config.data.source=files:/nonexistent/*.txt"], "/nonexistent/"),
        (["--config.data.source=tfds:no_such_dataset_xyz"], "no_such_dataset_xyz"),
        (["--config.modle.hidden_size=3"], "modle"),
        (["--config.model.hidden_sise=3"], "hidden_sise"),
        (["--config.batch_size=6", "--config.mesh.data=4"], "divisible by the 4 data-parallel devices"),
        (["--config.data.max_seq_length=128"], "exceeds the model's max_position_embeddings (64)"),
        (["--config.model.sharing=some"], "sharing must be one of"),
        (["--config.foo=1"], "error: --config.foo: the config has no field 'foo'\n"),
        (["--config.model.hidden_sise=3"], "no field 'model.hidden_sise' (did you mean --config.model.hidden_size?)\n"),
        (["--config.modle.hidden_size=3"], "no field 'modle' (did you mean --config.model?)\n"),
        (["--config.total_steps=None"], "error: --config.total_steps=None: config.total_steps takes int, not None"),
    ],
)
@pytest.mark.integration
def test_bad_input_fails_fast_with_a_message(tmp_path, overrides, message):
    start = time.time()
    result = run_py(tmp_path, *overrides, devices=4, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "checkpoints").exists()
    assert time.time() - start < 120


@pytest.mark.integration
def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    result = run_py(tmp_path / "w", f"--config.data.source=files:{tmp_path}/empty.txt", check=False)
    assert result.returncode != 0 and "empty.txt" in result.stderr


@pytest.mark.integration
def test_workdir_of_another_run_is_not_overwritten(tmp_path):
    run_py(tmp_path, "--config.total_steps=2")
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    result = run_py(tmp_path, "--config.total_steps=2", "--config.seed=5", check=False)
    assert result.returncode != 0 and "different run" in result.stderr and "seed" in result.stderr
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before
    run_py(tmp_path, "--config.total_steps=2", "--config.seed=5", "--overwrite")
    assert json.loads((tmp_path / "run_config.json").read_text())["seed"] == 5


# -- gradient accumulation -------------------------------------------------------------------------------


@pytest.mark.integration
def test_gradient_accumulation_takes_the_same_optimizer_steps(tmp_path):
    """grad_accum_steps=2 splits each batch of 8 into two micro-batches of 4: the first step sees the
    same 8 examples with the same parameters (equal metrics), and the schedule counts optimizer steps."""
    no_dropout = ["--config.total_steps=3", "--config.model.classifier_dropout_prob=0"]
    run_py(tmp_path / "full", *no_dropout)
    run_py(tmp_path / "accum", *no_dropout, "--config.optimizer.grad_accum_steps=2")
    full, accum = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "accum")
    assert [r["step"] for r in accum] == [r["step"] for r in full] == [1, 2, 3]
    for key in ("loss", "mlm_accuracy", "sop_accuracy"):
        np.testing.assert_allclose(accum[0][key], full[0][key], rtol=1e-5)
    np.testing.assert_allclose([r["learning_rate"] for r in accum], [r["learning_rate"] for r in full])
    np.testing.assert_allclose(accum[-1]["loss"], full[-1]["loss"], rtol=0.02)
