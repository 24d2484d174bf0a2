"""Host memory of training on CPU: each step reuses the last step's scratch memory instead of a fresh block.

XLA's CPU runtime allocates an execution's scratch memory as one block (hundreds of MiB to GiBs for an
ALBERT-base train step) and frees it when the execution ends. glibc serves a block that large with a fresh
`mmap` and gives it back with `munmap`, so every step page-faults all of its scratch memory in again, 4 KiB
at a time, the kernel zeroing each page: a sizeable share of each step is kernel time.

`reuse_cpu_step_memory` stops that in two parts, both needed:
- glibc keeps what is freed (no `mmap` for large blocks, no trimming of the heap), so a step's block is made
  of the pages the previous step freed, already mapped;
- JAX runs CPU computations inline instead of dispatching them asynchronously: asynchronously, step n + 1's
  block is taken while step n still holds its own, so two would be resident at once.
Steps get faster (README, Performance, has the measurements) and the peak resident memory is unchanged,
but the process keeps its peak resident instead of handing scratch memory back between steps. `run.py` and
`experiments/ablate.py` call it unless `--noreuse_host_memory`; on GPU only the inline dispatch applies (it
concerns the CPU client alone).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import jax

# mallopt(3) parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def glibc():
    """This process's C library as a ctypes handle when it is glibc (the only one `mallopt` is set on), else
    None."""
    try:
        name = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # not POSIX, or a C library without that name
        return None
    if not name or not name.startswith("glibc"):
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def keep_freed_memory() -> bool:
    """Makes glibc's malloc keep freed memory for reuse: no `mmap` for large blocks (they come from the heap)
    and no trimming (the heap never shrinks). True when set; False where the C library is not glibc."""
    libc = glibc()
    if libc is None:
        return False
    for option, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)):  # -1: never trim
        if libc.mallopt(ctypes.c_int(option), ctypes.c_int(value)) != 1:
            raise OSError(f"glibc refused mallopt({option}, {value})")
    return True


def reuse_cpu_step_memory() -> bool:
    """Runs JAX's CPU computations inline and, when the default backend is the CPU, makes glibc keep freed
    memory (see the module docstring). Call it before JAX's backend starts (before any array is made or
    `jax.devices()` is asked; `jax.distributed.initialize` may come first): the CPU client reads the dispatch
    setting once, when it is created. Returns whether the host allocator was set."""
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return jax.default_backend() == "cpu" and keep_freed_memory()
