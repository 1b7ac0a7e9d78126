"""Connection: one client socket, its request parser and its pending output.

Design note: ownership moves, it is never shared.

* ``READING``: the loop thread owns the connection. It reads, parses and buffers the whole
  request (head and body, bodies over BODY_BUFFER_BYTES spill to a temporary file), so a slow
  or hostile client costs a few KiB of buffer and never a thread. A complete request is
  answered here from the static table (``loopsend.py``), or handed to the ``Dispatcher``.
* ``DISPATCHED``: a pool thread runs the application (``wsgi.RequestCycle``) and writes the
  response itself with non-blocking sends through the ``OutputQueue`` (``outbox.py``), which
  keeps what would block for the loop to flush. Meanwhile the loop may still read (pipelined
  requests, or EOF) into the parser, up to ``PIPELINE_READ_LIMIT`` bytes; not over TLS, where
  an SSL object must not be read by the loop while a pool thread writes to it, nor when the
  connection is to be parked after its response.
* Parked (``READING``, ``is_parked``): on a quiet worker, a plain HTTP keep-alive
  connection whose response went out whole waits for its next request in the pool threads'
  epoll instead of the loop's (``parking.py``); the thread that finds it readable reads it
  and, when it holds one whole request that is not a static file, runs it at once
  (``serve_parked``), without the loop. Anything else goes back to the loop, which carries on
  with the bytes already read. The loop stops reading such a connection when it dispatches
  its request, and takes a parked connection back (``reclaim``) before applying its idle
  deadline, when a drain begins, when it closes it, and when every thread is held by a slow
  request.
* ``FLUSHING``: the application is done but output remains; the loop writes it, then resumes
  reading or closes.
* ``CLOSING``: our side is shut down (after a ``Connection: close`` response, an error, or an
  idle connection's deadline); the loop discards what the peer still sends until it closes or
  ``LINGER_S`` passes: a lingering close (RFC 9112 section 9.6), so that the kernel never
  answers late bytes with a reset that destroys a response the client has not read yet.

The loop is reached only through ``EventLoop`` (its clock, cached ``Date``, selector interest
and thread-safe calls); everything else a connection needs is in the worker's frozen
``WorkerContext``. Deadlines are the connection's own: ``check_deadline()`` is called by the
loop's tick (HEADER_TIMEOUT, BODY_TIMEOUT, the idle timeout, WRITE_TIMEOUT).

TLS (CERTFILE): the handshake runs here, non-blocking, in the loop. With PROXY_PROTOCOL on,
the first bytes of a connection go to a ``ProxyHeaderParser`` before the HTTP parser sees
anything: the header replaces ``peer``; a missing or malformed header, or one from a peer
outside TRUSTED_PROXIES, closes the connection without an answer.

``lock`` guards the state change from DISPATCHED, parking and taking back, the output queue
and the parser while a pool thread may look at them; everything else is touched by the owner
only. ``OSError``s of reads
are translated here and those of writes in ``outbox.py``: a vanished peer becomes
``ClientDisconnectedError`` in the pool thread and a quiet close (logged at DEBUG) in the loop.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
import ssl
import threading
from typing import TYPE_CHECKING, Any, Protocol

from . import tls
from .errors import ClientDisconnectedError, ProtocolError, ProxyProtocolError
from .http.events import NEED_DATA, ConnectionClosed, Data, EndOfMessage, Request
from .http.parser import RequestParser
from .http.proxy_protocol import ProxyHeaderParser
from .loopsend import RETRY_AFTER_HEADER, send_error, send_static
from .outbox import WOULD_BLOCK, FlushResult, OutputQueue
from .requestbody import RequestBody

if TYPE_CHECKING:
    import io
    from collections.abc import Callable

    from .context import WorkerContext
    from .wsgi import EnvironTemplate

__all__ = [
    "Connection",
    "ConnectionState",
    "Dispatch",
    "EventLoop",
    "InputParser",
    "Parking",
    "ResponseChannel",
]

logger = logging.getLogger(__name__)

RECV_BYTES = 65536
# While a request runs, read at most this much of what the client pipelines behind it.
PIPELINE_READ_LIMIT = 64 << 10
# A lingering close waits this long for the peer to close (gunicorn 27 and nginx's
# lingering_timeout wait too; a client that has read its response closes at once).
LINGER_S = 2.0
CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"


class EventLoop(Protocol):
    """What a connection needs of the worker's loop (``loop.Loop``)."""

    now: float
    date: bytes
    idle_timeout: float
    turn_events: int

    @property
    def is_draining(self) -> bool: ...

    def set_interest(self, connection: Connection, *, read: bool, write: bool) -> None: ...

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None: ...

    def forget(self, connection: Connection) -> None: ...


