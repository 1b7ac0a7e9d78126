"""arbiter/workers.py: the worker table's states and deadlines, with no child process.

``fork`` returns made-up pids (above any pid_max, so never a real child of the test run),
``kill`` records what would be sent, and the clock is a number the test moves.
"""

from __future__ import annotations

import itertools
import logging
import os
import selectors
import signal

import pytest

from django_wsgiserve.arbiter.workers import (
    ABORT_GRACE_S,
    BOOT_TIMEOUT_S,
    KILL_GRACE_S,
    WorkerRecipe,
    WorkerState,
    WorkerTable,
)
from django_wsgiserve.balance import BalanceTable
from django_wsgiserve.config import resolve_config
from django_wsgiserve.hooks import Hook, Hooks
from django_wsgiserve.worker import MESSAGE_HEARTBEAT, MESSAGE_READY, MESSAGE_RETIRE

FIRST_PID = 10_000_001  # above Linux's largest pid_max (2**22)
GRACEFUL_S = 30.0
HEARTBEAT_S = 20.0


class FakeMaster:
    """A worker table driven by hand: fake pids, recorded signals and hooks, a fake clock."""

    def __init__(self, *, target: int, **options: object) -> None:
        self.now = 0.0
        self.kills: list[tuple[int, int]] = []
        self.hooks: list[tuple[Hook, dict[str, object]]] = []
        self._pids = itertools.count(FIRST_PID)
        self.selector = selectors.DefaultSelector()
        config = resolve_config(
            {"GRACEFUL_TIMEOUT": GRACEFUL_S, "HEARTBEAT_TIMEOUT": HEARTBEAT_S}, {}, {}
        )
        recipe = WorkerRecipe(
            config=config,
            listeners=[],
            load_application=lambda: None,  # type: ignore[arg-type,return-value]
            hooks=Hooks(self.record_hook),
        )
        self.table = WorkerTable(
            recipe,
            selector=self.selector,
            target=target,
            clock=lambda: self.now,
            fork=lambda: next(self._pids),
            kill=lambda pid, signum: self.kills.append((pid, signum)),
            **options,  # type: ignore[arg-type]
        )

    def record_hook(self, hook: Hook, /, **arguments: object) -> None:
        self.hooks.append((hook, arguments))

    def manage(self, now: float) -> None:
        self.now = now
        self.table.manage(now)

    def states(self) -> dict[int, WorkerState]:
        """Worker number -> state."""
        return {process.number: process.state for process in self.table}

    def pid(self, number: int) -> int:
        (process,) = [p for p in self.table if p.number == number]
        return process.pid

    def say(self, number: int, message: bytes, now: float) -> None:
        self.now = now
        self.table.receive(self.pid(number), message)

    def close(self) -> None:
        self.table.kill_all()  # closes the pipes; waitpid finds no such child
        self.selector.close()


@pytest.fixture
def make_master():
    masters: list[FakeMaster] = []

    def make(*, target: int = 1, **options: object) -> FakeMaster:
        masters.append(FakeMaster(target=target, **options))
        return masters[-1]

    yield make
    for master in masters:
        master.close()


@pytest.fixture(autouse=True)
def _info_logs(caplog):
    caplog.set_level(logging.INFO, logger="django_wsgiserve")


def test_booting_ready_retiring_stopping(make_master, caplog):
    master = make_master(target=1)
    master.manage(0.0)
    first = master.pid(1)
    assert master.states() == {1: WorkerState.BOOTING}
    assert f"Worker 1 (pid {first}) started" in caplog.text
    master.say(1, MESSAGE_READY + MESSAGE_HEARTBEAT, now=1.0)
    assert master.states() == {1: WorkerState.READY}
    master.say(1, MESSAGE_RETIRE, now=2.0)  # MAX_REQUESTS, say
    assert master.states() == {1: WorkerState.RETIRING}
    assert f"Worker 1 (pid {first}) retiring: starting its replacement" in caplog.text
    master.manage(2.0)
    # The replacement boots; the old one serves until it is ready.
    assert master.states() == {1: WorkerState.RETIRING, 2: WorkerState.BOOTING}
    assert master.kills == []
    master.say(2, MESSAGE_READY, now=3.0)
    master.manage(3.0)
    assert master.states() == {1: WorkerState.STOPPING, 2: WorkerState.READY}
    assert master.kills == [(first, signal.SIGTERM)]
    process = master.table.reaped(first, 0)
    assert process is not None
    assert process.number == 1
    assert master.states() == {2: WorkerState.READY}
    assert f"Worker 1 (pid {first}) exited with code 0" in caplog.text
    assert master.hooks == [
        (
            Hook.WORKER_EXITED,
            {
                "pid": first,
                "number": 1,
                "exit_code": 0,
                "reason": "exited with code 0",
                "is_expected": True,
            },
        )
    ]


