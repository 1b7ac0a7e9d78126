"""The worker's drain, step by step on a fake clock: no request on its way is lost.

A real ``Loop`` listens on a loopback TCP port and the test plays the client with plain
sockets (TCP, not a socketpair: what matters here is what the kernel does on close, a FIN or
a reset). The loop is turned by hand with ``Loop.step(0)`` and time moves only when the test
says so. Requests run in a ``ManualPool``: synchronously when the test says, or in a thread
the test holds, to place the drain exactly between a response's head and its end.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import pytest

from django_wsgiserve.config import resolve_config
from django_wsgiserve.loop import LoopState
from django_wsgiserve.server import build_server
from tests.apps import echo
from tests.live import ResponseReader

KEEPALIVE_TIMEOUT = 20.0
DRAIN_WINDOW = 2.0
LINGER_S = 2.0  # connection.LINGER_S


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ManualPool:
    """Keeps submitted jobs until the test runs them (in its own thread, or another)."""

    busy = 0

    def __init__(self) -> None:
        self.jobs: list[Any] = []

    @property
    def pending(self) -> int:
        return len(self.jobs)

    def submit(self, job: Any) -> None:
        self.jobs.append(job)

    def run_all(self) -> None:
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job()

    def run_in_thread(self) -> threading.Thread:
        (job,) = self.jobs
        self.jobs = []
        thread = threading.Thread(target=job)
        thread.start()
        return thread


class Harness:
    """One Loop on a loopback listener, a fake clock and a manual pool."""

    def __init__(self, *, app: Any = echo.application, **options: Any) -> None:
        self.clock = FakeClock()
        self.pool = ManualPool()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.setblocking(False)
        config = resolve_config(
            {
                "ACCESS_LOG": False,
                "KEEPALIVE_TIMEOUT": KEEPALIVE_TIMEOUT,
                "DRAIN_KEEPALIVE_TIMEOUT": DRAIN_WINDOW,
                "GRACEFUL_TIMEOUT": 30.0,
                **options,
            },
            {},
            {},
        )
        self.loop = build_server(
            config=config,
            listeners=[self.listener],
            application=app,
            pool=self.pool,  # type: ignore[arg-type]
            clock=self.clock,
        ).loop
        self.clients: list[socket.socket] = []

    def connect(self) -> socket.socket:
        client = socket.create_connection(self.listener.getsockname(), timeout=5)
        self.clients.append(client)
        return client

    def turn(self, *, run_requests: bool = True) -> None:
        """Let the loop handle what is ready (and, unless told not to, the requests it
        dispatched)."""
        for _ in range(5):
            self.loop.step(0)
            if run_requests:
                self.pool.run_all()
        self.loop.step(0)

    def advance(self, seconds: float, *, run_requests: bool = True) -> None:
        self.clock.now += seconds
        self.turn(run_requests=run_requests)

    def close(self) -> None:
        self.loop.close()
        for client in self.clients:
            client.close()
        self.listener.close()


@pytest.fixture
def harness():
    made: list[Harness] = []

    def make(**options: Any) -> Harness:
        made.append(Harness(**options))
        return made[-1]

    yield make
    for item in made:
        item.close()


def post(path: str = "/echo/drain", body: bytes = b"x" * 2048, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def is_eof(client: socket.socket) -> bool:
    """True when the server has closed (or half-closed) its side; False when nothing came."""
    client.setblocking(False)
    try:
        return client.recv(1) == b""
    except BlockingIOError:
        return False
    finally:
        client.settimeout(5)


def socket_error(client: socket.socket) -> int:
    return client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def served_keepalive_client(h: Harness) -> tuple[socket.socket, ResponseReader]:
    """A client whose first request was answered; its connection is now idle."""
    client = h.connect()
    client.sendall(post())
    h.turn()
    reader = ResponseReader(client)
    response = reader.read(method="POST")
    assert response.status == 200
    assert response.header("Connection") is None  # kept alive
    return client, reader


def test_idle_keepalive_connection_stays_open_for_the_drain_window(harness):
    h = harness()
    h.loop.start_accepting()
    client, _ = served_keepalive_client(h)
    h.loop.request_stop()
    h.turn()
    assert h.loop.state is LoopState.DRAINING
    assert not is_eof(client)  # a request may be on its way: not closed at once
    h.advance(DRAIN_WINDOW - 0.2)
    assert not is_eof(client)
    h.advance(0.3)
    assert is_eof(client)  # closed after the window, well before KEEPALIVE_TIMEOUT


def test_request_arriving_during_the_drain_is_answered_with_connection_close(harness):
    h = harness()
    h.loop.start_accepting()
    client, reader = served_keepalive_client(h)
    h.loop.request_stop()
    h.turn()
    h.advance(1.0)
    client.sendall(post(body=b"late" * 100))
    h.turn()
    response = reader.read(method="POST")
    assert response.status == 200
    assert b'"body_length": 400' in response.body
    assert response.header("Connection") == "close"
    assert is_eof(client)


def test_connection_in_the_listen_backlog_when_the_drain_begins_is_served(harness, caplog):
    """On a shutdown nobody else accepts from the backlog: the draining loop takes it."""
    h = harness()
    client = h.connect()  # completes in the kernel; the loop does not watch the listener yet
    client.sendall(post())
    caplog.set_level(logging.INFO, logger="django_wsgiserve.loop")
    h.loop.request_stop()
    h.turn()
    response = ResponseReader(client).read(method="POST")
    assert response.status == 200
    assert response.header("Connection") == "close"
    h.advance(LINGER_S + 0.5)
    assert h.loop.state is LoopState.STOPPED
    assert "1 connection(s) and 0 running request(s) at the start (1 from the listen" in (
        caplog.text
    )


def test_keepalive_head_sent_before_the_drain_is_honoured(harness):
    """The head said keep-alive before the drain began: the client may send its next
    request at once, so the connection must still answer it (with Connection: close)."""
    drain_began = threading.Event()
    head_sent = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        yield b"first "[:3]
        head_sent.set()
        assert drain_began.wait(5)
        yield b"first "[3:]

    h = harness(app=app)
    h.loop.start_accepting()
    client = h.connect()
    client.sendall(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n")
    for _ in range(5):
        h.loop.step(0)
    thread = h.pool.run_in_thread()
    assert head_sent.wait(5)
    h.loop.request_stop()
    h.loop.step(0)
    assert h.loop.state is LoopState.DRAINING
    drain_began.set()
    thread.join(5)
    h.turn()
    reader = ResponseReader(client)
    first = reader.read()
    assert first.body == b"first "
    assert first.header("Connection") is None
    client.sendall(b"GET /two HTTP/1.1\r\nHost: t\r\n\r\n")
    h.turn()
    second = reader.read()
    assert second.status == 200
    assert second.header("Connection") == "close"


def test_head_sent_after_the_drain_began_says_connection_close(harness):
    """Keep-alive is decided when the head is built, not when the request arrived."""
    release = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        assert release.wait(5)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    h = harness(app=app)
    h.loop.start_accepting()
    client = h.connect()
    client.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    for _ in range(5):
        h.loop.step(0)
    thread = h.pool.run_in_thread()  # the cycle exists: the request asked for keep-alive
    h.loop.request_stop()
    h.loop.step(0)
    release.set()
    thread.join(5)
    h.turn()
    response = ResponseReader(client).read()
    assert response.status == 200
    assert response.header("Connection") == "close"
    assert is_eof(client)


def test_idle_connection_closed_after_the_window_lingers_without_a_reset(harness):
    """A request sent just as the window ends is read and dropped, not answered with a
    reset (which would also destroy any response bytes still in flight)."""
    h = harness()
    h.loop.start_accepting()
    client, _ = served_keepalive_client(h)
    h.loop.request_stop()
    h.turn()
    h.advance(DRAIN_WINDOW + 0.1)
    assert is_eof(client)
    client.sendall(post(body=b"too late"))
    h.turn()
    assert socket_error(client) == 0  # EPIPE here means the server reset the connection
    assert h.loop.state is LoopState.DRAINING  # still reading what the client sends
    client.shutdown(socket.SHUT_WR)
    h.turn()
    assert h.loop.state is LoopState.STOPPED


def test_lingering_close_ends_after_linger_s_when_the_client_never_closes(harness):
    h = harness()
    h.loop.start_accepting()
    served_keepalive_client(h)
    h.loop.request_stop()
    h.turn()
    h.advance(DRAIN_WINDOW + 0.1)
    assert h.loop.state is LoopState.DRAINING
    h.advance(LINGER_S + 0.2)
    assert h.loop.state is LoopState.STOPPED


def test_keepalive_timeout_close_lingers_too(harness):
    h = harness()
    h.loop.start_accepting()
    client, _ = served_keepalive_client(h)
    h.advance(KEEPALIVE_TIMEOUT + 1.1)  # the once-a-second tick closes it
    assert is_eof(client)
    client.sendall(post())
    h.turn()
    assert socket_error(client) == 0


def test_drain_with_a_zero_window_closes_idle_connections_at_once(harness):
    h = harness(DRAIN_KEEPALIVE_TIMEOUT=0)
    h.loop.start_accepting()
    client, _ = served_keepalive_client(h)
    h.loop.request_stop()
    h.turn()
    assert is_eof(client)


def test_silent_new_connection_gets_the_drain_window_too(harness):
    h = harness()
    h.loop.start_accepting()
    client = h.connect()
    h.turn()
    h.loop.request_stop()
    h.turn()
    h.advance(1.0)
    client.sendall(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n")
    h.turn()
    response = ResponseReader(client).read()
    assert response.status == 200
    assert response.header("Connection") == "close"


def test_drain_logs_one_info_line_with_its_counts(harness, caplog):
    h = harness()
    h.loop.start_accepting()
    client, _ = served_keepalive_client(h)
    waiting = h.connect()
    waiting.sendall(post())
    caplog.set_level(logging.INFO, logger="django_wsgiserve.loop")
    h.loop.request_stop()
    h.turn()
    client.sendall(post())
    h.turn()
    h.advance(DRAIN_WINDOW + LINGER_S + 0.5)
    assert h.loop.state is LoopState.STOPPED
    lines = [r.getMessage() for r in caplog.records if r.name == "django_wsgiserve.loop"]
    info = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == 1, lines
    message = info[0].getMessage()
    assert "2 connection(s) and 0 running request(s) at the start" in message
    assert "(0 from the listen backlog)" in message
    assert "2 request(s) answered during the drain" in message
    assert "0 connection(s) cut" in message


def test_graceful_timeout_ends_a_drain_that_a_request_holds(harness, caplog):
    caplog.set_level(logging.INFO, logger="django_wsgiserve.loop")
    h = harness(GRACEFUL_TIMEOUT=5.0)
    h.loop.start_accepting()
    client = h.connect()
    client.sendall(post())
    h.turn(run_requests=False)
    assert h.pool.pending == 1  # never run: a stuck request
    h.loop.request_stop()
    h.turn(run_requests=False)
    h.advance(4.0, run_requests=False)
    assert h.loop.state is LoopState.DRAINING
    h.advance(1.5, run_requests=False)
    assert h.loop.state is LoopState.STOPPED
    assert "Graceful timeout (5.0 s) reached: closing 1 connection(s)" in caplog.text
    assert "1 connection(s) cut" in caplog.text
