"""Child processes: each in its own session, every wait bounded, every stop escalating.

A child is started with ``start_new_session=True`` so that it leads its own process group;
stopping it signals the whole group (a prefork master and its workers together): SIGTERM,
up to 10 s of grace, then SIGKILL. Every child ever started is tracked so that
``stop_all()`` can sweep up on an early exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BoundedResult",
    "ChildProcess",
    "child_env",
    "find_free_port",
    "run_bounded",
    "session_cpu_s",
    "stop_all",
    "wait_until_listening",
]

# Variables that would change what a server does or how fast it runs (CI sets PYTHONDEVMODE).
_STRIPPED_ENV = frozenset(
    {
        "PYTHONDEVMODE",
        "PYTHONWARNINGS",
        "PYTHONTRACEMALLOC",
        "PYTHONASYNCIODEBUG",
        "PYTHONMALLOC",
        "PYTHONFAULTHANDLER",
        "PYTHONHOME",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "COVERAGE_PROCESS_START",
        "DJANGO_SETTINGS_MODULE",
    }
)
_GRACE_S = 10.0
_POLL_S = 0.05


def child_env(**extra: str) -> dict[str, str]:
    """The harness's environment minus debugging/coverage/config variables, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in _STRIPPED_ENV and not name.startswith("WSGISERVE_")
    }
    env.update(extra)
    return env


def find_free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (callers retry if a server loses the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _live_group_members(pgid: int) -> list[int]:
    """PIDs in process group ``pgid`` that are not zombies (Linux /proc; killpg(0) elsewhere)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces, so split after ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


class ChildProcess:
    """A child process leading its own process group, output appended to ``log_path``."""

    _started: set[ChildProcess] = set()

    def __init__(self, argv: list[str], *, cwd: Path, env: dict[str, str], log_path: Path):
        self.argv = argv
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            log.write(("$ " + " ".join(argv) + "\n").encode())
            log.flush()
            self.popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pgid = self.popen.pid
        ChildProcess._started.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_s: float = _GRACE_S) -> int | None:
        """SIGTERM the group, wait up to ``grace_s``, then SIGKILL; returns the exit code."""
        self._signal_group(signal.SIGTERM)
        if not self._wait_group(grace_s):
            self._signal_group(signal.SIGKILL)
            self._wait_group(5.0)
        ChildProcess._started.discard(self)
        return self.popen.returncode

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signum)

    def _wait_group(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.popen.poll()
            if self.popen.returncode is not None and not _live_group_members(self.pgid):
                return True
            time.sleep(_POLL_S)
        return False


def stop_all() -> None:
    """Stop every child still running (used in the harness's outermost ``finally``)."""
    for child in list(ChildProcess._started):
        child.stop()


def wait_until_listening(child: ChildProcess, host: str, port: int, timeout_s: float) -> str | None:
    """Poll-connect until the port accepts; returns an error message, or None when ready."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.is_running():
            return f"exited with code {child.popen.returncode} before listening"
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return None
        except OSError:
            time.sleep(_POLL_S)
    return f"not listening after {timeout_s:.0f} s"


@dataclass(frozen=True, slots=True)
class BoundedResult:
    """Outcome of ``run_bounded``: exit code (None on timeout) and combined output."""

    returncode: int | None
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_bounded(
    argv: list[str],
    *,
    timeout_s: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> BoundedResult:
    """Run a command to completion in its own process group; kill the group on timeout."""
    try:
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return BoundedResult(None, f"cannot run {argv[0]}: {exc}")
    try:
        output, _ = popen.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        output, _ = popen.communicate()
        text = output.decode(errors="replace")
        return BoundedResult(None, f"{text}\n[timed out after {timeout_s:.0f} s]")
    finally:
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
    return BoundedResult(popen.returncode, output.decode(errors="replace"))


_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def session_cpu_s(session: int) -> float:
    """User + system CPU seconds of every live process of ``session`` (/proc)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        # After the command: state, ppid, pgrp, session, ..., utime (12th), stime (13th).
        if int(fields[3]) == session:
            total += int(fields[11]) + int(fields[12])
    return total * _TICK_S
