"""Metric writers: console progress, `metrics.jsonl` (+ `metrics.csv`) and TensorBoard in the work dir.

Only process 0 writes. Each row is a dict with `step` and scalar metrics; eval rows carry `"split": "eval"`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time

import jax


class MetricWriter:
    """Writes one row per logged step to every sink. `total_steps` drives the progress/ETA display."""

    def __init__(self, workdir: str, total_steps: int, stream=sys.stdout):
        self.enabled = jax.process_index() == 0
        self.total_steps = total_steps
        self.stream = stream
        self.start = time.time()
        self.start_step = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        self.csv_path = os.path.join(workdir, "metrics.csv")
        self.csv_fields = None
        from tensorboardX import SummaryWriter
        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, row: dict) -> None:
        """Logs `row` (`step` plus floats) to the console, metrics.jsonl, metrics.csv and TensorBoard."""
        if not self.enabled:
            return
        row = {k: (float(v) if not isinstance(v, (str, int)) else v) for k, v in row.items()}
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        self._write_csv(row)
        prefix = row.get("split", "train")
        for key, value in row.items():
            if isinstance(value, float) and math.isfinite(value):
                self.tb.add_scalar(f"{prefix}/{key}", value, row["step"])
        self.tb.flush()
        print(self._format(row), file=self.stream, flush=True)

    def _write_csv(self, row: dict) -> None:
        if row.get("split") == "eval":
            return  # the CSV holds the training curve; eval rows are in metrics.jsonl and TensorBoard
        new = self.csv_fields is None and not os.path.exists(self.csv_path)
        if self.csv_fields is None:
            self.csv_fields = list(row)
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.csv_fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _format(self, row: dict) -> str:
        step = row["step"]
        if self.start_step is None:
            self.start_step, self.start = step, time.time()
        parts = [f"[{row.get('split', 'train')}] step {step}/{self.total_steps}"]
        parts += [f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float)]
        done = step - self.start_step
        if done > 0 and row.get("split") != "eval":
            eta = (time.time() - self.start) / done * (self.total_steps - step)
            parts.append(f"eta {int(eta) // 60}m{int(eta) % 60:02d}s")
        return " | ".join(parts)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tb.close()
