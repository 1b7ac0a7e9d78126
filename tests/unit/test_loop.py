"""Loop timing details that the live-server tests can only hit by chance."""

from __future__ import annotations

import socket

from django_wsgiserve.config import resolve_config
from django_wsgiserve.pool import ThreadPool
from django_wsgiserve.server import build_server


def test_a_new_connection_counts_its_header_timeout_from_its_arrival() -> None:
    """The loop may wait most of a tick in select(); a connection accepted at the end of that
    wait must not inherit the time from before it, or a short HEADER_TIMEOUT closes it at the
    next tick before its request is read (seen as a flaky empty response in CI)."""
    now = [100.0]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    loop = build_server(
        config=resolve_config({"ACCESS_LOG": False, "HEADER_TIMEOUT": 1}, {}, {}),
        listeners=[listener],
        application=lambda environ, start_response: [],
        pool=ThreadPool(threads=1),
        clock=lambda: now[0],
    ).loop
    client = socket.create_connection(listener.getsockname())
    try:
        loop.start_accepting()
        now[0] = 100.9  # the wait for events lasted 0.9 s
        assert loop.run_once(5.0) >= 1
        (connection,) = loop.connections
        assert connection.deadline == 100.9 + 1
    finally:
        client.close()
        loop.close()
        listener.close()
