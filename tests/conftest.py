"""Shared fixtures. Several CPU devices are forced before jax is imported so sharding tests have a mesh."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import re
import shutil  # noqa: E402
import subprocess
import tempfile  # noqa: E402

import pytest  # noqa: E402  (after the environment above, before jax is imported by any test)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_PRETRAIN = os.path.join(ROOT, "tests", "configs", "tiny_pretrain.py")
# A command line that starts one of the project's entry points: run.py, experiments/ablate.py, the benchmark
# (`python -m experiments.bench[.module]`), `python -m albert_jax.convert` / `albert_jax.data.prepare`, a kernel.
ENTRY_POINT = re.compile(
    r"\b(run|ablate)\.py\b|\bexperiments[./](bench|ablate)\b"
    r"|\balbert_jax\.(convert|data\.prepare)\b|ipykernel_launcher"
)


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


@pytest.fixture(autouse=True)
def integration_marks_are_honest(request, monkeypatch):
    """Fails a test that starts an entry point (`ENTRY_POINT`) without `@pytest.mark.integration`, so that
    `-m "not integration"` runs in process only. Patched on `Popen._execute_child`, which every launch goes
    through (`subprocess.run`, `Popen` imported by name as jupyter_client does); launches made by module- or
    session-scoped fixtures happen before it and are not seen."""
    if request.node.get_closest_marker("integration"):
        return
    execute_child = subprocess.Popen._execute_child

    def guarded(self, args, *rest, **kwargs):
        command = " ".join(map(str, [args] if isinstance(args, (str, bytes, os.PathLike)) else args))
        if ENTRY_POINT.search(command):
            pytest.fail(f"starts {command[:300]!r} but is not marked @pytest.mark.integration", pytrace=False)
        return execute_child(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", guarded)


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory):
    """One tiny pretraining run shared by every test that fine-tunes: its work dir holds `final/`
    (albert-jax format + tokenizer) and `hf/` (a transformers directory)."""
    from albert_jax import experiment
    from albert_jax.training import pretrain

    workdir = tmp_path_factory.mktemp("tiny_pretrained")
    config = experiment.load_config(TINY_PRETRAIN)
    config.export.hf_dir = "hf"
    pretrain.run(config, str(workdir))
    return workdir
