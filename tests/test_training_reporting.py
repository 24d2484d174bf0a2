"""albert_jax.training.reporting: the statistics over seeds against numpy/scipy, the tables, and a fine-tuning config
run as a sweep of one cell over seeds."""

import math
import os

import numpy as np
import pytest
from scipy import stats

import helpers
from albert_jax import experiment
from albert_jax.training import reporting, sweep


def fixed_table(seeds=5):
    """Rows of two cells over `seeds` seeds (a fixed random table), and one seed of a third cell."""
    rng = np.random.default_rng(7)
    rows = [
        dict(cell=cell, seed=s, mlm_accuracy=float(rng.normal(mu, 0.01)), sop_accuracy=float(rng.normal(0.7, 0.05)))
        for cell, mu in (("base", 0.30), ("better", 0.33))
        for s in range(seeds)
    ]
    return rows + [dict(cell="once", seed=0, mlm_accuracy=0.31, sop_accuracy=0.69)]


def test_estimate_is_the_student_t_interval_of_the_mean():
    values = [r["mlm_accuracy"] for r in fixed_table() if r["cell"] == "base"]
    e = reporting.estimate(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    np.testing.assert_allclose([e.mean, e.std, e.low, e.high], [np.mean(values), np.std(values, ddof=1), low, high])
    assert e.n == 5
    one = reporting.estimate([0.5, math.nan])  # a run without the metric does not count
    assert (one.mean, one.n) == (0.5, 1) and math.isnan(one.low) and math.isnan(one.std)
    assert reporting.estimate([]).n == 0


def test_paired_difference_is_scipys_paired_t_interval():
    rows = fixed_table()
    rows = [r for r in rows if not (r["cell"] == "better" and r["seed"] == 4)]  # pairs only over common seeds
    d = reporting.paired_difference(rows, "better", "base", "mlm_accuracy")
    a = [r["mlm_accuracy"] for r in rows if r["cell"] == "better"]
    b = [r["mlm_accuracy"] for r in rows if r["cell"] == "base"][:4]
    test = stats.ttest_rel(a, b)
    ci = test.confidence_interval(0.95)
    np.testing.assert_allclose([d.mean, d.low, d.high], [np.mean(np.subtract(a, b)), ci.low, ci.high])
    assert d.n == 4


def test_markdown_tables_show_estimates_and_paired_differences():
    rows = fixed_table()
    text = reporting.markdown_tables(rows, ["base", "better", "once"], "base", [], ["mlm_accuracy", "sop_accuracy"])
    table, _, paired = text.partition("Paired difference from `base`")
    lines = table.strip().splitlines()
    assert lines[0] == "| cell | seeds | mlm_accuracy | sop_accuracy | tokens_per_sec | wall_seconds |"
    base = reporting.estimate([r["mlm_accuracy"] for r in rows if r["cell"] == "base"])
    assert lines[2].startswith(f"| base | 5 | {base.mean:.3f} ± {base.std:.3f} [{base.low:.3f}, {base.high:.3f}] |")
    assert lines[4].startswith("| once | 1 | 0.310 | 0.690 |")
    better = next(line for line in paired.splitlines() if line.startswith("| better"))
    d = reporting.paired_difference(rows, "better", "base", "mlm_accuracy")
    assert better.startswith(f"| better | 5 | {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]*")  # 0.03 apart, std 0.01
    assert "| base |" not in paired  # the reference is not compared with itself
    single = reporting.markdown_tables([r for r in rows if r["seed"] == 0], ["base"], "base", [], ["mlm_accuracy"])
    assert "Paired" not in single


def test_units_go_seed_by_seed_and_shards_cover_each_once():
    config = sweep.sweep_config(
        experiment.load_config(helpers.TINY_PRETRAIN), {"a": {}, "b": {}, "c": {}}, seeds=(3, 5)
    )
    every = sweep.units(config)
    assert every == [("a", 3), ("b", 3), ("c", 3), ("a", 5), ("b", 5), ("c", 5)]
    shards = [sweep.units(config, (i, 4)) for i in range(4)]
    assert sorted(u for s in shards for u in s) == sorted(every)
    assert sweep.units(config, only=["b"]) == [("b", 3), ("b", 5)]
    assert sweep.run_dir("w", "a", 3) == os.path.join("w", "a", "seed3") and sweep.run_dir("w", "a", None) == "w/a"
    cell = sweep.cell_config(config, "a", 5)
    assert (cell.seed, cell.data.seed) == (5, config.seed)  # the training seed changes, the data stays the sweep's
    assert sweep.units(sweep.as_sweep(experiment.load_config(helpers.TINY_PRETRAIN))) == [(sweep.SINGLE_CELL, None)]
    with pytest.raises(ValueError, match="reference='z' is not a cell"):
        config.sweep.reference = "z"
        sweep.reference(config)
    with pytest.raises(ValueError, match="distinct non-negative"):
        config.sweep.seeds = (1, 1)
        sweep.seeds(config)


def test_cells_with_other_data_get_their_own_prepared_data():
    base = experiment.load_config(helpers.TINY_PRETRAIN)
    grid = {"sop": {}, "nsp": {"data": {"sentence_objective": "nsp"}}, "big": {"model": {"hidden_size": 64}}}
    grid["nsp2"] = {"data": {"sentence_objective": "nsp"}, "model": {"num_hidden_layers": 1}}
    dirs = sweep.data_dirs(sweep.sweep_config(base, grid), "w")
    assert dirs == {"sop": "w/data", "nsp": "w/data-nsp", "big": "w/data", "nsp2": "w/data-nsp"}


def test_a_fine_tuning_config_is_a_sweep_over_seeds(tiny_pretrained, tmp_path):
    glue_dir = tmp_path / "glue"
    (glue_dir / "SST-2").mkdir(parents=True)
    for split in ("train", "dev"):
        rows = [f"{'a good one' if i % 2 else 'a bad one'} {i}\t{i % 2}" for i in range(16)]
        (glue_dir / "SST-2" / f"{split}.tsv").write_text("\n".join(["sentence\tlabel", *rows]) + "\n")
    config = experiment.load_config(
        os.path.join(helpers.ROOT, "experiments", "configs", "glue.py:task=sst2,runlocal=True")
    )
    config.init_from, config.data.glue_dir = str(tiny_pretrained / "final"), str(glue_dir)
    config.total_steps, config.eval_every, config.checkpoint_every, config.batch_size = 4, 2, 2, 4
    config = sweep.as_sweep(config)
    config.sweep.seeds = (0, 1)
    assert sweep.run_sweep(config, str(tmp_path / "sweep")) == [(sweep.SINGLE_CELL, 0), (sweep.SINGLE_CELL, 1)]
    tmp_path = tmp_path / "sweep"
    reporting.write_results(config, str(tmp_path))
    rows = reporting.collect(config, str(tmp_path))
    assert [(r["cell"], r["seed"]) for r in rows] == [("default", 0), ("default", 1)]
    for row, seed in zip(rows, (0, 1)):
        final = helpers.read_metrics(tmp_path / "default" / f"seed{seed}", split="eval")[-1]
        assert row["accuracy"] == final["accuracy"]
    assert rows[0]["loss_curve"] != rows[1]["loss_curve"]  # the seed changes the run
    text = (tmp_path / "results.md").read_text()
    assert "| default | 2 |" in text and " ± " in text
    assert (tmp_path / "metrics.png").stat().st_size > 0
