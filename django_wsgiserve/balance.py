"""Accept balance: workers share their connection counts and the busiest one steps back.

Design note. Every worker inherits the same listening sockets and every idle worker wakes when
a connection arrives; whichever loop runs first accepts it. Under a burst (a load balancer or
wrk opening 32 connections at once) that is usually the same worker, and keep-alive makes the
imbalance last: benchmarks/scaling.py measured 30/2, 19/13 and 23/9 with two workers.
EPOLLEXCLUSIVE was measured worse, and one SO_REUSEPORT socket per worker would drop the
connections queued on a worker's socket when it retires (see loop.py).

So the master creates a ``BalanceTable`` before forking: one signed 32-bit slot per worker in
an anonymous shared mapping, ``FREE`` (-1) when unused. A worker writes its number of open
connections into its slot (``WorkerShare.update``, on every accept and close: one store) and
before each accept asks ``WorkerShare.should_yield``: when it holds more than its fair share
(the average over the accepting workers) plus ``SLACK``, it stops watching the listeners for
``BACKOFF_S`` and leaves the connection to a worker with fewer. A draining worker writes
``FREE``, so it no longer counts. It yields at most ``MAX_YIELDS`` times in a row: a worker
that could take the connection but is wedged must not leave it in the backlog for longer than
about ``MAX_YIELDS * BACKOFF_S`` (its heartbeat gets it replaced).

Slots are plain aligned 32-bit stores and loads without a lock: a reader may see a count one
accept old, which only moves a decision by one connection. The master claims a slot for each
worker it forks and frees it when it reaps the worker; the worker's loop counts from when it
starts accepting. Linux and macOS share an anonymous ``mmap`` across ``fork``; anywhere it
fails the master runs without balance.
"""

from __future__ import annotations

import mmap
import struct

__all__ = ["BACKOFF_S", "FREE", "MAX_YIELDS", "SLACK", "BalanceTable", "WorkerShare"]

FREE = -1
# Connections a worker may hold above the average before it lets others accept.
SLACK = 1
# How long a worker that yielded stops watching the listeners.
BACKOFF_S = 0.005
MAX_YIELDS = 10
_SLOT = struct.Struct("=i")


class BalanceTable:
    """The shared slots (master: ``claim``/``release``; workers through ``WorkerShare``)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, slots * _SLOT.size)
        self._view = memoryview(self._map).cast("i")
        for index in range(slots):
            self._view[index] = FREE
        self._claimed: set[int] = set()

    def claim(self) -> int | None:
        """A free slot for a worker about to be forked; None if full. It stays ``FREE`` until
        the worker's loop publishes a count: a booting worker accepts nothing, and counted as
        0 it would make the serving ones yield."""
        for index in range(self.slots):
            if index not in self._claimed:
                self._claimed.add(index)
                self._view[index] = FREE
                return index
        return None

    def release(self, index: int | None) -> None:
        """The worker of slot ``index`` has exited (master)."""
        if index is not None and index in self._claimed:
            self._claimed.discard(index)
            self._view[index] = FREE

    def counts(self) -> list[int]:
        """Every slot's value (FREE or a connection count)."""
        return self._view.tolist()

    def share(self, index: int) -> WorkerShare:
        """The worker side of slot ``index`` (in the forked worker)."""
        return WorkerShare(self._view, index)


class WorkerShare:
    """One worker's slot, and its view of everybody else's (loop thread of that worker)."""

    __slots__ = ("_index", "_view", "_yields")

    def __init__(self, view: memoryview, index: int) -> None:
        self._view = view
        self._index = index
        self._yields = 0

    def update(self, connections: int) -> None:
        """Publish this worker's number of open connections."""
        self._view[self._index] = connections

    def leave(self) -> None:
        """This worker accepts no more connections (draining): it no longer counts."""
        self._view[self._index] = FREE

    def should_yield(self, connections: int) -> bool:
        """Whether to leave the next connection to a worker holding fewer."""
        active = [count for count in self._view.tolist() if count >= 0]
        workers = len(active)
        # connections > average + SLACK, in integers: connections * n > total + SLACK * n.
        if (
            workers > 1
            and connections * workers > sum(active) + SLACK * workers
            and self._yields < MAX_YIELDS
        ):
            self._yields += 1
            return True
        self._yields = 0
        return False
