"""What the tests that spawn `run.py` share: running it, reading its metrics, killing it mid-run."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_command(config, workdir, *overrides):
    """The `python run.py` command line for `config` (a path, optionally with ':arg') and `workdir`."""
    return [sys.executable, os.path.join(ROOT, "run.py"), f"--config={config}", f"--workdir={workdir}", *overrides]


def device_env(devices=1):
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def run_py(config, workdir, *overrides, devices=1, check=True, timeout=400):
    """Runs `python run.py` in a subprocess with `devices` CPU devices; asserts success when `check`."""
    result = subprocess.run(
        run_command(config, workdir, *overrides),
        env=device_env(devices),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_metrics(workdir, split="train"):
    """The rows of `workdir/metrics.jsonl` of one split ('train' or 'eval')."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if r.get("split", "train") == split]


def kill_after_checkpoint(command, checkpoints, min_step):
    """Starts `command` and SIGKILLs it as soon as the directory `checkpoints` holds a checkpoint of step
    >= `min_step`; returns the newest checkpoint step at that moment."""
    proc = subprocess.Popen(command, env=device_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(checkpoints) and any(p.isdigit() and int(p) >= min_step for p in os.listdir(checkpoints)):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return max(int(p) for p in os.listdir(checkpoints) if p.isdigit())


def free_port():
    """A free TCP port on the loopback interface (for a local multi-process job's coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
