"""albert_jax.training.hostmem: a jitted step's scratch memory is reused from one call to the next instead of
faulted in afresh.

Each case runs in a fresh process (the setting must precede the CPU backend, and it changes the allocator of
the whole process): a gradient step whose XLA scratch memory is 80 MiB (16 MiB activations) runs 12 times; the
minor page faults of each call are counted (getrusage). The allocator settles within the first 2-5 calls, and a
settled process still faults a block in now and then (a call in 30, seen once): the checks take the median of the
last 8 calls."""

import json
import statistics
import subprocess
import sys

import pytest

from albert_jax.training import hostmem
from helpers import ROOT, device_env

PROBE = r"""
import json, resource, sys
import jax, jax.numpy as jnp
from albert_jax.training import hostmem
reused = hostmem.reuse_cpu_step_memory() if sys.argv[1] == "reuse" else None

@jax.jit
def step(x, w):
    def loss(x):
        h = x
        for _ in range(5):
            h = jnp.tanh(h @ w)
        return h.sum()
    return jax.grad(loss)(x)

x = jnp.ones((8192, 512), jnp.float32) / 512
w = jnp.ones((512, 512), jnp.float32) / 512
temp = step.lower(x, w).compile().memory_analysis().temp_size_in_bytes
faults, outputs = [], []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out = step(x, w).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    outputs.append(float(out.sum()))
print(json.dumps(dict(reused=reused, faults=faults, temp_pages=temp // resource.getpagesize(), outputs=outputs,
                      async_dispatch=jax.config.values["jax_cpu_enable_async_dispatch"])))
"""


def probe(mode):
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=device_env(), capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(hostmem.glibc() is None, reason="the host allocator setting is glibc's")
def test_steps_reuse_their_scratch_memory_instead_of_faulting_it_in():
    default, reused = probe("default"), probe("reuse")
    assert default["temp_pages"] >= 16384  # the step really has a large scratch block (>= 64 MiB)
    # default: every call faults its scratch block in again (the reason for the module)
    assert statistics.median(default["faults"][4:]) > default["temp_pages"] // 2, default
    assert default["async_dispatch"] is True
    assert reused["reused"] is True and reused["async_dispatch"] is False
    assert statistics.median(reused["faults"][4:]) < default["temp_pages"] // 20, reused
    assert reused["outputs"] == default["outputs"]


def test_no_glibc_leaves_the_allocator_alone(monkeypatch):
    def no_such_name(name):
        raise ValueError(name)

    monkeypatch.setattr(hostmem.os, "confstr", no_such_name)
    assert hostmem.glibc() is None
    assert hostmem.keep_freed_memory() is False
