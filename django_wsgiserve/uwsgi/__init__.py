"""The sans-I/O uwsgi protocol layer (nginx ``uwsgi_pass``): bytes in, events out; status and
headers in, bytes out.

Design note: how the connection layer is expected to drive it.

* One ``UwsgiRequestParser`` per accepted connection. Feed it what ``recv`` returns
  (``feed_eof()`` on EOF) and pull events with ``next_event()`` until ``NEED_DATA``: one
  ``CGIRequest``, ``Data`` pieces of the body, ``EndOfMessage``. Then run the application as
  for HTTP, with an environ built from ``CGIRequest.variables``; REMOTE_ADDR, HTTPS and the
  other connection variables are believed only when the peer is in TRUSTED_PROXIES (see
  ``http.cgi``), and HTTP_TRANSFER_ENCODING is dropped (nginx has already de-chunked).
* The response is ``UwsgiResponseWriter.head()`` followed by the body bytes as they are, with
  no framing; when the body is done, close the connection (lingering close). Whether there is
  a body at all is decided as for HTTP (none for HEAD, 1xx, 204 and 304 responses).
* Any ``ProtocolError`` from the parser: close the connection. Errors found once the packet
  was read whole (``ContentTooLargeError``, ``InvalidCGIVariableError``,
  ``UnsupportedTransferCodingError``, ``InvalidContentLengthError``) may first be answered
  with ``UwsgiResponseWriter.error_response(exc.status_code, exc.reason)``, which nginx relays
  to its client; a malformed packet (``InvalidUwsgiPacketError``, ``TruncatedRequestError``)
  gets no answer, and nginx answers 502.
* ``ConnectionClosed`` after the request means nginx gave up (its client went away): the
  response can be dropped.

Nothing in this package performs I/O, keeps module-level state or imports anything but the
stdlib, ``django_wsgiserve.errors`` and ``django_wsgiserve.http``.
"""

from __future__ import annotations

from django_wsgiserve.http.cgi import CGIRequest
from django_wsgiserve.http.events import NEED_DATA, ConnectionClosed, Data, EndOfMessage
from django_wsgiserve.uwsgi.parser import UwsgiEvent, UwsgiRequestParser
from django_wsgiserve.uwsgi.writer import UwsgiResponseWriter

__all__ = [
    "NEED_DATA",
    "CGIRequest",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "UwsgiEvent",
    "UwsgiRequestParser",
    "UwsgiResponseWriter",
]
