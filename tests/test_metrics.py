"""Metric files: metrics.jsonl / metrics.csv and TensorBoard event files, read back with TensorFlow's own
reader (its Event proto and TFRecord CRC checks) as the independent reference."""

import glob
import io
import json
import math
import os

import numpy as np
import pytest

from albert_jax.training import events
from albert_jax.training.metrics import MetricWriter

tf = pytest.importorskip("tensorflow")


def read_events(path):
    return [tf.compat.v1.Event.FromString(record.numpy()) for record in tf.data.TFRecordDataset(path)]


def event_files(workdir):
    return sorted(glob.glob(os.path.join(workdir, "tensorboard", "*tfevents*")))  # the order TensorBoard reads them in


def test_crc32c_check_value():
    assert events.crc32c(b"123456789") == 0xE3069283  # the CRC-32C catalogue's check value
    assert events.crc32c(b"") == 0


def test_tensorboard_events_hold_every_finite_scalar(tmp_path):
    rows = [
        dict(step=1, loss=5.25, mlm_accuracy=0.125),
        dict(step=2, loss=float("nan"), mlm_accuracy=0.25),
        dict(step=2, split="eval", loss=4.5),
    ]
    writer = MetricWriter(str(tmp_path), total_steps=2, stream=io.StringIO())
    for row in rows:
        writer.write(row)
    writer.close()
    [path] = event_files(tmp_path)
    got = read_events(path)
    assert got[0].file_version == "brain.Event:2"
    assert got[1].session_log.status == tf.compat.v1.SessionLog.START and got[1].step == 1
    scalars = [(e.step, {v.tag: v.simple_value for v in e.summary.value}) for e in got[2:]]
    assert scalars == [
        (1, {"train/loss": 5.25, "train/mlm_accuracy": 0.125}),
        (2, {"train/mlm_accuracy": 0.25}),  # NaN is left out of TensorBoard
        (2, {"eval/loss": 4.5}),
    ]
    assert all(e.wall_time > 1e9 for e in got)
    with open(tmp_path / "metrics.jsonl") as f:
        assert [json.loads(line)["loss"] for line in f] == [5.25, None, 4.5]


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


def test_a_flipped_byte_fails_the_readers_crc_check(tmp_path):
    writer = events.EventWriter(str(tmp_path))
    writer.scalars(7, {"train/loss": math.pi})
    writer.close()
    assert np.isclose(read_events(writer.path)[-1].summary.value[0].simple_value, math.pi)
    data = bytearray(open(writer.path, "rb").read())
    data[-6] ^= 0x01
    open(writer.path, "wb").write(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        read_events(writer.path)
