"""The master's answer to the control socket's ``status``: ``status_document``.

Design note. One JSON document, built when asked (never kept up to date), from what only the
master knows (the worker table: pids, numbers, states, ages; its own state), what the workers
publish in the shared scoreboard (scoreboard.py: requests served, connections, busy threads,
and every running request with its start time), /proc (each worker's resident memory and CPU
seconds, as for /metrics: scrape.py) and the configuration with the source of each value
(``describe_config``, as ``serve --print-config`` shows it). Request ages are computed with
``time.monotonic``, the clock the workers stamped them with (one clock for every process of
the machine). A worker the master did not fork (adopted after a configuration reload) has no
slot in this master's scoreboard: its counts are null. Fields: docs/operations.md.

Master, main thread only. Never imports Django.
"""

from __future__ import annotations

import os
import platform
import time
from typing import TYPE_CHECKING, Any

from django_wsgiserve import __version__
from django_wsgiserve.arbiter.scrape import process_usage
from django_wsgiserve.config import OPTIONS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from django_wsgiserve.arbiter.workers import Worker
    from django_wsgiserve.config import ServerConfig
    from django_wsgiserve.scoreboard import Scoreboard

__all__ = ["STATUS_VERSION", "status_document"]

STATUS_VERSION = 1  # grows when a field changes meaning; new fields do not change it


def status_document(
    *,
    state: str,
    workers: Iterable[Worker],
    target: int,
    scoreboard: Scoreboard | None,
    config: ServerConfig,
    listening: list[str],
    control_socket: str,
    is_reloading: bool,
    now: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """The ``status`` reply (see the module notes); ``now``: the master's clock, which its
    workers' ``started`` use."""
    request_now = monotonic()
    worker_entries: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []
    for process in workers:
        reading = None
        if scoreboard is not None and process.slot_scoreboard is not None:
            reading = scoreboard.read(process.slot_scoreboard)
        usage = process_usage(process.pid)
        worker_entries.append(
            {
                "pid": process.pid,
                "number": process.number,
                "state": process.state.value,
                "is_adopted": process.is_adopted,
                "age_s": round(max(0.0, now - process.started), 3),
                "requests": None if reading is None else reading.requests,
                "connections": None if reading is None else reading.connections,
                "busy_threads": None if reading is None else reading.busy_threads,
                "queued_requests": None if reading is None else reading.queued_requests,
                "rss_bytes": None if usage is None else int(usage[0]),
                "cpu_s": None if usage is None else round(usage[1], 2),
            }
        )
        requests.extend(
            {
                "age_s": round(max(0.0, request_now - running.started), 3),
                "worker": process.number,
                "worker_pid": process.pid,
                "thread_id": running.thread_id,
                "method": running.method,
                "path": running.path,
            }
            for running in (reading.running if reading is not None else ())
        )
    requests.sort(key=lambda request: -float(request["age_s"]))
    return {
        "version": STATUS_VERSION,
        "server": {
            "pid": os.getpid(),
            "state": state,
            "server_version": __version__,
            "python": platform.python_version(),
            "workers_wanted": target,
            "threads": config.threads,
            "is_reloading": is_reloading,
            "listening": listening,
            "control_socket": control_socket,
        },
        "workers": worker_entries,
        "requests": requests,
        "config": [
            {
                "option": declared.setting,
                "value": declared.codec.to_json(getattr(config, declared.name)),
                "shown": declared.codec.show(getattr(config, declared.name)),
                "source": config.source_of(declared.name),
            }
            for declared in OPTIONS
        ],
    }
