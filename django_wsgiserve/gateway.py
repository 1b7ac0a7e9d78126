"""The WSGI side of the gateway protocols (uwsgi, FastCGI): environ from CGI variables, and a
request cycle whose response head and framing are the protocol's.

Design note. A gateway peer (nginx ``uwsgi_pass``/``fastcgi_pass``, Apache
``mod_proxy_fcgi``) sends a request as CGI variables (``http.cgi.CGIRequest``), not as an
HTTP head. Everything downstream of the parser is shared with HTTP:

* ``request_view()`` turns a ``CGIRequest`` into the ``http.events.Request`` that the static
  table, the access log, the dispatcher's in-flight table and ``RequestCycle`` read (method,
  target, path, the request headers from the ``HTTP_*`` variables). It is made once per
  request, in the loop thread.
* ``build_environ()`` makes the PEP 3333 environ from the variables themselves (pool thread).
  The peer's description of the client's connection (REMOTE_ADDR, REMOTE_PORT, HTTPS,
  REQUEST_SCHEME, SERVER_NAME, SERVER_PORT) is believed only from a peer in TRUSTED_PROXIES;
  otherwise the socket's peer and the listener's own values replace it. HTTP_CONTENT_LENGTH,
  HTTP_CONTENT_TYPE and HTTP_TRANSFER_ENCODING are dropped (the body was de-framed by the
  peer and measured by us: CONTENT_LENGTH is what we read). The ``wsgi.*`` keys are set
  last, so that no variable can override them.
* PATH_INFO and SCRIPT_NAME: nginx's stock ``uwsgi_params`` sends PATH_INFO (its
  ``$document_uri``) and no SCRIPT_NAME; the stock ``fastcgi_params`` sends no PATH_INFO and a
  SCRIPT_NAME that is the whole path (``$fastcgi_script_name``, meant for PHP scripts), which a
  WSGI application must not take for its mount point. So: without PATH_INFO, PATH_INFO is
  DOCUMENT_URI (or the percent-decoded path of REQUEST_URI) and the peer's SCRIPT_NAME is
  ignored; a peer that sends both (``fastcgi_split_path_info``, a hand-written uwsgi_param)
  is taken at its word. Otherwise the SCRIPT_NAME setting is the mount point and is taken off
  the front of PATH_INFO, exactly as for HTTP.
* ``GatewayRequestCycle`` is ``wsgi.RequestCycle`` with the head made by a ``HeadWriter`` (no
  Date, Server or Connection: the web server in front owns those) and no chunked coding: a
  body of unknown length is sent as it comes (uwsgi ends it by closing the connection, FastCGI
  by its STDOUT stream, which the FastCGI sink frames). The HTTP path does not pass here.

Pool thread (``build_environ``, the cycle) and loop thread (``request_view``); no state of
its own. Never imports Django.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote_to_bytes

from .errors import ApplicationError, ClientDisconnectedError
from .http import grammar
from .http.events import Request
from .http.framing import choose_framing
from .http.writer import append_header_lines, plain_text
from .wsgi import RequestCycle

if TYPE_CHECKING:
    import io

    from .http.cgi import CGIRequest
    from .wsgi import EnvironTemplate

__all__ = [
    "CGIHeadWriter",
    "GatewayRequest",
    "GatewayRequestCycle",
    "HeadWriter",
    "build_environ",
    "request_view",
]

logger = logging.getLogger(__name__)

# The body was de-framed by the peer and is measured by us; these describe the client's framing.
_DROPPED = ("HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE", "HTTP_TRANSFER_ENCODING")
# What the peer says about the client's connection: believed from TRUSTED_PROXIES only.
_CONNECTION_VARIABLES = (
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "HTTPS",
    "REQUEST_SCHEME",
    "SERVER_NAME",
    "SERVER_PORT",
)
_STATUS_MATCH = grammar.STATUS_STR_RE.fullmatch


class HeadWriter(Protocol):
    """A protocol's response head (``uwsgi.UwsgiResponseWriter``, ``CGIHeadWriter``)."""

    def head(self, *, status: str, headers: list[tuple[str, str]]) -> bytes: ...

    def error_response(
        self, *, status_code: int, reason: str, body: bytes | None = None
    ) -> bytes: ...


class CGIHeadWriter:
    """A CGI response head (RFC 3875 §6.3.3: the status in a ``Status`` header), as a FastCGI
    Responder writes it on its STDOUT stream (FastCGI spec §6.1); the FastCGI sink frames it
    into records with the body. Stateless."""

    __slots__ = ()

    def head(self, *, status: str, headers: list[tuple[str, str]]) -> bytes:
        """``Status:``, the application's header lines, the blank line; ``ApplicationError``
        for an invalid status or header."""
        if type(status) is not str or _STATUS_MATCH(status) is None:
            raise ApplicationError(f"invalid WSGI status {status!r} (want '200 OK')")
        parts = ["Status: ", status, "\r\n"]
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
        """A complete short plain-text response."""
        status, headers, body = plain_text(status_code, reason, body, extra_headers)
        return self.head(status=status, headers=headers) + body


@dataclass(frozen=True, slots=True)
class GatewayRequest:
    """What the dispatcher needs, beyond the request view, to run a gateway request."""

    variables: CGIRequest
    head_writer: HeadWriter


