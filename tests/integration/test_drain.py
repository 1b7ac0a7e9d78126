"""No request on a keep-alive connection is lost when workers leave: reloads, resizes,
recycling and shutdown, with real keep-alive clients and with real nginx in front, over HTTP,
FastCGI (``fastcgi_keep_conn on``) and uwsgi.

The load (tests/keepalive.py) POSTs 2 KB to the echo app from client threads that keep
their connections, as browsers and proxies do, and retries nothing: one lost request fails
the test. The drain itself is tested step by step in tests/unit/test_drain.py.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

import pytest

from tests.keepalive import KeepAliveLoad
from tests.live import (
    LiveServer,
    bound_address,
    count_messages,
    stop_all,
    wait_until,
    workers_of,
)
from tests.nginx import NginxProxy, nginx_missing_reason

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUESTS_BETWEEN_SIGNALS = 150


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def start_server(
        *args: str, family: str = "tcp", bound: bool = False, fd_name: str = ""
    ) -> LiveServer:
        server = LiveServer(
            log_path=tmp_path / f"server-{len(servers)}.log",
            family=family,
            binds_itself=bound,
            fd_name=fd_name,
            args=["--no-access-log", *args],
        )
        servers.append(server)
        server.start()
        if bound:  # BIND 127.0.0.1:0: the port is in the READY status line
            server.address = bound_address(server)
        return server

    yield start_server
    stop_all(servers)


def reload_resize_cycle(
    server: LiveServer, load: KeepAliveLoad, *, terminate_a_worker: bool = False
) -> None:
    """HUP, TTIN, HUP, TTOU, each once the previous one has finished, under ``load``; then,
    with ``terminate_a_worker``, TERM to one worker (it drains and the master replaces it)."""
    assert load.wait_for_requests(REQUESTS_BETWEEN_SIGNALS), load.result.failures[:5]
    ready = count_messages(server, "READY=1")
    for signum in (signal.SIGHUP, signal.SIGTTIN, signal.SIGHUP, signal.SIGTTOU):
        before = workers_of(server)
        server.send_signal(signum)
        if signum == signal.SIGHUP:
            ready += 1
            assert wait_until(lambda n=ready: count_messages(server, "READY=1") >= n)
            # The old generation drains: every old pid has gone.
            assert wait_until(lambda old=before: not old & workers_of(server), timeout=30)
        else:
            expected = len(before) + (1 if signum == signal.SIGTTIN else -1)
            assert wait_until(lambda n=expected: len(workers_of(server)) == n, timeout=30)
        assert load.wait_for_requests(REQUESTS_BETWEEN_SIGNALS), load.result.failures[:5]
    if terminate_a_worker:
        before = workers_of(server)
        leaving = min(before)
        os.kill(leaving, signal.SIGTERM)
        assert wait_until(
            lambda: leaving not in workers_of(server) and len(workers_of(server)) == len(before),
            timeout=30,
        )
        assert load.wait_for_requests(REQUESTS_BETWEEN_SIGNALS), load.result.failures[:5]


@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_reloads_behind_nginx_with_upstream_keepalive_lose_no_request(start, tmp_path, family):
    reason = nginx_missing_reason()
    if reason is not None:
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    server = start("--workers", "2", "--threads", "4", family=family)
    first = workers_of(server)
    with NginxProxy(tmp_path / "nginx", server.address) as nginx:
        with KeepAliveLoad(nginx.address, clients=16) as load:
            reload_resize_cycle(server, load)
        result = load.result
        error_log = nginx.error_log()
    assert result.failures == [], result.failures[:10]
    assert "upstream prematurely closed" not in error_log
    assert "Connection reset by peer" not in error_log
    assert result.ok >= 5 * REQUESTS_BETWEEN_SIGNALS
    assert not first & workers_of(server)  # every worker was replaced
    assert "Drained in" in server.log()


@pytest.mark.parametrize(
    ("protocol", "family"),
    [
        pytest.param("fastcgi-keep", "unix", id="fastcgi-keep-conn-unix"),
        pytest.param("fastcgi-keep", "tcp", id="fastcgi-keep-conn-tcp"),
        pytest.param("uwsgi", "unix", id="uwsgi-unix"),
    ],
)
def test_reloads_behind_nginx_over_gateway_protocols_lose_no_request(
    start, tmp_path, protocol, family
):
    """nginx ``fastcgi_pass`` with ``fastcgi_keep_conn on`` and upstream keep-alive (requests
    follow each other on cached connections, as over HTTP), and ``uwsgi_pass`` (a connection
    per request); the listener's protocol comes from LISTEN_FDNAMES."""
    reason = nginx_missing_reason()
    if reason is not None:
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    scheme = protocol.partition("-")[0]
    server = start("--workers", "2", "--threads", "4", family=family, fd_name=scheme)
    first = workers_of(server)
    with NginxProxy(tmp_path / "nginx", server.address, protocol=protocol) as nginx:
        with KeepAliveLoad(nginx.address, clients=16) as load:
            reload_resize_cycle(server, load, terminate_a_worker=True)
        result = load.result
        error_log = nginx.error_log()
    assert result.failures == [], result.failures[:10]
    assert "upstream prematurely closed" not in error_log, error_log[-3000:]
    assert "reset" not in error_log, error_log[-3000:]
    assert result.ok >= 6 * REQUESTS_BETWEEN_SIGNALS
    assert not first & workers_of(server)
    assert "Drained in" in server.log()


def test_reloads_with_direct_keepalive_clients_lose_no_request(start):
    server = start("--workers", "2", "--threads", "4")
    first = workers_of(server)
    with KeepAliveLoad(server.address, clients=12, keepalive_clients=6) as load:
        reload_resize_cycle(server, load)
    result = load.result
    assert result.failures == [], result.failures[:10]
    assert not first & workers_of(server)
    assert len(set(result.pids)) >= 5  # 2 first + 2 + 2 after the reloads + 1 added


def test_sigterm_under_keepalive_load_answers_every_request_sent(start):
    """The server binds its own port here: without systemd holding the socket, connections
    still in the listen backlog when the last copy closes would be reset."""
    server = start("127.0.0.1:0", "--workers", "2", "--threads", "4", bound=True)
    load = KeepAliveLoad(server.address, clients=12, keepalive_clients=8)
    with load:
        assert load.wait_for_requests(REQUESTS_BETWEEN_SIGNALS)
        os.kill(server.pid, signal.SIGTERM)  # the master only, as systemd's KillMode=mixed
        assert server.process is not None
        assert server.process.wait(30) == 0
        # The listeners are closed: the clients now meet refused connections.
        refused = load.result.refused
        assert wait_until(lambda: load.result.refused > refused + 10)
    result = load.result
    assert result.failures == [], result.failures[:10]
    assert "Drained in" in server.log()


def test_max_requests_recycling_under_keepalive_load_loses_no_request(start):
    server = start("--workers", "2", "--threads", "4", "--max-requests", "100")
    with KeepAliveLoad(server.address, clients=12, keepalive_clients=8) as load:
        assert wait_until(lambda: len(set(load.result.pids)) >= 6 or load.result.failures, 60)
    result = load.result
    assert result.failures == [], result.failures[:10]
    assert len(set(result.pids)) >= 6
    assert "(MAX_REQUESTS): asking to be replaced" in server.log()
