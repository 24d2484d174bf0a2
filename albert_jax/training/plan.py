"""Pre-flight planning: the job's own train and predict steps (`steps.build_step`) compiled ahead of time for a
TPU slice (libtpu's deviceless topologies, on a CPU host) or for this machine's devices, without reading data,
allocating the model or claiming the work dir.

For each target: memory per device (XLA's buffer assignment) against the device's HBM, compiled and model
FLOPs, a step time (XLA's TPU cost model where libtpu gives one, else a roofline), the collectives a step
issues, the run's hours, and when it does not fit, the first setting of a small grid that does (`suggest`).

XLA's cost analysis counts a while loop's body once, and the encoder is one: a step's cost is affine in the
number of layers L (every layer costs the same, recomputation included), so it is taken from two small
compiles with 1 and 2 layers, the scan unrolled (`AlbertConfig.scan_unroll`), and extrapolated to L; the
collectives are counted the same way. Memory comes from the full model's compile.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from albert_jax import experiment, flops
from albert_jax.config import AlbertConfig
from albert_jax.training import finetune, initialization, loop, pretrain, sharding, steps

PLAN_JSON, PLAN_MD = "plan.json", "plan.md"
NO_FIT_EXIT_STATUS = 3  # what `run` returns when a target does not fit (1 stays "failed")
# The grid `suggest` searches, in this order: lighter remat policies, then gradient accumulation, then fsdp.
REMAT_ORDER = ("dots_saveable", "dots_with_no_batch_dims_saveable", "nothing_saveable")
MAX_SEARCH_COMPILES = 10
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

# Cloud TPU accelerator types (`v4-32`): N counts TensorCores where a chip has two (v2, v3, v4, v5p), else chips.
# dims: the slice's torus (3-D for v4/v5p); smallest: chips of the smallest slice.
_TPU_SLICES = {"v2": (2, 4), "v3": (2, 4), "v4": (3, 4), "v5p": (3, 4), "v5e": (2, 1), "v6e": (2, 1)}
_ALIASES = {"v5litepod": "v5e"}
TARGET_FORMS = "v2-N, v3-N, v4-N, v5p-N (N TensorCores), v5e-N (or v5litepod-N), v6e-N (N chips), or cpu"


class PlanError(ValueError):
    """A target, mesh or config that cannot be planned (one line, before any compile)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a plan compiles for: a TPU slice (`topology` for libtpu) or this machine's devices (`cpu`)."""

    name: str
    num_devices: int
    accelerator: flops.Accelerator | None  # None: this machine (cpu)
    topology: str | None = None  # libtpu's topology name, e.g. 'v4:2x2x2'
    chip_config: str = "default"
    host_bounds: tuple[int, int, int] = (1, 1, 1)

    def devices(self) -> list:
        if self.topology is None:
            return jax.devices()
        from jax.experimental import topologies

        # libtpu takes a lock file per machine; deviceless topologies use no TPU, so several planners may share it
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
        return list(
            topologies.get_topology_desc(
                topology_name=self.topology,
                platform="tpu",
                chip_config_name=self.chip_config,
                chips_per_host_bounds=self.host_bounds,
            ).devices
        )

    @property
    def hbm_bytes(self) -> int:
        """Memory per device: the chip's HBM, or on `cpu` this machine's RAM shared by its devices."""
        if self.accelerator is not None:
            return self.accelerator.hbm_bytes
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // self.num_devices


def parse_target(spec: str) -> Target:
    """`v4-32` -> the slice's Target (topology shape as Cloud TPU builds it); PlanError naming the valid forms."""
    spec = spec.strip()
    if spec == "cpu":
        return Target("cpu", jax.device_count(), None)
    match = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", spec)
    generation = _ALIASES.get(match.group(1), match.group(1)) if match else None
    if match is None or generation not in _TPU_SLICES:
        raise PlanError(f"unknown target {spec!r}: valid forms are {TARGET_FORMS}")
    accelerator = next(a for a in flops.ACCELERATORS if a.generation == generation)
    (dims, smallest), count = _TPU_SLICES[generation], int(match.group(2))
    chips, cores = count // accelerator.cores_per_chip, accelerator.cores_per_chip
    if count % cores or chips < smallest or chips & (chips - 1):
        first = cores * smallest
        raise PlanError(
            f"target {spec!r}: {generation}-N counts {'TensorCores' if cores == 2 else 'chips'}, N = {first}, "
            f"{2 * first}, {4 * first}, ... (powers of two); valid forms are {TARGET_FORMS}"
        )
    shape = _torus(chips, dims)
    return Target(
        spec,
        chips * accelerator.devices_per_chip,
        accelerator,
        f"{generation}:{'x'.join(map(str, shape))}",
        accelerator.chip_config or "default",
        (min(shape[0], 2), min(shape[1], 2), 1),  # hosts of 2x2 chips (what a host holds matters to nothing here)
    )


