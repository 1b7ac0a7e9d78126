"""UwsgiResponseWriter: WSGI status and headers -> the response head nginx's uwsgi module reads.

Design note. A uwsgi response is not framed by the uwsgi protocol at all: it is an HTTP/1.x
status line, header lines, a blank line and then the body as it is, and it ends when the
server closes the connection. This is what uWSGI sends and what nginx expects: its uwsgi
module reads the head with its HTTP status-line and header parsers (``ngx_http_uwsgi_process_
status_line``; a first line that is not a status line makes it fall back to a CGI ``Status:``
header), and it never keeps an upstream uwsgi connection for another request (it never sets
the upstream's keepalive flag, unlike the proxy and FastCGI modules), so the body may end only
at the close even when it has a Content-Length.

Hence: no chunked coding (nginx would pass the chunk framing through as body bytes), no
Connection header, and no Date or Server either: nginx drops an upstream's Date and Server by
default and sends its own. Headers are validated by the same function as the HTTP writer's
(``http.writer.append_header_lines``): a CR or LF in a value would split the response that
nginx relays.

Stateless; safe to share between threads. Imports only the stdlib, ``errors`` and ``http``.
"""

from __future__ import annotations

from django_wsgiserve.errors import ApplicationError
from django_wsgiserve.http import grammar
from django_wsgiserve.http.writer import append_header_lines, plain_text

__all__ = ["UwsgiResponseWriter"]

_STATUS_MATCH = grammar.STATUS_STR_RE.fullmatch


class UwsgiResponseWriter:
    """Serialise response heads for a uwsgi peer. The body follows the head unframed, and the
    end of the response is the end of the connection."""

    __slots__ = ()

    def head(self, *, status: str, headers: list[tuple[str, str]]) -> bytes:
        """Return the status line, the application's header lines and the blank line.

        Raises ``ApplicationError`` for an invalid status or header (the caller answers 500).
        """
        if type(status) is not str or _STATUS_MATCH(status) is None:
            raise ApplicationError(f"invalid WSGI status {status!r} (want '200 OK')")
        # nginx parses the line with its HTTP status-line parser and ignores the version.
        parts = ["HTTP/1.1 ", status, "\r\n"]
        append_header_lines(parts, headers)
        parts.append("\r\n")
        return "".join(parts).encode("latin-1")

    def error_response(
        self,
        *,
        status_code: int,
        reason: str,
        body: bytes | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        """Return a complete short plain-text response (a protocol error after the request
        was read, or a 500 before the application sent its head)."""
        status, headers, body = plain_text(status_code, reason, body, extra_headers)
        return self.head(status=status, headers=headers) + body
