"""Pieces of the master and the worker monitor without forking: exit descriptions, the
systemd watchdog interval, log reopening, RSS, the stuck-request report, and the parts of a
configuration reload that need no server (reexec.py): the change summary, the check's output,
the handover, the placement of the listeners at fds 3.., the check child, failed exec."""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
import types

import pytest

from django_wsgiserve import reexec, systemd, worker
from django_wsgiserve.arbiter import Arbiter, ArbiterState, describe_exit
from django_wsgiserve.arbiter.notifier import watchdog_interval
from django_wsgiserve.arbiter.workers import WorkerRecipe, WorkerTable
from django_wsgiserve.balance import BalanceTable
from django_wsgiserve.config import resolve_config
from django_wsgiserve.sockets import BindError, reuse_or_bind_listeners


@pytest.mark.parametrize(
    ("code", "was_killed", "expected"),
    [
        pytest.param(0, False, "exited with code 0", id="clean"),
        pytest.param(4, False, "exited with code 4", id="app-load-failed"),
        pytest.param(
            -signal.SIGKILL,
            False,
            "was killed by SIGKILL: probably out of memory (or kill -9)",
            id="oom",
        ),
        pytest.param(-signal.SIGKILL, True, "was killed by SIGKILL", id="killed-by-master"),
        pytest.param(-signal.SIGSEGV, False, "was killed by SIGSEGV", id="segfault"),
    ],
)
def test_describe_exit(code, was_killed, expected):
    assert describe_exit(code, was_killed=was_killed) == expected


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, 0.0, id="unset"),
        pytest.param({"WATCHDOG_USEC": "10000000"}, 5.0, id="half"),
        pytest.param({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, 0.0, id="other-pid"),
        pytest.param(
            {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}, 2.0, id="ours"
        ),
        pytest.param({"WATCHDOG_USEC": "junk"}, 0.0, id="junk"),
    ],
)
def test_watchdog_interval(environ, expected):
    assert watchdog_interval(environ) == expected


def test_reopen_log_files_reopens_at_next_record(tmp_path):
    path = tmp_path / "server.log"
    handler = logging.FileHandler(path)
    test_logger = logging.getLogger("django_wsgiserve.tests.reopen")
    test_logger.addHandler(handler)
    test_logger.propagate = False
    try:
        test_logger.warning("before")
        path.rename(tmp_path / "server.log.1")  # what logrotate does
        worker.reopen_log_files()
        test_logger.warning("after")
    finally:
        test_logger.removeHandler(handler)
        handler.close()
    assert (tmp_path / "server.log.1").read_text() == "before\n"
    assert path.read_text() == "after\n"


def test_rss_bytes_is_plausible():
    assert 1 << 20 < worker.rss_bytes() < 1 << 34


class _FakeServer:
    """What the worker's monitor reads of ``server.WorkerServer``."""

    def __init__(self) -> None:
        self.loop = types.SimpleNamespace(is_draining=False)
        self.dispatcher = types.SimpleNamespace(in_flight={})
        self.context = types.SimpleNamespace(stats=types.SimpleNamespace(requests=0))


def _stuck_here(started: threading.Event, release: threading.Event) -> None:
    started.set()
    release.wait(10)  # STUCK-HERE


def test_stuck_request_logged_with_its_thread_traceback(caplog):
    config = resolve_config({"TIMEOUT": 5}, {}, {})
    read_fd, write_fd = os.pipe()
    monitor = worker._Monitor(config, channel_fd=write_fd)
    server = _FakeServer()
    monitor.server = server  # type: ignore[assignment]
    started, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=_stuck_here, args=(started, release))
    thread.start()
    try:
        started.wait(5)
        assert thread.ident is not None
        server.dispatcher.in_flight[thread.ident] = (b"GET", b"/slow?x=1", 100.0)
        caplog.set_level(logging.INFO, logger="django_wsgiserve")
        monitor.on_tick(104.0)  # 4 s: not yet
        assert not [r for r in caplog.records if r.levelno == logging.CRITICAL]
        monitor.on_tick(106.0)
        monitor.on_tick(107.0)  # reported once
    finally:
        release.set()
        thread.join()
    (record,) = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    message = record.getMessage()
    assert "Request running for 6.0 s (TIMEOUT is 5.0 s): GET /slow?x=1" in message
    assert f"worker pid {os.getpid()}" in message
    assert "in _stuck_here\n    release.wait(10)  # STUCK-HERE" in message
    messages = os.read(read_fd, 100)
    os.close(read_fd)
    os.close(write_fd)
    assert messages.count(worker.MESSAGE_RETIRE) == 1
    assert messages.count(worker.MESSAGE_HEARTBEAT) == 3


