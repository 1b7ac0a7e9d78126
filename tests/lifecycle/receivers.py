"""Receivers that append one JSON line per signal to ``lifecycle.log`` in the directory named
by WSGISERVE_TEST_FILES_DIR: the signal, the pid (``process``) and parent pid (``parent``) of
the process that sent it, the thread, and the signal's keyword ``arguments``.

Switches, files in that directory: ``fail-worker-starting`` makes the worker_starting
receiver raise; ``fail-everywhere-else`` adds a receiver that raises to every other signal.
The worker_starting receiver also starts a ``telemetry-exporter`` thread, as an OpenTelemetry
SDK would: it writes a ``tick`` line from the process it runs in.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from django.core import signals as django_signals

from django_wsgiserve import signals

SIGNAL_NAMES = (
    "server_starting",
    "server_ready",
    "server_stopping",
    "worker_starting",
    "worker_ready",
    "worker_stopping",
    "worker_stopped",
    "worker_exited",
    "reload_started",
    "reload_finished",
    "workers_changed",
)

TICKS = {"count": 0}


def _directory() -> Path:
    return Path(os.environ.get("WSGISERVE_TEST_FILES_DIR", "/nonexistent"))


def record(**fields: Any) -> None:
    """Append one line, ``{"process": pid, "parent": ppid, "thread": name, **fields}``, in a
    single O_APPEND write, so lines of different processes never mix."""
    line = json.dumps(
        {
            "process": os.getpid(),
            "parent": os.getppid(),
            "thread": threading.current_thread().name,
            **fields,
        },
        default=str,
    )
    fd = os.open(_directory() / "lifecycle.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _recorder(name: str) -> Any:
    def receiver(sender: object, signal: object = None, **kwargs: Any) -> None:
        kwargs.pop("environ", None)  # request_started's: too big to be useful here
        record(signal=name, arguments=kwargs)
        if name == "worker_starting":
            if (_directory() / "fail-worker-starting").exists():
                raise RuntimeError("worker_starting failed on purpose")
            slow = _directory() / "slow-worker-starting"
            if slow.exists():  # a slow boot: seconds to sleep (the readiness tests)
                time.sleep(float(slow.read_text()))
            start_ticking_thread("telemetry-exporter")

    receiver.__qualname__ = f"record_{name}"
    return receiver


def _failing(name: str) -> Any:
    def receiver(sender: object, **kwargs: Any) -> None:
        if (_directory() / "fail-everywhere-else").exists():
            raise RuntimeError(f"{name} receiver failed on purpose")

    receiver.__qualname__ = f"fail_{name}"
    return receiver


def connect_all() -> None:
    for name in SIGNAL_NAMES:
        signal = getattr(signals, name)
        # weak=False: the receivers are closures nobody else keeps. The failing one comes
        # first, so the recorder shows that a receiver runs after another one raised.
        if name != "worker_starting":
            signal.connect(_failing(name), weak=False, dispatch_uid=f"fail-{name}")
        signal.connect(_recorder(name), weak=False, dispatch_uid=f"record-{name}")
    for name in ("request_started", "request_finished"):
        getattr(django_signals, name).connect(
            _recorder(name), weak=False, dispatch_uid=f"record-{name}"
        )


def start_ticking_thread(name: str) -> None:
    """A daemon thread that says once where it runs, then counts in TICKS."""

    def run() -> None:
        record(tick=name)
        while True:
            TICKS["count"] += 1
            time.sleep(0.05)

    threading.Thread(target=run, name=name, daemon=True).start()
