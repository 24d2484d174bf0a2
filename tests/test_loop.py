"""The train loop's seam, in process: init_from (resolution, new heads, sharded placement), restores that
carry shardings, the work dir claim, and the evaluators' predict."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import albert_jax as aj
from albert_jax import convert
from albert_jax.training import checkpoints, initialization, loop, sharding

TINY = aj.AlbertConfig.from_preset("albert-tiny", vocab_size=64, embedding_size=8, hidden_size=16,
                                   num_attention_heads=2, intermediate_size=32, num_hidden_layers=2,
                                   max_position_embeddings=32)


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
    merged = initialization.load_into(fresh, str(spec))
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
    wider = aj.init_params(aj.AlbertModel(TINY.replace(hidden_size=24, intermediate_size=24)),
                           jax.random.PRNGKey(0))
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
    assert initialization.resolve("someone/tiny-albert") == str(snapshot)
    assert initialization.model_config("someone/tiny-albert").hidden_size == TINY.hidden_size
    with pytest.raises(FileNotFoundError, match="huggingface_hub cache"):
        initialization.resolve("someone/not-downloaded")


def test_restore_reshards_onto_another_mesh(tmp_path):
    """Saved from a 4-device mesh, restored onto a 2-device mesh: same values, the new shardings."""
    four = Mesh(np.asarray(jax.devices()[:4]).reshape(4), ("data",))
    two = Mesh(np.asarray(jax.devices()[:2]).reshape(2), ("data",))
    value = np.arange(32, dtype=np.float32).reshape(8, 4)
    state = {"w": jax.device_put(value, NamedSharding(four, PartitionSpec("data"))), "step": jnp.asarray(3)}
    saver = checkpoints.Checkpointer(str(tmp_path))
    saver.save(3, state, {"micro_step": 3})
    saver.close()
    target = {"w": jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=NamedSharding(two, PartitionSpec("data"))),
              "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(two, PartitionSpec()))}
    restored, data = checkpoints.Checkpointer(str(tmp_path)).restore_latest(target)
    np.testing.assert_array_equal(restored["w"], value)
    assert restored["w"].sharding == target["w"].sharding and len(restored["w"].sharding.device_set) == 2
    assert data["micro_step"] == 3


def test_claim_refuses_another_run_and_overwrite_clears_everything(tmp_path):
    checkpoints.claim_workdir(str(tmp_path), {"seed": 0}, overwrite=False)
    for name in ("metrics.jsonl", "spiece.model", "examples_train_x.npz"):
        (tmp_path / name).write_text("old")
    (tmp_path / "checkpoints" / "4").mkdir(parents=True)
    checkpoints.claim_workdir(str(tmp_path), {"seed": 0}, overwrite=False)  # same run: kept
    assert (tmp_path / "spiece.model").exists()
    with pytest.raises(checkpoints.WorkdirError, match=r"different run \(differs in: seed\)"):
        checkpoints.claim_workdir(str(tmp_path), {"seed": 1}, overwrite=False)
    checkpoints.claim_workdir(str(tmp_path), {"seed": 1}, overwrite=True)
    assert os.listdir(tmp_path) == [checkpoints.RUN_CONFIG_NAME]
    assert json.loads((tmp_path / checkpoints.RUN_CONFIG_NAME).read_text()) == {"seed": 1}


def test_claim_refuses_an_unwritable_work_dir(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(checkpoints.WorkdirError, match="cannot write to the work dir"):
        checkpoints.claim_workdir(str(tmp_path / "file" / "run"), {"seed": 0}, overwrite=False)


@pytest.mark.parametrize("rows", [1, 7, 8, 13])
def test_predict_sees_every_row_exactly_once(rows):
    mesh = sharding.create_mesh({"data": -1})
    calls = []

    def predict_fn(params, batch):
        calls.append(batch["x"].shape)
        return {"double": batch["x"] * params["scale"], "id": batch["id"]}

    jit_predict = jax.jit(predict_fn, out_shardings=sharding.replicated(mesh))
    predict = loop.make_predict(jit_predict, {"scale": jnp.float32(2)}, mesh, batch_size=4)
    x = np.random.RandomState(0).rand(rows, 3).astype(np.float32)
    out = predict({"x": x, "id": np.arange(rows)})
    np.testing.assert_array_equal(out["id"], np.arange(rows))
    np.testing.assert_allclose(out["double"], 2 * x)
    assert set(calls) == {(4, 3)}  # one compiled shape: the last batch is padded, its padding dropped
