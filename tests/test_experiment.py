"""albert_jax.experiment and the experiment configs: every config (and each variant of its argument) loads,
builds a valid model config and passes the pre-compute checks; the paper settings are the paper's."""

import glob
import os
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from albert_jax import experiment
from albert_jax.training import finetune, pretrain, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "experiments", "configs")
ABLATIONS = ("embedding", "sharing", "sentence", "depth", "width", "dropout")
SPECS = (
    ["demo.py"]
    + [f"ablation_{a}.py:scale={s}" for a in ABLATIONS for s in ("demo", "paper")]
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
        ("glue.py:task=foo", r"glue.py:task=foo: task must be one of \['cola', 'mnli'"),
        ("demo.py:size=base", "demo.py takes no argument, got 'size=base'"),
    ],
)
def test_bad_config_argument(spec, message):
    with pytest.raises(ValueError, match=message):
        load(spec)


@pytest.mark.parametrize(
    "source,message",
    [
        (None, "bad.py' does not exist"),
        ("def get_config(:\n    pass\n", "bad.py, line 1: SyntaxError: invalid syntax"),
        ("import os\n\ndef get_config():\n    raise RuntimeError('boom')\n", "bad.py, line 4: RuntimeError: boom"),
        ("import no_such_module_xyz\n", "bad.py, line 1: ModuleNotFoundError: No module named 'no_such_module_xyz'"),
        ("config = 1\n", "bad.py defines no get_config()"),
        ("def get_config(arg):\n    return None\n", r"bad.py needs an argument .*: get_config\(arg\)"),
        ("def get_config():\n    return {}\n", "bad.py: get_config\\(\\) returned dict, not a ConfigDict"),
    ],
)
def test_a_config_file_that_fails_is_one_line_naming_file_and_line(tmp_path, source, message):
    if source is not None:
        (tmp_path / "bad.py").write_text(source)
    with pytest.raises(ValueError, match=message) as e:
        experiment.load_config(str(tmp_path / "bad.py"))
    assert "\n" not in str(e.value)


FLAG_CONFIG = """
import ml_collections
from ml_collections.config_dict import placeholder

def get_config():
    c = ml_collections.ConfigDict(dict(steps=8, export=dict(hf_dir=placeholder(str), max_len=placeholder(int))))
    c.export.hf_dir = "hf"
    return c
"""


def parse_flags(tmp_path, *overrides):
    """`experiment.parse_flags` of `--config=<FLAG_CONFIG> *overrides` into fresh flags: the config."""
    (tmp_path / "c.py").write_text(FLAG_CONFIG)
    argv = ["prog", f"--config={tmp_path / 'c.py'}", *overrides]
    flag_values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, sys_argv=argv)
    experiment.parse_flags(argv, "prog --config=FILE", flag_values)
    return holder.value


def test_none_sets_an_optional_field_to_none(tmp_path):
    config = parse_flags(tmp_path, "--config.export.hf_dir=None", "--config.export.max_len=None", "--config.steps=3")
    assert (config.export.hf_dir, config.export.max_len, config.steps) == (None, None, 3)
    assert parse_flags(tmp_path, "--config.export.max_len=5").export.to_dict() == {"hf_dir": "hf", "max_len": 5}


@pytest.mark.parametrize(
    "override,message",
    [
        ("--config.foo=1", "error: --config.foo: the config has no field 'foo'"),
        (
            "--config.export.hf_dri=x",
            "error: --config.export.hf_dri: the config has no field 'export.hf_dri' "
            "(did you mean --config.export.hf_dir?)",
        ),
        (
            "--config.exprot.hf_dir=x",
            "error: --config.exprot.hf_dir: the config has no field 'exprot' (did you mean --config.export?)",
        ),
        ("--config.steps=None", "error: --config.steps=None: config.steps takes int, not None"),
        (
            "--config.steps=x",
            "error: flag --config.steps=x: invalid literal for int() with base 10: 'x' (usage: prog --config=FILE)",
        ),
    ],
)
def test_bad_overrides_exit_with_one_line(tmp_path, override, message):
    with pytest.raises(SystemExit) as e:
        parse_flags(tmp_path, override)
    assert str(e.value.code).startswith(message) and "\n" not in str(e.value.code), e.value.code


@pytest.mark.integration
@pytest.mark.parametrize(
    "spec,message",
    [
        ("bad.py", "error: config file {tmp}/bad.py, line 1: SyntaxError: invalid syntax"),
        (
            "experiments/configs/glue.py:task=foo",
            "error: config experiments/configs/glue.py:task=foo: task must be one of [",
        ),
        ("experiments/configs/demo.py:size=base", "error: config file experiments/configs/demo.py takes no argument"),
    ],
)
def test_run_py_reports_a_bad_config_file_in_one_line(tmp_path, spec, message):
    (tmp_path / "bad.py").write_text("def get_config(:\n")
    spec = str(tmp_path / spec) if spec == "bad.py" else spec
    command = [sys.executable, "run.py", f"--config={spec}", f"--workdir={tmp_path / 'w'}"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode != 0
    assert result.stderr.strip().startswith(message.format(tmp=tmp_path)), result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert not (tmp_path / "w").exists()
