"""ResponseWriter: WSGI status and headers -> the bytes of a response head; chunk coding.

Design note: the writer trusts nothing the application gives it. The status line and every
header are validated against the grammar before they reach the wire, because a CR or LF in a
header value is response splitting (RFC 9112 §11.1); a violation is an ``ApplicationError``
(the app broke WSGI; the caller answers 500). The writer adds only what the server owns:
``Date``, ``Server``, ``Transfer-Encoding: chunked`` and ``Connection``, according to the
framing chosen by ``framing.choose_framing``. It removes only the framing headers
(Content-Length, Transfer-Encoding) of a status that has no content (1xx, 204, 304: see
``framing.has_no_content``), which RFC 9110 §8.6 and RFC 9112 §6.1 forbid there. The status
line always says HTTP/1.1, the highest version we conform to (RFC 9110 §2.5), whatever the
request version.

Speed: one list of native strings, one ``join`` and one latin-1 ``encode`` per head. Header
names seen in most responses are known to be tokens and skip the name regex. A writer
remembers the statuses and the (name, value) pairs it has validated, with their lines, so
an application that sends the same headers again (most do: Content-Type, the security
headers of Django's middleware) has each checked once: a head with 7 headers went from 4.0
to 1.5 us (benchmarks/hotpath.py). Only what passed validation is remembered, so every
error is raised by the same checks as the first time. The memo is a bounded dict, emptied
when full (values that differ every time, a session cookie, do not crowd out the rest for
good); dict operations are atomic under the GIL, so a writer is safe to share between
threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django_wsgiserve.errors import ApplicationError, ConfigError
from django_wsgiserve.http import grammar
from django_wsgiserve.http.framing import Framing, has_no_content

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["LAST_CHUNK", "ResponseWriter", "append_header_lines", "encode_chunk", "plain_text"]

# RFC 9112 §7.1: last-chunk = 1*("0") CRLF, then an empty trailer section and CRLF.
LAST_CHUNK: bytes = b"0\r\n\r\n"

# Header names that are certainly tokens: skip the regex for them (most responses only use
# these). Anything else is checked against RFC 9110 §5.1 field-name = token.
_KNOWN_NAMES = frozenset(
    (
        "Content-Type",
        "Content-Length",
        "Content-Encoding",
        "Content-Disposition",
        "Content-Language",
        "Cache-Control",
        "Expires",
        "Last-Modified",
        "ETag",
        "Location",
        "Set-Cookie",
        "Vary",
        "X-Frame-Options",
        "X-Content-Type-Options",
        "Referrer-Policy",
        "Cross-Origin-Opener-Policy",
        "Strict-Transport-Security",
        "Content-Security-Policy",
        "Allow",
        "Access-Control-Allow-Origin",
        "Date",
        "Server",
        "Accept-Ranges",
        "Content-Range",
        "WWW-Authenticate",
        "Retry-After",
    )
)
# Dropped from the head of a status without content (lower-cased).
_FRAMING_NAMES = frozenset(("content-length", "transfer-encoding"))
_TOKEN_MATCH = grammar.TOKEN_STR_RE.fullmatch
_VALUE_MATCH = grammar.VALUE_STR_RE.fullmatch
_STATUS_MATCH = grammar.STATUS_STR_RE.fullmatch
# What a header line is to the head: Date and Server stop the writer adding its own, framing
# headers are dropped from a status without content.
_OTHER, _DATE, _SERVER, _FRAMING = range(4)
# The bounds of a writer's memo (see the module notes): entries, and the longest value kept.
_MAX_REMEMBERED = 512
_MAX_REMEMBERED_VALUE = 1024


def encode_chunk(data: bytes) -> bytes:
    """Frame ``data`` as one chunk (RFC 9112 §7.1). Empty data gives ``b""``: an empty chunk
    would be the last-chunk and end the body early."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


