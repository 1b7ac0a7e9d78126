"""Sets a hop-by-hop header, which PEP 3333 forbids applications to do: the
server must not send it. ``Connection: close`` is honoured (the connection
closes after the response); any other one is dropped with a warning.

``?header=`` picks it: ``connection`` (default, ``Connection: foo``),
``transfer-encoding`` (``Transfer-Encoding: chunked``), ``keep-alive``, ``te``,
``upgrade``, ``proxy-authenticate`` or ``proxy-authorization`` (the set of
``wsgiref.util.is_hop_by_hop``). ``?value=`` replaces its value, e.g.
``?header=connection&value=close``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._util import query, simple_response

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

HEADERS = {
    "connection": ("Connection", "foo"),
    "transfer-encoding": ("Transfer-Encoding", "chunked"),
    "keep-alive": ("Keep-Alive", "timeout=5"),
    "te": ("TE", "trailers"),
    "upgrade": ("Upgrade", "websocket"),
    "proxy-authenticate": ("Proxy-Authenticate", "Basic"),
    "proxy-authorization": ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
}
BODY = b"the body, without the hop-by-hop header\n"


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    params = query(environ)
    choice = params.get("header") or "connection"
    if choice not in HEADERS:
        return simple_response(start_response, "400 Bad Request", f"unknown header={choice!r}\n")
    name, value = HEADERS[choice]
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(BODY))),
            (name, params.get("value") or value),
        ],
    )
    return [BODY]
