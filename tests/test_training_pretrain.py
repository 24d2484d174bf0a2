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
from albert_jax import experiment, modeling, pretrained
from albert_jax.data import prepare
from albert_jax.training import loop, pretrain
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


# -- the sentence objective ------------------------------------------------------------------------------
def random_batch(config, albert_config, rows=8, seed=0):
    """A batch of `rows` random pretraining rows of `config`'s layout (`pretrain.example_spec`)."""
    rng = np.random.default_rng(seed)
    spec = pretrain.example_spec(config)
    predictions = spec["masked_lm_ids"][0][0]
    return {
        "input_ids": rng.integers(5, albert_config.vocab_size, (rows, *spec["input_ids"][0])).astype(np.int32),
        "attention_mask": np.ones((rows, *spec["attention_mask"][0]), np.int32),
        "token_type_ids": np.zeros((rows, *spec["token_type_ids"][0]), np.int32),
        "masked_lm_positions": np.tile(np.arange(1, predictions + 1, dtype=np.int32), (rows, 1)),
        "masked_lm_ids": rng.integers(5, albert_config.vocab_size, (rows, predictions)).astype(np.int32),
        "masked_lm_weights": np.ones((rows, predictions), np.float32),
        "sentence_order_label": rng.integers(0, 2, rows).astype(np.int32),
    }


def test_no_sentence_objective_trains_the_masked_lm_alone():
    """'none': the loss is the MLM loss (the same as SOP's MLM term on the same batch) and the sentence head
    (pooler and classifier) gets a zero gradient; 'sop' and 'nsp' add the head's loss on the batch's labels."""
    config = load_tiny_config()
    albert_config = experiment.albert_config(config.model)
    params = modeling.init_params(modeling.AlbertForPreTraining(albert_config), jax.random.PRNGKey(0))
    batch = random_batch(config, albert_config)
    out = {}
    for objective in ("sop", "nsp", "none"):
        config.data.sentence_objective = objective
        task = pretrain.model_task(config, albert_config)
        loss_and_grad = jax.jit(jax.value_and_grad(task.loss_fn, has_aux=True), static_argnums=3)
        (loss, sums), grads = loss_and_grad(params, batch, jax.random.PRNGKey(1), True)
        out[objective] = float(loss), {k: float(v) for k, v in sums.items()}, grads, task.summarize(sums)
    mlm_loss = out["sop"][1]["mlm_loss"] / out["sop"][1]["mlm_count"]
    sentence_loss = out["sop"][1]["sop_loss"] / out["sop"][1]["sop_count"]
    assert out["none"][1] == out["sop"][1] == out["nsp"][1]  # the same statistics of the batch
    np.testing.assert_allclose(out["none"][0], mlm_loss, rtol=1e-5)
    np.testing.assert_allclose([out["sop"][0], out["nsp"][0]], mlm_loss + sentence_loss, rtol=1e-5)
    sentence_head = {"sop_classifier": out["none"][2]["sop_classifier"], "pooler": out["none"][2]["albert"]["pooler"]}
    assert all(not np.asarray(g).any() for g in jax.tree_util.tree_leaves(sentence_head))
    assert all(np.asarray(g).any() for g in jax.tree_util.tree_leaves(out["sop"][2]["sop_classifier"]))
    assert np.asarray(out["none"][2]["predictions"]["dense"]["kernel"]).any()
    assert set(out["none"][3]) == {"loss", "mlm_loss", "mlm_accuracy"}
    assert out["nsp"][3]["nsp_loss"] == out["sop"][3]["sop_loss"] and "sop_loss" not in out["nsp"][3]
    with pytest.raises(ValueError) as error:
        config.data.sentence_objective = "mlm"
        pretrain.validate(config, albert_config)
    assert str(error.value) == "config.data.sentence_objective must be one of ('sop', 'nsp', 'none'), got 'mlm'"


def test_held_out_metrics_measure_the_head_on_both_sets():
    """mlm_* and sop_* come from the SOP pairs, nsp_* from the NSP pairs; loss adds the objective's own."""
    sets = {"sop": dict(input_ids=np.array([0.0, 2.0])), "nsp": dict(input_ids=np.array([1.0, 1.0, 4.0]))}

    def predict(arrays):  # per-row statistics that say which set they were measured on
        rows = arrays["input_ids"]
        return dict(
            mlm_loss=rows, mlm_correct=rows > 1, mlm_count=np.ones_like(rows), sop_loss=3 * rows,
            sop_correct=rows > 0, sop_count=np.ones_like(rows),
        )  # fmt: skip

    rows = {objective: pretrain.held_out_metrics(sets, objective, predict) for objective in ("sop", "nsp", "none")}
    expected = dict(
        mlm_loss=1.0, mlm_accuracy=0.5, sop_loss=3.0, sop_accuracy=0.5, nsp_loss=6.0, nsp_accuracy=1.0, num_examples=2
    )
    for objective, loss in (("sop", 4.0), ("nsp", 7.0), ("none", 1.0)):
        np.testing.assert_allclose(rows[objective].pop("loss"), loss)
        assert rows[objective] == pytest.approx(expected)
    without_nsp = pretrain.held_out_metrics({"sop": sets["sop"]}, "sop", predict)  # a tfrecord: source
    assert not any(k.startswith("nsp") for k in without_nsp) and without_nsp["loss"] == 4.0


@pytest.mark.parametrize("objective, masking", [("sop", "static"), ("nsp", "dynamic"), ("none", "static")])
def test_every_objective_is_evaluated_on_both_held_out_sets(tmp_path, objective, masking):
    """Training rows name the sentence metrics by the objective trained (none without a sentence loss);
    every eval row measures MLM, SOP and NSP, its loss being MLM's plus the objective's."""
    config = load_tiny_config()
    config.data.sentence_objective, config.data.masking = objective, masking
    config.total_steps, config.eval_every, config.checkpoint_every = 4, 2, 0
    pretrain.run(config, str(tmp_path))
    trained = {"sop": {"sop_loss", "sop_accuracy"}, "nsp": {"nsp_loss", "nsp_accuracy"}, "none": set()}[objective]
    for row in read_metrics(tmp_path):
        assert {"loss", "mlm_loss", "mlm_accuracy"} | trained <= set(row)
        assert not ({"sop_loss", "sop_accuracy", "nsp_loss", "nsp_accuracy"} - trained) & set(row)
    evals = read_metrics(tmp_path, "eval")
    assert [r["step"] for r in evals] == [2, 4]
    for row in evals:
        for kind in ("mlm", "sop", "nsp"):
            assert np.isfinite(row[f"{kind}_loss"]) and 0 <= row[f"{kind}_accuracy"] <= 1, kind
        sentence_loss = row[f"{objective}_loss"] if objective != "none" else 0.0
        np.testing.assert_allclose(row["loss"], row["mlm_loss"] + sentence_loss, rtol=1e-6)
    held_out = prepare.read_manifest(str(tmp_path / "data"))["examples"]
    assert held_out["eval_nsp"] > 0
    assert evals[0]["num_examples"] == min(held_out["eval"], config.data.eval_batches * loop.eval_batch_size(config))


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
        (
            ["--config.data.sentence_objective=mlm"],
            "error: config.data.sentence_objective must be one of ('sop', 'nsp', 'none'), got 'mlm'\n",
        ),
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
