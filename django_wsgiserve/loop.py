"""The worker's I/O loop: accept, read, write, timers, wake-ups, graceful drain.

Design note. One thread (the worker's main thread) runs ``Loop.run``. It owns the selector and
every socket registration; pool threads never touch the selector. They ask the loop to do
things with ``call_soon_threadsafe``, which puts a callable on a ``SimpleQueue`` and writes one
byte to the wake-up pipe unless a wake-up is already pending.

Once a second (the *tick*) the loop refreshes the cached ``Date`` header and sweeps the
connections for deadlines: the request head (HEADER_TIMEOUT, answered with 408), the gap
between body reads (BODY_TIMEOUT, 408), idle keep-alive (KEEPALIVE_TIMEOUT, closed quietly)
and clients that stop reading (WRITE_TIMEOUT, closed). A sweep is O(connections), which at
10,000 connections costs about a millisecond a second.

When the number of connections reaches MAX_CONNECTIONS, the listeners are unregistered, so
the excess waits in the kernel's backlog (or goes to another worker) instead of here. When
MAX_QUEUED_REQUESTS requests already wait for a thread, a new request is answered at once with
503 and Retry-After (and a WARNING at most every ``_OVERLOAD_LOG_INTERVAL_S``), so a burst
cannot build a queue that clients time out in anyway.
In a forked worker the listeners are shared with the other workers: the loop publishes its
connection count and, holding more than its share, unregisters the listeners for a few
milliseconds so that a worker with fewer takes the next connection (``balance.py``).

Shutdown is an explicit state: ``request_stop()`` (safe from a signal handler) starts a drain,
which must lose no request that is on its way:

* The loop stops watching the listeners and takes what already waits in their backlog (on a
  full shutdown nobody else will), so a connection the kernel accepted is served, not reset.
* Requests running or buffered are answered; a response whose head goes out during the drain
  says ``Connection: close``. One whose head promised keep-alive before the drain began keeps
  its promise: the connection goes back to reading like any idle one.
* Idle keep-alive connections (and accepted ones still silent) stay open and readable for
  DRAIN_KEEPALIVE_TIMEOUT, because a client or proxy may be sending on one right now; a
  request that arrives is answered with ``Connection: close``. Then each is closed with a
  lingering close (``Connection.linger``: half-close, discard input until EOF or ``LINGER_S``),
  so the kernel never answers a late packet with a reset that destroys a response in flight.
  While draining, deadlines are checked every ``_DRAIN_SWEEP_S`` rather than once a tick.
* The loop leaves once no connection is left, or when GRACEFUL_TIMEOUT has passed, and logs
  one INFO line with the drain's counts.

What stays possible: a client that sends on a connection idle for longer than the window at
the very moment it is closed. A proxy whose upstream idle timeout is shorter than the window
closes such a connection first (docs/signals.md).

Hooks for the worker process: ``on_tick(now)`` runs at the end of every tick (heartbeat, stuck
requests, recycling), ``on_drain()`` when a drain begins, and ``in_flight`` maps the thread
ident of every running request to its method, target and start time.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import queue
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from . import tls
from .balance import BACKOFF_S
from .connection import Connection, ConnectionState, WorkerStats
from .http.writer import ResponseWriter
from .proxy import parse_trusted_proxies
from .wsgi import EnvironTemplate, RequestCycle

if TYPE_CHECKING:
    import io
    from collections.abc import Callable, Sequence

    from .accesslog import AccessLog
    from .balance import WorkerShare
    from .config import ServerConfig
    from .connection import StaticResponder
    from .http.events import Request
    from .pool import ThreadPool
    from .wsgi import WSGIApplication

__all__ = ["Limits", "Loop", "LoopState"]

logger = logging.getLogger(__name__)

_ACCEPTS_PER_EVENT = 64
# Workers of one master share the listening sockets and all wake for each new connection.
# Taking 64 at a time, the first one awake took a whole burst (wrk's 32 connections all went
# to one of two workers, benchmarks/scaling.py); one at a time, the others get their turn.
# EPOLLEXCLUSIVE (through a nested epoll, as selectors cannot ask for it) was measured and is
# worse: the kernel keeps waking the same worker, which got all 32 connections in 2 of 3 runs.
_ACCEPTS_PER_EVENT_SHARED = 1
_TICK_S = 1.0
# While draining, deadlines are checked this often instead of once a tick: an idle connection
# leaves within 0.1 s of its window and the worker exits soon after its last connection.
_DRAIN_SWEEP_S = 0.1
_OVERLOAD_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The plain numbers connections need, taken from ServerConfig once."""

    max_request_line: int
    max_headers: int
    max_header_bytes: int
    max_body_bytes: int
    body_buffer_bytes: int
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    drain_keepalive_timeout: float
    write_timeout: float

    @classmethod
    def from_config(cls, config: ServerConfig) -> Limits:
        return cls(
            max_request_line=config.max_request_line,
            max_headers=config.max_headers,
            max_header_bytes=config.max_header_bytes,
            max_body_bytes=config.max_body_bytes,
            body_buffer_bytes=config.body_buffer_bytes,
            header_timeout=config.header_timeout,
            body_timeout=config.body_timeout,
            keepalive_timeout=config.keepalive_timeout,
            drain_keepalive_timeout=config.drain_keepalive_timeout,
            write_timeout=config.write_timeout,
        )


