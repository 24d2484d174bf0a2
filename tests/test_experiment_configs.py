"""Every experiment config loads, builds a valid model config and passes the pre-compute checks."""

import glob
import importlib.util
import os

import pytest

from albert_jax.training import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "experiments", "configs", "*.py")))


def load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_config_builds(path):
    config = load(path)
    model = pretrain.build_model_config(config.model)
    pretrain.validate(config, model)
    assert config.total_steps > 0 and config.batch_size > 0
    assert (load(path).to_dict() == config.to_dict())  # get_config is deterministic


def test_paper_configs_match_the_paper():
    config = load(os.path.join(ROOT, "experiments", "configs", "pretrain_base.py"))
    assert (config.data.max_seq_length, config.batch_size, config.total_steps) == (512, 4096, 125_000)
    assert (config.optimizer.optimizer, config.optimizer.learning_rate) == ("lamb", 0.00176)
    assert pretrain.build_model_config(config.model).hidden_size == 768
    assert pretrain.build_model_config(
        load(os.path.join(ROOT, "experiments", "configs", "pretrain_xxlarge.py")).model).hidden_size == 4096
