"""The connection state machine under hostile input and time, over a socketpair.

A real ``Loop`` and ``Connection`` serve one end of a ``socket.socketpair()``; the test drives
the loop's selector by hand (``Harness.pump``), with an injected clock and a pool that runs
requests synchronously, so every run is deterministic and needs no sleeping.

Properties (hypothesis; the parser-level twins are in tests/http/test_properties.py):

1. Split invariance: whatever the split of a stream of pipelined requests into reads, the
   bytes the client receives are identical.
2. Robustness: random bytes and mutated valid requests never make the loop raise; the client
   gets whole HTTP responses (the last one a 4xx when the input was bad) and the same bytes
   whatever the split.

Timeouts, with the fake clock: HEADER_TIMEOUT (whole head, trickling does not extend it),
BODY_TIMEOUT (gap between reads), KEEPALIVE_TIMEOUT (quiet close) and WRITE_TIMEOUT.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from django_wsgiserve.config import resolve_config
from django_wsgiserve.connection import Connection, ConnectionState
from django_wsgiserve.pool import ThreadPool
from django_wsgiserve.server import build_server
from django_wsgiserve.wsgi import EnvironTemplate
from tests.apps import big, echo
from tests.http.test_properties import mutated, requests
from tests.properties import PROPERTY_SETTINGS, splits

FIXED_DATE = b"Tue, 24 Nov 2026 12:00:00 GMT"
TIMEOUTS = {"HEADER_TIMEOUT": 10.0, "BODY_TIMEOUT": 5.0, "KEEPALIVE_TIMEOUT": 20.0}
STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SyncPool:
    """Runs each request at once in the loop thread: deterministic, for small responses."""

    size = 1
    pending = 0
    busy = 0

    def submit(self, job: Any) -> None:
        job()


class Harness:
    """One Loop + Connection on a socketpair; ``client`` is the test's end. Subclasses serve
    another protocol by overriding ``make_connection`` (test_gateway_connection.py)."""

    def __init__(
        self,
        *,
        pool: Any = None,
        app: Any = echo.application,
        peer: tuple[str, str] = ("127.0.0.1", "4711"),
        script_name: str = "",
        **options: Any,
    ) -> None:
        self.clock = FakeClock()
        config = resolve_config({"ACCESS_LOG": False, **TIMEOUTS, **options}, {}, {})
        self.pool = pool or SyncPool()
        server = build_server(
            config=config, listeners=[], application=app, pool=self.pool, clock=self.clock
        )
        self.loop = server.loop
        self.loop.date = FIXED_DATE
        server_end, self.client = socket.socketpair()
        server_end.setblocking(False)
        self.client.setblocking(False)
        template = EnvironTemplate(server_name="test", server_port="80", script_name=script_name)
        self.connection = self.make_connection(
            server_end,
            peer,
            loop=self.loop,
            context=server.context,
            dispatcher=server.dispatcher,
            template=template,
        )
        self.loop.add_connection(self.connection)
        self.received = bytearray()
        self.client_closed = False

    def make_connection(self, sock: socket.socket, peer: tuple[str, str], **common: Any) -> Any:
        return Connection(sock, peer, **common)

    def pump(self) -> None:
        """Run the loop's selector until nothing is ready (as ``Loop.run`` would)."""
        for _ in range(1000):
            if not self.loop.run_once(0):
                break
            self.read()
        self.read()

    def read(self) -> None:
        while not self.client_closed:
            try:
                data = self.client.recv(1 << 16)
            except BlockingIOError:
                return
            except ConnectionResetError:
                data = b""
            if not data:
                self.client_closed = True
                return
            self.received += data

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the server closed; what it sent is kept
            self.client.sendall(data)
        self.pump()

    def advance(self, seconds: float) -> None:
        """Move the clock and run the loop's once-a-second tick."""
        self.clock.now += seconds
        self.loop.step(0)
        self.pump()

    def finish(self) -> bytes:
        with contextlib.suppress(OSError):
            self.client.shutdown(socket.SHUT_WR)
        self.pump()
        self.close()
        return bytes(self.received)

    def close(self) -> None:
        self.loop.close()
        self.client.close()


def run_pieces(pieces: list[bytes]) -> bytes:
    harness = Harness()
    for piece in pieces:
        harness.send(piece)
    return harness.finish()


def statuses(output: bytes) -> list[int]:
    return [int(match.group(1)) for match in STATUS_LINE.finditer(output)]


# -- properties -------------------------------------------------------------------------------

CONNECTION_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=100)


@CONNECTION_SETTINGS
@given(st.lists(requests(), min_size=1, max_size=3), st.data())
def test_split_invariance_at_the_connection(generated, data):
    raw = b"".join(request.raw for request in generated)
    whole = run_pieces([raw])
    assert statuses(whole)[:1] == [200]
    assert run_pieces(data.draw(splits(raw))) == whole


