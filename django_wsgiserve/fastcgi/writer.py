"""FastCGIResponseWriter: a WSGI response as FCGI_STDOUT records for one request id.

Design note. A FastCGI Responder writes a CGI response on its FCGI_STDOUT stream (spec §6.2):
header lines with the status in a ``Status:`` header (spec §6.1: "FastCGI applications set
response status using the Status and Location CGI headers"; no HTTP status line), a blank line,
the body; then an empty STDOUT record ends the stream and FCGI_END_REQUEST ends the request.
nginx's FastCGI module reads exactly that: CGI headers with ``Status``, the body up to the end
of the STDOUT stream, and it reuses the connection after END_REQUEST only if it set
FCGI_KEEP_CONN (``fastcgi_keep_conn on``).

Headers are validated by ``http.writer.append_header_lines``, as in the HTTP writer: a CR or
LF in a value would let the application forge headers in the response nginx relays.

Body records carry at most ``MAX_ALIGNED_CONTENT`` (65528) bytes, a multiple of 8, so every
record but the last is 8-byte aligned without padding (spec §3.3 recommends alignment) and
the last one gets at most 7 padding bytes. Bodies up to ``_COPY_LIMIT`` bytes are joined with
their record header into one ``bytes`` (one copy beats one more iovec); larger ones are
returned as header + ``memoryview`` slices of the caller's buffer, never copied, for
``socket.sendmsg`` (writev).

Immutable (only the request id); safe to use from the pool thread while the loop thread owns
the ``FastCGIConnection``. Imports only the stdlib, ``errors`` and ``http``.
"""

from __future__ import annotations

from django_wsgiserve.errors import ApplicationError
from django_wsgiserve.fastcgi.records import (
    MAX_ALIGNED_CONTENT,
    ProtocolStatus,
    RecordType,
    end_request_record,
    padding_for,
    record_header,
)
from django_wsgiserve.http import grammar
from django_wsgiserve.http.writer import append_header_lines, plain_text

__all__ = ["FastCGIResponseWriter"]

# Up to this size a body is copied once into a single bytes object with its record header:
# a memcpy of a few KiB costs less than handing sendmsg one more buffer.
_COPY_LIMIT = 16384
_PADDING = bytes(7)
_STATUS_MATCH = grammar.STATUS_STR_RE.fullmatch


class FastCGIResponseWriter:
    """Serialise the response to FastCGI request ``request_id`` as STDOUT records."""

    __slots__ = ("request_id",)

    def __init__(self, *, request_id: int) -> None:
        self.request_id = request_id

    def response_head(self, *, status: str, headers: list[tuple[str, str]]) -> bytes:
        """Return STDOUT record(s) carrying ``Status: <status>``, the header lines and the
        blank line. Raises ``ApplicationError`` for an invalid status or header."""
        if type(status) is not str or _STATUS_MATCH(status) is None:
            raise ApplicationError(f"invalid WSGI status {status!r} (want '200 OK')")
        parts = ["Status: ", status, "\r\n"]
        append_header_lines(parts, headers)
        parts.append("\r\n")
        return b"".join(self.body("".join(parts).encode("latin-1")))

    def body(self, data: bytes) -> list[bytes | memoryview]:
        """Return ``data`` framed as STDOUT records, ready for ``sendmsg``; ``[]`` for no data
        (an empty STDOUT record would end the stream, spec §3.3)."""
        length = len(data)
        if not length:
            return []
        request_id = self.request_id
        if length <= _COPY_LIMIT:
            padding = padding_for(length)
            header = record_header(RecordType.STDOUT, request_id, length, padding)
            return [header + data + _PADDING[:padding]]
        view = memoryview(data)
        parts: list[bytes | memoryview] = []
        for start in range(0, length, MAX_ALIGNED_CONTENT):
            piece = view[start : start + MAX_ALIGNED_CONTENT]
            padding = padding_for(len(piece))  # non-zero only for the last piece
            parts.append(record_header(RecordType.STDOUT, request_id, len(piece), padding))
            parts.append(piece)
            if padding:
                parts.append(_PADDING[:padding])
        return parts

    def end_request(
        self,
        *,
        app_status: int = 0,
        protocol_status: ProtocolStatus = ProtocolStatus.REQUEST_COMPLETE,
    ) -> bytes:
        """The empty STDOUT record that ends the stream, then FCGI_END_REQUEST (spec §6.2:
        protocolStatus FCGI_REQUEST_COMPLETE, appStatus as a CGI exit status)."""
        return record_header(RecordType.STDOUT, self.request_id, 0, 0) + end_request_record(
            self.request_id, app_status, protocol_status
        )

    def error_response(
        self,
        *,
        status_code: int,
        reason: str,
        body: bytes | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        """STDOUT records of a complete short plain-text response (no END_REQUEST), with
        ``extra_headers`` (``Retry-After`` on a 503) after its own."""
        status, headers, body = plain_text(status_code, reason, body, extra_headers)
        return self.response_head(status=status, headers=headers) + b"".join(self.body(body))
