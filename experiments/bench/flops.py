"""Model FLOPs of a workload (for MFU) and the machine's matmul peak as XLA and PyTorch reach it.

`model_flops` counts matrix-multiply FLOPs (2 per multiply-add) only, the usual MFU convention: element-wise
work, softmax and LayerNorm are left out, and so is any recomputation a remat policy adds. On a tiny model it
is within ~3% of XLA's own count (tests/test_bench.py), the rest being the element-wise ops.
"""

from __future__ import annotations

import statistics
import time

PEAK_SIZE = 2048


def model_flops(config, batch: int, seq: int, head: str, positions: int | None = None, training: bool = False) -> float:
    """Matmul FLOPs of one forward (or, with `training`, forward + backward = 3x) of `head` on [batch, seq].

    config: an AlbertConfig (fields vocab_size, embedding_size, hidden_size, intermediate_size,
      num_hidden_layers, inner_group_num, num_labels). head: 'backbone' (encoder + pooler), 'pretraining'
      (+ MLM head at `positions` per sequence, every position when None, + SOP) or 'qa' (no pooler, span head).
    Per layer: Q, K, V and output projections 4*(2*B*T*H*H), scores and context 2*(2*B*T*T*H), FFN
    2*(2*B*T*H*I); once: the embedding projection 2*B*T*E*H. Embedding lookups are gathers, not matmuls.
    """
    e, h, i, v = config.embedding_size, config.hidden_size, config.intermediate_size, config.vocab_size
    layers = config.num_hidden_layers * config.inner_group_num
    tokens = batch * seq
    flops = 2 * tokens * e * h
    flops += layers * (4 * 2 * tokens * h * h + 2 * 2 * batch * seq * seq * h + 2 * 2 * tokens * h * i)
    if head in ("backbone", "pretraining"):
        flops += 2 * batch * h * h  # pooler on [CLS]
    if head == "pretraining":
        predicted = batch * (seq if positions is None else positions)
        flops += 2 * predicted * (h * e + e * v)  # MLM dense H->E, tied decoder E->V
        flops += 2 * batch * h * config.num_labels  # SOP classifier
    elif head == "qa":
        flops += 2 * tokens * h * 2
    elif head != "backbone":
        raise ValueError(f"unknown head {head!r}")
    return float(3 * flops if training else flops)


def workload_flops(config, workload) -> float:
    """`model_flops` of a workloads.Workload (training when it has a loss)."""
    if workload.layers:
        config = config.replace(num_hidden_layers=workload.layers)
    positions = workload.positions if workload.loss == "mlm_masked_sop" else None
    return model_flops(
        config, workload.batch, workload.seq, workload.head, positions, training=workload.loss is not None
    )


def _peak(fn, repeats: int, size: int) -> dict:
    """A peak is what the machine can reach: the fastest of `repeats` calls after a warm-up (the median too)."""
    fn()
    times = []
    for _ in range(max(repeats, 3)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return dict(
        flops_per_s=2 * size**3 / min(times), seconds=min(times), median_seconds=statistics.median(times), size=size
    )


def xla_matmul_peak(dtype: str = "float32", repeats: int = 5, size: int = PEAK_SIZE) -> dict:
    """Peak FLOP/s of a jitted [size, size] @ [size, size] on jax's default device (see `_peak`)."""
    import jax
    import jax.numpy as jnp

    a, b = (jax.random.normal(k, (size, size), jnp.dtype(dtype)) for k in jax.random.split(jax.random.PRNGKey(0)))
    matmul = jax.jit(jnp.dot)
    return dict(
        _peak(lambda: matmul(a, b).block_until_ready(), repeats, size),
        dtype=dtype,
        device=str(jax.devices()[0].device_kind),
    )


def torch_matmul_peak(device: str = "cpu", dtype: str = "float32", repeats: int = 5, size: int = PEAK_SIZE) -> dict:
    """Peak FLOP/s of torch.mm on [size, size] matrices on `device` ('cpu' or 'cuda') (see `_peak`)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(device=device, dtype=getattr(torch, dtype)) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def call():
        torch.mm(a, b)
        sync()

    return dict(_peak(call, repeats, size), dtype=dtype, device=device, threads=torch.get_num_threads())
