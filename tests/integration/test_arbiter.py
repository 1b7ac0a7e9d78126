"""The prefork master through a real ``manage.py serve``: reloads and resizing under load,
draining, dead, silent and stuck workers, recycling, and boot failures.

Worker pids come from ``/proc/<master>/task/<master>/children`` and from the echo app, which
reports the pid of the process that answered. Load comes from a few client threads, each doing
one request per connection, for a bounded time; every failure (exception, reset, non-200) is
kept. Each test stops its own server (SIGTERM to the group) and expects exit status 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.live import (
    LiveServer,
    count_messages,
    is_closed,
    read_response,
    stop_all,
    wait_until,
    workers_of,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.integration

SPIN_LINE = next(
    number
    for number, line in enumerate(
        (Path(__file__).parent.parent / "apps" / "spin.py").read_text().splitlines(), start=1
    )
    if line.strip().startswith("while") and "# SPIN-LINE" in line
)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start servers for one test; each is stopped at its end and must exit 0."""
    servers: list[LiveServer] = []

    def start_server(*args: str, **kwargs: object) -> LiveServer:
        server = LiveServer(
            log_path=tmp_path / f"server-{len(servers)}.log",
            args=["--no-access-log", *args],
            **kwargs,  # type: ignore[arg-type]
        )
        servers.append(server)
        return server.start()

    yield start_server
    stop_all(servers)


def echo_pid(server: LiveServer) -> int:
    return int(json.loads(server.get("/echo/pid").body)["pid"])


class Load:
    """Client threads doing GET /echo/load, one request per connection, until stopped."""

    def __init__(self, server: LiveServer, clients: int = 4) -> None:
        self.server = server
        self.pids: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self.server.get("/echo/load")
                if response.status != 200:
                    self.failures.append(f"status {response.status}")
                else:
                    self.pids.append(int(json.loads(response.body)["pid"]))
            except Exception as exc:  # noqa: BLE001, PERF203 - every failure counts
                self.failures.append(repr(exc))

    def wait_for_requests(self, count: int) -> None:
        target = len(self.pids) + count
        assert wait_until(lambda: len(self.pids) >= target or self.failures)


def test_hup_twice_and_ttin_ttou_under_load_fail_no_request(start):
    server = start("--workers", "2", "--threads", "4")
    first = workers_of(server)
    assert len(first) == 2
    with Load(server) as load:
        load.wait_for_requests(50)
        for reloads in (1, 2):
            server.send_signal(signal.SIGHUP)
            assert wait_until(lambda n=reloads: count_messages(server, "READY=1") == 1 + n)
            assert wait_until(lambda: len(workers_of(server)) == 2)
            load.wait_for_requests(50)
        after_reloads = workers_of(server)
        server.send_signal(signal.SIGTTIN)
        assert wait_until(lambda: count_messages(server, "3 of 3 worker(s) ready"))
        load.wait_for_requests(50)
        server.send_signal(signal.SIGTTOU)
        assert wait_until(lambda: len(workers_of(server)) == 2)
        load.wait_for_requests(50)
        pids_at_the_end = set(load.pids[-20:])
    assert load.failures == []
    assert not first & after_reloads  # every worker was replaced, twice
    assert len(set(load.pids)) >= 5  # 2 first + 2 + 2 after reloads + 1 added
    assert pids_at_the_end <= workers_of(server)
    assert count_messages(server, "RELOADING=1\nMONOTONIC_USEC=") == 2


