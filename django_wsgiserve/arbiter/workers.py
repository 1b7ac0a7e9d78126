"""The master's worker table: the workers it forked (or adopted), and the rules that drive them.

Design note.

* **States.** BOOTING (forked) -> READY (its loop accepts: ``worker.MESSAGE_READY``) ->
  RETIRING (it asked to be replaced, or its generation on HUP, or the oldest on TTOU: still
  serving, no longer active) -> STOPPING (SIGTERM or SIGQUIT sent) -> reaped. A silent worker
  becomes ABORTING (SIGABRT sent). A worker may die in any state. Numbers are never reused.
* **Replacement, one rule for all** (``manage``). A worker is *active* while booting or ready.
  Whenever fewer than ``target`` are active a new one is forked at once (a dead worker is
  replaced in the loop iteration that reaps it: SIGCHLD wakes the loop); the oldest surplus
  ones retire. Retiring workers get SIGTERM only once ``target`` workers are ready, so
  capacity never drops to zero.
* **Heartbeat** (``check_deadlines``). Each worker writes a byte to its pipe at every loop tick
  (once a second, worker.py); any byte refreshes ``last_seen``. Silent for ``BOOT_TIMEOUT_S``
  while booting, or HEARTBEAT_TIMEOUT once ready or retiring, it is logged at CRITICAL and
  sent SIGABRT (its ``faulthandler`` prints every thread's traceback), then SIGKILL
  ``ABORT_GRACE_S`` later. A stopping worker is not judged by heartbeat (it may be waiting for
  its threads) but is SIGKILLed ``KILL_GRACE_S`` after its grace (GRACEFUL_TIMEOUT; none after
  SIGQUIT). An adopted worker (forked by the previous image of a re-executed master) has no
  pipe: only its exit and that deadline judge it.
* **Forking** (``spawn``). The master's signals are blocked around ``fork()`` so that a child
  never runs its handlers; the child goes straight to ``worker.run_child`` (which ends with
  ``os._exit``) and closes the master's descriptors. A failed fork is logged; the next
  ``manage`` tries again. Each worker claims a slot in the accept ``BalanceTable``
  (balance.py) and in the ``Scoreboard`` (scoreboard.py), released when it is reaped, and
  with CPU_AFFINITY the least used CPU.
* **Exits** (``reaped``): INFO when expected (told to stop, then exit 0 or SIGTERM), else
  ERROR; a SIGKILL the master did not send reads as probably out of memory. Hooks:
  WORKER_EXITED for each, WORKERS_CHANGED when ``target`` changes.

``clock``, ``fork`` and ``kill`` are injected, so tests drive the states with no child process
and a fake clock. Threads: master's main thread only. Must not import Django.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import math
import os
import selectors
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

from django_wsgiserve import worker
from django_wsgiserve.arbiter.inbox import HANDLED_SIGNALS
from django_wsgiserve.arbiter.scrape import process_age
from django_wsgiserve.balance import BalanceTable
from django_wsgiserve.hooks import Hook, Hooks

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Iterator, Sequence

    from django_wsgiserve.arbiter.scrape import MasterMetrics
    from django_wsgiserve.config import ServerConfig
    from django_wsgiserve.context import StaticResponder
    from django_wsgiserve.scoreboard import Scoreboard
    from django_wsgiserve.wsgi import WSGIApplication

__all__ = [
    "ABORT_GRACE_S",
    "BOOT_TIMEOUT_S",
    "KILL_GRACE_S",
    "Worker",
    "WorkerRecipe",
    "WorkerState",
    "WorkerTable",
    "allowed_cpus",
    "balance_table",
    "describe_exit",
]

# Every module of the master logs as ``django_wsgiserve.arbiter``, the name its lines carry.
logger = logging.getLogger(__package__)

BOOT_TIMEOUT_S = 60.0  # importing a large project, with PRELOAD off, can take a while
ABORT_GRACE_S = 2.0  # SIGABRT -> SIGKILL
KILL_GRACE_S = 2.0  # past GRACEFUL_TIMEOUT -> SIGKILL


class WorkerState(enum.Enum):
    BOOTING = "booting"
    READY = "ready"
    RETIRING = "retiring"  # still serving; SIGTERM once its replacement is ready
    STOPPING = "stopping"  # SIGTERM (or SIGQUIT) sent
    ABORTING = "aborting"  # silent: SIGABRT sent


_ACTIVE = (WorkerState.BOOTING, WorkerState.READY)
_JUDGED_BY_HEARTBEAT = (WorkerState.BOOTING, WorkerState.READY, WorkerState.RETIRING)


@dataclass(slots=True)
class Worker:
    """One worker process, as the master sees it."""

    pid: int
    number: int
    channel_fd: int  # the read end of its heartbeat pipe; -1 once closed, or adopted
    state: WorkerState
    last_seen: float
    kill_at: float = math.inf
    was_killed: bool = False  # by us, with SIGKILL
    # Forked by this master's previous image (a configuration reload): no heartbeat pipe.
    is_adopted: bool = False
    slot: int | None = None  # in the accept balance table (balance.py)
    cpu: int | None = None  # CPU_AFFINITY
    slot_metrics: int | None = None  # in the metrics table (arbiter/scrape.py)
    slot_scoreboard: int | None = None  # in the scoreboard (scoreboard.py)
    started: float = 0.0  # the master's clock when it was forked


@dataclass(slots=True, kw_only=True)
class WorkerRecipe:
    """What every forked worker starts from: ``worker.run_child``'s fixed arguments."""

    config: ServerConfig
    listeners: Sequence[socket.socket]
    load_application: Callable[[], WSGIApplication]
    preloaded: WSGIApplication | None = None
    title: str = ""
    # The static table (static.build_static_table) workers inherit; a code reload replaces
    # it with one rebuilt after a deploy's collectstatic.
    static: StaticResponder | None = None
    hooks: Hooks = field(default_factory=Hooks)
    metrics: MasterMetrics | None = None  # METRICS_BIND
    scoreboard: Scoreboard | None = None  # what each worker runs now (the control socket)


