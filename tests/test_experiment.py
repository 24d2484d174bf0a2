"""albert_jax.experiment and the experiment configs: every config (and each variant of its argument) loads,
builds a valid model config and passes the pre-compute checks; the paper settings are the paper's."""

import glob
import os

import pytest

from albert_jax import experiment
from albert_jax.training import finetune, pretrain, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "experiments", "configs")
SPECS = (
    ["demo.py"]
    + [f"ablation_{a}.py:scale={s}" for a in ("embedding", "sharing") for s in ("demo", "paper")]
    + [f"pretrain.py:size={s}{r}" for s in ("base", "large", "xlarge", "xxlarge") for r in ("", ",runlocal=True")]
    + [
        f"glue.py:task={t}{r}"
        for t in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
        for r in ("", ",runlocal=True")
    ]
    + ["squad.py:version=1.1", "squad.py:version=2.0,runlocal=True", "race.py", "race.py:runlocal=True"]
)


def load(spec):
    return experiment.load_config(os.path.join(CONFIGS, spec))


def test_every_config_file_is_covered():
    files = {os.path.basename(p) for p in glob.glob(os.path.join(CONFIGS, "*.py"))}
    assert files == {spec.split(":")[0] for spec in SPECS}


@pytest.mark.parametrize("spec", SPECS)
def test_config_builds(spec):
    config = load(spec)
    model = experiment.albert_config(config.model)
    assert config.total_steps > 0 and config.batch_size > 0
    assert load(spec).to_dict() == config.to_dict()  # get_config is deterministic
    if config.job == "pretrain":
        pretrain.validate(config, model)
        for name in sweep.cells(config) if "cells" in config else ():
            cell = sweep.cell_config(config, name)
            pretrain.validate(cell, experiment.albert_config(cell.model))
    else:
        assert config.job == "finetune" and config.task in finetune.TASKS and config.init_from
        assert config.optimizer.optimizer == "adamw"


def test_ablation_grids_are_the_papers_tables_3_and_4():
    embedding = load("ablation_embedding.py:scale=paper")
    assert {(c["model"]["embedding_size"], c["model"]["sharing"]) for c in sweep.cells(embedding).values()} == {
        (e, s) for e in (64, 128, 256, 768) for s in ("all", "none")
    }
    sharing = load("ablation_sharing.py:scale=paper")
    assert {(c["model"]["embedding_size"], c["model"]["sharing"]) for c in sweep.cells(sharing).values()} == {
        (e, s) for e in (768, 128) for s in ("all", "attention", "ffn", "none")
    }
    assert experiment.albert_config(sweep.cell_config(sharing, "E768-none").model).hidden_size == 768


def test_paper_settings():
    base = load("pretrain.py:size=base")
    assert (base.data.max_seq_length, base.batch_size, base.total_steps) == (512, 4096, 125_000)
    assert (base.optimizer.optimizer, base.optimizer.learning_rate) == ("lamb", 0.00176)
    assert experiment.albert_config(base.model).hidden_size == 768
    assert experiment.albert_config(load("pretrain.py:size=xxlarge").model).hidden_size == 4096
    mnli = load("glue.py:task=mnli")
    assert (mnli.optimizer.warmup_steps, mnli.optimizer.learning_rate, mnli.total_steps, mnli.batch_size) == (
        1000,
        3e-5,
        10000,
        128,
    )
    squad = load("squad.py:version=1.1")
    assert (squad.batch_size, squad.data.max_seq_length, squad.data.doc_stride, squad.data.max_query_length) == (
        48,
        384,
        128,
        64,
    )
    race = load("race.py")
    assert (race.optimizer.learning_rate, race.batch_size, race.total_steps, race.optimizer.warmup_steps) == (
        1e-5,
        32,
        12000,
        1000,
    )


@pytest.mark.parametrize(
    "spec,message",
    [
        ("pretrain.py:size=huge", "size must be one of"),
        ("glue.py:task=mnlii", "task must be one of"),
        ("glue.py:tsk=mnli", "'tsk' is not one of"),
    ],
)
def test_bad_config_argument(spec, message):
    with pytest.raises(ValueError, match=message):
        load(spec)
