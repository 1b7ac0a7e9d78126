"""Uses the legacy ``write()`` callable returned by start_response for two
chunks, then returns an empty iterable. No Content-Length."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

CHUNKS = (b"written chunk 1\n", b"written chunk 2\n")
BODY = b"".join(CHUNKS)


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    for chunk in CHUNKS:
        write(chunk)
    return []
