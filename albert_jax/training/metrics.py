"""Metric writers: console progress, `metrics.jsonl` (+ `metrics.csv`) and TensorBoard in the work dir.

Only process 0 writes. Each row is a dict with `step` and scalar metrics; eval rows carry `"split": "eval"`, events
(a loss-spike rollback, `spikes`) `"split": "event"` and `"event"`: those go to metrics.jsonl and the console only.
Non-finite values are written as JSON `null` (metrics.jsonl stays strict JSON). A writer that starts at
step S drops the rows after S that an interrupted run left, so a resumed run's files read as one run, and a
torn last line (a write cut short: disk full, file-size limit) with a warning. Write errors name their file.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time

import jax
from absl import logging

from albert_jax.training import events


class MetricWriter:
    """Writes one row per logged step to every sink. `total_steps` drives the progress/ETA display. Starting at
    `start_step`, it also drops the loss-spike rollback events numbered above `rollbacks` (`spikes`: ones the
    checkpoint resumed from had not seen, which the run redoes)."""

    def __init__(self, workdir: str, total_steps: int, stream=sys.stdout, start_step: int = 0, rollbacks: int = 0):
        self.enabled = jax.process_index() == 0
        self.total_steps = total_steps
        self.stream = stream
        self.start = time.time()
        self.start_step = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self.jsonl_path = jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self.csv_path = os.path.join(workdir, "metrics.csv")
        _truncate(jsonl_path, start_step, lambda line: _jsonl_step(line, rollbacks), keep_first=False)
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
        with events.naming(self.jsonl_path):
            self.jsonl.write(json.dumps(strict, allow_nan=False) + "\n")
            self.jsonl.flush()
        if "event" in row:  # a rollback: in metrics.jsonl and on the console, not in the curves
            print(
                f"[{row['event']}] " + " | ".join(f"{k} {v}" for k, v in row.items() if k not in ("split", "event")),
                file=self.stream,
                flush=True,
            )
            return
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
        with events.naming(self.csv_path), open(self.csv_path, "a", newline="") as f:
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
            with events.naming(self.jsonl_path):
                self.jsonl.close()
            self.tb.close()


def _jsonl_step(line: str, rollbacks: int) -> float:
    """A metrics.jsonl row's step; a rollback event numbered above `rollbacks` counts as after every step."""
    row = json.loads(line)
    return math.inf if row.get("rollback", 0) > rollbacks else row["step"]


def _truncate(path: str, last_step: int, step_of, keep_first: bool) -> None:
    """Rewrites `path` (atomically) without the lines whose step is after `last_step`; `keep_first` keeps a
    header line. A last line without its newline or unreadable (a write cut short) is dropped with a warning;
    an unreadable line before it is a ValueError naming the file and line: history is never dropped silently."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            if not line.endswith("\n"):
                raise ValueError("no newline at its end")
            if (keep_first and number == 1) or (line.strip() and step_of(line) <= last_step):
                kept.append(line)
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # a JSON row not an object: AttributeError
            problem = f"{type(e).__name__}: {e}"
            if number < len(lines):
                raise ValueError(f"{path} line {number} is damaged ({problem}); repair or delete it") from None
            logging.warning("%s: dropped its last line, cut short by a failed write (%s): %r", path, problem, line)
    if not kept:
        os.remove(path)  # the next writer starts it anew (with a header: one torn may have been all it held)
    elif len(kept) != len(lines):
        with events.naming(path + ".tmp"), open(path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(path + ".tmp", path)
