"""A response whose status has no content: 204 (default) or ``?status=304``.

``?content_length=N`` makes the app declare ``Content-Length: N`` itself (as
Django's CommonMiddleware does, with 0); ``?body=text`` makes it return that
body anyway, which the server must not send. An ETag is always set, so a 304
carries the validator a client expects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._util import BadRequestError, bad_request, int_param, query

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

STATUSES = {"204": "204 No Content", "304": "304 Not Modified"}


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    params = query(environ)
    status = STATUSES.get(params.get("status") or "204")
    if status is None:
        return bad_request(start_response, BadRequestError("status must be 204 or 304"))
    headers = [("ETag", '"v1"')]
    if "content_length" in params:
        try:
            length = int_param(params, "content_length", 0)
        except BadRequestError as error:
            return bad_request(start_response, error)
        headers.append(("Content-Length", str(length)))
    start_response(status, headers)
    body = params.get("body", "")
    return [body.encode()] if body else []
