"""Shared fixtures. Several CPU devices are forced before jax is imported so sharding tests have a mesh."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import shutil  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402  (after the environment above, before jax is imported by any test)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_PRETRAIN = os.path.join(ROOT, "tests", "configs", "tiny_pretrain.py")


def pytest_configure(config):
    """One persistent XLA compilation cache for the whole session, shared by both xdist workers and every
    `run.py` they spawn (they inherit the environment): most of the suite's run.py processes compile the same
    tiny programs, which then load from disk (a tiny run.py: 15 s -> 8 s). Set before the workers start and
    before any test imports jax; a JAX_COMPILATION_CACHE_DIR already set is kept."""
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    config.xla_cache_dir = tempfile.mkdtemp(prefix="albert-jax-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = config.xla_cache_dir
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


def pytest_unconfigure(config):
    if getattr(config, "xla_cache_dir", None):
        shutil.rmtree(config.xla_cache_dir, ignore_errors=True)


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
