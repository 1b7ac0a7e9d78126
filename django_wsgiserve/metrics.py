"""Request metrics shared by every worker with the master: ``MetricsTable`` and ``WorkerMetrics``.

Design note. With METRICS_BIND set, the master creates a ``MetricsTable`` before it forks: an
anonymous shared mapping of float64 fields, one *slot* per worker and, in each slot, one *row*
per thread of that worker (the loop thread and each pool thread, plus a spare). A thread finds
its row once, through a thread-local, and from then on only adds to its own row: no lock on
the hot path and no lost increment (a float64 holds every integer up to 2**53 exactly). A
request costs one ``bisect`` and a few float adds (``observe_request``).

The master claims a slot for each worker it forks. When it reaps the worker it *folds* the
slot, adding every row into its own ``retired`` totals, and zeroes it before the slot is
claimed again: a worker's counts outlive it, nothing is counted twice. At scrape time it sums
the retired totals and the live slots (``totals``). A reader may see a request's bucket
before its sum: the next scrape is whole again. A re-executed master (a reload that changed
the configuration) starts a new table: its counters restart from zero, a counter reset that
Prometheus' ``rate()`` handles.

Row layout (``ROW_FIELDS`` floats): the request duration histogram by method class and status
class (per series: ``len(DURATION_BOUNDS) + 1`` non-cumulative buckets, then the sum), the
queue time and proxy time histograms, counters, and in the first row of a slot the gauges the
worker's loop thread sets at its tick. The exposition (``render_table``) is text format 0.0.4.

Threads: ``WorkerMetrics``: any thread of the worker, each on its own row; gauges: the loop
thread. ``MetricsTable``: the master's main thread. Never imports Django.
"""

from __future__ import annotations

import mmap
import threading
from bisect import bisect_left
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DURATION_BOUNDS",
    "METHODS",
    "QUEUE_BOUNDS",
    "RETIRED_MAX_REQUESTS",
    "RETIRED_MEMORY",
    "MetricsTable",
    "WorkerMetrics",
    "render_table",
]

# OpenTelemetry's http.server.request.duration bucket boundaries (semantic conventions).
DURATION_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# Waiting for a thread, or behind a proxy, is usually well under the first bound above.
QUEUE_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "_OTHER")
_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_METHOD_INDEX = {method.encode("ascii"): index for index, method in enumerate(METHODS)}
_OTHER_METHOD = len(METHODS) - 1

_SERIES = len(DURATION_BOUNDS) + 2  # buckets (with +Inf), then the sum
_DURATION = 0
_QUEUE = _DURATION + len(METHODS) * len(_STATUS_CLASSES) * _SERIES
_PROXY = _QUEUE + _SERIES
# Counters (added by any thread on its own row).
RESPONSE_BYTES = _PROXY + _SERIES
STATIC_RESPONSES = RESPONSE_BYTES + 1
REFUSED = STATIC_RESPONSES + 1  # 503: the request queue was full
CLIENT_TIMEOUTS = REFUSED + 1  # 408
BAD_REQUESTS = CLIENT_TIMEOUTS + 1  # a 4xx the parser found
_COUNTERS_END = BAD_REQUESTS + 1
# Set by the loop thread at its tick, first row of the slot only; not folded.
SENDFILE_BYTES = _COUNTERS_END  # WorkerStats' total, published (folded: it only grows)
CONNECTIONS = SENDFILE_BYTES + 1
BUSY_THREADS = CONNECTIONS + 1
IDLE_THREADS = BUSY_THREADS + 1
QUEUED_REQUESTS = IDLE_THREADS + 1
RETIRE_REASON = QUEUED_REQUESTS + 1
ROW_FIELDS = RETIRE_REASON + 1
_FOLDED = SENDFILE_BYTES + 1  # fields summed into the retired totals

# RETIRE_REASON values: why a worker asked to be replaced (worker.py).
RETIRED_MAX_REQUESTS = 1.0
RETIRED_MEMORY = 2.0
_FLOAT_BYTES = 8


def _status_index(status_code: int) -> int:
    # No status (the application failed before start_response) or a non-standard one: 5xx.
    index = status_code // 100 - 1
    return index if 0 <= index < len(_STATUS_CLASSES) else len(_STATUS_CLASSES) - 1


