"""RequestParser: a sans-I/O, strict HTTP/1.1 request parser (RFC 9112, RFC 9110).

Design note.

* Job: turn the bytes received on one connection into events (``Request``, ``Data``,
  ``EndOfMessage``, ``ConnectionClosed``), request after request (keep-alive, pipelining). The
  caller pulls events with ``next_event()``; bytes of pipelined requests wait in the buffer
  until it does.
* Thread ownership: one parser belongs to one connection and is used by one thread at a time.
  It imports only the stdlib and ``django_wsgiserve.errors``: no sockets, no logging, no Django.
* O(n) in bytes received: the buffer is one ``bytearray``; consumed bytes are deleted from its
  front (CPython advances the start pointer instead of moving the rest). While a head or a chunk
  line is incomplete, every search resumes where the previous one stopped (minus the 3 bytes a
  split ``\\r\\n\\r\\n`` may straddle), so no byte is scanned more than a constant number of times.
  Searches are bounded by the limits, so junk past a limit is never scanned.
* Fast path: a head that is complete in the buffer costs one ``find`` for the blank line, one
  compiled-regex match for the request line, one ``split`` and one ``translate`` over the
  field block, and a ``partition`` per field line (see ``_parse_head``); about 8 us for a
  10-field browser GET on CPython 3.11. Everything is compiled at import. A head is parsed
  anew even when it repeats the previous one byte for byte: only a benchmark's client
  repeats itself that way, and what a server's benchmark measures must be what its users
  get.
* Errors are raised as the ``ProtocolError`` subclass that carries the status code to answer.
  Which error a bad head gets does not depend on how its bytes were split into ``feed()``
  calls: whenever the fast path or the incremental checks find something wrong, the slow
  ``_diagnose_*`` functions walk the head line by line and raise the error that is detectable
  at the earliest byte (a limit exceeded, a bare CR or LF, a malformed line), which is a pure
  function of the bytes. After an error the parser is dead: every later call raises again.
* Length: the fast path and the slow diagnosing path are kept in one module on purpose, so
  that a change to one is seen next to the other; that is why it is over 500 lines.
"""

from __future__ import annotations

import enum
from dataclasses import fields
from typing import NoReturn

from django_wsgiserve.errors import (
    BadRequestError,
    ContentTooLargeError,
    ExpectationFailedError,
    HeaderFieldsTooLargeError,
    InvalidChunkError,
    InvalidContentLengthError,
    InvalidHeaderError,
    InvalidRequestLineError,
    InvalidTargetError,
    MissingHostError,
    ProtocolError,
    TruncatedRequestError,
    UnsupportedTransferCodingError,
    URITooLongError,
    VersionNotSupportedError,
)
from django_wsgiserve.http import grammar
from django_wsgiserve.http.events import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    ParserSignal,
    Request,
)
from django_wsgiserve.http.receive import ReceiveBuffer

__all__ = ["RequestParser"]

# RFC 9112 §2.2 asks servers to ignore "at least one" empty line before a request line (some
# clients send a CRLF after a POST body). More than this many is not a client quirk.
_MAX_LEADING_EMPTY_LINES = 8
# A chunk size line (size + extensions) longer than this is rejected; extensions are unused
# here, and nginx and h11 cap such lines at a few KiB too.
_MAX_CHUNK_LINE = 4096
# RFC 9110 §8.6 allows any number of digits; 18 keep the value below 2**63 everywhere.
_MAX_CONTENT_LENGTH_DIGITS = 18

_CR = 0x0D
_LF = 0x0A
_SLASH = 0x2F
_CRLF = b"\r\n"
_BLANK_LINE = b"\r\n\r\n"
_END = EndOfMessage()

