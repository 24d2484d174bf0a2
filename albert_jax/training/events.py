"""TensorBoard event files for scalar metrics, written directly: TFRecord framing around `Event` protos.

A writer for what training logs (floats per step) needs no TensorFlow, tensorboard or tensorboardX:
tensorboardX imports torch when it is installed, which slows the start of every training process and adds
to its memory (README, Performance).
The format, as TensorBoard reads it:

* a file named ``events.out.tfevents.<seconds>.<microseconds>.<host>.<pid>`` (TensorBoard reads every
  ``*tfevents*`` file of a run directory in name order: a resumed run adds a file after the old ones);
* TFRecords: ``uint64 length, uint32 masked_crc32c(length), data, uint32 masked_crc32c(data)``, little-endian;
* ``Event`` (tensorflow/core/util/event.proto): 1 ``wall_time`` double, 2 ``step`` int64, 3 ``file_version``
  string, 5 ``summary``, 7 ``session_log``; ``Summary``: 1 repeated ``value``; ``Summary.Value``: 1 ``tag``,
  2 ``simple_value`` float; ``SessionLog``: 1 ``status`` (START = 1).

The first event is ``file_version = "brain.Event:2"``. `EventWriter(purge_step=S)` then writes a
``SessionLog.START`` at step S, on which TensorBoard drops the events at and after S that earlier files hold:
an interrupted run's last steps, redone after a resume.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time


@contextlib.contextmanager
def naming(path: str):
    """Re-raises an OSError of the block as one that names `path`, for the write errors that name no file
    (`[Errno 28] No space left on device`): `[Errno 28] cannot write PATH: No space left on device`."""
    try:
        yield
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e


_CRC32C_POLY = 0x82F63B78  # Castagnoli, bit-reversed


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`, as TFRecord framing uses it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> bytes:
    crc = crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        if not value:
            out.append(bits)
            return bytes(out)
        out.append(bits | 0x80)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (strings and sub-messages)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(step: int, *, file_version: str = "", scalars: dict | None = None, session_start: bool = False) -> bytes:
    out = _varint(1 << 3 | 1) + struct.pack("<d", time.time()) + _varint(2 << 3) + _varint(step)
    if file_version:
        out += _field(3, file_version.encode())
    if scalars:
        values = b"".join(
            _field(1, _field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value))
            for tag, value in scalars.items()
        )
        out += _field(5, values)
    if session_start:
        out += _field(7, _varint(1 << 3) + _varint(1))
    return out


class EventWriter:
    """Appends scalar summaries to a new event file in `logdir`; `purge_step` (optional) tells TensorBoard to
    drop the events at and after that step which earlier files in `logdir` hold."""

    def __init__(self, logdir: str, purge_step: int | None = None):
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "ab")
        self._write(_event(0, file_version="brain.Event:2"))
        if purge_step is not None:
            self._write(_event(purge_step, session_start=True))
        self.flush()

    def _write(self, event: bytes) -> None:
        length = struct.pack("<Q", len(event))
        with naming(self.path):
            self._file.write(length + _masked_crc(length) + event + _masked_crc(event))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One event at `step` holding a float summary per tag."""
        self._write(_event(step, scalars=values))

    def flush(self) -> None:
        with naming(self.path):
            self._file.flush()

    def close(self) -> None:
        with naming(self.path):
            self._file.close()
