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
import functools
import grp
import logging
import math
import os
import pwd
import queue
import selectors
import signal
import stat
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import reexec, sockets, systemd, worker
from .balance import BalanceTable
from .errors import WorkerExitCode
from .hooks import Hook, Hooks, ReloadOutcome
from .protocols import protocol_of

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Mapping, MutableMapping, Sequence
    from typing import Any

    from .config import ServerConfig
    from .context import StaticResponder
    from .wsgi import WSGIApplication

__all__ = ["Arbiter", "ArbiterState", "WorkerState", "describe_exit"]

logger = logging.getLogger(__name__)

_LOOP_TIMEOUT_S = 0.5
_BOOT_TIMEOUT_S = 60.0  # importing a large project, with PRELOAD off, can take a while
_ABORT_GRACE_S = 2.0  # SIGABRT -> SIGKILL
_KILL_GRACE_S = 2.0  # past GRACEFUL_TIMEOUT -> SIGKILL
_EXTEND_EVERY_S = 5.0
_HANDLED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGCHLD,
)
_HALTING_CODES = frozenset({WorkerExitCode.BOOT_FAILED, WorkerExitCode.APP_LOAD_FAILED})


class ArbiterState(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"  # TERM/INT or a boot failure: workers finish, nothing is respawned
    STOPPED = "stopped"


class WorkerState(enum.Enum):
    BOOTING = "booting"
    READY = "ready"
    RETIRING = "retiring"  # still serving; SIGTERM once its replacement is ready
    STOPPING = "stopping"  # SIGTERM (or SIGQUIT) sent
    ABORTING = "aborting"  # silent: SIGABRT sent


@dataclass(slots=True)
class _Worker:
    pid: int
    number: int
    channel_fd: int
    state: WorkerState
    last_seen: float
    kill_at: float = math.inf
    was_killed: bool = False  # by us, with SIGKILL
    # Forked by this master's previous image (a configuration reload): no heartbeat pipe.
    is_adopted: bool = False
    slot: int | None = None  # in the accept balance table (balance.py)
    cpu: int | None = None  # CPU_AFFINITY


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
        # The static table (static.build_static_table) workers inherit; rebuilt on SIGHUP,
        # after a deploy's collectstatic, by ``rebuild_static``.
        self._static = static
        self._rebuild_static = rebuild_static
        self.state = ArbiterState.RUNNING
        self.target = config.workers or os.cpu_count() or 1
        self.failure = ""
        self.exit_code = 0
        self.now = clock()
        self._listeners = list(listeners)
        self._load_application = load_application
        self._preloaded = preloaded
        self._app_name = app_name
        self._title = title
        self._unlink_unix = unlink_unix
        self._environ = os.environ if environ is None else environ
        self._clock = clock
        self._workers: dict[int, _Worker] = {}
        self._next_number = 1
        # Shared connection counts, so that workers take turns accepting (balance.py).
        self._balance = _balance_table(config.workers)
        self._cpus = _allowed_cpus() if config.cpu_affinity else []
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._wakeup_read, self._wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wakeup_read, selectors.EVENT_READ, self._on_wakeup)
        self._is_ready_notified = False
        self._is_reloading = False
        self._status = ""
        self._drain_deadline = math.inf
        self._next_extend = math.inf
        self._watchdog_interval = _watchdog_interval(self._environ)
        self._next_watchdog = self.now
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
            self._next_number = handover.next_number
            self.target = handover.target or self.target

    # -- running ---------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise workers until stopped (main thread); return the exit status."""
        if self.config.umask is not None:
            os.umask(self.config.umask)
        self._write_pidfile()
        self._switch_user()
        worker.set_process_title(f"django-wsgiserve: master {self._title}".rstrip())
        previous = {signum: signal.signal(signum, self._on_signal) for signum in _HANDLED_SIGNALS}
        # A re-executed master starts with them blocked (reexec.py): what waited comes now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED_SIGNALS)
        if self._handover is not None:
            self._adopt(self._handover)
        else:
            logger.info("Master (pid %d) starting %d worker(s)", os.getpid(), self.target)
        try:
            while self.state is not ArbiterState.STOPPED:
                self._run_once()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._kill_all()
            self._close()
        logger.info("Master (pid %d) stopped", os.getpid())
        return self.exit_code

    def _run_once(self) -> None:
        timeout = _LOOP_TIMEOUT_S
        if self._watchdog_interval:
            timeout = max(0.0, min(timeout, self._next_watchdog - self.now))
        for key, _mask in self._selector.select(timeout):
            key.data()
        self.now = self._clock()
        while not self._signals.empty():
            self._dispatch_signal(self._signals.get())
        self._reap()
        if self._config_check is not None:
            self._poll_config_check()
        self._unlink_dropped_paths()
        self._check_deadlines()
        if self.state is ArbiterState.RUNNING:
            self._manage_workers()
        elif not self._workers:
            self.state = ArbiterState.STOPPED
        self._notify_progress()

    def _dispatch_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name[3:].lower()
        handler: Callable[[], None] | None = getattr(self, f"_handle_{name}", None)
        if handler is not None:
            handler()

    # -- signal handlers (record only) and their dispatch targets ---------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.put(signum)
        with contextlib.suppress(OSError):
            os.write(self._wakeup_write, b"\0")

    def _on_wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wakeup_read, 4096)

    def _handle_hup(self) -> None:
        if self.state is not ArbiterState.RUNNING:
            return
        if self._config_check is not None:
            logger.info("SIGHUP ignored: the previous one is still checking the configuration")
            return
        self._is_reload_open = True
        self._hooks.send(Hook.RELOAD_STARTED)
        systemd.notify(f"RELOADING=1\nMONOTONIC_USEC={systemd.monotonic_usec()}", self._environ)
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
        self._set_target(self.target + 1)
        logger.info("SIGTTIN: %d worker(s) wanted", self.target)

    def _handle_ttou(self) -> None:
        self._set_target(max(1, self.target - 1))
        logger.info("SIGTTOU: %d worker(s) wanted", self.target)

    def _set_target(self, workers: int) -> None:
        previous, self.target = self.target, workers
        if workers != previous:
            self._hooks.send(Hook.WORKERS_CHANGED, previous=previous, workers=workers)

    def _handle_usr1(self) -> None:
        worker.reopen_log_files()
        for process in list(self._workers.values()):
            self._kill(process, signal.SIGUSR1)

    def _handle_chld(self) -> None:
        """Reaping happens in every loop iteration; the signal only woke the loop."""

    # -- reloading (SIGHUP) ----------------------------------------------------------------

    def _reload_code(self, reason: str) -> None:
        """The code-only reload: new workers; the old ones stop once those serve."""
        logger.info("Reloading (SIGHUP): %s; starting %d new worker(s)", reason, self.target)
        self._is_reloading = True
        if self._rebuild_static is not None:
            try:
                self._static = self._rebuild_static()
            except Exception:  # keep serving the old table
                logger.exception("Could not rebuild the static files table; keeping the old one")
        for process in self._workers.values():
            if process.state in (WorkerState.BOOTING, WorkerState.READY):
                process.state = WorkerState.RETIRING

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
        serving = sum(p.state in _ACTIVE for p in self._workers.values())
        logger.error(
            "Reload failed: %s\nStill serving with the current configuration and %d worker(s).",
            reason,
            serving,
        )
        status = "Reload failed (see the log); still serving with the current configuration"
        systemd.notify(f"READY=1\nSTATUS={status}", self._environ)
        self._status = status
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
        alive = list(self._workers.values())
        handover = reexec.Handover(
            pid=os.getpid(),
            workers=tuple((p.pid, p.number) for p in alive),
            next_number=self._next_number,
            target=self.target if options.get("WORKERS") == self.config.workers else None,
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
            self._environ,
            listener_count=len(listeners),
            handover=handover,
            fd_names=[protocol_of(sock).value for sock in listeners],
        )
        is_new_pidfile = options.get("PIDFILE") != self.config.pidfile
        if is_new_pidfile:
            self._remove_pidfile()
        if self._watchdog_interval:  # the new image pings once its loop runs
            systemd.notify("WATCHDOG=1", self._environ)
        # From here signals wait, blocked, for the new image (reexec.py). One whose handler
        # ran since the loop last read the queue is only in that queue, which exec discards:
        # raise it again, pending, for the new image (or for this one, if exec fails). Sent to
        # this thread, which blocks it: sent to the process, any other thread (a library's)
        # that does not block it would take it, and it would not be pending at exec.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED_SIGNALS)
        while not self._signals.empty():
            signal.pthread_kill(threading.get_ident(), self._signals.get())
        error = reexec.reexec(
            self._reload_command,
            environ,
            [sock.fileno() for sock in listeners],
            blocked_signals=_HANDLED_SIGNALS,
        )
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        # Only when exec failed: everything is as it was, but the new listeners.
        if is_new_pidfile:
            self._write_pidfile()
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
            process = _Worker(pid, number, -1, WorkerState.RETIRING, self.now, is_adopted=True)
            try:
                reaped, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                logger.warning("Old worker %d (pid %d) is gone; nothing to adopt", number, pid)
                continue
            if reaped:  # it exited while this image started
                self._exited(process, os.waitstatus_to_exitcode(status))
                continue
            self._workers[pid] = process
            adopted.append(process)
        self._is_reloading = bool(adopted)
        logger.info(
            "Master (pid %d) re-executed with the new configuration (%s); adopted %d old "
            "worker(s) (pid %s), which serve until %d new worker(s) are ready",
            os.getpid(),
            ", ".join(handover.changes) or "unchanged",
            len(adopted),
            ", ".join(str(p.pid) for p in adopted) or "none",
            self.target,
        )

    def _unlink_dropped_paths(self) -> None:
        """Remove the unix sockets dropped from BIND once no old worker accepts on them."""
        if not self._paths_to_unlink or any(p.is_adopted for p in self._workers.values()):
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

    # -- workers ---------------------------------------------------------------------------

    def _manage_workers(self) -> None:
        """Fork what is missing, retire what is surplus, stop what has been replaced."""
        active = [p for p in self._workers.values() if p.state in _ACTIVE]
        for _ in range(self.target - len(active)):
            self._spawn()
        if len(active) > self.target:
            surplus = sorted(active, key=lambda p: p.number)[: len(active) - self.target]
            for process in surplus:
                process.state = WorkerState.RETIRING
        ready = sum(p.state is WorkerState.READY for p in self._workers.values())
        if ready >= self.target:
            for process in list(self._workers.values()):
                if process.state is WorkerState.RETIRING:
                    self._stop(process, signal.SIGTERM, self.config.graceful_timeout)

    def _spawn(self) -> None:
        number, self._next_number = self._next_number, self._next_number + 1
        slot = self._balance.claim() if self._balance is not None else None
        cpu = self._next_cpu()
        read_fd = write_fd = -1
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED_SIGNALS)
        try:
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
            if self._balance is not None:
                self._balance.release(slot)
            logger.error("Could not fork worker %d: %s", number, exc)
            return
        if pid == 0:  # the child: never returns from run_child
            worker.run_child(
                self.config,
                self._listeners,
                load_application=self._load_application,
                preloaded=self._preloaded,
                number=number,
                channel_fd=write_fd,
                close_fds=[read_fd, *self._own_fds()],
                signal_mask=mask,
                title=self._title,
                static=self._static,
                share=self._balance.share(slot) if self._balance and slot is not None else None,
                cpu=cpu,
                hooks=self._hooks,
            )
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self._workers[pid] = _Worker(
            pid, number, read_fd, WorkerState.BOOTING, self.now, slot=slot, cpu=cpu
        )
        self._selector.register(
            read_fd, selectors.EVENT_READ, functools.partial(self._on_message, pid)
        )
        pinned = f" on CPU {cpu}" if cpu is not None else ""
        logger.info("Worker %d (pid %d) started%s", number, pid, pinned)

    def _next_cpu(self) -> int | None:
        """CPU_AFFINITY: the allowed CPU with the fewest booting or serving workers."""
        if not self._cpus:
            return None
        load = dict.fromkeys(self._cpus, 0)
        for process in self._workers.values():
            if process.cpu in load and process.state in _ACTIVE:
                load[process.cpu] += 1
        return min(self._cpus, key=lambda cpu: (load[cpu], cpu))

    def _own_fds(self) -> list[int]:
        """The master's descriptors a child must close."""
        fds = [self._selector.fileno(), self._wakeup_read, self._wakeup_write]
        return fds + [p.channel_fd for p in self._workers.values() if p.channel_fd >= 0]

    def _on_message(self, pid: int) -> None:
        process = self._workers.get(pid)
        if process is None:
            return
        try:
            data = os.read(process.channel_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker is exiting; reaping will follow
            self._close_channel(process)
            return
        process.last_seen = self._clock()
        if worker.MESSAGE_READY in data and process.state is WorkerState.BOOTING:
            process.state = WorkerState.READY
            logger.info("Worker %d (pid %d) ready", process.number, pid)
        if worker.MESSAGE_RETIRE in data and process.state in _ACTIVE:
            process.state = WorkerState.RETIRING
            logger.info(
                "Worker %d (pid %d) retiring: starting its replacement", process.number, pid
            )

    def _close_channel(self, process: _Worker) -> None:
        if process.channel_fd >= 0:
            self._selector.unregister(process.channel_fd)
            os.close(process.channel_fd)
            process.channel_fd = -1

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
            process = self._workers.pop(pid, None)
            if process is None:
                continue
            if self._balance is not None:
                self._balance.release(process.slot)
            self._close_channel(process)
            code = os.waitstatus_to_exitcode(status)
            self._exited(process, code)
            if (
                code in _HALTING_CODES
                and not self.exit_code
                # One we had asked to stop (a new worker of a reload already undone) cannot
                # halt the server.
                and process.state is not WorkerState.STOPPING
                and not self._undo_reload(process)
            ):
                self._halt(process, code)

    def _undo_reload(self, process: _Worker) -> bool:
        """A new worker could not boot during a reload: keep the workers that were serving.

        A bad deploy followed by a reload must not take the site down: the retiring workers
        go back to work, the other new ones are stopped, and the operator gets an ERROR line
        and a systemd STATUS. Returns False when there is nothing to fall back on.
        """
        previous = [p for p in self._workers.values() if p.state is WorkerState.RETIRING]
        if not self._is_reloading or not previous:
            return False
        logger.error(
            "Reload failed: worker %d (pid %d) could not start the new code (its traceback is "
            "above). Keeping the %d worker(s) that were serving.",
            process.number,
            process.pid,
            len(previous),
        )
        for other in list(self._workers.values()):
            if other.state is WorkerState.BOOTING:
                self._stop(other, signal.SIGTERM, self.config.graceful_timeout)
        for other in previous:
            other.state = WorkerState.READY
        self._set_target(len(previous))
        self._is_reloading = False
        status = f"Reload failed, still serving the previous code with {self.target} worker(s)"
        systemd.notify(f"READY=1\nSTATUS={status}", self._environ)
        self._status = status
        message = f"Reload failed: worker {process.number} could not start the new code"
        self._reload_finished(ReloadOutcome.FAILED, message, self.target)
        return True

    def _exited(self, process: _Worker, code: int) -> None:
        """Log a reaped worker's exit and send WORKER_EXITED."""
        _log_exit(process, code)
        self._hooks.send(
            Hook.WORKER_EXITED,
            pid=process.pid,
            number=process.number,
            exit_code=code,
            reason=describe_exit(code, was_killed=process.was_killed),
            is_expected=_is_expected_exit(process, code),
        )

    def _halt(self, process: _Worker, code: int) -> None:
        what = "load the application" if code == WorkerExitCode.APP_LOAD_FAILED else "boot"
        app = f" {self._app_name!r}" if self._app_name else ""
        self.failure = (
            f"Worker {process.number} (pid {process.pid}) could not {what}{app} "
            f"(exit code {code}; its traceback is above). Stopping instead of respawning."
        )
        logger.error("%s", self.failure)
        self.exit_code = code
        self._begin_drain("a worker failed to boot")

    def _check_deadlines(self) -> None:
        now = self.now
        for process in list(self._workers.values()):
            if now >= process.kill_at:
                logger.warning(
                    "Worker %d (pid %d) is still running: killing it (SIGKILL)",
                    process.number,
                    process.pid,
                )
                process.kill_at = math.inf
                process.was_killed = True
                self._kill(process, signal.SIGKILL)
            elif process.state in _JUDGED_BY_HEARTBEAT and not process.is_adopted:
                limit = (
                    _BOOT_TIMEOUT_S
                    if process.state is WorkerState.BOOTING
                    else self.config.heartbeat_timeout
                )
                if now - process.last_seen > limit:
                    self._abort(process, now - process.last_seen)

    def _abort(self, process: _Worker, silence: float) -> None:
        logger.critical(
            "Worker %d (pid %d) sent no heartbeat for %.1f s: aborting it (SIGABRT; the "
            "tracebacks of its threads follow on stderr) and starting another",
            process.number,
            process.pid,
            silence,
            extra={"worker_pid": process.pid},
        )
        process.state = WorkerState.ABORTING
        process.kill_at = self.now + _ABORT_GRACE_S
        self._kill(process, signal.SIGABRT)

    def _stop(self, process: _Worker, signum: int, grace: float) -> None:
        if process.state in (WorkerState.STOPPING, WorkerState.ABORTING):
            process.kill_at = min(process.kill_at, self.now + grace + _KILL_GRACE_S)
            if signum == signal.SIGQUIT:
                self._kill(process, signum)
            return
        process.state = WorkerState.STOPPING
        process.kill_at = self.now + grace + _KILL_GRACE_S
        self._kill(process, signum)

    def _kill(self, process: _Worker, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)

    # -- stopping --------------------------------------------------------------------------

    def _begin_drain(self, reason: str) -> None:
        if self.state is not ArbiterState.RUNNING:
            return
        logger.info(
            "Shutting down (%s): %d worker(s) finishing their requests", reason, len(self._workers)
        )
        self.state = ArbiterState.DRAINING
        systemd.notify("STOPPING=1", self._environ)
        self._hooks.send(Hook.SERVER_STOPPING, reason=reason)
        # Our copies of the listeners go now: once the workers close theirs, connections are
        # refused instead of waiting in a backlog nobody accepts from. Sockets we bound first
        # take no new connection, so the workers can empty their backlogs for good before
        # they close them (sockets.refuse_new_connections); systemd's keep their backlog.
        if self._unlink_unix:
            sockets.refuse_new_connections(self._listeners)
        sockets.close_listeners(self._listeners, unlink_unix=self._unlink_unix)
        self._drain_deadline = self.now + self.config.graceful_timeout
        self._next_extend = self.now
        for process in list(self._workers.values()):
            self._stop(process, signal.SIGTERM, self.config.graceful_timeout)

    def _stop_now(self, reason: str) -> None:
        self._begin_drain(reason)
        logger.info("Stopping at once (%s)", reason)
        for process in list(self._workers.values()):
            self._stop(process, signal.SIGQUIT, 0.0)

    def _kill_all(self) -> None:
        """Leave no worker behind, whatever happened (SIGKILL, then reap)."""
        self._end_config_check()
        for process in list(self._workers.values()):
            self._kill(process, signal.SIGKILL)
        for pid in list(self._workers):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self._close_channel(self._workers.pop(pid))

    def _close(self) -> None:
        sockets.close_listeners(self._listeners, unlink_unix=self._unlink_unix)
        self._unlink_dropped_paths()
        self._selector.close()
        os.close(self._wakeup_read)
        os.close(self._wakeup_write)
        self._remove_pidfile()

    # -- systemd and status ----------------------------------------------------------------

    def _notify_progress(self) -> None:
        ready = sum(p.state is WorkerState.READY for p in self._workers.values())
        if self.state is ArbiterState.RUNNING:
            status = f"{ready} of {self.target} worker(s) ready; listening at {self._urls()}"
            if ready >= self.target and (self._is_reloading or not self._is_ready_notified):
                was_reloading, is_first = self._is_reloading, not self._is_ready_notified
                if self._is_reloading:
                    logger.info("Reloaded: %d new worker(s) ready", ready)
                else:
                    logger.info("%d worker(s) ready", ready)
                self._is_ready_notified = True
                self._is_reloading = False
                systemd.notify(f"READY=1\nSTATUS={status}", self._environ)
                self._send_ready_hooks(ready, was_reloading=was_reloading, is_first=is_first)
            elif status != self._status:
                systemd.notify(f"STATUS={status}", self._environ)
            self._status = status
        elif self.now >= self._next_extend:
            remaining = max(0.0, self._drain_deadline - self.now) + _KILL_GRACE_S + _EXTEND_EVERY_S
            systemd.notify(f"EXTEND_TIMEOUT_USEC={int(remaining * 1e6)}", self._environ)
            self._next_extend = self.now + _EXTEND_EVERY_S
        if self._watchdog_interval and self.now >= self._next_watchdog:
            systemd.notify("WATCHDOG=1", self._environ)
            self._next_watchdog = self.now + self._watchdog_interval

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

    def _write_pidfile(self) -> None:
        path = self.config.pidfile
        if not path or _read_pid(path) == os.getpid():
            return  # e.g. re-executed (SIGHUP): the pid is the same
        temporary = f"{path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "w", encoding="ascii") as pidfile:
                pidfile.write(f"{os.getpid()}\n")
            os.replace(temporary, path)  # atomic: a reader never sees a half-written file
        except OSError as exc:
            if self._handover is None:
                raise
            # Re-executed after USER dropped root, a new PIDFILE may not be writable: that must
            # not stop a server that is serving.
            logger.error("Could not write PIDFILE %s: %s", path, exc)

    def _switch_user(self) -> None:
        try:
            _drop_privileges(self.config.user, self.config.group)
        except (LookupError, OSError) as exc:
            if self._handover is None:
                raise
            # The reload check does not look USER/GROUP up: a re-executed master that cannot
            # switch keeps the identity it had rather than die and orphan its old workers.
            logger.error("USER/GROUP %r/%r ignored: %r", self.config.user, self.config.group, exc)

    def _remove_pidfile(self) -> None:
        path = self.config.pidfile
        if not path:
            return
        try:
            if _read_pid(path) == os.getpid():
                os.unlink(path)
        except OSError as exc:
            logger.warning("Could not remove PIDFILE %s: %s", path, exc)


_ACTIVE = (WorkerState.BOOTING, WorkerState.READY)
_JUDGED_BY_HEARTBEAT = (WorkerState.BOOTING, WorkerState.READY, WorkerState.RETIRING)


def _read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as pidfile:
            return int(pidfile.read().strip())
    except (OSError, ValueError):
        return None


def describe_exit(code: int, *, was_killed: bool = False) -> str:
    """``os.waitstatus_to_exitcode`` result in words, for the log."""
    if code >= 0:
        return f"exited with code {code}"
    name = signal.Signals(-code).name
    if -code == signal.SIGKILL and not was_killed:
        return f"was killed by {name}: probably out of memory (or kill -9)"
    return f"was killed by {name}"


def _allowed_cpus() -> list[int]:
    """The CPUs this process may run on (a cgroup or taskset may allow fewer than exist)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError) as exc:
        logger.warning("CPU_AFFINITY is ignored: the CPUs allowed cannot be read (%s)", exc)
        return []


def _balance_table(workers: int) -> BalanceTable | None:
    # Room for a reload's second generation and some SIGTTIN; a worker beyond it accepts
    # without balance. Each accept reads every slot, so the table stays small.
    try:
        return BalanceTable(max(16, 4 * workers))
    except (OSError, ValueError) as exc:  # no shared anonymous mmap here: accept as it comes
        logger.warning("Accept balance between workers is off: %s", exc)
        return None


def _is_expected_exit(process: _Worker, code: int) -> bool:
    # A worker stopped before it installed its handlers dies of the signal itself.
    return process.state is WorkerState.STOPPING and code in (0, -signal.SIGTERM)


def _log_exit(process: _Worker, code: int) -> None:
    words = describe_exit(code, was_killed=process.was_killed)
    level = logging.INFO if _is_expected_exit(process, code) else logging.ERROR
    logger.log(
        level,
        "Worker %d (pid %d) %s",
        process.number,
        process.pid,
        words,
        extra={"worker_pid": process.pid},
    )


def _watchdog_interval(environ: MutableMapping[str, str]) -> float:
    """Half of WATCHDOG_USEC in seconds when the watchdog is meant for us, else 0."""
    watchdog_pid = environ.get("WATCHDOG_PID", "")
    if watchdog_pid and watchdog_pid != str(os.getpid()):
        return 0.0
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return 0.0
    return usec / 2 / 1e6 if usec > 0 else 0.0


def _drop_privileges(user: str, group: str) -> None:
    """Switch to USER/GROUP (after binding); only root can, so otherwise warn and stay."""
    if not user and not group:
        return
    entry = (pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)) if user else None
    if group:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    else:
        gid = entry.pw_gid if entry is not None else os.getegid()
    if (entry is None or entry.pw_uid == os.geteuid()) and gid == os.getegid():
        return  # already that user and group, e.g. systemd's User=/Group= did it
    if os.geteuid() != 0:
        logger.warning(
            "USER/GROUP ignored: switching to them needs root (running as uid %d, gid %d)",
            os.geteuid(),
            os.getegid(),
        )
        return
    if entry is not None:
        os.initgroups(entry.pw_name, gid)
    else:
        os.setgroups([gid])
    os.setgid(gid)
    if entry is not None:
        os.setuid(entry.pw_uid)
    logger.info("Running as uid %d, gid %d", os.getuid(), os.getgid())