_REQUEST_LINE_MATCH = grammar.REQUEST_LINE_11_RE.fullmatch
_FIELD_LINE_MATCH = grammar.FIELD_LINE_RE.fullmatch
_TOKEN_MATCH = grammar.TOKEN_RE.fullmatch
# Every byte but the CTLs (%x00-1F, %x7F), HTAB excepted: what a field value may hold.
_FIELD_BYTES = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + b"\t"
# Header names most requests use, as clients spell them: a dict hit skips the token regex and
# the lower() call. Any other name takes the general path.
_KNOWN_NAMES = {
    spelling: name.lower().encode()
    for name in [
        "Host",
        "User-Agent",
        "Accept",
        "Accept-Language",
        "Accept-Encoding",
        "Connection",
        "Content-Length",
        "Content-Type",
        "Cookie",
        "Referer",
        "Origin",
        "Cache-Control",
        "Pragma",
        "Upgrade-Insecure-Requests",
        "Authorization",
        "If-None-Match",
        "If-Modified-Since",
        "Transfer-Encoding",
        "Expect",
        "Range",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "X-Real-IP",
        "X-Requested-With",
        "DNT",
        "TE",
        "Priority",
        "Sec-Fetch-Dest",
        "Sec-Fetch-Mode",
        "Sec-Fetch-Site",
        "Sec-Fetch-User",
        "Sec-CH-UA",
        "Sec-CH-UA-Mobile",
        "Sec-CH-UA-Platform",
        "X-CSRFToken",
    ]
    for spelling in (name.encode(), name.lower().encode())
}
_CHUNK_LINE_MATCH = grammar.CHUNK_LINE_RE.fullmatch
_BARE_SEARCH = grammar.BARE_CR_OR_LF_RE.search
# RFC 9110 §5.3: only a field defined as a comma-separated list may be sent in several field
# lines. These singleton fields have one value whose meaning a combined "a, b" would garble, and
# an intermediary that kept the first line while the application got the last would disagree
# with it about the request: more than one line of any of them is a 400 (like Host, RFC 9112
# §3.2; Content-Length has its own rule). Content-Type: RFC 9110 §8.3; Authorization and
# Proxy-Authorization: §11.6.2, §11.7.2; Range: §14.2; If-Range: §13.1.5; If-Modified-Since and
# If-Unmodified-Since: §13.1.3, §13.1.4.
_SINGLETON_FIELDS = frozenset(
    (
        b"content-type",
        b"authorization",
        b"proxy-authorization",
        b"range",
        b"if-range",
        b"if-modified-since",
        b"if-unmodified-since",
    )
)
# The header fields the parser itself looks at; all others only pass through.
_INTERPRETED_FIELDS = (
    frozenset((b"host", b"content-length", b"transfer-encoding", b"connection", b"expect"))
    | _SINGLETON_FIELDS
)
# Header sections whose interpreted fields are Host alone, or Host and Connection (most
# requests): nothing but keep-alive to work out (see _interpret_head).
_HOST_ONLY = frozenset((b"host",))
_HOST_AND_CONNECTION = frozenset((b"host", b"connection"))

# Request(...) is a frozen dataclass: its __init__ calls object.__setattr__ once per field,
# ~2 us for the eleven. The parser sets the slots through their descriptors instead, ~0.9 us
# for the same object (tests/http/test_parser.py compares the two). The field order is
# checked here, so a field added to Request cannot be forgotten.
_REQUEST_FIELDS = (
    "method",
    "target",
    "path",
    "query",
    "http_version",
    "headers",
    "content_length",
    "is_chunked",
    "keep_alive",
    "expect_continue",
    "host",
)
if tuple(field.name for field in fields(Request)) != _REQUEST_FIELDS:
    raise AssertionError("events.Request changed: update parser._REQUEST_FIELDS and _request")
(
    _SET_METHOD,
    _SET_TARGET,
    _SET_PATH,
    _SET_QUERY,
    _SET_VERSION,
    _SET_HEADERS,
    _SET_CONTENT_LENGTH,
    _SET_IS_CHUNKED,
    _SET_KEEP_ALIVE,
    _SET_EXPECT_CONTINUE,
    _SET_HOST,
) = (Request.__dict__[name].__set__ for name in _REQUEST_FIELDS)
_new_object = object.__new__


def _request(
    method: bytes,
    target: bytes,
    path: bytes,
    query: bytes,
    http_version: bytes,
    headers: tuple[tuple[bytes, bytes], ...],
    content_length: int | None,
    is_chunked: bool,
    keep_alive: bool,
    expect_continue: bool,
    host: bytes,
) -> Request:
    """``Request(method=method, ...)``, made faster (see above)."""
    request: Request = _new_object(Request)
    _SET_METHOD(request, method)
    _SET_TARGET(request, target)
    _SET_PATH(request, path)
    _SET_QUERY(request, query)
    _SET_VERSION(request, http_version)
    _SET_HEADERS(request, headers)
    _SET_CONTENT_LENGTH(request, content_length)
    _SET_IS_CHUNKED(request, is_chunked)
    _SET_KEEP_ALIVE(request, keep_alive)
    _SET_EXPECT_CONTINUE(request, expect_continue)
    _SET_HOST(request, host)
    return request


