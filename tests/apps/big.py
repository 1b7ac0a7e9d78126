"""A large response with a Content-Length: ``?size=`` bytes (default 5 MiB).

The body is the repeating pattern ``bytes(range(256))``, produced in 64 KiB blocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._util import PATTERN_BLOCK, BadRequestError, bad_request, int_param, query

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

DEFAULT_SIZE = 5 * 1024 * 1024


def blocks(size: int) -> Iterator[bytes]:
    full, remainder = divmod(size, len(PATTERN_BLOCK))
    for _ in range(full):
        yield PATTERN_BLOCK
    if remainder:
        yield PATTERN_BLOCK[:remainder]


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    try:
        size = int_param(query(environ), "size", DEFAULT_SIZE)
    except BadRequestError as exc:
        return bad_request(start_response, exc)
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
    )
    return blocks(size)
