"""Tries to set a hop-by-hop header, which PEP 3333 forbids applications to do:
the server must refuse the response (500).

``?header=`` picks it: ``connection`` (default, ``Connection: foo``),
``transfer-encoding`` (``Transfer-Encoding: chunked``), ``keep-alive``, ``te``,
``upgrade``, ``proxy-authenticate`` or ``proxy-authorization`` (the set of
``wsgiref.util.is_hop_by_hop``).
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
BODY = b"this body must never reach the client\n"


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    choice = query(environ).get("header") or "connection"
    if choice not in HEADERS:
        return simple_response(start_response, "400 Bad Request", f"unknown header={choice!r}\n")
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(BODY))),
            HEADERS[choice],
        ],
    )
    return [BODY]
