"""What every worker is doing right now, shared with the master: ``Scoreboard``.

Design note. The master's control socket (arbiter/control.py) answers "which requests are
running, where, since when" for every worker, at any moment, so the workers must publish it
without being asked: the master creates a ``Scoreboard`` before it forks, always (unlike the
metrics table it costs nothing measurable). It is an anonymous shared mapping with one *slot*
per worker and, in each slot, a header and one *row* per application thread.

* **Rows, single writer.** A pool thread finds its row once (a thread-local) and from then on
  is its row's only writer: one ``struct.pack_into`` when a request starts (its method, its
  target truncated to ``TARGET_BYTES``, its start time, the thread's native id) and one when it
  ends (start time 0: idle). ``time.monotonic`` is CLOCK_MONOTONIC, one clock for every
  process of the machine, so the master computes a request's age from the worker's start time.
* **Torn reads.** Each write stores a sequence number twice, first and last field of the row,
  and ``pack_into`` writes fields in order. The master reads in the opposite order: the last
  field, then the body, then the first field, and keeps the row only when both numbers are
  equal; else it tries again (``_READ_ATTEMPTS``) and then reports the row as changing. Why
  that is enough: if the last field already holds write *k*, the body of *k* was complete;
  if the first field still holds *k* after the body was read, write *k + 1* had not begun
  when it was. That relies on stores and loads not being reordered, which x86 guarantees;
  on weaker hardware a rare torn row may show a mixed target, which is only a display.
* **The header** of a slot is written by the worker's loop thread at its tick (once a
  second): requests served, open connections, busy threads, queued requests.
* **Slots** are claimed by the master when it forks a worker and zeroed when it reaps it, so
  a killed worker's last requests never show as running in its successor.

Threads: ``WorkerScoreboard.begin``/``end``: pool threads, each on its own row; ``publish``:
the loop thread. ``Scoreboard``: the master's main thread. Imports only the stdlib.
"""

from __future__ import annotations

import mmap
import struct
import threading
from dataclasses import dataclass

__all__ = [
    "METHOD_BYTES",
    "TARGET_BYTES",
    "RunningRequest",
    "Scoreboard",
    "SlotReading",
    "WorkerScoreboard",
]

METHOD_BYTES = 16  # the longest registered method, UPDATEREDIRECTREF, is cut: display only
# A row is 256 bytes: enough of a path to recognise the view, and the table stays small.
TARGET_BYTES = 208
# Native layout ("@"): aligned fields, each number stored by one machine store (and measured
# about twice as fast as the byte-by-byte "=" layout). Sequence, start time (0.0: idle),
# native thread id, method, target, sequence again.
_ROW = struct.Struct(f"@Qdq{METHOD_BYTES}s{TARGET_BYTES}sQ")
_SEQUENCE = struct.Struct("@Q")
_BODY = struct.Struct(f"@dq{METHOD_BYTES}s{TARGET_BYTES}s")
_BODY_OFFSET = _SEQUENCE.size
_LAST_OFFSET = _ROW.size - _SEQUENCE.size
# Requests served, open connections, busy threads, queued requests; padded to 32 bytes.
_HEADER = struct.Struct("@QIII")
_HEADER_BYTES = 32
_READ_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class RunningRequest:
    """One request running in a worker's thread, as the master read it."""

    started: float  # time.monotonic() of the worker when the request was complete
    thread_id: int  # native thread id (what ps -L, top -H and py-spy show)
    method: str
    path: str  # the target without its query (which may hold secrets), cut at TARGET_BYTES


@dataclass(frozen=True, slots=True)
class SlotReading:
    """A worker's slot: its header and the requests running in its threads."""

    requests: int
    connections: int
    busy_threads: int
    queued_requests: int
    running: tuple[RunningRequest, ...]
    changing_rows: int = 0  # rows being rewritten during every read attempt (rare)


class _Row:
    """A pool thread's row: where it is and what sequence number it wrote last."""

    __slots__ = ("offset", "sequence", "thread_id")

    def __init__(self, offset: int, thread_id: int) -> None:
        self.offset = offset
        self.sequence = 0
        self.thread_id = thread_id


