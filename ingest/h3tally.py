"""A large load's H3 counts, computed in a process of its own beside the load.

Each facility's cell at the 11 counted resolutions is 11 calls into h3, which hold Python's
GIL: in the load's threads they took turns with reading and converting the file, and a
1,000,000-row load ran on one core. Here the points go down a pipe (raw numpy bytes, ~0.5 MB
a 25,000-row chunk) to ``python -m ingest.h3tally``, which counts them on the other core and
sends the summed counts back when the load ends. It runs at a lower priority (NICENESS): the
load and its database backend go first, and it catches up while the indexes are built. A
bounded outbox (~30 MB) bounds what waits.

Messages, little-endian: a chunk is ``n`` (u4), the length of its layer names (u4), the names
joined by U+001F (UTF-8), then lat and lon (n × f8), layer codes (n × i2) and live flags
(n × u1); ``n = 0`` with no names ends the input, and the worker answers with ``m`` (u8), the
layer names (u4 length, then as above), resolution (m × i2), layer code (m × i2), cell
(m × i8) and count (m × i4).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
from typing import IO

import numpy as np
import pandas as pd

from ingest import h3cells

_SEP = "\x1f"


class TallyProcess:
    """The parent's end: `add_points` per chunk, then `result` (or `close` to abandon).

    A thread of its own writes to the pipe, so a load never waits for the worker to start
    (~0.4 s of imports) or to catch up, only for its outbox to have room (_OUTBOX chunks).
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "ingest.h3tally"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._outbox: queue.Queue[bytes | None] = queue.Queue(maxsize=_OUTBOX)
        self._broken = False
        self._sender = threading.Thread(target=self._send_all, name="h3-tally-sender", daemon=True)
        self._sender.start()

    def add_points(
        self, lat: np.ndarray, lon: np.ndarray, layers: np.ndarray, live: np.ndarray
    ) -> None:
        """Queue a chunk's points to be counted (blocks while the outbox is full)."""
        self._running()
        if self._broken:
            raise self._failed()
        codes, names = pd.factorize(np.asarray(layers, dtype=object))
        self._outbox.put(
            _message(
                _names(list(names)),
                np.ascontiguousarray(lat, dtype="<f8"),
                np.ascontiguousarray(lon, dtype="<f8"),
                codes.astype("<i2"),
                np.asarray(live, dtype=np.uint8),
            )
        )

    def result(self) -> h3cells.CellCounts:
        """Everything counted; the worker then exits."""
        process = self._running()
        assert process.stdout is not None
        self._outbox.put(_message(b""))
        self._outbox.put(None)
        self._sender.join()
        if self._broken:
            raise self._failed()
        try:
            counts = _read_counts(process.stdout)
        except RuntimeError:
            raise self._failed() from None
        self.close()
        return counts

    def close(self) -> None:
        """Stop the worker (idempotent); what it has not counted is dropped."""
        if self._process is None:
            return
        process, self._process = self._process, None
        if self._sender.is_alive():
            process.kill()  # the sender's next write fails: it stops
            with contextlib.suppress(queue.Empty):
                while True:
                    self._outbox.get_nowait()
            self._outbox.put(None)
            self._sender.join()
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(BrokenPipeError):  # the worker is gone already
                    pipe.close()
        process.wait()

    def _send_all(self) -> None:
        """The sender thread: write each queued message until None (or the pipe breaks)."""
        process = self._process
        assert process is not None and process.stdin is not None
        while (message := self._outbox.get()) is not None:
            if self._broken:
                continue  # keep taking them: add_points raises at its next call
            try:
                process.stdin.write(message)
                process.stdin.flush()
            except (BrokenPipeError, ValueError):  # ValueError: closed by close()
                self._broken = True
        if not self._broken:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("the H3 counting process was already stopped")
        return self._process

    def _failed(self) -> RuntimeError:
        process = self._running()
        if process.poll() is None:
            process.kill()
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        return RuntimeError(f"the H3 counting process failed: {stderr.strip()[-500:]}")


#: chunks waiting to be written to the worker (each at most ~0.5 MB: 25,000 rows × 19 bytes)
_OUTBOX = 64
#: the worker's scheduling priority below the load's: on a machine whose cores the load, its
#: database backend and the worker share, the load goes first and the worker catches up while
#: the indexes are built (its counts are needed only after them)
NICENESS = 10


def _message(names: bytes, *arrays: np.ndarray) -> bytes:
    n = len(arrays[0]) if arrays else 0
    return b"".join([struct.pack("<II", n, len(names)), names, *(a.tobytes() for a in arrays)])


def _names(names: list[str]) -> bytes:
    return _SEP.join(names).encode() if names else b""


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise RuntimeError("the H3 counting process ended before its answer was complete")
    return data


def _read_counts(stream: IO[bytes]) -> h3cells.CellCounts:
    (m,) = struct.unpack("<Q", _read_exact(stream, 8))
    (size,) = struct.unpack("<I", _read_exact(stream, 4))
    names = np.array(_read_exact(stream, size).decode().split(_SEP) if size else [], dtype=object)
    resolution = np.frombuffer(_read_exact(stream, 2 * m), dtype="<i2").astype(np.int16)
    codes = np.frombuffer(_read_exact(stream, 2 * m), dtype="<i2")
    cell = np.frombuffer(_read_exact(stream, 8 * m), dtype="<i8").astype(np.int64)
    count = np.frombuffer(_read_exact(stream, 4 * m), dtype="<i4").astype(np.int32)
    return h3cells.CellCounts(resolution, names[codes] if m else names[:0], cell, count)


def _serve(source: IO[bytes], sink: IO[bytes]) -> None:
    """The worker's loop: count each chunk into a tally; answer once the input ends."""
    tally = h3cells.Tally()
    while header := source.read(8):
        n, size = struct.unpack("<II", header)
        if n == 0 and size == 0:
            break
        names = np.array(_read_exact(source, size).decode().split(_SEP), dtype=object)
        lat = np.frombuffer(_read_exact(source, 8 * n), dtype="<f8")
        lon = np.frombuffer(_read_exact(source, 8 * n), dtype="<f8")
        codes = np.frombuffer(_read_exact(source, 2 * n), dtype="<i2")
        live = np.frombuffer(_read_exact(source, n), dtype=np.uint8).astype(bool)
        tally.add(h3cells.counts_of(lat, lon, names[codes], live))
    else:
        return  # the load stopped without asking: nothing to answer
    counts = tally.counts
    codes, names = pd.factorize(counts.layer)
    sink.write(struct.pack("<Q", len(counts)))
    encoded = _names(list(names))
    sink.write(struct.pack("<I", len(encoded)) + encoded)
    for array in (
        counts.resolution.astype("<i2"),
        codes.astype("<i2"),
        counts.cell.astype("<i8"),
        counts.count.astype("<i4"),
    ):
        sink.write(array.tobytes())
    sink.flush()


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group: the load handles it, and closes the pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(NICENESS)
    _serve(sys.stdin.buffer, sys.stdout.buffer)
