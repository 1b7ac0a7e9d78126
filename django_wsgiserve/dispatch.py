"""Dispatcher: the hand-off of complete requests from the I/O loop to the thread pool.

Design note. The loop thread calls ``dispatch()`` once a request (head and body) is complete;
everything WSGI happens in the pool thread that runs it: the environ (from the listener's
``EnvironTemplate``, with the trusted proxies' headers applied), the ``RequestCycle``, and the
in-flight table the worker's tick reads for stuck requests. When MAX_QUEUED_REQUESTS requests
already wait for a thread, a new one is answered at once with 503 and Retry-After (and a
WARNING at most every ``_OVERLOAD_LOG_INTERVAL_S``), so a burst cannot build a queue that
clients time out in anyway.

Threads: ``dispatch()`` in the loop thread; ``in_flight`` is written by pool threads (one dict
store and one delete per request) and copied by the loop thread. Each pool thread also writes
its row of the master's scoreboard (scoreboard.py), once when a request starts and once when it
ends.

Never imports Django.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from .gateway import GatewayRequestCycle, build_environ
from .wsgi import EnvironTemplate, RequestCycle, ResponseSink

if TYPE_CHECKING:
    import io
    from collections.abc import Callable

    from .config import ServerConfig
    from .connection import Connection
    from .context import WorkerContext
    from .gateway import GatewayRequest
    from .http.events import Request
    from .metrics import WorkerMetrics
    from .pool import ThreadPool
    from .wsgi import WSGIApplication

__all__ = ["Dispatcher", "Origin", "environ_template"]

logger = logging.getLogger(__name__)

_OVERLOAD_LOG_INTERVAL_S = 10.0


class _Sink(ResponseSink, Protocol):
    def get_date(self) -> bytes: ...


class Origin(Protocol):
    """Where a request came from, as its cycle reads it: a ``Connection``, or a one-shot
    uwsgi connection served by the thread that accepted it (``oneshot.OneShotSink``)."""

    @property
    def peer(self) -> tuple[str, str]: ...

    @property
    def template(self) -> EnvironTemplate: ...

    @property
    def sink(self) -> _Sink: ...


class Dispatcher:
    """Runs complete requests in the pool; see the module notes."""

    def __init__(
        self,
        *,
        config: ServerConfig,
        application: WSGIApplication,
        pool: ThreadPool,
        context: WorkerContext,
        is_keepalive_allowed: Callable[[], bool],
    ) -> None:
        self._application = application
        self._pool = pool
        self._context = context
        self._is_keepalive_allowed = is_keepalive_allowed
        self._threads = config.threads
        self._max_queued = config.max_queued_requests
        self._max_pending = config.threads + config.max_queued_requests
        self._has_trusted_proxies = bool(config.trusted_proxies)
        self._rejected = 0  # 503s since the last overload warning
        self._overload_logged_at = -_OVERLOAD_LOG_INTERVAL_S
        # Requests running in pool threads: thread ident -> (method, target, start time).
        self.in_flight: dict[int, tuple[bytes, bytes, float]] = {}

    def dispatch(
        self,
        connection: Connection,
        request: Request,
        body: io.IOBase,
        body_size: int,
        now: float,
        gateway: GatewayRequest | None = None,
    ) -> None:
        """Hand a complete request to the pool, or refuse it if the queue is full (loop thread).
        ``gateway``: a uwsgi or FastCGI request, of which ``request`` is the view
        (``gateway.py``); its environ comes from its CGI variables."""
        if self._pool.pending >= self._max_pending:
            body.close()
            self._reject_overloaded(connection, now)
            return
        self._context.stats.count_request()
        keep_alive = request.keep_alive and self._is_keepalive_allowed()

        def run_request() -> None:
            self._run(connection, request, gateway, body, body_size, keep_alive, now)

        self._pool.submit(run_request)

    def run_direct(
        self, connection: Connection, request: Request, body: io.IOBase, body_size: int, now: float
    ) -> None:
        """Run the request of a parked connection in this pool thread, which read it
        (``parking.py``): no queue, no 503 (pool thread)."""
        self._context.stats.count_request(parked=True)
        keep_alive = request.keep_alive and self._is_keepalive_allowed()
        self._run(connection, request, None, body, body_size, keep_alive, now)

    def run_here(
        self,
        connection: Origin,
        request: Request,
        body: io.IOBase,
        body_size: int,
        now: float,
        gateway: GatewayRequest,
    ) -> None:
        """Run a one-shot uwsgi request in this pool thread, which accepted its connection
        (``oneshot.py``); ``connection`` has the ``peer``, ``template`` and ``sink`` the cycle
        reads (pool thread)."""
        self._context.stats.count_request()
        self._run(connection, request, gateway, body, body_size, False, now)

    def _run(
        self,
        connection: Origin,
        request: Request,
        gateway: GatewayRequest | None,
        body: io.IOBase,
        body_size: int,
        keep_alive: bool,
        now: float,
    ) -> None:
        """Run one request's cycle, listed in ``in_flight`` while it runs (pool thread)."""
        ident = threading.get_ident()
        in_flight = self.in_flight
        in_flight[ident] = (request.method, request.target, now)
        context = self._context
        scoreboard = context.scoreboard
        if scoreboard is not None:
            scoreboard.begin(request.method, request.target, now)
        metrics = context.metrics
        if metrics is not None:
            self._observe_waits(metrics, connection, request, now)
        try:
            self._cycle(connection, request, gateway, body, body_size, keep_alive, now).run()
        finally:
            del in_flight[ident]
            if scoreboard is not None:
                scoreboard.end()
            body.close()

    def _cycle(
        self,
        connection: Origin,
        request: Request,
        gateway: GatewayRequest | None,
        body: io.IOBase,
        body_size: int,
        keep_alive: bool,
        now: float,
    ) -> RequestCycle:
        """The request's cycle: its environ from the HTTP request, or from a uwsgi or FastCGI
        request's CGI variables, with the response head written by that protocol (pool
        thread)."""
        context = self._context
        peer = connection.peer
        options: dict[str, Any] = {}
        cycle_class: Callable[..., RequestCycle]
        if gateway is None:
            environ = connection.template.build(request, body, body_size, peer)
            cycle_class = RequestCycle
        else:
            environ = build_environ(
                connection.template,
                gateway.variables,
                body,
                body_size,
                peer,
                is_trusted=context.proxies.is_trusted(peer[0]),
            )
            cycle_class = GatewayRequestCycle
            options["head_writer"] = gateway.head_writer
        context.proxies.apply(environ)
        return cycle_class(
            app=self._application,
            environ=environ,
            request=request,
            sink=connection.sink,
            writer=context.writer,
            get_date=connection.sink.get_date,
            access_log=context.access_log,
            keep_alive=keep_alive,
            started=now,
            metrics=context.metrics,
            **options,
        )

    def _observe_waits(
        self, metrics: WorkerMetrics, connection: Origin, request: Request, now: float
    ) -> None:
        """The queue time, and the time since the proxy got the request when a trusted proxy
        sent ``X-Request-Start: t=<seconds since the epoch>`` (nginx ``t=${msec}``) (pool
        thread)."""
        metrics.observe_queue(time.monotonic() - now)
        if not self._has_trusted_proxies:
            return  # nobody's X-Request-Start is believed: no need to look for one
        for name, value in request.headers:
            if name == b"x-request-start":
                peer = connection.peer[0]
                if value.startswith(b"t=") and self._context.proxies.is_trusted(peer):
                    with contextlib.suppress(ValueError):  # not a number: no observation
                        metrics.observe_proxy(time.time() - float(value[2:]))
                return

    def run_in_pool(self, job: Callable[[], None]) -> None:
        """Run ``job`` in a pool thread, e.g. a response's close() after its file was sent
        (any thread)."""
        self._pool.submit(job)

    def _reject_overloaded(self, connection: Connection, now: float) -> None:
        """503 + Retry-After for a request that found the queue full (loop thread)."""
        connection.send_overloaded_response()
        self._rejected += 1
        if now - self._overload_logged_at >= _OVERLOAD_LOG_INTERVAL_S:
            logger.warning(
                "Request queue full: %d request(s) waiting for %d thread(s) "
                "(MAX_QUEUED_REQUESTS %d); answered %d request(s) with 503",
                self._pool.pending - self._threads,
                self._threads,
                self._max_queued,
                self._rejected,
            )
            self._overload_logged_at = now
            self._rejected = 0


def environ_template(
    sock: socket.socket, config: ServerConfig, *, multiprocess: bool, stats: Any = None
) -> EnvironTemplate:
    """The environ keys every request on listener ``sock`` shares."""
    if sock.family == socket.AF_UNIX:
        server_name, server_port = "localhost", "80"
    else:
        address: Any = sock.getsockname()
        server_name, server_port = address[0], str(address[1])
    template = EnvironTemplate(
        server_name=server_name,
        server_port=server_port,
        script_name=config.script_name,
        url_scheme="https" if config.certfile else "http",
        multiprocess=multiprocess,
    )
    if stats is not None:
        # The worker's counters, for applications that want them (tests, debug views).
        template.base["wsgiserve.stats"] = stats
    return template
