"""The systemd deployment path, end to end, without systemd as PID 1.

* The generated units pass ``systemd-analyze verify`` and score well in ``systemd-analyze
  security --offline=yes`` (the score is quoted in docs/deployment.md).
* A real ``serve`` runs under ``systemd-socket-activate`` (the tool systemd ships to test socket
  activation): it serves on the activated socket and talks sd_notify to a fake NOTIFY_SOCKET in
  the order systemd expects: READY=1, RELOADING=1 + MONOTONIC_USEC then READY=1 on SIGHUP,
  STOPPING=1 (and EXTEND_TIMEOUT_USEC) on SIGTERM; with WATCHDOG_USEC it pings WATCHDOG=1 at
  about half of it. BIND is ignored with an INFO line; a unix socket path is left in place.
* Socket activation survives ``--reload`` (Django's autoreloader runs the server in a child).

The tools come with the ``systemd`` package (.ci/run installs it); without them these tests skip
and say why. systemd-socket-activate (v252) binds the address itself and waits for the first
connection before it execs the server, so the tests pick a free port first (retrying once if
another process takes it meanwhile) and connect before they wait for READY=1.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import pytest
from django.core.management import call_command
from django.test import override_settings

from django_wsgiserve import sockets
from tests.fastcgi import encoder as fcgi
from tests.live import REPO, NotifyListener, read_response
from tests.nginx import NginxProxy, nginx_missing_reason

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

    from tests.live import LiveServer

pytestmark = pytest.mark.integration

ANALYZE = "/usr/bin/systemd-analyze"
SOCKET_ACTIVATE = "/usr/bin/systemd-socket-activate"
START_TIMEOUT_S = 30.0
# "systemd-analyze security --offline=yes" of the golden sample on systemd 252, quoted in
# docs/deployment.md: the test fails when a change makes the sandbox weaker.
MAX_EXPOSURE = 1.4
_REQUEST = b"GET /hello HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"


def _require(tool: str) -> None:
    if not os.access(tool, os.X_OK):
        reason = f"{tool} is not installed (Debian: apt-get install systemd; .ci/run does)"
        print(reason)  # shown in the CI log; -rs shows the skip
        pytest.skip(reason)


# -- generated units ----------------------------------------------------------------------------


def _write_units(tmp_path: Path, *args: str, wsgiserve: dict[str, object]) -> list[Path]:
    """Run ``serve --systemd-unit ARGS`` and write each unit into ``tmp_path``."""
    out = io.StringIO()
    with override_settings(WSGISERVE=wsgiserve, MEDIA_ROOT=str(tmp_path / "media")):
        call_command("serve", "--systemd-unit", *args, stdout=out, stderr=io.StringIO())
    return _split_units(out.getvalue(), tmp_path)


def _split_units(text: str, directory: Path) -> list[Path]:
    paths: list[Path] = []
    for block in re.split(r"^(?=# /etc/systemd/system/)", text, flags=re.MULTILINE):
        if block:
            header = block.splitlines()[0]
            paths.append(directory / header.rsplit("/", 1)[1])
            paths[-1].write_text(block, "utf-8")
    return paths


def _verify(paths: list[Path]) -> None:
    result = subprocess.run(
        [ANALYZE, "verify", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ours = [line for line in result.stderr.splitlines() if any(p.name in line for p in paths)]
    assert result.returncode == 0, result.stderr
    assert not ours, result.stderr


# root exists everywhere, and verify checks that User= does.
_ROOT = {"USER": "root", "GROUP": "root"}


@pytest.mark.parametrize(
    ("args", "wsgiserve"),
    [
        pytest.param((), _ROOT, id="service-tcp"),
        pytest.param(
            ("--socket",),
            {**_ROOT, "BIND": ["unix:/run/tests/tests.sock", "127.0.0.1:8000", "[::1]:8000"]},
            id="service-and-socket",
        ),
        pytest.param(
            (), {**_ROOT, "BIND": ["0.0.0.0:80", "unix:/run/tests/t.sock"]}, id="port-80-own-unix"
        ),
    ],
)
def test_generated_units_pass_verify(
    tmp_path: Path, args: tuple[str, ...], wsgiserve: dict[str, object]
) -> None:
    _require(ANALYZE)
    _verify(_write_units(tmp_path, *args, wsgiserve=wsgiserve))


def test_testproject_units_pass_verify(tmp_path: Path) -> None:
    """The real path: ``manage.py serve --systemd-unit --socket`` of the test project."""
    _require(ANALYZE)
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["WSGISERVE_USER"] = "root"
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--systemd-unit", "--socket"],
        cwd=REPO / "testproject",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    paths = _split_units(result.stdout, tmp_path)
    assert [p.name for p in paths] == ["testproject.service", "testproject.socket"]
    service = paths[0].read_text("utf-8")
    assert f"ExecStart={os.path.normpath(sys.executable)} {REPO}/testproject/manage.py serve\n" in (
        service
    )
    assert "Environment=WSGISERVE_USER=root\n" in service
    _verify(paths)


@pytest.mark.parametrize(
    "golden",
    [pytest.param("mysite-tcp.txt", id="tcp"), pytest.param("mysite-socket-unix.txt", id="socket")],
)
def test_security_exposure(tmp_path: Path, golden: str) -> None:
    """The golden sample (tests/unit/golden/) scores MAX_EXPOSURE or better."""
    _require(ANALYZE)
    text = (REPO / "tests" / "unit" / "golden" / golden).read_text("utf-8")
    service = _split_units(text, tmp_path)[0]
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(service)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    print(f"systemd-analyze security {golden}: {match.group(1)} {match.group(2)}")
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


# -- a real server under systemd-socket-activate -------------------------------------------------


@dataclass
class Activated:
    """``serve`` started by systemd-socket-activate; ``pid`` is the server's (the tool execs)."""

    process: subprocess.Popen[bytes]
    address: str  # HOST:PORT, or the path of a unix socket
    notify: NotifyListener
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def connect(self) -> socket.socket:
        if self.address.startswith("/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(START_TIMEOUT_S)
            try:
                sock.connect(self.address)
            except OSError:
                sock.close()
                raise
            return sock
        host, _, port = self.address.rpartition(":")
        return socket.create_connection((host, int(port)), timeout=START_TIMEOUT_S)

    def request(self) -> bytes:
        with self.connect() as sock:
            sock.sendall(_REQUEST)
            return read_response(sock).body


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _spawn(
    address: str,
    notify: NotifyListener,
    log_path: Path,
    env: dict[str, str],
    *,
    more: Sequence[tuple[str, str]] = (),
) -> Activated:
    """Run ``serve`` under systemd-socket-activate on ``address`` (FileDescriptorName=http)
    and on each (address, name) of ``more``, in that order (LISTEN_FDNAMES)."""
    command = [SOCKET_ACTIVATE, "-l", address]
    for other, _ in more:
        command += ["-l", other]
    command.append("--fdname=" + ":".join(["http", *(name for _, name in more)]))
    passed = {
        "NOTIFY_SOCKET": notify.name,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    # The tool passes only TERM, PATH, HOME, LISTEN_* and what -E names to the server.
    for name, value in passed.items():
        command += ["-E", f"{name}={value}"]
    command += [sys.executable, "-m", "django", "serve", "--noreload", "--workers", "1"]
    command += ["--threads", "2"]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Activated(process=process, address=address, notify=notify, log_path=log_path)


def _first_connection(server: Activated) -> socket.socket:
    """Connect once the tool listens (it execs the server on this connection)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            return server.connect()
        except (ConnectionRefusedError, FileNotFoundError):  # noqa: PERF203 - while it starts
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM the process group, SIGKILL it if needed; the exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.returncode


Activate: TypeAlias = "Callable[..., tuple[Activated, bytes]]"


@pytest.fixture
def activate(tmp_path: Path) -> Iterator[Activate]:
    """Start ``serve`` under systemd-socket-activate; return it and the first response body."""
    _require(SOCKET_ACTIVATE)
    started: list[Activated] = []

    def start(env: dict[str, str] | None = None, *, unix: bool = False) -> tuple[Activated, bytes]:
        for attempt in range(2):
            notify = NotifyListener()
            address = str(tmp_path / "s.sock") if unix else f"127.0.0.1:{_free_port()}"
            server = _spawn(address, notify, tmp_path / f"server-{attempt}.log", env or {})
            started.append(server)
            try:
                first = _first_connection(server)
            except (ConnectionRefusedError, FileNotFoundError):
                if attempt == 0 and "in use" in server.log():
                    continue  # someone took the port between probe and bind: once more
                raise AssertionError(f"socket-activate did not listen:\n{server.log()}") from None
            with first:
                first.sendall(_REQUEST)
                body = read_response(first).body
            return server, body
        raise AssertionError("unreachable")

    yield start
    for server in started:
        _stop(server.process)
        server.notify.close()


def _wait_for(
    notify: NotifyListener, predicate: Callable[[list[str]], bool], timeout: float
) -> bool:
    """Collect datagrams until ``predicate(messages)`` holds; False on timeout."""
    return notify.wait_until(predicate, timeout)


def _read_pending(notify: NotifyListener) -> None:
    while select.select([notify.sock], [], [], 0)[0]:
        notify.messages.append(notify.sock.recv(65536).decode("utf-8", "replace"))


def _has(key: str, count: int = 1) -> Callable[[list[str]], bool]:
    """A ``_wait_for`` predicate: ``count`` messages carry ``key``."""
    return lambda messages: len(_indices(messages, key)) >= count


def _fields(message: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in message.splitlines() if "=" in line)


def _indices(messages: list[str], key: str) -> list[int]:
    return [i for i, message in enumerate(messages) if key in _fields(message)]


def test_notify_sequence_under_socket_activation(activate: Activate) -> None:
    server, body = activate()
    assert body == b"Hello, World!", server.log()
    notify = server.notify
    assert _wait_for(notify, _has("READY"), START_TIMEOUT_S), server.log()
    ready = _fields(notify.messages[_indices(notify.messages, "READY")[0]])
    assert "STATUS" in ready
    assert "BIND ignored" not in server.log()  # BIND is the default: nothing to say

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    os.kill(server.process.pid, signal.SIGHUP)
    assert _wait_for(notify, _has("READY", 2), START_TIMEOUT_S), (
        f"{notify.messages}\n{server.log()}"
    )
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert server.request() == b"Hello, World!"

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(START_TIMEOUT_S) == 0, server.log()
    _read_pending(notify)  # the server has exited: everything it sent is queued

    messages = notify.messages
    first_ready, second_ready = _indices(messages, "READY")[:2]
    (reloading,) = _indices(messages, "RELOADING")
    (stopping,) = _indices(messages, "STOPPING")
    assert first_ready < reloading < second_ready < stopping, messages
    # The drain asks systemd for time at once (EXTEND_TIMEOUT_USEC), then every few seconds.
    extends = [i for i in _indices(messages, "EXTEND_TIMEOUT_USEC") if i > stopping]
    assert extends, messages
    assert int(_fields(messages[extends[0]])["EXTEND_TIMEOUT_USEC"]) > 0
    assert before <= int(_fields(messages[reloading])["MONOTONIC_USEC"]) <= after


def test_watchdog_pings(activate: Activate) -> None:
    # WATCHDOG_PID unset: the pings are wanted from whichever process got the variable.
    server, _ = activate({"WATCHDOG_USEC": "400000"})
    notify = server.notify
    assert _wait_for(notify, _has("READY"), START_TIMEOUT_S), server.log()
    start = len(notify.messages)
    window_end = time.monotonic() + 2.0
    _wait_for(notify, lambda m: time.monotonic() >= window_end, 2.0)
    pings = len(_indices(notify.messages[start:], "WATCHDOG"))
    # One ping every 0.2 s would be 10; the range allows for a loaded two-core machine.
    assert 4 <= pings <= 20, notify.messages[start:]


def test_watchdog_meant_for_another_process_is_ignored(activate: Activate) -> None:
    server, _ = activate({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"})
    notify = server.notify
    assert _wait_for(notify, _has("READY"), START_TIMEOUT_S), server.log()
    window_end = time.monotonic() + 1.0
    _wait_for(notify, lambda m: time.monotonic() >= window_end, 1.0)
    assert not _indices(notify.messages, "WATCHDOG"), notify.messages


def test_bind_is_ignored_with_an_info_line(activate: Activate) -> None:
    server, body = activate({"WSGISERVE_BIND": "127.0.0.1:1"})
    assert body == b"Hello, World!", server.log()
    assert _wait_for(server.notify, _has("READY"), START_TIMEOUT_S), server.log()
    assert "INFO" in server.log()
    assert "BIND ignored: listening sockets were passed by systemd" in server.log()


def test_unix_socket_from_systemd_is_not_unlinked(activate: Activate) -> None:
    server, body = activate(unix=True)
    assert body == b"Hello, World!", server.log()
    assert _wait_for(server.notify, _has("READY"), START_TIMEOUT_S), server.log()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(START_TIMEOUT_S) == 0, server.log()
    assert os.path.exists(server.address)


# -- sockets named uwsgi and fastcgi (FileDescriptorName=) ---------------------------------------


def _through_nginx(nginx: NginxProxy) -> bytes:
    """GET /hello from nginx (which passes it to its upstream with uwsgi_pass)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(START_TIMEOUT_S)
        sock.connect(nginx.address)
        sock.sendall(_REQUEST)
        response = read_response(sock)
    assert response.status == 200, nginx.error_log()
    return response.body


def _over_fastcgi(path: str) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """GET /hello as a FastCGI web server sends it; the STDOUT stream and every record."""
    variables = [
        (b"REQUEST_METHOD", b"GET"),
        (b"REQUEST_URI", b"/hello"),
        (b"DOCUMENT_URI", b"/hello"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
    ]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(START_TIMEOUT_S)
        sock.connect(path)
        sock.sendall(fcgi.nginx_request(variables))  # no FCGI_KEEP_CONN: the server closes
        received = bytearray()
        while data := sock.recv(65536):
            received += data
    records = fcgi.parse_records(bytes(received))
    return b"".join(content for kind, _, content in records if kind == fcgi.STDOUT), records


def test_sockets_named_uwsgi_and_fastcgi_speak_those_protocols(tmp_path: Path) -> None:
    """LISTEN_FDNAMES http:uwsgi:fastcgi for three sockets: HTTP answered directly, uwsgi
    through a real nginx (uwsgi_pass), FastCGI from a FastCGI client; again after a HUP."""
    _require(SOCKET_ACTIVATE)
    reason = nginx_missing_reason()
    if reason is not None:
        print(reason)
        pytest.skip(reason)
    http_path, uwsgi_path, fastcgi_path = (
        str(tmp_path / f"{name}.sock") for name in ("http", "uwsgi", "fastcgi")
    )
    notify = NotifyListener()
    server = _spawn(
        http_path,
        notify,
        tmp_path / "server.log",
        {},
        more=[(uwsgi_path, "uwsgi"), (fastcgi_path, "fastcgi")],
    )
    try:
        with _first_connection(server) as first:
            first.sendall(_REQUEST)
            assert read_response(first).body == b"Hello, World!", server.log()
        assert _wait_for(notify, _has("READY"), START_TIMEOUT_S), server.log()
        with NginxProxy(tmp_path / "nginx", uwsgi_path, protocol="uwsgi") as nginx:
            for ready in (1, 2):
                if ready == 2:
                    os.kill(server.process.pid, signal.SIGHUP)
                    assert _wait_for(notify, _has("READY", 2), START_TIMEOUT_S), server.log()
                assert server.request() == b"Hello, World!"
                assert _through_nginx(nginx) == b"Hello, World!"
                stdout, records = _over_fastcgi(fastcgi_path)
                assert stdout.startswith(b"Status: 200 OK\r\n"), records
                assert stdout.endswith(b"\r\n\r\nHello, World!")
                assert records[-1][0] == fcgi.END
        status = next(m for m in notify.messages if "listening at" in m)
        assert f"uwsgi:unix:{uwsgi_path}" in status
        assert f"fastcgi:unix:{fastcgi_path}" in status
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(START_TIMEOUT_S) == 0, server.log()
    finally:
        _stop(server.process)
        notify.close()


# -- socket activation under --reload ------------------------------------------------------------


def test_socket_activation_survives_the_autoreloader(
    tmp_path: Path, start_server: Callable[..., LiveServer]
) -> None:
    """The reloader's child serves on the inherited socket, and so does the next child."""
    settings_module = tmp_path / "reload_settings.py"
    settings_module.write_text("from tests.settings import *  # noqa: F403\n", "utf-8")
    server = start_server(
        reload=True, settings="reload_settings", env={"PYTHONPATH": f"{REPO}:{tmp_path}"}
    )
    assert server.get("/hello").body == b"Hello, World!", server.log()
    assert server.notify is not None
    notify = server.notify
    # Touch the settings module until the reloader notices and a new child reports READY=1.
    deadline = time.monotonic() + START_TIMEOUT_S
    step = 0
    while len(_indices(notify.messages, "READY")) < 2 and time.monotonic() < deadline:
        step += 1
        stamp = time.time() + step
        os.utime(settings_module, (stamp, stamp))
        _wait_for(notify, _has("READY", 2), 1.5)
    assert len(_indices(notify.messages, "READY")) >= 2, server.log()
    assert server.get("/hello").body == b"Hello, World!", server.log()
    assert "not a listening" not in server.log()


@pytest.mark.parametrize(
    ("environ", "is_child", "expected"),
    [
        pytest.param(
            {"LISTEN_PID": "{pid}", "LISTEN_FDS": "0"},
            False,
            {
                "LISTEN_PID": "{pid}",
                "LISTEN_FDS": "0",
                "DJANGO_WSGISERVE_LISTEN_PARENT_PID": "{pid}",
            },
            id="parent-marks-its-fds",
        ),
        pytest.param(
            {"LISTEN_PID": "1", "LISTEN_FDS": "1"},
            False,
            {"LISTEN_PID": "1", "LISTEN_FDS": "1"},
            id="parent-fds-for-someone-else",
        ),
        pytest.param(
            {
                "LISTEN_PID": "{ppid}",
                "LISTEN_FDS": "1",
                "DJANGO_WSGISERVE_LISTEN_PARENT_PID": "{ppid}",
            },
            True,
            {"LISTEN_PID": "{pid}", "LISTEN_FDS": "1"},
            id="child-claims-them",
        ),
        pytest.param(
            {"LISTEN_PID": "1", "LISTEN_FDS": "1", "DJANGO_WSGISERVE_LISTEN_PARENT_PID": "1"},
            True,
            {"LISTEN_PID": "1", "LISTEN_FDS": "1"},
            id="child-of-another-parent",
        ),
    ],
)
def test_share_with_reloader_child(
    environ: dict[str, str], is_child: bool, expected: dict[str, str]
) -> None:
    ids = {"{pid}": str(os.getpid()), "{ppid}": str(os.getppid())}
    environ = {key: ids.get(value, value) for key, value in environ.items()}
    sockets.share_with_reloader_child(environ, is_child=is_child)
    assert environ == {key: ids.get(value, value) for key, value in expected.items()}
