"""The serving parts of one worker, wired together: loop, dispatcher, connections.

Design note. ``build_server()`` is the one place that knows every piece: it builds the frozen
``WorkerContext`` from the configuration, the ``Loop`` (sockets and timers only), the
``Dispatcher`` (the hand-off to the thread pool), and for each listener a factory that turns an
accepted socket into a ``Connection`` (with TLS wrapping when CERTFILE is set, and the
listener's environ template), or, on a uwsgi or FastCGI listener (``protocols.py``), into a
connection of that protocol (``gatewayconn.py``). ``worker.serve()`` runs the result; tests
build one around a fake clock and a synchronous pool.

Never imports Django.
"""

from __future__ import annotations

import os
import select
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import tls
from .connection import Connection
from .context import WorkerContext
from .dispatch import Dispatcher, environ_template
from .gatewayconn import FastCGIPeerConnection, UwsgiConnection
from .loop import Loop
from .oneshot import OneShotAcceptor, OneShotListener
from .parking import SATURATED_S, ParkedConnections
from .protocols import ListenerProtocol, protocol_of

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .accesslog import AccessLog
    from .balance import WorkerShare
    from .config import ServerConfig
    from .context import StaticResponder
    from .metrics import WorkerMetrics
    from .pool import ThreadPool
    from .scoreboard import WorkerScoreboard
    from .wsgi import EnvironTemplate, WSGIApplication

__all__ = ["WorkerServer", "build_server"]

_HAS_EPOLL_AND_EVENTFD = hasattr(select, "epoll") and hasattr(os, "eventfd")


@dataclass(frozen=True, slots=True)
class WorkerServer:
    """A worker's loop, dispatcher and shared context."""

    loop: Loop
    dispatcher: Dispatcher
    context: WorkerContext


def build_server(
    *,
    config: ServerConfig,
    listeners: Sequence[socket.socket],
    application: WSGIApplication,
    pool: ThreadPool,
    access_log: AccessLog | None = None,
    static: StaticResponder | None = None,
    multiprocess: bool = False,
    clock: Callable[[], float] = time.monotonic,
    on_tick: Callable[[float], None] | None = None,
    on_drain: Callable[[], None] | None = None,
    share: WorkerShare | None = None,
    metrics: WorkerMetrics | None = None,
    serve_in_threads: bool = False,
    scoreboard: WorkerScoreboard | None = None,
) -> WorkerServer:
    """Build a worker's serving parts for ``listeners``; see the module notes.
    ``serve_in_threads``: the pool's threads may read and accept themselves (a real pool;
    ``oneshot.py``, ``parking.py``)."""
    context = WorkerContext.from_config(
        config, access_log=access_log, static=static, metrics=metrics, scoreboard=scoreboard
    )
    # uwsgi everywhere: the pool threads accept and serve (oneshot.py).
    one_shot: list[OneShotListener] | None = (
        []
        if serve_in_threads
        and listeners
        and not context.is_proxy_protocol
        and all(protocol_of(sock) is ListenerProtocol.UWSGI for sock in listeners)
        else None
    )
    # Otherwise the pool threads serve the parked keep-alive HTTP connections (parking.py).
    parking = (
        ParkedConnections(
            # Running or waiting: set before any request comes (the dispatcher is made below).
            load=lambda: pool.queued + len(dispatcher.in_flight),
            clock=clock,
            on_idle=access_log.flush if access_log is not None else None,
            on_turn=access_log.flush_if_due if access_log is not None else None,
        )
        if serve_in_threads and one_shot is None and _HAS_EPOLL_AND_EVENTFD
        else None  # macOS (development): the loop reads every request
    )
    if parking is not None:
        on_tick = _reclaiming_when_saturated(parking, pool, lambda: dispatcher, on_tick)
    loop = Loop(
        config=config,
        pool=pool,
        stats=context.stats,
        multiprocess=multiprocess,
        clock=clock,
        on_tick=on_tick,
        on_drain=on_drain,
        # The access log's lines of this turn leave in one write.
        on_turn=access_log.flush_if_due if access_log is not None else None,
        share=share,
    )
    keepalive_timeout = config.keepalive_timeout
    dispatcher = Dispatcher(
        config=config,
        application=application,
        pool=pool,
        context=context,
        is_keepalive_allowed=lambda: not loop.is_draining and keepalive_timeout > 0,
    )
    # CERTFILE: every listener speaks TLS (the command has checked the files already).
    tls_context = tls.server_context(config.certfile, config.keyfile) if config.certfile else None
    for sock in listeners:
        template = environ_template(sock, config, multiprocess=multiprocess, stats=context.stats)
        is_unix = sock.family == socket.AF_UNIX
        protocol = protocol_of(sock)
        if protocol is not ListenerProtocol.HTTP:
            factory = gateway_factory(
                protocol,
                config=config,
                loop=loop,
                context=context,
                dispatcher=dispatcher,
                template=template,
                is_unix=is_unix,
            )
            loop.add_listener(sock, factory, watched=one_shot is None)
            if one_shot is not None:
                one_shot.append(OneShotListener(sock, template, _hand_over(loop, factory)))
            continue

        def make_connection(
            client: socket.socket, address: Any, template: Any = template, is_unix: bool = is_unix
        ) -> Connection:
            peer = ("", "") if is_unix else (address[0], str(address[1]))
            if tls_context is not None:
                # The handshake happens in the loop, non-blocking (Connection.on_readable).
                client = tls_context.wrap_socket(
                    client, server_side=True, do_handshake_on_connect=False
                )
            return Connection(
                client,
                peer,
                loop=loop,
                context=context,
                dispatcher=dispatcher,
                template=template,
                parking=parking,
            )

        loop.add_listener(sock, make_connection)
    if one_shot:
        acceptor = OneShotAcceptor(
            one_shot,
            context=context,
            dispatcher=dispatcher,
            get_date=lambda: loop.date,
            threads=config.threads,
        )
        pool.set_work_source(acceptor)
        loop.call_before_drain(acceptor.pause)
    elif parking is not None:
        pool.set_work_source(parking)
        loop.call_before_drain(parking.stop)
    return WorkerServer(loop=loop, dispatcher=dispatcher, context=context)


