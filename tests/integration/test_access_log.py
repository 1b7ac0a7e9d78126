"""The access log through a real server: batched writes lose no line, whatever the stop."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

import pytest

from tests.keepalive import KeepAliveLoad
from tests.live import LiveServer, bound_address, stop_all, wait_until

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


def access_lines(server: LiveServer, marker: str) -> list[str]:
    return [line for line in server.log().splitlines() if marker in line]


@pytest.mark.parametrize("log_format", ["combined", "json"])
def test_every_response_has_its_line_when_the_server_is_stopped_under_load(
    tmp_path: Path, log_format: str
):
    server = LiveServer(
        log_path=tmp_path / "server.log",
        args=["127.0.0.1:0", "--workers", "2", "--threads", "4", "--access-log-format", log_format],
        binds_itself=True,  # stopped under load: see tests.live.bound_address
    )
    try:
        server.start()
        server.address = bound_address(server)
        load = KeepAliveLoad(server.address, clients=8, keepalive_clients=6, path="/echo/logged")
        with load:
            assert load.wait_for_requests(300)
            os.kill(server.pid, signal.SIGTERM)
            assert server.process is not None
            assert server.process.wait(30) == 0
        result = load.result
        assert result.failures == []
        assert result.ok >= 300
        # Every answered request has exactly one line, also those answered during the drain.
        assert wait_until(lambda: len(access_lines(server, "/echo/logged")) >= result.ok, 5)
        assert len(access_lines(server, "/echo/logged")) == result.ok
    finally:
        stop_all([server])
