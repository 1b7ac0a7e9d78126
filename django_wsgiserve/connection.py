"""Connection: one client socket, its request parser and its pending output.

Design note: ownership moves, it is never shared.

* ``READING``: the loop thread owns the connection. It reads, parses and buffers the whole
  request (head and body, bodies over BODY_BUFFER_BYTES spill to a temporary file), so a slow
  or hostile client costs a few KiB of buffer and never a thread.
* ``DISPATCHED``: a pool thread runs the application (``wsgi.RequestCycle``) and writes the
  response itself with non-blocking sends. Bytes that would block go to the *outbox*, which the
  loop flushes when the socket is writable. Past ``HIGH_WATERMARK`` bytes in memory, more
  bytes go to a per-connection *spill* file the loop sends with ``os.sendfile``, so a client
  that never reads costs neither memory nor, until ``SPILL_LIMIT``, the pool thread. File
  bodies that would block are handed to the loop as a duplicated descriptor and finished with
  ``os.sendfile``. Meanwhile the loop may still read (pipelined requests, or EOF) into the
  parser, up to ``PIPELINE_READ_LIMIT`` bytes; not over TLS, where an SSL object must not be
  read by the loop while a pool thread writes to it.

TLS (CERTFILE): the handshake runs here, non-blocking, in the loop; parts are joined (an
``SSLSocket`` has no ``sendmsg`` or send flags) and ``_sendfile`` uses ``pread`` + ``send``.
* ``FLUSHING``: the application is done but output remains; the loop writes it, then resumes
  reading or closes.
* ``CLOSING``: an error response was sent and our side shut down; the loop discards what the
  peer still sends until it closes or ``LINGER_S`` passes, so the response is not destroyed by
  a TCP reset (a close with unread data sends RST).

Static files (``StaticResponder``, built by ``static.py`` from whitenoise's table) are answered
here in the loop thread when the request is complete, without a pool thread: the head and the
start of the file go out at once (``MSG_MORE``, then ``os.sendfile``), the rest as a
``_FileSegment`` the loop flushes; a small file, which static.py keeps in memory
(``StaticResponse.body``), leaves with its head in one ``send()``. Then parsing simply
continues with the next request.
Every ``os.sendfile`` of the worker goes through ``_sendfile``, which counts calls and bytes in
``WorkerStats`` (visible to applications as ``environ["wsgiserve.stats"]``, for tests and
debugging). A segment may carry ``on_done``: the application's ``close()`` for a
``wsgi.file_wrapper`` body, run in a pool thread once the loop has sent the file (or dropped it).

With PROXY_PROTOCOL on, the first bytes of a connection go to a ``ProxyHeaderParser`` before
the HTTP parser sees anything: the header replaces ``peer``; a missing or malformed header, or
one from a peer outside TRUSTED_PROXIES, closes the connection without an answer.

``lock`` guards the state change from DISPATCHED, the outbox and the parser while a pool thread
may look at them; everything else is touched by the owner only. ``OSError``s are translated
here, once: a vanished peer becomes ``ClientDisconnectedError`` in the pool thread and a quiet
close (logged at DEBUG) in the loop.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import errno
import io
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ApplicationError, ClientDisconnectedError, ProtocolError, ProxyProtocolError
from .http.events import NEED_DATA, ConnectionClosed, Data, EndOfMessage, Request
from .http.framing import Framing, choose_framing
from .http.parser import RequestParser
from .http.proxy_protocol import ProxyHeaderParser

if TYPE_CHECKING:
    from collections.abc import Callable

    from .loop import Loop
    from .wsgi import EnvironTemplate

__all__ = [
    "Connection",
    "ConnectionState",
    "StaticResponder",
    "StaticResponse",
    "WorkerStats",
]

logger = logging.getLogger(__name__)

# A non-blocking send or recv that cannot go on now; TLS says so with its own exceptions.
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
# pread() size for files over TLS, where os.sendfile cannot be used (it cannot encrypt).
_TLS_FILE_CHUNK = 256 << 10

RECV_BYTES = 65536
# A pool thread waits once this much response data is queued in memory (waitress's
# outbuf_high_watermark is 16 MiB; we keep it small: one slow client, one MiB).
HIGH_WATERMARK = 1 << 20
LOW_WATERMARK = 256 << 10
# Past HIGH_WATERMARK in memory, further response bytes go to a temporary file that the loop
# sends with sendfile: a client that stops reading a large generated response then costs
# disk, not an application thread (waitress spills to a file past 1 MiB too). Only past
# SPILL_LIMIT bytes waiting on disk for one connection does the pool thread wait.
SPILL_LIMIT = 32 << 20
# While a request runs, read at most this much of what the client pipelines behind it.
PIPELINE_READ_LIMIT = 64 << 10
LINGER_S = 2.0
# A full queue drains in about one request time; a second is what nginx's limit_req users
# usually send. Clients and proxies that honour it come back when there is room.
RETRY_AFTER_HEADER = (("Retry-After", "1"),)
CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT_ERRNOS = frozenset(
    {errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED}
)
# Linux: hold the head back until the file follows, so both leave in one segment.
_MSG_MORE = getattr(socket, "MSG_MORE", 0)


class WorkerStats:
    """Per-worker counters. Updated without a lock by the loop and pool threads, so exact only
    while one file is being sent at a time: for tests and debugging, not accounting."""

    __slots__ = ("sendfile_bytes", "sendfile_calls", "static_responses")

    def __init__(self) -> None:
        self.sendfile_calls = 0
        self.sendfile_bytes = 0
        self.static_responses = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class StaticResponse:
    """A complete response the static table made: head fields, and the file part to send."""

    __slots__ = (
        "body",
        "content_length",
        "count",
        "fd",
        "file",
        "headers",
        "offset",
        "prepared",
        "status",
        "status_code",
    )

    def __init__(
        self,
        *,
        status: str,
        status_code: int,
        headers: list[tuple[str, str]],
        content_length: int | None,
        file: Any,
        fd: int = -1,
        offset: int = 0,
        count: int = 0,
        prepared: bytes | None = None,
        body: bytes | None = None,
    ) -> None:
        self.status, self.status_code, self.headers = status, status_code, headers
        # The status line and headers, validated once (ResponseWriter.prepare_head).
        self.prepared = prepared
        self.content_length = content_length
        self.file = file  # closed by the connection once sent or duplicated
        self.fd, self.offset, self.count = fd, offset, count
        # A small file's bytes (``count`` of them), sent with the head in one send().
        self.body = body


class StaticResponder(Protocol):
    """What the loop needs of ``static.StaticTable``."""

    prefixes: tuple[bytes, ...]

    def respond(self, request: Request) -> StaticResponse | None:
        """The response to ``request``, or None when the application must answer it."""


class ConnectionState(enum.Enum):
    READING = "reading"
    DISPATCHED = "dispatched"
    FLUSHING = "flushing"
    CLOSING = "closing"
    CLOSED = "closed"


class _AfterFlush(enum.Enum):
    NOTHING = "nothing"
    RESUME = "resume"
    CLOSE = "close"


class _FileSegment:
    """A part of a file still to be sent; owns a duplicated descriptor. ``on_done`` runs in a
    pool thread once the segment is sent or dropped."""

    __slots__ = ("count", "fd", "is_spill", "offset", "on_done")

    def __init__(
        self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None = None
    ) -> None:
        self.fd, self.offset, self.count = fd, offset, count
        self.on_done = on_done
        self.is_spill = False  # part of the connection's spill file (see SPILL_LIMIT)


class Connection:
    """A client connection; see the module docstring for which thread may call what."""

    __slots__ = (
        "_after_flush",
        "_body_chunks",
        "_body_file",
        "_body_size",
        "_has_error",
        "_is_handshaking",
        "_loop",
        "_outbox",
        "_outbox_bytes",
        "_parser",
        "_proxy_header",
        "_request",
        "_spill",
        "_spill_end",
        "_spill_tail",
        "_spilled_pending",
        "_writable",
        "can_sendfile",
        "deadline",
        "fd",
        "is_reading_enabled",
        "is_tls",
        "is_writing_enabled",
        "last_progress",
        "lock",
        "peer",
        "peer_closed",
        "requests_served",
        "sock",
        "state",
        "template",
    )

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, str],
        *,
        loop: Loop,
        template: EnvironTemplate,
        now: float,
    ) -> None:
        limits = loop.limits
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.template = template
        self._loop = loop
        self._parser = RequestParser(
            max_request_line=limits.max_request_line,
            max_headers=limits.max_headers,
            max_header_bytes=limits.max_header_bytes,
            max_body_bytes=limits.max_body_bytes,
        )
        self.lock = threading.Lock()
        self._writable = threading.Condition(self.lock)
        self.state = ConnectionState.READING
        self.deadline: float | None = now + limits.header_timeout
        self.last_progress = now
        self.is_reading_enabled = False
        self.is_writing_enabled = False
        self.peer_closed = False
        self.can_sendfile = True
        self.is_tls = isinstance(sock, ssl.SSLSocket)
        self._is_handshaking = self.is_tls
        # PROXY_PROTOCOL: the header comes before HTTP and replaces ``peer``.
        self._proxy_header = ProxyHeaderParser() if loop.proxy_protocol else None
        self.requests_served = 0
        self._request: Request | None = None
        self._body_chunks: list[bytes] = []
        self._body_file: io.BufferedRandom | None = None
        self._body_size = 0
        self._outbox: collections.deque[memoryview | _FileSegment] = collections.deque()
        self._outbox_bytes = 0
        self._after_flush = _AfterFlush.NOTHING
        self._has_error = False
        self._spill: io.BufferedRandom | None = None
        self._spill_end = 0
        self._spill_tail: _FileSegment | None = None
        self._spilled_pending = 0

    # == loop thread ======================================================================

    def on_readable(self) -> None:
        """The socket has data or EOF (loop thread)."""
        if self._is_handshaking:
            self._handshake()
            return
        try:
            data = self.sock.recv(RECV_BYTES)
            if self.is_tls and data:
                data += self._read_pending_tls()
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            logger.debug("Read from %s failed: %s", self.peer[0], exc)
            self.close()
            return
        if self._proxy_header is not None:
            data = self._read_proxy_header(data)
            if not data:
                return
        state = self.state
        if state is ConnectionState.CLOSING:
            if not data:
                self.close()
            return
        if state is not ConnectionState.READING:
            with self.lock:
                if self.state is not ConnectionState.READING:
                    self._read_while_busy(data)
                    return
        if data:
            self._parser.feed(data)
        else:
            self.peer_closed = True
            self._parser.feed_eof()
        self.process()

    def _read_pending_tls(self) -> bytes:
        """Bytes TLS has decrypted already: epoll cannot tell about them (loop thread)."""
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        chunks = []
        while sock.pending():
            chunks.append(sock.recv(RECV_BYTES))
        return b"".join(chunks)

    def _handshake(self) -> None:
        """Advance the TLS handshake, non-blocking (loop thread). HEADER_TIMEOUT covers it."""
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._loop.set_interest(self, read=True, write=False)
            return
        except ssl.SSLWantWriteError:
            self._loop.set_interest(self, read=False, write=True)
            return
        except OSError as exc:  # ssl.SSLError included: a bad client is not our error
            logger.debug("TLS handshake with %s failed: %s", self.peer[0] or "unix socket", exc)
            self.close()
            return
        self._is_handshaking = False
        self._loop.set_interest(self, read=True, write=False)
        self.on_readable()  # the request may have come with the handshake's last flight

    def _read_proxy_header(self, data: bytes) -> bytes:
        """Consume the PROXY protocol header; return the bytes after it (loop thread)."""
        header = self._proxy_header
        assert header is not None
        peer = self.peer[0]
        try:
            if not self._loop.proxies.is_trusted(peer):
                raise ProxyProtocolError("PROXY header from a peer not in TRUSTED_PROXIES")
            if not data:
                raise ProxyProtocolError("closed before the PROXY header was complete")
            info = header.feed(data)
        except ProxyProtocolError as exc:
            logger.debug("Rejected connection from %s: %s", peer or "unix socket", exc)
            self.close()
            return b""
        if info is None:
            return b""
        self._proxy_header = None
        if info.source is not None:
            self.peer = (info.source[0], str(info.source[1]))
        return header.remainder

    def _read_while_busy(self, data: bytes) -> None:
        """Keep what a client pipelines while its request runs (loop thread, lock held)."""
        if data:
            self._parser.feed(data)
            if self._parser.buffered_bytes < PIPELINE_READ_LIMIT:
                return
        else:
            self.peer_closed = True
            self._parser.feed_eof()
        self._loop.set_interest(self, read=False, write=self.is_writing_enabled)

    def process(self) -> None:
        """Turn buffered bytes into a dispatched request, as far as they go (loop thread)."""
        parser = self._parser
        while self.state is ConnectionState.READING:
            try:
                event = parser.next_event()
            except ProtocolError as exc:
                self._protocol_error(exc)
                return
            if event is NEED_DATA:
                self._need_data()
                return
            event_type = type(event)
            if event_type is Request:
                self._start_request(event)  # type: ignore[arg-type]
            elif event_type is Data:
                self._buffer_body(event.data)  # type: ignore[union-attr]
            elif event_type is EndOfMessage:
                if not self._dispatch():
                    return
            elif event_type is ConnectionClosed:
                self.close()
                return

    def _need_data(self) -> None:
        now = self._loop.now
        if self._request is not None:
            self.deadline = now + self._loop.limits.body_timeout
        elif self._parser.buffered_bytes and self.deadline is not None:
            # The head has started: it must be complete within HEADER_TIMEOUT of now at most.
            self.deadline = min(self.deadline, now + self._loop.limits.header_timeout)
        if self.peer_closed:
            self.close()
        elif not self.is_reading_enabled:
            self._loop.set_interest(self, read=True, write=self.is_writing_enabled)

    def _start_request(self, request: Request) -> None:
        self._request = request
        self._body_size = 0
        if request.expect_continue and self._parser.buffered_bytes == 0:
            # RFC 9110 §10.1.1: we are about to read the body, so ask for it now.
            self._send_from_loop(CONTINUE_RESPONSE)

    def _buffer_body(self, data: bytes) -> None:
        self._body_size += len(data)
        if self._body_file is not None:
            self._body_file.write(data)
            return
        self._body_chunks.append(data)
        if self._body_size > self._loop.limits.body_buffer_bytes:
            body_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the request cycle
            body_file.writelines(self._body_chunks)
            self._body_chunks = []
            self._body_file = body_file

    def _discard_body(self) -> None:
        if self._body_file is not None:
            self._body_file.close()
            self._body_file = None
        if self._body_chunks:
            self._body_chunks = []
        self._body_size = 0

    def _take_body(self) -> tuple[io.BytesIO | io.BufferedRandom, int]:
        size = self._body_size
        if self._body_file is not None:
            body: io.BytesIO | io.BufferedRandom = self._body_file
            body.seek(0)
            self._body_file = None
        else:
            chunks = self._body_chunks
            body = io.BytesIO(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            if chunks:
                self._body_chunks = []
        self._body_size = 0
        return body, size

    def _dispatch(self) -> bool:
        """Answer a static file here or hand the request to the pool; True: go on parsing."""
        request = self._request
        assert request is not None
        self._request = None
        static = self._loop.static
        if static is not None and request.path.startswith(static.prefixes):
            response = static.respond(request)
            if response is not None:
                self._discard_body()  # read in full already: a body to a static path is ignored
                return self._answer_static(request, response)
        body, body_size = self._take_body()
        self.state = ConnectionState.DISPATCHED
        self.deadline = None
        if self.is_tls and self.is_reading_enabled:
            # A pool thread writes to the SSL object now: the loop must not read from it.
            self._loop.set_interest(self, read=False, write=self.is_writing_enabled)
        self._loop.dispatch(self, request, body, body_size)
        return False

    def _answer_static(self, request: Request, response: StaticResponse) -> bool:
        """Send a static response from the loop thread; True when the next request may be
        parsed at once."""
        loop = self._loop
        started = time.monotonic()
        loop.requests_served += 1
        loop.stats.static_responses += 1
        self.requests_served += 1
        framing, keep_alive = choose_framing(
            method=request.method,
            http_version=request.http_version,
            status_code=response.status_code,
            content_length=response.content_length,
            keep_alive=request.keep_alive
            and not loop.is_draining
            and loop.limits.keepalive_timeout > 0,
        )
        count = response.count if framing is Framing.CONTENT_LENGTH else 0
        try:
            if response.prepared is not None:
                head = loop.writer.head_from_prepared(
                    response.prepared,
                    http_version=request.http_version,
                    framing=framing,
                    keep_alive=keep_alive,
                    date=loop.date,
                )
            else:
                head = loop.writer.head(
                    status=response.status,
                    headers=response.headers,
                    http_version=request.http_version,
                    framing=framing,
                    keep_alive=keep_alive,
                    date=loop.date,
                )
            with self.lock:
                if response.body is not None and count:
                    self._send_locked([head + response.body])  # one send() for head and body
                else:
                    self._send_static_locked(head, response.fd, response.offset, count)
        except ApplicationError:  # WHITENOISE_ADD_HEADERS_FUNCTION made an invalid header
            logger.exception("Invalid static response head for %r", request.target)
            self._error_response(500, "Internal Server Error")
            return False
        except ClientDisconnectedError:
            self.close()
            return False
        finally:
            if response.file is not None:
                response.file.close()
        self._log_static(request, response.status_code, count, started)
        return self._after_static(keep_alive=keep_alive)

    def _after_static(self, *, keep_alive: bool) -> bool:
        after = _AfterFlush.RESUME if keep_alive else _AfterFlush.CLOSE
        if self._outbox:
            self._after_flush = after
            self.state = ConnectionState.FLUSHING
            self.start_flushing()
            return False
        if not keep_alive:
            self.linger()
            return False
        self.deadline = self._loop.now + self._loop.idle_timeout
        return True  # still READING: process() goes on with a pipelined request, if any

    def _log_static(self, request: Request, status_code: int, size: int, started: float) -> None:
        access_log = self._loop.access_log
        if access_log is None:
            return
        referer = user_agent = b""
        for name, value in request.headers:
            if name == b"referer":
                referer = value
            elif name == b"user-agent":
                user_agent = value
        access_log.log(
            peer=self.peer[0],
            method=request.method.decode("latin-1"),
            target=request.target.decode("latin-1"),
            http_version="HTTP/1.1" if request.http_version == b"1.1" else "HTTP/1.0",
            status_code=status_code,
            bytes_sent=size,
            request_time_s=time.monotonic() - started,
            referer=referer.decode("latin-1"),
            user_agent=user_agent.decode("latin-1"),
        )

    def _protocol_error(self, exc: ProtocolError) -> None:
        logger.debug("Bad request from %s: %s (%d)", self.peer[0], exc, exc.status_code)
        self._error_response(exc.status_code, exc.reason)

    def _send_from_loop(self, data: bytes) -> None:
        """Send a small response the loop made itself (100 Continue, errors); loop thread."""
        # A vanished peer is noticed again by the next read or flush.
        with self.lock, contextlib.suppress(ClientDisconnectedError):
            self._send_locked([data])

    def send_timeout_response(self) -> None:
        """408 for a client that did not finish its request in time (loop thread)."""
        logger.debug("Request timeout from %s", self.peer[0])
        self._error_response(408, "Request Timeout")

    def send_overloaded_response(self) -> None:
        """503 for a request that found the request queue full (loop thread)."""
        logger.debug("Request queue full: 503 for %s", self.peer[0])
        self._error_response(503, "Service Unavailable", RETRY_AFTER_HEADER)

    def _error_response(
        self, status_code: int, reason: str, extra_headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """Answer an error the loop found itself, then close (loop thread)."""
        response = self._loop.writer.error_response(
            status_code=status_code,
            reason=reason,
            date=self._loop.date,
            extra_headers=extra_headers,
        )
        self._send_from_loop(response)
        self._after_flush = _AfterFlush.CLOSE
        if not self._outbox:
            self.linger()
        else:
            self.state = ConnectionState.FLUSHING

    @property
    def is_idle(self) -> bool:
        """Between requests (or before the first), with nothing buffered (loop thread)."""
        return (
            self.state is ConnectionState.READING
            and self._request is None
            and self._parser.buffered_bytes == 0
            and not self._is_handshaking
        )

    @property
    def may_keep_alive(self) -> bool:
        """False once the worker drains: a response head sent now says Connection: close
        (any thread)."""
        return not self._loop.is_draining

    @property
    def has_pending_output(self) -> bool:
        return bool(self._outbox)

    def on_writable(self) -> None:
        """Flush the outbox (loop thread)."""
        if self._is_handshaking:
            self._handshake()
            return
        with self.lock:
            self._flush_locked()
            if self._outbox and not self._has_error:
                return
            self._writable.notify_all()
            after, self._after_flush = self._after_flush, _AfterFlush.NOTHING
        if self._has_error:
            self.close()
            return
        self._loop.set_interest(self, read=self.is_reading_enabled, write=False)
        if after is _AfterFlush.RESUME:
            self.resume()
        elif after is _AfterFlush.CLOSE:
            self.linger()

    def start_flushing(self) -> None:
        """Called soon after a pool thread queued output (loop thread)."""
        if self.state is ConnectionState.CLOSED:
            return
        if self._outbox and not self.is_writing_enabled:
            self._loop.set_interest(self, read=self.is_reading_enabled, write=True)

    def resume(self) -> None:
        """Go back to reading after a response (loop thread)."""
        if self.state is ConnectionState.CLOSED:
            return
        self.state = ConnectionState.READING
        self.deadline = self._loop.now + self._loop.idle_timeout
        self.process()

    def linger(self) -> None:
        """Close our side and discard input until the peer closes (loop thread)."""
        if self.state is ConnectionState.CLOSED:
            return
        if self.peer_closed:
            self.close()
            return
        self.state = ConnectionState.CLOSING
        self.deadline = self._loop.now + LINGER_S
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self._loop.set_interest(self, read=True, write=False)

    def close(self) -> None:
        """Release everything (loop thread). A pool thread still running wakes with an error."""
        if self.state is ConnectionState.CLOSED:
            return
        with self.lock:
            self.state = ConnectionState.CLOSED
            self._has_error = True
            self._writable.notify_all()
            for item in self._outbox:
                if type(item) is _FileSegment:
                    self._segment_done(item)
            self._outbox.clear()
            self._outbox_bytes = 0
            self._release_spill()
        if self._body_file is not None:
            self._body_file.close()
            self._body_file = None
        self._loop.forget(self)
        with contextlib.suppress(OSError):
            self.sock.close()

    # == pool thread (while DISPATCHED) ====================================================

    def send(self, parts: list[bytes]) -> None:
        """Send response bytes; raises ClientDisconnectedError (pool thread)."""
        with self.lock:
            self._send_locked(parts)
            if self._outbox_bytes > HIGH_WATERMARK or self._spilled_pending > SPILL_LIMIT:
                self._wait_for_drain()

    def send_file(
        self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None = None
    ) -> bool:
        """Send part of a file with sendfile; the rest goes to the loop (pool thread). True
        when the loop took the rest, and with it ``on_done``, to run once it is sent."""
        with self.lock:
            if self._has_error:
                raise ClientDisconnectedError("the client has gone")
            if not self._outbox:
                sent = self._sendfile_now(fd, offset, count)
                offset, count = offset + sent, count - sent
            if not count:
                return False
            self._outbox.append(_FileSegment(os.dup(fd), offset, count, on_done))
            self._loop.call_soon_threadsafe(self.start_flushing)
            return on_done is not None

    def finish(self, *, keep_alive: bool) -> None:
        """The response is complete (pool thread): read the next request, or close."""
        loop = self._loop
        with self.lock:
            self.requests_served += 1
            if self._has_error or self.state is ConnectionState.CLOSED:
                loop.call_soon_threadsafe(self.close)
                return
            # A head that promised keep-alive is kept to, draining or not: the client may send
            # its next request at once. A draining loop closes the connection once it is idle.
            after = _AfterFlush.RESUME if keep_alive else _AfterFlush.CLOSE
            if self._outbox:
                self._after_flush = after
                self.state = ConnectionState.FLUSHING
                return
            if (
                after is _AfterFlush.RESUME
                and self.is_reading_enabled
                and not self.peer_closed
                and self._parser.buffered_bytes == 0
            ):
                # Fast path: nothing to parse and the loop is already watching the socket,
                # so there is no need to wake the loop. Deadline first: the loop reads state.
                self.deadline = loop.now + loop.idle_timeout
                self.state = ConnectionState.READING
                return
            self.state = ConnectionState.FLUSHING
        loop.call_soon_threadsafe(self.resume if after is _AfterFlush.RESUME else self.linger)

    def _wait_for_drain(self) -> None:
        """Wait (lock held) until the loop has flushed below the low watermarks."""
        while (
            self._outbox_bytes > LOW_WATERMARK or self._spilled_pending > SPILL_LIMIT // 2
        ) and not self._has_error:
            self._writable.wait()
        if self._has_error:
            raise ClientDisconnectedError("the client has gone")

    # == either thread, lock held ==========================================================

    def _send_locked(self, parts: list[bytes]) -> None:
        if self._has_error:
            raise ClientDisconnectedError("the client has gone")
        if self._outbox:
            for part in parts:
                size = len(part)
                if self._outbox_bytes + size <= HIGH_WATERMARK or not self._spill_part(part):
                    self._outbox.append(memoryview(part))
                    self._outbox_bytes += size
            return
        if len(parts) > 1 and self.is_tls:
            parts = [b"".join(parts)]  # an SSLSocket has no sendmsg
        try:
            sent = self.sock.send(parts[0]) if len(parts) == 1 else self.sock.sendmsg(parts)
        except _WOULD_BLOCK:
            sent = 0
        except OSError as exc:
            self._has_error = True
            raise _disconnected(exc) from exc
        for part in parts:
            size = len(part)
            if sent >= size:
                sent -= size
                continue
            self._outbox.append(memoryview(part)[sent:])
            self._outbox_bytes += size - sent
            sent = 0
        if self._outbox:
            self._loop.call_soon_threadsafe(self.start_flushing)

    def _send_static_locked(self, head: bytes, fd: int, offset: int, count: int) -> None:
        """The head, then ``count`` bytes of ``fd`` (loop thread, lock held)."""
        if not count or self._outbox:
            self._send_locked([head])
            if count:
                self._outbox.append(_FileSegment(os.dup(fd), offset, count))
            return
        try:
            sent = self.sock.send(head, 0 if self.is_tls else _MSG_MORE)
        except _WOULD_BLOCK:
            sent = 0
        except OSError as exc:
            self._has_error = True
            raise _disconnected(exc) from exc
        if sent < len(head):
            self._outbox.append(memoryview(head)[sent:])
            self._outbox_bytes += len(head) - sent
        else:
            sent = self._sendfile_now(fd, offset, count)
            offset, count = offset + sent, count - sent
        if count:  # the socket is full (or the file shrank: the flush will find out)
            self._outbox.append(_FileSegment(os.dup(fd), offset, count))

    def _spill_part(self, part: bytes) -> bool:
        """Queue ``part`` in the spill file rather than in memory; False when that is not
        possible now (over SPILL_LIMIT, or the disk refused)."""
        if self._spilled_pending >= SPILL_LIMIT:
            return False
        try:
            if self._spill is None:
                self._spill = tempfile.TemporaryFile()  # noqa: SIM115 - _release_spill closes
                self._spill_end = 0
            fd = self._spill.fileno()
            written = 0
            while written < len(part):
                written += os.pwrite(fd, memoryview(part)[written:], self._spill_end + written)
        except OSError as exc:
            logger.warning("Cannot spill a response to a temporary file: %s", exc)
            return False
        tail = self._spill_tail
        if tail is not None and self._outbox[-1] is tail:
            tail.count += written  # the loop has not finished it: it just grows
        else:
            tail = _FileSegment(os.dup(fd), self._spill_end, written)
            tail.is_spill = True
            self._outbox.append(tail)
            self._spill_tail = tail
        self._spill_end += written
        self._spilled_pending += written
        return True

    def _release_spill(self) -> None:
        """Nothing waits in the spill file any more: let it go (lock held)."""
        if self._spill is not None:
            self._spill.close()  # the segments had their own descriptors
            self._spill = None
        self._spill_tail = None
        self._spilled_pending = 0

    def _segment_done(self, segment: _FileSegment) -> None:
        os.close(segment.fd)
        if segment.on_done is not None:
            self._loop.run_in_pool(segment.on_done)
            segment.on_done = None

    def _sendfile(self, fd: int, offset: int, count: int) -> int:
        """The worker's only call of os.sendfile (counted in WorkerStats); over TLS, which
        sendfile cannot encrypt, pread() and send() instead (not counted)."""
        if self.is_tls:
            data = os.pread(fd, min(count, _TLS_FILE_CHUNK), offset)
            return self.sock.send(data) if data else 0
        sent = os.sendfile(self.fd, fd, offset, count)
        stats = self._loop.stats
        stats.sendfile_calls += 1
        stats.sendfile_bytes += sent
        return sent

    def _sendfile_now(self, fd: int, offset: int, count: int) -> int:
        total = 0
        while count:
            try:
                sent = self._sendfile(fd, offset, count)
            except _WOULD_BLOCK:
                break
            except OSError as exc:
                self._has_error = True
                raise _disconnected(exc) from exc
            if sent == 0:
                break  # the file is shorter than it was: the caller closes the connection
            total += sent
            offset += sent
            count -= sent
        return total

    def _flush_locked(self) -> None:
        outbox = self._outbox
        sock = self.sock
        while outbox:
            item = outbox[0]
            try:
                if type(item) is _FileSegment:
                    sent = self._sendfile(item.fd, item.offset, item.count)
                    if sent == 0:  # file truncated under us: framing is broken
                        logger.warning("A file shrank while it was sent to %s", self.peer[0])
                        self._has_error = True
                        return
                    item.offset += sent
                    item.count -= sent
                    if item.is_spill:
                        self._spilled_pending -= sent
                    if not item.count:
                        if item is self._spill_tail:
                            self._spill_tail = None
                        self._segment_done(item)
                        outbox.popleft()
                else:
                    assert type(item) is memoryview
                    sent = sock.send(item)
                    self._outbox_bytes -= sent
                    if sent == len(item):
                        outbox.popleft()
                    else:
                        outbox[0] = item[sent:]
            except _WOULD_BLOCK:
                return
            except OSError as exc:
                logger.debug("Write to %s failed: %s", self.peer[0], exc)
                self._has_error = True
                return
            self.last_progress = self._loop.now
        if self._spill is not None:
            self._release_spill()


def _disconnected(exc: OSError) -> ClientDisconnectedError:
    if exc.errno in _DISCONNECT_ERRNOS:
        return ClientDisconnectedError(f"the client has gone ({exc.strerror})")
    return ClientDisconnectedError(f"write failed: {exc}")
