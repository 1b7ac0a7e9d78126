"""The master's signal intake: handlers that only record the signal and wake the loop.

Design note. ``SignalInbox.record`` is the handler of every signal in ``HANDLED_SIGNALS``. It
puts the signal number on a ``queue.SimpleQueue`` (safe to call from a handler: no lock a
handler could deadlock on) and writes a byte to a non-blocking wake-up pipe whose read end the
master's selector watches, so ``select`` returns at once. It never logs, locks or does other
I/O. The loop then takes the numbers, in order, with ``take()`` and dispatches them.

Signals are blocked around ``fork()`` (``WorkerTable``) so that a child never runs these
handlers, and across ``exec`` (``hold_for_exec``): a signal whose handler already ran is only in
this image's queue, which exec discards, so it is raised again, pending, for the next image.

Threads: ``record`` runs in signal context on the main thread; everything else is main thread
only. Imports only the stdlib.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["HANDLED_SIGNALS", "SignalInbox"]

HANDLED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGCHLD,
)


class SignalInbox:
    """Recorded signals and the pipe that wakes the loop; see the module notes."""

    def __init__(self) -> None:
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.wakeup_read, self.wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def record(self, signum: int, frame: object) -> None:
        """The signal handler (signal context): record and wake, nothing else."""
        self._signals.put(signum)
        with contextlib.suppress(OSError):
            os.write(self.wakeup_write, b"\0")

    def on_wakeup(self) -> None:
        """The selector callback of ``wakeup_read``: empty the pipe."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.wakeup_read, 4096)

    def __len__(self) -> int:
        """How many signals wait to be taken."""
        return self._signals.qsize()

    def take(self) -> Iterator[int]:
        """The recorded signals, oldest first, until none is left."""
        while not self._signals.empty():
            yield self._signals.get()

    def install(self) -> dict[int, Any]:
        """Make ``record`` the handler of ``HANDLED_SIGNALS`` and unblock them; returns the
        previous handlers, for ``restore``. A re-executed master starts with them blocked
        (reexec.py): what waited comes now."""
        previous: dict[int, Any] = {
            signum: signal.signal(signum, self.record) for signum in HANDLED_SIGNALS
        }
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        return previous

    def restore(self, previous: dict[int, Any]) -> None:
        """Put back the handlers ``install`` replaced."""
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def hold_for_exec(self) -> set[int | signal.Signals]:
        """Block ``HANDLED_SIGNALS`` and raise the recorded ones again, pending, so they reach
        the next image (or this one, once unblocked, if exec fails); returns the previous mask.

        Raised for this thread, which blocks them: sent to the process, any other thread (a
        library's) that does not block them would take them, and they would not be pending at
        exec.
        """
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        for signum in self.take():
            signal.pthread_kill(threading.get_ident(), signum)
        return mask

    def close(self) -> None:
        """Close the wake-up pipe."""
        os.close(self.wakeup_read)
        os.close(self.wakeup_write)