def request_view(request: CGIRequest) -> Request:
    """The ``http.events.Request`` the shared machinery reads for ``request`` (loop thread):
    the target is REQUEST_URI as the client sent it, the headers come from the ``HTTP_*``
    variables (``HTTP_USER_AGENT`` -> ``user-agent``)."""
    variables = request.variables
    target = request.target.encode("latin-1")
    path, _, query = target.partition(b"?")
    headers = tuple(
        (name[5:].lower().replace("_", "-").encode("latin-1"), value.encode("latin-1"))
        for name, value in variables.items()
        if name.startswith("HTTP_")
    )
    return Request(
        method=request.method.encode("latin-1"),
        target=target,
        path=path,
        query=query,
        http_version=b"1.0" if variables.get("SERVER_PROTOCOL") == "HTTP/1.0" else b"1.1",
        headers=headers,
        content_length=request.content_length,
        is_chunked=False,
        keep_alive=request.keep_alive,
        expect_continue=False,
        host=variables.get("HTTP_HOST", "").encode("latin-1"),
    )


def build_environ(
    template: EnvironTemplate,
    request: CGIRequest,
    body: io.IOBase,
    body_size: int,
    peer: tuple[str, str],
    *,
    is_trusted: bool,
) -> dict[str, Any]:
    """The PEP 3333 environ of a gateway request (pool thread); see the module notes.
    ``is_trusted``: the peer is in TRUSTED_PROXIES."""
    variables = request.variables
    environ: dict[str, Any] = dict(variables)
    for key in _DROPPED:
        environ.pop(key, None)
    base = template.base
    scheme = base["wsgi.url_scheme"]
    if is_trusted:
        if "REMOTE_ADDR" not in environ:
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = peer
        # nginx: HTTPS "on" (from $https), REQUEST_SCHEME (from $scheme).
        if variables.get("HTTPS", "").lower() in ("on", "1") or (
            variables.get("REQUEST_SCHEME") == "https"
        ):
            scheme = "https"
        elif variables.get("REQUEST_SCHEME") == "http":
            scheme = "http"
    else:
        for key in _CONNECTION_VARIABLES:
            environ.pop(key, None)
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = peer
    for key, value in base.items():
        # The listener's SERVER_NAME/SERVER_PORT/SERVER_SOFTWARE fill in what the peer did
        # not send; the wsgi.* keys always win.
        if key.startswith("wsgi") or key not in environ:
            environ[key] = value
    _set_paths(environ, request, template.script_name)
    environ.setdefault("QUERY_STRING", "")
    environ.setdefault("SERVER_PROTOCOL", "HTTP/1.1")
    if body_size or variables.get("CONTENT_LENGTH"):
        environ["CONTENT_LENGTH"] = str(body_size)
    else:
        environ.pop("CONTENT_LENGTH", None)
    if not environ.get("CONTENT_TYPE"):
        environ.pop("CONTENT_TYPE", None)  # nginx sends an empty one when there is none
    environ["RAW_URI"] = request.target
    environ["wsgi.url_scheme"] = scheme
    environ["wsgi.input"] = body
    return environ


def _set_paths(environ: dict[str, Any], request: CGIRequest, script_name: str) -> None:
    """SCRIPT_NAME and PATH_INFO; see the module notes."""
    variables = request.variables
    path_info = variables.get("PATH_INFO")
    if path_info is not None and variables.get("SCRIPT_NAME"):
        return  # both sent: the peer's configuration split the path itself
    if path_info is None:
        path_info = variables.get("DOCUMENT_URI")
        if path_info is None:
            raw = request.target.partition("?")[0]
            if "%" in raw:
                raw = unquote_to_bytes(raw).decode("latin-1")
            path_info = raw
    if script_name and (path_info == script_name or path_info.startswith(script_name + "/")):
        path_info = path_info[len(script_name) :]
    environ["SCRIPT_NAME"] = script_name
    environ["PATH_INFO"] = path_info


class GatewayRequestCycle(RequestCycle):
    """``RequestCycle`` with a gateway protocol's head: see the module notes (pool thread)."""

    __slots__ = ("_head_writer",)

    def __init__(self, *, head_writer: HeadWriter, **options: Any) -> None:
        super().__init__(**options)
        self._head_writer = head_writer

    def _head(self) -> bytes:
        """The protocol's response head; marks the headers as sent."""
        status = self._status
        if status is None:
            raise ApplicationError("The application returned a body before calling start_response")
        try:
            status_code = int(status[:3])
        except ValueError:
            raise ApplicationError(f"Invalid WSGI status {status!r}") from None
        # HTTP/1.0 rules: no chunked coding; a body of unknown length is sent as it comes and
        # the protocol marks its end. The connection's fate is the protocol's, not the
        # framing's, so choose_framing's keep-alive verdict is not used.
        framing, _ = choose_framing(
            method=self._request.method,
            http_version=b"1.0",
            status_code=status_code,
            content_length=self._content_length,
            keep_alive=False,
        )
        head = self._head_writer.head(status=status, headers=self._headers)
        self._framing = framing
        self._chunked = False
        self._headers_sent = True
        return head

    def _send_error_response(self) -> None:
        """A 500 before the head was sent, in the protocol's form."""
        response = self._head_writer.error_response(status_code=500, reason="Internal Server Error")
        if self._is_head:
            response = response[: response.index(b"\r\n\r\n") + 4]
        self._headers_sent = True
        with contextlib.suppress(ClientDisconnectedError):
            self._sink.send([response])
