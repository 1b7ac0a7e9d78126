"""The master's reloads (SIGHUP): check the configuration, then reload the code or re-execute.

Design note. The mechanics (the checking child, the handover, placing the listeners at fds 3..,
``execve``) are in reexec.py; this module decides, from the master's loop, what a SIGHUP does.

* **Check first.** ``begin()`` sends RELOAD_STARTED and RELOADING=1 and starts the
  ``reexec.ConfigCheck`` child (its command line again, with ``--reload-check``), whose pipes
  the master's selector reads. ``poll()``, every loop iteration while the server runs, kills it
  past its deadline and ``apply()``s its result once the master's reaper has reported its exit
  (``check_exited``: nobody else may ``waitpid`` it). A second SIGHUP meanwhile is ignored.
  Without a command line (``call_command``) the code is reloaded at once.
* **Check failed**: nothing changes. The tail of the child's stderr is logged at ERROR and
  systemd gets READY=1 at once (it got RELOADING=1).
* **Unchanged configuration**: the code-only reload. Every active worker retires; the worker
  table starts WORKERS new ones, forked from this process (with PRELOAD off, the command's
  application loader drops the project's own modules, so they import the new code), and stops
  the old ones once all of them serve. The static files table is rebuilt for them first.
* **Changed configuration**: the master binds what the new BIND adds (kept addresses keep their
  socket; under socket activation BIND stays ignored), then ``execve``s itself, same pid,
  handing over its listeners and workers (``reexec.Handover``). Signals recorded but not yet
  dispatched are raised again, pending, for the new image (``SignalInbox.hold_for_exec``).
  Anything that fails before exec, or exec itself, is a failed reload that changes nothing.
* **Adoption.** The new image ``adopt()``s the old workers: RETIRING, without heartbeat pipe, so
  only their exit and the graceful deadline judge them once they get SIGTERM. Its own workers
  are the new generation of the reload its previous image began, which its first READY=1
  finishes. Unix socket paths the new BIND drops are removed once no adopted worker is left.
  It binds the control socket again (exec closed it), and removes the previous image's when
  CONTROL_SOCKET moved.
* **Undo.** A new worker that cannot boot during a reload (``undo()``, from the reaper) must
  not take the site down: the retiring workers go back to work, the other new ones stop, and
  the operator gets an ERROR line and a systemd STATUS. Without a previous generation to fall
  back on, the master halts instead (master.py).
* **Hooks.** RELOAD_STARTED on SIGHUP, RELOAD_FINISHED once per RELOAD_STARTED with its outcome
  (``ReloadOutcome``), the changes and the number of workers serving.

Threads: master's main thread only. Must not import Django: the check child does, in its own
process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import stat
from typing import TYPE_CHECKING

from django_wsgiserve import reexec, sockets
from django_wsgiserve.arbiter.inbox import HANDLED_SIGNALS
from django_wsgiserve.arbiter.workers import WorkerState
from django_wsgiserve.config import OPTIONS_BY_NAME
from django_wsgiserve.hooks import Hook, Hooks, ReloadOutcome
from django_wsgiserve.protocols import protocol_of

if TYPE_CHECKING:
    import selectors
    from collections.abc import Callable, Mapping, MutableMapping, Sequence
    from typing import Any

    from django_wsgiserve.arbiter.inbox import SignalInbox
    from django_wsgiserve.arbiter.notifier import SystemdNotifier
    from django_wsgiserve.arbiter.process import ProcessSetup
    from django_wsgiserve.arbiter.workers import Worker, WorkerTable
    from django_wsgiserve.config import ServerConfig
    from django_wsgiserve.context import StaticResponder

__all__ = ["Reloader"]

# Every module of the master logs as ``django_wsgiserve.arbiter``, the name its lines carry.
logger = logging.getLogger(__package__)


class Reloader:
    """SIGHUP for the master (main thread only); see the module notes."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        workers: WorkerTable,
        notifier: SystemdNotifier,
        process: ProcessSetup,
        inbox: SignalInbox,
        selector: selectors.BaseSelector,
        listeners: Sequence[socket.socket],
        environ: MutableMapping[str, str],
        is_socket_activated: bool = False,
        command: Sequence[str] | None = None,
        handover: reexec.Handover | None = None,
        rebuild_static: Callable[[], StaticResponder | None] | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        """``command``: the command line that started the server (None: reload code only);
        ``handover``: what the previous image of this master passed on; ``rebuild_static``:
        builds the static files table again for a code reload."""
        self._config = config
        self._workers = workers
        self._notifier = notifier
        self._process = process
        self._inbox = inbox
        self._selector = selector
        self._listeners = listeners
        self._environ = environ
        self._command = list(command) if command else None
        self._handover = handover
        self._rebuild_static = rebuild_static
        self._hooks = hooks or Hooks()
        self._check: reexec.ConfigCheck | None = None
        # A new generation of workers is starting; the old one serves until it is ready.
        self._is_reloading = False
        # Between RELOAD_STARTED and RELOAD_FINISHED, with the configuration changes: a
        # re-executed image finishes the reload its previous image started.
        self._is_open = handover is not None
        self._changes: tuple[str, ...] = handover.changes if handover else ()
        # The BIND entry each listener was bound for; None when systemd passed them (then a
        # configuration reload keeps them and BIND stays ignored).
        self._listener_specs = None if is_socket_activated else tuple(config.bind)
        # Unix socket paths dropped from BIND by a configuration reload: removed once the old
        # workers, which still accept on them, are gone.
        self._paths_to_unlink: tuple[str, ...] = ()
        if handover is not None:
            self._listener_specs = handover.bind
            self._paths_to_unlink = handover.unlink
        # The master's control socket (arbiter/control.py), told to the next image.
        self.control_socket = ""

    @property
    def is_reloading(self) -> bool:
        """Whether a new generation of workers is starting (the old one still serves)."""
        return self._is_reloading

    @property
    def is_checking(self) -> bool:
        """Whether a SIGHUP's configuration check is running."""
        return self._check is not None

    # -- SIGHUP and the check --------------------------------------------------------------

    def begin(self, now: float) -> None:
        """SIGHUP while the server runs."""
        if self._check is not None:
            logger.info("SIGHUP ignored: the previous one is still checking the configuration")
            return
        self._is_open = True
        self._hooks.send(Hook.RELOAD_STARTED)
        self._notifier.reloading()
        if self._command is None:
            self._reload_code("configuration not re-read (not started from a command line)")
            return
        logger.info("Reloading (SIGHUP): checking the configuration")
        try:
            self._check = reexec.ConfigCheck(self._command, self._environ, now=now)
        except OSError as exc:
            self._failed(f"could not run {self._command[0]}: {exc}")
            return
        self._check.register(self._selector)

    def poll(self, now: float) -> None:
        """Every loop iteration while the server runs: a check past its deadline is killed
        (and reported once reaped); a finished one is applied."""
        check = self._check
        if check is None:
            return
        if not check.is_finished:
            if now >= check.deadline and not check.is_timed_out:
                check.kill(timed_out=True)  # reaped, and reported, in a later iteration
            return
        result = check.result()
        self.end_check()
        self.apply(result)

    def check_exited(self, pid: int, code: int) -> bool:
        """The master reaped ``pid``: whether it was the check (then it is told ``code``)."""
        if self._check is None or pid != self._check.pid:
            return False
        self._check.exited(code)
        return True

    def end_check(self) -> None:
        """Forget the check, killing and reaping it if it still runs (the server stops)."""
        if self._check is not None:
            self._check.close()
            self._check = None

    def apply(self, result: reexec.CheckResult) -> None:
        """What the check found: a failed reload, a code reload, or a re-exec with the new
        configuration (which returns only when it failed)."""
        if result.options is None:
            self._failed(f"the configuration could not be loaded: {result.error}")
            return
        changes = reexec.describe_changes(reexec.config_snapshot(self._config), result.options)
        if changes:
            self._reload_config(result.options, changes)
        else:
            self._reload_code("configuration unchanged")

    # -- the three outcomes ----------------------------------------------------------------

    def _reload_code(self, reason: str) -> None:
        """The code-only reload: new workers; the old ones stop once those serve."""
        logger.info(
            "Reloading (SIGHUP): %s; starting %d new worker(s)", reason, self._workers.target
        )
        self._is_reloading = True
        if self._rebuild_static is not None:
            try:
                self._workers.recipe.static = self._rebuild_static()
            except Exception:  # keep serving the old table
                logger.exception("Could not rebuild the static files table; keeping the old one")
        self._workers.retire_active()

    def _failed(self, reason: str) -> None:
        """Nothing changed: say why, and tell systemd (which got RELOADING=1) we serve."""
        serving = self._workers.count_active()
        logger.error(
            "Reload failed: %s\nStill serving with the current configuration and %d worker(s).",
            reason,
            serving,
        )
        self._notifier.ready(
            "Reload failed (see the log); still serving with the current configuration"
        )
        self._finished(ReloadOutcome.FAILED, f"Reload failed: {reason}", serving)

    def _reload_config(self, options: Mapping[str, Any], changes: list[str]) -> None:
        """Re-execute the master with the new configuration (reexec.py); returns on failure."""
        summary = ", ".join(changes)
        if options.get("RELOAD"):
            self._failed(
                f"the configuration changed ({summary}), but RELOAD (the autoreloader) cannot "
                "be turned on by SIGHUP: restart the server for it"
            )
            return
        assert self._command is not None
        logger.info(
            "Reloading (SIGHUP): configuration changed (%s); re-executing the master", summary
        )
        try:
            listeners, fresh, specs, dropped = self._listeners_for(options)
        except sockets.BindError as exc:
            self._failed(
                f"the configuration changed ({summary}), but the new BIND cannot be listened "
                f"at: {exc.address}: {sockets.friendly_bind_error(exc)}"
            )
            return
        except (OSError, LookupError, TypeError, ValueError) as exc:
            # The check ran the code on disk, maybe a newer version whose BIND or BACKLOG
            # this one cannot read; or no descriptor is left for a new socket.
            self._failed(
                f"the configuration changed ({summary}), but this master cannot listen at "
                f"its BIND: {exc!r}; restart the server for it"
            )
            return
        alive = list(self._workers)
        is_same_count = options.get("WORKERS") == self._config.workers
        handover = reexec.Handover(
            pid=os.getpid(),
            workers=tuple((p.pid, p.number) for p in alive),
            next_number=self._workers.next_number,
            target=self._workers.target if is_same_count else None,
            bind=specs,
            unlink=tuple(dict.fromkeys((*self._paths_to_unlink, *dropped))),
            changes=tuple(changes),
            control_socket=self.control_socket,
        )
        logger.info(
            "Handing over %d listener(s) and %d old worker(s) (pid %s) to the new master",
            len(listeners),
            len(alive),
            ", ".join(str(p.pid) for p in alive) or "none",
        )
        error = self._reexec(self._command, listeners, handover, pidfile=options.get("PIDFILE"))
        # Only when exec failed: everything is as it was, but the new listeners.
        sockets.close_listeners(fresh, unlink_unix=True)
        self._failed(f"could not re-execute {self._command[0]}: {error}")

    def _reexec(
        self,
        command: Sequence[str],
        listeners: Sequence[socket.socket],
        handover: reexec.Handover,
        *,
        pidfile: object,
    ) -> OSError:
        """``execve`` the new image (``pidfile``: its PIDFILE); returns only when that
        failed, with the PIDFILE, the signal mask and the descriptors as they were."""
        environ = reexec.exec_environ(
            self._environ,
            listener_count=len(listeners),
            handover=handover,
            fd_names=[protocol_of(sock).value for sock in listeners],
        )
        is_new_pidfile = pidfile != self._config.pidfile
        if is_new_pidfile:
            self._process.remove_pidfile()
        self._notifier.ping_watchdog()  # the new image pings once its loop runs
        # From here signals wait, blocked, for the new image (reexec.py).
        mask = self._inbox.hold_for_exec()
        error = reexec.reexec(
            command,
            environ,
            [sock.fileno() for sock in listeners],
            blocked_signals=HANDLED_SIGNALS,
        )
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if is_new_pidfile:
            self._process.write_pidfile()
        return error

    def _listeners_for(
        self, options: Mapping[str, Any]
    ) -> tuple[list[socket.socket], list[socket.socket], tuple[str, ...] | None, tuple[str, ...]]:
        """The listeners of the new configuration, those bound for it now, their BIND entries
        (None: systemd's) and the unix paths it drops. Raises BindError."""
        if self._listener_specs is None:  # socket activation: BIND stays ignored
            return list(self._listeners), [], None, ()
        # The check child's values, read back by each option's own codec.
        wanted = OPTIONS_BY_NAME["bind"].codec.coerce(options["BIND"])
        backlog = OPTIONS_BY_NAME["backlog"].codec.coerce(options["BACKLOG"])
        assert isinstance(wanted, tuple)
        assert isinstance(backlog, int)
        listeners, fresh = sockets.reuse_or_bind_listeners(
            list(zip(self._listener_specs, self._listeners, strict=False)), wanted, backlog=backlog
        )
        kept = {sockets.parse_bind(spec) for spec in wanted}
        dropped = tuple(
            address.path
            for address in map(sockets.parse_bind, self._listener_specs)
            if address.path and address not in kept
        )
        return listeners, fresh, wanted, dropped

    # -- after a re-exec -------------------------------------------------------------------

    def adopt(self, now: float) -> None:
        """The new image of a re-executed master takes over the previous image's workers."""
        handover = self._handover
        assert handover is not None
        adopted = []
        for pid, number in handover.workers:
            process = self._workers.adopt(pid, number, now)
            if process is not None:
                adopted.append(process)
        self._is_reloading = bool(adopted)
        logger.info(
            "Master (pid %d) re-executed with the new configuration (%s); adopted %d old "
            "worker(s) (pid %s), which serve until %d new worker(s) are ready",
            os.getpid(),
            ", ".join(handover.changes) or "unchanged",
            len(adopted),
            ", ".join(str(p.pid) for p in adopted) or "none",
            self._workers.target,
        )

    def remove_previous_control_socket(self) -> None:
        """After a re-exec: the previous image's control socket, when CONTROL_SOCKET moved
        (exec closed it: nobody listens there any more)."""
        previous = self._handover.control_socket if self._handover is not None else ""
        if not previous or previous == self.control_socket:
            return
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
            if not stat.S_ISSOCK(os.stat(previous).st_mode):
                return
            probe.setblocking(False)
            try:
                probe.connect(previous)
            except ConnectionRefusedError:  # stale: nobody took the path meanwhile
                os.unlink(previous)
                logger.info("Removed %s, the control socket before the reload", previous)

    def unlink_dropped_paths(self) -> None:
        """Remove the unix sockets dropped from BIND once no old worker accepts on them."""
        if not self._paths_to_unlink or self._workers.has_adopted():
            return
        listening = {sockets.parse_bind(spec).path for spec in self._listener_specs or ()}
        for path in self._paths_to_unlink:
            if path in listening:  # back in BIND since
                continue
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.unlink(path)
                    logger.info("Removed %s, no longer in BIND", path)
        self._paths_to_unlink = ()

    # -- the end of a reload ---------------------------------------------------------------

    def workers_ready(self, ready: int, *, is_first: bool) -> None:
        """``target`` workers serve and systemd got READY=1: the new generation of a reload
        has taken over; a re-executed image's first READY=1 ends the reload its previous
        image began."""
        was_reloading, self._is_reloading = self._is_reloading, False
        if was_reloading or (is_first and self._handover is not None):
            message = f"Reloaded: {ready} new worker(s) ready"
            self._finished(ReloadOutcome.RELOADED, message, ready)

    def undo(self, process: Worker, now: float) -> bool:
        """A new worker could not boot during a reload: keep the workers that were serving.

        A bad deploy followed by a reload must not take the site down: the retiring workers
        go back to work, the other new ones are stopped, and the operator gets an ERROR line
        and a systemd STATUS. Returns False when there is nothing to fall back on.
        """
        previous = self._workers.count(WorkerState.RETIRING)
        if not self._is_reloading or not previous:
            return False
        logger.error(
            "Reload failed: worker %d (pid %d) could not start the new code (its traceback is "
            "above). Keeping the %d worker(s) that were serving.",
            process.number,
            process.pid,
            previous,
        )
        self._workers.fall_back(now)
        self._workers.set_target(previous)
        self._is_reloading = False
        target = self._workers.target
        self._notifier.ready(
            f"Reload failed, still serving the previous code with {target} worker(s)"
        )
        message = f"Reload failed: worker {process.number} could not start the new code"
        self._finished(ReloadOutcome.FAILED, message, target)
        return True

    def _finished(self, outcome: ReloadOutcome, message: str, workers: int) -> None:
        """RELOAD_FINISHED, once per RELOAD_STARTED."""
        if not self._is_open:
            return
        self._is_open = False
        changes, self._changes = self._changes, ()
        self._hooks.send(
            Hook.RELOAD_FINISHED, outcome=outcome, message=message, changes=changes, workers=workers
        )
