"""FastCGIConnection: the sans-I/O state of one FastCGI transport connection (Responder role).

Design note.

* Job: turn the records a web server sends (spec §3.3) into events for the one request the
  connection carries at a time: ``CGIRequest`` (at the end of its FCGI_PARAMS stream),
  ``Data`` (each non-empty FCGI_STDIN record), ``EndOfMessage`` (the empty STDIN record),
  ``RequestAborted`` (FCGI_ABORT_REQUEST, spec §5.4) and ``ConnectionClosed``. Unlike HTTP,
  the protocol layer also has things to say by itself: replies to management records
  (FCGI_GET_VALUES -> FCGI_GET_VALUES_RESULT, spec §4.1; other types -> FCGI_UNKNOWN_TYPE,
  spec §4.2) and refusals of requests (FCGI_END_REQUEST with FCGI_CANT_MPX_CONN for a second
  concurrent request id, FCGI_UNKNOWN_ROLE for a role other than Responder, spec §5.5). Like
  h11, ``next_event()`` queues those and ``data_to_send()`` hands them over.
* One request at a time (FCGI_MPXS_CONNS is "0"), as spec §3.3 allows ("an application also
  has the option of accepting only one request at a time"). A request id is active from its
  FCGI_BEGIN_REQUEST until ``end_request()``; records of inactive ids are ignored, except
  FCGI_BEGIN_REQUEST (spec §3.3, "Managing Request IDs"). nginx always uses request id 1.
* Bodies: FCGI_STDIN ends with an empty record, so the body is delimited by the protocol.
  With CONTENT_LENGTH, STDIN must carry exactly that many bytes (spec §6.2: "at most
  CONTENT_LENGTH bytes"; fewer only if the client failed to send them, which is answered as
  a truncated request). Without it (a chunked request body a peer forwards as it comes)
  ``CGIRequest.content_length`` is None and STDIN may carry up to ``max_body_bytes``.
* O(n) in bytes received: one ``bytearray``; an incomplete record costs one 8-byte header
  unpack per ``next_event()`` until its content and padding are all there; then its content
  is copied out once. PARAMS content is kept as received and decoded in one pass at the end
  of the stream, so a name-value pair split across records (spec §3.3: a stream's value "is
  independent of how ... its bytes are divided among the non-empty records") needs nothing
  special.
* Errors: ``ProtocolError`` subclasses; the connection is then dead (every later
  ``next_event()`` raises again), and the caller closes it after sending
  ``error_response()`` (an answer for the active request, if there is one).
* Thread ownership: the loop thread only (feed, next_event, data_to_send, end_request,
  error_response). The ``FastCGIResponseWriter`` from ``response_writer()`` is immutable and
  may be used by the pool thread. Imports only the stdlib, ``errors`` and ``http``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Union

from django_wsgiserve.errors import (
    ContentTooLargeError,
    HeaderFieldsTooLargeError,
    InvalidFastCGIRecordError,
    ProtocolError,
    TruncatedRequestError,
)
from django_wsgiserve.fastcgi.records import (
    HEADER,
    KEEP_CONN,
    VERSION_1,
    ProtocolStatus,
    RecordType,
    Role,
    decode_pairs,
    encode_pairs,
    end_request_record,
    record,
)
from django_wsgiserve.fastcgi.writer import FastCGIResponseWriter
from django_wsgiserve.http.cgi import CGIRequest, add_variable, build_request
from django_wsgiserve.http.events import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    ParserSignal,
)
from django_wsgiserve.http.receive import ReceiveBuffer

__all__ = ["FastCGIConnection", "FastCGIEvent", "RequestAborted"]


@dataclass(frozen=True, slots=True)
class RequestAborted:
    """The web server aborted the active request (FCGI_ABORT_REQUEST, spec §5.4): its client
    went away. No more events come for it; answer with ``end_request()`` as soon as
    possible (spec §5.4: the application "responds as soon as possible with
    {FCGI_END_REQUEST, R, {FCGI_REQUEST_COMPLETE, appStatus}}")."""


# typing.Union rather than "|", as in http.events.
FastCGIEvent = Union[  # noqa: UP007
    CGIRequest, Data, EndOfMessage, RequestAborted, ConnectionClosed
]

_BEGIN_REQUEST_BODY = struct.Struct(">HB5x")  # spec §5.1: role (u16 BE), flags, reserved
# Appendix A: the record types a web server sends ("WS->App") with a request id.
_APPLICATION_TYPES = frozenset(
    (
        RecordType.BEGIN_REQUEST,
        RecordType.ABORT_REQUEST,
        RecordType.PARAMS,
        RecordType.STDIN,
        RecordType.DATA,
    )
)
_END = EndOfMessage()


class _State(enum.Enum):
    IDLE = "idle"  # no active request: FCGI_BEGIN_REQUEST or management records expected
    PARAMS = "params"  # active request, in its FCGI_PARAMS stream
    STDIN = "stdin"  # CGIRequest delivered, in its FCGI_STDIN stream
    RESPONDING = "responding"  # STDIN complete or aborted; waiting for end_request()
    CLOSED = "closed"  # the connection is over; ConnectionClosed forever
    FAILED = "failed"  # a ProtocolError was raised; raise again forever


class FastCGIConnection(ReceiveBuffer):
    """One FastCGI connection, Responder role. See the module docstring.

    Limits (plain ints):

    * ``max_params_bytes``: the FCGI_PARAMS stream -> 431. nginx sends all params in one
      record and refuses more than 65535 bytes ("fastcgi request record is too big"), so the
      default accepts whatever nginx can send.
    * ``max_body_bytes``: CONTENT_LENGTH, or STDIN without it -> 413; the same default as
      ``http.RequestParser``.
    * ``max_conns``, ``max_reqs``: the FCGI_MAX_CONNS and FCGI_MAX_REQS values answered to
      FCGI_GET_VALUES (spec §4.1); the defaults are the MAX_CONNECTIONS and THREADS defaults.
    """

    def __init__(
        self,
        *,
        max_params_bytes: int = 65535,
        max_body_bytes: int = 104857600,
        max_conns: int = 10000,
        max_reqs: int = 8,
    ) -> None:
        self._max_params_bytes = max_params_bytes
        self._max_body_bytes = max_body_bytes
        self._values = {
            b"FCGI_MAX_CONNS": b"%d" % max_conns,
            b"FCGI_MAX_REQS": b"%d" % max_reqs,
            b"FCGI_MPXS_CONNS": b"0",  # one request at a time per connection
        }
        super().__init__()
        self._output = bytearray()
        self._state = _State.IDLE
        self._failure: tuple[type[ProtocolError], str] | None = None
        self._request_id: int | None = None  # the active request id
        self._keep_alive = False  # its FCGI_KEEP_CONN flag
        self._is_aborted = False
        self._params: list[bytes] = []
        self._params_size = 0
        self._expected: int | None = None  # CONTENT_LENGTH of the active request
        self._received = 0  # STDIN bytes of the active request so far

    # -- feeding and output --------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Take the bytes the protocol layer must send by itself (management replies,
        refusals). Each is a whole record; send them before anything queued later."""
        data = bytes(self._output)
        self._output.clear()
        return data

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet turned into events: the buffer and, from
        FCGI_BEGIN_REQUEST to the end of FCGI_PARAMS, the content of the records taken for
        the request so far. A connection with a request partly received is not idle: a
        drain does not close it, and HEADER_TIMEOUT (not the idle timeout) bounds it."""
        if self._state is _State.PARAMS:
            return len(self._buf) + _BEGIN_REQUEST_BODY.size + self._params_size
        return len(self._buf)

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after the active (or last) request: its
        FCGI_KEEP_CONN flag (spec §5.1); if False, close once its END_REQUEST is sent."""
        return self._keep_alive

    # -- events --------------------------------------------------------------------------------

    def next_event(self) -> FastCGIEvent | ParserSignal:
        """Return the next event, or ``NEED_DATA``; raise a ``ProtocolError`` on bad input.
        Call ``data_to_send()`` after it: records may have been queued."""
        if self._state is _State.CLOSED:
            return ConnectionClosed()
        if self._state is _State.FAILED:
            assert self._failure is not None
            error_class, message = self._failure
            raise error_class(f"the connection failed earlier: {message}")
        try:
            while True:
                header = self._next_record()
                if header is None:
                    return self._need_data()
                event = self._dispatch(*header)
                if event is not None:
                    return event
        except ProtocolError as exc:
            self._failure = (type(exc), str(exc))
            self._state = _State.FAILED
            raise

    def _next_record(self) -> tuple[int, int, bytes] | None:
        """Remove one whole record from the buffer: (type, request id, content)."""
        buf = self._buf
        if len(buf) < HEADER.size:
            return None
        version, record_type, request_id, length, padding = HEADER.unpack_from(buf)
        if version != VERSION_1:
            raise InvalidFastCGIRecordError(f"FastCGI version {version}, not 1 (spec §3.3)")
        end = HEADER.size + length
        if len(buf) < end + padding:
            return None
        with memoryview(buf) as view:
            content = bytes(view[HEADER.size : end])
        del buf[: end + padding]
        return record_type, request_id, content

    def _need_data(self) -> ParserSignal | ConnectionClosed:
        if not self._eof:
            return NEED_DATA
        if self._buf:
            raise TruncatedRequestError("the connection closed in the middle of a record")
        if self._state is _State.PARAMS or self._state is _State.STDIN:
            raise TruncatedRequestError("the connection closed in the middle of a request")
        # Between requests, or while the application responds: the web server has gone.
        self._state = _State.CLOSED
        return ConnectionClosed()

    def _dispatch(self, record_type: int, request_id: int, content: bytes) -> FastCGIEvent | None:
        if request_id == 0:
            # Spec §3.3: management records use the null request ID.
            self._management(record_type, content)
            return None
        if record_type not in _APPLICATION_TYPES:
            raise InvalidFastCGIRecordError(
                f"record type {record_type} with a request id is not sent by a web server "
                "(spec appendix A)"
            )
        if record_type == RecordType.BEGIN_REQUEST:
            return self._begin_request(request_id, content)
        if request_id != self._request_id:
            return None  # spec §3.3: records of an inactive request id are ignored
        if record_type == RecordType.PARAMS:
            return self._on_params(content)
        if record_type == RecordType.STDIN:
            return self._on_stdin(content)
        if record_type == RecordType.ABORT_REQUEST:
            return self._on_abort()
        raise InvalidFastCGIRecordError("FCGI_DATA is for the Filter role only (spec §6.4)")

    # -- records -------------------------------------------------------------------------------

    def _management(self, record_type: int, content: bytes) -> None:
        if record_type == RecordType.GET_VALUES:
            # Spec §4.1: answer the names we know, with their values; omit the others. Each
            # once: a query repeating a name thousands of times must not make the reply
            # outgrow one record.
            values = self._values
            names = dict.fromkeys(name for name, _ in decode_pairs(content) if name in values)
            reply = encode_pairs((name, values[name]) for name in names)
            self._output += record(RecordType.GET_VALUES_RESULT, 0, reply)
        else:
            # Spec §4.2: {FCGI_UNKNOWN_TYPE, 0, {T}}, seven reserved bytes.
            self._output += record(
                RecordType.UNKNOWN_TYPE, 0, bytes((record_type, 0, 0, 0, 0, 0, 0, 0))
            )

    def _begin_request(self, request_id: int, content: bytes) -> FastCGIEvent | None:
        if len(content) != _BEGIN_REQUEST_BODY.size:
            raise InvalidFastCGIRecordError("FCGI_BEGIN_REQUEST body is not 8 bytes (spec §5.1)")
        role, flags = _BEGIN_REQUEST_BODY.unpack(content)
        if self._request_id is not None:
            if request_id == self._request_id:
                raise InvalidFastCGIRecordError(f"request id {request_id} is already active")
            # Spec §5.5: FCGI_CANT_MPX_CONN rejects a concurrent request on this connection.
            self._output += end_request_record(request_id, 0, ProtocolStatus.CANT_MPX_CONN)
            return None
        if role != Role.RESPONDER:
            # Spec §5.5: FCGI_UNKNOWN_ROLE; without FCGI_KEEP_CONN we close after answering.
            self._output += end_request_record(request_id, 0, ProtocolStatus.UNKNOWN_ROLE)
            if flags & KEEP_CONN:
                return None
            self._state = _State.CLOSED
            return ConnectionClosed()
        self._request_id = request_id
        self._keep_alive = bool(flags & KEEP_CONN)
        self._is_aborted = False
        self._params = []
        self._params_size = 0
        self._state = _State.PARAMS
        return None

    def _on_params(self, content: bytes) -> CGIRequest | None:
        if self._state is not _State.PARAMS:
            raise InvalidFastCGIRecordError("FCGI_PARAMS after the end of its stream")
        if content:
            self._params_size += len(content)
            if self._params_size > self._max_params_bytes:
                raise HeaderFieldsTooLargeError(
                    f"the FCGI_PARAMS stream exceeds {self._max_params_bytes} bytes"
                )
            self._params.append(content)
            return None
        # The empty record ends the stream (spec §3.3); one record's content is not copied.
        variables: dict[str, str] = {}
        for name, value in decode_pairs(b"".join(self._params)):
            add_variable(variables, name, value)
        self._params = []
        request = build_request(
            variables,
            keep_alive=self._keep_alive,
            max_body_bytes=self._max_body_bytes,
            is_stream_delimited=True,
        )
        self._expected = request.content_length
        self._received = 0
        self._state = _State.STDIN
        return request

    def _on_stdin(self, content: bytes) -> Data | EndOfMessage | None:
        if self._state is not _State.STDIN:
            if self._is_aborted:
                return None  # the rest of an aborted request's body
            if self._state is _State.PARAMS:
                raise InvalidFastCGIRecordError("FCGI_STDIN before the end of FCGI_PARAMS")
            raise InvalidFastCGIRecordError("FCGI_STDIN after the end of its stream")
        expected = self._expected
        if content:
            self._received += len(content)
            if expected is not None and self._received > expected:
                raise InvalidFastCGIRecordError(
                    f"FCGI_STDIN carries more than CONTENT_LENGTH {expected} bytes (spec §6.2)"
                )
            if self._received > self._max_body_bytes:
                raise ContentTooLargeError(
                    f"the request body exceeds the {self._max_body_bytes} byte limit"
                )
            return Data(content)
        if expected is not None and self._received < expected:
            raise TruncatedRequestError(
                f"FCGI_STDIN ended after {self._received} of {expected} bytes (spec §6.2)"
            )
        self._state = _State.RESPONDING
        return _END

    def _on_abort(self) -> RequestAborted | ConnectionClosed | None:
        if self._state is _State.PARAMS:
            # Nothing was delivered yet: the request ends here, answered by us (spec §5.4).
            assert self._request_id is not None
            self._output += FastCGIResponseWriter(request_id=self._request_id).end_request()
            return self._request_ended()
        if self._is_aborted:
            return None
        self._is_aborted = True
        self._state = _State.RESPONDING
        return RequestAborted()

    # -- the response (loop thread) ------------------------------------------------------------

    def response_writer(self) -> FastCGIResponseWriter:
        """The writer for the active request, once its ``CGIRequest`` was delivered."""
        if self._request_id is None or self._state is _State.PARAMS:
            raise RuntimeError("no FastCGI request to respond to")
        return FastCGIResponseWriter(request_id=self._request_id)

    def end_request(self, app_status: int = 0, *, is_closing: bool = False) -> bytes:
        """End the active request: return the empty STDOUT record and FCGI_END_REQUEST
        (FCGI_REQUEST_COMPLETE, ``app_status``) to send after the response. The request id
        becomes inactive (spec §3.3); if ``keep_alive`` is False, close once it is sent.

        ``is_closing``: the application closes the connection after these records although
        the web server asked to keep it (a drain, an error); see ``_closing_notice()``."""
        data = self.response_writer().end_request(app_status=app_status)
        if is_closing:
            data += self._closing_notice()
        if self._state is _State.FAILED:
            self._request_id = None
        else:
            self._request_ended()
        return data

    def _closing_notice(self) -> bytes:
        """What follows FCGI_END_REQUEST, in the same send, when the application closes a
        connection the web server asked to keep (FCGI_KEEP_CONN): an empty
        FCGI_GET_VALUES_RESULT, a well-formed management record (spec §4.1) that tells and
        asks nothing; b"" without FCGI_KEEP_CONN (the web server closes it itself).

        Why: spec §5.1 leaves a FCGI_KEEP_CONN connection to the web server and FastCGI has
        no way to say "this connection ends here". The FIN that follows FCGI_END_REQUEST may
        arrive after the web server has put the connection back in its pool and sent the
        next request on it, which then fails ("upstream prematurely closed"; nginx does not
        retry a POST). Bytes after FCGI_END_REQUEST make the web server drop the connection
        itself: nginx keeps an upstream FastCGI connection only when FCGI_END_REQUEST is the
        last byte it read, and its keep-alive pool closes a connection with unread bytes;
        Apache's mod_proxy_fcgi does not reuse a connection with unread bytes either."""
        if not self._keep_alive:
            return b""
        return record(RecordType.GET_VALUES_RESULT, 0)

    def error_response(
        self, status_code: int, reason: str, extra_headers: tuple[tuple[str, str], ...] = ()
    ) -> bytes:
        """After a ``ProtocolError`` (or for a refusal: 408, 503 with ``extra_headers``
        ``Retry-After``): a short plain-text response and FCGI_END_REQUEST for the
        active request (and the closing notice, see ``_closing_notice()``), or ``b""`` if no
        request was active. The connection must be closed after it. Only valid before the
        application's response head was sent."""
        if self._request_id is None:
            return b""
        writer = FastCGIResponseWriter(request_id=self._request_id)
        self._request_id = None
        if self._state is not _State.FAILED:
            self._state = _State.CLOSED
        return (
            writer.error_response(
                status_code=status_code, reason=reason, extra_headers=extra_headers
            )
            + writer.end_request(app_status=1)
            + self._closing_notice()
        )

    def _request_ended(self) -> ConnectionClosed | None:
        self._request_id = None
        self._is_aborted = False
        self._expected = None
        if self._keep_alive:
            if self._state is not _State.CLOSED:
                self._state = _State.IDLE
            return None
        self._state = _State.CLOSED
        return ConnectionClosed()