class Dispatch(Protocol):
    """Where a complete request goes (``dispatch.Dispatcher``)."""

    def dispatch(
        self,
        connection: Connection,
        request: Request,
        body: io.IOBase,
        body_size: int,
        now: float,
        gateway: Any = None,
    ) -> None: ...

    def run_in_pool(self, job: Callable[[], None]) -> None: ...

    def run_direct(
        self, connection: Connection, request: Request, body: io.IOBase, body_size: int, now: float
    ) -> None: ...


class Parking(Protocol):
    """Where a keep-alive connection waits for its next request outside the loop
    (``parking.ParkedConnections``)."""

    clock: Callable[[], float]

    def park(self, connection: Connection) -> bool: ...

    def hold(self, connection: Connection) -> bool: ...

    def is_quiet(self, own: int) -> bool: ...

    def forget(self, connection: Connection) -> None: ...


class InputParser(Protocol):
    """What the connection machinery needs of a protocol's parser (HTTP's ``RequestParser``,
    uwsgi's and FastCGI's); the protocol's own ``process()`` pulls its events."""

    @property
    def buffered_bytes(self) -> int: ...

    def feed(self, data: bytes) -> None: ...

    def feed_eof(self) -> None: ...


class ConnectionState(enum.Enum):
    READING = "reading"
    DISPATCHED = "dispatched"
    FLUSHING = "flushing"
    CLOSING = "closing"
    CLOSED = "closed"


class AfterFlush(enum.Enum):
    NOTHING = "nothing"
    RESUME = "resume"
    CLOSE = "close"


