"""The master process: forks workers, supervises them, reloads, resizes and drains.

Design note.

* **Ownership.** The management command resolves the configuration, runs the system checks,
  imports the application only with PRELOAD, closes every database connection and binds (or
  inherits from systemd) the listening sockets, once. ``Arbiter.run()`` then forks the workers,
  which inherit the sockets and all accept on them; the master never serves a request. After
  ``fork()`` the child goes straight to ``worker.run_child()``, which ends with ``os._exit``.
* **Signals.** Handlers only put the signal number on a ``SimpleQueue`` and write a byte to a
  wake-up pipe; the loop dispatches to ``_handle_<name>()``. Signals are blocked around
  ``fork()`` so that a child never runs the master's handlers.
  HUP: reload (check the configuration; start WORKERS new workers, in a re-executed master if
  the configuration changed; once all serve, SIGTERM the old ones, which drain).
  TERM, INT: graceful drain (the master closes its listener copies, workers stop accepting and
  finish in-flight requests within GRACEFUL_TIMEOUT; exit status 0). A second INT, or QUIT:
  stop at once (SIGQUIT to the workers, SIGKILL two seconds later). TTIN/TTOU: one worker more
  or less (never below one). USR1: reopen log files here and in every worker. CHLD: reap.
* **Heartbeat.** Each worker writes a byte to its own pipe at every loop tick (once a second,
  see ``worker.py``); any byte refreshes ``last_seen``. A worker that is not yet ready gets
  ``_BOOT_TIMEOUT_S``; a ready one HEARTBEAT_TIMEOUT. Past it the master logs at CRITICAL and
  sends SIGABRT (the worker's ``faulthandler`` prints every thread's traceback to stderr), then
  SIGKILL ``_ABORT_GRACE_S`` later. A stopping worker is not judged by heartbeat (it may be
  waiting for its threads) but is SIGKILLed ``_KILL_GRACE_S`` after GRACEFUL_TIMEOUT.
* **Replacement, one rule for all.** A worker is *active* while booting or ready. Whenever fewer
  than ``target`` workers are active a new one is forked at once (so a dead worker is replaced
  in the loop iteration that reaps it: SIGCHLD wakes the loop). A worker that asks to retire
  (MAX_REQUESTS, MAX_WORKER_MEMORY, a stuck request), every worker on HUP, and the oldest on
  TTOU become *retiring*: still serving, no longer active. Retiring workers get SIGTERM only
  once ``target`` active workers are ready, so capacity never drops to zero.
* **Boot failures halt.** A worker exiting with ``WorkerExitCode.APP_LOAD_FAILED`` or
  ``BOOT_FAILED`` stops the server (no respawn loop); ``run()`` returns that code and
  ``failure`` says what happened. Except during a reload: then the workers that were serving
  the previous code go back to work and the new ones are stopped (``_undo_reload``).
* **Reload semantics.** Workers are forked from this process, so they see the settings, the
  ServerConfig and the modules the master imported. With PRELOAD off the command's application
  loader drops the project's own modules imported after Django's setup (URLconf, views, the WSGI
  module...) so that a HUP picks up new code for them. On HUP the master first runs its command
  line again with ``--reload-check`` (``reexec.ConfigCheck``, polled from the loop, reaped by
  ``_reap``): a failure is logged and changes nothing (READY=1 again); an unchanged
  configuration gives the code-only reload above; a changed one makes the master bind what the
  new BIND adds and ``execve`` itself (same pid), handing over its listeners and workers
  (``reexec.Handover``). The new image *adopts* those workers: RETIRING, with no heartbeat
  pipe, so they are judged only by their exit and the graceful deadline once they get SIGTERM;
  its own workers count as the new generation of a reload (``_undo_reload`` applies). Unix
  socket paths the new BIND drops are removed once no adopted worker is left. docs/signals.md.
* **Accept balance.** Before forking, the master maps a small shared table (balance.py) and
  gives each worker a slot in it, freed when the worker is reaped; a worker publishes its
  connection count there and steps back from accepting while it holds more than its share.
* **Lifecycle hooks** (hooks.py; Django signals, injected by the command): SERVER_READY with the
  first READY=1, SERVER_STOPPING when a drain begins, WORKER_EXITED for each reaped worker,
  RELOAD_STARTED on HUP and RELOAD_FINISHED with its outcome (sent by the re-executed image
  when the configuration changed), WORKERS_CHANGED when ``target`` changes. They run in this
  loop, so a slow receiver delays supervision; one that raises is logged and ignored.
* **systemd** (only the master notifies): READY=1 once ``target`` workers are ready, STATUS=
  when the count changes, RELOADING=1 + MONOTONIC_USEC on HUP then READY=1 when the new
  workers serve (sent by the re-executed image after a configuration change) or at once when
  the reload failed, STOPPING=1 on TERM/INT/QUIT, WATCHDOG=1 every WATCHDOG_USEC/2, and
  EXTEND_TIMEOUT_USEC every few seconds while a drain runs.

Threads: the master is single-threaded (forking a threaded process is unsafe). Must not import
Django. Over 500 lines because supervision, reloads and draining share the worker table and the
one loop; the reload's own mechanics (the check child, exec, fd placement) are in reexec.py.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import selectors
import signal
import stat
import time
from typing import TYPE_CHECKING

from django_wsgiserve import reexec, sockets
from django_wsgiserve.arbiter.inbox import HANDLED_SIGNALS, SignalInbox
from django_wsgiserve.arbiter.notifier import SystemdNotifier
from django_wsgiserve.arbiter.process import ProcessSetup
from django_wsgiserve.arbiter.workers import (
    KILL_GRACE_S,
    Worker,
    WorkerRecipe,
    WorkerState,
    WorkerTable,
    allowed_cpus,
    balance_table,
)
from django_wsgiserve.errors import WorkerExitCode
from django_wsgiserve.hooks import Hook, Hooks, ReloadOutcome

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Mapping, MutableMapping, Sequence
    from typing import Any

    from django_wsgiserve.config import ServerConfig
    from django_wsgiserve.connection import StaticResponder
    from django_wsgiserve.wsgi import WSGIApplication

__all__ = ["Arbiter", "ArbiterState"]

# Every module of the master logs as ``django_wsgiserve.arbiter``, the name its lines carry.
logger = logging.getLogger(__package__)

_LOOP_TIMEOUT_S = 0.5
_HALTING_CODES = frozenset({WorkerExitCode.BOOT_FAILED, WorkerExitCode.APP_LOAD_FAILED})


class ArbiterState(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"  # TERM/INT or a boot failure: workers finish, nothing is respawned
    STOPPED = "stopped"


class Arbiter:
    """The master process; see the module notes. ``run()`` returns the exit status."""

    def __init__(
        self,
        config: ServerConfig,
        listeners: Sequence[socket.socket],
        *,
        load_application: Callable[[], WSGIApplication],
        preloaded: WSGIApplication | None = None,
        app_name: str = "",
        title: str = "",
        unlink_unix: bool = True,
        environ: MutableMapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        static: StaticResponder | None = None,
        rebuild_static: Callable[[], StaticResponder | None] | None = None,
        reload_command: Sequence[str] | None = None,
        handover: reexec.Handover | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        """``reload_command``: the command line that started this server, run again on SIGHUP
        to check the configuration and to re-execute the master when it changed; None (e.g.
        ``call_command``) reloads code only. ``handover``: what the previous image of this
        master passed on (reexec.py); ``listeners`` are then the ones it handed over.
        ``hooks``: the lifecycle hooks (hooks.py), sent here and passed on to the workers."""
        self.config = config
        self._hooks = hooks or Hooks()
        # Between RELOAD_STARTED and RELOAD_FINISHED, with the configuration changes: a
        # re-executed image finishes the reload its previous image started.
        self._is_reload_open = handover is not None
        self._reload_changes: tuple[str, ...] = handover.changes if handover else ()
        # Rebuilds the static table workers inherit on SIGHUP, after a deploy's collectstatic.
        self._rebuild_static = rebuild_static
        self.state = ArbiterState.RUNNING
        self.failure = ""
        self.exit_code = 0
        self.now = clock()
        self._listeners = list(listeners)
        self._app_name = app_name
        self.process = ProcessSetup(
            pidfile=config.pidfile,
            user=config.user,
            group=config.group,
            umask=config.umask,
            title=title,
            is_reexecuted=handover is not None,
        )
        self._unlink_unix = unlink_unix
        self._environ = os.environ if environ is None else environ
        self._clock = clock
        target = config.workers or os.cpu_count() or 1
        if handover is not None:
            target = handover.target or target
        # Shared connection counts, so that workers take turns accepting (balance.py).
        balance = balance_table(config.workers)
        self.inbox = SignalInbox()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.inbox.wakeup_read, selectors.EVENT_READ, self.inbox.on_wakeup)
        recipe = WorkerRecipe(
            config=config,
            listeners=self._listeners,
            load_application=load_application,
            preloaded=preloaded,
            title=title,
            static=static,
            hooks=self._hooks,
        )
        self.workers = WorkerTable(
            recipe,
            selector=self._selector,
            target=target,
            next_number=handover.next_number if handover is not None else 1,
            balance=balance,
            cpus=allowed_cpus() if config.cpu_affinity else (),
            master_fds=(self._selector.fileno(), self.inbox.wakeup_read, self.inbox.wakeup_write),
            clock=clock,
        )
        self._is_ready_notified = False
        self._is_reloading = False
        self.notifier = SystemdNotifier(self._environ, now=self.now, kill_grace_s=KILL_GRACE_S)
        self._reload_command = list(reload_command) if reload_command else None
        self._config_check: reexec.ConfigCheck | None = None
        self._handover = handover
        # The BIND entry each listener was bound for; None when systemd passed them (then a
        # configuration reload keeps them and BIND stays ignored).
        self._listener_specs: tuple[str, ...] | None = tuple(config.bind) if unlink_unix else None
        # Unix socket paths dropped from BIND by a configuration reload: removed once the old
        # workers, which still accept on them, are gone.
        self._paths_to_unlink: tuple[str, ...] = ()
        if handover is not None:
            self._listener_specs = handover.bind
            self._paths_to_unlink = handover.unlink

    # -- running ---------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise workers until stopped (main thread); return the exit status."""
        self.process.prepare()
        previous = self.inbox.install()
        if self._handover is not None:
            self._adopt(self._handover)
        else:
            logger.info("Master (pid %d) starting %d worker(s)", os.getpid(), self.workers.target)
        try:
            while self.state is not ArbiterState.STOPPED:
                self._run_once()
        finally:
            self.inbox.restore(previous)
            self._kill_all()
            self._close()
        logger.info("Master (pid %d) stopped", os.getpid())
        return self.exit_code

    def _run_once(self) -> None:
        timeout = self.notifier.select_timeout(self.now, _LOOP_TIMEOUT_S)
        for key, _mask in self._selector.select(timeout):
            key.data()
        self.now = self._clock()
        for signum in self.inbox.take():
            self._dispatch_signal(signum)
        self._reap()
        if self._config_check is not None:
            self._poll_config_check()
        self._unlink_dropped_paths()
        self.workers.check_deadlines(self.now)
        if self.state is ArbiterState.RUNNING:
            self.workers.manage(self.now)
        elif not self.workers:
            self.state = ArbiterState.STOPPED
        self._notify_progress()

    def _dispatch_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name[3:].lower()
        handler: Callable[[], None] | None = getattr(self, f"_handle_{name}", None)
        if handler is not None:
            handler()

    # -- signal dispatch targets (the handlers only record: inbox.py) ---------------------------

    def _handle_hup(self) -> None:
        if self.state is not ArbiterState.RUNNING:
            return
        if self._config_check is not None:
            logger.info("SIGHUP ignored: the previous one is still checking the configuration")
            return
        self._is_reload_open = True
        self._hooks.send(Hook.RELOAD_STARTED)
        self.notifier.reloading()
        if self._reload_command is None:
            self._reload_code("configuration not re-read (not started from a command line)")
            return
        logger.info("Reloading (SIGHUP): checking the configuration")
        try:
            self._config_check = reexec.ConfigCheck(
                self._reload_command, self._environ, now=self.now
            )
        except OSError as exc:
            self._reload_failed(f"could not run {self._reload_command[0]}: {exc}")
            return
        self._config_check.register(self._selector)

    def _handle_term(self) -> None:
        self._begin_drain("SIGTERM")

    def _handle_int(self) -> None:
        if self.state is ArbiterState.DRAINING:
            self._stop_now("second SIGINT")
        else:
            self._begin_drain("SIGINT")

    def _handle_quit(self) -> None:
        self._stop_now("SIGQUIT")

    def _handle_ttin(self) -> None:
        self.workers.set_target(self.workers.target + 1)
        logger.info("SIGTTIN: %d worker(s) wanted", self.workers.target)

    def _handle_ttou(self) -> None:
        self.workers.set_target(max(1, self.workers.target - 1))
        logger.info("SIGTTOU: %d worker(s) wanted", self.workers.target)

    def _handle_usr1(self) -> None:
        self.process.reopen_logs()
        self.workers.signal_all(signal.SIGUSR1)

    def _handle_chld(self) -> None:
        """Reaping happens in every loop iteration; the signal only woke the loop."""

    # -- reloading (SIGHUP) ----------------------------------------------------------------

    def _reload_code(self, reason: str) -> None:
        """The code-only reload: new workers; the old ones stop once those serve."""
        logger.info(
            "Reloading (SIGHUP): %s; starting %d new worker(s)", reason, self.workers.target
        )
        self._is_reloading = True
        if self._rebuild_static is not None:
            try:
                self.workers.recipe.static = self._rebuild_static()
            except Exception:  # keep serving the old table
                logger.exception("Could not rebuild the static files table; keeping the old one")
        self.workers.retire_active()

    def _poll_config_check(self) -> None:
        check = self._config_check
        assert check is not None
        if self.state is not ArbiterState.RUNNING:  # TERM, INT or QUIT meanwhile
            self._end_config_check()
            return
        if not check.is_finished:
            if self.now >= check.deadline and not check.is_timed_out:
                check.kill(timed_out=True)  # reaped, and reported, in a later iteration
            return
        result = check.result()
        self._end_config_check()
        if result.options is None:
            self._reload_failed(f"the configuration could not be loaded: {result.error}")
            return
        changes = reexec.describe_changes(reexec.config_snapshot(self.config), result.options)
        if changes:
            self._reload_config(result.options, changes)
        else:
            self._reload_code("configuration unchanged")

    def _end_config_check(self) -> None:
        if self._config_check is not None:
            self._config_check.close()
            self._config_check = None

    def _reload_failed(self, reason: str) -> None:
        """Nothing changed: say why, and tell systemd (which got RELOADING=1) we serve."""
        serving = self.workers.count_active()
        logger.error(
            "Reload failed: %s\nStill serving with the current configuration and %d worker(s).",
            reason,
            serving,
        )
        self.notifier.ready(
            "Reload failed (see the log); still serving with the current configuration"
        )
        self._reload_finished(ReloadOutcome.FAILED, f"Reload failed: {reason}", serving)

    def _reload_config(self, options: Mapping[str, Any], changes: list[str]) -> None:
        """Re-execute the master with the new configuration (reexec.py); returns on failure."""
        summary = ", ".join(changes)
        if options.get("RELOAD"):
            self._reload_failed(
                f"the configuration changed ({summary}), but RELOAD (the autoreloader) cannot "
                "be turned on by SIGHUP: restart the server for it"
            )
            return
        assert self._reload_command is not None
        logger.info(
            "Reloading (SIGHUP): configuration changed (%s); re-executing the master", summary
        )
        try:
            listeners, fresh, specs, dropped = self._listeners_for(options)
        except sockets.BindError as exc:
            self._reload_failed(
                f"the configuration changed ({summary}), but the new BIND cannot be listened "
                f"at: {exc.address}: {sockets.friendly_bind_error(exc)}"
            )
            return
        except (OSError, LookupError, TypeError, ValueError) as exc:
            # The check ran the code on disk, maybe a newer version whose BIND or BACKLOG
            # this one cannot read; or no descriptor is left for a new socket.
            self._reload_failed(
                f"the configuration changed ({summary}), but this master cannot listen at "
                f"its BIND: {exc!r}; restart the server for it"
            )
            return
        alive = list(self.workers)
        handover = reexec.Handover(
            pid=os.getpid(),
            workers=tuple((p.pid, p.number) for p in alive),
            next_number=self.workers.next_number,
            target=self.workers.target if options.get("WORKERS") == self.config.workers else None,
            bind=specs,
            unlink=tuple(dict.fromkeys((*self._paths_to_unlink, *dropped))),
            changes=tuple(changes),
        )
        logger.info(
            "Handing over %d listener(s) and %d old worker(s) (pid %s) to the new master",
            len(listeners),
            len(alive),
            ", ".join(str(p.pid) for p in alive) or "none",
        )
        environ = reexec.exec_environ(
            self._environ, listener_count=len(listeners), handover=handover
        )
        is_new_pidfile = options.get("PIDFILE") != self.config.pidfile
        if is_new_pidfile:
            self.process.remove_pidfile()
        self.notifier.ping_watchdog()  # the new image pings once its loop runs
        # From here signals wait, blocked, for the new image (reexec.py).
        mask = self.inbox.hold_for_exec()
        error = reexec.reexec(
            self._reload_command,
            environ,
            [sock.fileno() for sock in listeners],
            blocked_signals=HANDLED_SIGNALS,
        )
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        # Only when exec failed: everything is as it was, but the new listeners.
        if is_new_pidfile:
            self.process.write_pidfile()
        sockets.close_listeners(fresh, unlink_unix=True)
        self._reload_failed(f"could not re-execute {self._reload_command[0]}: {error}")

    def _listeners_for(
        self, options: Mapping[str, Any]
    ) -> tuple[list[socket.socket], list[socket.socket], tuple[str, ...] | None, tuple[str, ...]]:
        """The listeners of the new configuration, those bound for it now, their BIND entries
        (None: systemd's) and the unix paths it drops. Raises BindError."""
        if self._listener_specs is None:  # socket activation: BIND stays ignored
            return list(self._listeners), [], None, ()
        wanted = tuple(str(spec) for spec in options["BIND"])
        listeners, fresh = sockets.reuse_or_bind_listeners(
            list(zip(self._listener_specs, self._listeners, strict=False)),
            wanted,
            backlog=int(options["BACKLOG"]),
        )
        kept = {sockets.parse_bind(spec) for spec in wanted}
        dropped = tuple(
            address.path
            for address in map(sockets.parse_bind, self._listener_specs)
            if address.path and address not in kept
        )
        return listeners, fresh, wanted, dropped

    def _adopt(self, handover: reexec.Handover) -> None:
        """The new image of a re-executed master takes over the previous image's workers."""
        adopted = []
        for pid, number in handover.workers:
            process = self.workers.adopt(pid, number, self.now)
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
            self.workers.target,
        )

    def _unlink_dropped_paths(self) -> None:
        """Remove the unix sockets dropped from BIND once no old worker accepts on them."""
        if not self._paths_to_unlink or self.workers.has_adopted():
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

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self._config_check is not None and pid == self._config_check.pid:
                self._config_check.exited(os.waitstatus_to_exitcode(status))
                continue
            code = os.waitstatus_to_exitcode(status)
            process = self.workers.reaped(pid, code)
            if process is None:
                continue
            if (
                code in _HALTING_CODES
                and not self.exit_code
                # One we had asked to stop (a new worker of a reload already undone) cannot
                # halt the server.
                and process.state is not WorkerState.STOPPING
                and not self._undo_reload(process)
            ):
                self._halt(process, code)

    def _undo_reload(self, process: Worker) -> bool:
        """A new worker could not boot during a reload: keep the workers that were serving.

        A bad deploy followed by a reload must not take the site down: the retiring workers
        go back to work, the other new ones are stopped, and the operator gets an ERROR line
        and a systemd STATUS. Returns False when there is nothing to fall back on.
        """
        previous = self.workers.count(WorkerState.RETIRING)
        if not self._is_reloading or not previous:
            return False
        logger.error(
            "Reload failed: worker %d (pid %d) could not start the new code (its traceback is "
            "above). Keeping the %d worker(s) that were serving.",
            process.number,
            process.pid,
            previous,
        )
        self.workers.fall_back(self.now)
        self.workers.set_target(previous)
        self._is_reloading = False
        self.notifier.ready(
            f"Reload failed, still serving the previous code with {self.workers.target} worker(s)"
        )
        message = f"Reload failed: worker {process.number} could not start the new code"
        self._reload_finished(ReloadOutcome.FAILED, message, self.workers.target)
        return True

    def _halt(self, process: Worker, code: int) -> None:
        what = "load the application" if code == WorkerExitCode.APP_LOAD_FAILED else "boot"
        app = f" {self._app_name!r}" if self._app_name else ""
        self.failure = (
            f"Worker {process.number} (pid {process.pid}) could not {what}{app} "
            f"(exit code {code}; its traceback is above). Stopping instead of respawning."
        )
        logger.error("%s", self.failure)
        self.exit_code = code
        self._begin_drain("a worker failed to boot")

    # -- stopping --------------------------------------------------------------------------

    def _begin_drain(self, reason: str) -> None:
        if self.state is not ArbiterState.RUNNING:
            return
        logger.info(
            "Shutting down (%s): %d worker(s) finishing their requests", reason, len(self.workers)
        )
        self.state = ArbiterState.DRAINING
        self.notifier.stopping(now=self.now, drain_deadline=self.now + self.config.graceful_timeout)
        self._hooks.send(Hook.SERVER_STOPPING, reason=reason)
        # Our copies of the listeners go now: once the workers close theirs, connections are
        # refused instead of waiting in a backlog nobody accepts from. Sockets we bound first
        # take no new connection, so the workers can empty their backlogs for good before
        # they close them (sockets.refuse_new_connections); systemd's keep their backlog.
        if self._unlink_unix:
            sockets.refuse_new_connections(self._listeners)
        sockets.close_listeners(self._listeners, unlink_unix=self._unlink_unix)
        self.workers.stop_all(signal.SIGTERM, self.config.graceful_timeout, self.now)

    def _stop_now(self, reason: str) -> None:
        self._begin_drain(reason)
        logger.info("Stopping at once (%s)", reason)
        self.workers.stop_all(signal.SIGQUIT, 0.0, self.now)

    def _kill_all(self) -> None:
        """Leave no worker behind, whatever happened (SIGKILL, then reap)."""
        self._end_config_check()
        self.workers.kill_all()

    def _close(self) -> None:
        sockets.close_listeners(self._listeners, unlink_unix=self._unlink_unix)
        self._unlink_dropped_paths()
        self._selector.close()
        self.inbox.close()
        self.process.remove_pidfile()

    # -- systemd and status ----------------------------------------------------------------

    def _notify_progress(self) -> None:
        ready = self.workers.count(WorkerState.READY)
        if self.state is ArbiterState.RUNNING:
            target = self.workers.target
            status = f"{ready} of {target} worker(s) ready; listening at {self._urls()}"
            if ready >= target and (self._is_reloading or not self._is_ready_notified):
                was_reloading, is_first = self._is_reloading, not self._is_ready_notified
                if self._is_reloading:
                    logger.info("Reloaded: %d new worker(s) ready", ready)
                else:
                    logger.info("%d worker(s) ready", ready)
                self._is_ready_notified = True
                self._is_reloading = False
                self.notifier.ready(status)
                self._send_ready_hooks(ready, was_reloading=was_reloading, is_first=is_first)
            else:
                self.notifier.status(status)
        self.notifier.tick(self.now, is_draining=self.state is not ArbiterState.RUNNING)

    def _send_ready_hooks(self, ready: int, *, was_reloading: bool, is_first: bool) -> None:
        """SERVER_READY once per server (a re-executed image is the same server); the new
        workers of a reload serve: RELOAD_FINISHED, which for a re-executed image is its first
        READY=1."""
        if is_first and self._handover is None:
            self._hooks.send(Hook.SERVER_READY, workers=ready)
        if was_reloading or (is_first and self._handover is not None):
            message = f"Reloaded: {ready} new worker(s) ready"
            self._reload_finished(ReloadOutcome.RELOADED, message, ready)

    def _reload_finished(self, outcome: ReloadOutcome, message: str, workers: int) -> None:
        """RELOAD_FINISHED, once per RELOAD_STARTED."""
        if not self._is_reload_open:
            return
        self._is_reload_open = False
        changes, self._reload_changes = self._reload_changes, ()
        self._hooks.send(
            Hook.RELOAD_FINISHED, outcome=outcome, message=message, changes=changes, workers=workers
        )

    def _urls(self) -> str:
        urls = []
        for sock in self._listeners:
            with contextlib.suppress(OSError):
                urls.append(
                    sockets.listener_url(sock, scheme="https" if self.config.certfile else "http")
                )
        return ", ".join(urls)
