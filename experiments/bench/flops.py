"""Model FLOPs of a workload (for MFU) and the machine's matmul peak as PyTorch reaches it.

The FLOP count is the library's `albert_jax.flops.model_flops` (matmul FLOPs, training = 3x forward, no remat
recomputation), the one the planner and the training log use; XLA's peak is the library's too
(`albert_jax.flops.xla_matmul_peak`, the planner's on a CPU), PyTorch's is measured the same way here.
"""

from __future__ import annotations

from albert_jax import flops


def workload_flops(config, workload) -> float:
    """`albert_jax.flops.model_flops` of a workloads.Workload (training when it has a loss)."""
    if workload.layers:
        config = config.replace(num_hidden_layers=workload.layers)
    positions = workload.positions if workload.loss == "mlm_masked_sop" else None
    return flops.model_flops(
        config, workload.batch, workload.seq, workload.head, positions, training=workload.loss is not None
    )


def torch_matmul_peak(
    device: str = "cpu", dtype: str = "float32", repeats: int = 5, size: int = flops.PEAK_SIZE
) -> dict:
    """Peak FLOP/s of torch.mm on [size, size] matrices on `device` ('cpu' or 'cuda') (`flops.measured_peak`)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(device=device, dtype=getattr(torch, dtype)) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def call():
        torch.mm(a, b)
        sync()

    return dict(flops.measured_peak(call, repeats, size), dtype=dtype, device=device, threads=torch.get_num_threads())
