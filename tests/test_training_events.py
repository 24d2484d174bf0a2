"""albert_jax.training.events, TensorBoard event files, read back with TensorFlow's own reader (its Event proto
and TFRecord CRC checks) as the independent reference: the CRC-32C, every finite scalar, a corrupted byte; a
write error names the file."""

import errno
import io
import json
import math
import os

import numpy as np
import pytest

import helpers
from albert_jax.training import events
from albert_jax.training.metrics import MetricWriter
from helpers import event_files, read_events

tf = pytest.importorskip("tensorflow")


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


def test_a_write_error_names_the_event_file(tmp_path):
    writer = events.EventWriter(str(tmp_path))
    writer.scalars(1, {"train/loss": 1.0})  # buffered
    with helpers.file_size_limit(os.path.getsize(writer.path)), pytest.raises(OSError) as error:
        writer.flush()
    assert str(error.value) == f"[Errno {errno.EFBIG}] cannot write {writer.path}: File too large"
    writer.close()