def test_max_requests_retires_once(caplog):
    config = resolve_config({"MAX_REQUESTS": 10}, {}, {})
    read_fd, write_fd = os.pipe()
    monitor = worker._Monitor(config, channel_fd=write_fd)
    server = _FakeServer()
    monitor.server = server  # type: ignore[assignment]
    caplog.set_level(logging.INFO, logger="django_wsgiserve")
    monitor.on_tick(1.0)
    server.context.stats.requests = 10
    monitor.on_tick(2.0)
    monitor.on_tick(3.0)
    messages = os.read(read_fd, 100)
    os.close(read_fd)
    os.close(write_fd)
    assert messages == b"..X."
    assert "served 10 requests (MAX_REQUESTS): asking to be replaced" in caplog.text


# -- configuration reloads (reexec.py) -----------------------------------------------------------


def _snapshot(**wsgiserve: object) -> dict[str, object]:
    return reexec.config_snapshot(resolve_config(wsgiserve, {}, {}))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param({}, {}, [], id="unchanged"),
        pytest.param({"THREADS": 8}, {}, [], id="same-value-other-source"),
        pytest.param(
            {"THREADS": 4, "TIMEOUT": 30},
            {"THREADS": 8, "TIMEOUT": 60},
            ["THREADS 4 -> 8", "TIMEOUT 30 -> 60"],
            id="threads-timeout",
        ),
        pytest.param(
            {},
            {"BIND": ["127.0.0.1:8000", "unix:/run/a.sock"]},
            ["BIND ['127.0.0.1:8000'] -> ['127.0.0.1:8000', 'unix:/run/a.sock']"],
            id="bind",
        ),
        pytest.param({}, {"KEEPALIVE_TIMEOUT": 2.5}, ["KEEPALIVE_TIMEOUT 75 -> 2.5"], id="float"),
        pytest.param({}, {"UMASK": 0o027}, ["UMASK None -> 0o27"], id="umask-octal"),
        pytest.param(
            {}, {"SERVER_HEADER": ""}, ["SERVER_HEADER 'django-wsgiserve' -> ''"], id="string"
        ),
        pytest.param({}, {"ACCESS_LOG": False}, ["ACCESS_LOG True -> False"], id="bool"),
    ],
)
def test_describe_changes(old, new, expected):
    assert reexec.describe_changes(_snapshot(**old), _snapshot(**new)) == expected


def test_describe_changes_of_options_one_side_does_not_know():
    old = _snapshot()
    new = {**old, "SOME_NEW_OPTION": 3}  # after upgrading the package
    assert reexec.describe_changes(old, new) == ["SOME_NEW_OPTION (none) -> 3"]


def test_check_output_round_trip_and_noise_before_it():
    config = resolve_config({"THREADS": 3, "BIND": ["unix:/run/a.sock"]}, {}, {"timeout": "9"})
    line = reexec.check_output(config)
    options = json.loads(line)["options"]
    assert options["TIMEOUT"] == {"value": 9.0, "source": "command line --timeout"}
    # A settings module may print; the configuration is the last line.
    parsed = reexec.parse_check_output(f"hello from settings.py\n{line}\n\n")
    assert parsed == reexec.config_snapshot(config)
    assert reexec.describe_changes(reexec.config_snapshot(config), parsed) == []


@pytest.mark.parametrize(
    "stdout",
    [
        pytest.param("", id="empty"),
        pytest.param("System check identified no issues\n", id="not-json"),
        pytest.param('{"other": 1}\n', id="no-options"),
        pytest.param('{"options": {"THREADS": 3}}', id="no-value"),
    ],
)
def test_parse_check_output_rejects(stdout):
    with pytest.raises(ValueError, match=r"printed nothing|last line"):
        reexec.parse_check_output(stdout)


