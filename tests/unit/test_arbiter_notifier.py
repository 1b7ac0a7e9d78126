"""arbiter/notifier.py: the master's sd_notify messages, in order, to a test NOTIFY_SOCKET.

The clock is passed in, so the EXTEND_TIMEOUT_USEC and WATCHDOG schedules need no sleeping.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid

import pytest

from django_wsgiserve.arbiter.notifier import EXTEND_EVERY_S, SystemdNotifier


class NotifySocket:
    """A datagram socket in the abstract namespace, as systemd's NOTIFY_SOCKET."""

    def __init__(self) -> None:
        name = f"wsgiserve-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(f"\0{name}")
        self.sock.setblocking(False)
        self.environ = {"NOTIFY_SOCKET": f"@{name}"}

    def messages(self) -> list[str]:
        """What arrived since the last call."""
        received: list[str] = []
        with contextlib.suppress(BlockingIOError):
            while True:
                received.append(self.sock.recv(4096).decode())
        return received


@pytest.fixture
def notify_socket():
    listener = NotifySocket()
    yield listener
    listener.sock.close()


def test_ready_then_only_changed_status(notify_socket):
    notifier = SystemdNotifier(notify_socket.environ, now=0.0, kill_grace_s=2.0)
    notifier.status("0 of 2 worker(s) ready")
    notifier.status("0 of 2 worker(s) ready")  # the same again: not sent
    notifier.ready("2 of 2 worker(s) ready")
    notifier.status("2 of 2 worker(s) ready")  # what READY=1 said
    notifier.status("1 of 2 worker(s) ready")
    assert notify_socket.messages() == [
        "STATUS=0 of 2 worker(s) ready",
        "READY=1\nSTATUS=2 of 2 worker(s) ready",
        "STATUS=1 of 2 worker(s) ready",
    ]


def test_reloading_carries_the_monotonic_time(notify_socket):
    SystemdNotifier(notify_socket.environ, now=0.0, kill_grace_s=2.0).reloading()
    (message,) = notify_socket.messages()
    first, second = message.split("\n")
    assert first == "RELOADING=1"
    assert second.startswith("MONOTONIC_USEC=")
    assert int(second.partition("=")[2]) > 0


def test_a_drain_extends_the_stop_timeout_every_few_seconds(notify_socket):
    notifier = SystemdNotifier(notify_socket.environ, now=100.0, kill_grace_s=2.0)
    notifier.tick(100.0, is_draining=False)  # serving: no extension
    notifier.stopping(now=100.0, drain_deadline=130.0)
    notifier.tick(100.0, is_draining=True)
    notifier.tick(101.0, is_draining=True)  # not due yet
    notifier.tick(100.0 + EXTEND_EVERY_S, is_draining=True)
    notifier.tick(140.0, is_draining=True)  # past the deadline: the grace and one interval
    assert notify_socket.messages() == [
        "STOPPING=1",
        "EXTEND_TIMEOUT_USEC=37000000",  # 30 s left + 2 s kill grace + 5 s
        "EXTEND_TIMEOUT_USEC=32000000",
        "EXTEND_TIMEOUT_USEC=7000000",
    ]


def test_the_watchdog_is_pinged_every_half_interval(notify_socket):
    environ = {
        **notify_socket.environ,
        "WATCHDOG_USEC": "4000000",
        "WATCHDOG_PID": str(os.getpid()),
    }
    notifier = SystemdNotifier(environ, now=10.0, kill_grace_s=2.0)
    assert notifier.select_timeout(10.0, 0.5) == 0.0  # the first ping is due at once
    notifier.tick(10.0, is_draining=False)
    assert notifier.select_timeout(10.0, 0.5) == 0.5
    assert notifier.select_timeout(11.75, 0.5) == pytest.approx(0.25)
    notifier.tick(11.0, is_draining=False)
    notifier.tick(12.0, is_draining=False)
    notifier.ping_watchdog()  # before a re-exec
    assert notify_socket.messages() == ["WATCHDOG=1"] * 3


def test_no_watchdog_for_another_pid(notify_socket):
    environ = {**notify_socket.environ, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}
    notifier = SystemdNotifier(environ, now=10.0, kill_grace_s=2.0)
    assert notifier.select_timeout(10.0, 0.5) == 0.5
    notifier.tick(10.0, is_draining=False)
    notifier.ping_watchdog()
    assert notify_socket.messages() == []


def test_without_notify_socket_nothing_is_sent_and_nothing_raises():
    notifier = SystemdNotifier({}, now=0.0, kill_grace_s=2.0)
    notifier.ready("ready")
    notifier.reloading()
    notifier.stopping(now=0.0, drain_deadline=30.0)
    notifier.tick(0.0, is_draining=True)
