"""albert_jax.training.initialization, init_from: resolving a directory, a work dir or a hub name, loading the
backbone with new heads kept fresh, skips and shape mismatches, placement on the state's shardings;
a run's best/ (export.save_best) as an init_from."""

import errno
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import Mesh

import albert_jax as aj
from albert_jax import convert
from albert_jax.training import initialization, sharding

TINY = aj.AlbertConfig.from_preset(
    "albert-tiny",
    vocab_size=64,
    embedding_size=8,
    hidden_size=16,
    num_attention_heads=2,
    intermediate_size=32,
    num_hidden_layers=2,
    max_position_embeddings=32,
)


@pytest.fixture(scope="module")
def pretrained_dirs(tmp_path_factory):
    """An AlbertForPreTraining saved as an albert-jax directory, inside a work dir, and as a transformers one."""
    root = tmp_path_factory.mktemp("init_from")
    params = aj.init_params(aj.AlbertForPreTraining(TINY), jax.random.PRNGKey(1))
    aj.save_pretrained(TINY, params, str(root / "work" / "final"))
    convert.save_hf(TINY, params, str(root / "hf"))
    return root, params


def flat(tree):
    return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def fresh_classifier_params(num_labels=3):
    model = aj.AlbertForSequenceClassification(TINY.replace(num_labels=num_labels))
    return jax.jit(lambda r: aj.init_params(model, r))(jax.random.PRNGKey(7))


@pytest.mark.parametrize("which", ["ours", "work dir", "hf"])
def test_init_from_loads_the_backbone_and_keeps_a_fresh_head(pretrained_dirs, which, caplog):
    root, params = pretrained_dirs
    spec = {"ours": root / "work" / "final", "work dir": root / "work", "hf": root / "hf"}[which]
    fresh = fresh_classifier_params()
    merged = initialization.load_into(fresh, initialization.resolve(str(spec)).directory)
    got, want, new = flat(merged), flat(params), flat(fresh)
    assert {p for p in got if not p.startswith("albert/")} == {"classifier/kernel", "classifier/bias"}
    for path, value in got.items():
        expected = want[path] if path.startswith("albert/") else new[path]
        np.testing.assert_array_equal(value, expected, err_msg=path)  # bit for bit
    report = caplog.text
    assert "freshly initialised: classifier/bias, classifier/kernel" in report
    assert "predictions/bias" in report and "sop_classifier/classifier/kernel" in report  # not used


def test_init_from_skip_and_shape_mismatch(pretrained_dirs):
    root, params = pretrained_dirs
    fresh = fresh_classifier_params()
    merged, kept, _ = initialization.merge(fresh, jax.device_get(params), skip=(r"pooler",))
    assert "albert/pooler/kernel" in kept and "albert/pooler/bias" in kept
    np.testing.assert_array_equal(flat(merged)["albert/pooler/kernel"], flat(fresh)["albert/pooler/kernel"])
    wider = aj.init_params(aj.AlbertModel(TINY.replace(hidden_size=24, intermediate_size=24)), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"albert/.* has shape .* in the checkpoint but .* in the model"):
        initialization.merge(fresh, wider)


def test_init_from_places_arrays_on_the_state_shardings(pretrained_dirs):
    root, _ = pretrained_dirs
    mesh = Mesh(np.asarray(jax.devices()[:4]).reshape(2, 2, 1), sharding.MESH_AXES)
    model = aj.AlbertForSequenceClassification(TINY.replace(num_labels=3))
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
    shardings = sharding.param_shardings(boxed, mesh)
    fresh = jax.jit(lambda r: aj.init_params(model, r), out_shardings=shardings)(jax.random.PRNGKey(0))
    merged = initialization.load_into(fresh, str(root / "hf"))
    for a, b in zip(jax.tree_util.tree_leaves(merged), jax.tree_util.tree_leaves(shardings)):
        assert a.sharding == b
    word = merged["albert"]["embeddings"]["word_embeddings"]["embedding"]
    assert not word.sharding.is_fully_replicated  # vocab split over fsdp, not gathered on one device


