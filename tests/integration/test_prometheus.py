"""A real Prometheus server scrapes the master's /metrics (Debian package ``prometheus``, which
.ci/run installs): the target is up, and the request rate it computes is not zero."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from tests.keepalive import KeepAliveLoad
from tests.live import LiveServer, stop_all, wait_until

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMETHEUS = shutil.which("prometheus")
CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: wsgiserve
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def free_port() -> int:
    """A port for Prometheus's own web listener (it cannot report a port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def query(port: int, expression: str) -> list[Any]:
    """The instant vector of ``expression`` from Prometheus's HTTP API; [] when not yet up."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            document = json.load(response)
    except OSError:
        return []
    return list(document.get("data", {}).get("result", []))


def value_of(result: list[Any]) -> float:
    return float(result[0]["value"][1]) if result else 0.0


def test_prometheus_scrapes_the_master_and_sees_the_requests(tmp_path: Path) -> None:
    if PROMETHEUS is None:
        reason = "prometheus is not installed (Debian package prometheus; .ci/run installs it)"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    server = LiveServer(
        log_path=tmp_path / "server.log",
        args=["--no-access-log", "--workers", "2", "--metrics-bind", "127.0.0.1:0"],
    )
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        match = re.search(r"/metrics at http://127\.0\.0\.1:(\d+)/", server.log())
        assert match, server.log()[-2000:]
        config = tmp_path / "prometheus.yml"
        config.write_text(CONFIG.format(port=match.group(1)))
        web_port = free_port()
        with open(tmp_path / "prometheus.log", "ab") as log:
            prometheus = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{web_port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        assert wait_until(lambda: value_of(query(web_port, 'up{job="wsgiserve"}')) == 1.0, 60), (
            tmp_path / "prometheus.log"
        ).read_text()[-2000:]
        rate = "sum(rate(http_server_request_duration_seconds_count[5s]))"
        with KeepAliveLoad(server.address, clients=4, keepalive_clients=2) as load:
            assert wait_until(lambda: value_of(query(web_port, rate)) > 0, 60)
        assert load.result.failures == []
        assert load.result.ok > 0
    finally:
        if prometheus is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(prometheus.pid, signal.SIGTERM)
            try:
                prometheus.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(prometheus.pid, signal.SIGKILL)
                prometheus.wait(5)
        stop_all([server])
