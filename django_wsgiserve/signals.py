"""Django signals for the server's lifecycle: per-worker setup and teardown, reload, resize.

Design note. Connect receivers in your ``AppConfig.ready()``, as with any Django signal::

    from django_wsgiserve import signals

    class MyAppConfig(AppConfig):
        def ready(self):
            signals.worker_starting.connect(start_telemetry)

``ready()`` runs once, in the master, before the workers are forked: the receivers are
inherited by every worker, while threads, sockets and clients created in ``ready()`` are not
(they do not survive ``fork()``). Create those in ``worker_starting`` instead. Every signal is
sent with ``sender=None``; which process and thread sends each, what it may block and its
keyword arguments: ``django_wsgiserve.hooks.Hook`` and docs/hooks.md.

``send`` is the ``hooks.HookSender`` the management command gives the server layers, which do
not import Django. ``worker_starting`` goes through ``Signal.send``: the first receiver that
raises fails the worker's boot (``hooks.start_worker`` logs it). Every other signal goes
through ``Signal.send_robust``, so each receiver runs even if another raised, and each failure
is logged at ERROR with its traceback on ``django_wsgiserve.signals``; the server carries on.
(Django logs it as well, on ``django.dispatch``, which its default LOGGING shows nowhere but
in mail to the ADMINS when DEBUG is off: our line is the one the server's log is sure to get.)

This module imports Django (it is Django-facing, like ``apps`` and ``checks``); the server
layers import only ``hooks``.
"""

from __future__ import annotations

import logging

from django.dispatch import Signal

from .hooks import Hook, ReloadOutcome

__all__ = [
    "ReloadOutcome",
    "reload_finished",
    "reload_started",
    "send",
    "server_ready",
    "server_starting",
    "server_stopping",
    "worker_exited",
    "worker_ready",
    "worker_starting",
    "worker_stopped",
    "worker_stopping",
    "workers_changed",
]

logger = logging.getLogger(__name__)

# The master, before it binds the listening sockets (not sent again by the image a
# configuration reload re-executes).
server_starting = Signal()
# The master, the first time all workers serve. Arguments: workers.
server_ready = Signal()
# The master, when a graceful or immediate stop begins. Arguments: reason.
server_stopping = Signal()
# A new worker, after fork, before the application is loaded or called. Arguments: number.
worker_starting = Signal()
# A worker whose application is loaded, just before it accepts connections. Arguments: number.
worker_ready = Signal()
# A worker's I/O loop thread, when its drain begins (requests may still run). Arguments: number.
worker_stopping = Signal()
# A worker that has drained, just before the process exits. Arguments: number, requests.
worker_stopped = Signal()
# The master, after reaping a worker. Arguments: pid, number, exit_code, reason, is_expected.
worker_exited = Signal()
# The master, on SIGHUP.
reload_started = Signal()
# The master, once a reload has succeeded or failed. Arguments: outcome, message, changes,
# workers.
reload_finished = Signal()
# The master, after SIGTTIN/SIGTTOU changed the number of workers wanted. Arguments:
# previous, workers.
workers_changed = Signal()

_SIGNALS: dict[Hook, Signal] = {
    Hook.SERVER_STARTING: server_starting,
    Hook.SERVER_READY: server_ready,
    Hook.SERVER_STOPPING: server_stopping,
    Hook.WORKER_STARTING: worker_starting,
    Hook.WORKER_READY: worker_ready,
    Hook.WORKER_STOPPING: worker_stopping,
    Hook.WORKER_STOPPED: worker_stopped,
    Hook.WORKER_EXITED: worker_exited,
    Hook.RELOAD_STARTED: reload_started,
    Hook.RELOAD_FINISHED: reload_finished,
    Hook.WORKERS_CHANGED: workers_changed,
}


def send(hook: Hook, /, **arguments: object) -> None:
    """Send the signal of ``hook`` (see the module notes for what a raising receiver does)."""
    signal = _SIGNALS[hook]
    if hook is Hook.WORKER_STARTING:
        signal.send(sender=None, **arguments)
        return
    for receiver, result in signal.send_robust(sender=None, **arguments):
        if isinstance(result, Exception):
            logger.error(
                "A receiver of %s raised (%s.%s); carrying on",
                hook.value,
                getattr(receiver, "__module__", "?"),
                getattr(receiver, "__qualname__", repr(receiver)),
                exc_info=result,
            )
