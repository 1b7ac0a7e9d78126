"""The sans-I/O FastCGI 1.0 layer, Responder role (nginx ``fastcgi_pass``, Apache
``mod_proxy_fcgi``): bytes in, events and protocol replies out; status and headers in,
records out.

Design note: how the connection layer is expected to drive it.

* One ``FastCGIConnection`` per accepted connection, owned by the loop thread. Feed it what
  ``recv`` returns (``feed_eof()`` on EOF); pull events with ``next_event()`` until
  ``NEED_DATA``, and after each call queue ``data_to_send()`` (replies to FCGI_GET_VALUES,
  refusals of a second concurrent request or of an unknown role) on the output.
* Per request: ``CGIRequest`` (its variables make the environ, as for uwsgi: REMOTE_ADDR,
  HTTPS and the other connection variables are believed only when the peer is in
  TRUSTED_PROXIES; with the stock ``fastcgi_params`` PATH_INFO is absent and comes from
  DOCUMENT_URI or REQUEST_URI), ``Data`` pieces of the body, ``EndOfMessage``. A
  ``content_length`` of None means that the body length is known only at ``EndOfMessage``
  (set CONTENT_LENGTH from what was buffered, as for a chunked HTTP body).
* The application's response: ``response_writer()`` gives an immutable
  ``FastCGIResponseWriter`` for the pool thread: ``response_head(status=, headers=)``, then
  ``body(data)`` parts (bytes and memoryviews, for ``sendmsg``). At the end, back on the loop
  thread, ``end_request()`` returns the records that close the request; then, if
  ``keep_alive`` is False, close the connection once they are sent (spec §5.1), else wait for
  the next request. To close a connection the web server asked to keep (a drain), pass
  ``is_closing=True``: a closing notice follows FCGI_END_REQUEST so that the web server does
  not reuse the connection. A 204/304/HEAD response sends no body bytes, as for HTTP.
* ``RequestAborted``: the web server's client went away (spec §5.4): stop the response as
  for a client disconnect and send ``end_request()`` as soon as possible.
* Any ``ProtocolError``: send ``error_response(exc.status_code, exc.reason)`` (a 4xx for the
  active request, or nothing if there is none or the head was already sent), then close.
* ``ConnectionClosed``: the web server closed the connection (between requests, or while the
  application ran: drop the response), or a refused request asked us to close.

nginx uses one request per connection unless ``fastcgi_keep_conn on`` (with ``keepalive`` in
its upstream block) sets FCGI_KEEP_CONN; then requests follow each other on the connection,
always with request id 1, never concurrently; nginx never sends FCGI_GET_VALUES.

Nothing in this package performs I/O, keeps module-level state or imports anything but the
stdlib, ``django_wsgiserve.errors`` and ``django_wsgiserve.http``.
"""

from __future__ import annotations

from django_wsgiserve.fastcgi.connection import FastCGIConnection, FastCGIEvent, RequestAborted
from django_wsgiserve.fastcgi.records import ProtocolStatus, RecordType, Role
from django_wsgiserve.fastcgi.writer import FastCGIResponseWriter
from django_wsgiserve.http.cgi import CGIRequest
from django_wsgiserve.http.events import NEED_DATA, ConnectionClosed, Data, EndOfMessage

__all__ = [
    "NEED_DATA",
    "CGIRequest",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "FastCGIConnection",
    "FastCGIEvent",
    "FastCGIResponseWriter",
    "ProtocolStatus",
    "RecordType",
    "RequestAborted",
    "Role",
]
