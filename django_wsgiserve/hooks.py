"""Lifecycle hooks: the points where the master and the workers let project code run.

Design note. The server layers (arbiter, worker) call ``Hooks.send(Hook.X, **arguments)`` at
each point of a server's life; what runs there is injected. The management command injects
``django_wsgiserve.signals.send``, which sends the matching Django signal, so a project connects
receivers in ``AppConfig.ready()`` like any Django signal (docs/hooks.md). Without a sender
(``Hooks()``) every hook is a no-op. This module must not import Django: it is what keeps the
server layers free of it.

Error policy, in one place:

* ``Hook.WORKER_STARTING`` is sent by ``start_worker()``, in a new worker before it loads the
  application. A receiver that raises fails that worker's boot: the error is logged here with
  its traceback and ``HookError`` is raised, which ``worker.run_child`` turns into
  ``WorkerExitCode.BOOT_FAILED``, so the master's boot-failure rules apply (halt at start,
  keep the old workers during a reload: never a respawn loop). Code that must run before a
  worker serves belongs there, so a worker never serves without it.
* Every other hook goes through ``Hooks.send``, which never raises: a failure is logged at
  ERROR with its traceback and the server carries on. A hook cannot kill the master, nor stop
  a worker that is serving or draining.

Threads: each hook runs in the thread that reaches its point (see ``Hook``); the sender is
called synchronously, so whatever it blocks on delays that thread.
"""

from __future__ import annotations

import enum
import logging
import os
from typing import TYPE_CHECKING, Protocol

from .errors import HookError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Hook", "HookSender", "Hooks", "ReloadOutcome", "drain_callback", "start_worker"]

logger = logging.getLogger(__name__)


class Hook(enum.Enum):
    """The points of a server's life; each value is the name of its Django signal.

    Master, main thread: SERVER_STARTING (before binding), SERVER_READY (``workers``; the first
    time all workers serve), SERVER_STOPPING (``reason``; a drain begins), RELOAD_STARTED
    (SIGHUP), RELOAD_FINISHED (``outcome``, ``message``, ``changes``, ``workers``),
    WORKERS_CHANGED (``previous``, ``workers``; TTIN/TTOU), WORKER_EXITED (``pid``,
    ``number``, ``exit_code``, ``reason``, ``is_expected``; a worker was reaped).
    Worker: WORKER_STARTING (main thread, after fork, before the application is loaded),
    WORKER_READY (main thread, application loaded, before accepting), WORKER_STOPPING (loop
    thread, a drain begins), WORKER_STOPPED (main thread, drained, before exit; ``requests``).
    Every worker hook has ``number``, the worker's number.
    """

    SERVER_STARTING = "server_starting"
    SERVER_READY = "server_ready"
    SERVER_STOPPING = "server_stopping"
    WORKER_STARTING = "worker_starting"
    WORKER_READY = "worker_ready"
    WORKER_STOPPING = "worker_stopping"
    WORKER_STOPPED = "worker_stopped"
    WORKER_EXITED = "worker_exited"
    RELOAD_STARTED = "reload_started"
    RELOAD_FINISHED = "reload_finished"
    WORKERS_CHANGED = "workers_changed"


class ReloadOutcome(str, enum.Enum):
    """``outcome`` of ``Hook.RELOAD_FINISHED``; a ``str``, so ``outcome == "failed"`` works."""

    RELOADED = "reloaded"  # the new workers serve; the old ones drain
    FAILED = "failed"  # nothing changed, or the old workers went back to work


class HookSender(Protocol):
    """What runs at a hook: ``send(Hook.WORKER_READY, number=1)``."""

    def __call__(self, hook: Hook, /, **arguments: object) -> None: ...


class Hooks:
    """The hook points' one entry; ``Hooks()`` does nothing (any thread)."""

    def __init__(self, sender: HookSender | None = None) -> None:
        self._sender = sender

    def send(self, hook: Hook, /, **arguments: object) -> None:
        """Run ``hook``; a failure is logged, never raised (see the module notes)."""
        if self._sender is None:
            return
        try:
            self._sender(hook, **arguments)
        except Exception:  # a hook must not take the server down
            logger.exception("The %s hook raised; carrying on", hook.value)

    def send_or_raise(self, hook: Hook, /, **arguments: object) -> None:
        """Run ``hook``, letting a failure through."""
        if self._sender is not None:
            self._sender(hook, **arguments)


def start_worker(hooks: Hooks, *, number: int) -> None:
    """Send ``WORKER_STARTING`` in a new worker (main thread, before the application is loaded
    or called); raises ``HookError`` once the failure is logged."""
    try:
        hooks.send_or_raise(Hook.WORKER_STARTING, number=number)
    except Exception as exc:
        logger.exception(
            "Worker %d (pid %d) could not boot: a worker_starting receiver raised %s",
            number,
            os.getpid(),
            type(exc).__name__,
        )
        raise HookError(f"worker_starting failed in worker {number}") from exc


def drain_callback(
    hooks: Hooks, *, number: int, before: Callable[[], None] | None
) -> Callable[[], None]:
    """The loop's ``on_drain``: ``before`` (closing the listeners: first, so that no blocking
    receiver delays refusing new connections), then ``WORKER_STOPPING`` (loop thread)."""

    def on_drain() -> None:
        if before is not None:
            before()
        hooks.send(Hook.WORKER_STOPPING, number=number)

    return on_drain
