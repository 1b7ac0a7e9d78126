"""The control socket and ``manage.py servectl``, through a real ``manage.py serve``.

Each server gets a private XDG_RUNTIME_DIR (tests/live.py), so the automatic CONTROL_SOCKET
is ``$XDG_RUNTIME_DIR/django-wsgiserve/tests.sock``: the tests use the default path, as an
operator would. Polling goes through ``control.send_command`` (no Python start-up per poll);
what the operator sees goes through ``LiveServer.servectl``, the real command.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from django_wsgiserve import control
from tests.live import LiveServer, is_closed, read_response, stop_all, wait_until, workers_of

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.integration


def status(server: LiveServer, path: Path | None = None) -> dict[str, Any]:
    reply = control.send_command(str(path or server.control_socket), "status", timeout_s=10)
    assert reply["ok"], reply
    return reply


def running(server: LiveServer, path: str) -> list[dict[str, Any]]:
    return [request for request in status(server)["requests"] if request["path"] == path]


def sleep_request(seconds: float) -> bytes:
    # The query carries a token: status must not show it.
    target = f"/sleepy?s={seconds}&token=hunter2"
    return f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()


def exchange(path: Path, data: bytes, *, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Send ``data`` raw, half-close, and read every reply line until the master closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        # A master that stopped reading (a line too long) closes with input unread: the
        # replies come first, then a reset.
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    return [json.loads(line) for line in received.splitlines()]


@pytest.fixture(scope="module")
def shared(start_server: Callable[..., LiveServer]) -> LiveServer:
    """One server for the tests that leave it as they found it."""
    return start_server("--workers", "2", "--threads", "4")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Servers of one test; each must exit 0 at the end."""
    servers: list[LiveServer] = []

    def start_server(*args: str, settings: str = "tests.settings", **kwargs: Any) -> LiveServer:
        server = LiveServer(
            log_path=tmp_path / f"server-{len(servers)}.log",
            settings=settings,
            args=list(args),
            env={"WSGISERVE_TEST_FILES_DIR": str(tmp_path)},
            **kwargs,
        )
        servers.append(server)
        return server.start()

    yield start_server
    stop_all([server for server in servers if server.wait_ready])


# -- status ---------------------------------------------------------------------------------------


def test_status_shows_a_sleeping_request_with_its_age_and_the_workers(shared):
    with shared.connect(timeout=30) as client:
        client.sendall(sleep_request(5))
        assert wait_until(lambda: running(shared, "/sleepy"), 10), shared.log()[-2000:]
        first = running(shared, "/sleepy")[0]
        result = shared.servectl("status")
        assert result.returncode == 0, result.stderr
        assert "/sleepy" in result.stdout
        assert "hunter2" not in result.stdout
        result = shared.servectl("status", "--json")
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        (request,) = [item for item in document["requests"] if item["path"] == "/sleepy"]
        assert request["age_s"] > first["age_s"]  # the request is older now
        assert request["method"] == "GET"
        assert request["thread_id"] > 0
        pids = {worker["pid"] for worker in document["workers"]}
        assert pids == workers_of(shared)
        assert request["worker_pid"] in pids
        assert document["server"]["pid"] == shared.pid
        assert document["server"]["state"] == "running"
        assert document["server"]["control_socket"] == str(shared.control_socket)
        for worker in document["workers"]:
            assert worker["state"] == "ready"
            assert worker["age_s"] > 0
            assert worker["rss_bytes"] > 0
        # The workers publish their counts once a second.
        assert wait_until(
            lambda: any(
                worker["pid"] == request["worker_pid"] and worker["busy_threads"] >= 1
                for worker in status(shared)["workers"]
            ),
            5,
        )
        assert read_response(client).status == 200
    assert wait_until(lambda: not running(shared, "/sleepy"), 5)


def test_status_shows_the_configuration_with_its_sources(shared):
    result = shared.servectl("status")
    assert result.returncode == 0, result.stderr
    assert "THREADS" in result.stdout
    assert "command line --threads" in result.stdout
    result = shared.servectl("config")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["OPTION", "VALUE", "SOURCE"]
    threads = next(line for line in lines if line.startswith("THREADS "))
    assert threads.split()[1:] == ["4", "command", "line", "--threads"]
    assert any(line.startswith("CONTROL_SOCKET ") and "default" in line for line in lines)


def test_the_socket_is_the_servers_alone(shared):
    info = os.stat(shared.control_socket)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()
    assert stat.S_IMODE(os.stat(shared.control_socket.parent).st_mode) == 0o700


# -- actions --------------------------------------------------------------------------------------