def _reclaiming_when_saturated(
    parking: ParkedConnections,
    pool: ThreadPool,
    get_dispatcher: Callable[[], Dispatcher],
    on_tick: Callable[[float], None] | None,
) -> Callable[[float], None]:
    """The worker's tick, first taking the parked connections back to the loop when every
    thread has been running the same request for SATURATED_S or more (``parking.py``)."""

    def tick(now: float) -> None:
        if pool.busy >= pool.size:
            started = [entry[2] for entry in list(get_dispatcher().in_flight.values())]
            if len(started) >= pool.size and max(started) <= now - SATURATED_S:
                parking.reclaim_all()
        if on_tick is not None:
            on_tick(now)

    return tick


def _hand_over(
    loop: Loop, make_connection: Callable[[socket.socket, Any], Connection]
) -> Callable[[socket.socket, Any, bytes], None]:
    """How a pool thread gives the loop a uwsgi connection it will not serve itself."""

    def hand_over(client: socket.socket, address: Any, data: bytes) -> None:
        def take() -> None:
            connection = make_connection(client, address)
            loop.add_connection(connection)
            connection.take_over(data)

        loop.call_soon_threadsafe(take)

    return hand_over


def gateway_factory(
    protocol: ListenerProtocol,
    *,
    config: ServerConfig,
    loop: Loop,
    context: WorkerContext,
    dispatcher: Dispatcher,
    template: EnvironTemplate,
    is_unix: bool,
) -> Callable[[socket.socket, Any], Connection]:
    """The connection factory of a uwsgi or FastCGI listener (``gatewayconn.py``). TLS is not
    spoken there: the peer is a web server next to us."""

    def make_connection(client: socket.socket, address: Any) -> Connection:
        peer = ("", "") if is_unix else (address[0], str(address[1]))
        if protocol is ListenerProtocol.UWSGI:
            return UwsgiConnection(
                client, peer, loop=loop, context=context, dispatcher=dispatcher, template=template
            )
        return FastCGIPeerConnection(
            client,
            peer,
            loop=loop,
            context=context,
            dispatcher=dispatcher,
            template=template,
            # Answered to FCGI_GET_VALUES (FCGI_MAX_CONNS, FCGI_MAX_REQS).
            max_conns=config.max_connections,
            max_reqs=config.threads,
        )

    return make_connection
