"""Every experiment config loads, builds a valid model config and passes the pre-compute checks."""

import glob
import os

import pytest

from albert_jax.training import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "experiments", "configs", "*.py")))


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_config_builds(path):
    config = pretrain.load_config(path)
    model = pretrain.build_model_config(config.model)
    pretrain.validate(config, model)
    assert config.total_steps > 0 and config.batch_size > 0
    assert pretrain.load_config(path).to_dict() == config.to_dict()  # get_config is deterministic


def test_paper_configs_match_the_paper():
    config = pretrain.load_config(os.path.join(ROOT, "experiments", "configs", "pretrain_base.py"))
    assert (config.data.max_seq_length, config.batch_size, config.total_steps) == (512, 4096, 125_000)
    assert (config.optimizer.optimizer, config.optimizer.learning_rate) == ("lamb", 0.00176)
    assert pretrain.build_model_config(config.model).hidden_size == 768
    xxlarge = pretrain.load_config(os.path.join(ROOT, "experiments", "configs", "pretrain_xxlarge.py"))
    assert pretrain.build_model_config(xxlarge.model).hidden_size == 4096