class Connection:
    """A client connection; see the module docstring for which thread may call what."""

    __slots__ = (
        "_body",
        "_dispatcher",
        "_input",
        "_is_handshaking",
        "_loop",
        "_parking",
        "_parser",
        "_proxy_header",
        "_request",
        "after_flush",
        "context",
        "deadline",
        "fd",
        "has_error",
        "is_parked",
        "is_reading_enabled",
        "is_tls",
        "is_writing_enabled",
        "last_progress",
        "lock",
        "outbox",
        "peer",
        "peer_closed",
        "requests_served",
        "sink",
        "sock",
        "state",
        "template",
        "writable",
    )

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, str],
        *,
        loop: EventLoop,
        context: WorkerContext,
        dispatcher: Dispatch,
        template: EnvironTemplate,
        parser: InputParser | None = None,
        parking: Parking | None = None,
    ) -> None:
        """``parser``: another protocol's parser (``gateway.py``); HTTP's by default.
        ``parking``: where the connection waits between requests, served by the pool threads
        (``parking.py``); plain HTTP only."""
        limits = context.limits
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.template = template
        self.context = context
        self._loop = loop
        self._dispatcher = dispatcher
        if parser is None:
            self._parser = RequestParser(
                max_request_line=limits.max_request_line,
                max_headers=limits.max_headers,
                max_header_bytes=limits.max_header_bytes,
                max_body_bytes=limits.max_body_bytes,
            )
            parser = self._parser
        self._input = parser  # the same object, as the machinery shared by protocols sees it
        self.lock = threading.Lock()
        self.writable = threading.Condition(self.lock)  # the loop flushed: a writer may go on
        self.state = ConnectionState.READING
        now = loop.now
        self.deadline: float | None = now + limits.header_timeout
        self.last_progress = now
        self.is_reading_enabled = False
        self.is_writing_enabled = False
        self.peer_closed = False
        self.is_tls = isinstance(sock, ssl.SSLSocket)
        self._is_handshaking = self.is_tls
        # PROXY_PROTOCOL: the header comes before HTTP and replaces ``peer``.
        self._proxy_header = ProxyHeaderParser() if context.is_proxy_protocol else None
        self.requests_served = 0
        self._request: Request | None = None
        self._body = RequestBody(memory_limit=limits.body_buffer_bytes)
        self.outbox = OutputQueue(sock, stats=context.stats, run_job=dispatcher.run_in_pool)
        self.after_flush = AfterFlush.NOTHING
        self.has_error = False
        self.sink = ResponseChannel(self, loop)
        self._parking = None if self.is_tls else parking
        self.is_parked = False  # watched by the parking, not the loop (lock held to change)

    # == loop thread ======================================================================

    @property
    def is_closed(self) -> bool:
        return self.state is ConnectionState.CLOSED

    @property
    def is_idle(self) -> bool:
        """Between requests (or before the first), with nothing buffered (loop thread)."""
        return (
            self.state is ConnectionState.READING
            and self._request is None
            and self._input.buffered_bytes == 0
            and not self._is_handshaking
        )

    def on_readable(self) -> None:
        """The socket has data or EOF (loop thread)."""
        if self._is_handshaking:
            self._handshake()
            return
        try:
            sock = self.sock
            if self.is_tls:
                assert isinstance(sock, ssl.SSLSocket)
                data = tls.read_decrypted(sock, RECV_BYTES)
            else:
                data = sock.recv(RECV_BYTES)
        except WOULD_BLOCK:
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
            self._input.feed(data)
        else:
            self.peer_closed = True
            self._input.feed_eof()
        self.process()

    def take_over(self, data: bytes) -> None:
        """Serve a connection whose first bytes a pool thread has read (``oneshot.py``);
        it was just added to the loop (loop thread)."""
        if data:
            self._input.feed(data)
        self.process()

    def _handshake(self) -> None:
        """Advance the TLS handshake, non-blocking (loop thread). HEADER_TIMEOUT covers it."""
        sock = self.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            step = tls.advance_handshake(sock)
        except OSError as exc:  # ssl.SSLError included: a bad client is not our error
            logger.debug("TLS handshake with %s failed: %s", self.peer[0] or "unix socket", exc)
            self.close()
            return
        is_writing = step is tls.HandshakeStep.WANT_WRITE
        self._loop.set_interest(self, read=not is_writing, write=is_writing)
        if step is tls.HandshakeStep.DONE:
            self._is_handshaking = False
            self.on_readable()  # the request may have come with the handshake's last flight

    def _read_proxy_header(self, data: bytes) -> bytes:
        """Consume the PROXY protocol header; return the bytes after it (loop thread)."""
        header = self._proxy_header
        assert header is not None
        peer = self.peer[0]
        try:
            if not self.context.proxies.is_trusted(peer):
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
            self._input.feed(data)
            if self._input.buffered_bytes < PIPELINE_READ_LIMIT:
                return
        else:
            self.peer_closed = True
            self._input.feed_eof()
        self._loop.set_interest(self, read=False, write=self.is_writing_enabled)

    def process(self) -> None:
        """Turn buffered bytes into a dispatched request, as far as they go (loop thread)."""
        parser = self._parser
        while self.state is ConnectionState.READING:
            try:
                event = parser.next_event()
            except ProtocolError as exc:
                logger.debug("Bad request from %s: %s (%d)", self.peer[0], exc, exc.status_code)
                send_error(self, exc.status_code, exc.reason)
                return
            if event is NEED_DATA:
                self._need_data()
                return
            event_type = type(event)
            if event_type is Request:
                self._start_request(event)  # type: ignore[arg-type]
            elif event_type is Data:
                self._body.add(event.data)  # type: ignore[union-attr]
            elif event_type is EndOfMessage:
                if not self._dispatch():
                    return
            elif event_type is ConnectionClosed:
                self.close()
                return

    def _need_data(self) -> None:
        now = self._loop.now
        limits = self.context.limits
        if self._request is not None:
            self.deadline = now + limits.body_timeout
        elif self._input.buffered_bytes and self.deadline is not None:
            # The head has started: it must be complete within HEADER_TIMEOUT of now at most.
            self.deadline = min(self.deadline, now + limits.header_timeout)
        if self.peer_closed:
            self.close()
        elif not self.is_reading_enabled:
            self._loop.set_interest(self, read=True, write=self.is_writing_enabled)

    def _start_request(self, request: Request) -> None:
        self._request = request
        if request.expect_continue and self._parser.buffered_bytes == 0:
            # RFC 9110 §10.1.1: we are about to read the body, so ask for it now.
            self.send_from_loop(CONTINUE_RESPONSE)

    def _dispatch(self) -> bool:
        """Answer a static file here or hand the request to the pool; True: go on parsing."""
        request = self._request
        assert request is not None
        self._request = None
        body, body_size = self._body.take()
        static = self.context.static
        if static is not None and request.path.startswith(static.prefixes):
            response = static.respond(request)
            if response is not None:
                body.close()  # read in full already: a body to a static path is ignored
                return send_static(self, request, response)
        self.state = ConnectionState.DISPATCHED
        self.deadline = None
        if self.is_reading_enabled and (
            self.is_tls
            or (
                self._parking is not None
                and request.keep_alive
                and self._loop.turn_events == 1  # the loop has nothing else to read
                and self._parking.is_quiet(0)
            )
        ):
            # TLS: a pool thread writes to the SSL object now, the loop must not read from it.
            # Parking: the pool thread that finishes the response parks the connection.
            self._loop.set_interest(self, read=False, write=self.is_writing_enabled)
        self._dispatcher.dispatch(self, request, body, body_size, self._loop.now)
        return False

    def reclaim(self) -> None:
        """Take a parked connection back: the loop reads it again (loop thread)."""
        with self.lock:
            if not self._unpark_locked():
                return
        self.process()  # nothing is buffered: this watches the socket for reading

    def _unpark_locked(self) -> bool:
        """Stop the parking's watch (loop thread, lock held); True when it was parked."""
        if not self.is_parked:
            return False
        self.is_parked = False
        assert self._parking is not None
        self._parking.forget(self)
        return True

    def send_from_loop(self, data: bytes) -> None:
        """Send a small response the loop made itself (100 Continue, errors); loop thread."""
        # A vanished peer is noticed again by the next read or flush.
        with self.lock, contextlib.suppress(ClientDisconnectedError):
            self._send_locked([data])

    def send_timeout_response(self) -> None:
        """408 for a client that did not finish its request in time (loop thread)."""
        logger.debug("Request timeout from %s", self.peer[0])
        send_error(self, 408, "Request Timeout")

    def send_overloaded_response(self) -> None:
        """503 for a request that found the request queue full (loop thread)."""
        logger.debug("Request queue full: 503 for %s", self.peer[0])
        send_error(self, 503, "Service Unavailable", RETRY_AFTER_HEADER)

    def after_response(self, *, keep_alive: bool) -> bool:
        """The loop thread wrote a whole response: flush it, then read on or close; True when
        the next request may be parsed at once (loop thread)."""
        after = AfterFlush.RESUME if keep_alive else AfterFlush.CLOSE
        if self.outbox:
            self.after_flush = after
            self.state = ConnectionState.FLUSHING
            self.start_flushing()
            return False
        if not keep_alive:
            self.linger()
            return False
        self.deadline = self._loop.now + self._loop.idle_timeout
        return True  # still READING: process() goes on with a pipelined request, if any

    def check_deadline(self, now: float) -> bool:
        """Apply this connection's timeouts (loop thread, from the loop's tick); True when an
        idle connection was closed."""
        if self.outbox and now - self.last_progress > self.context.limits.write_timeout:
            logger.debug("Write timeout: %s stopped reading", self.peer[0])
            self.close()
            return False
        deadline = self.deadline
        if deadline is None or deadline > now:
            return False
        state = self.state
        if state is ConnectionState.CLOSING:
            self.close()
        elif state is ConnectionState.READING:
            with self.lock:
                if self.state is not ConnectionState.READING:
                    return False  # a pool thread just handed it back; its deadline is fresh
                self._unpark_locked()  # the loop applies the deadline, so it owns it again
            if self.is_idle:
                self.linger()  # a request sent just now gets a FIN, not a reset
                return True
            self.send_timeout_response()
        return False

    @property
    def is_reading_quietly(self) -> bool:
        """Watched for reading, with nothing buffered and the peer still there (lock held)."""
        return self.is_reading_enabled and not self.peer_closed and self._input.buffered_bytes == 0

    def limit_idle_deadline(self, latest: float) -> None:
        """A draining loop gives an idle connection until ``latest`` at most (loop thread)."""
        if self.is_idle and (self.deadline is None or self.deadline > latest):
            self.deadline = latest

    def on_writable(self) -> None:
        """Flush the output queue (loop thread)."""
        if self._is_handshaking:
            self._handshake()
            return
        with self.lock:
            result = self.outbox.flush()
            # Writable: the socket took bytes (WRITE_TIMEOUT counts from the last progress).
            self.last_progress = self._loop.now
            if result is FlushResult.BLOCKED:
                return
            if result is FlushResult.FAILED:
                self.has_error = True
            self.writable.notify_all()
            after, self.after_flush = self.after_flush, AfterFlush.NOTHING
        if self.has_error:
            self.close()
            return
        self._loop.set_interest(self, read=self.is_reading_enabled, write=False)
        if after is AfterFlush.RESUME:
            self.resume()
        elif after is AfterFlush.CLOSE:
            self.linger()

    def start_flushing(self) -> None:
        """Called soon after a pool thread queued output (loop thread)."""
        if self.state is ConnectionState.CLOSED:
            return
        if self.outbox and not self.is_writing_enabled:
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
            self._unpark_locked()
            self.state = ConnectionState.CLOSED
            self.has_error = True
            self.writable.notify_all()
            self.outbox.clear()
        self._body.close()
        self._loop.forget(self)
        with contextlib.suppress(OSError):
            self.sock.close()

    # == a pool thread, parked connections (parking.py) ====================================

    def serve_parked(self) -> None:
        """The parked connection is readable: read, and serve the request here when it came
        whole; give anything else to the loop (pool thread)."""
        with self.lock:
            if not self.is_parked:
                return  # the loop took it back meanwhile
            self.is_parked = False
            self.state = ConnectionState.DISPATCHED
            self.deadline = None
        try:
            data = self.sock.recv(RECV_BYTES)
        except WOULD_BLOCK:
            data = None  # woken for nothing: wait again
        except OSError as exc:
            logger.debug("Read from %s failed: %s", self.peer[0], exc)
            self._to_loop(self.close)
            return
        if data is None:
            with self.lock:
                if self._park_locked(hold=False):
                    return
            self._to_loop(self.process)
            return
        assert self._parking is not None
        started = self._parking.clock()
        parser = self._parser
        if data:
            parser.feed(data)
        else:
            self.peer_closed = True
            parser.feed_eof()
        request = self._request
        while True:
            try:
                event = parser.next_event()
            except ProtocolError:
                self._to_loop(self.process)  # the parser raises it again there
                return
            event_type = type(event)
            if event_type is Request:
                request = self._request = event  # type: ignore[assignment]
                if request.expect_continue:  # type: ignore[union-attr]
                    self._to_loop(self._continue_and_go_on)  # 100 Continue: the loop's
                    return
            elif event_type is Data:
                self._body.add(event.data)  # type: ignore[union-attr]
            elif event_type is EndOfMessage:
                break
            else:  # NEED_DATA: the rest comes later, the loop waits for it; ConnectionClosed
                self._to_loop(self.process)
                return
        assert request is not None
        static = self.context.static
        if static is not None and request.path.startswith(static.prefixes):
            self._to_loop(self._dispatch_and_go_on)  # sent by the loop, with sendfile
            return
        self._request = None
        body, body_size = self._body.take()
        self._dispatcher.run_direct(self, request, body, body_size, started)

    def _to_loop(self, then: Callable[[], object]) -> None:
        """Give the connection back to the loop, which goes on with ``then`` (pool thread)."""

        def adopt() -> None:
            with self.lock:
                if self.state is ConnectionState.CLOSED:
                    return
                self.state = ConnectionState.READING
            then()

        self._loop.call_soon_threadsafe(adopt)

    def _continue_and_go_on(self) -> None:
        """A request head with ``Expect: 100-continue`` read by a pool thread (loop thread)."""
        assert self._request is not None
        self._start_request(self._request)
        self.process()

    def _dispatch_and_go_on(self) -> None:
        """A complete request read by a pool thread, for the loop to answer (loop thread)."""
        if self._dispatch():
            self.process()

    def _park_locked(self, *, hold: bool) -> bool:
        """Park the connection until its next request, if it can be (lock held): plain HTTP,
        the peer still there, nothing buffered, the loop not watching it. ``hold``: this
        thread looks for the next request first (``parking.py``), else the epoll watches."""
        parking = self._parking
        if (
            parking is None
            or self.peer_closed
            or self.is_reading_enabled
            or self._input.buffered_bytes
            or not (parking.hold(self) if hold else parking.park(self))
        ):
            return False
        self.deadline = parking.clock() + self._loop.idle_timeout
        self.state = ConnectionState.READING
        self.is_parked = True
        return True

    def watch_parked(self) -> None:
        """A connection this thread held (``parking.py``): let the epoll watch it, or give it
        to the loop if connections are not parked any more (pool thread)."""
        with self.lock:
            if not self.is_parked:
                return  # the loop took it back meanwhile
            assert self._parking is not None
            if self._parking.park(self):
                return
            self.is_parked = False
            self.state = ConnectionState.DISPATCHED  # until the loop adopts it
        self._to_loop(self.process)

    # == either thread, lock held ==========================================================

    def _send_locked(self, parts: list[bytes]) -> None:
        if self.has_error:
            raise ClientDisconnectedError("the client has gone")
        try:
            queued = self.outbox.send(parts)
        except ClientDisconnectedError:
            self.has_error = True
            raise
        if queued:
            self._loop.call_soon_threadsafe(self.start_flushing)


