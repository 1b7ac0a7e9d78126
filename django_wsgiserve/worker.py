"""A worker: one I/O loop (this process's main thread) plus a pool of application threads.

Design note. ``serve()`` is the whole life of a worker: build the pool and the loop, install
signal handlers that only *record*, run the loop until it has drained, then give running
requests what is left of GRACEFUL_TIMEOUT and log how many were still running. It runs either
in the command's own process (``--reload``) or in a process forked by the master, which enters
through ``run_child()`` and never returns into the master's code: ``run_child`` ends with
``os._exit`` and an ``errors.WorkerExitCode`` (APP_LOAD_FAILED when the application cannot be
imported, BOOT_FAILED for any other failure before serving), so the master can halt instead of
respawning a worker that can never work.

Talking to the master (forked workers only): one pipe per worker, written by the worker and read
by the master, carrying single bytes: ``MESSAGE_READY`` once the loop accepts,
``MESSAGE_HEARTBEAT`` at every loop tick (once a second, from the loop thread: a long request in
an application thread is not silence, a wedged loop is) and ``MESSAGE_RETIRE`` when the worker
wants to be replaced. Writes are non-blocking and a full pipe drops the byte: any byte counts as
a heartbeat. SIGABRT dumps every thread's traceback to stderr (``faulthandler``) before the
process dies, which is what the master sends a silent worker.

The tick (``_Monitor.on_tick``, loop thread) also: logs at CRITICAL every request running longer
than TIMEOUT, with the traceback of its thread, *before* anything is killed, then asks to be
retired; retires after MAX_REQUESTS (+ jitter) requests or past MAX_WORKER_MEMORY of RSS (read
from ``/proc/self/statm``); reopens log files after SIGUSR1; and stops if the master has gone.
Retiring means: the master starts a replacement, and once it serves sends this worker SIGTERM,
so capacity never drops. The checks run once a second, so a worker may serve a second's worth
of requests past MAX_REQUESTS.

Signals in a forked worker: TERM and INT drain (a second TERM does not cut the drain short: under
``killpg`` or systemd's KillMode=control-group both master and workers receive it; a second INT,
a second CONTROL-C, does), QUIT stops at once, USR1 reopens logs; HUP, TTIN and TTOU (meant
for the master, but delivered to the whole group by a terminal) are ignored.

Lifecycle hooks (hooks.py, sent as Django signals by the command): WORKER_STARTING right after
fork (a failure there is a boot failure), WORKER_READY once the application is loaded and before
the loop accepts, WORKER_STOPPING from the loop's ``on_drain``, WORKER_STOPPED once drained.

Must not import Django: the application is passed in, already loaded, or loaded by a callable.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import importlib
import logging
import os
import random
import signal
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, NoReturn

from .accesslog import AccessLog
from .errors import HookError, WorkerExitCode
from .hooks import Hook, Hooks, drain_callback, start_worker
from .metrics import RETIRED_MAX_REQUESTS, RETIRED_MEMORY
from .pool import ThreadPool
from .server import build_server
from .sockets import raise_file_limit

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Iterable, Sequence

    from .balance import WorkerShare
    from .config import ServerConfig
    from .context import StaticResponder
    from .loop import Loop
    from .metrics import WorkerMetrics
    from .scoreboard import WorkerScoreboard
    from .server import WorkerServer
    from .wsgi import WSGIApplication

__all__ = [
    "MESSAGE_HEARTBEAT",
    "MESSAGE_READY",
    "MESSAGE_RETIRE",
    "reopen_log_files",
    "rss_bytes",
    "run_child",
    "serve",
    "set_process_title",
]

logger = logging.getLogger(__name__)

MESSAGE_READY = b"R"
MESSAGE_HEARTBEAT = b"."
MESSAGE_RETIRE = b"X"

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_IGNORED_IN_CHILD = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH)


def serve(
    config: ServerConfig,
    listeners: Sequence[socket.socket],
    application: WSGIApplication,
    *,
    on_ready: Callable[[], None] | None = None,
    multiprocess: bool = False,
    channel_fd: int | None = None,
    static: StaticResponder | None = None,
    share: WorkerShare | None = None,
    hooks: Hooks | None = None,
    number: int = 1,
    metrics: WorkerMetrics | None = None,
    scoreboard: WorkerScoreboard | None = None,
) -> None:
    """Serve ``application`` on ``listeners`` until SIGTERM/SIGINT, then drain (main thread).

    ``channel_fd`` is the write end of the pipe to the master and ``share`` this worker's slot
    in the master's accept balance table, for forked workers only. ``hooks`` get WORKER_READY,
    WORKER_STOPPING and WORKER_STOPPED (hooks.py), with ``number``. ``metrics``: this
    worker's slot in the master's metrics table (METRICS_BIND; metrics.py); ``scoreboard``:
    its slot in the master's scoreboard (scoreboard.py).
    """
    hooks = hooks or Hooks()
    access_log = None
    if config.access_log:
        access_log = AccessLog(
            format=config.access_log_format,
            logger=logging.getLogger("django_wsgiserve.access"),
        )
    # Connections, listeners, log files and the pool's spare descriptors (sendfile dups).
    raise_file_limit(needed=config.max_connections + config.threads + 64)
    pool = ThreadPool(threads=config.threads)
    monitor = _Monitor(config, channel_fd=channel_fd, scoreboard=scoreboard)
    server = build_server(
        config=config,
        listeners=listeners,
        application=application,
        pool=pool,
        access_log=access_log,
        multiprocess=multiprocess,
        on_tick=monitor.on_tick,
        # A forked worker closes its copies of the listeners when it drains, so that once every
        # process has, new connections are refused rather than left in the backlog.
        on_drain=drain_callback(
            hooks,
            number=number,
            before=(lambda: _close_sockets(listeners)) if channel_fd is not None else None,
        ),
        static=static,  # static.build_static_table(), built once before fork
        share=share,
        metrics=metrics,
        serve_in_threads=True,
        scoreboard=scoreboard,
    )
    loop = server.loop
    monitor.server = server
    monitor.pool = pool
    monitor.metrics = metrics
    # Under --reload, Django's autoreloader runs us in a thread: signals stay with it.
    is_main_thread = threading.current_thread() is threading.main_thread()
    previous = _install_signal_handlers(loop, monitor) if is_main_thread else {}
    if config.batch_scheduling:
        _use_batch_scheduling()  # before pool.start(): new threads inherit the policy
    pool.start()
    # Everything loaded so far (Django, the project) lives as long as the worker: move it out
    # of the collector's sight. Full collections then stop walking it on every pass, which
    # measured 9 us a request on testproject's /json at 64 connections, and pages shared
    # with the master after fork stay shared.
    gc.collect()
    gc.freeze()

    def ready() -> None:
        monitor.send(MESSAGE_READY)
        if on_ready is not None:
            on_ready()

    hooks.send(Hook.WORKER_READY, number=number)
    try:
        loop.run(on_ready=ready)
    finally:
        if channel_fd is None:  # a forked worker keeps them: a late TERM must not kill it
            _restore_signal_handlers(previous)
    # Running requests get what is left of GRACEFUL_TIMEOUT (at least a moment to notice
    # that their connections were closed).
    remaining = loop.drain_deadline - time.monotonic()
    still_running = pool.shutdown(deadline_s=max(0.5, remaining))
    if still_running:
        logger.warning("%d request(s) were still running at exit", still_running)
    if access_log is not None:
        access_log.flush()  # the lines of requests that ended after the loop did
    monitor.publish_metrics()  # the last counts, for the master to fold
    requests = server.context.stats.requests
    logger.info("Worker stopped after %d request(s)", requests)
    hooks.send(Hook.WORKER_STOPPED, number=number, requests=requests)


def _use_batch_scheduling() -> None:
    """BATCH_SCHEDULING: the calling thread, and the threads it starts later, under SCHED_BATCH.

    Our threads hand work to each other under the GIL. Under the default policy a thread the
    kernel wakes (the loop thread given a readable socket, a pool thread given a request)
    preempts the running thread, which usually holds the GIL: the woken thread runs only to
    block on the GIL, and the holder resumes after a second context switch. SCHED_BATCH
    threads are scheduled as fairly as normal ones but never preempt on wakeup, so the holder
    reaches its next blocking call (where it drops the GIL) first. The price: they do not
    preempt other processes either, so a request arriving while a database on the same core
    runs waits for that process's time slice. Unprivileged; a warning where it is refused.
    """
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        logger.warning("BATCH_SCHEDULING is ignored: SCHED_BATCH is Linux only")
        return
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError as exc:  # a seccomp filter or a container may forbid it
        logger.warning("BATCH_SCHEDULING is ignored: SCHED_BATCH was refused (%s)", exc)


def run_child(
    config: ServerConfig,
    listeners: Sequence[socket.socket],
    *,
    load_application: Callable[[], WSGIApplication],
    preloaded: WSGIApplication | None,
    number: int,
    channel_fd: int,
    close_fds: Iterable[int],
    signal_mask: Iterable[int],
    title: str,
    static: StaticResponder | None = None,
    share: WorkerShare | None = None,
    cpu: int | None = None,
    hooks: Hooks | None = None,
    metrics: WorkerMetrics | None = None,
    scoreboard: WorkerScoreboard | None = None,
) -> NoReturn:
    """The whole life of a forked worker; ends the process with a ``WorkerExitCode``.

    ``cpu``: pin the worker to this CPU (CPU_AFFINITY); threads started later inherit it.
    ``hooks``: WORKER_STARTING before the application is loaded (its failure is a boot
    failure), then those ``serve`` sends.
    """
    hooks = hooks or Hooks()
    code: int = WorkerExitCode.BOOT_FAILED
    try:
        _reset_after_fork(close_fds, signal_mask)
        if cpu is not None:
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError as exc:
                logger.warning("Worker %d could not be pinned to CPU %d: %s", number, cpu, exc)
        set_process_title(f"django-wsgiserve: worker {number} {title}".rstrip())
        start_worker(hooks, number=number)
        try:
            application = preloaded if preloaded is not None else load_application()
        except Exception:
            logger.exception(
                "Worker %d (pid %d) could not load the application", number, os.getpid()
            )
            code = WorkerExitCode.APP_LOAD_FAILED
        else:
            code = 1  # booted: a failure from here on is not a boot failure
            serve(
                config,
                listeners,
                application,
                multiprocess=True,
                channel_fd=channel_fd,
                static=static,
                share=share,
                hooks=hooks,
                number=number,
                metrics=metrics,
                scoreboard=scoreboard,
            )
            code = WorkerExitCode.OK
    except HookError:
        pass  # logged by start_worker, with the receiver's traceback
    except BaseException:
        logger.exception("Worker %d (pid %d) failed", number, os.getpid())
    finally:
        with contextlib.suppress(BaseException):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _reset_after_fork(close_fds: Iterable[int], signal_mask: Iterable[int]) -> None:
    """Forget the master's signal handlers and file descriptors (child, before anything)."""
    for signum in (*_STOP_SIGNALS, signal.SIGQUIT, signal.SIGUSR1, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    for signum in _IGNORED_IN_CHILD:
        signal.signal(signum, signal.SIG_IGN)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    # The master blocked its signals around fork(); handlers are ours now, so unblock.
    signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)
    for fd in close_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    # SIGABRT (sent by the master to a silent worker) dumps every thread's stack to stderr.
    faulthandler.enable(all_threads=True)