class _State(enum.Enum):
    HEAD = "head"  # waiting for (or in) a request head
    BODY = "body"  # Content-Length body, self._remaining bytes to go
    CHUNK_SIZE = "chunk-size"  # expecting a chunk size line
    CHUNK_DATA = "chunk-data"  # inside chunk data, self._remaining bytes to go
    CHUNK_END = "chunk-end"  # expecting the CRLF that ends chunk data
    TRAILERS = "trailers"  # after the last chunk: trailer section
    DONE = "done"  # the message is complete; EndOfMessage is due
    CLOSED = "closed"  # EOF between requests; ConnectionClosed forever
    FAILED = "failed"  # a ProtocolError was raised; raise again forever


class RequestParser(ReceiveBuffer):
    """Parse a stream of HTTP/1.0 and HTTP/1.1 requests. See the module docstring.

    Limits (all plain ints; defaults cite precedent):

    * ``max_request_line``: bytes in the request line, without CRLF (Apache's LimitRequestLine
      is 8190) -> 414.
    * ``max_headers``: field lines in the header section, and in a trailer section -> 431.
    * ``max_header_bytes``: bytes after the request line up to and including the blank line
      that ends the header section (nginx 8-32 KiB, node 16 KiB); same for trailers -> 431.
    * ``max_body_bytes``: Content-Length, or the running total of chunk sizes -> 413.
    """

    def __init__(
        self,
        *,
        max_request_line: int = 8190,
        max_headers: int = 100,
        max_header_bytes: int = 32768,
        max_body_bytes: int = 104857600,
    ) -> None:
        self._max_request_line = max_request_line
        self._max_headers = max_headers
        self._max_header_bytes = max_header_bytes
        self._max_body_bytes = max_body_bytes
        # A valid head ends within this many bytes: request line, CRLF, header section.
        self._head_limit = max_request_line + 2 + max_header_bytes
        super().__init__()
        self._state = _State.HEAD
        self._failure: tuple[type[ProtocolError], str] | None = None
        self._empty_lines = 0  # empty lines skipped before the current request line
        self._scan = 0  # where the next search for the blank line (or chunk CRLF) starts
        self._line_scan = 0  # where the next search for a bare CR/LF or the first CRLF starts
        self._line_end = -1  # end of the request line in the buffer, once known
        self._remaining = 0  # body or chunk-data bytes still expected
        self._body_total = 0  # sum of chunk sizes so far
        self._valid_host: bytes | None = None  # the last Host that passed validation

    # -- events --------------------------------------------------------------------------------

    def next_event(self) -> Event | ParserSignal:
        """Return the next event, or ``NEED_DATA``; raise a ``ProtocolError`` on bad input."""
        state = self._state
        try:
            if state is _State.HEAD:
                return self._next_head()
            if state is _State.DONE:
                self._state = _State.HEAD
                return _END
            if state is _State.BODY:
                return self._next_body()
            if state is _State.CLOSED:
                return ConnectionClosed()
            if state is _State.FAILED:
                assert self._failure is not None
                error_class, message = self._failure
                raise error_class(f"the parser failed earlier: {message}")
            return self._next_chunked()
        except ProtocolError as exc:
            if self._failure is None:
                self._failure = (type(exc), str(exc))
            self._state = _State.FAILED
            raise

    # -- request head --------------------------------------------------------------------------

    def _next_head(self) -> Event | ParserSignal:
        buf = self._buf
        if buf.startswith(_CRLF):
            self._skip_empty_lines()
        if not buf:
            if self._eof:
                self._state = _State.CLOSED
                return ConnectionClosed()
            return NEED_DATA
        end = buf.find(_BLANK_LINE, self._scan, self._head_limit)
        if end < 0:
            return self._partial_head()
        head = bytes(buf[:end])
        del buf[: end + 4]
        self._empty_lines = 0
        self._scan = self._line_scan = 0
        self._line_end = -1
        return self._parse_head(head)

    def _skip_empty_lines(self) -> None:
        # RFC 9112 §2.2: ignore empty lines received before the request line.
        buf = self._buf
        while buf.startswith(_CRLF):
            self._empty_lines += 1
            if self._empty_lines > _MAX_LEADING_EMPTY_LINES:
                raise InvalidRequestLineError("too many empty lines before the request line")
            del buf[:2]
        self._scan = self._line_scan = 0

    def _partial_head(self) -> ParserSignal:
        """The blank line has not arrived: check what can be checked, without rescanning."""
        buf = self._buf
        n = len(buf)
        limit = self._head_limit + 1
        if _BARE_SEARCH(buf, self._line_scan, limit) is not None:
            self._fail_head(bytes(buf[:limit]))
        if self._line_end < 0:
            line_end = buf.find(_CRLF, self._line_scan, self._max_request_line + 2)
            if line_end >= 0:
                self._line_end = line_end
            elif n > self._max_request_line:
                # Raises 414 unless the line may still end in a CRLF right at the limit.
                self._diagnose_head(bytes(buf[: self._max_request_line + 2]))
        if self._line_end >= 0 and n - self._line_end - 2 > self._max_header_bytes:
            self._fail_head(bytes(buf[:limit]))
        self._line_scan = n - 1
        self._scan = max(0, n - 3)
        if self._eof:
            self._diagnose_head(bytes(buf))
            raise TruncatedRequestError("the connection closed in the middle of a request head")
        return NEED_DATA

    def _parse_head(self, head: bytes) -> Request:
        """Parse a complete head (without its final CRLF CRLF). The fast path.

        Field lines are checked without a regex per line: one ``translate`` over the whole
        field block proves that its only control characters are the CRLF line ends (which
        makes every value byte valid, RFC 9110 §5.5), then each line is partitioned at its
        colon, and only names not in ``_KNOWN_NAMES`` go through the token regex. Measured
        at ~2.5x faster than one FIELD_LINE match per line for a browser-like head.
        """
        line_end = head.find(_CRLF)
        if line_end < 0:
            line_end = len(head)
        if (
            line_end > self._max_request_line
            or len(head) - line_end + 2 > self._max_header_bytes
            or head.count(_CRLF) > self._max_headers
        ):
            self._fail_head(head + _BLANK_LINE)
        match = _REQUEST_LINE_MATCH(head, 0, line_end)
        if match is None:
            self._fail_head(head + _BLANK_LINE)
        method, target, minor = match.groups()
        path, query, authority = _split_target(method, target)
        block = head[line_end + 2 :]
        headers: list[tuple[bytes, bytes]] = []
        framing: dict[bytes, list[bytes]] = {}  # the interpreted fields, usually just Host
        if block:
            lines = block.split(_CRLF)
            # RFC 9112 §2.2, RFC 9110 §5.5: no CTL but HTAB, and no CR or LF outside CRLF.
            if len(block.translate(None, _FIELD_BYTES)) != 2 * len(lines) - 2:
                self._fail_head(head + _BLANK_LINE)
            known_name = _KNOWN_NAMES.get
            interpreted = _INTERPRETED_FIELDS
            append = headers.append
            for line in lines:
                name, colon, value = line.partition(b":")
                lowered = known_name(name)
                if lowered is None:
                    # RFC 9112 §5.1: field-name = token, no whitespace before the colon,
                    # which also rules out obs-fold (RFC 9112 §5.2).
                    if not colon or _TOKEN_MATCH(name) is None:
                        self._fail_head(head + _BLANK_LINE)
                    lowered = name.lower()
                elif not colon:
                    self._fail_head(head + _BLANK_LINE)
                value = value.strip(b" \t")  # RFC 9112 §5: OWS is not part of the value
                append((lowered, value))
                if lowered in interpreted:
                    values = framing.get(lowered)
                    if values is None:
                        framing[lowered] = [value]
                    else:
                        values.append(value)
        # RFC 9110 §2.5: a higher minor version (HTTP/1.2) is processed as 1.1, the highest
        # minor version of HTTP/1 we conform to.
        return self._interpret_head(
            method, target, path, query, authority, minor != b"0", tuple(headers), framing
        )

    def _interpret_head(
        self,
        method: bytes,
        target: bytes,
        path: bytes,
        query: bytes,
        authority: bytes,
        is_11: bool,
        headers: tuple[tuple[bytes, bytes], ...],
        framing: dict[bytes, list[bytes]],
    ) -> Request:
        """Apply the header semantics the parser owns (Host, singleton fields, body framing,
        Expect, Connection) and set up the body state. The head is syntactically valid when
        this runs, so the order of these checks is the order of the errors, whatever the read
        sizes."""
        hosts = framing.get(b"host")
        if hosts is not None and len(hosts) == 1 and hosts[0] == self._valid_host:
            host = hosts[0]  # the same Host as the previous request on this connection
        else:
            host = _host(hosts or [], is_11) if hosts or is_11 else b""
            if host:
                self._valid_host = host
        if authority:
            # RFC 9112 §3.2.2: the authority of an absolute-form target replaces Host.
            host = authority
        content_length, is_chunked, expect_continue = None, False, False
        names = framing.keys()
        if names == _HOST_ONLY:
            keep_alive = is_11
        elif names == _HOST_AND_CONNECTION:
            # What _message_fields gives for these two: Connection decides, nothing else.
            keep_alive = _keep_alive(framing[b"connection"], is_11)
        else:
            content_length, is_chunked, expect_continue, keep_alive = _message_fields(
                framing, is_11, self._max_body_bytes
            )
        self._start_body(content_length, is_chunked)
        return _request(
            method,
            target,
            path,
            query,
            b"1.1" if is_11 else b"1.0",
            headers,
            content_length,
            is_chunked,
            keep_alive,
            expect_continue,
            host,
        )

    def _start_body(self, content_length: int | None, is_chunked: bool) -> None:
        """Set up the state for the body a head announced (none, Content-Length, chunked)."""
        if is_chunked:
            self._state = _State.CHUNK_SIZE
            self._body_total = 0
        elif content_length:
            self._state = _State.BODY
            self._remaining = content_length
        else:
            self._state = _State.DONE

    # -- slow path: find the earliest error in a head ------------------------------------------

    def _fail_head(self, data: bytes) -> NoReturn:
        self._diagnose_head(data)
        # Unreachable if the fast path and the slow path agree on the grammar.
        raise BadRequestError("malformed request head")

    def _diagnose_head(self, data: bytes) -> None:
        _diagnose_head(data, self._max_request_line, self._max_header_bytes, self._max_headers)

    # -- Content-Length body -------------------------------------------------------------------

    def _next_body(self) -> Event | ParserSignal:
        if not self._buf:
            return self._need_body_data()
        data = self._take(self._remaining)
        self._remaining -= len(data)
        if not self._remaining:
            self._state = _State.DONE
        return Data(data)

    def _take(self, size: int) -> bytes:
        """Remove and return up to ``size`` bytes from the front of the buffer."""
        buf = self._buf
        if size >= len(buf):
            data = bytes(buf)
            buf.clear()
            return data
        with memoryview(buf) as view:
            data = bytes(view[:size])
        del buf[:size]
        return data

    def _need_body_data(self) -> ParserSignal:
        if self._eof:
            raise TruncatedRequestError("the connection closed in the middle of a request body")
        return NEED_DATA

    # -- chunked body (RFC 9112 §7.1) ----------------------------------------------------------

    def _next_chunked(self) -> Event | ParserSignal:
        buf = self._buf
        while True:
            state = self._state
            if state is _State.CHUNK_DATA:
                if not buf:
                    return self._need_body_data()
                data = self._take(self._remaining)
                self._remaining -= len(data)
                if not self._remaining:
                    self._state = _State.CHUNK_END
                return Data(data)
            if state is _State.CHUNK_SIZE:
                if not self._read_chunk_line():
                    return self._need_body_data()
            elif state is _State.CHUNK_END:
                # RFC 9112 §7.1: chunk-data is followed by exactly CRLF.
                if buf[:2] == _CRLF:
                    del buf[:2]
                    self._state = _State.CHUNK_SIZE
                elif len(buf) >= 2 or (buf and buf[0] != _CR):
                    raise InvalidChunkError("chunk data is not followed by CRLF")
                else:
                    return self._need_body_data()
            else:
                return self._next_trailers()

    def _read_chunk_line(self) -> bool:
        """Consume a chunk size line if complete; return False if more bytes are needed."""
        buf = self._buf
        end = buf.find(_CRLF, self._scan, _MAX_CHUNK_LINE + 2)
        if end < 0:
            if len(buf) >= _MAX_CHUNK_LINE + 2:
                raise InvalidChunkError(f"chunk size line longer than {_MAX_CHUNK_LINE} bytes")
            if _BARE_SEARCH(buf, self._scan) is not None:
                raise InvalidChunkError("bare CR or LF in a chunk size line (RFC 9112 §2.2)")
            self._scan = max(0, len(buf) - 1)
            return False
        match = _CHUNK_LINE_MATCH(buf, 0, end)
        if match is None:
            raise InvalidChunkError("malformed chunk size line (RFC 9112 §7.1)")
        size = int(match[1], 16)
        del buf[: end + 2]
        self._scan = 0
        self._body_total += size
        if self._body_total > self._max_body_bytes:
            raise ContentTooLargeError(
                f"the chunked body exceeds the {self._max_body_bytes} byte limit"
            )
        if size:
            self._state = _State.CHUNK_DATA
            self._remaining = size
        else:
            self._state = _State.TRAILERS
            self._line_scan = 0
        return True

    def _next_trailers(self) -> Event | ParserSignal:
        """The trailer section after the last chunk (RFC 9112 §7.1.2), then EndOfMessage."""
        buf = self._buf
        if buf[:2] == _CRLF:
            del buf[:2]
            self._scan = 0
            self._state = _State.HEAD
            return _END
        max_bytes = self._max_header_bytes
        end = buf.find(_BLANK_LINE, self._scan, max_bytes)
        if end < 0:
            limit = max_bytes + 1
            if _BARE_SEARCH(buf, self._line_scan, limit) is not None or len(buf) > max_bytes:
                self._fail_trailers(bytes(buf[:limit]))
            if self._eof:
                self._diagnose_trailers(bytes(buf))
                raise TruncatedRequestError("the connection closed in a trailer section")
            self._line_scan = max(0, len(buf) - 1)
            self._scan = max(0, len(buf) - 3)
            return NEED_DATA
        section = bytes(buf[: end + 4])
        lines = section[:end].split(_CRLF)
        if len(lines) > self._max_headers:
            self._fail_trailers(section)
        trailers = []
        for line in lines:
            field = _FIELD_LINE_MATCH(line)
            if field is None:
                self._fail_trailers(section)
            trailers.append((field[1].lower(), field[2] or b""))
        del buf[: end + 4]
        self._scan = self._line_scan = 0
        self._state = _State.HEAD
        return EndOfMessage(trailers=tuple(trailers))

    def _fail_trailers(self, data: bytes) -> NoReturn:
        self._diagnose_trailers(data)
        raise InvalidChunkError("malformed trailer section")  # unreachable, see _fail_head

    def _diagnose_trailers(self, data: bytes) -> None:
        _diagnose_fields(
            data,
            0,
            max_bytes=self._max_header_bytes,
            max_fields=self._max_headers,
            error=InvalidChunkError,
        )