class ResponseChannel:
    """A connection as the pool thread running its request sees it: the ``wsgi.ResponseSink``
    (pool thread, while the connection is DISPATCHED). Every method takes the connection's
    lock; output goes through the connection's ``OutputQueue``."""

    __slots__ = ("_connection", "_loop", "can_sendfile")

    def __init__(self, connection: Connection, loop: EventLoop) -> None:
        self._connection = connection
        self._loop = loop
        self.can_sendfile = True

    @property
    def may_keep_alive(self) -> bool:
        """False once the worker drains: a response head sent now says Connection: close."""
        return not self._loop.is_draining

    def get_date(self) -> bytes:
        """The cached ``Date`` header value."""
        return self._loop.date

    def send(self, parts: list[bytes]) -> None:
        """Send response bytes; raises ClientDisconnectedError (pool thread)."""
        connection = self._connection
        with connection.lock:
            connection._send_locked(parts)
            outbox = connection.outbox
            if outbox.is_full:
                while not outbox.has_room and not connection.has_error:
                    connection.writable.wait()
                if connection.has_error:
                    raise ClientDisconnectedError("the client has gone")

    def send_file(
        self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None = None
    ) -> bool:
        """Send part of a file with sendfile; the rest goes to the loop (pool thread). True
        when the loop took the rest, and with it ``on_done``, to run once it is sent."""
        connection = self._connection
        with connection.lock:
            if connection.has_error:
                raise ClientDisconnectedError("the client has gone")
            try:
                queued = connection.outbox.send_file(fd, offset, count, on_done)
            except ClientDisconnectedError:
                connection.has_error = True
                raise
            if not queued:
                return False
            self._loop.call_soon_threadsafe(connection.start_flushing)
            return on_done is not None

    def finish(self, *, keep_alive: bool) -> None:
        """The response is complete (pool thread): read the next request, or close."""
        loop = self._loop
        connection = self._connection
        with connection.lock:
            connection.requests_served += 1
            if connection.has_error or connection.state is ConnectionState.CLOSED:
                loop.call_soon_threadsafe(connection.close)
                return
            # A head that promised keep-alive is kept to, draining or not: the client may send
            # its next request at once. A draining loop closes the connection once it is idle.
            after = AfterFlush.RESUME if keep_alive else AfterFlush.CLOSE
            if connection.outbox:
                connection.after_flush = after
                connection.state = ConnectionState.FLUSHING
                return
            if after is AfterFlush.RESUME and connection._park_locked(hold=True):
                return  # a pool thread reads the next request (parking.py)
            if after is AfterFlush.RESUME and connection.is_reading_quietly:
                # Fast path: nothing to parse and the loop is already watching the socket,
                # so there is no need to wake the loop. Deadline first: the loop reads state.
                connection.deadline = loop.now + loop.idle_timeout
                connection.state = ConnectionState.READING
                return
            connection.state = ConnectionState.FLUSHING
        loop.call_soon_threadsafe(
            connection.resume if after is AfterFlush.RESUME else connection.linger
        )