def test_add_and_remove_a_worker(shared):
    before = workers_of(shared)
    result = shared.servectl("add-worker")
    assert result.returncode == 0, result.stderr
    assert "3 worker(s) wanted" in result.stdout

    def ready() -> int:
        return sum(worker["state"] == "ready" for worker in status(shared)["workers"])

    assert wait_until(lambda: ready() == 3 and len(workers_of(shared)) == 3, 20)
    result = shared.servectl("remove-worker")
    assert result.returncode == 0, result.stderr
    assert "2 worker(s) wanted" in result.stdout
    assert wait_until(lambda: len(status(shared)["workers"]) == 2, 20)
    assert wait_until(lambda: len(workers_of(shared)) == 2, 20)
    assert workers_of(shared) == {worker["pid"] for worker in status(shared)["workers"]}
    assert len(workers_of(shared) & before) == 1  # the oldest one left, the new one stays
    assert status(shared)["server"]["workers_wanted"] == 2


def test_one_worker_is_the_least(start):
    server = start("--workers", "1")
    result = server.servectl("remove-worker")
    assert result.returncode == 1
    assert "one worker is the least" in result.stderr
    assert len(status(server)["workers"]) == 1


def test_reload_replaces_the_workers(start):
    server = start("--workers", "2")
    old = {worker["pid"] for worker in status(server)["workers"]}
    assert old == workers_of(server)
    result = server.servectl("reload")
    assert result.returncode == 0, result.stderr
    assert "Reloading" in result.stdout

    def new_generation() -> bool:
        pids = {worker["pid"] for worker in status(server)["workers"]}
        return len(pids) == 2 and not pids & old

    assert wait_until(new_generation, 30), server.log()[-3000:]
    assert wait_until(lambda: workers_of(server) == {w["pid"] for w in status(server)["workers"]})
    assert server.get("/hello").status == 200


def test_stop_lets_the_running_request_finish(start):
    server = start("--workers", "1")
    with server.connect(timeout=30) as client:
        client.sendall(sleep_request(2))
        assert wait_until(lambda: running(server, "/sleepy"), 10)
        result = server.servectl("stop")
        assert result.returncode == 0, result.stderr
        assert "Stopping" in result.stdout
        response = read_response(client)
    assert response.status == 200
    assert response.body == b"slept 2"
    assert server.process is not None
    assert server.process.wait(30) == 0
    assert not server.control_socket.exists()
    assert "Control socket: stop" in server.log()


# -- when the server cannot be reached ------------------------------------------------------------


def test_no_server_at_the_path_exits_with_status_2(tmp_path):
    operator = LiveServer(log_path=tmp_path / "unused.log", env={"XDG_RUNTIME_DIR": str(tmp_path)})
    missing = tmp_path / "missing.sock"
    result = operator.servectl("status", "--control-socket", str(missing))
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "no such socket" in result.stderr
    assert "CONTROL_SOCKET" in result.stderr
    assert "command line --control-socket" in result.stderr
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))  # a crashed master's file: nobody listens
    result = operator.servectl("stop", env={"WSGISERVE_CONTROL_SOCKET": str(stale)})
    assert result.returncode == 2
    assert "nobody listens there" in result.stderr
    assert "environment WSGISERVE_CONTROL_SOCKET" in result.stderr
    result = operator.servectl("status")
    assert result.returncode == 2
    assert str(tmp_path / "django-wsgiserve" / "tests.sock") in result.stderr
    assert "automatic" in result.stderr
    result = operator.servectl("status", env={"WSGISERVE_CONTROL_SOCKET": "off"})
    assert result.returncode == 2
    assert "no control socket" in result.stderr


def test_a_stopped_server_exits_with_status_2(start):
    server = start("--workers", "1")
    assert status(server)["server"]["pid"] == server.pid
    assert server.stop() == 0
    result = server.servectl("status")
    assert result.returncode == 2
    assert "Cannot reach the server" in result.stderr
    assert "CONTROL_SOCKET: automatic; source: default" in result.stderr


def test_a_silent_master_times_out_with_status_2(tmp_path):
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)  # accepts (in the kernel), never answers
        operator = LiveServer(log_path=tmp_path / "unused.log")
        result = operator.servectl("status", "--control-socket", str(path), "--timeout", "0.5")
    assert result.returncode == 2
    assert "did not answer within 0.5 s" in result.stderr


# -- clients that misbehave ----------------------------------------------------------------------


def test_garbage_long_lines_and_idle_clients_do_not_hurt_the_master(shared):
    path = shared.control_socket
    replies = exchange(path, b'garbage\n{"command": "dance"}\n[1]\n\xff\n{"command":"status"}\n')
    assert [reply["ok"] for reply in replies] == [False, False, False, False, True]
    assert {reply.get("code") for reply in replies[:4]} == {"bad-request"}
    assert "unknown command 'dance'" in replies[1]["error"]
    (reply,) = exchange(path, b"{" * 100_000)
    assert reply == {"ok": False, "error": "request longer than 4096 bytes", "code": "bad-request"}
    idle = []
    try:
        for _ in range(4):  # connected, silent
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(path))
            idle.append(sock)
        idle[0].sendall(b'{"command": "sta')  # half a request
        # A client that asks for a lot and never reads: the master must not wait for it.
        idle[1].sendall(b'{"command":"status"}\n' * 2000)
        assert status(shared)["server"]["pid"] == shared.pid
        result = shared.servectl("status")
        assert result.returncode == 0, result.stderr
    finally:
        for sock in idle:
            sock.close()
    assert shared.get("/hello").status == 200
    assert "Traceback" not in shared.log()