def test_init_from_hub_name_uses_the_local_cache_only(pretrained_dirs, tmp_path, monkeypatch):
    root, _ = pretrained_dirs
    snapshot = tmp_path / "hub" / "models--someone--tiny-albert" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for name in os.listdir(root / "hf"):
        (snapshot / name).write_bytes((root / "hf" / name).read_bytes())
    (tmp_path / "hub" / "models--someone--tiny-albert" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-albert" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    resolved = initialization.resolve("someone/tiny-albert")
    assert resolved.directory == str(snapshot) and resolved.config.hidden_size == TINY.hidden_size
    with pytest.raises(FileNotFoundError, match="huggingface_hub cache"):
        initialization.resolve("someone/not-downloaded")


def test_init_from_refuses_a_work_dir_whose_run_has_not_finished(pretrained_dirs, tmp_path):
    """A work dir (run_config.json) is used through its final/ only once the run has finished (final/run_state.json
    complete); before, one line says how far it got. A final/ without the marker is a run stopped while writing it."""
    import shutil

    from albert_jax.training import export, loop

    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "100").mkdir(parents=True)
    (workdir / "checkpoints" / "200").mkdir()
    (workdir / loop.RUN_CONFIG_NAME).write_text('{"total_steps": 600}')
    unfinished = r"the run in .*run has not finished \(step 200 of 600\); run it again to finish it$"
    with pytest.raises(FileNotFoundError, match=unfinished):
        initialization.resolve(str(workdir))
    shutil.copytree(pretrained_dirs[0] / "work" / "final", workdir / "final")
    with pytest.raises(FileNotFoundError, match=unfinished):
        initialization.resolve(str(workdir))
    (workdir / "final" / export.RUN_STATE_NAME).write_text('{"step": 600, "total_steps": 600, "complete": true}')
    assert initialization.resolve(str(workdir)).directory == str(workdir / "final")


def test_best_is_an_init_from_and_a_rewrite_cut_short_leaves_the_previous_one_whole(
    pretrained_dirs, tokenizer, tmp_path, monkeypatch
):
    """`export.save_best` writes final/'s files and best.json into <workdir>/best, which init_from resolves. A
    rewrite that dies half-way (here: the tokenizer's write fails) leaves the previous best/ as it was; the next
    one replaces it and clears what the dead one left."""
    from albert_jax.training import export

    _, params = pretrained_dirs
    workdir, best = tmp_path / "run", tmp_path / "run" / export.BEST_DIR
    first = {"step": 10, "metric": "accuracy", "value": 0.5, "metrics": {"step": 10, "accuracy": 0.5}}
    export.save_best(TINY, params, tokenizer, str(workdir), 100, first)
    resolved = initialization.resolve(str(best))
    assert resolved.directory == str(best) and resolved.config == TINY and resolved.tokenizer is not None
    assert export.read_best(str(workdir)) == first
    assert export.read_run_state(str(best)) == {"step": 10, "total_steps": 100, "complete": False}

    shifted = jax.tree_util.tree_map(lambda x: x + 1, params)
    second = dict(first, step=20, value=0.75)

    def disk_full(out_dir):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), out_dir)

    with monkeypatch.context() as patched, pytest.raises(OSError, match="No space left"):
        patched.setattr(tokenizer, "save_pretrained", disk_full)
        export.save_best(TINY, shifted, tokenizer, str(workdir), 100, second)
    assert export.read_best(str(workdir)) == first
    assert_params_equal(aj.from_pretrained(str(best))[1], params)

    export.save_best(TINY, shifted, tokenizer, str(workdir), 100, second)
    assert export.read_best(str(workdir)) == second and sorted(os.listdir(workdir)) == [export.BEST_DIR]
    assert_params_equal(aj.from_pretrained(str(best))[1], shifted)


def assert_params_equal(got, want):
    want = flat(want)
    assert sorted(flat(got)) == sorted(want)
    for path, value in flat(got).items():
        np.testing.assert_array_equal(value, want[path], err_msg=path)