class ResponseWriter:
    """Serialise response heads. ``server_header`` is the Server value; ``""`` sends none."""

    def __init__(self, *, server_header: str = "") -> None:
        if server_header and _VALUE_MATCH(server_header) is None:
            raise ConfigError(
                f"invalid Server header value {server_header!r}", option="SERVER_HEADER"
            )
        self._server_line = f"Server: {server_header}\r\n" if server_header else ""
        self._server_line_bytes = self._server_line.encode("latin-1")
        # Validated: status -> (status line, has no content); (name, value) -> (line, kind).
        self._statuses: dict[str, tuple[str, bool]] = {}
        self._lines: dict[tuple[str, str], tuple[str, int]] = {}
        self._date_line: tuple[bytes, str] = (b"", "")  # the cached Date, as a line

    def head(
        self,
        *,
        status: str,
        headers: list[tuple[str, str]],
        http_version: bytes,
        framing: Framing,
        keep_alive: bool,
        date: bytes,
    ) -> bytes:
        """Return the response head: status line, the app's headers, the server's headers,
        the blank line. Raise ``ApplicationError`` for an invalid status or header."""
        status_entry = self._statuses.get(status) if type(status) is str else None
        if status_entry is None:
            status_entry = self._status_entry(status)
        status_line, drop_framing = status_entry
        parts = [status_line]
        has_date = has_server = False
        lines = self._lines
        for header in headers:
            try:
                entry = lines.get(header)
            except TypeError:  # unhashable: not a pair of str (_header_entry says what)
                entry = None
            if entry is None:
                entry = _header_entry(header)
                self._remember_line(header, entry)
            line, kind = entry
            if kind:
                if kind == _DATE:
                    has_date = True
                elif kind == _SERVER:
                    has_server = True
                elif drop_framing:
                    continue
            parts.append(line)
        if not has_date:
            date_line = self._date_line
            if date_line[0] != date:
                date_line = (date, f"Date: {date.decode('latin-1')}\r\n")
                self._date_line = date_line  # one tuple: readers see a whole pair
            parts.append(date_line[1])
        if self._server_line and not has_server:
            parts.append(self._server_line)
        if framing is Framing.CHUNKED:
            parts.append("Transfer-Encoding: chunked\r\n")
        if not keep_alive:
            parts.append("Connection: close\r\n")
        elif http_version == b"1.0":
            parts.append("Connection: keep-alive\r\n")
        parts.append("\r\n")
        # Cannot fail: every piece was checked to be latin-1 text above.
        return "".join(parts).encode("latin-1")

    def _status_entry(self, status: str) -> tuple[str, bool]:
        """Validate a status not seen yet; remember it."""
        if type(status) is not str or _STATUS_MATCH(status) is None:
            raise ApplicationError(f"invalid WSGI status {status!r} (want '200 OK')")
        entry = (f"HTTP/1.1 {status}\r\n", has_no_content(int(status[:3])))
        statuses = self._statuses
        if len(statuses) >= _MAX_REMEMBERED:
            statuses.clear()
        statuses[status] = entry
        return entry

    def _remember_line(self, header: object, entry: tuple[str, int]) -> None:
        """Remember a validated header pair (a tuple of str, of a bounded length)."""
        if type(header) is not tuple or len(header[1]) > _MAX_REMEMBERED_VALUE:
            return
        lines = self._lines
        if len(lines) >= _MAX_REMEMBERED:
            lines.clear()
        lines[header] = entry

    def prepare_head(self, *, status: str, headers: list[tuple[str, str]]) -> bytes | None:
        """Validate a status and headers that many responses share (static files) once, and
        return the start of their head for ``head_from_prepared``; None when the headers
        include Date or Server (use ``head``). Raises ``ApplicationError`` like ``head``."""
        if type(status) is not str or grammar.STATUS_STR_RE.fullmatch(status) is None:
            raise ApplicationError(f"invalid status {status!r} (want '200 OK')")
        parts = ["HTTP/1.1 ", status, "\r\n"]
        has_date, has_server = append_header_lines(
            parts, headers, drop_framing=has_no_content(int(status[:3]))
        )
        if has_date or has_server:
            return None
        return "".join(parts).encode("latin-1")

    def head_from_prepared(
        self,
        prepared: bytes,
        *,
        http_version: bytes,
        framing: Framing,
        keep_alive: bool,
        date: bytes,
    ) -> bytes:
        """``head()`` for a status and headers validated by ``prepare_head``."""
        parts = [prepared, b"Date: ", date, b"\r\n", self._server_line_bytes]
        if framing is Framing.CHUNKED:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if not keep_alive:
            parts.append(b"Connection: close\r\n")
        elif http_version == b"1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def error_response(
        self,
        *,
        status_code: int,
        reason: str,
        date: bytes,
        http_version: bytes = b"1.1",
        body: bytes | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        """Return a complete short plain-text response that closes the connection (used for
        protocol errors and 500s). ``http_version`` is the request's; the status line is
        HTTP/1.1 regardless (RFC 9110 §2.5), and Connection: close is always sent."""
        del http_version  # accepted for symmetry with head(); see the docstring
        status = f"{status_code} {reason}"
        if grammar.STATUS_STR_RE.fullmatch(status) is None:
            raise ApplicationError(f"invalid status {status!r}")
        if body is None:
            body = f"{status}\n".encode()
        parts = ["HTTP/1.1 ", status, "\r\n", f"Date: {date.decode('latin-1')}\r\n"]
        if self._server_line:
            parts.append(self._server_line)
        parts.append("Content-Type: text/plain; charset=utf-8\r\n")
        parts.append(f"Content-Length: {len(body)}\r\nConnection: close\r\n")
        append_header_lines(parts, extra_headers)
        parts.append("\r\n")
        return "".join(parts).encode("latin-1") + body


