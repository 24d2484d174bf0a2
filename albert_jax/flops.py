"""Model FLOPs of ALBERT and the accelerators they run on: one count for the planner, the benchmark and the log.

`model_flops` counts matrix-multiply FLOPs (2 per multiply-add) only, the usual MFU convention: element-wise work
(biases, activations, softmax, LayerNorm, the loss) is left out, and so is any recomputation a remat policy adds.
On a one-layer model it is within a few % of XLA's own count of the compiled forward (tests/test_flops.py).

`ACCELERATORS` holds each chip's dense bf16 peak and HBM per JAX device, found by the `device_kind` JAX reports,
for MFU in the training log and memory against HBM in the planner. Where there is no entry (a CPU),
`xla_matmul_peak` measures what XLA reaches on this machine instead.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

from albert_jax.config import AlbertConfig

HEADS = ("backbone", "pretraining", "masked_lm", "classification", "token_classification", "qa", "multiple_choice")


def model_flops(
    config: AlbertConfig,
    batch: int,
    seq: int,
    head: str,
    positions: int | None = None,
    training: bool = False,
    choices: int = 1,
) -> float:
    """Matmul FLOPs of one forward (with `training`: forward + backward, 3x) of `head` on `batch` examples of `seq`
    tokens; `batch=1, training=True` is what one training example costs (the log's `model_tflops_per_sec`).

    head (HEADS, after modeling's classes): 'backbone' (AlbertModel: encoder + pooler), 'pretraining' (+ MLM at
      `positions` per sequence, every position when None, + SOP on the pooled output), 'masked_lm' (no pooler,
      MLM at every position), 'classification' (pooler + H -> num_labels), 'token_classification' (H ->
      num_labels per token), 'qa' (H -> 2 per token), 'multiple_choice' (`choices` rows of `seq` tokens per
      example, as AlbertForMultipleChoice flattens [batch, choices, seq]; pooler + H -> 1 per row).
    Over R rows of T tokens (N = R*T), per layer application (num_hidden_layers * inner_group_num of them,
    whatever the sharing): Q, K, V and output projections 4 * 2*N*H*H, scores and context 2 * 2*R*T*T*H, FFN
    2 * 2*N*H*I; once: the embedding projection 2*N*E*H. Embedding lookups are gathers. The MLM head is the dense
    H -> E and the decoder E -> V tied to the word embeddings; its bias rides in the decoder's matmul as an extra
    contraction column (`AlbertEmbeddings.attend`) but is a bias of the model, so it is not counted, like every
    other bias.
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose from {HEADS}")
    if positions is not None and head != "pretraining":
        raise ValueError(f"positions is for the 'pretraining' head, not {head!r}")
    if choices != 1 and head != "multiple_choice":
        raise ValueError(f"choices is for the 'multiple_choice' head, not {head!r}")
    e, h, i, v = config.embedding_size, config.hidden_size, config.intermediate_size, config.vocab_size
    rows = batch * choices
    tokens = rows * seq
    layers = config.num_hidden_layers * config.inner_group_num
    flops = 2 * tokens * e * h
    flops += layers * (4 * 2 * tokens * h * h + 2 * 2 * rows * seq * seq * h + 2 * 2 * tokens * h * i)
    if head in ("backbone", "pretraining", "classification", "multiple_choice"):
        flops += 2 * rows * h * h  # pooler on [CLS]
    if head in ("pretraining", "masked_lm"):
        predicted = rows * (seq if positions is None else positions)
        flops += 2 * predicted * (h * e + e * v)
    if head in ("pretraining", "classification"):
        flops += 2 * rows * h * config.num_labels  # SOP / sequence classifier
    elif head == "token_classification":
        flops += 2 * tokens * h * config.num_labels
    elif head == "qa":
        flops += 2 * tokens * h * 2
    elif head == "multiple_choice":
        flops += 2 * rows * h
    return float(3 * flops if training else flops)


# ---------------------------------------------------------------------------------------------------------
# Accelerators
# ---------------------------------------------------------------------------------------------------------
GB, GiB = 10**9, 2**30


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """One accelerator generation as JAX sees it; `hbm_bytes` and `peak_flops` are per JAX device.

    generation: 'v4', 'v5e', ...: for a TPU also libtpu's topology prefix (`'v4:2x2x1'`); 'H100', 'H200'.
    device_kind: `jax.Device.device_kind` of one device (libtpu reports the same for a deviceless topology).
    chip_hbm_bytes, chip_peak_flops: per chip, as the vendor states them (dense bf16, no sparsity).
    cores_per_chip: TensorCores (1 for a GPU). devices_per_chip: JAX devices a chip appears as: v2/v3 show each
      TensorCore as a device; v4 and v5p join their two in one megacore device; v5e, v6e and GPUs have one.
    chip_config: libtpu's `chip_config_name` that gives `devices_per_chip` (None for a GPU).
    """

    generation: str
    device_kind: str
    chip_hbm_bytes: int
    chip_peak_flops: float
    cores_per_chip: int
    devices_per_chip: int
    chip_config: str | None
    chip_hbm_bandwidth: float  # bytes/s per chip

    @property
    def hbm_bytes(self) -> int:
        return self.chip_hbm_bytes // self.devices_per_chip

    @property
    def hbm_bandwidth(self) -> float:
        return self.chip_hbm_bandwidth / self.devices_per_chip

    @property
    def peak_flops(self) -> float:
        return self.chip_peak_flops / self.devices_per_chip


# Memory in the unit each source states (GB = 1e9 bytes, GiB = 2**30); the v5e and v6e pages' "GB" are GiB: libtpu
# reports 15.75 GiB usable on a v5e chip (and 7.48 of a v2 core's 8 GiB). Bandwidth: HBM bytes/s per chip, same pages.
ACCELERATORS = (
    # cloud.google.com/tpu/docs/v2 (architecture in Jouppi et al., "A Domain Specific Supercomputer for Training
    # Deep Neural Networks", CACM 2020): 2 TensorCores with 8 GiB HBM each; 180 TFLOPS per 4-chip board.
    Accelerator("v2", "TPU v2", 16 * GiB, 45e12, 2, 2, "default", 700 * GB),
    # cloud.google.com/tpu/docs/v3: 2 TensorCores, 123 TFLOPS (bf16), 32 GiB HBM2 per chip.
    Accelerator("v3", "TPU v3", 32 * GiB, 123e12, 2, 2, "default", 900 * GB),
    # cloud.google.com/tpu/docs/v4: 2 TensorCores (one megacore device), 275 TFLOPS (bf16), 32 GiB HBM2 per chip.
    Accelerator("v4", "TPU v4", 32 * GiB, 275e12, 2, 1, "megacore", 1200 * GB),
    # cloud.google.com/tpu/docs/v5e: 1 TensorCore, 197 TFLOPS (bf16), 16 GB HBM per chip.
    Accelerator("v5e", "TPU v5 lite", 16 * GiB, 197e12, 1, 1, "default", 819 * GB),
    # cloud.google.com/tpu/docs/v5p: 2 TensorCores (one megacore device), 459 TFLOPS (bf16), 95 GiB HBM per chip.
    Accelerator("v5p", "TPU v5", 95 * GiB, 459e12, 2, 1, "megacore", 2765 * GB),
    # cloud.google.com/tpu/docs/v6e (Trillium): 1 TensorCore, 918 TFLOPS (bf16), 32 GB HBM per chip.
    Accelerator("v6e", "TPU v6 lite", 32 * GiB, 918e12, 1, 1, "default", 1640 * GB),
    # NVIDIA H100 datasheet, SXM: BF16 Tensor Core 1,979 TFLOPS with sparsity (989 dense), 80 GB HBM3.
    Accelerator("H100", "NVIDIA H100 80GB HBM3", 80 * GB, 989e12, 1, 1, None, 3350 * GB),
    # NVIDIA H200 datasheet, SXM: BF16 Tensor Core 1,979 TFLOPS with sparsity (989 dense), 141 GB HBM3e. An H200
    # NVL (lower clocks) reports the same device_kind.
    Accelerator("H200", "NVIDIA H200", 141 * GB, 989e12, 1, 1, None, 4800 * GB),
)


def accelerator(device_kind: str) -> Accelerator | None:
    """The entry of ACCELERATORS whose device_kind is `device_kind` (e.g. 'TPU v4'), None for any other (a CPU)."""
    return next((a for a in ACCELERATORS if a.device_kind == device_kind), None)


# ---------------------------------------------------------------------------------------------------------
# This machine's peak, where the table has none
# ---------------------------------------------------------------------------------------------------------
PEAK_SIZE = 2048


def measured_peak(call: Callable[[], object], repeats: int, size: int) -> dict:
    """The FLOP/s of `call`, one [size, size] @ [size, size] matmul that returns when done: a peak is what the
    machine can reach, so the fastest of `repeats` (at least 3) timed calls after a warm-up, and the median too.
    {'flops_per_s', 'seconds', 'median_seconds', 'size'}."""
    call()
    times = []
    for _ in range(max(repeats, 3)):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return dict(
        flops_per_s=2 * size**3 / min(times), seconds=min(times), median_seconds=statistics.median(times), size=size
    )


def xla_matmul_peak(dtype: str = "float32", repeats: int = 5, size: int = PEAK_SIZE) -> dict:
    """`measured_peak` of a jitted matmul of `dtype` on jax's default device, with 'dtype' and 'device' (its kind)."""
    import jax
    import jax.numpy as jnp

    a, b = (jax.random.normal(k, (size, size), jnp.dtype(dtype)) for k in jax.random.split(jax.random.PRNGKey(0)))
    matmul = jax.jit(jnp.dot)
    return dict(
        measured_peak(lambda: matmul(a, b).block_until_ready(), repeats, size),
        dtype=dtype,
        device=str(jax.devices()[0].device_kind),
    )
