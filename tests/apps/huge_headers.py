"""A response with ``?n=`` extra headers (default 100), ``X-Header-00000: value-00000``...

``?value_size=`` pads each value with "v" to at least that many characters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._util import BadRequestError, bad_request, int_param, query, simple_response

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

MAX_HEADERS = 100_000
MAX_VALUE_SIZE = 1024 * 1024


def headers(n: int, value_size: int = 0) -> list[tuple[str, str]]:
    return [(f"X-Header-{i:05d}", f"value-{i:05d}".ljust(value_size, "v")) for i in range(n)]


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    params = query(environ)
    try:
        n = int_param(params, "n", 100, MAX_HEADERS)
        value_size = int_param(params, "value_size", 0, MAX_VALUE_SIZE)
    except BadRequestError as exc:
        return bad_request(start_response, exc)
    return simple_response(
        start_response, "200 OK", f"{n} headers\n", extra_headers=headers(n, value_size)
    )
