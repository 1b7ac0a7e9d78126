"""ThreadPool: the worker's application threads.

Design note. The I/O loop hands complete requests (callables) to the pool with ``submit``; a
fixed number of named threads (``wsgiserve-<pid>-<n>``) run them one at a time. The queue is a
``queue.SimpleQueue`` (implemented in C, the cheapest hand-off the stdlib has) and ``submit``
never blocks: the loop reads ``pending`` (submitted and not yet finished) to decide when to
refuse work with a 503 instead of queueing it (MAX_QUEUED_REQUESTS).

``shutdown(deadline_s)`` lets queued and running work finish up to the deadline, then returns
the number of threads still busy, which the worker logs. Threads are daemonic so that a stuck
application thread can never keep a draining worker process alive past its deadline.

Threads: ``submit`` and ``shutdown`` are called by the loop thread; jobs run in pool threads.
Imports only the stdlib.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ThreadPool", "WorkSource"]

logger = logging.getLogger(__name__)

_STOP = None  # queue marker: one per thread asks it to exit
Jobs = queue.SimpleQueue["Callable[[], None] | None"]


class WorkSource(Protocol):
    """Where idle threads find work besides the queue (``oneshot.OneShotAcceptor``)."""

    def wait_for_work(self, jobs: Jobs) -> tuple[Callable[[], None] | None, bool]:
        """The next job, and whether it came from ``jobs`` (else it is the source's own,
        not counted in ``pending``); blocks while there is none."""

    def wake(self, count: int = 1) -> None:
        """A job was queued (any thread)."""


class ThreadPool:
    """A fixed set of threads running submitted callables in FIFO order."""

    def __init__(self, *, threads: int, name_prefix: str | None = None) -> None:
        self.size = threads
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0  # threads currently running a job; only an estimate, read for logs
        self._submitted = 0  # written by the loop thread only
        self._finished = 0  # written by pool threads, under _finished_lock
        self._finished_lock = threading.Lock()
        self._prefix = name_prefix or f"wsgiserve-{os.getpid()}"
        self._source: WorkSource | None = None

    def set_work_source(self, source: WorkSource) -> None:
        """Idle threads wait on ``source`` instead of the queue alone (before ``start``)."""
        self._source = source

    def start(self) -> None:
        """Start the threads (loop thread)."""
        for number in range(self.size):
            thread = threading.Thread(
                target=self._run, name=f"{self._prefix}-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` to run in a pool thread (loop thread). Never blocks."""
        self._submitted += 1
        self._jobs.put(job)
        if self._source is not None:
            self._source.wake()

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished yet, running or waiting (loop thread). It can only
        overestimate: a job is counted as finished after it has returned."""
        return self._submitted - self._finished

    @property
    def queued(self) -> int:
        """Jobs waiting for a thread (any thread)."""
        return self._jobs.qsize()

    @property
    def busy(self) -> int:
        """How many threads are running a job right now (approximate)."""
        return self._busy

    def shutdown(self, *, deadline_s: float) -> int:
        """Let the threads finish their work up to ``deadline_s`` seconds; return how many are
        still running then (loop thread)."""
        for _ in self._threads:
            self._jobs.put(_STOP)
        if self._source is not None:
            self._source.wake(len(self._threads))
        end = time.monotonic() + deadline_s
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        return sum(thread.is_alive() for thread in self._threads)

    def _run(self) -> None:
        """Pool thread body: run jobs until the stop marker arrives."""
        source = self._source
        jobs = self._jobs
        get = jobs.get
        queued = True
        while True:
            if source is None:
                job = get()
            else:
                job, queued = source.wait_for_work(jobs)
            if job is _STOP:
                return
            self._busy += 1
            try:
                job()
            except Exception:
                # Jobs handle their own errors; reaching here is a bug in the server itself.
                logger.exception("Unhandled error in an application thread")
            finally:
                self._busy -= 1
                if queued:
                    with self._finished_lock:
                        self._finished += 1
