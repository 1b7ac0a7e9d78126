"""MasterMetrics: what ``GET /metrics`` on METRICS_BIND answers, gathered by the master.

Design note. The workers count their requests in the shared ``MetricsTable`` (metrics.py);
the master owns it: it claims a slot for each worker it forks and folds the slot when it reaps
the worker (``worker_reaped``, which also counts the restart by its reason). At scrape time
(``render``) it sums the table and adds what only the master knows: workers by state, restarts
by reason, reloads by outcome (it observes RELOAD_FINISHED through ``observe_hooks``), each
worker's resident memory and CPU seconds (read from /proc/<pid>/statm and /stat, where there
is a /proc) and the build. Prometheus text exposition format 0.0.4.

Master, main thread only. Must not import Django.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
from typing import TYPE_CHECKING

from django_wsgiserve import __version__
from django_wsgiserve.hooks import Hook, Hooks
from django_wsgiserve.metrics import (
    RETIRED_MAX_REQUESTS,
    RETIRED_MEMORY,
    MetricsTable,
    WorkerMetrics,
    render_table,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from django_wsgiserve.arbiter.workers import Worker

__all__ = [
    "CONTENT_TYPE",
    "RESTART_REASONS",
    "MasterMetrics",
    "metrics_table",
    "process_age",
    "process_usage",
]

logger = logging.getLogger(__package__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RESTART_REASONS = ("exit", "crash", "killed", "stuck", "max_requests", "memory")
_WORKER_STATES = ("booting", "ready", "retiring", "stopping", "aborting")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def metrics_table(workers: int, threads: int) -> MetricsTable | None:
    """The shared table (as many slots as the accept balance table); None, with a warning,
    where shared anonymous memory is not available."""
    try:
        # Rows: the loop thread, THREADS pool threads, one spare.
        return MetricsTable(slots=max(16, 4 * workers), rows=threads + 2)
    except (OSError, ValueError) as exc:
        logger.warning("METRICS_BIND: request metrics are off: %s", exc)
        return None


class MasterMetrics:
    """The master's side of the metrics; see the module notes."""

    def __init__(self, table: MetricsTable | None) -> None:
        self.table = table
        self._restarts = dict.fromkeys(RESTART_REASONS, 0)
        self._reloads = {"reloaded": 0, "failed": 0}

    def observe_hooks(self, hooks: Hooks) -> Hooks:
        """``hooks``, with RELOAD_FINISHED counted on the way (the workers inherit it: a no-op
        there, it counts only in the master's memory)."""

        def sender(hook: Hook, /, **arguments: object) -> None:
            if hook is Hook.RELOAD_FINISHED:
                outcome = str(getattr(arguments.get("outcome"), "value", arguments.get("outcome")))
                self._reloads[outcome] = self._reloads.get(outcome, 0) + 1
            hooks.send_or_raise(hook, **arguments)

        return Hooks(sender)

    # -- the worker table's calls ------------------------------------------------------------

    def claim(self) -> int | None:
        """A slot for a worker about to be forked."""
        return self.table.claim() if self.table is not None else None

    def recorder(self, slot: int | None) -> WorkerMetrics | None:
        """The forked worker's side of ``slot``."""
        if self.table is None or slot is None:
            return None
        return self.table.recorder(slot)

    def release(self, slot: int | None) -> None:
        """A fork failed: the slot was never used."""
        if self.table is not None:
            self.table.fold(slot)

    def worker_reaped(self, process: Worker, code: int) -> None:
        """Fold the reaped worker's slot, and count why it left."""
        was_stopped = process.state.value == "stopping"
        retire_reason = self.table.fold(process.slot_metrics) if self.table is not None else 0.0
        if retire_reason == RETIRED_MAX_REQUESTS:
            reason = "max_requests"
        elif retire_reason == RETIRED_MEMORY:
            reason = "memory"
        elif process.state.value == "aborting":
            reason = "stuck"  # no heartbeat: SIGABRT, maybe SIGKILL after
        elif code == -signal.SIGKILL and not process.was_killed:
            reason = "killed"  # probably out of memory
        elif was_stopped and code in (0, -signal.SIGTERM, -signal.SIGQUIT):
            reason = "exit"
        elif was_stopped and process.was_killed:
            reason = "stuck"  # past GRACEFUL_TIMEOUT
        else:
            reason = "crash"
        self._restarts[reason] += 1

    # -- scrape ------------------------------------------------------------------------------

    def render(self, workers: Iterable[Worker]) -> bytes:
        """The exposition of everything (master's main thread, at scrape time)."""
        workers = list(workers)
        lines = render_table(self.table.totals()) if self.table is not None else []
        self._worker_gauges(lines, workers)
        states = dict.fromkeys(_WORKER_STATES, 0)
        for process in workers:
            states[process.state.value] += 1
        _family(
            lines,
            "wsgiserve_workers",
            "gauge",
            "Workers by state.",
            [(f'state="{state}"', count) for state, count in states.items()],
        )
        _family(
            lines,
            "wsgiserve_worker_restarts_total",
            "counter",
            "Workers that exited, by reason.",
            [(f'reason="{reason}"', count) for reason, count in self._restarts.items()],
        )
        _family(
            lines,
            "wsgiserve_reloads_total",
            "counter",
            "Reloads (SIGHUP) by outcome.",
            [(f'outcome="{outcome}"', count) for outcome, count in self._reloads.items()],
        )
        python = platform.python_version()
        _family(
            lines,
            "wsgiserve_build_info",
            "gauge",
            "The server's version.",
            [(f'version="{__version__}",python="{python}"', 1)],
        )
        lines.append("")
        return "\n".join(lines).encode("utf-8")

    def _worker_gauges(self, lines: list[str], workers: list[Worker]) -> None:
        connections, threads, queued, memory, cpu = [], [], [], [], []
        for process in workers:
            label = f'worker="{process.number}"'
            if self.table is not None and process.slot_metrics is not None:
                open_, busy, idle, waiting = self.table.gauges(process.slot_metrics)
                connections.append((label, open_))
                threads += [(f'{label},state="busy"', busy), (f'{label},state="idle"', idle)]
                queued.append((label, waiting))
            usage = process_usage(process.pid)
            if usage is not None:
                memory.append((label, usage[0]))
                cpu.append((label, usage[1]))
        _family(lines, "wsgiserve_worker_connections", "gauge", "Open connections.", connections)
        _family(lines, "wsgiserve_worker_threads", "gauge", "Threads by state.", threads)
        _family(
            lines,
            "wsgiserve_worker_queued_requests",
            "gauge",
            "Requests waiting for a thread.",
            queued,
        )
        _family(
            lines,
            "wsgiserve_worker_resident_memory_bytes",
            "gauge",
            "Resident memory of each worker.",
            memory,
        )
        _family(
            lines,
            "wsgiserve_worker_cpu_seconds_total",
            "counter",
            "User and system CPU time of each worker.",
            cpu,
        )


def _family(
    lines: list[str], name: str, kind: str, help_text: str, samples: list[tuple[str, float]]
) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        text = str(int(value)) if value == int(value) else repr(value)
        lines.append(f"{name}{{{labels}}} {text}")


def process_usage(pid: int) -> tuple[float, float] | None:
    """(resident bytes, CPU seconds) of ``pid``, from /proc; None where it cannot be read
    (also the control socket's status, arbiter/status.py)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # proc(5): fields after the command name (which may hold spaces): utime is the
            # 14th field, stime the 15th.
            fields = stat.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * _PAGE_BYTES, ticks / _CLOCK_TICKS


def process_age(pid: int) -> float | None:
    """Seconds since ``pid`` started, from /proc; None where it cannot be read. For workers
    this master did not fork (adopted after a configuration reload)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # proc(5): starttime, in clock ticks after boot, is the 22nd field.
            started_ticks = int(stat.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as uptime:
            seconds_since_boot = float(uptime.read().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return max(0.0, seconds_since_boot - started_ticks / _CLOCK_TICKS)
