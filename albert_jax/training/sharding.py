"""Mesh and shardings: parameters carry logical axis names (set in `modeling.py`); a rules table maps
them to mesh axes. The batch is split over ('data', 'fsdp'); with `fsdp > 1` parameters are sharded too.

One CPU device is the degenerate 1x1x1 mesh. Multi-host: call `jax.distributed.initialize` first (see
`initialize_distributed`); the mesh then spans every process's devices.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import numpy as np
from flax.linen.spmd import logical_to_mesh  # its home: flax.linen re-exports it unmarked (private to pyright)
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
# logical axis -> mesh axis (None = replicated). 'layers' (the stacked sharing sets) is never split.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("vocab", "fsdp"),
    ("hidden", "fsdp"),
    ("hidden_out", None),
    ("embed", None),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),
)


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    heartbeat_timeout: int = 60,
) -> None:
    """Joins a multi-process job when one is described (flags, or JAX_COORDINATOR_ADDRESS /
    JAX_NUM_PROCESSES / JAX_PROCESS_ID, or a cluster jax auto-detects such as SLURM/TPU pods).
    On CPU the cross-process collectives use gloo. A process silent for `heartbeat_timeout` seconds
    (one that died) ends the whole job."""
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if not coordinator_address and not num_processes:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        heartbeat_timeout_seconds=heartbeat_timeout,
    )


def is_multiprocess() -> bool:
    """Whether this process belongs to a job of several (without starting a backend if it does not)."""
    return jax.distributed.is_initialized() and jax.process_count() > 1


def create_mesh(shape: dict) -> Mesh:
    """A mesh over all (global) devices with axes MESH_AXES; one size in `shape` may be -1 (the rest)."""
    sizes = [int(shape.get(axis, 1)) for axis in MESH_AXES]
    devices = jax.devices()
    if sizes.count(-1) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"config.mesh {dict(shape)}: {len(devices)} devices are not divisible by {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"config.mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
            f"{len(devices)} are available"
        )
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def _fit_spec(spec: PartitionSpec, shape: tuple, mesh: Mesh) -> PartitionSpec:
    """Replicates any dimension its mesh axes do not divide (e.g. a 2-way split of a 3-label classifier)."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else (axes or ())
        size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
        fitted.append(axes if size > 1 and dim % size == 0 else None)
    return PartitionSpec(*fitted)


def param_shardings(abstract_boxed_params, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedShardings for a (boxed, abstract) parameter tree from its logical axis names."""
    specs = nn.get_partition_spec(abstract_boxed_params)
    shapes = nn.meta.unbox(abstract_boxed_params)
    mesh_specs = logical_to_mesh(specs, rules)
    return jax.tree_util.tree_map(
        lambda spec, x: NamedSharding(mesh, _fit_spec(spec, x.shape, mesh)),
        mesh_specs,
        shapes,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ('data', 'fsdp'), the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """This process's rows of the global batch -> global jax.Arrays sharded over the batch axes."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]
