"""The whole exception hierarchy of django-wsgiserve, and the worker exit codes.

Design note: "their fault" and "our fault" are kept apart.

* ``ProtocolError`` and its subclasses mean the *peer* broke HTTP. Each class carries the
  status code the server answers with, so the connection layer has exactly one handler:
  ``except ProtocolError as exc: send_error(exc.status_code)``. They are logged at DEBUG.
* ``ApplicationError`` means the WSGI application broke WSGI; the peer gets a 500 and the
  operator gets an ERROR line with a traceback.
* ``ConfigError`` means the operator's configuration is wrong; the management command turns it
  into ``CommandError``. It names the option and where its value came from.

This module imports nothing from the rest of the package, so every layer may import it.
"""

from __future__ import annotations

import enum
from typing import ClassVar

__all__ = [
    "ApplicationError",
    "BadRequestError",
    "ClientDisconnectedError",
    "ConfigError",
    "ContentTooLargeError",
    "ControlRequestError",
    "ControlSocketError",
    "ExpectationFailedError",
    "HeaderFieldsTooLargeError",
    "HookError",
    "InvalidCGIVariableError",
    "InvalidChunkError",
    "InvalidContentLengthError",
    "InvalidFastCGIRecordError",
    "InvalidHeaderError",
    "InvalidRequestLineError",
    "InvalidTargetError",
    "InvalidUwsgiPacketError",
    "ListenerError",
    "MissingHostError",
    "ProtocolError",
    "ProxyProtocolError",
    "TruncatedRequestError",
    "URITooLongError",
    "UnsupportedTransferCodingError",
    "VersionNotSupportedError",
    "WorkerExitCode",
    "WsgiServeError",
]


class WsgiServeError(Exception):
    """Base class of every error raised by django-wsgiserve."""


class ConfigError(WsgiServeError):
    """A configuration value is unknown, of the wrong type, or impossible with another.

    ``option`` is the upper-case option name (``"MAX_REQUESTS"``), ``source`` says where the
    value came from (``"settings.WSGISERVE"``, ``"environment variable WSGISERVE_THREADS"``,
    ``"command line --threads"``), both ``None`` where not applicable.
    """

    def __init__(
        self, message: str, *, option: str | None = None, source: str | None = None
    ) -> None:
        super().__init__(message)
        self.option = option
        self.source = source


class ListenerError(WsgiServeError):
    """The listening sockets could not be bound, or taken over from systemd or from a
    configuration reload; the message says which address and why, for the operator."""


class ControlRequestError(WsgiServeError):
    """A client of the master's control socket sent something that is not a request the
    master knows (not JSON, too long, an unknown command); it gets an error reply."""


class ControlSocketError(WsgiServeError):
    """The control command could not talk to the master: no socket at ``path``, nobody
    listening, permission denied, no answer in time, or an answer it cannot read. The message
    says which, for the operator; the command adds the setting and its source."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class HookError(WsgiServeError):
    """A receiver of a hook that must succeed (``worker_starting``) raised; the cause is the
    receiver's exception. The worker exits with ``WorkerExitCode.BOOT_FAILED``."""


class ProtocolError(WsgiServeError):
    """The peer sent something that is not valid HTTP/1.x.

    ``status_code`` is what the server answers; after a protocol error the connection is
    always closed, because the framing of anything that follows is in doubt.
    """

    status_code: ClassVar[int] = 400
    reason: ClassVar[str] = "Bad Request"


class BadRequestError(ProtocolError):
    """400: a generic malformed request."""


class InvalidRequestLineError(BadRequestError):
    """400: the request line does not match RFC 9112 §3."""


class InvalidTargetError(BadRequestError):
    """400: the request-target is not one of the RFC 9112 §3.2 forms allowed for the method."""


class InvalidHeaderError(BadRequestError):
    """400: a field line breaks RFC 9112 §5 (obs-fold, bare CR, CTL, space before colon)."""


