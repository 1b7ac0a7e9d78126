"""Connections of the gateway listeners: uwsgi (nginx ``uwsgi_pass``) and FastCGI (nginx
``fastcgi_pass``, Apache ``mod_proxy_fcgi``).

Design note. Both are ``connection.Connection`` with another parser and another ``process()``:
the states (READING, DISPATCHED, FLUSHING, CLOSING), the output queue, the lingering close, the
deadlines (HEADER_TIMEOUT until the variables are in, BODY_TIMEOUT between body reads,
WRITE_TIMEOUT, the idle timeout and the drain's limit on it) and the hand-off to the
``Dispatcher`` (with its queue limit and 503) are the HTTP connection's own code. What differs:

* Events are ``CGIRequest``, ``Data``, ``EndOfMessage``, ``ConnectionClosed`` (and FastCGI's
  ``RequestAborted``); a ``CGIRequest`` becomes the request view (``gateway.request_view``)
  that the static table, the access log and the dispatcher read, and the request is
  dispatched with a ``gateway.GatewayRequest`` so that its environ comes from the variables.
* uwsgi: one request per connection (uwsgi/__init__.py): after the response, a lingering
  close. The body goes out unframed, so ``wsgi.file_wrapper`` and static files go by
  sendfile, as for HTTP.
* FastCGI: every response byte travels in FCGI_STDOUT records, which ``FastCGIChannel`` (the
  pool thread's sink) makes; a file is therefore read and framed, not sent with sendfile. The
  request ends, in the loop thread, with ``FastCGIConnection.end_request()``; then the
  connection either closes (no FCGI_KEEP_CONN, or the worker drains: FCGI_END_REQUEST is
  then followed by the parser's closing notice, FastCGI's stand-in for ``Connection:
  close``) or waits for the next request, idle exactly like an HTTP keep-alive connection.
  From FCGI_BEGIN_REQUEST to the end of FCGI_PARAMS a connection is not idle (the parser
  counts those records as buffered bytes). Management replies of the
  protocol layer (``data_to_send()``) are queued on the same output, so they are bounded by
  the same backpressure: while output waits, the loop stops reading.
* Errors found by the loop (a ``ProtocolError``, a timeout, a full queue) are answered in the
  protocol's form when the protocol allows it, then the connection closes: uwsgi answers only
  once the whole packet was read (the errors in ``_UWSGI_ANSWERED``; a malformed packet gets
  no answer and nginx says 502), FastCGI answers the active request with a short response
  and FCGI_END_REQUEST.

TLS (CERTFILE) is not spoken on gateway listeners: they are for a web server next to us.
Loop thread, except ``FastCGIChannel`` (pool thread, connection lock). Never imports Django.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any, cast

from .connection import Connection, ConnectionState, Dispatch, ResponseChannel
from .errors import (
    ApplicationError,
    ClientDisconnectedError,
    ContentTooLargeError,
    InvalidCGIVariableError,
    InvalidContentLengthError,
    ProtocolError,
    UnsupportedTransferCodingError,
)
from .fastcgi import FastCGIConnection, RequestAborted
from .gateway import CGIHeadWriter, GatewayRequest, request_view
from .http.cgi import CGIRequest
from .http.events import NEED_DATA, ConnectionClosed, Data, EndOfMessage
from .http.framing import Framing, choose_framing
from .loopsend import RETRY_AFTER_HEADER
from .uwsgi import UwsgiRequestParser, UwsgiResponseWriter

if TYPE_CHECKING:
    import socket

    from .connection import EventLoop
    from .context import StaticResponse, WorkerContext
    from .fastcgi import FastCGIResponseWriter
    from .gateway import HeadWriter
    from .http.events import Request
    from .wsgi import EnvironTemplate

__all__ = ["FastCGIChannel", "FastCGIPeerConnection", "GatewayConnection", "UwsgiConnection"]

logger = logging.getLogger(__name__)

# uwsgi: the errors found once the packet was read whole may be answered (uwsgi/__init__.py).
_UWSGI_ANSWERED = (
    ContentTooLargeError,
    InvalidCGIVariableError,
    UnsupportedTransferCodingError,
    InvalidContentLengthError,
)
# A static file over FastCGI is read and framed in a pool thread, this much at a time.
_FILE_READ_BYTES = 256 << 10
_UWSGI_WRITER = UwsgiResponseWriter()
_CGI_WRITER = CGIHeadWriter()


class GatewayConnection(Connection):
    """What the uwsgi and FastCGI connections share; see the module notes (loop thread)."""

    __slots__ = ("_static_request", "_variables")

    head_writer: HeadWriter

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, str],
        *,
        loop: EventLoop,
        context: WorkerContext,
        dispatcher: Dispatch,
        template: EnvironTemplate,
        parser: Any,
    ) -> None:
        super().__init__(
            sock,
            peer,
            loop=loop,
            context=context,
            dispatcher=dispatcher,
            template=template,
            parser=parser,
        )
        self._variables: CGIRequest | None = None
        self._static_request: Request | None = None

    # -- the protocol's hooks --------------------------------------------------------------

    def _next_event(self) -> object:
        raise NotImplementedError

    def _error_bytes(
        self, status_code: int, reason: str, extra_headers: tuple[tuple[str, str], ...] = ()
    ) -> bytes:
        """The protocol's answer to an error the loop found, or b"" when none is possible."""
        raise NotImplementedError

    def _send_static(self, request: Request, response: StaticResponse) -> bool:
        raise NotImplementedError

    def _on_aborted(self) -> bool:
        """The peer aborted the request being read; True: go on parsing."""
        raise NotImplementedError

    def _before_dispatch(self) -> None:
        """Prepare the sink for the request about to be dispatched."""

    # -- reading -----------------------------------------------------------------------------

    def process(self) -> None:
        """Turn buffered bytes into a dispatched request, as far as they go (loop thread)."""
        while self.state is ConnectionState.READING:
            try:
                event = self._next_event()
            except ProtocolError as exc:
                logger.debug(
                    "Bad gateway request from %s: %s (%d)", self.peer[0], exc, exc.status_code
                )
                self._refuse(exc)
                return
            if event is NEED_DATA:
                self._need_data()
                return
            event_type = type(event)
            if event_type is CGIRequest:
                variables = cast("CGIRequest", event)
                self._variables = variables
                self._request = request_view(variables)
            elif event_type is Data:
                self._body.add(cast("Data", event).data)
            elif event_type is EndOfMessage:
                if not self._dispatch():
                    return
            elif event_type is ConnectionClosed:
                self.after_response(keep_alive=False)  # flushes a refusal first, if any
                return
            elif event_type is RequestAborted and not self._on_aborted():
                return

    def _refuse(self, exc: ProtocolError) -> None:
        self._send_error(exc.status_code, exc.reason)

    def _send_error(
        self, status_code: int, reason: str, extra_headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """Answer an error if the protocol allows it, then close (loop thread)."""
        if self.context.metrics is not None:
            self.context.metrics.count_error(status_code)
        data = self._error_bytes(status_code, reason, extra_headers)
        if data:
            self.send_from_loop(data)
        self.after_response(keep_alive=False)

    def send_timeout_response(self) -> None:
        """408 for a peer that did not send its request in time (loop thread)."""
        logger.debug("Request timeout from %s", self.peer[0])
        self._send_error(408, "Request Timeout")

    def send_overloaded_response(self) -> None:
        """503 for a request that found the request queue full (loop thread)."""
        logger.debug("Request queue full: 503 for %s", self.peer[0])
        self._send_error(503, "Service Unavailable", RETRY_AFTER_HEADER)

    def _dispatch(self) -> bool:
        """Answer a static file here or hand the request to the pool; True: go on parsing."""
        request, variables = self._request, self._variables
        assert request is not None
        assert variables is not None
        self._request = None
        body, body_size = self._body.take()
        static = self.context.static
        if static is not None and request.path.startswith(static.prefixes):
            response = static.respond(request)
            if response is not None:
                body.close()
                return self._send_static(request, response)
        self.state = ConnectionState.DISPATCHED
        self.deadline = None
        self._before_dispatch()
        self._dispatcher.dispatch(
            self,
            request,
            body,
            body_size,
            self._loop.now,
            GatewayRequest(variables=variables, head_writer=self.head_writer),
        )
        return False

    # -- static files ------------------------------------------------------------------------

    def _static_head(self, request: Request, response: StaticResponse) -> tuple[bytes, int] | None:
        """The protocol's head of a static response and the file bytes to send after it; None
        after answering 500 (an invalid header from WHITENOISE_ADD_HEADERS_FUNCTION)."""
        framing, _ = choose_framing(
            method=request.method,
            http_version=b"1.0",
            status_code=response.status_code,
            content_length=response.content_length,
            keep_alive=False,
        )
        try:
            head = self.head_writer.head(status=response.status, headers=response.headers)
        except ApplicationError:
            logger.exception("Invalid static response head for %r", request.target)
            self._send_error(500, "Internal Server Error")
            return None
        return head, response.count if framing is Framing.CONTENT_LENGTH else 0

    def _log_static(
        self, request: Request, response: StaticResponse, count: int, started: float
    ) -> None:
        context = self.context
        context.stats.count_request()
        context.stats.static_responses += 1
        self.requests_served += 1
        if context.access_log is not None:
            context.access_log.log_request(
                request,
                peer=self._client_address(),
                status_code=response.status_code,
                bytes_sent=count,
                request_time_s=time.monotonic() - started,
            )

    def _client_address(self) -> str:
        """REMOTE_ADDR as the application sees it (the peer's word if it is trusted)."""
        peer = self.peer[0]
        variables = self._variables
        if variables is not None and self.context.proxies.is_trusted(peer):
            return variables.variables.get("REMOTE_ADDR", peer)
        return peer


class UwsgiConnection(GatewayConnection):
    """A connection from nginx's ``uwsgi_pass``: one request, then a lingering close."""

    __slots__ = ("_uwsgi",)

    head_writer = _UWSGI_WRITER

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, str],
        *,
        loop: EventLoop,
        context: WorkerContext,
        dispatcher: Dispatch,
        template: EnvironTemplate,
    ) -> None:
        self._uwsgi = UwsgiRequestParser(max_body_bytes=context.limits.max_body_bytes)
        super().__init__(
            sock,
            peer,
            loop=loop,
            context=context,
            dispatcher=dispatcher,
            template=template,
            parser=self._uwsgi,
        )

    def _next_event(self) -> object:
        return self._uwsgi.next_event()

    def _error_bytes(
        self, status_code: int, reason: str, extra_headers: tuple[tuple[str, str], ...] = ()
    ) -> bytes:
        if self._variables is None:
            return b""  # no complete packet: nothing nginx could relay; it answers 502
        return _UWSGI_WRITER.error_response(
            status_code=status_code, reason=reason, extra_headers=extra_headers
        )

    def _refuse(self, exc: ProtocolError) -> None:
        if isinstance(exc, _UWSGI_ANSWERED):
            # The packet was read whole: nginx relays our 4xx to its client. A malformed
            # packet gets no answer (nginx answers 502).
            self.send_from_loop(
                _UWSGI_WRITER.error_response(status_code=exc.status_code, reason=exc.reason)
            )
        self.after_response(keep_alive=False)

    def _on_aborted(self) -> bool:
        return False  # uwsgi has no abort

    def _send_static(self, request: Request, response: StaticResponse) -> bool:
        self._static_request = request
        started = time.monotonic()
        try:
            prepared = self._static_head(request, response)
            if prepared is None:
                return False
            head, count = prepared
            with self.lock:
                if response.body is not None and count:
                    self.outbox.send([head + response.body])
                else:
                    self.outbox.send_head_and_file(head, response.fd, response.offset, count)
        except ClientDisconnectedError:
            self.close()
            return False
        finally:
            if response.file is not None:
                response.file.close()
        self._log_static(request, response, count, started)
        return self.after_response(keep_alive=False)