def test_handover_round_trip_and_who_takes_it():
    handover = reexec.Handover(
        pid=os.getpid(),
        workers=((101, 1), (102, 2)),
        next_number=3,
        target=5,
        bind=("127.0.0.1:8000", "unix:/run/a:b.sock"),
        unlink=("/run/old.sock",),
        changes=("THREADS 4 -> 8",),
        control_socket="/run/mysite/control.sock",
    )
    assert reexec.Handover.decode(handover.encode()) == handover
    environ = {reexec.HANDOVER_VARIABLE: handover.encode(), "OTHER": "x"}
    assert reexec.take_handover(environ) == handover
    assert environ == {"OTHER": "x"}  # removed: workers must not see it
    assert reexec.take_handover(environ) is None
    someone_else = reexec.Handover(pid=1, workers=(), next_number=1)
    assert reexec.take_handover({reexec.HANDOVER_VARIABLE: someone_else.encode()}) is None


def test_a_handover_of_an_image_without_control_socket_decodes():
    # A reload that upgrades the package: the previous image wrote no "control_socket".
    handover = reexec.Handover(pid=os.getpid(), workers=((7, 1),), next_number=2)
    document = json.loads(handover.encode())
    del document["control_socket"]
    assert reexec.Handover.decode(json.dumps(document)) == handover


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("[1, 2]", id="not-an-object"),
        pytest.param('{"version": 99}', id="other-version"),
        pytest.param('{"version": 1, "pid": 1}', id="incomplete"),
    ],
)
def test_take_handover_ignores_garbage(text, caplog):
    environ = {reexec.HANDOVER_VARIABLE: text}
    assert reexec.take_handover(environ) is None
    assert environ == {}
    assert f"Ignoring {reexec.HANDOVER_VARIABLE}" in caplog.text


def test_exec_environ():
    handover = reexec.Handover(pid=os.getpid(), workers=((7, 1),), next_number=2)
    environ = {"PATH": "/bin", "NOTIFY_SOCKET": "@n", "LISTEN_PIDFDID": "12"}
    env = reexec.exec_environ(environ, listener_count=2, handover=handover)
    assert env == {
        "PATH": "/bin",
        "NOTIFY_SOCKET": "@n",  # the new image tells systemd READY=1
        "LISTEN_PID": str(os.getpid()),
        "LISTEN_FDS": "2",
        "LISTEN_FDNAMES": "wsgiserve:wsgiserve",
        reexec.HANDOVER_VARIABLE: handover.encode(),
    }


@pytest.mark.parametrize(
    ("fds", "expected"),
    [
        pytest.param([], [], id="none"),
        pytest.param([3], [], id="in-place"),
        pytest.param([7], [(7, 3)], id="one"),
        pytest.param([3, 9, 4], [(9, 4), (4, 5)], id="chain"),
        pytest.param([4, 3], [(4, 3), (3, 4)], id="swap"),
    ],
)
def test_listen_fd_moves(fds, expected):
    assert reexec.listen_fd_moves(fds) == expected


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_fd_placement_moves_listeners_and_undo_restores_what_was_there():
    """Targets far above what the test runner uses; a listener sits at another's target, and
    something else (a pipe, as an epoll fd or log file would) at the other target."""
    start = 600
    first, second = socket.socketpair()
    other_read, other_write = os.pipe()
    try:
        os.dup2(second.fileno(), start, inheritable=False)  # second listener at first's target
        os.dup2(other_read, start + 1, inheritable=True)  # something else at second's target
        before = _open_fds()
        listeners = [first.fileno(), start]
        expected = [_identity(first.fileno()), _identity(second.fileno())]
        placement = reexec.place_listen_fds(listeners, start=start)
        assert [_identity(start), _identity(start + 1)] == expected
        assert os.get_inheritable(start)
        assert os.get_inheritable(start + 1)
        assert not os.get_inheritable(first.fileno())  # the originals stay close-on-exec
        placement.undo()
        assert _identity(start) == _identity(second.fileno())
        assert not os.get_inheritable(start)
        assert _identity(start + 1) == _identity(other_read)
        assert os.get_inheritable(start + 1)  # as it was
        assert _open_fds() == before  # no copy leaked
    finally:
        for fd in (start, start + 1, other_read, other_write):
            os.close(fd)
        first.close()
        second.close()


def test_failed_exec_puts_everything_back():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    watched = range(systemd.SD_LISTEN_FDS_START, systemd.SD_LISTEN_FDS_START + 3)
    before = {fd: (_identity(fd), os.get_inheritable(fd)) for fd in watched if fd in _open_fds()}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        error = reexec.reexec(
            ["/nonexistent/python", "-m", "django"],
            {},
            [listener.fileno()],
            blocked_signals=[signal.SIGHUP, signal.SIGTERM],
        )
        after = {fd: (_identity(fd), os.get_inheritable(fd)) for fd in watched if fd in _open_fds()}
    finally:
        listener.close()
    assert isinstance(error, FileNotFoundError)
    assert after == before
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask


def test_reuse_or_bind_listeners(tmp_path):
    kept = socket.socket(socket.AF_UNIX)
    kept.bind(str(tmp_path / "kept.sock"))
    kept.listen()
    dropped = socket.socket()
    current = [(f"unix:{tmp_path / 'kept.sock'}", kept), ("127.0.0.1:1", dropped)]
    wanted = [f"unix:{tmp_path / 'new.sock'}", f"unix:{tmp_path / 'kept.sock'}"]
    listeners, fresh = reuse_or_bind_listeners(current, wanted, backlog=8)
    try:
        assert listeners[1] is kept
        assert fresh == [listeners[0]]
        assert listeners[0].getsockname() == str(tmp_path / "new.sock")
        with pytest.raises(BindError) as caught:
            reuse_or_bind_listeners(current, [*wanted[1:], "unix:/nonexistent/x.sock"], backlog=8)
        assert str(caught.value.address) == "unix:/nonexistent/x.sock"
    finally:
        for sock in (*listeners, dropped):
            sock.close()


# What the master's environment may hold and a checking child must not see.
_MASTER_ONLY = {
    "LISTEN_PID": "1",
    "LISTEN_FDS": "1",
    "LISTEN_FDNAMES": "http",
    "NOTIFY_SOCKET": "@nobody",
    "WATCHDOG_USEC": "1000000",
    reexec.HANDOVER_VARIABLE: "{}",
}


def _run_check(code: str, *, timeout_s: float = 20.0) -> reexec.CheckResult:
    """A ConfigCheck of ``python -c CODE``, polled and reaped as the master does."""
    environ = {**os.environ, **_MASTER_ONLY}
    check = reexec.ConfigCheck(
        [sys.executable, "-c", code], environ, now=time.monotonic(), timeout_s=timeout_s
    )
    with selectors.DefaultSelector() as selector:
        check.register(selector)
        try:
            while not check.is_finished:
                for key, _ in selector.select(0.05):
                    key.data()
                if time.monotonic() >= check.deadline:
                    check.kill(timed_out=True)
                pid, status = os.waitpid(check.pid, os.WNOHANG)
                if pid:
                    check.exited(os.waitstatus_to_exitcode(status))
            return check.result()
        finally:
            check.close()


def test_config_check_reads_the_configuration():
    line = reexec.check_output(resolve_config({"THREADS": 3}, {}, {}))
    code = (
        f"import os, sys; assert sys.argv[1:] == ['--reload-check']; "
        f"assert not {sorted(_MASTER_ONLY)!r} & os.environ.keys(), os.environ; print({line!r})"
    )
    result = _run_check(code)
    assert result.error == ""
    assert result.options is not None
    assert result.options["THREADS"] == 3


def test_config_check_reports_the_end_of_stderr():
    code = (
        "import sys; "
        "sys.stderr.write('noise\\n' * 50 + 'CommandError: THREADS: bad\\n'); sys.exit(2)"
    )
    result = _run_check(code)
    assert result.options is None
    assert "--reload-check exited with code 2; its stderr ends with:" in result.error
    assert result.error.endswith("    CommandError: THREADS: bad")
    assert result.error.count("noise") < 15  # only the tail


def test_config_check_is_killed_past_its_deadline():
    result = _run_check("import time; time.sleep(30)", timeout_s=0.3)
    assert result.options is None
    assert "did not finish within 0.3 s" in result.error


def test_config_check_close_kills_and_reaps_a_running_child():
    check = reexec.ConfigCheck(
        [sys.executable, "-c", "import time; time.sleep(30)"], {}, now=time.monotonic()
    )
    check.close()
    assert check.exit_code == -signal.SIGKILL
    with pytest.raises(ChildProcessError):
        os.waitpid(check.pid, os.WNOHANG)


# -- the master's reload path, without forking ----------------------------------------------------


def _arbiter(listeners: list[socket.socket], **wsgiserve: object) -> Arbiter:
    config = resolve_config({"WORKERS": 2, **wsgiserve}, {}, {})
    return Arbiter(
        config,
        listeners,
        load_application=lambda: None,  # type: ignore[arg-type,return-value]
        environ={},
        reload_command=["/nonexistent/python", "manage.py", "serve"],
    )


