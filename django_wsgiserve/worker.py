"""A worker: one I/O loop (this process's main thread) plus a pool of application threads.

Design note. ``serve()`` is the whole life of a worker, whether it runs inside the command's
own process or in a process forked by the master: build the pool and the loop, install signal
handlers that only *record* (SIGTERM and SIGINT ask for a graceful drain; a second one cuts the
drain short), run the loop until it has drained, then give running requests what is left of
GRACEFUL_TIMEOUT and log how many were still running.

Must not import Django: the application is passed in, already loaded.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from .accesslog import AccessLog
from .loop import Loop
from .pool import ThreadPool

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Sequence

    from .config import ServerConfig
    from .wsgi import WSGIApplication

__all__ = ["serve"]

logger = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def serve(
    config: ServerConfig,
    listeners: Sequence[socket.socket],
    application: WSGIApplication,
    *,
    on_ready: Callable[[], None] | None = None,
    multiprocess: bool = False,
) -> None:
    """Serve ``application`` on ``listeners`` until SIGTERM/SIGINT, then drain (main thread)."""
    access_log = None
    if config.access_log:
        access_log = AccessLog(
            format=config.access_log_format,
            logger=logging.getLogger("django_wsgiserve.access"),
        )
    pool = ThreadPool(threads=config.threads)
    loop = Loop(
        config=config,
        listeners=listeners,
        application=application,
        pool=pool,
        access_log=access_log,
        multiprocess=multiprocess,
    )
    # Under --reload, Django's autoreloader runs us in a thread: signals stay with it.
    is_main_thread = threading.current_thread() is threading.main_thread()
    previous = _install_signal_handlers(loop) if is_main_thread else {}
    pool.start()
    try:
        loop.run(on_ready=on_ready)
    finally:
        _restore_signal_handlers(previous)
    # Running requests get what is left of GRACEFUL_TIMEOUT (at least a moment to notice
    # that their connections were closed).
    remaining = loop.drain_deadline - time.monotonic()
    still_running = pool.shutdown(deadline_s=max(0.5, remaining))
    if still_running:
        logger.warning("%d request(s) were still running at exit", still_running)
    logger.info("Worker stopped after %d request(s)", loop.requests_served)


def _install_signal_handlers(loop: Loop) -> dict[int, Any]:
    received: list[int] = []

    def on_stop_signal(signum: int, frame: object) -> None:
        # Only record and wake the loop: no logging, locks or I/O in a signal handler.
        received.append(signum)
        loop.request_stop(immediate=len(received) > 1)

    previous: dict[int, Any] = {}
    for signum in _STOP_SIGNALS:
        previous[signum] = signal.signal(signum, on_stop_signal)
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
