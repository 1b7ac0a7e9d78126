"""The events RequestParser hands to the connection layer.

Design note: events are plain values: frozen, slotted dataclasses, compared by value, safe to
pass between threads. Per request a parser emits ``Request``, zero or more ``Data`` and one
``EndOfMessage``; when the peer has closed its side between requests it emits
``ConnectionClosed``. ``NEED_DATA`` is not an event but a signal: feed more bytes.
All bytes are exactly as received, except header names, which are lower-cased once here so
that nobody downstream lower-cases them again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union

__all__ = [
    "NEED_DATA",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Event",
    "ParserSignal",
    "Request",
]


class ParserSignal(enum.Enum):
    """What ``RequestParser.next_event()`` returns when it has no event to give."""

    NEED_DATA = "NEED_DATA"


NEED_DATA = ParserSignal.NEED_DATA


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A parsed request head (request line and header section).

    ``path`` is the origin-form part before ``?``, the path of an absolute-form target (``/``
    when empty), ``*`` for asterisk-form and empty for authority-form; never percent-decoded.
    ``headers`` holds (lower-cased name, value without surrounding OWS) pairs in the order
    received, duplicates kept. ``content_length`` is set only for a Content-Length framed body.
    ``host`` is the absolute-form authority if any (RFC 9112 §3.2.2), else the Host value.
    """

    method: bytes
    target: bytes
    path: bytes
    query: bytes
    http_version: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    content_length: int | None
    is_chunked: bool
    keep_alive: bool
    expect_continue: bool
    host: bytes


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of request body (chunked framing already removed)."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfMessage:
    """The request body is complete; ``trailers`` are a chunked body's trailer fields
    (lower-cased names), empty otherwise."""

    trailers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side of the connection cleanly between two requests."""


# typing.Union rather than "|" keeps the alias usable at runtime on Python 3.10.
Event = Union[Request, Data, EndOfMessage, ConnectionClosed]  # noqa: UP007
