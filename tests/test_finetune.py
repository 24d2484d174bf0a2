"""Fine-tuning end to end through run.py and the experiment configs, from the shared tiny pretraining run:
synthetic but learnable tasks in the original GLUE / SQuAD / RACE formats, eval-only mode, exact resume."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from albert_jax import pretrained

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "experiments", "configs")
FILLER = ("the function returns a list of values from each module and its name is used for this object "
          "when we call it with an argument or with none").split()

pytestmark = pytest.mark.integration


def run_py(config, workdir, *overrides, check=True, timeout=400):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    cmd = [sys.executable, os.path.join(ROOT, "run.py"), f"--config={os.path.join(CONFIGS, config)}",
           f"--workdir={workdir}", *overrides]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_metrics(workdir, split="eval"):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if r.get("split", "train") == split]


def sentence(rng, marker):
    words = list(rng.choice(FILLER, 6))
    words.insert(int(rng.integers(0, 7)), marker)
    return " ".join(words)


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    """An SST-2-format task (the official layout and columns): label 1 iff the sentence says 'true'."""
    root = tmp_path_factory.mktemp("glue")
    (root / "SST-2").mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 400), ("dev", 100), ("test", 30)):
        labels = rng.integers(0, 2, n)
        texts = [sentence(rng, "true" if y else "false") for y in labels]
        if split == "test":
            rows = ["index\tsentence"] + [f"{i}\t{t}" for i, t in enumerate(texts)]
        else:
            rows = ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in zip(texts, labels)]
        (root / "SST-2" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


def glue_overrides(glue_dir, init_from, *extra):
    return (f"--config.init_from={init_from}", f"--config.data.glue_dir={glue_dir}", *extra)


@pytest.mark.parametrize("source", ["final", "hf"])
def test_glue_learns_from_a_pretraining_run_and_from_a_transformers_dir(tiny_pretrained, glue_dir, tmp_path,
                                                                        source):
    workdir = tmp_path / "sst2"
    result = run_py("glue.py:task=sst2,runlocal=True", workdir, *glue_overrides(glue_dir, tiny_pretrained / source))
    assert "freshly initialised: classifier/bias, classifier/kernel" in result.stderr
    evals = read_metrics(workdir)
    assert [r["step"] for r in evals] == [30, 60]
    assert evals[-1]["num_examples"] == 100
    assert evals[-1]["accuracy"] >= 0.95, evals
    submission = (workdir / "glue_submission" / "SST-2.tsv").read_text().splitlines()
    assert submission[0] == "index\tprediction" and len(submission) == 31
    assert {line.split("\t")[1] for line in submission[1:]} <= {"0", "1"}
    config, params = pretrained.from_pretrained(str(workdir / "final"))
    assert config.num_labels == 2 and params["classifier"]["kernel"].shape == (config.hidden_size, 2)


def test_glue_eval_only_reproduces_the_final_evaluation(tiny_pretrained, glue_dir, tmp_path):
    trained = tmp_path / "trained"
    run_py("glue.py:task=sst2,runlocal=True", trained, *glue_overrides(glue_dir, tiny_pretrained / "final"),
           "--config.total_steps=20", "--config.eval_every=0")
    evaluated = tmp_path / "evaluated"
    run_py("glue.py:task=sst2,runlocal=True", evaluated, *glue_overrides(glue_dir, trained / "final"),
           "--config.total_steps=0")
    final, again = read_metrics(trained)[-1], read_metrics(evaluated)
    assert [r["step"] for r in again] == [0]
    assert again[0]["accuracy"] == final["accuracy"] and again[0]["num_examples"] == 100
    assert not (evaluated / "checkpoints").exists() or not os.listdir(evaluated / "checkpoints")


@pytest.mark.slow
def test_sigkill_and_restart_is_bit_exact_in_finetuning(tiny_pretrained, glue_dir, tmp_path):
    """Like pretraining: a fine-tuning run killed after a checkpoint and restarted ends with the
    parameters of an uninterrupted run, bit for bit."""
    overrides = glue_overrides(glue_dir, tiny_pretrained / "final", "--config.checkpoint_every=5",
                               "--config.eval_every=0")
    run_py("glue.py:task=sst2,runlocal=True", tmp_path / "reference", *overrides)
    killed = tmp_path / "killed"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    cmd = [sys.executable, os.path.join(ROOT, "run.py"), f"--config={CONFIGS}/glue.py:task=sst2,runlocal=True",
           f"--workdir={killed}", *overrides]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        ckpt = killed / "checkpoints"
        if ckpt.exists() and any(p.name.isdigit() and int(p.name) >= 10 for p in ckpt.iterdir()):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    run_py("glue.py:task=sst2,runlocal=True", killed, *overrides)
    _, want = pretrained.from_pretrained(str(tmp_path / "reference" / "final"))
    _, got = pretrained.from_pretrained(str(killed / "final"))
    for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
        np.testing.assert_array_equal(a, b)
