"""albert_jax.training.metrics, the metric writer: a resumed run's metrics.jsonl, metrics.csv and TensorBoard
events (read back with TensorFlow's own reader) hold each step once, the redone steps purged."""

import io
import json

import pytest

from albert_jax.training.metrics import MetricWriter
from helpers import event_files, read_events

tf = pytest.importorskip("tensorflow")


def test_a_resumed_writer_purges_the_redone_steps(tmp_path):
    first = MetricWriter(str(tmp_path), total_steps=6, stream=io.StringIO())
    for step in range(1, 5):
        first.write(dict(step=step, loss=float(step)))
    first.close()
    resumed = MetricWriter(str(tmp_path), total_steps=6, stream=io.StringIO(), start_step=2)
    for step in range(3, 7):
        resumed.write(dict(step=step, loss=10.0 + step))
    resumed.close()
    old, new = event_files(tmp_path)
    start = read_events(new)[1]
    assert start.session_log.status == tf.compat.v1.SessionLog.START and start.step == 3
    # what TensorBoard shows: events before the purge step from the old file, then the new file's
    kept = [(e.step, e.summary.value[0].simple_value) for e in read_events(old) if e.summary.value and e.step < 3]
    kept += [(e.step, e.summary.value[0].simple_value) for e in read_events(new) if e.summary.value]
    assert kept == [(1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0), (5, 15.0), (6, 16.0)]
    with open(tmp_path / "metrics.jsonl") as f:
        assert [json.loads(line)["loss"] for line in f] == [1.0, 2.0, 13.0, 14.0, 15.0, 16.0]
    with open(tmp_path / "metrics.csv") as f:
        assert [line.split(",")[0] for line in f] == ["step", "1", "2", "3", "4", "5", "6"]