# -- pure helpers ------------------------------------------------------------------------------


def _split_target(method: bytes, target: bytes) -> tuple[bytes, bytes, bytes]:
    """Return (path, query, authority) for a request-target of visible ASCII, or raise
    InvalidTargetError if its form is not allowed for the method (RFC 9112 §3.2)."""
    if target[0] == _SLASH and method != b"CONNECT":
        # RFC 9112 §3.2.1: origin-form = absolute-path [ "?" query ]
        path, _, query = target.partition(b"?")
        return path, query, b""
    if target == b"*":
        # RFC 9112 §3.2.4: asterisk-form is only for a server-wide OPTIONS.
        if method != b"OPTIONS":
            raise InvalidTargetError("the asterisk-form target is only allowed for OPTIONS")
        return b"*", b"", b""
    if method == b"CONNECT":
        # RFC 9112 §3.2.3: CONNECT uses the authority-form and only it.
        if grammar.AUTHORITY_FORM_RE.fullmatch(target) is None:
            raise InvalidTargetError("CONNECT needs an authority-form target host:port")
        return b"", b"", b""
    # RFC 9112 §3.2.2: absolute-form (http and https URIs only).
    match = grammar.ABSOLUTE_FORM_RE.fullmatch(target)
    if match is None:
        raise InvalidTargetError("the request-target is not in origin-form or absolute-form")
    authority, path, query = match.groups()
    return path or b"/", query or b"", authority