def test_too_many_clients_are_told_to_come_back(shared):
    path = str(shared.control_socket)
    held = []
    try:
        for _ in range(20):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            held.append(sock)
            sock.connect(path)  # blocking: waits while the backlog is full
            sock.settimeout(10)
        # The master serves 16 at once; those beyond get "busy" and are closed.
        busy = 0
        for sock in held[16:]:
            data = sock.recv(65536)
            busy += b'"busy: 16 control connections' in data
            assert is_closed(sock)
        assert busy == 4
    finally:
        for sock in held:
            sock.close()
    # Once the master has seen them close, it answers again.
    assert wait_until(lambda: control.send_command(path, "status", timeout_s=10)["ok"], 5)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to connect as another user")
def test_another_user_is_refused_even_through_an_open_file_mode(start, tmp_path):
    directory = Path(tempfile.mkdtemp(prefix="wsgiserve-ctl-", dir="/tmp"))
    path = directory / "ctl.sock"
    try:
        directory.chmod(0o755)
        server = start("--workers", "1", "--control-socket", str(path))
        path.chmod(0o666)  # a mistake of the operator's: the peer check still holds
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(read_end)
                os.setgid(65534)
                os.setuid(65534)
                reply = control.send_command(str(path), "stop", timeout_s=10)
                os.write(write_end, json.dumps(reply).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            reply = json.loads(pipe.read() or b"null")
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert reply["ok"] is False
        assert reply["code"] == "refused"
        assert "uid 65534" in reply["error"]
        assert status(server, path)["server"]["state"] == "running"
        assert "Control socket: refused pid" in server.log()
    finally:
        for leftover in directory.iterdir():
            leftover.unlink()
        directory.rmdir()


# -- the file -------------------------------------------------------------------------------------


def test_a_stale_socket_file_is_replaced_and_a_live_one_kept(start, tmp_path):
    path = tmp_path / "ctl.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # what a master killed with SIGKILL leaves
    server = start("--workers", "1", "--control-socket", str(path))
    assert status(server, path)["server"]["pid"] == server.pid
    # A second server of the same project, at the same path, refuses to start.
    second = LiveServer(
        log_path=tmp_path / "second.log",
        args=["--workers", "1", "--control-socket", str(path)],
        wait_ready=False,
    ).start()
    assert second.process is not None
    assert second.process.wait(30) == 2
    assert "CONTROL_SOCKET (command line --control-socket): can't listen at" in second.log()
    assert "another server listens there" in second.log()
    second.stop()
    assert status(server, path)["server"]["pid"] == server.pid


def test_a_removed_socket_file_comes_back(shared):
    os.unlink(shared.control_socket)
    assert wait_until(shared.control_socket.exists, 15), shared.log()[-2000:]
    assert status(shared)["server"]["pid"] == shared.pid
    assert "had been removed: listening there again" in shared.log()


def test_a_configuration_reload_keeps_the_socket_and_moves_it(start, tmp_path):
    first, second = tmp_path / "first.sock", tmp_path / "second.sock"
    files = tmp_path / "wsgiserve.json"
    files.write_text(json.dumps({"WORKERS": 1, "CONTROL_SOCKET": str(first)}), "utf-8")
    server = start("--no-access-log", settings="tests.settings_config")
    assert status(server, first)["server"]["pid"] == server.pid
    files.write_text(json.dumps({"WORKERS": 1, "THREADS": 3}), "utf-8")
    # The automatic path now; SIGHUP re-executes the master, which binds it again.
    server.send_signal(signal.SIGHUP)
    assert wait_until(server.control_socket.exists, 30), server.log()[-3000:]
    document = status(server)
    assert document["server"]["threads"] == 3
    (threads,) = [row for row in document["config"] if row["option"] == "THREADS"]
    assert (threads["value"], threads["source"]) == (3, "settings.WSGISERVE['THREADS']")
    assert wait_until(lambda: not first.exists(), 10)
    files.write_text(json.dumps({"WORKERS": 1, "THREADS": 2, "CONTROL_SOCKET": str(second)}))
    reply = control.send_command(str(server.control_socket), "reload", timeout_s=10)
    assert reply["ok"], reply
    assert wait_until(second.exists, 30), server.log()[-3000:]
    assert status(server, second)["server"]["threads"] == 2
    assert wait_until(lambda: not server.control_socket.exists(), 10)
    assert server.process is not None
    assert server.process.poll() is None
