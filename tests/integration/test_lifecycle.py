"""Lifecycle signals (``django_wsgiserve.signals``) through a real ``manage.py serve``.

The server runs ``tests.settings_lifecycle``: the receivers of ``tests.lifecycle`` append one
JSON line per signal to ``lifecycle.log`` in the test's directory, with the pid of the process
that sent it (``process``), its parent, its thread and the signal's arguments. The order of the
lines is the order of the events: each process appends each line in one write, a master writes
before it signals a worker, and a worker writes before it exits, which the master reaps.
Worker pids come from ``/proc/<master>/task/<master>/children``, as in test_arbiter.py.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.test_arbiter import count_messages, wait_until, workers_of
from tests.live import LiveServer, ResponseReader, stop_all

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

SETTINGS = "tests.settings_lifecycle"
REQUEST_SIGNALS = frozenset({"request_started", "request_finished"})


@dataclass(frozen=True)
class Event:
    index: int  # the line's position in the file
    signal: str
    process: int
    parent: int
    thread: str
    arguments: dict[str, Any]


_EVENT_FIELDS = ("signal", "process", "parent", "thread", "arguments")


class Journal:
    """``lifecycle.log`` as events; ``mark()`` and ``since()`` take the events of one step."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "lifecycle.log"
        self._mark = 0

    def lines(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return []
        # Complete lines only: a receiver may be writing the last one right now.
        return [json.loads(line) for line in text.split("\n")[:-1]]

    def events(self) -> list[Event]:
        return [
            Event(index=index, **{name: line[name] for name in _EVENT_FIELDS})
            for index, line in enumerate(self.lines())
            if "signal" in line and line["signal"] not in REQUEST_SIGNALS
        ]

    def ticks(self, thread: str) -> set[int]:
        """The processes in which the thread named ``thread`` has run."""
        return {line["process"] for line in self.lines() if line.get("tick") == thread}

    def mark(self) -> None:
        self._mark = len(self.lines())

    def since(self) -> list[Event]:
        return [event for event in self.events() if event.index >= self._mark]

    def wait(
        self, predicate: Callable[[list[Event]], object], timeout: float = 30.0
    ) -> list[Event]:
        """The events since the mark, once ``predicate`` holds for them."""
        assert wait_until(lambda: predicate(self.since()), timeout), self.since()
        return self.since()


def names(events: list[Event], process: int) -> list[str]:
    return [event.signal for event in events if event.process == process]


def only(events: list[Event], name: str, **where: object) -> Event:
    (event,) = [e for e in events if e.signal == name and _matches(e.arguments, where)]
    return event


def count(name: str, **where: object) -> Callable[[list[Event]], int]:
    """A predicate for ``Journal.wait``: how many ``name`` events match ``where``."""

    def counted(events: list[Event]) -> int:
        return sum(e.signal == name and _matches(e.arguments, where) for e in events)

    return counted


def _matches(arguments: dict[str, Any], where: dict[str, object]) -> bool:
    return all(arguments.get(key) == value for key, value in where.items())


def event_of(events: list[Event], name: str, process: int) -> Event:
    return next(e for e in events if e.signal == name and e.process == process)


def started_workers(events: list[Event]) -> dict[int, int]:
    """pid -> worker number, for each worker_starting among ``events``."""
    return {e.process: e.arguments["number"] for e in events if e.signal == "worker_starting"}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start servers with the recording receivers; each must exit 0 at the end of the test."""
    servers: list[LiveServer] = []

    def start_server(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> LiveServer:
        server = LiveServer(
            log_path=tmp_path / f"server-{len(servers)}.log",
            settings=SETTINGS,
            args=["--no-access-log", *args],
            env={"WSGISERVE_TEST_FILES_DIR": str(tmp_path), **(env or {})},
            **kwargs,
        )
        servers.append(server)
        return server.start()

    yield start_server
    stop_all(servers)


def assert_new_workers_booted(events: list[Event], master: int, expected: int) -> dict[int, int]:
    """``expected`` new workers, each worker_starting then worker_ready, in its main thread."""
    new = started_workers(events)
    assert len(new) == expected, events
    for pid, number in new.items():
        assert names(events, pid) == ["worker_starting", "worker_ready"]
        assert only(events, "worker_ready", number=number).process == pid
        assert all(
            e.parent == master and e.thread == "MainThread" for e in events if e.process == pid
        )
    return new


def assert_worker_left(events: list[Event], master: int, pid: int) -> None:
    """The worker drained (worker_stopping, worker_stopped) and the master reaped it."""
    assert names(events, pid) == ["worker_stopping", "worker_stopped"]
    stopped = event_of(events, "worker_stopped", pid)
    exited = only(events, "worker_exited", pid=pid)
    assert exited.process == master
    assert exited.arguments["exit_code"] == 0
    assert exited.arguments["is_expected"] is True
    assert stopped.index < exited.index


# -- the whole life of a server ------------------------------------------------------------------


def test_every_signal_in_order_from_start_through_reload_resize_kill_to_stop(start, tmp_path):
    journal = Journal(tmp_path)
    server = start("--workers", "2")
    master = server.pid

    # Start: the master before binding and once all serve; each worker after fork.
    events = journal.wait(count("server_ready"))
    assert names(events, master) == ["server_starting", "server_ready"]
    assert all(e.thread == "MainThread" for e in events if e.process == master)
    first = assert_new_workers_booted(events, master, 2)
    assert set(first) == workers_of(server)
    assert sorted(first.values()) == [1, 2]
    ready = only(events, "server_ready")
    assert ready.arguments == {"workers": 2}
    assert all(e.index < ready.index for e in events if e.signal == "worker_ready")

    # SIGHUP, a code reload: new workers serve, then the old ones drain and are reaped.
    journal.mark()
    server.send_signal(signal.SIGHUP)
    events = journal.wait(lambda events: count("worker_exited")(events) == 2)
    assert names(events, master) == [
        "reload_started",
        "reload_finished",
        "worker_exited",
        "worker_exited",
    ]
    finished = only(events, "reload_finished")
    assert finished.arguments == {
        "outcome": "reloaded",
        "message": "Reloaded: 2 new worker(s) ready",
        "changes": [],
        "workers": 2,
    }
    second = assert_new_workers_booted(events, master, 2)
    assert all(e.index < finished.index for e in events if e.signal == "worker_ready")
    for pid in first:
        assert_worker_left(events, master, pid)
    assert wait_until(lambda: workers_of(server) == set(second))

    # SIGTTIN: one worker more.
    journal.mark()
    server.send_signal(signal.SIGTTIN)
    events = journal.wait(count("worker_ready"))
    assert names(events, master) == ["workers_changed"]
    assert only(events, "workers_changed").arguments == {"previous": 2, "workers": 3}
    (added,) = assert_new_workers_booted(events, master, 1)
    assert only(events, "workers_changed").index < events[-1].index

    # SIGTTOU: one worker less, the oldest.
    journal.mark()
    server.send_signal(signal.SIGTTOU)
    events = journal.wait(count("worker_exited"))
    assert names(events, master) == ["workers_changed", "worker_exited"]
    assert only(events, "workers_changed").arguments == {"previous": 3, "workers": 2}
    oldest = min(second, key=second.__getitem__)
    assert_worker_left(events, master, oldest)
    assert only(events, "worker_exited").arguments["number"] == second[oldest]
    assert wait_until(lambda: workers_of(server) == {*second, added} - {oldest})

    # SIGKILL to a worker: it sends nothing; the master reports it and starts another.
    victim = added
    journal.mark()
    os.kill(victim, signal.SIGKILL)
    events = journal.wait(count("worker_ready"))
    assert names(events, victim) == []
    assert names(events, master) == ["worker_exited"]
    exited = only(events, "worker_exited")
    assert exited.arguments["pid"] == victim
    assert exited.arguments["exit_code"] == -signal.SIGKILL
    assert exited.arguments["is_expected"] is False
    assert "SIGKILL" in exited.arguments["reason"]
    (replacement,) = assert_new_workers_booted(events, master, 1)
    assert exited.index < events[-1].index

    # SIGTERM: the master says so first; every worker drains; the master reaps them.
    remaining = {*second, added, replacement} - {oldest, victim}
    assert wait_until(lambda: workers_of(server) == remaining)
    journal.mark()
    server.send_signal(signal.SIGTERM)
    assert server.process is not None
    assert server.process.wait(30) == 0, server.log()[-3000:]
    events = journal.since()
    assert names(events, master) == ["server_stopping", "worker_exited", "worker_exited"]
    stopping = only(events, "server_stopping")
    assert stopping.arguments == {"reason": "SIGTERM"}
    for pid in remaining:
        assert_worker_left(events, master, pid)
        assert next(e for e in events if e.process == pid).index > stopping.index


def test_max_requests_recycling_starts_the_replacement_before_the_old_worker_stops(start, tmp_path):
    journal = Journal(tmp_path)
    server = start("--workers", "1", "--max-requests", "10", "--max-requests-jitter", "0")
    master = server.pid
    journal.wait(count("server_ready"))
    (first,) = workers_of(server)
    journal.mark()
    # Requests until the worker has been recycled (it checks its count once a second).
    assert wait_until(
        lambda: server.get("/state").status == 200 and count("worker_exited")(journal.since()),
        timeout=30,
    ), server.log()[-3000:]
    events = journal.since()
    assert names(events, master) == ["worker_exited"]
    (replacement,) = assert_new_workers_booted(events, master, 1)
    assert_worker_left(events, master, first)
    assert event_of(events, "worker_stopped", first).arguments["requests"] >= 10
    # Capacity never drops: the replacement serves before the old worker begins to drain.
    replacement_ready = event_of(events, "worker_ready", replacement)
    assert replacement_ready.index < event_of(events, "worker_stopping", first).index


def test_a_configuration_reload_is_finished_by_the_re_executed_master(start, tmp_path):
    (tmp_path / "wsgiserve.json").write_text(json.dumps({"WORKERS": 1, "THREADS": 2}))
    journal = Journal(tmp_path)
    server = start()
    master = server.pid
    journal.wait(count("server_ready"))
    (first,) = workers_of(server)

    # A configuration that fails its check: the reload fails, nothing else happens.
    (tmp_path / "wsgiserve.json").write_text(json.dumps({"WORKERS": 1, "THREADS": 0}))
    journal.mark()
    server.send_signal(signal.SIGHUP)
    events = journal.wait(count("reload_finished"))
    assert names(events, master) == ["reload_started", "reload_finished"]
    failed = only(events, "reload_finished").arguments
    assert failed["outcome"] == "failed"
    assert "THREADS" in failed["message"]
    assert failed["changes"] == []
    assert failed["workers"] == 1
    assert [e.signal for e in events] == ["reload_started", "reload_finished"]

    # A changed configuration: the master re-executes itself (same pid); the new image, with
    # its own receivers, finishes the reload and reaps the old worker. It is the same server:
    # no second server_starting or server_ready.
    (tmp_path / "wsgiserve.json").write_text(json.dumps({"WORKERS": 1, "THREADS": 4}))
    journal.mark()
    server.send_signal(signal.SIGHUP)
    events = journal.wait(count("worker_exited"))
    assert names(events, master) == ["reload_started", "reload_finished", "worker_exited"]
    assert only(events, "reload_finished").arguments == {
        "outcome": "reloaded",
        "message": "Reloaded: 1 new worker(s) ready",
        "changes": ["THREADS 2 -> 4"],
        "workers": 1,
    }
    assert_new_workers_booted(events, master, 1)
    assert_worker_left(events, master, first)
    assert "re-executed with the new configuration" in server.log()


def test_a_failing_worker_starting_receiver_fails_the_boot_without_a_respawn_loop(tmp_path):
    (tmp_path / "fail-worker-starting").write_text("")
    journal = Journal(tmp_path)
    server = LiveServer(
        log_path=tmp_path / "server.log",
        settings=SETTINGS,
        args=["--workers", "2"],
        env={"WSGISERVE_TEST_FILES_DIR": str(tmp_path)},
        wait_ready=False,
    )
    try:
        server.start()
        assert server.process is not None
        code = server.process.wait(30)
        ready_messages = count_messages(server, "READY=1")
    finally:
        server.stop()
    log = server.log()
    assert code == 3, log  # WorkerExitCode.BOOT_FAILED
    assert "could not boot: a worker_starting receiver raised RuntimeError" in log
    assert "RuntimeError: worker_starting failed on purpose" in log
    assert "could not boot 'tests.lifecycle.wsgi.application' (exit code 3" in log
    assert log.count(") started") <= 2  # no respawn loop
    assert ready_messages == 0
    events = journal.events()
    master = server.pid
    assert {"worker_ready", "server_ready"}.isdisjoint(e.signal for e in events)
    assert 1 <= count("worker_starting")(events) <= 2
    assert names(events, master)[:2] == ["server_starting", "worker_exited"]
    assert only(events, "server_stopping").arguments == {"reason": "a worker failed to boot"}
    # The first to fail halts the server; the other one may be stopped before it fails.
    assert next(e for e in events if e.signal == "worker_exited").arguments["exit_code"] == 3


def test_a_failing_worker_starting_receiver_fails_a_reload_and_the_old_workers_serve_on(
    start, tmp_path
):
    journal = Journal(tmp_path)
    server = start("--workers", "2")
    journal.wait(count("server_ready"))
    first = workers_of(server)
    (tmp_path / "fail-worker-starting").write_text("")
    journal.mark()
    server.send_signal(signal.SIGHUP)
    events = journal.wait(count("reload_finished"))
    finished = only(events, "reload_finished").arguments
    assert finished["outcome"] == "failed"
    assert "could not start the new code" in finished["message"]
    assert finished["workers"] == 2
    assert "worker_ready" not in {e.signal for e in events}
    (tmp_path / "fail-worker-starting").unlink()
    assert workers_of(server) >= first
    assert json.loads(server.get("/state").body)["pid"] in first
    assert "Reload failed: worker" in server.log()


def test_receivers_that_raise_are_logged_and_the_others_still_run(start, tmp_path):
    (tmp_path / "fail-everywhere-else").write_text("")
    journal = Journal(tmp_path)
    server = start("--workers", "1")
    journal.wait(count("server_ready"))
    server.send_signal(signal.SIGHUP)
    journal.wait(count("reload_finished", outcome="reloaded"))
    server.send_signal(signal.SIGTTIN)
    journal.wait(lambda events: count("worker_ready")(events) == 3)
    server.send_signal(signal.SIGTTOU)
    journal.wait(lambda events: count("worker_exited")(events) == 2)
    assert server.get("/state").status == 200
    server.send_signal(signal.SIGTERM)
    assert server.process is not None
    assert server.process.wait(30) == 0
    log = server.log()
    recorded = {e.signal for e in journal.events()}
    for name in (
        "server_starting",
        "server_ready",
        "server_stopping",
        "worker_ready",
        "worker_stopping",
        "worker_stopped",
        "worker_exited",
        "reload_started",
        "reload_finished",
        "workers_changed",
    ):
        assert f"A receiver of {name} raised (tests.lifecycle.receivers.fail_{name})" in log
        assert f"RuntimeError: {name} receiver failed on purpose" in log
        assert name in recorded  # the receiver connected after the failing one ran


def test_a_thread_started_by_worker_starting_runs_in_every_worker_one_from_ready_does_not(
    start, tmp_path
):
    """The OpenTelemetry case: an SDK's exporter thread started in AppConfig.ready() runs in
    the master only, even with PRELOAD; started by worker_starting, it runs in each worker."""
    journal = Journal(tmp_path)
    server = start("--workers", "2", "--preload", env={"WSGISERVE_TEST_READY_THREAD": "1"})
    journal.wait(count("server_ready"))
    workers = workers_of(server)
    assert len(workers) == 2
    assert wait_until(lambda: journal.ticks("telemetry-exporter") == workers)
    assert journal.ticks("ready-thread") == {server.pid}
    state = json.loads(server.get("/state").body)
    assert state["pid"] in workers
    assert "telemetry-exporter" in state["threads"]
    assert "ready-thread" not in state["threads"]
    assert state["ticks"] > 0


def test_under_the_autoreloader_the_serving_process_gets_the_start_signals(start, tmp_path):
    journal = Journal(tmp_path)
    server = start(reload=True)
    events = journal.wait(count("server_ready"))
    (process,) = {e.process for e in events}  # the reloader's child, which serves
    assert names(events, process) == [
        "server_starting",
        "worker_starting",
        "worker_ready",
        "server_ready",
    ]
    assert only(events, "server_ready").arguments == {"workers": 1}
    assert json.loads(server.get("/state").body)["pid"] == process
    assert journal.ticks("telemetry-exporter") == {process}


def test_request_started_and_finished_fire_once_per_request_as_under_runserver(start, tmp_path):
    journal = Journal(tmp_path)
    server = start("--workers", "1", "--threads", "2")
    journal.wait(count("server_ready"))
    (worker,) = workers_of(server)
    assert server.get("/state").status == 200
    assert server.get("/error").status == 500
    assert len(server.get("/stream").body) == 200 * 1024
    # A client that leaves in the middle of a streamed body: close() still runs.
    with server.connect() as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        assert ResponseReader(sock)._read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 200")

    def request_lines() -> list[dict[str, Any]]:
        return [line for line in journal.lines() if line.get("signal") in REQUEST_SIGNALS]

    assert wait_until(lambda: len(request_lines()) == 8), request_lines()
    lines = request_lines()
    assert [line["signal"] for line in lines] == ["request_started", "request_finished"] * 4
    assert {line["process"] for line in lines} == {worker}
    assert all(line["thread"].startswith(f"wsgiserve-{worker}-") for line in lines)
