"""Loop forever, as a view with a bug would: a busy loop capped at ``?s=`` seconds (float,
default 60, at most 600) so that a test can never leave it spinning for good.

The loop line is marked ``# SPIN-LINE``: stuck-request tests look for it in the logged traceback.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ._util import BadRequestError, bad_request, float_param, query, simple_response

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

MAX_SPIN = 600.0


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    try:
        cap = float_param(query(environ), "s", 60.0, MAX_SPIN)
    except BadRequestError as exc:
        return bad_request(start_response, exc)
    end = time.monotonic() + cap
    spins = 0
    while time.monotonic() < end:  # SPIN-LINE
        spins += 1
    return simple_response(start_response, "200 OK", f"spun {spins} times")
