"""albert_jax.training.finetune end to end through run.py and the experiment configs, from the shared tiny
pretraining run: synthetic but learnable tasks in the original GLUE / SQuAD / RACE formats, eval-only mode, exact
resume, the best evaluation's model in best/."""

import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import traverse_util

import helpers
from albert_jax import pretrained
from albert_jax.training import initialization

CONFIGS = os.path.join(helpers.ROOT, "experiments", "configs")
FILLER = (
    "the function returns a list of values from each module and its name is used for this object "
    "when we call it with an argument or with none"
).split()

pytestmark = pytest.mark.integration


# The runlocal configs' learning rate (1e-3) suits the README demo's model; the shared tiny model (H=32,
# 8 pretraining steps) needs a larger one to learn in a few dozen steps.
TINY_LR = "--config.optimizer.learning_rate=1e-2"


def run_py(config, workdir, *overrides):
    return helpers.run_py(os.path.join(CONFIGS, config), workdir, TINY_LR, *overrides)


def read_metrics(workdir):
    return helpers.read_metrics(workdir, "eval")


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
def test_glue_learns_from_a_pretraining_run_and_from_a_transformers_dir(tiny_pretrained, glue_dir, tmp_path, source):
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
    """... and keeps best/ of its one evaluation (the config's best_metric); best_metric=None keeps none."""
    trained = tmp_path / "trained"
    run_py(
        "glue.py:task=sst2,runlocal=True",
        trained,
        *glue_overrides(glue_dir, tiny_pretrained / "final"),
        "--config.total_steps=20",
        "--config.eval_every=0",
        "--config.best_metric=None",
    )
    evaluated = tmp_path / "evaluated"
    run_py(
        "glue.py:task=sst2,runlocal=True",
        evaluated,
        *glue_overrides(glue_dir, trained / "final"),
        "--config.total_steps=0",
    )
    final, again = read_metrics(trained)[-1], read_metrics(evaluated)
    assert [r["step"] for r in again] == [0]
    assert again[0]["accuracy"] == final["accuracy"] and again[0]["num_examples"] == 100
    assert not (evaluated / "checkpoints").exists() or not os.listdir(evaluated / "checkpoints")
    assert not (trained / "best").exists()
    assert json.loads((evaluated / "best" / "best.json").read_text())["metrics"] == again[0]


def flat_params(directory):
    return traverse_util.flatten_dict(pretrained.from_pretrained(str(directory))[1], sep="/")


def assert_same_params(want, got):
    assert sorted(want) == sorted(got)
    for path in want:
        np.testing.assert_array_equal(want[path], got[path], err_msg=path)


def test_best_holds_the_best_evaluation_and_survives_a_kill_after_it(tiny_pretrained, glue_dir, tmp_path):
    """Evaluations and checkpoints every 10 steps: best/ holds the parameters of the step with the first highest
    dev accuracy (its checkpoint's), best.json that evaluation's row, init_from resolves best/. Then the work dir
    as a run killed after that evaluation leaves it (best/ written, final/ not, the checkpoints from the best's
    step on not yet saved) is resumed from the checkpoint before the best: it redoes that evaluation identically,
    writes best/ again and ends with the best/ and best.json of the uninterrupted run."""
    overrides = glue_overrides(
        glue_dir,
        tiny_pretrained / "final",
        "--config.eval_every=10",
        "--config.checkpoint_every=10",
        "--config.keep_checkpoints=6",
    )
    workdir = tmp_path / "reference"
    result = run_py("glue.py:task=sst2,runlocal=True", workdir, *overrides)
    evals = read_metrics(workdir)
    top = max(evals, key=lambda row: row["accuracy"])  # the first of equals: a tie is no improvement
    best = json.loads((workdir / "best" / "best.json").read_text())
    assert best == {"step": top["step"], "metric": "accuracy", "value": top["accuracy"], "metrics": top}
    assert f"best accuracy {top['accuracy']:.4g} at step {top['step']} -> {workdir / 'best'}" in result.stdout
    assert top["step"] < evals[-1]["step"], "the dev accuracy should peak before the end: a test of nothing"
    state = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(top["step"]) / "state")
    assert_same_params(
        traverse_util.flatten_dict(jax.device_get(state["params"]), sep="/"), flat_params(workdir / "best")
    )
    resolved = initialization.resolve(str(workdir / "best"))
    assert resolved.directory == str(workdir / "best") and resolved.tokenizer is not None

    killed = tmp_path / "killed"
    shutil.copytree(workdir, killed)
    shutil.rmtree(killed / "final")
    for step in os.listdir(killed / "checkpoints"):
        if int(step) >= top["step"]:
            shutil.rmtree(killed / "checkpoints" / step)
    before = os.stat(killed / "best" / "best.json").st_ino
    run_py("glue.py:task=sst2,runlocal=True", killed, *overrides)
    assert read_metrics(killed) == evals and os.stat(killed / "best" / "best.json").st_ino != before
    assert (killed / "best" / "best.json").read_text() == (workdir / "best" / "best.json").read_text()
    assert sorted(os.listdir(killed / "best")) == sorted(os.listdir(workdir / "best"))
    assert_same_params(flat_params(workdir / "best"), flat_params(killed / "best"))


