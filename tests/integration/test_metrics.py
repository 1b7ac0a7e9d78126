"""/metrics on METRICS_BIND through a real multi-worker server: totals over every worker,
kept across a worker's SIGKILL and a code reload (SIGHUP), checked by promtool."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.keepalive import KeepAliveLoad
from tests.live import LiveServer, count_messages, stop_all, wait_until, workers_of

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


def scrape(path: Path) -> tuple[str, str]:
    """(Content-Type, exposition) of GET /metrics on the master's unix socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    content_type = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-type:")
    )
    return content_type, body.decode()


def total(text: str, name: str) -> float:
    """The sum of every sample called ``name``."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def restarts(text: str) -> dict[str, float]:
    """The non-zero worker restart counts, by reason."""
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "wsgiserve_worker_restarts_total" and sample.value
    }


def run_load(server: LiveServer, requests: int) -> int:
    """About ``requests`` requests with 4 keep-alive clients; how many succeeded."""
    with KeepAliveLoad(server.address, clients=4, path="/echo", max_seconds=60) as load:
        assert load.wait_for_requests(requests)
    assert load.result.failures == []
    return load.result.ok


def test_totals_cover_every_worker_across_a_kill_and_a_reload(tmp_path):
    metrics = tmp_path / "metrics.sock"
    server = LiveServer(
        log_path=tmp_path / "server.log",
        args=["--workers", "2", "--threads", "3", "--metrics-bind", f"unix:{metrics}"],
        env={"WSGISERVE_TEST_FILES_DIR": str(tmp_path)},
    )
    server.start()

    def counted() -> float:
        return total(scrape(metrics)[1], "http_server_request_duration_seconds_count")

    try:
        made = run_load(server, 200)
        # A response reaches its client just before its thread counts it: a SIGKILL at that
        # moment would take the count with it. The kill comes once every count is in.
        assert wait_until(lambda: counted() == made, 5), (counted(), made)
        victim = min(workers_of(server))
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: len(workers_of(server) - {victim}) == 2)
        assert wait_until(lambda: count_messages(server, "2 of 2 worker(s) ready") >= 2)
        made += run_load(server, 200)
        server.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "Reloaded" in server.log())
        made += run_load(server, 200)
        # The response reaches the client just before its thread counts it.
        assert wait_until(lambda: counted() == made, 5), (counted(), made)
        content_type, text = scrape(metrics)
        assert content_type == "text/plain; version=0.0.4; charset=utf-8"
        assert total(text, "wsgiserve_request_queue_seconds_count") == made
        # The killed worker, then the reload's two old ones once they have drained.
        assert wait_until(lambda: restarts(scrape(metrics)[1]) == {"killed": 1, "exit": 2}, 15)
        assert total(text, "wsgiserve_reloads_total") == 1
        assert total(text, "wsgiserve_workers") == 2
        assert total(text, "wsgiserve_worker_resident_memory_bytes") > 0
        promtool = shutil.which("promtool")
        if promtool is None:
            print("promtool not found (Debian package prometheus): exposition not linted")
        else:
            check = subprocess.run(
                [promtool, "check", "metrics"],
                input=text.encode(),
                capture_output=True,
                timeout=30,
                check=False,
            )
            assert check.returncode == 0, check.stdout + check.stderr
    finally:
        stop_all([server])
    assert "METRICS_BIND: /healthz, /readyz and /metrics at unix:" in server.log()