def _close_sockets(listeners: Sequence[socket.socket]) -> None:
    for sock in listeners:
        sock.close()


class _Monitor:
    """The worker's tick hook (loop thread) and its line to the master; see module notes."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        channel_fd: int | None,
        scoreboard: WorkerScoreboard | None = None,
    ) -> None:
        self.server: WorkerServer | None = None
        self.pool: ThreadPool | None = None
        self.metrics: WorkerMetrics | None = None
        self.scoreboard = scoreboard
        self.should_reopen_logs = False
        self._config = config
        self._channel_fd = channel_fd
        self._master_pid = os.getppid()
        self._is_retiring = False
        self._reported: set[tuple[int, float]] = set()
        self._max_requests = 0
        if config.max_requests:
            self._max_requests = config.max_requests + random.randint(0, config.max_requests_jitter)

    def send(self, message: bytes) -> None:
        """Tell the master something (loop thread); dropped when the pipe is full or gone."""
        if self._channel_fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._channel_fd, message)

    def on_tick(self, now: float) -> None:
        """Once a second, at the end of the loop's tick (loop thread)."""
        server = self.server
        assert server is not None
        loop = server.loop
        self.send(MESSAGE_HEARTBEAT)
        self.publish_metrics()
        if self.should_reopen_logs:
            self.should_reopen_logs = False
            reopen_log_files()
        if self._config.timeout:
            self._report_stuck_requests(server.dispatcher.in_flight, now)
        if self._channel_fd is None:
            return  # no master: nothing to retire to
        requests = server.context.stats.requests
        if self._max_requests and requests >= self._max_requests:
            self.retire(f"served {requests} requests (MAX_REQUESTS)", RETIRED_MAX_REQUESTS)
        elif self._config.max_worker_memory:
            rss = rss_bytes()
            if rss > self._config.max_worker_memory:
                self.retire(f"uses {rss} bytes of memory (MAX_WORKER_MEMORY)", RETIRED_MEMORY)
        if os.getppid() != self._master_pid and not loop.is_draining:
            logger.warning("Worker (pid %d): the master has gone; stopping", os.getpid())
            loop.request_stop()

    def publish_metrics(self) -> None:
        """This worker's gauges, for the master's /metrics and its control socket's status
        (loop thread, or after the loop)."""
        server, pool, metrics, scoreboard = self.server, self.pool, self.metrics, self.scoreboard
        if server is None or pool is None:
            return
        busy = pool.busy
        if scoreboard is not None:
            scoreboard.publish(
                requests=server.context.stats.requests,
                connections=len(server.loop.connections),
                busy=busy,
                queued=max(0, pool.pending - busy),
            )
        if metrics is None:
            return
        metrics.publish(
            sendfile_bytes=server.context.stats.sendfile_bytes,
            connections=len(server.loop.connections),
            busy=busy,
            idle=max(0, self._config.threads - busy),
            queued=max(0, pool.pending - busy),
        )

    def retire(self, reason: str, metric: float = 0.0) -> None:
        """Ask the master for a replacement, once (loop thread); ``metric``: the reason's
        RETIRE_REASON value (metrics.py)."""
        if self._is_retiring or self._channel_fd is None:
            return
        self._is_retiring = True
        if metric and self.metrics is not None:
            self.metrics.set_retire_reason(metric)
        logger.info("Worker (pid %d) %s: asking to be replaced", os.getpid(), reason)
        self.send(MESSAGE_RETIRE)

    def _report_stuck_requests(
        self, running: dict[int, tuple[bytes, bytes, float]], now: float
    ) -> None:
        timeout = self._config.timeout
        in_flight = running.copy()  # one C call: atomic against the pool threads
        self._reported.intersection_update((ident, item[2]) for ident, item in in_flight.items())
        frames: dict[int, Any] | None = None
        for ident, (method, target, started) in in_flight.items():
            age = now - started
            if age <= timeout or (ident, started) in self._reported:
                continue
            self._reported.add((ident, started))
            if frames is None:
                frames = sys._current_frames()
            frame = frames.get(ident)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(gone)\n"
            logger.critical(
                "Request running for %.1f s (TIMEOUT is %.1f s): %s %s in worker pid %d, "
                "thread %d. Its traceback, most recent call last:\n%s",
                age,
                timeout,
                method.decode("latin-1"),
                target.decode("latin-1"),
                os.getpid(),
                ident,
                stack.rstrip("\n"),
                extra={"worker_pid": os.getpid(), "request_time_ms": int(age * 1000)},
            )
            self.retire("has a stuck request")


