"""The hooks' error policy (hooks.py) and their Django signals (signals.py), without a server."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from django_wsgiserve import signals
from django_wsgiserve.errors import HookError
from django_wsgiserve.hooks import Hook, Hooks, ReloadOutcome, drain_callback, start_worker


class Recorder:
    """A HookSender that records, and raises for the hooks in ``failing``."""

    def __init__(self, *failing: Hook) -> None:
        self.calls: list[tuple[Hook, dict[str, object]]] = []
        self.failing = failing

    def __call__(self, hook: Hook, /, **arguments: object) -> None:
        self.calls.append((hook, arguments))
        if hook in self.failing:
            raise ValueError(f"{hook.value} failed")


def test_hooks_without_a_sender_do_nothing():
    hooks = Hooks()
    hooks.send(Hook.SERVER_READY, workers=2)
    hooks.send_or_raise(Hook.WORKER_STARTING, number=1)
    start_worker(hooks, number=1)


def test_send_logs_a_failure_and_carries_on(caplog):
    sender = Recorder(Hook.WORKER_EXITED)
    hooks = Hooks(sender)
    hooks.send(Hook.WORKER_EXITED, pid=7, number=1)
    hooks.send(Hook.SERVER_STOPPING, reason="SIGTERM")
    assert sender.calls == [
        (Hook.WORKER_EXITED, {"pid": 7, "number": 1}),
        (Hook.SERVER_STOPPING, {"reason": "SIGTERM"}),
    ]
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "The worker_exited hook raised; carrying on"
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "worker_exited failed"


def test_a_failing_worker_starting_is_logged_then_raised_as_hook_error(caplog):
    hooks = Hooks(Recorder(Hook.WORKER_STARTING))
    with pytest.raises(HookError) as caught:
        start_worker(hooks, number=3)
    assert isinstance(caught.value.__cause__, ValueError)
    (record,) = caplog.records
    assert "Worker 3 (pid " in record.getMessage()
    assert record.getMessage().endswith(
        "could not boot: a worker_starting receiver raised ValueError"
    )
    assert record.exc_info is not None


def test_drain_callback_closes_first_then_sends_worker_stopping():
    order: list[str] = []
    sender = Recorder()
    callback = drain_callback(Hooks(sender), number=2, before=lambda: order.append("closed"))
    callback()
    assert order == ["closed"]
    assert sender.calls == [(Hook.WORKER_STOPPING, {"number": 2})]
    drain_callback(Hooks(sender), number=2, before=None)()
    assert len(sender.calls) == 2


def test_reload_outcome_compares_as_a_string():
    assert ReloadOutcome.FAILED == "failed"
    assert ReloadOutcome("reloaded") is ReloadOutcome.RELOADED


# -- signals.py ----------------------------------------------------------------------------------


@pytest.mark.parametrize("hook", list(Hook), ids=lambda hook: hook.value)
def test_every_hook_sends_the_signal_of_its_name(hook):
    received: list[dict[str, Any]] = []

    def receiver(sender: object, **kwargs: Any) -> None:
        received.append({"sender": sender, **kwargs})

    signal = getattr(signals, hook.value)
    signal.connect(receiver)
    try:
        signals.send(hook, number=5)
    finally:
        signal.disconnect(receiver)
    assert received == [{"sender": None, "signal": signal, "number": 5}]


def test_every_receiver_runs_and_each_failure_is_logged(caplog):
    ran: list[str] = []

    def failing(sender: object, **kwargs: Any) -> None:
        ran.append("failing")
        raise RuntimeError("boom")

    def after(sender: object, **kwargs: Any) -> None:
        ran.append("after")

    signals.worker_exited.connect(failing)
    signals.worker_exited.connect(after)
    try:
        signals.send(Hook.WORKER_EXITED, pid=1)
    finally:
        signals.worker_exited.disconnect(failing)
        signals.worker_exited.disconnect(after)
    assert ran == ["failing", "after"]
    # Django logs it too, on django.dispatch, which its default LOGGING shows nowhere when
    # DEBUG is off: ours is the line that reaches the server's log.
    (record,) = [r for r in caplog.records if r.name.startswith("django_wsgiserve")]
    assert record.name == "django_wsgiserve.signals"
    assert record.getMessage() == (
        "A receiver of worker_exited raised (tests.unit.test_hooks."
        "test_every_receiver_runs_and_each_failure_is_logged.<locals>.failing); carrying on"
    )
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "boom"


def test_a_failing_worker_starting_receiver_raises_and_stops_the_others():
    ran: list[str] = []

    def failing(sender: object, **kwargs: Any) -> None:
        raise RuntimeError("no exporter")

    def after(sender: object, **kwargs: Any) -> None:
        ran.append("after")

    signals.worker_starting.connect(failing)
    signals.worker_starting.connect(after)
    try:
        with pytest.raises(RuntimeError, match="no exporter"):
            signals.send(Hook.WORKER_STARTING, number=1)
    finally:
        signals.worker_starting.disconnect(failing)
        signals.worker_starting.disconnect(after)
    assert ran == []