def test_sigterm_drains_in_flight_requests_then_refuses(start, tmp_path):
    pidfile = tmp_path / "server.pid"
    server = start("--workers", "2", "--graceful-timeout", "3", "--pidfile", str(pidfile))
    assert pidfile.read_text().strip() == str(server.pid)
    slow = [server.connect() for _ in range(3)]
    for sock in slow:
        sock.sendall(b"GET /sleepy/?s=1.5 HTTP/1.1\r\nHost: t\r\n\r\n")
    too_slow = server.connect()
    too_slow.sendall(b"GET /sleepy/?s=60 HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.5)  # let the workers read and dispatch them
    os.kill(server.pid, signal.SIGTERM)  # the master only, as systemd's KillMode=mixed does
    for sock in slow:
        response = read_response(sock)
        assert response.status == 200
        assert is_closed(sock)  # no keep-alive while draining
        sock.close()
    assert is_closed(too_slow, timeout=15)  # cut at GRACEFUL_TIMEOUT
    too_slow.close()
    assert server.process is not None
    assert server.process.wait(15) == 0
    with socket.socket() as client, pytest.raises(ConnectionRefusedError):
        client.connect(server.address)
    log = server.log()
    assert "Graceful timeout (3.0 s) reached" in log
    assert "1 request(s) were still running at exit" in log
    assert not pidfile.exists()
    assert count_messages(server, "STOPPING=1") == 1


def test_killed_worker_is_replaced_and_others_unaffected(start):
    server = start("--workers", "2", "--threads", "4")
    connections: dict[int, list] = {}
    while len(connections) < 2 or min(len(c) for c in connections.values()) < 2:
        sock = server.connect()
        sock.sendall(b"GET /echo/who HTTP/1.1\r\nHost: t\r\n\r\n")
        connections.setdefault(int(json.loads(read_response(sock).body)["pid"]), []).append(sock)
        assert sum(len(c) for c in connections.values()) < 60, "accepts never reached a worker"
    victim, survivor = sorted(connections)
    for sock in connections[survivor]:
        sock.sendall(b"GET /sleepy/?s=1 HTTP/1.1\r\nHost: t\r\n\r\n")
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    assert wait_until(lambda: len(workers_of(server) - {survivor}) == 1, timeout=1.0), (
        f"no replacement forked within 1 s (after {time.monotonic() - killed_at:.2f} s)"
    )
    for sock in connections[survivor]:
        assert read_response(sock).status == 200
    for sock in (*connections[victim], *connections[survivor]):
        sock.close()
    assert wait_until(lambda: count_messages(server, "2 of 2 worker(s) ready") >= 2)
    assert echo_pid(server) in workers_of(server)
    assert f"(pid {victim}) was killed by SIGKILL: probably out of memory" in server.log()


def test_stuck_request_is_logged_with_its_traceback_then_worker_replaced(start):
    server = start("--workers", "1", "--threads", "2", "--timeout", "2", "--graceful-timeout", "1")
    (stuck_worker,) = workers_of(server)
    sock = server.connect(timeout=30)
    sock.sendall(b"GET /spin/?s=60 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert wait_until(lambda: workers_of(server) - {stuck_worker}, timeout=20)
    assert is_closed(sock, timeout=20)  # cut once past GRACEFUL_TIMEOUT
    sock.close()
    assert wait_until(lambda: stuck_worker not in workers_of(server), timeout=20)
    assert echo_pid(server) != stuck_worker
    log = server.log()
    match = re.search(
        r"CRITICAL .*Request running for [\d.]+ s \(TIMEOUT is 2\.0 s\): GET /spin/\?s=60 in "
        rf"worker pid {stuck_worker}, thread \d+\. Its traceback",
        log,
    )
    assert match, log[-3000:]
    traceback_part = log[match.end() :]
    assert f'tests/apps/spin.py", line {SPIN_LINE}, in application' in traceback_part
    assert "# SPIN-LINE" in traceback_part
    exit_line = log.index(f"(pid {stuck_worker}) exited")
    assert match.start() < exit_line  # logged before anything was stopped


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        pytest.param(
            ("--max-requests", "30", "--max-requests-jitter", "10"), "MAX_REQUESTS", id="requests"
        ),
        pytest.param(("--max-worker-memory", "1"), "MAX_WORKER_MEMORY", id="memory"),
    ],
)
def test_recycling_fails_no_request(start, args, reason):
    server = start("--workers", "2", "--threads", "4", *args)
    with Load(server) as load:
        assert wait_until(lambda: len(set(load.pids)) >= 4 or load.failures, timeout=30)
    assert load.failures == []
    assert f"({reason}): asking to be replaced" in server.log()


def test_silent_worker_is_aborted_and_replaced(start):
    server = start("--workers", "2", "--heartbeat-timeout", "2")
    silent = min(workers_of(server))
    os.kill(silent, signal.SIGSTOP)
    try:
        assert wait_until(lambda: silent not in workers_of(server), timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(silent, signal.SIGCONT)
    assert wait_until(lambda: len(workers_of(server)) == 2)
    log = server.log()
    assert re.search(rf"CRITICAL .*\(pid {silent}\) sent no heartbeat for [\d.]+ s", log)
    assert f"(pid {silent}) was killed by SIGKILL\n" in log  # ours, after SIGABRT: no OOM hint
    echo_pid(server)


def test_import_error_in_the_wsgi_module_stops_the_server(tmp_path):
    server = LiveServer(
        log_path=tmp_path / "server.log",
        settings="tests.settings_broken_wsgi",
        args=["--workers", "2"],
        wait_ready=False,
    )
    try:
        server.start()
        assert server.process is not None
        code = server.process.wait(20)
        ready_messages = count_messages(server, "READY=1")
    finally:
        server.stop()
    log = server.log()
    assert code == 4, log
    assert "could not load the application 'tests.apps.broken_wsgi.application'" in log
    assert "No module named 'tests.apps.no_such_module_for_wsgiserve_tests'" in log
    assert log.count(") started") <= 2  # no respawn loop
    assert ready_messages == 0


def test_reload_with_broken_new_code_keeps_serving_the_old(start, tmp_path):
    server = start(
        "--workers",
        "2",
        settings="tests.settings_reloadable",
        env={"WSGISERVE_TEST_FILES_DIR": str(tmp_path)},
    )
    first = workers_of(server)
    (tmp_path / "break-reload").write_text("deploy went wrong")
    with Load(server) as load:
        load.wait_for_requests(20)
        server.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "Reload failed" in server.log()), server.log()[-3000:]
        assert wait_until(lambda: count_messages(server, "Reload failed") == 1)
        load.wait_for_requests(50)
        assert first <= workers_of(server)  # the old workers are still the ones serving
        (tmp_path / "break-reload").unlink()
        server.send_signal(signal.SIGHUP)  # the fixed deploy reloads normally
        assert wait_until(lambda: count_messages(server, "READY=1") == 3)
        assert wait_until(lambda: not (first & workers_of(server)))
        load.wait_for_requests(50)
    assert load.failures == []
