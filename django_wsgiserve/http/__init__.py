"""The sans-I/O HTTP/1.1 layer: bytes in, events out; status and headers in, bytes out.

Design note: nothing in this package performs I/O, keeps module-level state, or imports
anything but the stdlib and ``django_wsgiserve.errors`` (no socket, select, threading, os,
logging or django). The connection layer owns the socket and drives a ``RequestParser`` and a
``ResponseWriter``; ``choose_framing`` is the one place that decides how a body is delimited.
``http.cgi`` holds what the gateway protocols (``uwsgi/``, ``fastcgi/``) share: the CGI
variables a proxy sends and the ``CGIRequest`` they make.
"""

from __future__ import annotations

from django_wsgiserve.http.events import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    ParserSignal,
    Request,
)
from django_wsgiserve.http.framing import Framing, choose_framing, has_no_content
from django_wsgiserve.http.parser import RequestParser
from django_wsgiserve.http.writer import LAST_CHUNK, ResponseWriter, encode_chunk

__all__ = [
    "LAST_CHUNK",
    "NEED_DATA",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Event",
    "Framing",
    "ParserSignal",
    "Request",
    "RequestParser",
    "ResponseWriter",
    "choose_framing",
    "encode_chunk",
    "has_no_content",
]
