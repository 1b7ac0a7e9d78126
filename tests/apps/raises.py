"""An application that fails at a chosen moment (``?when=``).

* ``before`` (default): raises before calling start_response.
* ``after``: calls start_response (with a Content-Length of 100), yields one
  chunk, then raises: the server must abort the connection, not send a 500.
* ``close``: a normal response whose iterable's ``close()`` raises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._util import query, simple_response

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

FIRST_CHUNK = b"first chunk\n"
CLOSE_BODY = b"body before a failing close\n"


class AppError(RuntimeError):
    """The deliberate failure of this application."""


class FailingClose:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self.body

    def close(self) -> None:
        raise AppError("close() failed on purpose")


def _after(start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
    yield FIRST_CHUNK
    raise AppError("failed after the first chunk on purpose")


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    when = query(environ).get("when") or "before"
    if when == "before":
        raise AppError("failed before start_response on purpose")
    if when == "after":
        return _after(start_response)
    if when == "close":
        start_response(
            "200 OK",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(CLOSE_BODY)))],
        )
        return FailingClose(CLOSE_BODY)
    return simple_response(start_response, "400 Bad Request", f"unknown when={when!r}\n")
