"""Shared fixtures. Several CPU devices are forced before jax is imported so sharding tests have a mesh."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
# JAX on CPU only: with the [tpu] extra installed (the planner's libtpu) JAX would first try, and fail, to open a TPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The planner's tests open libtpu in both xdist workers: without this the second is refused libtpu's lock file.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import re
import shutil  # noqa: E402
import subprocess
import tempfile  # noqa: E402

import pytest  # noqa: E402  (after the environment above, before jax is imported by any test)

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
    from helpers import TINY_PRETRAIN

    workdir = tmp_path_factory.mktemp("tiny_pretrained")
    config = experiment.load_config(TINY_PRETRAIN)
    config.export.hf_dir = "hf"
    pretrain.run(config, str(workdir))
    return workdir


# Data shared by the tests of two modules (data and evaluation, prepare and loader), made once per session (once
# per xdist worker). Like tiny_pretrained, they import inside: jax (which helpers imports) must not be imported
# before pytest_configure has set the compilation cache.
@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """(config, directory) of the tiny config prepared with static masking."""
    from albert_jax.data import prepare
    from helpers import VOCAB, tiny_config

    config = tiny_config()
    directory = str(tmp_path_factory.mktemp("prepared"))
    prepare.prepare(config, directory, VOCAB)
    return config, directory


@pytest.fixture(scope="session")
def corpus():
    """A synthetic corpus of 1000 documents and its PieceTokenizer (helpers.synthetic_corpus)."""
    from helpers import synthetic_corpus

    return synthetic_corpus(1000, ((4, 25), (3, 30)))


@pytest.fixture(scope="session")
def dynamic(corpus, tmp_path_factory):
    """The corpus's unmasked pairs prepared for dynamic masking and their loader data (helpers.dynamic_data)."""
    from helpers import dynamic_data

    docs, tok = corpus
    return dynamic_data(tmp_path_factory.mktemp("dynamic"), docs, tok, 128, 20, seed=3)


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory):
    """The GLUE files in the official layout (helpers.GLUE_FILES); test_training_finetune has its own."""
    from helpers import GLUE_FILES, write_files

    return write_files(tmp_path_factory.mktemp("glue"), GLUE_FILES)


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """The SQuAD tests' tokenizer: 150 pieces trained on helpers.squad_sentences (the GLUE and RACE tests
    train their own, under the same name)."""
    from albert_jax.tokenizer import AlbertTokenizer, train_spm
    from helpers import squad_sentences

    path = train_spm(
        iter(squad_sentences(400, seed=0)), 150, str(tmp_path_factory.mktemp("spm") / "spm"), num_threads=1
    )
    return AlbertTokenizer(path)
