"""albert_jax.training.sweep, ablation sweeps through experiments/ablate.py: cells, shards, skipping and
resuming, the tables."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

import helpers
from albert_jax import experiment
from albert_jax.modeling import count_params
from albert_jax.training import sweep

CONFIG = os.path.join(helpers.ROOT, "tests", "configs", "tiny_sweep.py")
ABLATE = os.path.join(helpers.ROOT, "experiments", "ablate.py")
CELLS = ["E8-all", "E8-none", "E16-all", "E16-none"]

pytestmark = pytest.mark.integration


def ablate(workdir, *args, check=True):
    result = subprocess.run(
        [sys.executable, ABLATE, f"--config={CONFIG}", f"--workdir={workdir}", *args],
        env=helpers.device_env(),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=helpers.ROOT,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_shards_cover_the_grid_once_and_a_rerun_skips_finished_cells(tmp_path):
    first = ablate(tmp_path, "--shard=0/2")
    assert [r["cell"] for r in read_csv(tmp_path / "results.csv")] == ["E8-all", "E16-all"]
    second = ablate(tmp_path, "--shard=1/2")
    ran = [
        line.split()[1].rstrip(":")
        for line in (first.stdout + second.stdout).splitlines()
        if line.startswith("[sweep]") and "pretraining" in line
    ]
    assert sorted(ran) == sorted(CELLS)  # every cell once over the two shards
    rows = read_csv(tmp_path / "results.csv")
    assert [r["cell"] for r in rows] == CELLS
    config = experiment.load_config(CONFIG)
    for row in rows:
        cell = sweep.cell_config(config, row["cell"])
        assert int(row["parameters"]) == count_params(experiment.albert_config(cell.model))
        paper = experiment.albert_config(
            experiment.model_section("albert-base-v2", **sweep.cells(config)[row["cell"]]["model"])
        )
        assert int(row["paper_parameters"]) == count_params(paper)
        for key in ("mlm_accuracy", "sop_accuracy", "tokens_per_sec", "wall_seconds"):
            assert np.isfinite(float(row[key])), (row, key)
    assert int(rows[1]["parameters"]) > int(rows[0]["parameters"])  # not-shared has more parameters
    table = (tmp_path / "results.md").read_text().splitlines()
    assert table[0].startswith("| cell | seeds | sharing | embedding_size | hidden_size | num_hidden_layers | param")
    assert len(table) == 2 + len(CELLS)  # one seed: no paired differences
    assert (tmp_path / "accuracy_vs_params.png").stat().st_size > 0 and (tmp_path / "loss_curves.png").exists()
    again = ablate(tmp_path)
    assert again.stdout.count("finished, skipped") == len(CELLS) and "pretraining into" not in again.stdout


def test_a_killed_sweep_over_seeds_resumes_and_gives_the_uninterrupted_table(tmp_path):
    overrides = ("--config.total_steps=30", "--cells=E8-all", "--seeds=2")
    killed = tmp_path / "killed"
    command = [sys.executable, ABLATE, f"--config={CONFIG}", f"--workdir={killed}", *overrides]
    killed_at = helpers.kill_after_checkpoint(command, killed / "E8-all" / "seed1" / "checkpoints", min_step=4)
    assert 4 <= killed_at < 30
    result = ablate(killed, *overrides)
    assert "E8-all seed 0: finished, skipped" in result.stdout
    assert f"resumed from micro-step {killed_at}" in result.stderr
    ablate(tmp_path / "straight", *overrides)
    rows = {name: read_csv(tmp_path / name / "results.csv") for name in ("killed", "straight")}
    assert [(r["cell"], r["seed"]) for r in rows["killed"]] == [("E8-all", "0"), ("E8-all", "1")]
    for a, b in zip(rows["killed"], rows["straight"]):
        del a["wall_seconds"], b["wall_seconds"]
        assert helpers.untimed(a) == helpers.untimed(b)  # the same runs: resuming is exact
    assert rows["killed"][0]["mlm_accuracy"] != rows["killed"][1]["mlm_accuracy"]  # seeds differ
    table = (tmp_path / "killed" / "results.md").read_text()
    assert table.splitlines()[2].startswith("| E8-all | 2 |") and " ± " in table
    assert [r["step"] for r in helpers.read_metrics(killed / "E8-all" / "seed1")][-1] == 30


def test_bad_sweep_arguments(tmp_path):
    assert "unknown cells ['E9-all']" in ablate(tmp_path, "--cells=E9-all", check=False).stderr
    assert "--shard must be i/n" in ablate(tmp_path, "--shard=2", check=False).stderr
    assert "0 <= i < n" in ablate(tmp_path, "--shard=2/2", check=False).stderr
