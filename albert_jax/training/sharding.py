"""Mesh and shardings: parameters and activations carry logical axis names (set in `modeling.py`); one rules
table maps both to mesh axes. The batch is split over ('data', 'fsdp'); with `fsdp > 1` parameters are sharded
too (gathered for use, gradients reduce-scattered); with `tensor > 1` attention heads and the FFN intermediate are
split Megatron-style. Activation constraints take effect only while a function is traced under
`activation_sharding` (see `constrained`).

One CPU device is the degenerate 1x1x1 mesh. Multi-host: call `jax.distributed.initialize` first (see
`initialize_distributed`); the mesh then spans every process's devices.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator

import flax.linen as nn
import jax
import numpy as np
from flax.linen.spmd import logical_to_mesh  # its home: flax.linen re-exports it unmarked (private to pyright)
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from albert_jax.modeling import fit_spec

MESH_AXES = ("data", "fsdp", "tensor")
# logical axis -> mesh axis (None = replicated), in priority order: within one array a mesh axis goes to the first
# of its dimensions that claims it (flax's resolution), so an activation [batch, length, hidden] is
# (('data', 'fsdp'), None, None) while a kernel [hidden, heads] is ('fsdp', 'tensor'). 'layers' (the stacked
# sharing sets) and 'length' (activations' sequence axis) are never split.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
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
        if _cluster_size() > 1:  # a TPU pod slice or a Slurm / Open MPI job: jax finds the coordinator itself
            jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout)
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        heartbeat_timeout_seconds=heartbeat_timeout,
    )


def _cluster_size() -> int:
    """Processes of the job a cluster manager describes in the environment (1 when none): a multi-host TPU VM
    slice (TPU_WORKER_HOSTNAMES), Slurm (SLURM_NTASKS) or Open MPI (OMPI_COMM_WORLD_SIZE)."""
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    sizes = [len(hosts.split(",")) if hosts else 1]
    sizes += [int(os.environ[name]) for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE") if os.environ.get(name)]
    return max(sizes)


def is_multiprocess() -> bool:
    """Whether this process belongs to a job of several (without starting a backend if it does not)."""
    return jax.distributed.is_initialized() and jax.process_count() > 1


def create_mesh(shape: dict, devices=None) -> Mesh:
    """A mesh over `devices` (default: all global devices) with axes MESH_AXES; one size in `shape` may be -1 (the
    rest)."""
    sizes = [int(shape.get(axis, 1)) for axis in MESH_AXES]
    devices = jax.devices() if devices is None else list(devices)
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


def param_shardings(abstract_boxed_params, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedShardings for a (boxed, abstract) parameter tree from its logical axis names."""
    specs = nn.get_partition_spec(abstract_boxed_params)
    shapes = nn.meta.unbox(abstract_boxed_params)
    mesh_specs = logical_to_mesh(specs, rules)
    return jax.tree_util.tree_map(
        lambda spec, x: NamedSharding(mesh, fit_spec(spec, x.shape, mesh)),
        mesh_specs,
        shapes,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def batch_sharding(mesh: Mesh, rules=DEFAULT_RULES) -> NamedSharding:
    """Every batch array's leading axis split as the rules map logical 'batch' (('data', 'fsdp') by default),
    the rest replicated."""
    return NamedSharding(mesh, logical_to_mesh(PartitionSpec("batch"), rules))


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules=DEFAULT_RULES) -> Iterator[None]:
    """While active, the model's activation constraints resolve through `rules` on `mesh`'s axes; they are no-ops
    elsewhere. Enter it where jax traces: inside the jitted function (`constrained` does that) or around
    `jitted.lower(...)`. jit caches traces by the mesh but not by the rules: trace one function under one table.

    The mesh is set as jax's abstract mesh (`jax.set_mesh` is refused inside jit); the devices come from the
    jitted function's `in_shardings`, so give it some (the train step's state and batch shardings do). Not for
    eager calls: a constraint on an abstract mesh has no devices to put an unsharded array on.
    """
    with nn.logical_axis_rules(rules), jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        yield


def constrained(fn: Callable, mesh: Mesh, rules=DEFAULT_RULES) -> Callable:
    """`fn` with its body traced under `activation_sharding(mesh, rules)`, same signature: the function to jit,
    e.g. ``jax.jit(constrained(step, mesh, rules), in_shardings=..., out_shardings=...)``."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with activation_sharding(mesh, rules):
            return fn(*args, **kwargs)

    return wrapped


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local_batch: dict, mesh: Mesh, rules=DEFAULT_RULES) -> dict:
    """This process's rows of the global batch -> global jax.Arrays sharded over the batch axes (`batch_sharding`)."""
    sharding = batch_sharding(mesh, rules)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]