class WorkerMetrics:
    """One worker's slot: each thread adds to its own row (any thread; see the notes)."""

    __slots__ = ("_base", "_local", "_lock", "_next_row", "_rows", "_view")

    def __init__(self, view: memoryview[float], slot: int, rows: int) -> None:
        self._view = view
        self._base = slot * rows * ROW_FIELDS
        self._rows = rows
        self._next_row = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    def row(self) -> memoryview[float]:
        """This thread's row (claimed the first time; once per thread)."""
        try:
            row: memoryview[float] = self._local.row
        except AttributeError:
            with self._lock:
                # A worker has its loop thread and THREADS pool threads, and a spare row; a
                # thread beyond them (none today) would share the last one.
                index = min(self._next_row, self._rows - 1)
                self._next_row += 1
            start = self._base + index * ROW_FIELDS
            row = self._local.row = self._view[start : start + ROW_FIELDS]
        return row

    def observe_request(
        self, method: bytes, status_code: int, seconds: float, bytes_sent: int
    ) -> None:
        """A response sent (or given up on) ``seconds`` after its request was complete."""
        row = self.row()
        series = (
            _METHOD_INDEX.get(method, _OTHER_METHOD) * len(_STATUS_CLASSES)
            + _status_index(status_code)
        ) * _SERIES
        row[series + bisect_left(DURATION_BOUNDS, seconds)] += 1.0
        row[series + _SERIES - 1] += seconds
        row[RESPONSE_BYTES] += bytes_sent

    def observe_queue(self, seconds: float) -> None:
        """Request complete in the loop -> application called in a pool thread."""
        row = self.row()
        row[_QUEUE + bisect_left(QUEUE_BOUNDS, seconds)] += 1.0
        row[_QUEUE + _SERIES - 1] += seconds

    def observe_proxy(self, seconds: float) -> None:
        """X-Request-Start (set by a trusted proxy) -> application called."""
        seconds = max(0.0, seconds)  # clocks of two hosts: never a negative observation
        row = self.row()
        row[_PROXY + bisect_left(QUEUE_BOUNDS, seconds)] += 1.0
        row[_PROXY + _SERIES - 1] += seconds

    def count(self, field: int, amount: float = 1.0) -> None:
        """Add to a counter (``REFUSED``, ``CLIENT_TIMEOUTS``, ...)."""
        self.row()[field] += amount

    def count_error(self, status_code: int) -> None:
        """An error the loop answered itself: 408, 503 (queue full), a 4xx from the parser."""
        if status_code == 408:
            self.count(CLIENT_TIMEOUTS)
        elif status_code == 503:
            self.count(REFUSED)
        elif 400 <= status_code < 500:
            self.count(BAD_REQUESTS)

    def publish(
        self, *, sendfile_bytes: int, connections: int, busy: int, idle: int, queued: int
    ) -> None:
        """The loop's tick: what this worker holds right now (loop thread)."""
        view, base = self._view, self._base
        view[base + SENDFILE_BYTES] = sendfile_bytes
        view[base + CONNECTIONS] = connections
        view[base + BUSY_THREADS] = busy
        view[base + IDLE_THREADS] = idle
        view[base + QUEUED_REQUESTS] = queued

    def set_retire_reason(self, reason: float) -> None:
        """Why this worker asked to be replaced, read by the master when it reaps it."""
        self._view[self._base + RETIRE_REASON] = reason


class MetricsTable:
    """The shared table (master: ``claim``, ``fold``, ``totals``; a worker: ``recorder``)."""

    def __init__(self, *, slots: int, rows: int) -> None:
        self.slots = slots
        self.rows = rows
        self._slot_fields = rows * ROW_FIELDS
        self._map = mmap.mmap(-1, slots * self._slot_fields * _FLOAT_BYTES)
        self._view: memoryview[float] = memoryview(self._map).cast("d")
        self._claimed: set[int] = set()
        self._retired = [0.0] * _FOLDED

    def claim(self) -> int | None:
        """A free (zeroed) slot for a worker about to be forked; None if full."""
        for slot in range(self.slots):
            if slot not in self._claimed:
                self._claimed.add(slot)
                return slot
        return None

    def fold(self, slot: int | None) -> float:
        """The worker of ``slot`` is gone: add its counts to the retired totals, zero the
        slot and free it; returns its ``RETIRE_REASON`` (0.0: none)."""
        if slot is None or slot not in self._claimed:
            return 0.0
        self._claimed.discard(slot)
        start = slot * self._slot_fields
        reason = self._view[start + RETIRE_REASON]
        retired = self._retired
        for row in self._rows_of(slot):
            for index, value in enumerate(row[:_FOLDED]):
                retired[index] += value
        self._view[start : start + self._slot_fields] = memoryview(
            bytes(self._slot_fields * _FLOAT_BYTES)
        ).cast("d")
        return reason

    def totals(self) -> list[float]:
        """Every worker's counts so far, the reaped ones' included (the folded fields)."""
        columns = [self._retired]
        for slot in sorted(self._claimed):
            columns.extend(row[:_FOLDED] for row in self._rows_of(slot))
        return [sum(values) for values in zip(*columns, strict=True)]

    def gauges(self, slot: int) -> tuple[float, float, float, float]:
        """Open connections, busy and idle threads, queued requests of ``slot``'s worker."""
        start = slot * self._slot_fields
        view = self._view
        return (
            view[start + CONNECTIONS],
            view[start + BUSY_THREADS],
            view[start + IDLE_THREADS],
            view[start + QUEUED_REQUESTS],
        )

    def recorder(self, slot: int) -> WorkerMetrics:
        """The worker side of ``slot`` (in the forked worker)."""
        return WorkerMetrics(self._view, slot, self.rows)

    def _rows_of(self, slot: int) -> list[list[float]]:
        start = slot * self._slot_fields
        # tolist() of a "d" view gives floats (typeshed types it list[int]).
        return [
            cast(
                "list[float]",
                self._view[start + row * ROW_FIELDS : start + (row + 1) * ROW_FIELDS].tolist(),
            )
            for row in range(self.rows)
        ]