def append_header_lines(
    parts: list[str], headers: Iterable[tuple[str, str]], *, drop_framing: bool = False
) -> tuple[bool, bool]:
    """Validate and append ``Name: value\\r\\n`` lines; return (has Date, has Server). With
    ``drop_framing``, Content-Length and Transfer-Encoding are validated but left out.

    Raises ``ApplicationError`` for a name that is not a token or a value with a control
    character (response splitting, RFC 9112 §11.1). Shared by the uwsgi and FastCGI writers,
    whose response heads carry the same header lines.
    """
    has_date = has_server = False
    for header in headers:
        line, kind = _header_entry(header)
        if kind == _DATE:
            has_date = True
        elif kind == _SERVER:
            has_server = True
        elif kind == _FRAMING and drop_framing:
            continue
        parts.append(line)
    return has_date, has_server


def _header_entry(header: object) -> tuple[str, int]:
    """The ``Name: value\\r\\n`` line of a valid header pair, and its kind (``_DATE``...);
    raise ``ApplicationError`` for anything else."""
    pair: tuple[str, str] = header  # type: ignore[assignment]  # checked right here
    try:
        name, value = pair
        if name not in _KNOWN_NAMES and _TOKEN_MATCH(name) is None:
            raise ApplicationError(f"invalid header name {name!r}")
        if _VALUE_MATCH(value) is None:
            # CR, LF, NUL or another control character, or a character beyond latin-1.
            raise ApplicationError(f"invalid value for header {name!r}: {value!r}")
    except (TypeError, ValueError) as exc:
        # Not a list of (str, str) pairs: bytes, None, or tuples of the wrong length.
        raise ApplicationError(f"response headers must be (str, str) pairs: {exc}") from exc
    lowered = name.lower()
    if lowered == "date":
        kind = _DATE
    elif lowered == "server":
        kind = _SERVER
    elif lowered in _FRAMING_NAMES:
        kind = _FRAMING
    else:
        kind = _OTHER
    return f"{name}: {value}\r\n", kind


def plain_text(
    status_code: int,
    reason: str,
    body: bytes | None = None,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> tuple[str, list[tuple[str, str]], bytes]:
    """The status, headers and body of a short plain-text response the server makes itself
    (an error), for a protocol's own ``head()`` (uwsgi, FastCGI's CGI head)."""
    status = f"{status_code} {reason}"
    if body is None:
        body = f"{status}\n".encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        *extra_headers,
    ]
    return status, headers, body
