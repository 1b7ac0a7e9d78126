"""Plain WSGI "Hello, World!": measures a server's own per-request overhead.

No Django, no framework: the app costs well under a microsecond, so nearly all the time
a server spends on this endpoint is the server itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["BODY", "application"]

BODY = b"Hello, World!"
_HEADERS = (("Content-Type", "text/plain"), ("Content-Length", str(len(BODY))))


def application(
    environ: dict[str, object], start_response: Callable[..., object]
) -> Iterable[bytes]:
    """Answer every request with 200 and a 13-byte body of known length."""
    # A fresh list each time: some servers append their own headers to the one they are given.
    start_response("200 OK", list(_HEADERS))
    return [BODY]