class FastCGIChannel(ResponseChannel):
    """The sink of a FastCGI request (pool thread): every byte sent becomes FCGI_STDOUT
    records of the active request; the end of the request is the loop's
    (``FastCGIPeerConnection.end_request``)."""

    __slots__ = ("writer",)

    def __init__(self, connection: FastCGIPeerConnection, loop: EventLoop) -> None:
        super().__init__(connection, loop)
        # A file cannot be sent raw: it must be cut into records (read + records).
        self.can_sendfile = False
        self.writer: FastCGIResponseWriter | None = None  # set by the loop before dispatch

    def send(self, parts: list[bytes]) -> None:
        """Send ``parts`` as STDOUT records; raises ClientDisconnectedError (pool thread)."""
        writer = self.writer
        assert writer is not None
        framed: list[bytes | memoryview] = []
        for part in parts:
            framed += writer.body(part)
        if framed:
            # memoryviews are fine for the output queue (sendmsg and memoryview slices).
            super().send(cast("list[bytes]", framed))

    def finish(self, *, keep_alive: bool) -> None:
        """The response is complete (pool thread): the loop ends the request."""
        connection = cast("FastCGIPeerConnection", self._connection)
        loop = self._loop
        with connection.lock:
            connection.requests_served += 1
            if connection.has_error or connection.state is ConnectionState.CLOSED:
                loop.call_soon_threadsafe(connection.close)
                return
            connection.state = ConnectionState.FLUSHING
        loop.call_soon_threadsafe(lambda: connection.end_request(keep_alive=keep_alive))


