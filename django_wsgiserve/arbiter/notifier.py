"""The master's systemd notifications: what it tells the service manager, and when.

Design note. Only the master notifies (the workers never see ``NOTIFY_SOCKET`` used), through
``systemd.notify`` over the injected ``environ``, which never raises. The messages:

* ``READY=1`` + ``STATUS=`` once ``target`` workers serve, again once the new workers of a
  reload serve, and at once when a reload fails (systemd got ``RELOADING=1`` and must not be
  left waiting); the master decides when, ``ready()`` sends it.
* ``STATUS=`` whenever the text changes (``status()`` drops repeats).
* ``RELOADING=1`` + ``MONOTONIC_USEC=`` on SIGHUP (sd_notify(3): ``Type=notify-reload``
  needs the timestamp).
* ``STOPPING=1`` when a drain begins; from then on ``EXTEND_TIMEOUT_USEC=`` every
  ``EXTEND_EVERY_S`` for what is left of GRACEFUL_TIMEOUT, plus the kill grace, plus one more
  interval: systemd's stop timeout never runs out in the middle of a drain that is on time.
* ``WATCHDOG=1`` every WATCHDOG_USEC/2 when the watchdog is meant for this pid; the loop wakes
  in time for it (``select_timeout``). Also once right before a re-exec, since the new image
  pings only once its loop runs.

Time is passed in (``now``: the loop's monotonic clock), so tests need no sleeping. Threads:
master's main thread only. Imports only ``systemd``; never Django.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from django_wsgiserve import systemd

if TYPE_CHECKING:
    from collections.abc import MutableMapping

__all__ = ["EXTEND_EVERY_S", "SystemdNotifier", "watchdog_interval"]

EXTEND_EVERY_S = 5.0


class SystemdNotifier:
    """sd_notify for the master (main thread only); see the module notes."""

    def __init__(
        self, environ: MutableMapping[str, str], *, now: float, kill_grace_s: float
    ) -> None:
        """``now``: the clock at start (the first WATCHDOG=1 is due then); ``kill_grace_s``:
        how long past GRACEFUL_TIMEOUT the master waits before SIGKILL."""
        self._environ = environ
        self._kill_grace_s = kill_grace_s
        self._status = ""
        self._drain_deadline = math.inf
        self._next_extend = math.inf
        self.watchdog_interval_s = watchdog_interval(environ)
        self._next_watchdog = now

    def select_timeout(self, now: float, longest: float) -> float:
        """How long the loop may wait in ``select`` without missing a WATCHDOG=1."""
        if not self.watchdog_interval_s:
            return longest
        return max(0.0, min(longest, self._next_watchdog - now))

    def ready(self, status: str) -> None:
        """READY=1 with ``status``."""
        self._send(f"READY=1\nSTATUS={status}")
        self._status = status

    def status(self, status: str) -> None:
        """STATUS=, unless it says what the last one said."""
        if status != self._status:
            self._send(f"STATUS={status}")
        self._status = status

    def reloading(self) -> None:
        """RELOADING=1 with the monotonic time (SIGHUP)."""
        self._send(f"RELOADING=1\nMONOTONIC_USEC={systemd.monotonic_usec()}")

    def stopping(self, *, now: float, drain_deadline: float) -> None:
        """STOPPING=1; EXTEND_TIMEOUT_USEC= follows from the next ``tick``."""
        self._send("STOPPING=1")
        self._drain_deadline = drain_deadline
        self._next_extend = now

    def tick(self, now: float, *, is_draining: bool) -> None:
        """Every loop iteration, last: EXTEND_TIMEOUT_USEC= and WATCHDOG=1 when due."""
        if is_draining and now >= self._next_extend:
            remaining = max(0.0, self._drain_deadline - now) + self._kill_grace_s + EXTEND_EVERY_S
            self._send(f"EXTEND_TIMEOUT_USEC={int(remaining * 1e6)}")
            self._next_extend = now + EXTEND_EVERY_S
        if self.watchdog_interval_s and now >= self._next_watchdog:
            self._send("WATCHDOG=1")
            self._next_watchdog = now + self.watchdog_interval_s

    def ping_watchdog(self) -> None:
        """WATCHDOG=1 now, if the watchdog is on (before a re-exec)."""
        if self.watchdog_interval_s:
            self._send("WATCHDOG=1")

    def _send(self, message: str) -> None:
        systemd.notify(message, self._environ)


def watchdog_interval(environ: MutableMapping[str, str]) -> float:
    """Half of WATCHDOG_USEC in seconds when the watchdog is meant for us, else 0."""
    watchdog_pid = environ.get("WATCHDOG_PID", "")
    if watchdog_pid and watchdog_pid != str(os.getpid()):
        return 0.0
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return 0.0
    return usec / 2 / 1e6 if usec > 0 else 0.0