class LoopState(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(slots=True)
class _DrainRecord:
    """What a drain found and did, for its one log line (loop thread)."""

    started: float
    connections: int
    running: int
    requests_before: int
    from_backlog: int
    idle_closed: int = 0


class _Listener:
    __slots__ = ("is_unix", "sock", "template")

    def __init__(self, sock: socket.socket, template: EnvironTemplate) -> None:
        self.sock = sock
        self.template = template
        self.is_unix = sock.family == socket.AF_UNIX


class Loop:
    """Selector loop of one worker process. ``run`` in the main thread; see module notes."""

    def __init__(
        self,
        *,
        config: ServerConfig,
        listeners: Sequence[socket.socket],
        application: WSGIApplication,
        pool: ThreadPool,
        access_log: AccessLog | None,
        multiprocess: bool = False,
        clock: Callable[[], float] = time.monotonic,
        on_tick: Callable[[float], None] | None = None,
        on_drain: Callable[[], None] | None = None,
        static: StaticResponder | None = None,
        share: WorkerShare | None = None,
    ) -> None:
        self.limits = Limits.from_config(config)
        self.writer = ResponseWriter(server_header=config.server_header)
        self.state = LoopState.RUNNING
        self.now = clock()
        self.date = formatdate(usegmt=True).encode("ascii")
        self.requests_served = 0
        # How long an idle keep-alive connection waits for its next request: KEEPALIVE_TIMEOUT,
        # shortened to DRAIN_KEEPALIVE_TIMEOUT once a drain begins.
        self.idle_timeout = self.limits.keepalive_timeout
        # Requests running in pool threads: thread ident -> (method, target, start time). One
        # dict store and one delete per request; the worker's tick reads it for stuck requests.
        self.in_flight: dict[int, tuple[bytes, bytes, float]] = {}
        self._on_tick = on_tick
        self._accepts_per_event = _ACCEPTS_PER_EVENT_SHARED if multiprocess else _ACCEPTS_PER_EVENT
        self._on_drain = on_drain
        self._config = config
        self._application = application
        self._pool = pool
        self.proxies = parse_trusted_proxies(config.trusted_proxies)
        self.proxy_protocol = config.proxy_protocol
        # CERTFILE: every listener speaks TLS (the command has checked the files already).
        self.tls_context = (
            tls.server_context(config.certfile, config.keyfile) if config.certfile else None
        )
        self._max_pending = config.threads + config.max_queued_requests
        self._rejected = 0  # 503s since the last overload warning
        self._overload_logged_at = -_OVERLOAD_LOG_INTERVAL_S
        self._access_log = access_log
        # Static files answered in this thread (connection.py); None when STATIC is off.
        self.static = static
        self.access_log = access_log
        self.stats = WorkerStats()
        self._clock = clock
        self._selector = selectors.DefaultSelector()
        self._connections: set[Connection] = set()
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wakeup_read, self._wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup_pending = False
        self._stop_requested = False
        self._is_accepting = False
        # Accept balance between the master's workers (balance.py): when this worker holds
        # more than its share it stops watching the listeners until _accept_paused_until.
        self._share = share
        self._accept_paused_until = 0.0
        self._drain_deadline = -1.0
        self._drain: _DrainRecord | None = None
        self._next_drain_sweep = 0.0
        self._next_tick = self.now + _TICK_S
        self._listeners = [
            _Listener(sock, _template_for(sock, config, multiprocess)) for sock in listeners
        ]
        self._selector.register(self._wakeup_read, selectors.EVENT_READ, self._on_wakeup)
        for listener in self._listeners:
            # The worker's counters, for applications that want them (tests, debug views).
            listener.template.base["wsgiserve.stats"] = self.stats

    # -- any thread ----------------------------------------------------------------------

    @property
    def is_draining(self) -> bool:
        return self.state is not LoopState.RUNNING

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the loop thread soon (any thread)."""
        self._calls.put(callback)
        if not self._wakeup_pending:
            self._wakeup_pending = True
            with contextlib.suppress(BlockingIOError):
                os.write(self._wakeup_write, b"\0")

    def request_stop(self, *, immediate: bool = False) -> None:
        """Begin a graceful drain, or end it now when ``immediate``. Safe to call from a signal
        handler: it only records and wakes the loop."""
        self._stop_requested = True
        if immediate:
            self._drain_deadline = 0.0
        with contextlib.suppress(OSError):
            os.write(self._wakeup_write, b"\0")

    @property
    def drain_deadline(self) -> float:
        """When a drain must end, on the loop's clock (meaningful once draining)."""
        return self._drain_deadline

    # -- loop thread ---------------------------------------------------------------------

    def run(self, *, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until a requested stop has drained (loop thread)."""
        self.start_accepting()
        if on_ready is not None:
            on_ready()
        while self.state is not LoopState.STOPPED:
            self.step()
        self.close()

    def start_accepting(self) -> None:
        """Watch the listeners; from now on this worker counts in the balance (loop thread)."""
        if self._share is not None:
            self._share.update(len(self._connections))
        self._set_accepting(True)

    def step(self, max_wait_s: float | None = None) -> None:
        """One turn of the loop: wait for events until the next timer is due (or at most
        ``max_wait_s``), handle them, then the timers and the drain (loop thread)."""
        wake_at = self._next_tick
        if self._accept_paused_until:
            wake_at = min(wake_at, self._accept_paused_until)
        if self.state is LoopState.DRAINING:
            wake_at = min(wake_at, self._next_drain_sweep)
        timeout = max(0.0, wake_at - self.now)
        self.run_once(timeout if max_wait_s is None else min(timeout, max_wait_s))
        self.now = now = self._clock()
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._resume_accepting()
        if now >= self._next_tick:
            self._tick(now)
        if self._stop_requested and self.state is LoopState.RUNNING:
            self._begin_drain()
        if self.state is LoopState.DRAINING:
            self._check_drained()

    def run_once(self, timeout: float) -> int:
        """Wait up to ``timeout`` for events and handle them; return how many (loop thread)."""
        events = self._selector.select(timeout)
        # The wait may have lasted up to a tick: deadlines set now (a new connection's
        # HEADER_TIMEOUT) must count from the time the events came, not from before the wait.
        self.now = self._clock()
        for key, mask in events:
            target = key.data
            if type(target) is Connection:
                if mask & selectors.EVENT_READ:
                    target.on_readable()
                if mask & selectors.EVENT_WRITE and target.state is not ConnectionState.CLOSED:
                    target.on_writable()
            else:
                target()
        return len(events)

    def set_interest(self, connection: Connection, *, read: bool, write: bool) -> None:
        """(Un)register ``connection`` for readability and writability (loop thread)."""
        events = (selectors.EVENT_READ if read else 0) | (selectors.EVENT_WRITE if write else 0)
        was_registered = connection.is_reading_enabled or connection.is_writing_enabled
        if events and was_registered:
            self._selector.modify(connection.fd, events, connection)
        elif events:
            self._selector.register(connection.fd, events, connection)
        elif was_registered:
            self._selector.unregister(connection.fd)
        connection.is_reading_enabled = read
        connection.is_writing_enabled = write

    def dispatch(
        self, connection: Connection, request: Request, body: io.IOBase, body_size: int
    ) -> None:
        """Hand a complete request to the pool, or refuse it if the queue is full (loop thread)."""
        if self._pool.pending >= self._max_pending:
            body.close()
            self._reject_overloaded(connection)
            return
        started = self.now
        self.requests_served += 1
        proxies = self.proxies

        def run_request() -> None:
            ident = threading.get_ident()
            self.in_flight[ident] = (request.method, request.target, started)
            try:
                environ = connection.template.build(request, body, body_size, connection.peer)
                proxies.apply(environ)
                cycle = RequestCycle(
                    app=self._application,
                    environ=environ,
                    request=request,
                    sink=connection,
                    writer=self.writer,
                    get_date=self._get_date,
                    access_log=self._access_log,
                    keep_alive=request.keep_alive and self._keepalive_allowed(),
                    started=started,
                )
                cycle.run()
            finally:
                del self.in_flight[ident]
                body.close()

        self._pool.submit(run_request)

    def _reject_overloaded(self, connection: Connection) -> None:
        """503 + Retry-After for a request that found the queue full (loop thread)."""
        connection.send_overloaded_response()
        self._rejected += 1
        if self.now - self._overload_logged_at >= _OVERLOAD_LOG_INTERVAL_S:
            logger.warning(
                "Request queue full: %d request(s) waiting for %d thread(s) "
                "(MAX_QUEUED_REQUESTS %d); answered %d request(s) with 503",
                self._pool.pending - self._config.threads,
                self._config.threads,
                self._config.max_queued_requests,
                self._rejected,
            )
            self._overload_logged_at = self.now
            self._rejected = 0

    def run_in_pool(self, job: Callable[[], None]) -> None:
        """Run ``job`` in a pool thread, e.g. a response's close() after its file was sent
        (loop thread)."""
        self._pool.submit(job)

    def forget(self, connection: Connection) -> None:
        """A connection has closed (loop thread)."""
        if connection.is_reading_enabled or connection.is_writing_enabled:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(connection.fd)
            connection.is_reading_enabled = connection.is_writing_enabled = False
        self._connections.discard(connection)
        if self._share is not None and self.state is LoopState.RUNNING:
            self._share.update(len(self._connections))
        if not self._is_accepting and not self._accept_paused_until:
            self._resume_accepting()

    # -- internals (loop thread) ----------------------------------------------------------

    def _get_date(self) -> bytes:
        return self.date

    def _keepalive_allowed(self) -> bool:
        return self.state is LoopState.RUNNING and self.limits.keepalive_timeout > 0

    def _on_wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wakeup_read, 4096)
        self._wakeup_pending = False
        calls = self._calls
        while True:
            try:
                callback = calls.get_nowait()
            except queue.Empty:
                return
            callback()

    def _accept(self, listener: _Listener) -> None:
        share = self._share
        for _ in range(self._accepts_per_event):
            if share is not None and share.should_yield(len(self._connections)):
                # Another worker holds fewer connections: let it take this one.
                self._set_accepting(False)
                self._accept_paused_until = self.now + BACKOFF_S
                return
            if not self._accept_one(listener):
                return
            if len(self._connections) >= self._config.max_connections:
                self._set_accepting(False)
                return

    def _accept_one(self, listener: _Listener) -> bool:
        """Accept one connection from ``listener``; False when there was none."""
        try:
            sock, address = listener.sock.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            # EMFILE/ENFILE/ENOBUFS: log and let the backlog hold the client for now.
            logger.warning("accept() failed: %s", exc)
            return False
        sock.setblocking(False)
        if listener.is_unix:
            peer = ("", "")
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = (address[0], str(address[1]))
        if self.tls_context is not None:
            # The handshake happens in the loop, non-blocking (Connection.on_readable).
            sock = self.tls_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        connection = Connection(sock, peer, loop=self, template=listener.template, now=self.now)
        self._connections.add(connection)
        if self._share is not None and self.state is LoopState.RUNNING:
            self._share.update(len(self._connections))
        self.set_interest(connection, read=True, write=False)
        return True

    def _accept_backlog(self) -> int:
        """Take every connection waiting in the listeners' backlog, as far as
        MAX_CONNECTIONS allows; return how many (loop thread, at drain start).

        On a reload the other workers would take them too; on a shutdown nobody would, and
        the kernel resets what is left in a backlog when the last listener copy closes."""
        taken = 0
        room = self._config.max_connections - len(self._connections)
        for listener in self._listeners:
            while taken < room and self._accept_one(listener):
                taken += 1
        return taken

    def _resume_accepting(self) -> None:
        """Watch the listeners again, unless draining or at MAX_CONNECTIONS."""
        self._accept_paused_until = 0.0
        if (
            self.state is LoopState.RUNNING
            and len(self._connections) < self._config.max_connections
        ):
            self._set_accepting(True)

    def _set_accepting(self, enabled: bool) -> None:
        if enabled == self._is_accepting:
            return
        for listener in self._listeners:
            if enabled:
                self._selector.register(
                    listener.sock, selectors.EVENT_READ, lambda lst=listener: self._accept(lst)
                )
            else:
                self._selector.unregister(listener.sock)
        self._is_accepting = enabled

    def _tick(self, now: float) -> None:
        self.date = formatdate(usegmt=True).encode("ascii")
        self._next_tick = now + _TICK_S
        write_timeout = self.limits.write_timeout
        for connection in list(self._connections):
            self._check_deadlines(connection, now, write_timeout)
        if self._on_tick is not None:
            self._on_tick(now)

    def _check_deadlines(self, connection: Connection, now: float, write_timeout: float) -> None:
        if connection.has_pending_output and now - connection.last_progress > write_timeout:
            logger.debug("Write timeout: %s stopped reading", connection.peer[0])
            connection.close()
            return
        deadline = connection.deadline
        if deadline is None or deadline > now:
            return
        state = connection.state
        if state is ConnectionState.CLOSING:
            connection.close()
        elif state is ConnectionState.READING:
            with connection.lock:
                if connection.state is not ConnectionState.READING:
                    return  # a pool thread just handed it back; its deadline is fresh
            if connection.is_idle:
                # A lingering close: a request sent just now gets a FIN, not a reset.
                connection.linger()
                if self._drain is not None:
                    self._drain.idle_closed += 1
            else:
                connection.send_timeout_response()

    def _begin_drain(self) -> None:
        now = self.now
        self.state = LoopState.DRAINING
        if self._drain_deadline != 0.0:  # 0.0: a second signal asked to stop at once
            self._drain_deadline = now + self._config.graceful_timeout
        self._set_accepting(False)
        self._accept_paused_until = 0.0
        if self._share is not None:
            self._share.leave()
        from_backlog = self._accept_backlog()
        if self._on_drain is not None:
            self._on_drain()
        limits = self.limits
        self.idle_timeout = min(limits.keepalive_timeout, limits.drain_keepalive_timeout)
        self._drain = _DrainRecord(
            started=now,
            connections=len(self._connections),
            running=self._pool.busy,
            requests_before=self.requests_served,
            from_backlog=from_backlog,
        )
        self._next_drain_sweep = now  # the idle connections' deadlines shrink at once
        logger.debug(
            "Draining: %d connection(s) open (%d from the listen backlog), %d request(s) running",
            len(self._connections),
            from_backlog,
            self._pool.busy,
        )

    def _check_drained(self) -> None:
        now = self.now
        if now >= self._next_drain_sweep:
            self._next_drain_sweep = now + _DRAIN_SWEEP_S
            self._sweep_while_draining(now)
        if not self._connections:
            self.state = LoopState.STOPPED
        elif now >= self._drain_deadline:
            logger.warning(
                "Graceful timeout (%.1f s) reached: closing %d connection(s), "
                "%d request(s) still running",
                self._config.graceful_timeout,
                len(self._connections),
                self._pool.busy,
            )
            self.state = LoopState.STOPPED
        if self.state is LoopState.STOPPED:
            self._log_drain(now)

    def _sweep_while_draining(self, now: float) -> None:
        """Give idle connections at most the drain window, then apply every deadline."""
        latest = now + self.idle_timeout
        write_timeout = self.limits.write_timeout
        for connection in list(self._connections):
            if connection.is_idle and (connection.deadline is None or connection.deadline > latest):
                # Also catches a pool thread that set a keep-alive deadline as the drain began.
                connection.deadline = latest
            self._check_deadlines(connection, now, write_timeout)

    def _log_drain(self, now: float) -> None:
        drain = self._drain
        if drain is None:  # stopped at once, before a drain began
            return
        logger.info(
            "Drained in %.1f s: %d connection(s) and %d running request(s) at the start "
            "(%d from the listen backlog), %d request(s) answered during the drain, "
            "%d idle connection(s) closed after DRAIN_KEEPALIVE_TIMEOUT (%.1f s), "
            "%d connection(s) cut",
            now - drain.started,
            drain.connections,
            drain.running,
            drain.from_backlog,
            self.requests_served - drain.requests_before,
            drain.idle_closed,
            self.idle_timeout,
            len(self._connections),
        )

    def close(self) -> None:
        """Close every connection, the selector and the wake-up pipe (loop thread)."""
        for connection in list(self._connections):
            connection.close()
        self._set_accepting(False)
        self._selector.close()
        os.close(self._wakeup_read)
        os.close(self._wakeup_write)


def _template_for(sock: socket.socket, config: ServerConfig, multiprocess: bool) -> EnvironTemplate:
    if sock.family == socket.AF_UNIX:
        server_name, server_port = "localhost", "80"
    else:
        address: Any = sock.getsockname()
        server_name, server_port = address[0], str(address[1])
    return EnvironTemplate(
        server_name=server_name,
        server_port=server_port,
        script_name=config.script_name,
        url_scheme="https" if config.certfile else "http",
        multiprocess=multiprocess,
    )
