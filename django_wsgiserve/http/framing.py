"""How a response body is delimited on the wire: the one place that decides it.

Design note: RFC 9112 §6.3 and RFC 9110 §6.4.1 give a handful of rules that are easy to get
subtly wrong when they are spread over the WSGI layer and the writer (HEAD with a body, 304 with
chunking, streaming to an HTTP/1.0 client). ``choose_framing`` is a pure function of the
request method and version, the status code, whether the application gave a Content-Length
and whether the connection may persist; everything else asks it. ``has_no_content`` says which
statuses never have content, and so never carry a framing header either (the writer drops
them, and the WSGI layer never adds one).
"""

from __future__ import annotations

import enum

__all__ = ["Framing", "choose_framing", "has_no_content"]


class Framing(enum.Enum):
    """The body framing of one response."""

    CONTENT_LENGTH = "content-length"
    CHUNKED = "chunked"
    CLOSE_DELIMITED = "close-delimited"
    NO_BODY = "no-body"


def has_no_content(status_code: int) -> bool:
    """True for 1xx, 204 and 304: responses that never have content (RFC 9110 §6.4.1).

    They carry no framing header either. RFC 9110 §8.6: a server MUST NOT send Content-Length
    in a 1xx or 204 response, and in a 304 only the length a 200 would have had, which the
    server cannot check; what applications send there is usually the length of the empty body
    (Django's CommonMiddleware adds "Content-Length: 0" to every 204 and 304). RFC 9112 §6.1:
    no Transfer-Encoding in a 1xx or 204 either.
    """
    return status_code < 200 or status_code == 204 or status_code == 304


def choose_framing(
    *,
    method: bytes,
    http_version: bytes,
    status_code: int,
    content_length: int | None,
    keep_alive: bool,
) -> tuple[Framing, bool]:
    """Return ``(framing, keep_alive_after)`` for a response.

    RFC 9110 §6.4.1 / RFC 9112 §6.3: 1xx, 204 and 304 responses never have content, nor does
    any response to HEAD (its headers are those a GET would get, so keep-alive is unaffected).
    Otherwise a known Content-Length wins; an HTTP/1.1 client gets chunked coding; an HTTP/1.0
    client can only be sent an unknown-length body by closing the connection after it.
    ``keep_alive_after`` is ``keep_alive`` unless the framing is close-delimited.
    """
    if has_no_content(status_code) or method == b"HEAD":
        return Framing.NO_BODY, keep_alive
    if content_length is not None:
        return Framing.CONTENT_LENGTH, keep_alive
    if http_version == b"1.1":
        return Framing.CHUNKED, keep_alive
    # RFC 9112 §6.3 rule 8: without a length, the body ends when the connection closes.
    return Framing.CLOSE_DELIMITED, False
