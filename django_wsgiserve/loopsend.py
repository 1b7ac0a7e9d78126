"""Responses the I/O loop thread writes itself, without an application thread: static files
and the errors it finds (bad requests, timeouts, a full request queue).

Design note. ``static.py`` turns a request into a ``StaticResponse`` with whitenoise's rules,
once per request, in the loop thread; ``send_static()`` writes it: the head and the start of
the file at once (``MSG_MORE``, then ``os.sendfile``), the rest queued for the loop to flush;
a small file, which static.py keeps in memory, leaves with its head in one ``send()``. Then
the connection parses the next request, if one is buffered. One access log record per
response, as for the application's responses. ``send_error()`` answers what the loop found
wrong itself and closes the connection (with a lingering close).

Loop thread only. Never imports Django.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Protocol

from .errors import ApplicationError, ClientDisconnectedError
from .http.framing import Framing, choose_framing
from .metrics import STATIC_RESPONSES

if TYPE_CHECKING:
    import threading

    from .context import StaticResponse, WorkerContext
    from .http.events import Request
    from .outbox import OutputQueue

__all__ = ["RETRY_AFTER_HEADER", "LoopResponder", "send_error", "send_static"]

logger = logging.getLogger(__name__)

# A full queue drains in about one request time; a second is what nginx's limit_req users
# usually send. Clients and proxies that honour it come back when there is room.
RETRY_AFTER_HEADER = (("Retry-After", "1"),)


class _Sink(Protocol):
    @property
    def may_keep_alive(self) -> bool: ...

    def get_date(self) -> bytes: ...


class LoopResponder(Protocol):
    """What these functions need of a connection (``connection.Connection``)."""

    context: WorkerContext
    peer: tuple[str, str]
    requests_served: int
    lock: threading.Lock
    outbox: OutputQueue

    @property
    def sink(self) -> _Sink: ...

    def send_from_loop(self, data: bytes) -> None: ...

    def after_response(self, *, keep_alive: bool) -> bool: ...

    def close(self) -> None: ...


def send_error(
    connection: LoopResponder,
    status_code: int,
    reason: str,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> None:
    """Answer an error the loop found itself, then close ``connection`` (loop thread)."""
    if connection.context.metrics is not None:
        connection.context.metrics.count_error(status_code)
    response = connection.context.writer.error_response(
        status_code=status_code,
        reason=reason,
        date=connection.sink.get_date(),
        extra_headers=extra_headers,
    )
    connection.send_from_loop(response)
    connection.after_response(keep_alive=False)


def send_static(connection: LoopResponder, request: Request, response: StaticResponse) -> bool:
    """Send ``response`` to ``request`` on ``connection``; True when the next request may be
    parsed at once (loop thread)."""
    context = connection.context
    started = time.monotonic()
    context.stats.count_request()
    context.stats.static_responses += 1
    connection.requests_served += 1
    framing, keep_alive = choose_framing(
        method=request.method,
        http_version=request.http_version,
        status_code=response.status_code,
        content_length=response.content_length,
        keep_alive=request.keep_alive
        and connection.sink.may_keep_alive
        and context.limits.keepalive_timeout > 0,
    )
    count = response.count if framing is Framing.CONTENT_LENGTH else 0
    try:
        head = _head(connection, request, response, framing=framing, keep_alive=keep_alive)
        with connection.lock:
            if response.body is not None and count:
                connection.outbox.send([head + response.body])  # one send() for both
            else:
                connection.outbox.send_head_and_file(head, response.fd, response.offset, count)
    except ApplicationError:  # WHITENOISE_ADD_HEADERS_FUNCTION made an invalid header
        logger.exception("Invalid static response head for %r", request.target)
        send_error(connection, 500, "Internal Server Error")
        return False
    except ClientDisconnectedError:
        connection.close()
        return False
    finally:
        if response.file is not None:
            response.file.close()
    request_time_s = time.monotonic() - started
    if context.metrics is not None:
        context.metrics.count(STATIC_RESPONSES)
        context.metrics.observe_request(request.method, response.status_code, request_time_s, count)
    if context.access_log is not None:
        context.access_log.log_request(
            request,
            peer=connection.peer[0],
            status_code=response.status_code,
            bytes_sent=count,
            request_time_s=request_time_s,
        )
    return connection.after_response(keep_alive=keep_alive)


def _head(
    connection: LoopResponder,
    request: Request,
    response: StaticResponse,
    *,
    framing: Framing,
    keep_alive: bool,
) -> bytes:
    writer = connection.context.writer
    date = connection.sink.get_date()
    if response.prepared is not None:
        return writer.head_from_prepared(
            response.prepared,
            http_version=request.http_version,
            framing=framing,
            keep_alive=keep_alive,
            date=date,
        )
    return writer.head(
        status=response.status,
        headers=response.headers,
        http_version=request.http_version,
        framing=framing,
        keep_alive=keep_alive,
        date=date,
    )
