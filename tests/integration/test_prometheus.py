"""A real Prometheus server scrapes the master's /metrics (Debian package ``prometheus``, which
.ci/run installs): the target is up, the request rate it computes is not zero, and every
query of the Grafana dashboard in docs/grafana/ is valid and names series that exist."""

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
from pathlib import Path
from typing import Any

import pytest

from tests.keepalive import KeepAliveLoad
from tests.live import LiveServer, stop_all, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMETHEUS = shutil.which("prometheus")
DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "django-wsgiserve.json"
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


def api(port: int, path: str, **parameters: str) -> dict[str, Any]:
    """A document of Prometheus's HTTP API; {} when it does not answer (yet)."""
    url = f"http://127.0.0.1:{port}/api/v1/{path}?" + urllib.parse.urlencode(parameters)
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return dict(json.load(response))
    except OSError:
        return {}


def query(port: int, expression: str) -> list[Any]:
    """The instant vector of ``expression``; [] when Prometheus is not up yet."""
    return list(api(port, "query", query=expression).get("data", {}).get("result", []))


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
        check_dashboard(web_port)
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


def check_dashboard(port: int) -> None:
    """Every query of the dashboard parses and evaluates, and each series it names exists."""
    names = set(api(port, "label/__name__/values").get("data", []))
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert expressions
    for expression in expressions:
        concrete = expression.replace("$job", "wsgiserve")
        document = api(port, "query", query=concrete)
        assert document.get("status") == "success", (expression, document)
        for name in re.findall(r"\b(?:http_server|wsgiserve)_\w+", concrete):
            assert name in names, (name, sorted(names))
