"""Real-server test support: start ``manage.py serve`` as systemd would, talk raw HTTP to it.

``LiveServer.start()`` binds the listening socket itself (port 0, or a unix socket), then runs
``tests/exec_shim.py`` in a new session: the shim moves the socket to fd 3, sets ``LISTEN_FDS``
and ``LISTEN_PID`` to its own pid and execs the server, which keeps the pid, exactly as under
systemd socket activation. Each server gets a private ``XDG_RUNTIME_DIR``, where its automatic
control socket goes (``control_socket``), and ``servectl()`` runs ``manage.py servectl`` with
the server's environment. There is no free-port race and no connect-polling: readiness is the
``READY=1`` datagram on a notify socket the test owns. Output goes to a log file, never to an
unread pipe. ``stop()`` sends SIGTERM to the process group, escalates to SIGKILL, and returns
the exit code.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
SHIM = Path(__file__).resolve().parent / "exec_shim.py"
READY_TIMEOUT_S = 30.0


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    http_version: str = "HTTP/1.1"

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def header_list(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


class NotifyListener:
    """A fake ``NOTIFY_SOCKET`` (abstract namespace) that collects sd_notify messages."""

    def __init__(self) -> None:
        self.name = f"@wsgiserve-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.messages: list[str] = []

    def wait_for(self, text: str, timeout: float) -> bool:
        """Collect datagrams until one contains ``text``; False on timeout."""
        return self.wait_until(lambda messages: any(text in m for m in messages), timeout)

    def wait_until(self, predicate: Callable[[list[str]], bool], timeout: float) -> bool:
        """Collect datagrams until ``predicate(messages)`` holds; False on timeout."""
        end = time.monotonic() + timeout
        while not predicate(self.messages):
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([self.sock], [], [], remaining)
            if readable:
                self.messages.append(self.sock.recv(65536).decode("utf-8", "replace"))
        return True

    def close(self) -> None:
        self.sock.close()


@dataclass
class LiveServer:
    """One real ``serve`` process; see the module docstring."""

    log_path: Path
    family: str = "tcp"  # "tcp", "tcp6" or "unix"
    settings: str = "tests.settings"
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    manage: list[str] = field(default_factory=lambda: ["-m", "django"])
    reload: bool = False  # --reload (Django's autoreloader) instead of --noreload
    process: subprocess.Popen[bytes] | None = None
    address: tuple[str, int] | str = ""
    notify: NotifyListener | None = None
    wait_ready: bool = True  # False: start() returns at once (servers meant to fail at boot)
    # True: no LISTEN_FDS, the server binds its BIND itself (set ``address`` afterwards).
    binds_itself: bool = False
    # LISTEN_FDNAMES for the socket passed (systemd's FileDescriptorName=: "uwsgi", "fastcgi").
    fd_name: str = ""
    _tmpdir: str = ""
    _runtime_dir: str = ""

    def start(self) -> LiveServer:
        listener = None if self.binds_itself else self._bind()
        self.notify = NotifyListener()
        # The automatic control socket goes in XDG_RUNTIME_DIR: one per server, so that
        # servers of the same project started at once do not meet there.
        self._runtime_dir = tempfile.mkdtemp(prefix="wsgiserve-run-", dir="/tmp")
        env = {**self._environ(), "NOTIFY_SOCKET": self.notify.name}
        for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            env.pop(name, None)
        if self.fd_name and not self.binds_itself:
            env["LISTEN_FDNAMES"] = self.fd_name  # the shim passes it on untouched
        command = [sys.executable, *self.manage, "serve"]
        passed: tuple[int, ...] = ()
        if listener is not None:  # exec_shim puts it at fd 3 as LISTEN_FDS=1
            passed = (listener.fileno(),)
            command[1:1] = [str(SHIM), str(listener.fileno())]
        command += ["--reload" if self.reload else "--noreload", *self.args]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=passed,
                start_new_session=True,
            )
        if listener is not None:
            listener.close()
        if self.wait_ready and not self.notify.wait_for("READY=1", READY_TIMEOUT_S):
            self.stop()
            raise AssertionError(f"server did not send READY=1; log:\n{self.log()}")
        return self

    def _environ(self) -> dict[str, str]:
        """The server's environment (and servectl's), NOTIFY_SOCKET and LISTEN_* aside."""
        environ = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": self.settings,
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "XDG_RUNTIME_DIR": self._runtime_dir,
            **self.env,
        }
        environ.pop("RUNTIME_DIRECTORY", None)  # not under systemd here
        return environ

    @property
    def control_socket(self) -> Path:
        """Where the master puts its control socket by default (CONTROL_SOCKET automatic)."""
        project = self.settings.split(".")[0]
        return Path(self._runtime_dir) / "django-wsgiserve" / f"{project}.sock"

    def servectl(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``manage.py servectl ARGS`` beside this server; the CompletedProcess (text)."""
        return subprocess.run(
            [sys.executable, *self.manage, "servectl", *args],
            cwd=self.cwd,
            env={**self._environ(), **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _bind(self) -> socket.socket:
        if self.family == "unix":
            self._tmpdir = tempfile.mkdtemp(prefix="wsgiserve-", dir="/tmp")
            path = os.path.join(self._tmpdir, "s.sock")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            self.address = path
        else:
            family = socket.AF_INET6 if self.family == "tcp6" else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::1" if self.family == "tcp6" else "127.0.0.1", 0))
            self.address = sock.getsockname()[:2]
        sock.listen(1024)
        return sock

    def connect(self, timeout: float = 10.0, *, receive_buffer: int = 0) -> socket.socket:
        if isinstance(self.address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        if receive_buffer:
            # Before connect(), so that the TCP window is negotiated for it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.connect(self.address)
        return sock

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def send_signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM the process group, SIGKILL it after ``timeout``; return the exit code."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        # Whatever the server left behind in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if self.notify is not None:
            self.notify.close()
        if self._tmpdir:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._tmpdir, "s.sock"))
            with contextlib.suppress(OSError):
                os.rmdir(self._tmpdir)
        if self._runtime_dir:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
        return process.returncode

    # -- raw HTTP helpers ------------------------------------------------------------------

    def request(self, raw: bytes, *, timeout: float = 10.0) -> Response:
        """Send ``raw`` on a new connection and read one response."""
        with self.connect(timeout) as sock:
            sock.sendall(raw)
            return read_response(sock)

    def get(self, path: str, headers: str = "") -> Response:
        return self.request(
            f"GET {path} HTTP/1.1\r\nHost: test\r\n{headers}Connection: close\r\n\r\n".encode()
        )


class ResponseReader:
    """Reads HTTP/1.1 responses from a socket, keeping leftover bytes for the next one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()  # grows in place: reading a large body stays linear

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 20)
        self.buffer += data
        return bool(data)

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before {marker!r}; got {self.buffer[:200]!r}")
        end = self.buffer.index(marker)
        head = bytes(self.buffer[:end])
        del self.buffer[: end + len(marker)]
        return head

    def _read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError(f"closed after {len(self.buffer)} of {size} body bytes")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read(self, *, method: str = "GET") -> Response:
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        status_line, *lines = head.split("\r\n")
        match = re.fullmatch(r"(HTTP/1\.[01]) (\d{3}) ?(.*)", status_line)
        assert match, f"bad status line {status_line!r}"
        headers = [tuple(line.split(": ", 1)) for line in lines]
        response = Response(
            status=int(match.group(2)),
            reason=match.group(3),
            headers=headers,  # type: ignore[arg-type]
            body=b"",
            http_version=match.group(1),
        )
        response.body = self._read_body(response, method)
        return response

    def _read_body(self, response: Response, method: str) -> bytes:
        if method == "HEAD" or response.status in (204, 304) or response.status < 200:
            return b""
        if (response.header("transfer-encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._read_until(b"\r\n")
                    return b"".join(chunks)
                chunks.append(self._read_exactly(size))
                assert self._read_exactly(2) == b"\r\n"
        length = response.header("content-length")
        if length is not None:
            return self._read_exactly(int(length))
        while self._fill():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def read_response(sock: socket.socket, *, method: str = "GET") -> Response:
    return ResponseReader(sock).read(method=method)


def is_closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True when the peer closes (EOF or reset) within ``timeout`` and sends nothing else."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def stop_all(servers: Sequence[LiveServer]) -> None:
    """Stop every server of a test; each must have exited 0 (else: the end of its log)."""
    codes = [(server.stop(), server) for server in servers]
    failures = [f"exit {code}:\n{server.log()[-3000:]}" for code, server in codes if code != 0]
    assert not failures, "\n".join(failures)


# -- polling and process helpers for real-server tests -------------------------------------


def bound_address(server: LiveServer) -> tuple[str, int]:
    """The port a server that bound ``127.0.0.1:0`` itself listens on (from its READY status).

    Tests that stop the whole server under load bind this way: with socket activation the
    listening socket belongs to systemd, which here (the test) holds no copy of it, so the
    kernel would reset what waits in its backlog when the server closes its own."""
    assert server.notify is not None
    status = next(m for m in server.notify.messages if "listening at" in m)
    port = re.search(r"http://127\.0\.0\.1:(\d+)", status)
    assert port, status
    return ("127.0.0.1", int(port.group(1)))


def workers_of(server: LiveServer) -> set[int]:
    """The pids of the master's children (its workers, and a reload's check child)."""
    try:
        text = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text()
    except FileNotFoundError:
        return set()
    return {int(pid) for pid in text.split()}


def wait_until(predicate: Callable[[], object], timeout: float = 15.0) -> bool:
    """Poll ``predicate`` every 20 ms until it holds; False after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def count_messages(server: LiveServer, text: str) -> int:
    """How many sd_notify datagrams so far contain ``text`` (reading what has arrived)."""
    assert server.notify is not None
    server.notify.wait_for("\0never", 0.01)
    return sum(text in message for message in server.notify.messages)