def _diagnose_request_line(line: bytes) -> None:
    """Raise the precise error for a request line (CR and LF already excluded)."""
    parts = line.split(b" ")
    if len(parts) != 3:
        raise InvalidRequestLineError(
            "the request line is not method SP request-target SP HTTP-version (RFC 9112 §3)"
        )
    method, target, version = parts
    if grammar.TOKEN_RE.fullmatch(method) is None:
        raise InvalidRequestLineError("the method is not a token (RFC 9110 §9.1)")
    if grammar.HTTP_VERSION_RE.fullmatch(version) is None:
        raise InvalidRequestLineError("malformed HTTP-version (RFC 9112 §2.3)")
    if version[5] != ord("1"):
        # RFC 9110 §2.5: any HTTP/1.x is served (as 1.1 when x > 1); other majors are not.
        raise VersionNotSupportedError(f"HTTP version {version!r} is not supported")
    if not target:
        raise InvalidTargetError("empty request-target")
    if b"#" in target:
        # RFC 9112 §3.2: no form of request-target has a fragment; a client strips it.
        raise InvalidTargetError("the request-target has a fragment ('#')")
    if grammar.REQUEST_TARGET_RE.fullmatch(target) is None:
        raise InvalidTargetError("the request-target has bytes other than visible ASCII")
    _split_target(method, target)