class FastCGIPeerConnection(GatewayConnection):
    """A FastCGI connection from a web server (Responder role); see the module notes."""

    __slots__ = ("_fastcgi",)

    head_writer = _CGI_WRITER

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, str],
        *,
        loop: EventLoop,
        context: WorkerContext,
        dispatcher: Dispatch,
        template: EnvironTemplate,
        max_conns: int,
        max_reqs: int,
    ) -> None:
        self._fastcgi = FastCGIConnection(
            max_body_bytes=context.limits.max_body_bytes, max_conns=max_conns, max_reqs=max_reqs
        )
        super().__init__(
            sock,
            peer,
            loop=loop,
            context=context,
            dispatcher=dispatcher,
            template=template,
            parser=self._fastcgi,
        )
        self.sink = FastCGIChannel(self, loop)

    def _next_event(self) -> object:
        fastcgi = self._fastcgi
        try:
            event: object = fastcgi.next_event()
        finally:
            replies = fastcgi.data_to_send()
            if replies:
                self.send_from_loop(replies)
        return event

    def _need_data(self) -> None:
        if self.outbox and self._request is None:
            # Management replies the peer has not read yet: parse nothing more until they
            # are flushed (FLUSHING reads at most PIPELINE_READ_LIMIT bytes ahead), so that a
            # peer that only sends FCGI_GET_VALUES cannot grow our output without bound.
            self.after_response(keep_alive=True)
            return
        super()._need_data()

    def _error_bytes(
        self, status_code: int, reason: str, extra_headers: tuple[tuple[str, str], ...] = ()
    ) -> bytes:
        return self._fastcgi.error_response(status_code, reason, extra_headers)

    def _on_aborted(self) -> bool:
        # Spec §5.4: the request ends at once; its body so far is dropped.
        self._request = None
        self._variables = None
        self._body.take()[0].close()
        return self._end(keep_alive=True)

    def _before_dispatch(self) -> None:
        cast("FastCGIChannel", self.sink).writer = self._fastcgi.response_writer()

    def end_request(self, *, keep_alive: bool) -> None:
        """The application's response is queued: end the request, then read on or close
        (loop thread)."""
        if self.state is ConnectionState.CLOSED:
            return
        with self.lock:
            self.state = ConnectionState.READING
        if self._end(keep_alive=keep_alive):
            self.process()

    def _end(self, *, keep_alive: bool) -> bool:
        """Send FCGI_END_REQUEST; True when the next request may be parsed at once."""
        fastcgi = self._fastcgi
        keep_alive = keep_alive and fastcgi.keep_alive and not self._loop.is_draining
        self.send_from_loop(fastcgi.end_request(is_closing=not keep_alive))
        return self.after_response(keep_alive=keep_alive)

    def _send_static(self, request: Request, response: StaticResponse) -> bool:
        self._static_request = request
        started = time.monotonic()
        prepared = self._static_head(request, response)
        if prepared is None:
            if response.file is not None:
                response.file.close()
            return False
        head, count = prepared
        writer = self._fastcgi.response_writer()
        if response.body is not None or not count:
            data = head + response.body if response.body is not None and count else head
            if response.file is not None:
                response.file.close()
            self.send_from_loop(b"".join(writer.body(data)))
            self._log_static(request, response, count, started)
            return self._end(keep_alive=True)
        # A file too large to keep in memory: read and framed in a pool thread.
        self.state = ConnectionState.DISPATCHED
        self.deadline = None
        channel = cast("FastCGIChannel", self.sink)
        channel.writer = writer
        self._dispatcher.run_in_pool(
            lambda: self._send_file_in_pool(head, response, count, started)
        )
        return False

    def _send_file_in_pool(
        self, head: bytes, response: StaticResponse, count: int, started: float
    ) -> None:
        """Send a static file as STDOUT records (pool thread)."""
        channel = self.sink
        sent = 0
        keep_alive = True
        try:
            channel.send([head])
            offset = response.offset
            while sent < count:
                data = os.pread(response.fd, min(_FILE_READ_BYTES, count - sent), offset + sent)
                if not data:
                    keep_alive = False  # the file shrank: the response is short
                    break
                channel.send([data])
                sent += len(data)
        except ClientDisconnectedError:
            keep_alive = False
        except OSError as exc:
            logger.warning("Static file read failed: %s", exc)
            keep_alive = False
        finally:
            if response.file is not None:
                with contextlib.suppress(OSError):
                    response.file.close()
        request = self._static_request
        assert request is not None
        self._log_static(request, response, sent, started)
        channel.finish(keep_alive=keep_alive)
