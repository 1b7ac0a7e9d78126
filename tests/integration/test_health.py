"""/healthz and /readyz on METRICS_BIND, and DRAIN_DELAY, through a real server.

The workers boot slowly on purpose (a ``worker_starting`` receiver of tests.lifecycle sleeps
while the file ``slow-worker-starting`` exists), so the start can be watched from outside.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import TYPE_CHECKING

import pytest

from tests.keepalive import KeepAliveLoad
from tests.live import LiveServer, stop_all, wait_until

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


def probe(path: Path, target: str, raw: bytes | None = None) -> tuple[int, str]:
    """One request to the master's listener; (status, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(raw or f"GET {target} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


def start(tmp_path: Path, *args: str) -> tuple[LiveServer, Path]:
    health = tmp_path / "health.sock"
    server = LiveServer(
        log_path=tmp_path / "server.log",
        settings="tests.settings_lifecycle",
        args=["--no-access-log", "--metrics-bind", f"unix:{health}", *args],
        env={"WSGISERVE_TEST_FILES_DIR": str(tmp_path)},
        wait_ready=False,
    )
    server.start()
    return server, health


def test_readiness_through_the_start_and_a_drain_delay(tmp_path):
    (tmp_path / "slow-worker-starting").write_text("3")
    server, health = start(tmp_path, "--workers", "2", "--drain-delay", "2")
    try:
        assert wait_until(health.exists, 20)
        # The workers are still booting: alive is not yet true, ready even less.
        assert probe(health, "/readyz") == (503, "starting\n")
        assert probe(health, "/healthz") == (503, "no worker serves\n")
        assert server.notify is not None
        assert server.notify.wait_for("READY=1", 30)
        (tmp_path / "slow-worker-starting").unlink()
        assert wait_until(lambda: probe(health, "/readyz")[0] == 200, 5)
        assert probe(health, "/healthz") == (200, "ok\n")
        with KeepAliveLoad(server.address, clients=6, keepalive_clients=4, path="/echo") as load:
            assert load.wait_for_requests(100)
            os.kill(server.pid, signal.SIGTERM)
            # Readiness fails at once, while the server goes on serving for DRAIN_DELAY.
            assert wait_until(lambda: probe(health, "/readyz")[0] == 503, 1.0)
            assert probe(health, "/readyz") == (503, "stopping (DRAIN_DELAY)\n")
            assert probe(health, "/healthz") == (200, "ok\n")
            served = load.result.ok
            assert wait_until(lambda: load.result.ok > served + 100, 1.5)
            # The load stops within the delay: what the drain does is test_drain.py's.
        assert load.result.failures == []
        assert server.process is not None
        assert server.process.wait(30) == 0
        log = server.log()
        assert "still serving for 2.0 s (DRAIN_DELAY)" in log
        assert log.index("DRAIN_DELAY") < log.index("Shutting down (SIGTERM)")
        assert not health.exists()
    finally:
        stop_all([server])


def test_a_second_sigterm_ends_the_drain_delay(tmp_path):
    server, health = start(tmp_path, "--workers", "1", "--drain-delay", "60")
    try:
        assert server.notify is not None
        assert server.notify.wait_for("READY=1", 30)
        os.kill(server.pid, signal.SIGTERM)
        assert wait_until(lambda: probe(health, "/readyz")[0] == 503, 2.0)
        os.kill(server.pid, signal.SIGTERM)
        assert server.process is not None
        assert server.process.wait(15) == 0
    finally:
        stop_all([server])


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(b"nonsense\r\n\r\n", 400, id="garbage"),
        pytest.param(b"GET /metricz HTTP/1.1\r\n\r\n", 404, id="unknown-path"),
        pytest.param(b"POST /readyz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, id="post"),
        pytest.param(b"GET /readyz HTTP/1.1\r\n" + b"X: y\r\n" * 2000, 400, id="too-long"),
    ],
)
def test_bad_probes_get_an_error_and_the_master_goes_on(tmp_path, raw, status):
    server, health = start(tmp_path, "--workers", "1")
    try:
        assert server.notify is not None
        assert server.notify.wait_for("READY=1", 30)
        assert probe(health, "", raw)[0] == status
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.connect(str(health))  # never sends: dropped after a few seconds, meanwhile
        try:
            assert probe(health, "/readyz") == (200, "ready\n")  # others are answered
        finally:
            silent.close()
        assert server.get("/state").status == 200
    finally:
        stop_all([server])