def _diagnose_fields(
    data: bytes,
    start: int,
    *,
    max_bytes: int,
    max_fields: int,
    error: type[ProtocolError],
) -> None:
    """Raise the earliest error of the field section beginning at ``data[start]`` (header or
    trailer section), or return if it is valid so far.

    Each error has a detection point, the number of received bytes at which it becomes
    certain; the one with the smallest wins (the size limit on a tie), so the answer does
    not depend on read sizes. The section is too large once it holds ``max_bytes + 1`` bytes.
    """
    too_large_at = start + max_bytes + 1
    too_large = HeaderFieldsTooLargeError(f"the field section is longer than {max_bytes} bytes")
    n = len(data)
    fields = 0
    begin = start
    while True:
        match = grammar.CR_OR_LF_RE.search(data, begin)
        if match is None or (match.start() == n - 1 and data[-1] == _CR):
            if n >= too_large_at:
                raise too_large
            return  # an incomplete line, fine so far
        end = match.start()
        if data[end] == _LF:
            raise too_large if end + 1 >= too_large_at else error("bare LF in a field line")
        if data[end + 1] != _LF:
            raise too_large if end + 2 >= too_large_at else error("bare CR in a field line")
        if end + 2 >= too_large_at:
            raise too_large
        if end == begin:
            return  # the blank line: the section is complete and valid
        fields += 1
        if fields > max_fields:
            raise HeaderFieldsTooLargeError(f"more than {max_fields} field lines")
        line = data[begin:end]
        if _FIELD_LINE_MATCH(line) is None:
            raise error(_field_line_problem(line))
        begin = end + 2


