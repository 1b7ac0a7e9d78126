"""Keep-alive connections parked between requests and served by the pool thread that reads
them, through a real ``manage.py serve``.

On a quiet worker the next request of a keep-alive connection is read and answered by a pool
thread (the worker's ``parked_requests`` counter, shown by the test app ``/stats``); anything
that is not one whole plain request goes back to the loop, which must answer it exactly as
it answers any connection: requests in pieces, bodies, ``Expect: 100-continue``, pipelined
requests, bad requests, a peer that closes, the idle timeout, a drain, and a worker whose
every thread is held by a slow request.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from typing import TYPE_CHECKING

import pytest

from tests.live import LiveServer, ResponseReader, is_closed, wait_until

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

pytestmark = pytest.mark.integration

HELLO = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture(scope="module")
def quiet(start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server("--workers", "1", "--threads", "2", "--keepalive-timeout", "2")


def stats(server: LiveServer) -> dict[str, int]:
    response = server.get("/stats")
    assert response.status == 200
    return json.loads(response.body)  # type: ignore[no-any-return]


def parked_connection(server: LiveServer) -> tuple[socket.socket, ResponseReader]:
    """A keep-alive connection that has had two responses: parked by now."""
    sock = server.connect()
    reader = ResponseReader(sock)
    for _ in range(2):
        sock.sendall(HELLO)
        assert reader.read().body == b"Hello, World!"
    return sock, reader


def test_a_quiet_connection_is_read_and_answered_by_the_pool_threads(quiet: LiveServer) -> None:
    before = stats(quiet)
    with quiet.connect() as sock:
        reader = ResponseReader(sock)
        for _ in range(30):
            sock.sendall(HELLO)
            response = reader.read()
            assert response.status == 200
            assert response.body == b"Hello, World!"
            assert response.header("connection") is None  # kept alive
    after = stats(quiet)
    assert after["pid"] == before["pid"]
    assert after["requests"] - before["requests"] == 31  # the 30, and the second /stats
    # The first request or two go through the loop (the previous /stats may still be
    # finishing); the rest were parked.
    assert after["parked_requests"] - before["parked_requests"] >= 25


def test_a_request_in_pieces_goes_to_the_loop_and_is_answered(quiet: LiveServer) -> None:
    sock, reader = parked_connection(quiet)
    with sock:
        for piece in (b"GET /echo/pieces?x=1 HT", b"TP/1.1\r\nHost: t\r\nX-A: ", b"b\r\n\r\n"):
            sock.sendall(piece)
            time.sleep(0.2)
        response = reader.read()
        assert response.status == 200
        echoed = json.loads(response.body)
        assert echoed["path"] == "/echo/pieces"
        assert echoed["query_string"] == "x=1"
        assert echoed["headers"]["HTTP_X_A"] == "b"
        # The loop gives the connection back to the pool threads afterwards.
        sock.sendall(HELLO)
        assert reader.read().body == b"Hello, World!"


def test_a_body_that_comes_later_is_read_by_the_loop(quiet: LiveServer) -> None:
    body = b"0123456789" * 1000
    sock, reader = parked_connection(quiet)
    with sock:
        head = b"POST /echo/ HTTP/1.1\r\nHost: t\r\nContent-Length: 10000\r\n\r\n"
        sock.sendall(head + body[:3])
        time.sleep(0.3)
        sock.sendall(body[3:])
        echoed = json.loads(reader.read().body)
        assert echoed["body_length"] == len(body)
        assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
        sock.sendall(HELLO)
        assert reader.read().body == b"Hello, World!"


def test_expect_100_continue_on_a_parked_connection(quiet: LiveServer) -> None:
    sock, reader = parked_connection(quiet)
    with sock:
        sock.sendall(
            b"POST /echo/ HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = reader.read()
        assert interim.status == 100  # RFC 9110 section 10.1.1: before we read the body
        sock.sendall(b"hello")
        response = reader.read()
        assert response.status == 200
        assert json.loads(response.body)["body_length"] == 5


def test_pipelined_requests_on_a_parked_connection_are_answered_in_order(
    quiet: LiveServer,
) -> None:
    sock, reader = parked_connection(quiet)
    with sock:
        sock.sendall(b"".join(f"GET /echo/{n} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for n in "abc"))
        paths = [json.loads(reader.read().body)["path"] for _ in "abc"]
        assert paths == ["/echo/a", "/echo/b", "/echo/c"]


def test_a_bad_request_on_a_parked_connection_gets_400_and_a_close(quiet: LiveServer) -> None:
    sock, reader = parked_connection(quiet)
    with sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n")
        response = reader.read()
        assert response.status == 400
        assert response.header("connection") == "close"
        assert is_closed(sock)
    assert quiet.get("/hello").status == 200


def test_a_peer_that_closes_a_parked_connection_is_let_go(quiet: LiveServer) -> None:
    for _ in range(5):
        sock, _reader = parked_connection(quiet)
        sock.close()
    assert wait_until(lambda: "Traceback" not in quiet.log() and quiet.get("/hello").status == 200)
    assert "Traceback" not in quiet.log()


def test_a_parked_connection_is_closed_after_the_keepalive_timeout(quiet: LiveServer) -> None:
    sock, _reader = parked_connection(quiet)
    with sock:
        started = time.monotonic()
        assert is_closed(sock, timeout=10)  # KEEPALIVE_TIMEOUT 2: the loop takes it back
        assert time.monotonic() - started >= 1.0


def test_a_drain_answers_a_request_on_a_parked_connection_with_close(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server("--workers", "1", "--threads", "2", "--drain-keepalive-timeout", "5")
    sock, reader = parked_connection(server)
    with sock:
        server.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the drain has begun: the loop holds the connection again
        sock.sendall(HELLO)
        response = reader.read()
        assert response.status == 200
        assert response.body == b"Hello, World!"
        assert response.header("connection") == "close"
        assert is_closed(sock)
    assert server.process is not None
    assert server.process.wait(20) == 0


def test_every_thread_held_by_a_slow_request_parked_connections_get_503_not_silence(
    start_server: Callable[..., LiveServer],
) -> None:
    """One thread, no queue: while it runs a slow request, the loop takes the parked
    connections back, so their next request is refused at once with 503, as on any
    connection, instead of waiting unseen for the thread."""
    server = start_server("--workers", "1", "--threads", "1", "--max-queued-requests", "0")
    sock, reader = parked_connection(server)
    with sock, server.connect(timeout=30) as slow:
        slow.sendall(b"GET /sleepy/?s=8 HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(3)  # SATURATED_S and a tick have passed
        sock.sendall(HELLO)
        response = reader.read()
        assert response.status == 503
        assert response.header("retry-after") == "1"
        slow.settimeout(30)
        assert ResponseReader(slow).read().body == b"slept 8"