def rss_bytes() -> int:
    """This process's resident set size in bytes; 0 where /proc is not available."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def reopen_log_files() -> None:
    """Close the stream of every ``logging.FileHandler``; each reopens it at its next record
    (after logrotate moved the file). Main thread, outside signal handlers."""
    handlers = list(logging.root.handlers)
    for candidate in list(logging.root.manager.loggerDict.values()):
        if isinstance(candidate, logging.Logger):
            handlers.extend(candidate.handlers)
    for handler in set(handlers):
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream is not None:
                    handler.stream.close()
                    handler.stream = None
            finally:
                handler.release()


def set_process_title(title: str) -> None:
    """Set the process title when ``setproctitle`` is installed (it is not a dependency)."""
    try:
        module = importlib.import_module("setproctitle")
    except ImportError:
        return
    module.setproctitle(title)


def _install_signal_handlers(loop: Loop, monitor: _Monitor) -> dict[int, Any]:
    received: list[int] = []
    is_child = monitor._channel_fd is not None

    def on_stop_signal(signum: int, frame: object) -> None:
        # Only record and wake the loop: no logging, locks or I/O in a signal handler.
        received.append(signum)
        repeated = received.count(signal.SIGINT) > 1 if is_child else len(received) > 1
        loop.request_stop(immediate=repeated or signum == signal.SIGQUIT)

    def on_usr1(signum: int, frame: object) -> None:
        monitor.should_reopen_logs = True

    previous: dict[int, Any] = {}
    for signum in _STOP_SIGNALS:
        previous[signum] = signal.signal(signum, on_stop_signal)
    if is_child:
        previous[signal.SIGQUIT] = signal.signal(signal.SIGQUIT, on_stop_signal)
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, on_usr1)
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