# -- exposition (text format 0.0.4) ---------------------------------------------------------


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _histogram(
    lines: list[str],
    name: str,
    help_text: str,
    bounds: Sequence[float],
    series: Sequence[tuple[str, Sequence[float]]],
) -> None:
    """HELP, TYPE and, for each (labels, buckets + sum), cumulative buckets, _sum, _count."""
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for labels, fields in series:
        prefix = f"{labels}," if labels else ""
        cumulative = 0.0
        for bound, value in zip((*bounds, "+Inf"), fields, strict=False):
            cumulative += value
            lines.append(f'{name}_bucket{{{prefix}le="{bound}"}} {_number(cumulative)}')
        suffix = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{suffix} {_number(fields[-1])}")
        lines.append(f"{name}_count{suffix} {_number(cumulative)}")


def _counter(
    lines: list[str], name: str, help_text: str, samples: Sequence[tuple[str, float]]
) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    lines += [
        f"{name}{{{labels}}} {_number(value)}" if labels else f"{name} {_number(value)}"
        for labels, value in samples
    ]


def render_table(totals: Sequence[float]) -> list[str]:
    """The exposition lines of the summed table (``MetricsTable.totals``)."""
    lines: list[str] = []
    series = []
    for method_index, method in enumerate(METHODS):
        for status_index, status_class in enumerate(_STATUS_CLASSES):
            start = (method_index * len(_STATUS_CLASSES) + status_index) * _SERIES
            fields = totals[start : start + _SERIES]
            if any(fields):  # a series appears once it has an observation
                labels = (
                    f'http_request_method="{method}",http_response_status_class="{status_class}"'
                )
                series.append((labels, fields))
    _histogram(
        lines,
        "http_server_request_duration_seconds",
        "Duration of HTTP server requests, from the request complete to the response sent.",
        DURATION_BOUNDS,
        series,
    )
    _histogram(
        lines,
        "wsgiserve_request_queue_seconds",
        "Time from a request complete to the application called in a thread.",
        QUEUE_BOUNDS,
        [("", totals[_QUEUE : _QUEUE + _SERIES])],
    )
    _histogram(
        lines,
        "wsgiserve_proxy_queue_seconds",
        "Time from X-Request-Start (set by a trusted proxy) to the application called.",
        QUEUE_BOUNDS,
        [("", totals[_PROXY : _PROXY + _SERIES])],
    )
    for name, field, help_text in (
        ("wsgiserve_response_bytes_total", RESPONSE_BYTES, "Response body bytes sent."),
        ("wsgiserve_static_responses_total", STATIC_RESPONSES, "Responses of the static table."),
        ("wsgiserve_sendfile_bytes_total", SENDFILE_BYTES, "Bytes sent with os.sendfile."),
        ("wsgiserve_refused_requests_total", REFUSED, "Requests refused with 503: queue full."),
    ):
        _counter(lines, name, help_text, [("", totals[field])])
    _counter(
        lines,
        "wsgiserve_client_errors_total",
        "Requests answered with an error by the server itself, by kind.",
        [('kind="timeout"', totals[CLIENT_TIMEOUTS]), ('kind="bad_request"', totals[BAD_REQUESTS])],
    )
    return lines