def _torus(chips: int, dims: int) -> tuple[int, ...]:
    """The slice shape of `chips` (a power of two): 2-D 4x8 for 32, 3-D 2x2x1 for 4, 2x4x4 for 32."""
    bits = chips.bit_length() - 1
    if dims == 2:
        return (1 << (bits // 2), 1 << (bits - bits // 2))
    if bits == 2:
        return (2, 2, 1)
    return tuple(1 << (bits // 3 + (axis >= 3 - bits % 3)) for axis in range(3))


def parse_targets(specs) -> list[Target]:
    """Every target of `specs` (names or one comma-separated string), checked before anything compiles; a TPU
    target needs libtpu (the `[tpu]` extra)."""
    names = [s for spec in ([specs] if isinstance(specs, str) else specs) for s in spec.split(",") if s.strip()]
    if not names:
        raise PlanError(f"no target given: valid forms are {TARGET_FORMS}")
    targets = [parse_target(name) for name in names]
    if any(t.topology for t in targets) and importlib.util.find_spec("libtpu") is None:
        raise PlanError(
            f'planning for a TPU needs libtpu: pip install -e ".[tpu]" (or pip install "jax[tpu]=={jax.__version__}")'
        )
    return targets


# ---------------------------------------------------------------------------------------------------------
# The job's step, compiled
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Job:
    """A job config and how to make its task for a model config (the task without data)."""

    config: ml_collections.ConfigDict
    albert_config: AlbertConfig
    make_task: Callable[[AlbertConfig], steps.Task]

    def with_model(self, **fields) -> _Job:
        return dataclasses.replace(self, albert_config=self.albert_config.replace(**fields))

    def with_config(self, overrides: dict) -> _Job:
        config = copy.deepcopy(self.config)
        for path, value in overrides.items():
            holder = config
            *parents, leaf = path.split(".")
            for name in parents:
                holder = holder[name]
            holder[leaf] = value
        fields = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("model.")}
        return dataclasses.replace(self, config=config, albert_config=self.albert_config.replace(**fields))

    def model_step_flops(self) -> float:
        """The model's FLOPs in one optimizer step (flops.py), as the training log counts them."""
        return float(self.config.batch_size * (self.make_task(self.albert_config).flops_per_example or 0.0))


def job(config: ml_collections.ConfigDict) -> _Job:
    """The job `config` describes, without its data: pretraining or fine-tuning (the model of `init_from` when
    its config.json can be read here, else the config's `model` preset)."""
    if config.get("job", "pretrain") == "pretrain":
        albert_config = experiment.albert_config(config.model)
        pretrain.validate(config, albert_config)
        return _Job(config, albert_config, lambda c: pretrain.model_task(config, c))
    head = finetune.task_head(config)
    init_from = None
    if config.get("init_from"):
        try:
            init_from = initialization.resolve(config.init_from)
        except (FileNotFoundError, ValueError):
            print(f"[plan] config.init_from={config.init_from!r} is not here: planning the config's model preset")
    albert_config = finetune.model_config(config, init_from)
    return _Job(config, albert_config, lambda c: finetune.model_task(config, c, head))


def _mesh(job: _Job, devices: list) -> jax.sharding.Mesh:
    try:
        mesh = sharding.create_mesh(job.config.mesh, devices)
        loop.validate_batch(job.config, mesh)
    except ValueError as e:
        raise PlanError(str(e)) from None
    return mesh


@dataclasses.dataclass
class _Compiled:
    """A job's steps compiled for a target's devices: the train step (None where the TPU compiler refused it
    as too big for the device's HBM) and the memory per device of both steps."""

    train: jax.stages.Compiled | None
    memory: dict
    predict_memory: dict | None
    seconds: float

    def fits(self, hbm: int) -> bool:
        return self.train is not None and all(m["peak"] <= hbm for m in (self.memory, self.predict_memory) if m)


def _compile_train(job: _Job, devices: list) -> _Compiled:
    """`job`'s train and predict steps (as `loop.train` builds them) compiled for `devices`."""
    mesh = _mesh(job, devices)
    step = steps.build_step(job.config, job.make_task(job.albert_config), mesh)
    batch = step.abstract_batch(loop.validate_batch(job.config, mesh))
    start = time.time()
    train = _compile(step.train().lower(step.abstract_state, batch))
    seconds = time.time() - start
    state = _bytes_per_device(step.abstract_state)  # donated: a refused step's outputs would alias it
    memory = _memory(train, arguments=state + _bytes_per_device(batch), outputs=state, aliased=state)
    predict_memory, jit_predict = None, step.predict()
    if jit_predict is not None:
        rows = loop.eval_batch_size(job.config)
        inputs = (step.abstract_state.params, step.abstract_batch(rows, step.task.predict_keys))
        predict = _compile(jit_predict.lower(*inputs))
        predict_memory = _memory(predict, arguments=_bytes_per_device(inputs), outputs=0, aliased=0)
    return _Compiled(train if isinstance(train, jax.stages.Compiled) else None, memory, predict_memory, seconds)


_NO_HBM = re.compile(r"required for HLO temporaries \(([\d.]+)([KMGTP]?)\)")


def _compile(lowered) -> jax.stages.Compiled | int:
    """The compiled program, or, where the TPU compiler refuses it for want of HBM, the temporaries it needed
    (bytes, from its message)."""
    try:
        return lowered.compile()
    except jax.errors.JaxRuntimeError as e:
        found = _NO_HBM.search(str(e))
        if "RESOURCE_EXHAUSTED" not in str(e) or found is None:
            raise
        return int(float(found.group(1)) * 1024 ** " KMGTP".index(found.group(2) or " "))


def _bytes_per_device(tree) -> int:
    """Bytes one device holds of a tree of ShapeDtypeStructs with shardings (the largest shard)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in leaves)


def _memory(compiled: jax.stages.Compiled | int, **refused: int) -> dict:
    """Bytes per device of a compiled program's buffers (XLA's buffer assignment); for a program the compiler
    refused (`compiled` = the temporaries it needed), the sizes in `refused` (arguments, outputs, aliased).
    peak = arguments + outputs - aliased + temp: what is live at once at worst."""
    if isinstance(compiled, jax.stages.Compiled):
        stats = compiled.memory_analysis()
        if stats is None:
            raise PlanError("XLA gave no memory analysis for this target")
        sizes = dict(
            arguments=stats.argument_size_in_bytes,
            outputs=stats.output_size_in_bytes,
            aliased=stats.alias_size_in_bytes,
            temp=stats.temp_size_in_bytes,
        )
    else:
        sizes = dict(refused, temp=compiled)
    memory = {k: int(v) for k, v in sizes.items()}
    return dict(memory, peak=memory["arguments"] + memory["outputs"] - memory["aliased"] + memory["temp"])


def _cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, list) else cost) or {}
    return {k: float(cost[k]) for k in ("flops", "bytes accessed", "optimal_seconds") if k in cost}


_SHAPE = re.compile(r"\b(pred|[a-z]+\d+)\[([\d,]*)\]")


def collectives(hlo: str) -> dict:
    """{op: {count, bytes}} of the collectives in optimized HLO text (async `-start` ops counted as their op);
    bytes: the size of what each op produces on one device, summed."""
    found: dict[str, dict] = {}
    pattern = re.compile(r"=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\(")
    for line in hlo.splitlines():
        match = pattern.search(line)
        if match is None:
            continue
        shapes = [(dtype, dims) for dtype, dims in _SHAPE.findall(match.group(1))]
        if match.group(3) and len(shapes) > 1 and match.group(2) != "all-reduce":
            shapes = shapes[len(shapes) // 2 :]  # an async start's result is (operands, outputs)
        size = sum(_dtype_bytes(dtype) * math.prod(int(d) for d in dims.split(",") if d) for dtype, dims in shapes)
        entry = found.setdefault(match.group(2), {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += size
    return found


def _dtype_bytes(name: str) -> int:
    return 1 if name == "pred" else max(int(re.sub(r"\D", "", name)) // 8, 1)


def _per_layer(job: _Job, devices: list) -> tuple[dict, dict] | None:
    """(cost, collectives) of one micro-step of `job`'s full depth, from compiles with 1 and 2 layers (scan
    unrolled), extrapolated linearly in the number of layers; None where those do not compile (no HBM)."""
    c = job.albert_config
    shared_groups = c.num_hidden_groups == c.num_hidden_layers
    points = []
    for layers in (1, 2):
        small = job.with_model(
            num_hidden_layers=layers, num_hidden_groups=layers if shared_groups else 1, scan_unroll=layers
        )
        train = _compile_train(small, devices).train
        if train is None:
            return None
        points.append((_cost(train), collectives(train.as_text() or "")))
    (cost1, coll1), (cost2, coll2) = points
    extra = c.num_hidden_layers - 1

    def extrapolate(one: float, two: float) -> float:
        return one + extra * (two - one)

    cost = {k: extrapolate(cost1[k], cost2[k]) for k in cost1 if k in cost2}
    if not 0 < cost1.get("optimal_seconds", -1) <= cost2.get("optimal_seconds", -1):
        cost.pop("optimal_seconds", None)  # not a time (libtpu's model gives some generations negative ones)
    found = {}
    for op in sorted(set(coll1) | set(coll2)):
        a, b = coll1.get(op, {"count": 0, "bytes": 0}), coll2.get(op, {"count": 0, "bytes": 0})
        found[op] = {k: int(round(extrapolate(a[k], b[k]))) for k in ("count", "bytes")}
    return cost, found


# ---------------------------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------------------------
def plan_target(job: _Job, target: Target, *, search: bool = True, devices: list | None = None) -> dict:
    """The plan.json entry of `job` on `target` (see the module docstring), with a `suggestion` when it does
    not fit and `search` is on. FLOPs, time and collectives are left None for a step that does not fit."""
    devices = devices if devices is not None else target.devices()
    mesh = _mesh(job, devices)
    config, accum = job.config, int(job.config.optimizer.grad_accum_steps)
    compiled = _compile_train(job, devices)
    fits = compiled.fits(target.hbm_bytes)
    model_step_flops = job.model_step_flops()
    entry = {
        "target": target.name,
        "device_kind": devices[0].device_kind,
        "num_devices": len(devices),
        "mesh": {axis: int(mesh.shape[axis]) for axis in sharding.MESH_AXES},
        "per_device_batch": config.batch_size // accum // sharding.data_parallel_size(mesh),
        "grad_accum_steps": accum,
        "remat_policy": job.albert_config.remat_policy,
        "dtype": job.albert_config.dtype,
        "hbm_bytes_per_device": int(target.hbm_bytes),
        "memory": compiled.memory,
        "predict_memory": compiled.predict_memory,
        "fits": fits,
        "model_flops_per_step": model_step_flops,
        **_timing(job, target, devices, model_step_flops if fits else None),
        "total_steps": int(config.total_steps),
        "compile_seconds": round(compiled.seconds, 1),
    }
    if not fits and search:
        entry["suggestion"] = suggest(job, target, devices)
    return entry


def _timing(job: _Job, target: Target, devices: list, model_step_flops: float | None) -> dict:
    """compiled FLOPs, XLA's step time, MFU, hours and collectives per optimizer step (None without
    `model_step_flops`: a step that does not fit; None for what a target's cost analysis lacks)."""
    timing = dict.fromkeys(
        (
            "compiled_flops_per_step",
            "estimated_step_seconds",
            "time_model",
            "estimated_mfu",
            "collectives",
            "estimated_total_hours",
        )
    )
    per_layer = None if model_step_flops is None else _per_layer(job, devices)
    if model_step_flops is None or per_layer is None:
        return timing
    (cost, found), accum = per_layer, int(job.config.optimizer.grad_accum_steps)
    timing["compiled_flops_per_step"] = cost.get("flops", 0.0) * accum * len(devices)
    timing["collectives"] = {op: {k: v * accum for k, v in c.items()} for op, c in found.items()}
    seconds, timing["time_model"] = _step_seconds(target, cost, accum)
    timing["estimated_step_seconds"] = seconds
    if seconds:
        peak = target.accelerator.peak_flops if target.accelerator else _cpu_peak() / len(devices)
        timing["estimated_mfu"] = model_step_flops / (seconds * peak * len(devices))
        timing["estimated_total_hours"] = seconds * job.config.total_steps / 3600
    return timing


def _step_seconds(target: Target, cost: dict, accum: int) -> tuple[float, str]:
    """(seconds per optimizer step, how they were estimated): XLA's TPU cost model (`optimal_seconds`) where it
    gives a time; else a roofline: the step's FLOPs at the device's peak or its bytes at its HBM bandwidth,
    whichever takes longer; on `cpu`, the FLOPs over this machine's measured matmul peak (XLA's CPU cost
    analysis has no time)."""
    if "optimal_seconds" in cost:
        return cost["optimal_seconds"] * accum, "xla"
    step_flops = cost.get("flops", 0.0) * accum
    if target.accelerator is None:
        return step_flops * target.num_devices / _cpu_peak(), "cpu_matmul_peak"
    chip = target.accelerator
    return max(step_flops / chip.peak_flops, cost.get("bytes accessed", 0.0) * accum / chip.hbm_bandwidth), "roofline"


_CPU_PEAK: list[float] = []


def _cpu_peak() -> float:
    """This machine's float32 matmul FLOP/s as XLA reaches it (measured once per process)."""
    if not _CPU_PEAK:
        _CPU_PEAK.append(flops.xla_matmul_peak("float32")["flops_per_s"])
    return _CPU_PEAK[0]


def suggest(job: _Job, target: Target, devices: list) -> dict:
    """The first setting that fits, trying in order: lighter remat policies (REMAT_ORDER), then gradient
    accumulation (the largest factor first, then bisected down to the smallest that fits), then fsdp (moving
    data-parallel devices to it, likewise); at most MAX_SEARCH_COMPILES compiles. {'overrides': the
    --config.* flags, 'memory', 'estimated_step_seconds', 'time_model'} or {'overrides': None, 'reason': ...}."""
    hbm, compiles = target.hbm_bytes, [0]

    def fits(overrides: dict) -> dict | None:
        compiles[0] += 1
        compiled = _compile_train(job.with_config(overrides), devices)
        return compiled.memory if compiled.fits(hbm) else None

    def found(overrides: dict, memory: dict) -> dict:
        changed = job.with_config(overrides)
        timing = _timing(changed, target, devices, changed.model_step_flops())
        flags = {f"--config.{k}": v for k, v in overrides.items()}
        times = {k: timing[k] for k in ("estimated_step_seconds", "time_model")}
        return {"overrides": flags, "memory": memory, **times}

    policy = job.albert_config.remat_policy
    start = REMAT_ORDER.index(policy) + 1 if policy in REMAT_ORDER else 0
    overrides: dict = {}
    for policy in REMAT_ORDER[start:]:
        overrides = {"model.remat_policy": policy}
        memory = fits(overrides)
        if memory is not None:
            return found(overrides, memory)
    mesh = _mesh(job, devices)
    accum = int(job.config.optimizer.grad_accum_steps)
    per_device = job.config.batch_size // accum // sharding.data_parallel_size(mesh)
    factors = [f for f in (1 << k for k in range(1, 16)) if per_device % f == 0]
    hit = _smallest_fitting(factors, lambda f: fits({**overrides, "optimizer.grad_accum_steps": accum * f}), compiles)
    if hit is not None:
        return found({**overrides, "optimizer.grad_accum_steps": accum * hit[0]}, hit[1])
    data = mesh.shape["data"]
    sizes = [f for f in (1 << k for k in range(1, 16)) if data % f == 0]
    fsdp = mesh.shape["fsdp"]

    def with_fsdp(f: int) -> dict:
        return {**overrides, "mesh.data": data // f, "mesh.fsdp": fsdp * f}

    hit = _smallest_fitting(sizes, lambda f: fits(with_fsdp(f)), compiles)
    if hit is not None:
        return found(with_fsdp(hit[0]), hit[1])
    return {"overrides": None, "reason": f"nothing in the grid fits ({compiles[0]} compiles)"}


def _smallest_fitting(values: list[int], fits: Callable[[int], dict | None], compiles: list[int]):
    """(value, memory) for the smallest of the increasing `values` that fits, trying the largest first and then
    bisecting; None when the largest does not fit or the compile budget runs out."""
    if not values or compiles[0] >= MAX_SEARCH_COMPILES:
        return None
    memory = fits(values[-1])
    if memory is None:
        return None
    best, low, high = (values[-1], memory), 0, len(values) - 1
    while low < high and compiles[0] < MAX_SEARCH_COMPILES:
        middle = (low + high) // 2
        memory = fits(values[middle])
        if memory is None:
            low = middle + 1
        else:
            best, high = (values[middle], memory), middle
    return best


def plan(config: ml_collections.ConfigDict, targets: list[Target], *, search: bool = True, cell: str | None = None):
    """plan.json entries of the job `config` describes on each target (with `cell` when given)."""
    the_job = job(config)
    entries = []
    for target in targets:
        devices = target.devices()
        _mesh(the_job, devices)  # a mesh that does not fit the target is refused before any compile
        print(f"[plan] {cell + ' on ' if cell else ''}{target.name}: compiling ...", flush=True)
        entry = plan_target(the_job, target, search=search, devices=devices)
        entries.append({"cell": cell, **entry} if cell else entry)
    return entries


def check(config: ml_collections.ConfigDict, targets: list[Target]) -> None:
    """Everything that can be refused without compiling: the job, and its mesh and batch on each target."""
    the_job = job(config)
    for target in targets:
        _mesh(the_job, target.devices())


# ---------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------
def write(entries: list[dict], workdir: str) -> dict:
    """`<workdir>/plan.json` ({"targets": entries}) and `plan.md` (the table); returns their paths."""
    os.makedirs(workdir, exist_ok=True)
    paths = {"json": os.path.join(workdir, PLAN_JSON), "markdown": os.path.join(workdir, PLAN_MD)}
    with open(paths["json"], "w") as f:
        json.dump({"targets": entries}, f, indent=1)
    with open(paths["markdown"], "w") as f:
        f.write(table(entries) + "\n")
    return paths


def table(entries: list[dict]) -> str:
    """A markdown table, one row per (cell,) target."""
    cells = any("cell" in e for e in entries)
    head = ["cell"] * cells + [
        "target",
        "devices",
        "mesh d/f/t",
        "batch/device",
        "accum",
        "remat",
        "peak GiB",
        "HBM GiB",
        "fits",
        "model TFLOP/step",
        "compiled TFLOP/step",
        "step s",
        "time from",
        "MFU",
        "hours",
        "suggestion",
    ]
    rows = []
    for e in entries:
        mesh = e["mesh"]
        suggestion = e.get("suggestion")
        advice = ""
        if suggestion:
            advice = " ".join(f"{k}={v}" for k, v in (suggestion["overrides"] or {}).items()) or suggestion["reason"]
        rows.append(
            [e.get("cell", "")] * cells
            + [
                e["target"],
                str(e["num_devices"]),
                f"{mesh['data']}/{mesh['fsdp']}/{mesh['tensor']}",
                str(e["per_device_batch"]),
                str(e["grad_accum_steps"]),
                e["remat_policy"],
                f"{e['memory']['peak'] / 2**30:.2f}",
                f"{e['hbm_bytes_per_device'] / 2**30:.1f}",
                "yes" if e["fits"] else "**no**",
                _maybe(e["model_flops_per_step"] / 1e12, "{:,.2f}"),
                _maybe(e["compiled_flops_per_step"] and e["compiled_flops_per_step"] / 1e12, "{:,.2f}"),
                _maybe(e["estimated_step_seconds"], "{:.3g}"),
                e.get("time_model") or "",
                _maybe(e["estimated_mfu"], "{:.0%}"),
                _maybe(e["estimated_total_hours"], "{:,.1f}"),
                advice,
            ]
        )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _maybe(value, form: str) -> str:
    return "" if value is None or not np.isfinite(value) else form.format(value)


def run(jobs: list[tuple[str | None, ml_collections.ConfigDict]], workdir: str, targets, *, search: bool = True) -> int:
    """Plans every (cell or None, job config) of `jobs` on `targets` (refusing bad targets, meshes and configs
    before any compile), writes plan.json and plan.md into `workdir` and prints the table. Returns the exit
    status: 0 when everything fits, NO_FIT_EXIT_STATUS otherwise."""
    targets = parse_targets(targets)
    # a deviceless compile cannot be loaded back from JAX's persistent cache: do not write it there
    jax.config.update("jax_enable_compilation_cache", False)
    for _, config in jobs:
        check(config, targets)
    entries = [e for cell, config in jobs for e in plan(config, targets, search=search, cell=cell)]
    paths = write(entries, workdir)
    print(table(entries))
    print("\n".join(f"wrote {path}" for path in paths.values()))
    misfits = [" ".join(filter(None, (e.get("cell"), e["target"]))) for e in entries if not e["fits"]]
    if misfits:
        print(f"does not fit: {', '.join(misfits)}", file=sys.stderr)
        return NO_FIT_EXIT_STATUS
    return 0