def _send_signal(pid: int, signum: int) -> None:
    """``os.kill``, quiet when the process has gone already (it will be reaped)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


class WorkerTable:
    """The master's workers and their states (master's main thread only); see the notes."""

    def __init__(
        self,
        recipe: WorkerRecipe,
        *,
        selector: selectors.BaseSelector,
        target: int,
        next_number: int = 1,
        balance: BalanceTable | None = None,
        cpus: Sequence[int] = (),
        master_fds: Sequence[int] = (),
        more_fds: Callable[[], Sequence[int]] = tuple,
        clock: Callable[[], float] = time.monotonic,
        fork: Callable[[], int] = os.fork,
        kill: Callable[[int, int], None] = _send_signal,
    ) -> None:
        """``selector``: the master's, which watches each heartbeat pipe; ``balance``: the
        accept balance table (``balance_table``); ``cpus``: those to pin workers to
        (CPU_AFFINITY); ``master_fds``: the master's descriptors a child must close (its
        selector's, its wake-up pipe), besides the heartbeat pipes; ``more_fds()``: those that
        come and go (the METRICS_BIND listener's connections)."""
        self.recipe = recipe
        self._selector = selector
        self._target = target
        self._next_number = next_number
        self._balance = balance
        self._cpus = list(cpus)
        self._master_fds = list(master_fds)
        self._more_fds = more_fds
        self._clock = clock
        self._fork = fork
        self._kill = kill
        self._workers: dict[int, Worker] = {}

    # -- reading -----------------------------------------------------------------------------

    @property
    def target(self) -> int:
        """How many active workers are wanted."""
        return self._target

    @property
    def next_number(self) -> int:
        """The number the next worker gets (handed over across a re-exec)."""
        return self._next_number

    def __len__(self) -> int:
        return len(self._workers)

    def __iter__(self) -> Iterator[Worker]:
        """Every worker, oldest first, as a snapshot: it may be stopped or reaped meanwhile."""
        return iter(list(self._workers.values()))

    def get(self, pid: int) -> Worker | None:
        return self._workers.get(pid)

    def count(self, *states: WorkerState) -> int:
        """How many workers are in one of ``states``."""
        return sum(process.state in states for process in self._workers.values())

    def count_active(self) -> int:
        """How many workers are booting or ready."""
        return self.count(*_ACTIVE)

    def has_adopted(self) -> bool:
        """Whether a worker of the previous image of this master is still running."""
        return any(process.is_adopted for process in self._workers.values())

    # -- the replacement rule ----------------------------------------------------------------

    def set_target(self, workers: int) -> None:
        """Want ``workers`` active workers (TTIN, TTOU, a reload undone): WORKERS_CHANGED."""
        previous, self._target = self._target, workers
        if workers != previous:
            self.recipe.hooks.send(Hook.WORKERS_CHANGED, previous=previous, workers=workers)

    def manage(self, now: float) -> None:
        """Fork what is missing, retire what is surplus, stop what has been replaced."""
        active = [p for p in self._workers.values() if p.state in _ACTIVE]
        for _ in range(self._target - len(active)):
            self.spawn(now)
        if len(active) > self._target:
            surplus = sorted(active, key=lambda p: p.number)[: len(active) - self._target]
            for process in surplus:
                process.state = WorkerState.RETIRING
        if self.count(WorkerState.READY) >= self._target:
            for process in self:
                if process.state is WorkerState.RETIRING:
                    self.stop(process, signal.SIGTERM, self.recipe.config.graceful_timeout, now)

    def retire_active(self) -> None:
        """A code reload: every active worker serves on until the new ones are ready."""
        for process in self._workers.values():
            if process.state in _ACTIVE:
                process.state = WorkerState.RETIRING

    def fall_back(self, now: float) -> None:
        """A reload undone: stop the booting workers, put the retiring ones back to work."""
        previous = [p for p in self._workers.values() if p.state is WorkerState.RETIRING]
        for process in self:
            if process.state is WorkerState.BOOTING:
                self.stop(process, signal.SIGTERM, self.recipe.config.graceful_timeout, now)
        for process in previous:
            process.state = WorkerState.READY

    # -- forking -----------------------------------------------------------------------------

    def spawn(self, now: float) -> None:
        """Fork one worker (BOOTING); a failure is logged and left to the next ``manage``."""
        number, self._next_number = self._next_number, self._next_number + 1
        slot = self._balance.claim() if self._balance is not None else None
        cpu = self._next_cpu()
        metrics = self.recipe.metrics
        slot_metrics = metrics.claim() if metrics is not None else None
        scoreboard = self.recipe.scoreboard
        slot_scoreboard = scoreboard.claim() if scoreboard is not None else None
        read_fd = write_fd = -1
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
            pid = self._fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
            if self._balance is not None:
                self._balance.release(slot)
            if metrics is not None:
                metrics.release(slot_metrics)
            if scoreboard is not None:
                scoreboard.release(slot_scoreboard)
            logger.error("Could not fork worker %d: %s", number, exc)
            return
        if pid == 0:
            slots = (slot, slot_metrics, slot_scoreboard)
            self._run_child(number, write_fd, [read_fd, *self._own_fds()], mask, slots, cpu)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self._workers[pid] = Worker(
            pid,
            number,
            read_fd,
            WorkerState.BOOTING,
            now,
            slot=slot,
            cpu=cpu,
            slot_metrics=slot_metrics,
            slot_scoreboard=slot_scoreboard,
            started=now,
        )
        self._selector.register(
            read_fd, selectors.EVENT_READ, functools.partial(self.on_message, pid)
        )
        pinned = f" on CPU {cpu}" if cpu is not None else ""
        logger.info("Worker %d (pid %d) started%s", number, pid, pinned)

    def _run_child(
        self,
        number: int,
        channel_fd: int,
        close_fds: list[int],
        signal_mask: set[int | signal.Signals],
        slots: tuple[int | None, int | None, int | None],
        cpu: int | None,
    ) -> NoReturn:
        """The forked child: straight into ``worker.run_child``, which never returns.
        ``slots``: its balance, metrics and scoreboard slots."""
        recipe = self.recipe
        slot, slot_metrics, slot_scoreboard = slots
        share = None
        if self._balance is not None and slot is not None:
            share = self._balance.share(slot)
        scoreboard = None
        if recipe.scoreboard is not None and slot_scoreboard is not None:
            scoreboard = recipe.scoreboard.recorder(slot_scoreboard)
        worker.run_child(
            recipe.config,
            recipe.listeners,
            load_application=recipe.load_application,
            preloaded=recipe.preloaded,
            number=number,
            channel_fd=channel_fd,
            close_fds=close_fds,
            signal_mask=signal_mask,
            title=recipe.title,
            static=recipe.static,
            share=share,
            cpu=cpu,
            hooks=recipe.hooks,
            metrics=recipe.metrics.recorder(slot_metrics) if recipe.metrics else None,
            scoreboard=scoreboard,
        )

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
        channels = [p.channel_fd for p in self._workers.values() if p.channel_fd >= 0]
        return [*self._master_fds, *self._more_fds(), *channels]

    # -- what workers say --------------------------------------------------------------------

    def on_message(self, pid: int) -> None:
        """The selector callback of worker ``pid``'s pipe."""
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
        self.receive(pid, data)

    def receive(self, pid: int, data: bytes) -> None:
        """Bytes from worker ``pid``: a heartbeat, and READY or RETIRE (worker.py)."""
        process = self._workers.get(pid)
        if process is None:
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

    def _close_channel(self, process: Worker) -> None:
        if process.channel_fd >= 0:
            self._selector.unregister(process.channel_fd)
            os.close(process.channel_fd)
            process.channel_fd = -1

    # -- stopping ----------------------------------------------------------------------------

    def stop(self, process: Worker, signum: int, grace: float, now: float) -> None:
        """Send ``signum`` (SIGTERM: drain; SIGQUIT: at once); SIGKILL past ``grace``."""
        if process.state in (WorkerState.STOPPING, WorkerState.ABORTING):
            process.kill_at = min(process.kill_at, now + grace + KILL_GRACE_S)
            if signum == signal.SIGQUIT:
                self._kill(process.pid, signum)
            return
        process.state = WorkerState.STOPPING
        process.kill_at = now + grace + KILL_GRACE_S
        self._kill(process.pid, signum)

    def stop_all(self, signum: int, grace: float, now: float) -> None:
        """``stop`` every worker (the server drains or stops)."""
        for process in self:
            self.stop(process, signum, grace, now)

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every worker, whatever its state (SIGUSR1)."""
        for process in self:
            self._kill(process.pid, signum)

    def check_deadlines(self, now: float) -> None:
        """SIGKILL what is past its deadline; SIGABRT what has been silent too long."""
        for process in self:
            if now >= process.kill_at:
                logger.warning(
                    "Worker %d (pid %d) is still running: killing it (SIGKILL)",
                    process.number,
                    process.pid,
                )
                process.kill_at = math.inf
                process.was_killed = True
                self._kill(process.pid, signal.SIGKILL)
            elif process.state in _JUDGED_BY_HEARTBEAT and not process.is_adopted:
                limit = (
                    BOOT_TIMEOUT_S
                    if process.state is WorkerState.BOOTING
                    else self.recipe.config.heartbeat_timeout
                )
                if now - process.last_seen > limit:
                    self._abort(process, now - process.last_seen, now)

    def _abort(self, process: Worker, silence: float, now: float) -> None:
        logger.critical(
            "Worker %d (pid %d) sent no heartbeat for %.1f s: aborting it (SIGABRT; the "
            "tracebacks of its threads follow on stderr) and starting another",
            process.number,
            process.pid,
            silence,
            extra={"worker_pid": process.pid},
        )
        process.state = WorkerState.ABORTING
        process.kill_at = now + ABORT_GRACE_S
        self._kill(process.pid, signal.SIGABRT)

    def kill_all(self) -> None:
        """Leave no worker behind, whatever happened (SIGKILL, then reap)."""
        for process in self:
            self._kill(process.pid, signal.SIGKILL)
        for pid in list(self._workers):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self._close_channel(self._workers.pop(pid))

    # -- exits -------------------------------------------------------------------------------

    def adopt(self, pid: int, number: int, now: float) -> Worker | None:
        """Take over a worker of this master's previous image (a configuration reload):
        RETIRING, without a heartbeat pipe. None if it has gone (an exit is reported)."""
        # Its age comes from /proc: the previous image forked it, maybe long ago.
        age = process_age(pid) or 0.0
        process = Worker(
            pid, number, -1, WorkerState.RETIRING, now, is_adopted=True, started=now - age
        )
        try:
            reaped, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            logger.warning("Old worker %d (pid %d) is gone; nothing to adopt", number, pid)
            return None
        if reaped:  # it exited while this image started
            self._exited(process, os.waitstatus_to_exitcode(status))
            return None
        self._workers[pid] = process
        return process

    def reaped(self, pid: int, code: int) -> Worker | None:
        """Worker ``pid`` was reaped with ``code`` (``os.waitstatus_to_exitcode``): forget it,
        log and report its exit; its record, or None if ``pid`` is no worker of ours."""
        process = self._workers.pop(pid, None)
        if process is None:
            return None
        if self._balance is not None:
            self._balance.release(process.slot)
        if self.recipe.metrics is not None:
            self.recipe.metrics.worker_reaped(process, code)
        if self.recipe.scoreboard is not None:
            self.recipe.scoreboard.release(process.slot_scoreboard)
        self._close_channel(process)
        self._exited(process, code)
        return process

    def _exited(self, process: Worker, code: int) -> None:
        """Log a reaped worker's exit and send WORKER_EXITED."""
        _log_exit(process, code)
        self.recipe.hooks.send(
            Hook.WORKER_EXITED,
            pid=process.pid,
            number=process.number,
            exit_code=code,
            reason=describe_exit(code, was_killed=process.was_killed),
            is_expected=_is_expected_exit(process, code),
        )


def describe_exit(code: int, *, was_killed: bool = False) -> str:
    """``os.waitstatus_to_exitcode`` result in words, for the log."""
    if code >= 0:
        return f"exited with code {code}"
    name = signal.Signals(-code).name
    if -code == signal.SIGKILL and not was_killed:
        return f"was killed by {name}: probably out of memory (or kill -9)"
    return f"was killed by {name}"


def _is_expected_exit(process: Worker, code: int) -> bool:
    # A worker stopped before it installed its handlers dies of the signal itself.
    return process.state is WorkerState.STOPPING and code in (0, -signal.SIGTERM)


def _log_exit(process: Worker, code: int) -> None:
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


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (a cgroup or taskset may allow fewer than exist)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError) as exc:
        logger.warning("CPU_AFFINITY is ignored: the CPUs allowed cannot be read (%s)", exc)
        return []


def balance_table(workers: int) -> BalanceTable | None:
    """The accept balance table for WORKERS workers; None (with a warning) where shared
    anonymous memory is not available."""
    # Room for a reload's second generation and some SIGTTIN; a worker beyond it accepts
    # without balance. Each accept reads every slot, so the table stays small.
    try:
        return BalanceTable(max(16, 4 * workers))
    except (OSError, ValueError) as exc:  # no shared anonymous mmap here: accept as it comes
        logger.warning("Accept balance between workers is off: %s", exc)
        return None