@pytest.mark.parametrize(
    "bind",
    [
        pytest.param(["systemd:web"], id="syntax-of-a-newer-version"),
        pytest.param(None, id="option-renamed-by-a-newer-version"),
    ],
)
def test_a_bind_the_running_code_cannot_read_fails_the_reload_not_the_master(bind, caplog):
    """The check runs the code on disk, which may be a newer version than the master's."""
    listener = socket.create_server(("127.0.0.1", 0))
    arbiter = _arbiter([listener], BIND=[f"127.0.0.1:{listener.getsockname()[1]}"])
    options = {**reexec.config_snapshot(arbiter.config), "THREADS": 9}
    if bind is None:
        del options["BIND"]
    else:
        options["BIND"] = bind
    try:
        arbiter.reloader.apply(reexec.CheckResult(options))  # what the check printed
        assert arbiter.state is ArbiterState.RUNNING
        assert "Reload failed" in caplog.text
        assert listener.fileno() != -1  # still listening
    finally:
        arbiter.close()


def test_a_signal_handled_just_before_exec_reaches_the_next_image(monkeypatch):
    """SIGTERM whose handler ran after the loop last read the queue (while the reload binds,
    logs...) must not vanish with this image's memory: it waits, pending, across exec."""
    listener = socket.create_server(("127.0.0.1", 0))
    arbiter = _arbiter([listener], BIND=[f"127.0.0.1:{listener.getsockname()[1]}"])
    pending_at_exec: list[set[int]] = []

    def failing_execve(path: str, argv: list[str], environ: dict[str, str]) -> None:
        pending_at_exec.append(set(signal.sigpending()))
        raise FileNotFoundError(path)

    monkeypatch.setattr(os, "execve", failing_execve)
    previous = signal.signal(signal.SIGTERM, arbiter.inbox.record)
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # handled at once: only in the queue now
        assert len(arbiter.inbox) == 1
        snapshot = reexec.config_snapshot(arbiter.config)
        arbiter.reloader.apply(reexec.CheckResult({**snapshot, "THREADS": snapshot["THREADS"] + 1}))
        assert pending_at_exec == [{signal.SIGTERM}]
        # exec failed: unblocked, the signal is handled by this image after all
        assert list(arbiter.inbox.take()) == [signal.SIGTERM]
        assert not signal.sigpending()
    finally:
        signal.signal(signal.SIGTERM, previous)
        arbiter.close()


def test_no_descriptor_for_a_worker_pipe_is_logged_not_fatal(monkeypatch, caplog):
    balance = BalanceTable(4)
    recipe = WorkerRecipe(
        config=resolve_config({"WORKERS": 2}, {}, {}),
        listeners=[],
        load_application=lambda: None,  # type: ignore[arg-type,return-value]
    )

    def no_more_fds(flags: int) -> tuple[int, int]:
        raise OSError(24, "Too many open files")

    def no_fork() -> int:
        raise AssertionError("fork() without a pipe")

    monkeypatch.setattr(os, "pipe2", no_more_fds)
    with selectors.DefaultSelector() as selector:
        table = WorkerTable(recipe, selector=selector, target=2, balance=balance, fork=no_fork)
        table.spawn(0.0)  # retried by the next loop iteration, like a failed fork
    assert "Could not fork worker 1" in caplog.text
    assert len(table) == 0
    assert balance.claim() == 0  # the slot was given back


def test_a_re_executed_master_survives_a_user_that_does_not_exist(caplog):
    """The reload check does not look USER up; after exec it is too late to fail."""
    config = resolve_config({"WORKERS": 1, "USER": "no-such-user-wsgiserve"}, {}, {})
    handover = reexec.Handover(pid=os.getpid(), workers=(), next_number=1)
    arbiter = Arbiter(
        config,
        [],
        load_application=lambda: None,  # type: ignore[arg-type,return-value]
        environ={},
        handover=handover,
    )
    try:
        arbiter.process.switch_user()
        assert "USER/GROUP 'no-such-user-wsgiserve'/'' ignored" in caplog.text
        first_start = Arbiter(config, [], load_application=lambda: None, environ={})  # type: ignore[arg-type,return-value]
        try:
            with pytest.raises(KeyError):  # at the first start, a plain error as before
                first_start.process.switch_user()
        finally:
            first_start.close()
    finally:
        arbiter.close()