class MissingHostError(BadRequestError):
    """400: an HTTP/1.1 request without exactly one Host header (RFC 9112 §3.2)."""


class InvalidContentLengthError(BadRequestError):
    """400: Content-Length is not digits, conflicts with another, or comes with a T-E."""


class InvalidChunkError(BadRequestError):
    """400: a chunk size line, chunk terminator or trailer section is malformed (RFC 9112 §7.1)."""


class TruncatedRequestError(BadRequestError):
    """400: the peer closed the connection in the middle of a request."""


class ProxyProtocolError(BadRequestError):
    """400: a missing or malformed PROXY protocol header, or one from an untrusted peer.

    The connection is closed without an HTTP answer: the peer is a load balancer speaking the
    PROXY protocol, not (yet) an HTTP client.
    """


class URITooLongError(ProtocolError):
    """414: the request line is longer than MAX_REQUEST_LINE."""

    status_code = 414
    reason = "URI Too Long"


class ContentTooLargeError(ProtocolError):
    """413: the request body is larger than MAX_BODY_BYTES."""

    status_code = 413
    reason = "Content Too Large"


class HeaderFieldsTooLargeError(ProtocolError):
    """431: more than MAX_HEADERS header lines, or more than MAX_HEADER_BYTES of them."""

    status_code = 431
    reason = "Request Header Fields Too Large"


class ExpectationFailedError(ProtocolError):
    """417: an Expect header other than ``100-continue`` (RFC 9110 §10.1.1)."""

    status_code = 417
    reason = "Expectation Failed"


class UnsupportedTransferCodingError(ProtocolError):
    """501: a Transfer-Encoding other than a single, final ``chunked`` (RFC 9112 §6.1)."""

    status_code = 501
    reason = "Not Implemented"


class VersionNotSupportedError(ProtocolError):
    """505: an HTTP version other than 1.0 or 1.1."""

    status_code = 505
    reason = "HTTP Version Not Supported"


class ApplicationError(WsgiServeError):
    """The WSGI application broke the WSGI contract (PEP 3333); answered with a 500."""


class ClientDisconnectedError(WsgiServeError, OSError):
    """The peer has gone away; raised into the application thread on write.

    It subclasses ``OSError`` so that applications which already catch broken pipes keep working.
    """


class WorkerExitCode(enum.IntEnum):
    """Exit codes of worker processes. On BOOT_FAILED and APP_LOAD_FAILED the master halts
    instead of respawning forever."""

    OK = 0
    BOOT_FAILED = 3
    APP_LOAD_FAILED = 4


# -- gateway protocols (uwsgi, FastCGI) -----------------------------------------------------------
# The peer is a proxy (nginx uwsgi_pass / fastcgi_pass), not a browser: these errors mean a
# misconfigured or foreign peer. The connection is always closed after them.


class InvalidUwsgiPacketError(BadRequestError):
    """400: a malformed uwsgi packet: modifier1 other than 0 or 30, a vars block whose pairs do not
    exactly fill its datasize, or bytes after the request (one request per connection).

    The framing of the stream is lost: close the connection without an answer (nginx then
    answers its client 502 and logs "upstream prematurely closed connection").
    """


class InvalidFastCGIRecordError(BadRequestError):
    """400: a FastCGI record breaks the FastCGI 1.0 specification: a version other than 1, a
    record type a web server never sends, a BEGIN_REQUEST body that is not 8 bytes, a stream
    record after the end of its stream, a truncated name-value pair, or more FCGI_STDIN bytes
    than CONTENT_LENGTH.

    The record stream is in doubt: answer the active request (if any) and close the connection.
    """


class InvalidCGIVariableError(BadRequestError):
    """400: the CGI variables a gateway peer sent (uwsgi vars, FastCGI params) are unusable:
    a name that is not an RFC 3875 §4.1 token, a name sent twice, or a missing or
    malformed REQUEST_METHOD."""