@pytest.mark.slow
def test_sigkill_and_restart_is_bit_exact_in_finetuning(tiny_pretrained, glue_dir, tmp_path):
    """Like pretraining: a fine-tuning run killed after a checkpoint and restarted ends with the
    parameters of an uninterrupted run, bit for bit."""
    overrides = glue_overrides(
        glue_dir, tiny_pretrained / "final", "--config.checkpoint_every=5", "--config.eval_every=0"
    )
    run_py("glue.py:task=sst2,runlocal=True", tmp_path / "reference", *overrides)
    killed = tmp_path / "killed"
    command = helpers.run_command(os.path.join(CONFIGS, "glue.py:task=sst2,runlocal=True"), killed, TINY_LR, *overrides)
    helpers.kill_after_checkpoint(command, killed / "checkpoints", min_step=10)
    run_py("glue.py:task=sst2,runlocal=True", killed, *overrides)
    _, want = pretrained.from_pretrained(str(tmp_path / "reference" / "final"))
    _, got = pretrained.from_pretrained(str(killed / "final"))
    for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
        np.testing.assert_array_equal(a, b)


KEYS = ("red", "blue", "green", "black", "white", "small", "large", "open")


def key_sentence(rng, key):
    """Filler with 'the key is <key> .' somewhere inside; returns (text, character offset of the key)."""
    before, after = " ".join(rng.choice(FILLER, int(rng.integers(3, 12)))), " ".join(rng.choice(FILLER, 8))
    text = f"{before} the key is {key} . {after}"
    return text, len(before) + len(" the key is ")


@pytest.fixture(scope="module")
def race_dir(tmp_path_factory):
    """RACE layout (middle and high): each article names a key, which is the right option; the wrong options
    come from another set of words, so a tiny model can learn the task in a few dozen steps."""
    root = tmp_path_factory.mktemp("race")
    rng = np.random.default_rng(1)
    for split, n in (("train", 60), ("dev", 20)):
        for level in ("middle", "high"):
            (root / split / level).mkdir(parents=True)
            for i in range(n):
                keys = [str(rng.choice(KEYS[:4]))] + [str(k) for k in rng.choice(KEYS[4:], 3, replace=False)]
                answers, questions, options = [], [], []
                article, _ = key_sentence(rng, keys[0])
                for _ in range(2):
                    order = rng.permutation(4)
                    options.append([keys[j] for j in order])
                    answers.append("ABCD"[int(np.argmax(order == 0))])
                    questions.append("what is the key ?")
                record = dict(answers=answers, options=options, questions=questions, article=article, id=f"{i}.txt")
                (root / split / level / f"{i}.txt").write_text(json.dumps(record))
    return root


def test_race_learns(tiny_pretrained, race_dir, tmp_path):
    run_py(
        "race.py:runlocal=True",
        tmp_path,
        f"--config.init_from={tiny_pretrained / 'final'}",
        f"--config.data.race_dir={race_dir}",
        "--config.total_steps=80",
        "--config.eval_every=0",
    )
    final = read_metrics(tmp_path)[-1]
    assert final["num_examples"] == 80 and final["num_middle"] == final["num_high"] == 40
    assert final["accuracy"] == pytest.approx((final["accuracy_middle"] + final["accuracy_high"]) / 2)
    assert final["accuracy"] >= 0.9, final  # chance: 0.25


def squad_file(path, rng, n, version_2):
    """SQuAD JSON: 'what is the key?' over long contexts (several windows); v2.0 adds unanswerable ones."""
    articles = []
    for i in range(n):
        key = str(rng.choice(KEYS))
        prefix = " ".join(rng.choice(FILLER, 10)) + " "
        context, start = key_sentence(rng, key)
        context, start = prefix + context, len(prefix) + start
        assert context[start : start + len(key)] == key
        impossible = version_2 and i % 4 == 0
        qa = dict(
            id=f"q{i}", question="what is the key ?", answers=[] if impossible else [dict(text=key, answer_start=start)]
        )
        if version_2:
            qa["is_impossible"] = impossible
            if impossible:
                context = context.replace(" the key is ", " the lock is ")
        articles.append(dict(title=f"t{i}", paragraphs=[dict(context=context, qas=[qa])]))
    path.write_text(json.dumps(dict(version="2.0" if version_2 else "1.1", data=articles)))


@pytest.mark.parametrize("version,steps", [("1.1", 100), ("2.0", 200)])
def test_squad_learns(tiny_pretrained, tmp_path, version, steps):
    rng = np.random.default_rng(2)
    v2 = version == "2.0"
    squad_file(tmp_path / "train.json", rng, 400, v2)
    squad_file(tmp_path / "dev.json", rng, 60, v2)
    workdir = tmp_path / "run"
    run_py(
        f"squad.py:version={version},runlocal=True",
        workdir,
        f"--config.init_from={tiny_pretrained / 'final'}",
        f"--config.data.squad_train_file={tmp_path / 'train.json'}",
        f"--config.data.squad_dev_file={tmp_path / 'dev.json'}",
        f"--config.total_steps={steps}",
    )
    final = read_metrics(workdir)[-1]
    assert final["num_examples"] == 60 and final["total"] == 60
    # A random span scores F1 ~5 here. The tiny backbone (8 pretraining steps) is close to its random
    # initialisation, so how far it gets in these steps varies with its data: 77-88 F1 measured.
    assert final["f1"] >= 70 and final["exact"] >= 60, final
    predictions = json.loads((workdir / "predictions.json").read_text())
    assert len(predictions) == 60 and set(json.loads((workdir / "nbest_predictions.json").read_text())) == set(
        predictions
    )
    if v2:
        assert set(json.loads((workdir / "null_odds.json").read_text())) == set(predictions)
        assert final["NoAns_total"] == 15 and "best_f1_thresh" in final