def _field_line_problem(line: bytes) -> str:
    if line[:1] in (b" ", b"\t"):
        return "obsolete line folding (RFC 9112 §5.2)"
    name, colon, _ = line.partition(b":")
    if not colon:
        return "a field line without a colon (RFC 9112 §5)"
    if not name:
        return "empty field name (RFC 9110 §5.1)"
    if name[-1:] in (b" ", b"\t"):
        return "whitespace between field name and colon (RFC 9112 §5.1)"
    if grammar.TOKEN_RE.fullmatch(name) is None:
        return "the field name is not a token (RFC 9110 §5.1)"
    return "a forbidden character in a field value (RFC 9110 §5.5)"


def _host(values: list[bytes], is_11: bool) -> bytes:
    """RFC 9112 §3.2: 400 for a 1.1 request without Host, for more than one Host field line,
    and for a Host with an invalid value (RFC 9110 §7.2: uri-host [ ":" port ])."""
    if len(values) > 1:
        raise MissingHostError("more than one Host header field")
    host = values[0] if values else b""
    if not host:
        if is_11:
            raise MissingHostError("an HTTP/1.1 request needs a non-empty Host header field")
        return host
    if grammar.HOST_RE.fullmatch(host) is None:
        raise InvalidHeaderError("the Host header field is not uri-host [ ':' port ]")
    return host