@pytest.mark.parametrize(
    ("is_ready", "limit"),
    [
        pytest.param(False, BOOT_TIMEOUT_S, id="booting"),
        pytest.param(True, HEARTBEAT_S, id="ready"),
    ],
)
def test_a_silent_worker_is_aborted_then_killed_and_replaced(make_master, caplog, is_ready, limit):
    master = make_master(target=1)
    master.manage(0.0)
    first = master.pid(1)
    if is_ready:
        master.say(1, MESSAGE_READY, now=0.0)
    master.table.check_deadlines(limit)  # silent for exactly the limit: not yet
    assert master.kills == []
    master.table.check_deadlines(limit + 0.5)
    assert master.kills == [(first, signal.SIGABRT)]
    assert master.states() == {1: WorkerState.ABORTING}
    (record,) = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert record.getMessage().startswith(
        f"Worker 1 (pid {first}) sent no heartbeat for {limit + 0.5:.1f} s: aborting it"
    )
    master.manage(limit + 0.5)  # an aborting worker is not active: replaced at once
    assert master.states() == {1: WorkerState.ABORTING, 2: WorkerState.BOOTING}
    master.table.check_deadlines(limit + 0.5 + ABORT_GRACE_S - 0.1)
    assert master.kills == [(first, signal.SIGABRT)]
    master.table.check_deadlines(limit + 0.5 + ABORT_GRACE_S)
    assert master.kills == [(first, signal.SIGABRT), (first, signal.SIGKILL)]
    master.table.reaped(first, -signal.SIGKILL)
    # Our SIGKILL: not taken for the OOM killer's.
    assert f"Worker 1 (pid {first}) was killed by SIGKILL\n" in caplog.text


def test_heartbeats_keep_a_worker_alive(make_master):
    master = make_master(target=1)
    master.manage(0.0)
    master.say(1, MESSAGE_READY, now=0.0)
    for second in range(1, 100):
        master.say(1, MESSAGE_HEARTBEAT, now=float(second))
        master.table.check_deadlines(float(second) + HEARTBEAT_S)
    assert master.kills == []


def test_a_stopping_worker_gets_its_grace_then_sigkill(make_master):
    master = make_master(target=1)
    master.manage(0.0)
    first = master.pid(1)
    master.table.stop_all(signal.SIGTERM, GRACEFUL_S, 0.0)
    # Silent while it waits for its threads: not judged by heartbeat.
    master.table.check_deadlines(GRACEFUL_S + KILL_GRACE_S - 0.1)
    assert master.kills == [(first, signal.SIGTERM)]
    master.table.check_deadlines(GRACEFUL_S + KILL_GRACE_S)
    assert master.kills == [(first, signal.SIGTERM), (first, signal.SIGKILL)]


def test_sigquit_after_sigterm_shortens_the_grace(make_master):
    master = make_master(target=1)
    master.manage(0.0)
    first = master.pid(1)
    master.table.stop_all(signal.SIGTERM, GRACEFUL_S, 0.0)
    master.table.stop_all(signal.SIGQUIT, 0.0, 10.0)  # a second CONTROL-C
    assert master.kills == [(first, signal.SIGTERM), (first, signal.SIGQUIT)]
    master.table.check_deadlines(10.0 + KILL_GRACE_S)
    assert master.kills[-1] == (first, signal.SIGKILL)


