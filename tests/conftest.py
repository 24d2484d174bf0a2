"""Shared fixtures. Several CPU devices are forced before jax is imported so sharding tests have a mesh."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402  (after the environment above, before jax is imported by any test)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_PRETRAIN = os.path.join(ROOT, "tests", "configs", "tiny_pretrain.py")


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory):
    """One tiny pretraining run shared by every test that fine-tunes: its work dir holds `final/`
    (albert-jax format + tokenizer) and `hf/` (a transformers directory)."""
    from albert_jax.training import configs, pretrain
    workdir = tmp_path_factory.mktemp("tiny_pretrained")
    config = configs.load_config(TINY_PRETRAIN)
    config.export.hf_dir = "hf"
    pretrain.run(config, str(workdir))
    return workdir