def _is_chunked(codings: list[bytes], is_11: bool, content_length: int | None) -> bool:
    """Return True for a valid ``Transfer-Encoding: chunked``; raise for any other use."""
    if not is_11:
        # RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
        raise BadRequestError("Transfer-Encoding in an HTTP/1.0 request")
    if content_length is not None:
        # RFC 9112 §6.3 rule 3: both is the request smuggling pattern (CL.TE / TE.CL).
        raise InvalidContentLengthError("both Transfer-Encoding and Content-Length")
    # RFC 9112 §6.1: chunked must be the final coding, and we decode no other coding, so
    # the combined field value must be exactly "chunked"; else 501 (RFC 9112 §6.1).
    if b", ".join(codings).lower() != b"chunked":
        raise UnsupportedTransferCodingError("only Transfer-Encoding: chunked is supported")
    return True


def _expects_continue(values: list[bytes]) -> bool:
    """RFC 9110 §10.1.1: 100-continue is the only expectation (1.1 requests only)."""
    for value in values:
        if value.lower() != b"100-continue":
            raise ExpectationFailedError("the only supported expectation is 100-continue")
    return bool(values)


def _keep_alive(values: list[bytes], is_11: bool) -> bool:
    """RFC 9112 §9.3: 1.1 persists unless "close"; 1.0 persists only with "keep-alive"."""
    if len(values) == 1:  # fast path for the usual single token
        option = values[0].lower()
        if option == b"keep-alive":
            return True
        if option == b"close":
            return False
    options = {option.strip(b" \t").lower() for value in values for option in value.split(b",")}
    return b"close" not in options and (is_11 or b"keep-alive" in options)


def _content_length(values: list[bytes]) -> int:
    """RFC 9110 §8.6 / RFC 9112 §6.3 rule 5: 1*DIGIT; identical duplicates count as one."""
    first = values[0]
    for value in values:
        if (
            grammar.CONTENT_LENGTH_RE.fullmatch(value) is None
            or len(value) > _MAX_CONTENT_LENGTH_DIGITS
        ):
            raise InvalidContentLengthError("Content-Length is not 1*DIGIT (RFC 9110 §8.6)")
        if value != first:
            raise InvalidContentLengthError("conflicting Content-Length values")
    return int(first)


def _diagnose_head(data: bytes, max_line: int, max_header_bytes: int, max_headers: int) -> None:
    """Raise the error detectable at the earliest byte of ``data`` (head bytes received so
    far, from the request line on); return if there is none yet."""
    match = grammar.CR_OR_LF_RE.search(data)
    if match is None:
        if len(data) > max_line:
            raise URITooLongError(f"the request line is longer than {max_line} bytes")
        return
    end = match.start()
    if end > max_line:
        raise URITooLongError(f"the request line is longer than {max_line} bytes")
    if data[end] == _LF:
        raise InvalidRequestLineError("bare LF in the request line (RFC 9112 §2.2)")
    if end + 1 == len(data):
        return
    if data[end + 1] != _LF:
        raise InvalidRequestLineError("bare CR in the request line (RFC 9112 §2.2)")
    _diagnose_request_line(data[:end])
    _diagnose_fields(
        data,
        end + 2,
        max_bytes=max_header_bytes,
        max_fields=max_headers,
        error=InvalidHeaderError,
    )


def _message_fields(
    framing: dict[bytes, list[bytes]], is_11: bool, max_body_bytes: int
) -> tuple[int | None, bool, bool, bool]:
    """(Content-Length, is chunked, expects 100-continue, keep-alive) from the interpreted
    fields; a singleton field in two lines, bad or conflicting framing, or a body over
    ``max_body_bytes`` raise."""
    for name, values in framing.items():
        if len(values) > 1 and name in _SINGLETON_FIELDS:
            raise InvalidHeaderError(
                f"more than one {name.decode('ascii')} field line: it has a single"
                " value (RFC 9110 §5.3)"
            )
    content_length = None
    content_lengths = framing.get(b"content-length")
    if content_lengths:
        content_length = _content_length(content_lengths)
    codings = framing.get(b"transfer-encoding")
    is_chunked = _is_chunked(codings, is_11, content_length) if codings else False
    if content_length is not None and content_length > max_body_bytes:
        raise ContentTooLargeError(
            f"Content-Length {content_length} is over the {max_body_bytes} byte limit"
        )
    expectations = framing.get(b"expect")
    expect_continue = is_11 and expectations is not None and _expects_continue(expectations)
    connection = framing.get(b"connection")
    keep_alive = _keep_alive(connection, is_11) if connection else is_11
    return content_length, is_chunked, expect_continue, keep_alive
