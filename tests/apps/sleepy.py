"""Sleep ``?s=`` seconds (float, default 1, capped at 600) before answering."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ._util import BadRequestError, bad_request, float_param, query, simple_response

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

MAX_SLEEP = 600.0


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    try:
        seconds = float_param(query(environ), "s", 1.0, MAX_SLEEP)
    except BadRequestError as exc:
        return bad_request(start_response, exc)
    time.sleep(seconds)
    return simple_response(start_response, "200 OK", f"slept {seconds:g}")
