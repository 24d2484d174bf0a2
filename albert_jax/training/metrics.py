"""Metric writers: console progress, `metrics.jsonl` (+ `metrics.csv`) and TensorBoard in the work dir.

Only process 0 writes. Each row is a dict with `step` and scalar metrics; eval rows carry `"split": "eval"`.
Non-finite values are written as JSON `null` (metrics.jsonl stays strict JSON). A writer that starts at
step S drops the rows after S that an interrupted run left, so a resumed run's files read as one run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time

import jax

from albert_jax.training import events


class MetricWriter:
    """Writes one row per logged step to every sink. `total_steps` drives the progress/ETA display."""

    def __init__(self, workdir: str, total_steps: int, stream=sys.stdout, start_step: int = 0):
        self.enabled = jax.process_index() == 0
        self.total_steps = total_steps
        self.stream = stream
        self.start = time.time()
        self.start_step = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self.csv_path = os.path.join(workdir, "metrics.csv")
        _truncate(jsonl_path, start_step, lambda line: json.loads(line)["step"], keep_first=False)
        _truncate(self.csv_path, start_step, lambda line: int(line.split(",", 1)[0]), keep_first=True)
        self.jsonl = open(jsonl_path, "a")
        self.csv_fields = None
        # purge_step: TensorBoard drops the events at and after it that an interrupted run had written.
        self.tb = events.EventWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1)

    def write(self, row: dict) -> None:
        """Logs `row` (`step` plus floats) to the console, metrics.jsonl, metrics.csv and TensorBoard."""
        if not self.enabled:
            return
        row = {k: (float(v) if not isinstance(v, (str, int)) else v) for k, v in row.items()}
        strict = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
        self.jsonl.write(json.dumps(strict, allow_nan=False) + "\n")
        self.jsonl.flush()
        self._write_csv(row)
        prefix = row.get("split", "train")
        self.tb.scalars(
            row["step"],
            {
                f"{prefix}/{key}": value
                for key, value in row.items()
                if isinstance(value, float) and math.isfinite(value)
            },
        )
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


def _truncate(path: str, last_step: int, step_of, keep_first: bool) -> None:
    """Rewrites `path` (atomically) without the lines whose step is after `last_step`; `keep_first`
    keeps a header line."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    head, body = (lines[:1], lines[1:]) if keep_first else ([], lines)
    kept = head + [line for line in body if line.strip() and step_of(line) <= last_step]
    if len(kept) != len(lines):
        with open(path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(path + ".tmp", path)
