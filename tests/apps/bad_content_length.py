"""Declares ``Content-Length: 100`` but sends 10 bytes (``?mode=short``, the
default) or 200 bytes (``?mode=long``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._util import query, simple_response

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

DECLARED = 100
SIZES = {"short": 10, "long": 200}


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    mode = query(environ).get("mode") or "short"
    if mode not in SIZES:
        return simple_response(start_response, "400 Bad Request", f"unknown mode={mode!r}\n")
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(DECLARED))],
    )
    return [b"x" * SIZES[mode]]
