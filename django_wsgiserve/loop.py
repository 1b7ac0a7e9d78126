"""The worker's I/O loop: accept, wake-ups, timers, graceful drain. Knows sockets, not HTTP.

Design note. One thread (the worker's main thread) runs ``Loop.run``. It owns the selector and
every socket registration; pool threads never touch the selector. They ask the loop to do
things with ``call_soon_threadsafe``, which puts a callable on a ``SimpleQueue`` and writes one
byte to the wake-up pipe unless a wake-up is already pending.

What the loop serves are *handlers* (``Handler``: a ``connection.Connection``), made by each
listener's factory when a connection is accepted; the loop calls their ``on_readable`` and
``on_writable`` and, once a second (the *tick*), their ``check_deadline``, after refreshing the
cached ``Date`` header. A sweep is O(connections), which at 10,000 connections costs about a
millisecond a second. The loop never imports the HTTP, WSGI or connection modules; the
worker wires them together (``server.py``).

When the number of connections reaches MAX_CONNECTIONS, the listeners are unregistered, so
the excess waits in the kernel's backlog (or goes to another worker) instead of here.
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
  lingering close (the handler's: half-close, discard input until EOF or a short cap),
  so the kernel never answers a late packet with a reset that destroys a response in flight.
  While draining, deadlines are checked every ``_DRAIN_SWEEP_S`` rather than once a tick.
* The loop leaves once no connection is left, or when GRACEFUL_TIMEOUT has passed, and logs
  one INFO line with the drain's counts.

What stays possible: a client that sends on a connection idle for longer than the window at
the very moment it is closed. A proxy whose upstream idle timeout is shorter than the window
closes such a connection first (docs/signals.md).

Hooks for the worker process: ``on_tick(now)`` runs at the end of every tick (heartbeat, stuck
requests, recycling), ``on_drain()`` when a drain begins and ``on_turn(now)`` at the end of
every turn of the loop (the access log's batched write).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import queue
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Protocol

from .balance import BACKOFF_S

if TYPE_CHECKING:
    from .balance import WorkerShare
    from .config import ServerConfig
    from .context import WorkerStats
    from .pool import ThreadPool

__all__ = ["ConnectionFactory", "Handler", "Loop", "LoopState"]

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


class Handler(Protocol):
    """What the loop needs of an accepted connection (``connection.Connection``)."""

    fd: int
    is_reading_enabled: bool
    is_writing_enabled: bool

    @property
    def is_closed(self) -> bool: ...

    @property
    def is_idle(self) -> bool: ...

    def on_readable(self) -> None: ...

    def on_writable(self) -> None: ...

    def check_deadline(self, now: float) -> bool:
        """Apply the timeouts; True when an idle connection was closed."""

    def limit_idle_deadline(self, latest: float) -> None: ...

    def close(self) -> None: ...


# Makes the handler of a connection just accepted: (socket, peer address) -> handler.
ConnectionFactory = Callable[[socket.socket, Any], Handler]


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
    """A listening socket and the factory of its connections; readable means accept."""

    __slots__ = ("_loop", "is_unix", "make_connection", "sock", "watched")

    def __init__(
        self,
        loop: Loop,
        sock: socket.socket,
        make_connection: ConnectionFactory,
        *,
        watched: bool = True,
    ) -> None:
        self._loop = loop
        self.sock = sock
        self.make_connection = make_connection
        self.is_unix = sock.family == socket.AF_UNIX
        self.watched = watched

    def on_readable(self) -> None:
        self._loop.accept_from(self)


class _Wakeup:
    """The read end of the wake-up pipe; readable means calls are queued."""

    __slots__ = ("_loop",)

    def __init__(self, loop: Loop) -> None:
        self._loop = loop

    def on_readable(self) -> None:
        self._loop.run_calls()


class Loop:
    """Selector loop of one worker process. ``run`` in the main thread; see module notes."""

    def __init__(
        self,
        *,
        config: ServerConfig,
        pool: ThreadPool,
        stats: WorkerStats,
        multiprocess: bool = False,
        clock: Callable[[], float] = time.monotonic,
        on_tick: Callable[[float], None] | None = None,
        on_drain: Callable[[], None] | None = None,
        on_turn: Callable[[float], None] | None = None,
        share: WorkerShare | None = None,
    ) -> None:
        self.state = LoopState.RUNNING
        self.now = clock()
        self.date = formatdate(usegmt=True).encode("ascii")
        # How long an idle keep-alive connection waits for its next request: KEEPALIVE_TIMEOUT,
        # shortened to DRAIN_KEEPALIVE_TIMEOUT once a drain begins.
        self.idle_timeout = config.keepalive_timeout
        # How many events this turn of the loop handles: one, on a quiet worker.
        self.turn_events = 0
        self._drain_idle_timeout = min(config.keepalive_timeout, config.drain_keepalive_timeout)
        self._max_connections = config.max_connections
        self._graceful_timeout = config.graceful_timeout
        self._on_tick = on_tick
        self._on_turn = on_turn
        self._accepts_per_event = _ACCEPTS_PER_EVENT_SHARED if multiprocess else _ACCEPTS_PER_EVENT
        self._on_drain = on_drain
        self._before_drain: list[Callable[[], None]] = []
        self._pool = pool  # only its counts, for the drain's log lines
        self._stats = stats  # requests answered, for the drain's log line
        self._clock = clock
        self._selector = selectors.DefaultSelector()
        self._connections: set[Handler] = set()
        self._listeners: list[_Listener] = []
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
        self._selector.register(self._wakeup_read, selectors.EVENT_READ, _Wakeup(self))

    def add_listener(
        self, sock: socket.socket, make_connection: ConnectionFactory, *, watched: bool = True
    ) -> None:
        """Accept from ``sock`` once accepting starts; ``make_connection(sock, address)``
        makes the handler of each connection (before ``run``). A listener not ``watched`` is
        accepted from by others (``oneshot.py``); the loop takes its backlog at drain start.
        """
        self._listeners.append(_Listener(self, sock, make_connection, watched=watched))

    def call_before_drain(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` first thing when the drain begins (before ``run``)."""
        self._before_drain.append(callback)

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
    def connections(self) -> frozenset[Handler]:
        """The connections being served, a copy (loop thread; for tests and debugging)."""
        return frozenset(self._connections)

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
        if self._on_turn is not None:
            self._on_turn(now)

    def run_once(self, timeout: float) -> int:
        """Wait up to ``timeout`` for events and handle them; return how many (loop thread)."""
        events = self._selector.select(timeout)
        # The wait may have lasted up to a tick: deadlines set now (a new connection's
        # HEADER_TIMEOUT) must count from the time the events came, not from before the wait.
        self.now = self._clock()
        self.turn_events = len(events)
        for key, mask in events:
            handler = key.data
            if mask & selectors.EVENT_READ:
                handler.on_readable()
            if mask & selectors.EVENT_WRITE and not handler.is_closed:
                handler.on_writable()
        return len(events)

    def add_connection(self, connection: Handler) -> None:
        """Serve ``connection`` (just accepted, or made by a test over a socketpair); it is
        watched for reading (loop thread)."""
        self._connections.add(connection)
        if self._share is not None and self.state is LoopState.RUNNING:
            self._share.update(len(self._connections))
        self.set_interest(connection, read=True, write=False)

    def set_interest(self, connection: Handler, *, read: bool, write: bool) -> None:
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

    def forget(self, connection: Handler) -> None:
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

    def run_calls(self) -> None:
        """Run what other threads asked for with ``call_soon_threadsafe`` (loop thread)."""
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

    def accept_from(self, listener: _Listener) -> None:
        """The listener is readable: accept, as far as the balance and limits allow."""
        share = self._share
        for _ in range(self._accepts_per_event):
            if share is not None and share.should_yield(len(self._connections)):
                # Another worker holds fewer connections: let it take this one.
                self._set_accepting(False)
                self._accept_paused_until = self.now + BACKOFF_S
                return
            if not self._accept_one(listener):
                return
            if len(self._connections) >= self._max_connections:
                self._set_accepting(False)
                return

    def close(self) -> None:
        """Close every connection, the selector and the wake-up pipe (loop thread)."""
        for connection in list(self._connections):
            connection.close()
        self._set_accepting(False)
        self._selector.close()
        os.close(self._wakeup_read)
        os.close(self._wakeup_write)

    # -- internals (loop thread) ----------------------------------------------------------

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
        if not listener.is_unix:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.add_connection(listener.make_connection(sock, address))
        return True

    def _accept_backlog(self) -> int:
        """Take every connection waiting in the listeners' backlog, as far as
        MAX_CONNECTIONS allows; return how many (at drain start).

        On a reload the other workers would take them too; on a shutdown nobody would, and
        the kernel resets what is left in a backlog when the last listener copy closes."""
        taken = 0
        room = self._max_connections - len(self._connections)
        for listener in self._listeners:
            while taken < room and self._accept_one(listener):
                taken += 1
        return taken

    def _resume_accepting(self) -> None:
        """Watch the listeners again, unless draining or at MAX_CONNECTIONS."""
        self._accept_paused_until = 0.0
        if self.state is LoopState.RUNNING and len(self._connections) < self._max_connections:
            self._set_accepting(True)

    def _set_accepting(self, enabled: bool) -> None:
        if enabled == self._is_accepting:
            return
        for listener in self._listeners:
            if not listener.watched:
                continue
            if enabled:
                self._selector.register(listener.sock, selectors.EVENT_READ, listener)
            else:
                self._selector.unregister(listener.sock)
        self._is_accepting = enabled

    def _tick(self, now: float) -> None:
        self.date = formatdate(usegmt=True).encode("ascii")
        self._next_tick = now + _TICK_S
        self._check_deadlines(now)
        if self._on_tick is not None:
            self._on_tick(now)

    def _check_deadlines(self, now: float) -> None:
        drain = self._drain
        for connection in list(self._connections):
            if connection.check_deadline(now) and drain is not None:
                drain.idle_closed += 1

    def _begin_drain(self) -> None:
        now = self.now
        self.state = LoopState.DRAINING
        for callback in self._before_drain:
            callback()
        if self._drain_deadline != 0.0:  # 0.0: a second signal asked to stop at once
            self._drain_deadline = now + self._graceful_timeout
        self._set_accepting(False)
        self._accept_paused_until = 0.0
        if self._share is not None:
            self._share.leave()
        from_backlog = self._accept_backlog()
        if self._on_drain is not None:
            self._on_drain()
        self.idle_timeout = self._drain_idle_timeout
        self._drain = _DrainRecord(
            started=now,
            connections=len(self._connections),
            running=self._pool.busy,
            requests_before=self._stats.requests,
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
            # Idle connections get at most the drain window, then every deadline applies.
            latest = now + self.idle_timeout
            for connection in list(self._connections):
                connection.limit_idle_deadline(latest)
            self._check_deadlines(now)
        if not self._connections:
            self.state = LoopState.STOPPED
        elif now >= self._drain_deadline:
            logger.warning(
                "Graceful timeout (%.1f s) reached: closing %d connection(s), "
                "%d request(s) still running",
                self._graceful_timeout,
                len(self._connections),
                self._pool.busy,
            )
            self.state = LoopState.STOPPED
        if self.state is LoopState.STOPPED:
            self._log_drain(now)

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
            self._stats.requests - drain.requests_before,
            drain.idle_closed,
            self.idle_timeout,
            len(self._connections),
        )