def test_fewer_workers_wanted_retires_the_oldest(make_master):
    master = make_master(target=2)
    master.manage(0.0)
    master.say(1, MESSAGE_READY, now=1.0)
    master.say(2, MESSAGE_READY, now=1.0)
    master.table.set_target(1)  # TTOU
    master.table.set_target(1)  # unchanged: no hook
    master.manage(1.0)
    assert master.states() == {1: WorkerState.STOPPING, 2: WorkerState.READY}
    assert master.kills == [(master.pid(1), signal.SIGTERM)]
    assert master.hooks == [(Hook.WORKERS_CHANGED, {"previous": 2, "workers": 1})]


def test_a_reload_replaces_a_generation_once_all_new_workers_serve(make_master):
    master = make_master(target=2)
    master.manage(0.0)
    master.say(1, MESSAGE_READY, now=0.0)
    master.say(2, MESSAGE_READY, now=0.0)
    master.table.retire_active()  # HUP
    master.manage(1.0)
    assert master.table.count(WorkerState.RETIRING) == 2
    assert master.table.count_active() == 2  # workers 3 and 4, booting
    master.say(3, MESSAGE_READY, now=2.0)
    master.manage(2.0)
    assert master.kills == []  # one of two new workers serves: the old ones stay
    master.say(4, MESSAGE_READY, now=3.0)
    master.manage(3.0)
    assert sorted(master.kills) == sorted(
        [(master.pid(1), signal.SIGTERM), (master.pid(2), signal.SIGTERM)]
    )


def test_a_reload_undone_puts_the_old_generation_back_to_work(make_master):
    master = make_master(target=2)
    master.manage(0.0)
    master.say(1, MESSAGE_READY, now=0.0)
    master.say(2, MESSAGE_READY, now=0.0)
    master.table.retire_active()
    master.manage(1.0)
    master.say(3, MESSAGE_READY, now=2.0)
    master.table.fall_back(2.0)  # worker 4 could not load the new code
    assert master.states() == {
        1: WorkerState.READY,
        2: WorkerState.READY,
        3: WorkerState.READY,  # serves the new code until the next reload
        4: WorkerState.STOPPING,
    }
    assert master.kills == [(master.pid(4), signal.SIGTERM)]


def test_an_unexpected_sigkill_reads_as_out_of_memory(make_master, caplog):
    master = make_master(target=1)
    master.manage(0.0)
    first = master.pid(1)
    master.table.reaped(first, -signal.SIGKILL)
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == (
        f"Worker 1 (pid {first}) was killed by SIGKILL: probably out of memory (or kill -9)"
    )
    ((hook, arguments),) = master.hooks
    assert hook is Hook.WORKER_EXITED
    assert arguments["is_expected"] is False
    assert master.table.reaped(first, 0) is None  # no longer ours


def test_balance_slots_are_claimed_and_released(make_master):
    balance = BalanceTable(4)
    master = make_master(target=2, balance=balance)
    master.manage(0.0)
    assert [p.slot for p in master.table] == [0, 1]
    master.table.reaped(master.pid(1), -signal.SIGSEGV)
    master.manage(1.0)
    assert [p.slot for p in master.table] == [1, 0]  # worker 3 took worker 1's slot


def test_cpu_affinity_spreads_active_workers(make_master, caplog):
    master = make_master(target=3, cpus=[2, 5])
    master.manage(0.0)
    assert [p.cpu for p in master.table] == [2, 5, 2]
    assert f"Worker 2 (pid {master.pid(2)}) started on CPU 5" in caplog.text


def test_a_failed_fork_is_logged_and_leaves_nothing_open(caplog):
    def failing_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    recipe = WorkerRecipe(
        config=resolve_config({}, {}, {}),
        listeners=[],
        load_application=lambda: None,  # type: ignore[arg-type,return-value]
    )
    before = set(os.listdir("/proc/self/fd"))
    with selectors.DefaultSelector() as selector:
        table = WorkerTable(recipe, selector=selector, target=1, fork=failing_fork)
        table.manage(0.0)
        assert len(table) == 0
        assert table.next_number == 2  # numbers are never reused
    assert set(os.listdir("/proc/self/fd")) == before
    assert "Could not fork worker 1: [Errno 11] Resource temporarily unavailable" in caplog.text
