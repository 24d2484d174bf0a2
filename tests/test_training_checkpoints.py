"""albert_jax.training.checkpoints: a checkpoint saved on one mesh is restored onto another, with the target's
shardings; a save that fails is one line naming the directory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import helpers
from albert_jax.training import checkpoints


def test_restore_reshards_onto_another_mesh(tmp_path):
    """Saved from a 4-device mesh, restored onto a 2-device mesh: same values, the new shardings."""
    four = Mesh(np.asarray(jax.devices()[:4]).reshape(4), ("data",))
    two = Mesh(np.asarray(jax.devices()[:2]).reshape(2), ("data",))
    value = np.arange(32, dtype=np.float32).reshape(8, 4)
    state = {"w": jax.device_put(value, NamedSharding(four, PartitionSpec("data"))), "step": jnp.asarray(3)}
    saver = checkpoints.Checkpointer(str(tmp_path))
    saver.save(3, state, {"micro_step": 3})
    saver.close()
    target = {
        "w": jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=NamedSharding(two, PartitionSpec("data"))),
        "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(two, PartitionSpec())),
    }
    restored, data = checkpoints.Checkpointer(str(tmp_path)).restore_latest(target)
    np.testing.assert_array_equal(restored["w"], value)
    assert restored["w"].sharding == target["w"].sharding and len(restored["w"].sharding.device_set) == 2
    assert data["micro_step"] == 3


def test_a_failed_save_is_a_one_line_error_naming_the_directory(tmp_path):
    """orbax writes in the background and its error (tensorstore's, many lines, without the OS's errno as an
    OSError) surfaces at close: a CheckpointError saying where and why."""
    state = {"w": jnp.asarray(np.random.default_rng(0).standard_normal(5000, dtype=np.float32))}  # 20 kB
    checkpoints.checksum(state)  # compiled (and cached) before the limit
    saver = checkpoints.Checkpointer(str(tmp_path))
    with helpers.file_size_limit(8000), pytest.raises(checkpoints.CheckpointError) as error:
        saver.save(1, state, {"micro_step": 1})
        saver.close()
    assert str(error.value) == f"cannot write a checkpoint in {tmp_path / 'checkpoints'}: File too large"
