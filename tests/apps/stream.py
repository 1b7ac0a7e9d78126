"""A response without Content-Length, so the server must chunk it (HTTP/1.1).

``?n=`` chunks (default 10) of ``?size=`` bytes (default 1024), ``?delay=``
seconds (float, capped at 60) before every chunk but the first. Chunk ``i``
(from 0) consists of the byte ``ord("a") + i % 26`` repeated.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ._util import BadRequestError, bad_request, float_param, int_param, query

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

MAX_DELAY = 60.0
MAX_SIZE = 16 * 1024 * 1024


def chunk(index: int, size: int) -> bytes:
    return bytes([ord("a") + index % 26]) * size


def expected_body(n: int = 10, size: int = 1024) -> bytes:
    return b"".join(chunk(index, size) for index in range(n))


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    params = query(environ)
    try:
        count = int_param(params, "n", 10)
        size = int_param(params, "size", 1024, MAX_SIZE)
        delay = float_param(params, "delay", 0.0, MAX_DELAY)
    except BadRequestError as exc:
        return bad_request(start_response, exc)

    def body() -> Iterator[bytes]:
        for index in range(count):
            if delay and index:
                time.sleep(delay)
            yield chunk(index, size)

    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return body()
