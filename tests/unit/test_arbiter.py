"""Pieces of the master and the worker monitor without forking: exit descriptions, the
systemd watchdog interval, log reopening, RSS, and the stuck-request report."""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytest

from django_wsgiserve import worker
from django_wsgiserve.arbiter import _watchdog_interval, describe_exit
from django_wsgiserve.config import resolve_config


@pytest.mark.parametrize(
    ("code", "was_killed", "expected"),
    [
        pytest.param(0, False, "exited with code 0", id="clean"),
        pytest.param(4, False, "exited with code 4", id="app-load-failed"),
        pytest.param(
            -signal.SIGKILL,
            False,
            "was killed by SIGKILL: probably out of memory (or kill -9)",
            id="oom",
        ),
        pytest.param(-signal.SIGKILL, True, "was killed by SIGKILL", id="killed-by-master"),
        pytest.param(-signal.SIGSEGV, False, "was killed by SIGSEGV", id="segfault"),
    ],
)
def test_describe_exit(code, was_killed, expected):
    assert describe_exit(code, was_killed=was_killed) == expected


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, 0.0, id="unset"),
        pytest.param({"WATCHDOG_USEC": "10000000"}, 5.0, id="half"),
        pytest.param({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, 0.0, id="other-pid"),
        pytest.param(
            {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}, 2.0, id="ours"
        ),
        pytest.param({"WATCHDOG_USEC": "junk"}, 0.0, id="junk"),
    ],
)
def test_watchdog_interval(environ, expected):
    assert _watchdog_interval(environ) == expected


def test_reopen_log_files_reopens_at_next_record(tmp_path):
    path = tmp_path / "server.log"
    handler = logging.FileHandler(path)
    test_logger = logging.getLogger("django_wsgiserve.tests.reopen")
    test_logger.addHandler(handler)
    test_logger.propagate = False
    try:
        test_logger.warning("before")
        path.rename(tmp_path / "server.log.1")  # what logrotate does
        worker.reopen_log_files()
        test_logger.warning("after")
    finally:
        test_logger.removeHandler(handler)
        handler.close()
    assert (tmp_path / "server.log.1").read_text() == "before\n"
    assert path.read_text() == "after\n"


def test_rss_bytes_is_plausible():
    assert 1 << 20 < worker.rss_bytes() < 1 << 34


class _FakeLoop:
    def __init__(self) -> None:
        self.in_flight: dict[int, tuple[bytes, bytes, float]] = {}
        self.requests_served = 0
        self.is_draining = False


def _stuck_here(started: threading.Event, release: threading.Event) -> None:
    started.set()
    release.wait(10)  # STUCK-HERE


def test_stuck_request_logged_with_its_thread_traceback(caplog):
    config = resolve_config({"TIMEOUT": 5}, {}, {})
    read_fd, write_fd = os.pipe()
    monitor = worker._Monitor(config, channel_fd=write_fd)
    loop = _FakeLoop()
    monitor.loop = loop  # type: ignore[assignment]
    started, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=_stuck_here, args=(started, release))
    thread.start()
    try:
        started.wait(5)
        assert thread.ident is not None
        loop.in_flight[thread.ident] = (b"GET", b"/slow?x=1", 100.0)
        caplog.set_level(logging.INFO, logger="django_wsgiserve")
        monitor.on_tick(104.0)  # 4 s: not yet
        assert not [r for r in caplog.records if r.levelno == logging.CRITICAL]
        monitor.on_tick(106.0)
        monitor.on_tick(107.0)  # reported once
    finally:
        release.set()
        thread.join()
    (record,) = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    message = record.getMessage()
    assert "Request running for 6.0 s (TIMEOUT is 5.0 s): GET /slow?x=1" in message
    assert f"worker pid {os.getpid()}" in message
    assert "in _stuck_here\n    release.wait(10)  # STUCK-HERE" in message
    messages = os.read(read_fd, 100)
    os.close(read_fd)
    os.close(write_fd)
    assert messages.count(worker.MESSAGE_RETIRE) == 1
    assert messages.count(worker.MESSAGE_HEARTBEAT) == 3


def test_max_requests_retires_once(caplog):
    config = resolve_config({"MAX_REQUESTS": 10}, {}, {})
    read_fd, write_fd = os.pipe()
    monitor = worker._Monitor(config, channel_fd=write_fd)
    loop = _FakeLoop()
    monitor.loop = loop  # type: ignore[assignment]
    caplog.set_level(logging.INFO, logger="django_wsgiserve")
    monitor.on_tick(1.0)
    loop.requests_served = 10
    monitor.on_tick(2.0)
    monitor.on_tick(3.0)
    messages = os.read(read_fd, 100)
    os.close(read_fd)
    os.close(write_fd)
    assert messages == b"..X."
    assert "served 10 requests (MAX_REQUESTS): asking to be replaced" in caplog.text
