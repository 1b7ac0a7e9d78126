"""HealthEndpoint: the master's own small HTTP listener (METRICS_BIND): liveness and readiness.

Design note. Load balancers and Kubernetes ask two questions, and only the master can answer
them for the whole server:

* ``GET /healthz``: is the server alive? 200 while the master runs and at least one worker
  serves (during a reload too: the old generation serves until the new one does), else 503.
* ``GET /metrics``: Prometheus text exposition (arbiter/scrape.py renders it), when the
  master was given a renderer.
* ``GET /readyz``: should traffic be sent here? 200 only while the server is running with at
  least one worker ready; 503 while it starts, from the first SIGTERM on (during DRAIN_DELAY,
  while it keeps serving, so that balancers stop sending before it stops accepting) and while
  it drains.

The master is single-threaded and must never block: the listener and its connections are
non-blocking and registered in the master's selector; a request head is read until its blank
line (at most ``_MAX_REQUEST_BYTES``), answered with one small ``Connection: close`` response,
and the connection closed with a lingering close (what the client still sends is read and
dropped until it closes, so the answer is not destroyed by a reset); one that has not sent its
head after ``_TIMEOUT_S`` (or not closed ``_LINGER_S`` after its answer) is dropped by
``check_deadlines()``, called once per turn of the master's loop. Bad requests get a 400,
nothing a client sends can raise out of here. Workers are forked after the listener exists:
``fds()`` lists what a child must close.

Master, main thread only. Never imports Django.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
from typing import TYPE_CHECKING

from django_wsgiserve import sockets

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["HealthEndpoint", "HealthState"]

logger = logging.getLogger(__package__)

# A probe's request is one short line and a few headers (kubelet sends ~150 bytes).
_MAX_REQUEST_BYTES = 8192
# Probes time out after a second by default (Kubernetes timeoutSeconds: 1); a client still
# silent after five is not a probe.
_TIMEOUT_S = 5.0
# After the answer: how long to read and drop what the client still sends.
_LINGER_S = 2.0
# The master blocks at most this long on a scraper's socket (metrics are a few tens of KiB,
# more than a socket buffer may take in one send when the scraper is slow).
_SEND_TIMEOUT_S = 1.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS[503] = "Service Unavailable"
_TEXT = "text/plain; charset=utf-8"
# Prometheus text exposition format 0.0.4.
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HealthState:
    """What the probes report; the master updates it (see the module notes)."""

    __slots__ = ("is_alive", "ready_reason")

    def __init__(self) -> None:
        self.is_alive = False  # a worker serves
        self.ready_reason = "starting"  # why /readyz fails; "" when ready


class _Probe:
    __slots__ = ("buffer", "deadline", "is_answered", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.buffer = b""
        self.deadline = deadline
        self.is_answered = False  # then lingering: input is dropped until EOF


class HealthEndpoint:
    """The METRICS_BIND listener of the master (main thread); see the module notes."""

    def __init__(
        self,
        address: str,
        *,
        state: HealthState,
        selector: selectors.BaseSelector,
        clock: Callable[[], float],
        metrics: Callable[[], bytes] | None = None,
    ) -> None:
        """``metrics``: renders ``/metrics`` (none: 404)."""
        # A short backlog: probes come one at a time.
        (self._listener,) = sockets.bind_listeners([sockets.parse_bind(address)], backlog=64)
        self._address = address
        self._state = state
        self._selector = selector
        self._clock = clock
        self._metrics = metrics
        self._probes: dict[int, _Probe] = {}
        selector.register(self._listener, selectors.EVENT_READ, self._accept)

    def url(self) -> str:
        return sockets.listener_url(self._listener, scheme="http")

    def fds(self) -> list[int]:
        """Descriptors a forked worker must close."""
        return [self._listener.fileno(), *self._probes]

    def check_deadlines(self, now: float) -> None:
        """Drop probes that sent no request head in time (once per turn of the loop)."""
        for fd, probe in list(self._probes.items()):
            if now >= probe.deadline:
                self._close(fd)

    def close(self) -> None:
        for fd in list(self._probes):
            self._close(fd)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._listener)
        sockets.close_listeners([self._listener], unlink_unix=True)

    # -- events ----------------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(16):  # a few at a time: the master has other work
            try:
                sock, _address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("METRICS_BIND %s: accept() failed: %s", self._address, exc)
                return
            sock.setblocking(False)
            fd = sock.fileno()
            self._probes[fd] = _Probe(sock, self._clock() + _TIMEOUT_S)
            self._selector.register(sock, selectors.EVENT_READ, lambda fd=fd: self._read(fd))

    def _read(self, fd: int) -> None:
        probe = self._probes.get(fd)
        if probe is None:
            return
        try:
            data = probe.sock.recv(_MAX_REQUEST_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(fd)
            return
        if probe.is_answered:
            if not data:
                self._close(fd)
            return
        probe.buffer += data
        if b"\r\n\r\n" in probe.buffer or b"\n\n" in probe.buffer:
            self._answer(fd, probe, *self._respond(probe.buffer))
        elif not data or len(probe.buffer) >= _MAX_REQUEST_BYTES:
            self._answer(fd, probe, 400, b"bad request\n")

    def _respond(self, head: bytes) -> tuple[int, bytes, str]:
        """The status, body and content type for a request ``head``."""
        request_line = head.split(b"\n", 1)[0].rstrip(b"\r").split(b" ")
        if len(request_line) != 3 or not request_line[2].startswith(b"HTTP/1."):
            return 400, b"bad request\n", _TEXT
        method, target = request_line[0], request_line[1].split(b"?", 1)[0]
        paths = (
            (b"/healthz", b"/readyz", b"/metrics") if self._metrics else (b"/healthz", b"/readyz")
        )
        if target not in paths:
            names = ", ".join(path.decode("ascii") for path in paths)
            return 404, f"not found: {names}\n".encode("ascii"), _TEXT
        if method not in (b"GET", b"HEAD"):
            return 405, b"method not allowed\n", _TEXT
        if target == b"/metrics" and self._metrics is not None:
            return 200, self._metrics(), _METRICS_TYPE
        state = self._state
        if target == b"/healthz":
            return (200, b"ok\n", _TEXT) if state.is_alive else (503, b"no worker serves\n", _TEXT)
        reason = state.ready_reason
        return (503, f"{reason}\n".encode(), _TEXT) if reason else (200, b"ready\n", _TEXT)

    def _answer(
        self, fd: int, probe: _Probe, status: int, text: bytes, content_type: str = _TEXT
    ) -> None:
        body = b"" if probe.buffer.startswith(b"HEAD ") else text
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(text)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        )
        data = head.encode("ascii") + body
        try:
            sent = probe.sock.send(data)
            if sent < len(data):  # a scrape is larger than a socket buffer may take at once
                self._send_rest(probe.sock, data[sent:])
                probe.sock.setblocking(False)
            probe.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(fd)
            return
        probe.is_answered = True
        probe.buffer = b""
        probe.deadline = self._clock() + _LINGER_S

    def _send_rest(self, sock: socket.socket, data: bytes) -> None:
        """The rest of a large response: blocking, bounded by a short timeout (a scraper reads
        what it asked for at once; one that does not is dropped)."""
        sock.settimeout(_SEND_TIMEOUT_S)
        sock.sendall(data)

    def _close(self, fd: int) -> None:
        probe = self._probes.pop(fd, None)
        if probe is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(probe.sock)
        probe.sock.close()
