"""Parked keep-alive connections, read and served by the pool thread that finds them readable.

Design note. Through the loop, the next request of a keep-alive connection costs two thread
hand-offs: the loop wakes up, reads and parses it, queues it; a pool thread wakes up and runs
it. On one core each hand-off is a context switch and a pass of the GIL: measured with one
connection at a time (the latency-bound case), a plain WSGI app took five voluntary and three
involuntary switches per request, and the switches cost more CPU than the request itself.
uWSGI's threads read and answer a request themselves, with no hand-off at all.

So a plain HTTP connection (no TLS, PROXY header read) whose response has gone out whole, with
nothing buffered behind it, is *parked* by the pool thread that finished it instead of going
back to the loop: registered in one epoll shared by the idle pool threads, with
``EPOLLONESHOT``, so exactly one thread wakes when the next request arrives. That thread reads
it, and when what it read is one whole request that is not a static file it runs the
application and sends the response itself (``Connection.serve_parked``), then parks the
connection again: one wake-up and no hand-off per request. Anything else (a request not
complete in one read, a body still coming, ``Expect: 100-continue``, a bad request, the EOF, a
static file) goes to the loop, which goes on exactly as if it had read those bytes itself, so
a slow or hostile client still never holds a thread.

The loop keeps owning everything else: the connection stays in its table, and its tick
applies the idle deadline (``Connection.check_deadline`` takes a parked connection back
first). When a drain begins the loop takes every parked connection back and no connection is
parked again, so a drain runs as it always did. When every thread has been busy with
the same requests for ``SATURATED_S`` (a slow application), the loop takes the parked
connections back too: their next requests then wait in the loop's queue, where
MAX_QUEUED_REQUESTS answers the excess with 503, rather than unseen in the kernel.

Only on a quiet worker: the loop stops reading a connection for parking when its turn read
nothing else and no request runs or waits, and a finishing thread keeps its connection only
when no other request runs or waits. Under load the loop reads many requests per turn for
less than the threads would each pay (measured: 0.92 of the loop's throughput when every
connection was parked at 64 connections), and connections go back to it.

Idle threads wait in one of two ways. While no connection is parked, on the job queue
itself, the cheapest wake-up there is (an eventfd write per job measured 0.75 to 0.87 of
the throughput at 64 connections). While some are, in the epoll, which also carries the job
queue's eventfd (semaphore mode, one count per job while a thread sleeps there, one-shot
and re-armed by the thread that took a count). A thread that leaves for other work while
connections are parked and no other thread looks queues ``_poll``, which brings one of the
threads blocked on the queue to the epoll. Before it sleeps, a thread writes the access log
lines kept so far (``on_idle``), and at every look it writes them when they are due
(``on_turn``): the loop may sleep for a tick while the pool threads serve.

Threads: ``wait_for_work`` in pool threads; ``park`` by the pool thread that finished a
response, under the connection's lock; ``forget``, ``reclaim_all`` and ``stop`` by the loop
thread; ``wake`` by any thread. Imports only the stdlib.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from .pool import Jobs

__all__ = ["SATURATED_S", "Parkable", "ParkedConnections"]

# Every thread busy, each with a request older than this: the loop takes the parked
# connections back (see the notes).
SATURATED_S = 1.0
# Linux: server.py makes no ParkedConnections where epoll or eventfd is missing (macOS).
_ARMED = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLRDHUP", 0)
_ARMED |= getattr(select, "EPOLLONESHOT", 0)


def _poll() -> None:
    """Queued for a thread blocked on the queue: come and watch the parked connections."""


class Parkable(Protocol):
    """A connection as the parking sees it (``connection.Connection``)."""

    fd: int

    def serve_parked(self) -> None:
        """Read and serve the request that made it readable (pool thread)."""

    def watch_parked(self) -> None:
        """Let the epoll watch it, if still parked (pool thread)."""

    def reclaim(self) -> None:
        """Go back to the loop if still parked (loop thread)."""


class ParkedConnections:
    """The idle pool threads' wait for work: a queued job, or a parked connection that has
    become readable (see the notes)."""

    def __init__(
        self,
        *,
        load: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
        on_idle: Callable[[], None] | None = None,
        on_turn: Callable[[float], None] | None = None,
    ) -> None:
        """``load``: the requests running or waiting for a thread; ``on_idle``: a thread
        is about to sleep; ``on_turn(now)``: a thread that serves parked connections looks
        for its next work (the access log's writes, as the loop's turns do them)."""
        self.clock = clock
        self._load = load
        self._on_idle = on_idle
        self._on_turn = on_turn
        self._epoll = select.epoll()
        self._jobs_ready = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC | os.EFD_SEMAPHORE)
        self._epoll.register(self._jobs_ready, select.EPOLLIN | select.EPOLLONESHOT)
        # fd -> connection, for every connection registered in the epoll (armed or not).
        self._registered: dict[int, Parkable] = {}
        self._armed: set[int] = set()  # registered and waiting for their next request
        self._lock = threading.Lock()
        self._local = threading.local()  # each thread's held connection
        self._is_parking = True
        self._lookers = 0  # threads in wait_for_work, not blocked on the queue
        self._sleepers = 0  # of which waiting in the epoll (or about to)
        self._is_poll_queued = False  # _POLL is in the queue

    # -- any thread ---------------------------------------------------------------------------

    def wake(self, count: int = 1) -> None:
        """``count`` jobs were queued (any thread). A thread blocked on the queue wakes by
        itself; only one waiting in the epoll needs the eventfd, so a job queued while no
        connection is parked costs no system call."""
        if count == 1 and not self._sleepers:
            return
        with contextlib.suppress(OSError):
            for _ in range(count):
                os.eventfd_write(self._jobs_ready, 1)

    def is_quiet(self, own: int) -> bool:
        """Whether no request but the caller's ``own`` (0 or 1) runs or waits (any thread)."""
        return self._load() <= own

    # -- pool threads -------------------------------------------------------------------------

    def park(self, connection: Parkable) -> bool:
        """Watch ``connection`` for its next request; False when connections are not parked
        any more (a drain has begun). Called with the connection's lock held, by a pool
        thread that goes on to ``wait_for_work`` (which sees that a thread must watch)."""
        fd = connection.fd
        with self._lock:
            if not self._is_parking:
                return False
            if self._registered.get(fd) is connection:
                self._epoll.modify(fd, _ARMED)
            else:
                # A descriptor closed while registered left the epoll with its close.
                self._forget_fd(fd)
                self._registered[fd] = connection
                self._epoll.register(fd, _ARMED)
            self._armed.add(fd)
        return True

    def hold(self, connection: Parkable) -> bool:
        """Keep ``connection`` for this thread to look at first, when it next waits for work
        (the thread that has just sent its response; the connection's lock held); False when
        connections are not parked any more, or under load."""
        if not self._is_parking or self._load() > 1:
            return False  # under load the loop reads, many requests per turn (see the notes)
        local = self._local
        previous = getattr(local, "held", None)
        local.held = connection
        if previous is not None:
            previous.watch_parked()  # one held at a time (a thread finishes one response)
        return True

    def wait_for_work(self, jobs: Jobs) -> tuple[Callable[[], None] | None, bool]:
        """The next job of this thread: a queued one (True), or the serving of a parked
        connection's request (False). Blocks (GIL released) while there is neither.

        While connections are parked the thread waits in the epoll, which the queue wakes
        through the eventfd; while none is, on the queue itself, the cheapest wake-up there
        is. When a thread leaves with parked connections and no other thread looking, it
        queues ``_POLL`` so that one of those blocked on the queue comes to watch them.

        The connection this thread held (``hold``) comes last: a queued job or another
        connection's request that is already there goes first, and the held one is then
        watched by the epoll; with nothing else to do, this thread reads it itself, without
        waking another thread or waiting in the epoll."""
        local = self._local
        held: Parkable | None = getattr(local, "held", None)
        if held is None and not self._armed:
            # Nothing parked (a busy worker: the loop reads): the plain queue.
            job = jobs.get()
            if job is not _poll:
                return job, True
            self._is_poll_queued = False
        local.held = None
        if self._on_turn is not None:
            self._on_turn(self.clock())  # the loop may sleep while the pool threads serve
        poll = self._epoll.poll
        asleep = False  # counted in _sleepers: the queue is looked at once more, then we wait
        self._count(lookers=1)
        while True:
            if not jobs.empty():
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    pass
                else:
                    if asleep:
                        self._count(sleepers=-1)
                        asleep = False
                    if job is _poll:
                        self._is_poll_queued = False
                        continue
                    self._leave(held, jobs)
                    return job, True
            if self._armed or asleep:
                events = poll(-1.0 if asleep else 0.0, 1)
                if asleep:
                    self._count(sleepers=-1)
                    asleep = False
                if events:
                    fd = events[0][0]
                    if fd == self._jobs_ready:
                        with contextlib.suppress(BlockingIOError):
                            os.eventfd_read(self._jobs_ready)
                        self._epoll.modify(self._jobs_ready, select.EPOLLIN | select.EPOLLONESHOT)
                        continue
                    with self._lock:
                        self._armed.discard(fd)
                        connection = self._registered.get(fd)
                    if connection is None:
                        continue
                    self._leave(held, jobs)
                    return connection.serve_parked, False
            if held is not None:
                self._leave(None, jobs)
                return held.serve_parked, False
            if self._on_idle is not None:
                self._on_idle()  # only a thread going idle writes the log lines kept so far
            if self._armed:
                # Counted before the queue's last look: a job queued after that look finds
                # us counted and writes the eventfd (``wake``).
                self._count(sleepers=1)
                asleep = True
                continue
            self._count(lookers=-1)
            job = jobs.get()
            if job is not _poll:
                return job, True
            self._is_poll_queued = False
            self._count(lookers=1)

    def _leave(self, held: Parkable | None, jobs: Jobs) -> None:
        """This thread stops looking, for a job or a connection: the epoll watches the one it
        held, and a thread blocked on the queue takes over if nobody else looks."""
        if held is not None:
            held.watch_parked()
        with self._lock:
            self._lookers -= 1
            wanted = bool(self._armed) and not self._lookers and not self._is_poll_queued
            if wanted:
                self._is_poll_queued = True
        if wanted:
            jobs.put(_poll)

    def _count(self, *, lookers: int = 0, sleepers: int = 0) -> None:
        with self._lock:
            self._lookers += lookers
            self._sleepers += sleepers

    # -- the loop thread ----------------------------------------------------------------------

    def forget(self, connection: Parkable) -> None:
        """Stop watching ``connection`` (loop thread, the connection's lock held)."""
        fd = connection.fd
        with self._lock:
            if self._registered.get(fd) is connection:
                self._forget_fd(fd)

    def reclaim_all(self) -> int:
        """Give every parked connection back to the loop; return how many were registered
        (loop thread)."""
        with self._lock:
            connections = list(self._registered.values())
        for connection in connections:
            connection.reclaim()
        return len(connections)

    def stop(self) -> None:
        """Park no more and give every parked connection back (the loop, when a drain
        begins)."""
        with self._lock:
            self._is_parking = False
        self.reclaim_all()

    def _forget_fd(self, fd: int) -> None:
        """Lock held."""
        self._armed.discard(fd)
        if self._registered.pop(fd, None) is not None:
            with contextlib.suppress(OSError):  # already closed: the kernel forgot it
                self._epoll.unregister(fd)
