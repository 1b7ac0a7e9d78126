"""arbiter/reload.py: what SIGHUP does to the worker table, systemd and the hooks, no fork.

The worker table is the one of test_arbiter_workers (made-up pids, recorded signals, a clock
the test moves); systemd is a test NOTIFY_SOCKET. The re-exec itself is covered by
test_arbiter.py and tests/integration/test_reload_config.py.
"""

from __future__ import annotations

import logging
import signal

import pytest

from django_wsgiserve import reexec
from django_wsgiserve.arbiter.inbox import SignalInbox
from django_wsgiserve.arbiter.notifier import SystemdNotifier
from django_wsgiserve.arbiter.process import ProcessSetup
from django_wsgiserve.arbiter.reload import Reloader
from django_wsgiserve.arbiter.workers import KILL_GRACE_S, WorkerState
from django_wsgiserve.errors import WorkerExitCode
from django_wsgiserve.hooks import Hook, Hooks, ReloadOutcome
from django_wsgiserve.worker import MESSAGE_READY
from tests.unit.test_arbiter_notifier import NotifySocket
from tests.unit.test_arbiter_workers import FakeMaster


class Setup:
    """Two ready workers, and a Reloader over them without a command line."""

    def __init__(self) -> None:
        self.master = FakeMaster(target=2)
        self.systemd = NotifySocket()
        self.inbox = SignalInbox()
        self.table = self.master.table
        self.reloader = Reloader(
            self.table.recipe.config,
            workers=self.table,
            notifier=SystemdNotifier(self.systemd.environ, now=0.0, kill_grace_s=KILL_GRACE_S),
            process=ProcessSetup(),
            inbox=self.inbox,
            selector=self.master.selector,
            listeners=[],
            environ=self.systemd.environ,
            hooks=Hooks(self.master.record_hook),
        )
        self.master.manage(0.0)
        self.master.say(1, MESSAGE_READY, now=0.0)
        self.master.say(2, MESSAGE_READY, now=0.0)

    def close(self) -> None:
        self.master.close()
        self.systemd.sock.close()
        self.inbox.close()


@pytest.fixture
def setup():
    made = Setup()
    yield made
    made.close()


def test_a_code_reload_retires_the_workers_until_the_new_ones_serve(setup, caplog):
    caplog.set_level(logging.INFO, logger="django_wsgiserve")
    setup.reloader.begin(1.0)
    assert "configuration not re-read (not started from a command line)" in caplog.text
    assert setup.reloader.is_reloading
    assert setup.master.states() == {1: WorkerState.RETIRING, 2: WorkerState.RETIRING}
    (reloading,) = setup.systemd.messages()
    assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC=")
    setup.master.manage(1.0)
    setup.master.say(3, MESSAGE_READY, now=2.0)
    setup.master.say(4, MESSAGE_READY, now=2.0)
    setup.master.manage(2.0)
    assert setup.table.count(WorkerState.STOPPING) == 2
    setup.reloader.workers_ready(2, is_first=False)  # the master sent READY=1
    assert not setup.reloader.is_reloading
    assert setup.master.hooks == [
        (Hook.RELOAD_STARTED, {}),
        (
            Hook.RELOAD_FINISHED,
            {
                "outcome": ReloadOutcome.RELOADED,
                "message": "Reloaded: 2 new worker(s) ready",
                "changes": (),
                "workers": 2,
            },
        ),
    ]


def test_a_new_worker_that_cannot_boot_undoes_the_reload(setup, caplog):
    setup.reloader.begin(1.0)
    setup.master.manage(1.0)  # workers 3 and 4 boot
    failed = setup.table.reaped(setup.master.pid(4), WorkerExitCode.APP_LOAD_FAILED)
    assert failed is not None
    assert setup.reloader.undo(failed, 2.0)
    assert setup.master.states() == {
        1: WorkerState.READY,
        2: WorkerState.READY,
        3: WorkerState.STOPPING,
    }
    assert setup.master.kills == [(setup.master.pid(3), signal.SIGTERM)]
    assert setup.table.target == 2
    assert not setup.reloader.is_reloading
    assert "Reload failed: worker 4 (pid" in caplog.text
    assert setup.systemd.messages()[1:] == [
        "READY=1\nSTATUS=Reload failed, still serving the previous code with 2 worker(s)"
    ]
    hook, arguments = setup.master.hooks[-1]
    assert hook is Hook.RELOAD_FINISHED
    assert arguments["outcome"] is ReloadOutcome.FAILED
    assert arguments["message"] == "Reload failed: worker 4 could not start the new code"
    setup.master.manage(3.0)  # nothing more to start: the old generation serves
    assert setup.table.count_active() == 2


def test_no_undo_without_a_reload(setup):
    failed = setup.table.reaped(setup.master.pid(2), WorkerExitCode.APP_LOAD_FAILED)
    assert failed is not None
    assert not setup.reloader.undo(failed, 1.0)  # the master halts instead


def test_a_failed_check_changes_nothing_and_tells_systemd(setup, caplog):
    setup.reloader.apply(reexec.CheckResult(None, "settings.py: SyntaxError"))
    assert (
        "Reload failed: the configuration could not be loaded: settings.py: SyntaxError\n"
        "Still serving with the current configuration and 2 worker(s)."
    ) in caplog.text
    assert setup.systemd.messages() == [
        "READY=1\nSTATUS=Reload failed (see the log); still serving with the current configuration"
    ]
    assert setup.master.states() == {1: WorkerState.READY, 2: WorkerState.READY}