class WorkerScoreboard:
    """A worker's slot (in the forked worker); see the module notes."""

    __slots__ = ("_base", "_local", "_lock", "_map", "_next_row", "_rows")

    def __init__(self, memory: mmap.mmap, slot: int, rows: int) -> None:
        self._map = memory
        self._base = slot * _slot_bytes(rows)
        self._rows = rows
        self._next_row = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    def begin(self, method: bytes, target: bytes, started: float) -> None:
        """A request starts running in this thread (pool thread): one write."""
        try:
            row: _Row | None = self._local.row
        except AttributeError:
            row = self._claim_row()
        if row is not None:
            row.sequence += 1
            sequence = row.sequence
            # pack_into cuts method and target to their fields' sizes.
            _ROW.pack_into(
                self._map, row.offset, sequence, started, row.thread_id, method, target, sequence
            )

    def end(self) -> None:
        """The request of this thread is done (pool thread): one write."""
        row: _Row | None = getattr(self._local, "row", None)
        if row is not None:
            row.sequence += 1
            sequence = row.sequence
            _ROW.pack_into(self._map, row.offset, sequence, 0.0, row.thread_id, b"", b"", sequence)

    def publish(self, *, requests: int, connections: int, busy: int, queued: int) -> None:
        """The loop's tick: what this worker holds right now (loop thread)."""
        _HEADER.pack_into(self._map, self._base, requests, connections, busy, queued)

    def _claim_row(self) -> _Row | None:
        """This thread's row, the first time it runs a request; None when every row is
        taken (a thread beyond THREADS: its requests are not shown)."""
        with self._lock:
            index = self._next_row
            self._next_row += 1
        row = None
        if index < self._rows:
            offset = self._base + _HEADER_BYTES + index * _ROW.size
            row = _Row(offset, threading.get_native_id())
        self._local.row = row
        return row


class Scoreboard:
    """The shared table (master: ``claim``, ``release``, ``read``; a worker: ``recorder``)."""

    def __init__(self, *, slots: int, threads: int) -> None:
        """``slots``: workers at once (a reload's two generations and TTIN included);
        ``threads``: rows per slot, one per application thread. Raises OSError or ValueError
        where shared anonymous memory is not available."""
        self.slots = slots
        self.rows = threads
        self._slot_bytes = _slot_bytes(threads)
        self._map = mmap.mmap(-1, slots * self._slot_bytes)
        self._claimed: set[int] = set()

    def claim(self) -> int | None:
        """A free (zeroed) slot for a worker about to be forked; None if full."""
        for slot in range(self.slots):
            if slot not in self._claimed:
                self._claimed.add(slot)
                return slot
        return None

    def release(self, slot: int | None) -> None:
        """The worker of ``slot`` is gone (or was never forked): zero the slot and free it."""
        if slot is None or slot not in self._claimed:
            return
        self._claimed.discard(slot)
        start = slot * self._slot_bytes
        self._map[start : start + self._slot_bytes] = bytes(self._slot_bytes)

    def recorder(self, slot: int) -> WorkerScoreboard:
        """The worker side of ``slot`` (in the forked worker)."""
        return WorkerScoreboard(self._map, slot, self.rows)

    def read(self, slot: int) -> SlotReading:
        """What the worker of ``slot`` published and is running now (master)."""
        base = slot * self._slot_bytes
        requests, connections, busy, queued = _HEADER.unpack_from(self._map, base)
        running = []
        changing = 0
        for index in range(self.rows):
            offset = base + _HEADER_BYTES + index * _ROW.size
            body = _read_row(self._map, offset)
            if body is None:
                changing += 1
                continue
            started, thread_id, method, target = body
            if started:
                running.append(
                    RunningRequest(
                        started,
                        thread_id,
                        method.rstrip(b"\0").decode("latin-1"),
                        target.rstrip(b"\0").partition(b"?")[0].decode("latin-1"),
                    )
                )
        return SlotReading(requests, connections, busy, queued, tuple(running), changing)

    def close(self) -> None:
        self._map.close()


def _read_row(memory: mmap.mmap, offset: int) -> tuple[float, int, bytes, bytes] | None:
    """A row's body, read against the writer's order (see the module notes); None when it
    changed during every attempt."""
    for _ in range(_READ_ATTEMPTS):
        (last,) = _SEQUENCE.unpack_from(memory, offset + _LAST_OFFSET)
        body: tuple[float, int, bytes, bytes] = _BODY.unpack_from(memory, offset + _BODY_OFFSET)
        (first,) = _SEQUENCE.unpack_from(memory, offset)
        if first == last:
            return body
    return None


def _slot_bytes(rows: int) -> int:
    return _HEADER_BYTES + rows * _ROW.size
