"""A generator application: start_response is only called inside the first
iteration, so the server must not look at the status before iterating."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

CHUNKS = (b"late ", b"status\n")
BODY = b"".join(CHUNKS)


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
    start_response(
        "201 Created",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))],
    )
    yield from CHUNKS
