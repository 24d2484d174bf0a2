"""albert_jax.training.metrics, the metric writer: a resumed run's metrics.jsonl, metrics.csv and TensorBoard
events (read back with TensorFlow's own reader) hold each step once, the redone steps purged; a torn last line
is dropped, a damaged earlier one is an error; write errors name their file."""

import errno
import io
import json
import os

import pytest

import helpers
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


def write_rows(workdir, steps, start_step=0):
    writer = MetricWriter(str(workdir), total_steps=6, stream=io.StringIO(), start_step=start_step)
    for step in steps:
        writer.write(dict(step=step, loss=float(step)))
    writer.close()


def steps_in(workdir):
    with open(workdir / "metrics.jsonl") as f:
        jsonl = [json.loads(line)["step"] for line in f]
    with open(workdir / "metrics.csv") as f:
        return jsonl, [line.rstrip("\n").split(",")[0] for line in f]


@pytest.mark.parametrize("name,keep", [("metrics.jsonl", 9), ("metrics.csv", 4), ("metrics.csv", 0)])
def test_a_torn_last_line_is_dropped_on_resume(tmp_path, caplog, name, keep):
    """A write cut short (disk full) left a partial last row (or only a partial CSV header): the resumed run
    drops it with a warning naming the file, and its rows follow the kept ones."""
    write_rows(tmp_path, range(1, 5))
    path = tmp_path / name
    lines = path.read_text().splitlines(keepends=True)
    torn = "".join(lines[:-1]) + lines[-1][:keep] if keep else lines[0][:3]  # '4,4.' of '4,4.0\n', or 'ste'
    path.write_text(torn)
    write_rows(tmp_path, [5, 6], start_step=4)
    jsonl, csv_steps = steps_in(tmp_path)
    if name == "metrics.jsonl":
        assert (jsonl, csv_steps) == ([1, 2, 3, 5, 6], ["step", "1", "2", "3", "4", "5", "6"])
    elif keep:
        assert (jsonl, csv_steps) == ([1, 2, 3, 4, 5, 6], ["step", "1", "2", "3", "5", "6"])
    else:
        assert (jsonl, csv_steps) == ([1, 2, 3, 4, 5, 6], ["step", "5", "6"])
    assert f"{path}: dropped its last line" in caplog.text


@pytest.mark.parametrize("name,number", [("metrics.jsonl", 2), ("metrics.csv", 3)])
def test_a_damaged_line_before_the_last_is_an_error_naming_file_and_line(tmp_path, name, number):
    write_rows(tmp_path, range(1, 5))
    path = tmp_path / name
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = "\0" * 8 + "\n"  # as a crash can leave a block of a file
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match=f"^{path} line {number} is damaged"):
        write_rows(tmp_path, [5], start_step=4)
    assert path.read_text() == "".join(lines)  # history is kept for the user to repair


def test_write_errors_name_their_file(tmp_path):
    """Write errors (disk full, a file-size limit) say which file: `[Errno 27] cannot write PATH: File too
    large`, where Python's own message names none."""
    writer = MetricWriter(str(tmp_path), total_steps=6, stream=io.StringIO())
    with helpers.file_size_limit(10), pytest.raises(OSError) as jsonl_error:
        writer.write(dict(step=1, loss=1.0))
    assert str(jsonl_error.value) == f"[Errno {errno.EFBIG}] cannot write {tmp_path / 'metrics.jsonl'}: File too large"
    writer.close()  # the rest of the row, now under no limit
    writer = MetricWriter(str(tmp_path), total_steps=6, stream=io.StringIO(), start_step=1)
    os.symlink("/dev/full", tmp_path / "metrics.csv")  # a full disk (after the start: reading it never ends)
    with pytest.raises(OSError, match=f"^\\[Errno {errno.ENOSPC}\\] cannot write {tmp_path / 'metrics.csv'}: No space"):
        writer.write(dict(step=2, loss=2.0))
