"""The master process: its signal loop and its state machine; each job is delegated.

Design note.

* **Ownership.** The management command resolves the configuration, runs the system checks,
  imports the application only with PRELOAD, closes every database connection and binds (or
  inherits from systemd) the listening sockets, once. ``Arbiter.run()`` then forks the workers,
  which inherit the sockets and all accept on them; the master never serves a request.
* **The loop.** One ``select`` over the wake-up pipe, the workers' heartbeat pipes, the
  reload check's output and the master's own listeners (METRICS_BIND, the control socket);
  then, in this order: dispatch the recorded signals, reap, poll the reload check, remove unix
  sockets a reload dropped, enforce deadlines, apply the replacement rule (while RUNNING),
  report to systemd, drop idle health and control clients. SIGCHLD and every other signal
  wake it at once; otherwise it runs every half second, or sooner when the systemd watchdog
  is due.
* **States.** RUNNING -> DRAINING (TERM, INT, QUIT, or a boot failure: the master closes its
  copies of the listeners, every worker gets SIGTERM, or SIGQUIT to stop at once, and nothing
  is respawned) -> STOPPED once the last worker is reaped; ``run()`` then returns ``exit_code``.
* **Signals** (handlers only record and wake: inbox.py; the loop dispatches to
  ``_handle_<name>()``). HUP: reload (reload.py). TERM, INT: graceful drain (workers stop
  accepting and finish in-flight requests within GRACEFUL_TIMEOUT; exit status 0). A second
  INT, or QUIT: stop at once (SIGQUIT to the workers, SIGKILL two seconds later). TTIN/TTOU:
  one worker more or less (never below one). USR1: reopen log files here and in every worker.
  CHLD: only wakes the loop, which reaps in every iteration. docs/signals.md.
* **The control socket** (arbiter/control.py; ``manage.py servectl``), bound in ``run()``
  once the master runs as USER and before any fork: ``status`` (arbiter/status.py, from the
  worker table and the shared ``Scoreboard`` the workers write), and ``reload``,
  ``add-worker``, ``remove-worker``, ``stop``, dispatched as HUP, TTIN, TTOU and TERM are.
* **Boot failures halt.** A worker exiting with ``WorkerExitCode.APP_LOAD_FAILED`` or
  ``BOOT_FAILED`` stops the server (no respawn loop); ``run()`` returns that code and
  ``failure`` says what happened. Except during a reload, which is undone instead
  (``Reloader.undo``), or for a worker the master had asked to stop.
* **Lifecycle hooks** (hooks.py; Django signals, injected by the command): SERVER_READY with the
  first READY=1 (not again in a re-executed image: the same server), SERVER_STOPPING when a
  drain begins; the worker table sends WORKER_EXITED and WORKERS_CHANGED, the reloader
  RELOAD_STARTED and RELOAD_FINISHED. They run in this loop, so a slow receiver delays
  supervision; one that raises is logged and ignored.
* **Delegated.** ``workers`` (workers.py: forking, heartbeats, deadlines, the replacement
  rule), ``reloader`` (reload.py), ``notifier`` (notifier.py: sd_notify), ``process``
  (process.py: PIDFILE, USER/GROUP, UMASK, title, log reopening), ``inbox`` (inbox.py). Each
  is a public attribute, so tests drive a unit through its own API.

Threads: the master is single-threaded (forking a threaded process is unsafe). Must not import
Django.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import selectors
import signal
import time
from typing import TYPE_CHECKING

from django_wsgiserve import control, sockets
from django_wsgiserve.arbiter.control import ControlEndpoint, open_control_endpoint
from django_wsgiserve.arbiter.health import HealthEndpoint, HealthState
from django_wsgiserve.arbiter.inbox import SignalInbox
from django_wsgiserve.arbiter.notifier import SystemdNotifier
from django_wsgiserve.arbiter.process import ProcessSetup
from django_wsgiserve.arbiter.reload import Reloader
from django_wsgiserve.arbiter.scrape import MasterMetrics, metrics_table
from django_wsgiserve.arbiter.status import status_document
from django_wsgiserve.arbiter.workers import (
    KILL_GRACE_S,
    Worker,
    WorkerRecipe,
    WorkerState,
    WorkerTable,
    allowed_cpus,
    balance_table,
)
from django_wsgiserve.errors import ListenerError, WorkerExitCode
from django_wsgiserve.hooks import Hook, Hooks
from django_wsgiserve.scoreboard import Scoreboard

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, MutableMapping, Sequence

    from django_wsgiserve import reexec
    from django_wsgiserve.config import ServerConfig
    from django_wsgiserve.context import StaticResponder
    from django_wsgiserve.wsgi import WSGIApplication

__all__ = ["Arbiter", "ArbiterState"]

# Every module of the master logs as ``django_wsgiserve.arbiter``, the name its lines carry.
logger = logging.getLogger(__package__)

_LOOP_TIMEOUT_S = 0.5
_HALTING_CODES = frozenset({WorkerExitCode.BOOT_FAILED, WorkerExitCode.APP_LOAD_FAILED})
# The control socket's actions are the signals' (docs/signals.md), dispatched the same way.
_CONTROL_SIGNALS = {
    "reload": signal.SIGHUP,
    "add-worker": signal.SIGTTIN,
    "remove-worker": signal.SIGTTOU,
    "stop": signal.SIGTERM,
}


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
        project: str = "django",
    ) -> None:
        """``reload_command``: the command line that started this server, run again on SIGHUP
        to check the configuration and to re-execute the master when it changed; None (e.g.
        ``call_command``) reloads code only. ``handover``: what the previous image of this
        master passed on (reexec.py); ``listeners`` are then the ones it handed over.
        ``unlink_unix``: the listeners were bound by us, not passed by systemd.
        ``rebuild_static``: builds the static files table again on SIGHUP (after a deploy's
        collectstatic). ``hooks``: the lifecycle hooks (hooks.py), sent here and passed on
        to the workers. ``project``: the name an automatic CONTROL_SOCKET path derives from
        (control.py)."""
        self.config = config
        self.state = ArbiterState.RUNNING
        self.failure = ""
        self.exit_code = 0
        self.now = clock()
        self._clock = clock
        self._hooks = hooks or Hooks()
        # METRICS_BIND: the workers' shared counters and what the master adds (scrape.py).
        self.metrics: MasterMetrics | None = None
        if config.metrics_bind:
            self.metrics = MasterMetrics(metrics_table(config.workers, config.threads))
            self._hooks = self.metrics.observe_hooks(self._hooks)
        # What each worker runs now, for the control socket (scoreboard.py); always on.
        self.scoreboard = _scoreboard(config)
        self.control: ControlEndpoint | None = None  # opened by run(), as the server's user
        self._project = project
        self._environ: MutableMapping[str, str] = os.environ if environ is None else environ
        self._listeners = list(listeners)
        self._app_name = app_name
        self._unlink_unix = unlink_unix
        self._is_reexecuted = handover is not None
        self._is_ready_notified = False
        environ = self._environ
        self.process = ProcessSetup(
            pidfile=config.pidfile,
            user=config.user,
            group=config.group,
            umask=config.umask,
            title=title,
            is_reexecuted=self._is_reexecuted,
        )
        target = config.workers  # WORKERS 0 was counted (one per CPU) by ServerConfig
        if handover is not None:
            target = handover.target or target
        # Shared connection counts, so that workers take turns accepting (balance.py).
        balance = balance_table(config.workers)
        self.inbox = SignalInbox()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.inbox.wakeup_read, selectors.EVENT_READ, self.inbox.on_wakeup)
        # DRAIN_DELAY: when the drain begins after SIGTERM (None: no stop requested).
        self._drain_at: float | None = None
        self._stop_reason = ""
        self.health_state = HealthState()
        self.health: HealthEndpoint | None = None
        if config.metrics_bind:
            try:
                self.health = HealthEndpoint(
                    config.metrics_bind,
                    state=self.health_state,
                    selector=self._selector,
                    clock=clock,
                    metrics=self._render_metrics,
                )
            except sockets.BindError as exc:
                self._selector.close()
                self.inbox.close()
                message = sockets.friendly_bind_error(exc)
                raise ListenerError(
                    f"METRICS_BIND: can't listen at {exc.address}: {message}"
                ) from exc
        recipe = WorkerRecipe(
            config=config,
            listeners=self._listeners,
            load_application=load_application,
            preloaded=preloaded,
            title=title,
            static=static,
            hooks=self._hooks,
            metrics=self.metrics,
            scoreboard=self.scoreboard,
        )
        self.workers = WorkerTable(
            recipe,
            selector=self._selector,
            target=target,
            next_number=handover.next_number if handover is not None else 1,
            balance=balance,
            cpus=allowed_cpus() if config.cpu_affinity else (),
            master_fds=(self._selector.fileno(), self.inbox.wakeup_read, self.inbox.wakeup_write),
            more_fds=self._child_fds,
            clock=clock,
        )
        self.notifier = SystemdNotifier(environ, now=self.now, kill_grace_s=KILL_GRACE_S)
        self.reloader = Reloader(
            config,
            workers=self.workers,
            notifier=self.notifier,
            process=self.process,
            inbox=self.inbox,
            selector=self._selector,
            listeners=self._listeners,
            environ=environ,
            is_socket_activated=not unlink_unix,
            command=reload_command,
            handover=handover,
            rebuild_static=rebuild_static,
            hooks=self._hooks,
        )

    # -- running ---------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise workers until stopped (main thread); return the exit status."""
        self.process.prepare()
        try:
            self._open_control()
        except ListenerError:  # CONTROL_SOCKET cannot be listened at: nothing was started
            self.close()
            raise
        previous = self.inbox.install()
        if self._is_reexecuted:
            self.reloader.adopt(self.now)
        else:
            logger.info("Master (pid %d) starting %d worker(s)", os.getpid(), self.workers.target)
        if self.health is not None:
            logger.info("METRICS_BIND: /healthz, /readyz and /metrics at %s", self.health.url())
        if self.control is not None:
            logger.info("Control socket (manage.py servectl) at %s", self.control.path)
        try:
            while self.state is not ArbiterState.STOPPED:
                self._run_once()
        finally:
            self.inbox.restore(previous)
            self.reloader.end_check()
            self.workers.kill_all()  # leave no worker behind, whatever happened
            self.close()
        logger.info("Master (pid %d) stopped", os.getpid())
        return self.exit_code

    def close(self) -> None:
        """Release what the master holds (``run()`` does, last): its copies of the listeners,
        unix socket files a reload dropped, the selector, the wake-up pipe, the PIDFILE."""
        sockets.close_listeners(self._listeners, unlink_unix=self._unlink_unix)
        self.reloader.unlink_dropped_paths()
        if self.health is not None:
            self.health.close()
        if self.control is not None:
            self.control.close()
        self._selector.close()
        self.inbox.close()
        self.process.remove_pidfile()

    def _run_once(self) -> None:
        timeout = self.notifier.select_timeout(self.now, _LOOP_TIMEOUT_S)
        if self._drain_at is not None:
            timeout = max(0.0, min(timeout, self._drain_at - self.now))
        for key, _mask in self._selector.select(timeout):
            key.data()
        self.now = self._clock()
        for signum in self.inbox.take():
            self._dispatch_signal(signum)
        if self._drain_at is not None and self.now >= self._drain_at:
            self._begin_drain(self._stop_reason)
        self._reap()
        if self.state is ArbiterState.RUNNING:
            self.reloader.poll(self.now)
        else:  # TERM, INT or QUIT while the configuration was being checked
            self.reloader.end_check()
        self.reloader.unlink_dropped_paths()
        self.workers.check_deadlines(self.now)
        if self.state is ArbiterState.RUNNING:
            self.workers.manage(self.now)
        elif not self.workers:
            self.state = ArbiterState.STOPPED
        self._report_progress()
        self._report_health()
        if self.control is not None:
            self.control.check(self.now)

    def _dispatch_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name[3:].lower()
        handler: Callable[[], None] | None = getattr(self, f"_handle_{name}", None)
        if handler is not None:
            handler()

    # -- signal dispatch targets (the handlers only record: inbox.py) -----------------------

    def _handle_hup(self) -> None:
        if self.state is ArbiterState.RUNNING:
            self.reloader.begin(self.now)

    def _handle_term(self) -> None:
        self._stop_after_delay("SIGTERM")

    def _handle_int(self) -> None:
        if self.state is ArbiterState.DRAINING:
            self._stop_now("second SIGINT")
        else:
            self._stop_after_delay("SIGINT")

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

    # -- exits -----------------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if self.reloader.check_exited(pid, code):
                continue
            process = self.workers.reaped(pid, code)
            if process is None:
                continue
            if (
                code in _HALTING_CODES
                and not self.exit_code
                # One we had asked to stop (a new worker of a reload already undone) cannot
                # halt the server.
                and process.state is not WorkerState.STOPPING
                and not self.reloader.undo(process, self.now)
            ):
                self._halt(process, code)

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

    def _stop_after_delay(self, reason: str) -> None:
        """TERM/INT: the drain begins after DRAIN_DELAY, during which readiness fails and the
        server goes on serving; a second signal begins it at once."""
        delay = self.config.drain_delay
        if self.state is not ArbiterState.RUNNING:
            return
        if delay <= 0 or self._drain_at is not None:
            self._begin_drain(reason)
            return
        logger.info(
            "Stopping (%s): still serving for %.1f s (DRAIN_DELAY) while readiness fails, "
            "then draining",
            reason,
            delay,
        )
        self._drain_at = self.now + delay
        self._stop_reason = reason
        self.notifier.status(f"stopping in {delay:.1f} s (DRAIN_DELAY); {self._urls()}")

    def _begin_drain(self, reason: str) -> None:
        self._drain_at = None
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

    # -- the control socket ----------------------------------------------------------------

    def _open_control(self) -> None:
        """CONTROL_SOCKET, bound once the master runs as USER (its file is the server's
        user's) and before any worker is forked."""
        config = self.config
        self.control = open_control_endpoint(
            config.control_socket,
            source=config.source_of("control_socket"),
            name=self._project,
            environ=self._environ,
            selector=self._selector,
            clock=self._clock,
            handle=self._control_request,
            is_reexecuted=self._is_reexecuted,
        )
        if self.control is not None:
            self.reloader.control_socket = self.control.path
        self.reloader.remove_previous_control_socket()

    def _control_request(self, command: str, peer_pid: int) -> bytes:
        """A control socket request (arbiter/control.py): the reply line."""
        if command == "status":
            return control.encode_reply(self._status())
        logger.info("Control socket: %s, from pid %d", command, peer_pid)
        if self.state is not ArbiterState.RUNNING:
            return control.error_reply(f"{command}: the server is stopping already")
        if command == "remove-worker" and self.workers.target <= 1:
            return control.error_reply("remove-worker: one worker is the least (stop stops)")
        if command == "stop" and self._drain_at is not None:
            self._dispatch_signal(signal.SIGTERM)  # a second request drains at once, as TERM
            return control.encode_reply({"message": "Draining now"})
        self._dispatch_signal(_CONTROL_SIGNALS[command])
        return control.encode_reply(self._action_result(command))

    def _action_result(self, command: str) -> dict[str, object]:
        target = self.workers.target
        if command == "reload":
            message = "Reloading, as on SIGHUP: the log and status show its progress"
        elif command == "stop":
            message = "Stopping, as on SIGTERM: running requests finish first"
            if self._drain_at is not None:
                message += f"; draining in {self._drain_at - self.now:.1f} s (DRAIN_DELAY)"
        else:
            message = f"{target} worker(s) wanted"
        return {"message": message, "workers_wanted": target}

    def _status(self) -> dict[str, object]:
        """The ``status`` reply (arbiter/status.py)."""
        state = self.state.value
        if self.state is ArbiterState.RUNNING and self._drain_at is not None:
            state = "stopping"  # DRAIN_DELAY: serving still, readiness failing
        return status_document(
            state=state,
            workers=self.workers,
            target=self.workers.target,
            scoreboard=self.scoreboard,
            config=self.config,
            listening=self._url_list(),
            control_socket=self.control.path if self.control is not None else "",
            is_reloading=self.reloader.is_reloading or self.reloader.is_checking,
            now=self._clock(),
        )

    def _child_fds(self) -> list[int]:
        """The master's descriptors that come and go, which a forked worker closes."""
        fds = self.health.fds() if self.health is not None else []
        if self.control is not None:
            fds += self.control.fds()
        return fds

    # -- systemd and status ----------------------------------------------------------------

    def _report_progress(self) -> None:
        """READY=1 (and the hooks that go with it) once ``target`` workers serve, at start and
        after a reload; STATUS= as the count changes; then the notifier's timed messages."""
        if self.state is ArbiterState.RUNNING:
            ready = self.workers.count(WorkerState.READY)
            target = self.workers.target
            status = f"{ready} of {target} worker(s) ready; listening at {self._urls()}"
            is_reloading = self.reloader.is_reloading
            if ready >= target and (is_reloading or not self._is_ready_notified):
                is_first = not self._is_ready_notified
                if is_reloading:
                    logger.info("Reloaded: %d new worker(s) ready", ready)
                else:
                    logger.info("%d worker(s) ready", ready)
                self._is_ready_notified = True
                self.notifier.ready(status)
                if is_first and not self._is_reexecuted:
                    self._hooks.send(Hook.SERVER_READY, workers=ready)
                self.reloader.workers_ready(ready, is_first=is_first)
            else:
                self.notifier.status(status)
        self.notifier.tick(self.now, is_draining=self.state is not ArbiterState.RUNNING)

    def _report_health(self) -> None:
        """What /healthz and /readyz answer (health.py)."""
        ready = self.workers.count(WorkerState.READY) + self.workers.count(WorkerState.RETIRING)
        state = self.health_state
        state.is_alive = ready > 0
        if self.state is not ArbiterState.RUNNING:
            state.ready_reason = "draining"
        elif self._drain_at is not None:
            state.ready_reason = "stopping (DRAIN_DELAY)"
        elif not self._is_ready_notified:
            state.ready_reason = "starting"
        elif not ready:
            state.ready_reason = "no worker ready"
        else:
            state.ready_reason = ""
        if self.health is not None:
            self.health.check_deadlines(self.now)

    def _render_metrics(self) -> bytes:
        """``GET /metrics`` (health.py, in this loop)."""
        assert self.metrics is not None
        return self.metrics.render(self.workers)

    def _urls(self) -> str:
        return ", ".join(self._url_list())

    def _url_list(self) -> list[str]:
        urls = []
        for sock in self._listeners:
            with contextlib.suppress(OSError):
                urls.append(
                    sockets.listener_url(sock, scheme="https" if self.config.certfile else "http")
                )
        return urls


def _scoreboard(config: ServerConfig) -> Scoreboard | None:
    """The scoreboard, with as many slots as the accept balance table; None, with a warning,
    where shared anonymous memory is not available."""
    try:
        return Scoreboard(slots=max(16, 4 * config.workers), threads=config.threads)
    except (OSError, ValueError) as exc:
        logger.warning("The control socket's status will not show requests: %s", exc)
        return None