@CONNECTION_SETTINGS
@given(st.binary(max_size=300), st.data())
def test_arbitrary_bytes_never_break_the_loop(raw, data):
    whole = run_pieces([raw])
    assert all(100 <= status < 600 for status in statuses(whole))
    assert run_pieces(data.draw(splits(raw))) == whole


@CONNECTION_SETTINGS
@given(mutated(), st.data())
def test_mutated_requests_never_break_the_loop(raw, data):
    whole = run_pieces([raw])
    codes = statuses(whole)
    assert all(code in (200, 400, 413, 414, 431, 501, 505) for code in codes)
    assert run_pieces(data.draw(splits(raw))) == whole
    assert run_pieces([raw[i : i + 1] for i in range(len(raw))]) == whole


# -- timeouts, with the fake clock ------------------------------------------------------------


def test_header_timeout_covers_the_whole_head_even_when_trickled():
    harness = Harness()
    harness.send(b"GET /echo/ HTTP/1.1\r\n")
    for _ in range(3):  # a slowloris client: one header line every 3 s
        harness.advance(3.0)
        harness.send(b"X-Slow: 1\r\n")
        assert harness.received == b""
    harness.advance(1.5)  # 10.5 s after the head started
    assert statuses(bytes(harness.received)) == [408]
    assert b"Connection: close" in harness.received
    harness.send(b"\r\n")  # too late: ignored while lingering
    assert harness.finish().count(b"HTTP/1.1") == 1


def test_body_timeout_is_the_gap_between_reads():
    harness = Harness()
    harness.send(b"POST /echo/ HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nab")
    for piece in (b"c", b"d"):  # 4 s gaps < BODY_TIMEOUT (5 s), 8 s in total
        harness.advance(4.0)
        harness.send(piece)
    assert harness.received == b""
    harness.advance(5.5)
    assert statuses(bytes(harness.received)) == [408]
    harness.close()


def test_trickled_body_within_the_gap_completes():
    harness = Harness()
    harness.send(b"POST /echo/ HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n")
    for piece in (b"a", b"b", b"c", b"d"):
        harness.advance(4.0)
        harness.send(piece)
    assert statuses(bytes(harness.received)) == [200]
    assert b'"body_length": 4' in harness.received
    harness.close()


def test_idle_keepalive_connection_is_closed_quietly():
    harness = Harness()
    harness.send(b"GET /echo/ HTTP/1.1\r\nHost: t\r\n\r\n")
    assert statuses(bytes(harness.received)) == [200]
    harness.advance(19.0)
    assert not harness.client_closed
    harness.advance(2.0)
    assert harness.client_closed
    assert statuses(bytes(harness.received)) == [200]  # no 408 for an idle connection
    harness.close()


def test_silent_new_connection_is_closed_after_header_timeout():
    harness = Harness()
    harness.advance(9.0)
    assert not harness.client_closed
    harness.advance(2.0)
    assert harness.client_closed
    assert harness.received == b""
    harness.close()


def test_client_that_stops_reading_is_dropped_after_write_timeout():
    pool = ThreadPool(threads=1, name_prefix="fuzz-write")
    pool.start()
    harness = Harness(pool=pool, app=big.application, WRITE_TIMEOUT=30.0)
    harness.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    harness.client.sendall(b"GET /big/?size=16777216 HTTP/1.1\r\nHost: t\r\n\r\n")
    harness.connection.on_readable()
    # Wait (bounded, not timed) until the pool thread has filled the outbox and blocks.
    for _ in range(500):
        harness.loop.run_calls()
        if harness.connection.outbox and pool.busy:
            break
        time.sleep(0.01)
    assert harness.connection.outbox
    harness.clock.now += 29.0
    harness.loop.step(0)
    assert harness.connection.state is not ConnectionState.CLOSED
    harness.clock.now += 2.0
    harness.loop.step(0)
    assert harness.connection.state is ConnectionState.CLOSED
    # The application thread was woken with ClientDisconnectedError and is free again.
    assert pool.shutdown(deadline_s=10) == 0
    assert not any(t.name.startswith("fuzz-write") for t in threading.enumerate())
    harness.close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", 400, id="nul-in-header"),
        pytest.param(b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505, id="http2"),
        pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414, id="long-target"),
    ],
)
def test_protocol_errors_answer_and_close(raw: bytes, status: int) -> None:
    harness = Harness()
    harness.send(raw)
    assert statuses(bytes(harness.received)) == [status]
    assert harness.connection.state in (ConnectionState.CLOSING, ConnectionState.CLOSED)
    harness.close()
