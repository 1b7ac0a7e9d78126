"""Configuration reloads: check a new configuration in a child process, then re-execute the
master in place, handing over its listening sockets and its old workers.

Design note.

* **Check first, in a child.** A process imports Django's settings once, so the running master
  cannot re-read settings.py itself. On SIGHUP it runs its own command line again with
  ``--reload-check`` (``ConfigCheck``). The child imports the settings, resolves and validates
  the configuration, runs the system checks (and, with PRELOAD, imports the application), then
  prints every option as JSON on the last line of its stdout. It runs without the master's
  LISTEN_*, NOTIFY_SOCKET and WATCHDOG_* variables and within ``CHECK_TIMEOUT_S``; the master
  polls its pipes from its loop and reaps it like a worker, so supervision goes on meanwhile. A
  failure changes nothing: the master logs the tail of the child's stderr and keeps serving.
* **Unchanged configuration** (``describe_changes`` finds no difference): the code-only reload.
* **Changed configuration**: everything that can fail is done *before* the point of no return
  (the check, binding new BIND addresses), then the master ``os.execve``s its own command line.
  The pid stays, so systemd's MAINPID, the PIDFILE and the parent/child link with the old
  workers stay valid. The listeners arrive at fds 3.. as LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES
  (``place_listen_fds``: whatever sat at those fds is kept aside and put back if exec fails),
  and ``HANDOVER_VARIABLE`` carries a ``Handover``: the old workers to adopt, the worker
  numbering and count, and which BIND entry each listener is (or that systemd passed them).
* **Signals across exec.** The caller blocks the master's signals before ``execve``; the mask
  survives exec, so a TERM or HUP sent while the new image starts waits, pending, until the new
  master has installed its handlers and unblocks them (``Arbiter.run``). The old workers' heartbeat
  pipes are close-on-exec: the new master supervises adopted workers only for their exit and the
  graceful deadline.

Threads: master's main thread only. Imports only the stdlib, ``config`` and ``systemd``; never
Django.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import OPTIONS, OPTIONS_BY_NAME
from .systemd import SD_LISTEN_FDS_START

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, MutableMapping, Sequence

    from .config import ServerConfig

__all__ = [
    "CHECK_FLAG",
    "CHECK_TIMEOUT_S",
    "HANDOVER_VARIABLE",
    "CheckResult",
    "ConfigCheck",
    "FdPlacement",
    "Handover",
    "check_output",
    "config_snapshot",
    "describe_changes",
    "exec_environ",
    "listen_fd_moves",
    "parse_check_output",
    "place_listen_fds",
    "reexec",
    "take_handover",
]

logger = logging.getLogger(__name__)

CHECK_FLAG = "--reload-check"
# Importing a large project's settings and running its system checks takes a few seconds at
# most; past this the child is killed and the reload fails (the server keeps serving).
CHECK_TIMEOUT_S = 30.0
# Not a WSGISERVE_* name, which would be taken for an unknown option.
HANDOVER_VARIABLE = "DJANGO_WSGISERVE_HANDOVER"
_HANDOVER_VERSION = 1
_FD_NAME = "wsgiserve"
_STDERR_TAIL_LINES = 12
_MAX_OUTPUT_BYTES = 1 << 20
# Meant for the master alone: a checking child must not take systemd's sockets, talk sd_notify
# or adopt anything.
_NOT_FOR_THE_CHECK = frozenset(
    {
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "LISTEN_PIDFDID",
        "NOTIFY_SOCKET",
        "WATCHDOG_PID",
        "WATCHDOG_USEC",
        HANDOVER_VARIABLE,
    }
)


# -- the configuration, as data ------------------------------------------------------------------


def config_snapshot(config: ServerConfig) -> dict[str, Any]:
    """Every option's value as JSON data, keyed by setting name (``{"THREADS": 8, ...}``): equal
    to a snapshot parsed from a child's output."""
    return {o.setting: o.codec.to_json(getattr(config, o.name)) for o in OPTIONS}


def check_output(config: ServerConfig) -> str:
    """The line ``--reload-check`` prints: every option's value and source, as JSON."""
    snapshot = config_snapshot(config)
    options = {
        o.setting: {"value": snapshot[o.setting], "source": config.source_of(o.name)}
        for o in OPTIONS
    }
    return json.dumps({"options": options}, sort_keys=True)


def parse_check_output(stdout: str) -> dict[str, Any]:
    """The snapshot in the last non-empty line of a child's stdout; ValueError if none."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError("it printed nothing")
    try:
        document = json.loads(lines[-1])
        options = document["options"]
        return {str(name): item["value"] for name, item in options.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"its last line is not the configuration: {lines[-1][:200]!r}") from exc


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``["THREADS 4 -> 8", "TIMEOUT 30 -> 60"]``: each option whose value differs, in the
    order of docs/settings.md (options only one side knows, after a package upgrade, last)."""
    names = [o.setting for o in OPTIONS]
    names += sorted((set(old) | set(new)) - set(names))
    missing = object()
    changes = []
    for name in names:
        before, after = old.get(name, missing), new.get(name, missing)
        if before != after or type(before) is not type(after):
            shown = [
                "(none)" if value is missing else _show(name, value) for value in (before, after)
            ]
            changes.append(f"{name} {shown[0]} -> {shown[1]}")
    return changes


def _show(name: str, value: object) -> str:
    declared = OPTIONS_BY_NAME.get(name.lower())
    if declared is not None:
        with contextlib.suppress(ValueError):
            return declared.codec.brief(declared.codec.coerce(value))
    # An option this version does not know (or a value it cannot read): as JSON data.
    return f"{value:g}" if isinstance(value, float) else repr(value)


# -- the checking child --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What a ``ConfigCheck`` found: the new snapshot, or why there is none."""

    options: dict[str, Any] | None
    error: str = ""


class ConfigCheck:
    """One ``--reload-check`` child (master's main thread only); see the module notes.

    The master registers it in its selector (``register``), reports its exit status from its
    reaper (``exited``: nobody else may ``waitpid`` it), kills it past ``deadline`` and reads
    ``result()`` once ``is_finished``. ``close()`` always, last.
    """

    def __init__(
        self,
        command: Sequence[str],
        environ: Mapping[str, str],
        *,
        now: float,
        timeout_s: float = CHECK_TIMEOUT_S,
    ) -> None:
        self.argv = [*command, CHECK_FLAG]
        self.timeout_s = timeout_s
        self.deadline = now + timeout_s
        self.exit_code: int | None = None
        self.is_timed_out = False
        env = {key: value for key, value in environ.items() if key not in _NOT_FOR_THE_CHECK}
        # Raises OSError when the interpreter cannot be run (then there is nothing to clean up).
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self.pid = self._process.pid
        self._output: dict[int, bytearray] = {}
        self._stdout_fd = -1
        self._selector: selectors.BaseSelector | None = None
        for stream in (self._process.stdout, self._process.stderr):
            assert stream is not None
            os.set_blocking(stream.fileno(), False)
            self._output[stream.fileno()] = bytearray()
        assert self._process.stdout is not None
        self._stdout_fd = self._process.stdout.fileno()

    @property
    def is_finished(self) -> bool:
        return self.exit_code is not None

    def register(self, selector: selectors.BaseSelector) -> None:
        """Read the child's output from the master's loop."""
        self._selector = selector
        for fd in self._output:
            selector.register(fd, selectors.EVENT_READ, lambda fd=fd: self._read(fd))

    def exited(self, code: int) -> None:
        """The master reaped the child: ``code`` as ``os.waitstatus_to_exitcode`` gives it."""
        self.exit_code = code
        self._process.returncode = code  # reaped by the master: Popen must not wait for it

    def kill(self, *, timed_out: bool = False) -> None:
        self.is_timed_out = self.is_timed_out or timed_out
        if self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def result(self) -> CheckResult:
        """The outcome, once ``is_finished``."""
        for fd in list(self._output):
            self._read(fd)
        stdout = bytes(self._output.get(self._stdout_fd, b"")).decode("utf-8", "replace")
        stderr = b"".join(bytes(data) for fd, data in self._output.items() if fd != self._stdout_fd)
        tail = _tail(stderr.decode("utf-8", "replace"))
        command = " ".join(self.argv)
        if self.is_timed_out:
            return CheckResult(None, f"{command} did not finish within {self.timeout_s:g} s")
        if self.exit_code != 0:
            error = f"{command} exited with code {self.exit_code}"
            return CheckResult(None, f"{error}; its stderr ends with:\n{tail}" if tail else error)
        try:
            return CheckResult(parse_check_output(stdout))
        except ValueError as exc:
            return CheckResult(None, f"{command} printed no configuration ({exc})")

    def close(self) -> None:
        """Stop reading; kill and reap the child if the master has not reaped it."""
        for fd in list(self._output):
            self._forget(fd)
        for stream in (self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()
        if self.exit_code is None:
            self.kill()
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(self.pid, 0)
                self.exited(os.waitstatus_to_exitcode(status))
            if self._process.returncode is None:  # reaped by someone else after all
                self._process.returncode = -signal.SIGKILL

    def _read(self, fd: int) -> None:
        buffer = self._output.get(fd)
        if buffer is None or fd < 0:
            return
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._unregister(fd)
                return
            buffer += data
            if len(buffer) > _MAX_OUTPUT_BYTES:  # keep the end: errors come last
                del buffer[: len(buffer) - _MAX_OUTPUT_BYTES]

    def _unregister(self, fd: int) -> None:
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)

    def _forget(self, fd: int) -> None:
        self._unregister(fd)
        self._output.pop(fd, None)


def _tail(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(f"    {line}" for line in lines[-_STDERR_TAIL_LINES:])


# -- the handover across exec --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Handover:
    """What a re-executing master tells its new image (``HANDOVER_VARIABLE``, JSON)."""

    pid: int  # the master's: anyone else who inherits the variable ignores it
    workers: tuple[tuple[int, int], ...]  # (pid, number) of each old worker to adopt
    next_number: int
    target: int | None = None  # the worker count to keep (after TTIN/TTOU) when WORKERS is as was
    bind: tuple[str, ...] | None = None  # each listener's BIND entry; None: systemd passed them
    unlink: tuple[str, ...] = ()  # unix socket paths no longer in BIND: removed once old workers go
    changes: tuple[str, ...] = ()  # describe_changes(), for the log
    # The previous image's control socket: removed by the new one if it listens elsewhere.
    control_socket: str = ""

    def encode(self) -> str:
        document = {
            "version": _HANDOVER_VERSION,
            "pid": self.pid,
            "workers": [list(item) for item in self.workers],
            "next_number": self.next_number,
            "target": self.target,
            "bind": None if self.bind is None else _BIND.to_json(self.bind),
            "unlink": list(self.unlink),
            "changes": list(self.changes),
            "control_socket": self.control_socket,
        }
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> Handover:
        """Raises ValueError for anything but what ``encode`` wrote."""
        try:
            document = json.loads(text)
            if document["version"] != _HANDOVER_VERSION:
                raise ValueError(f"version {document['version']!r}")
            bind = document["bind"]
            target = document["target"]
            return cls(
                pid=int(document["pid"]),
                workers=tuple((int(pid), int(number)) for pid, number in document["workers"]),
                next_number=int(document["next_number"]),
                target=None if target is None else int(target),
                bind=None if bind is None else _bind_entries(bind),
                unlink=tuple(str(path) for path in document["unlink"]),
                changes=tuple(str(change) for change in document["changes"]),
                control_socket=str(document.get("control_socket", "")),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"not a handover: {exc}") from exc


_BIND = OPTIONS_BY_NAME["bind"].codec


def _bind_entries(data: object) -> tuple[str, ...]:
    entries = _BIND.coerce(data)  # ValueError unless a list of strings
    assert isinstance(entries, tuple)
    return entries


def take_handover(environ: MutableMapping[str, str]) -> Handover | None:
    """Remove ``HANDOVER_VARIABLE`` from ``environ``; the Handover if it is meant for us."""
    text = environ.pop(HANDOVER_VARIABLE, None)
    if text is None:
        return None
    try:
        handover = Handover.decode(text)
    except ValueError as exc:
        logger.warning("Ignoring %s: %s", HANDOVER_VARIABLE, exc)
        return None
    return handover if handover.pid == os.getpid() else None


def exec_environ(
    environ: Mapping[str, str],
    *,
    listener_count: int,
    handover: Handover,
    fd_names: Sequence[str] = (),
) -> dict[str, str]:
    """The environment of the new image: ``environ`` plus the sd_listen_fds(3) variables for the
    listeners at fds 3.. and the handover. ``fd_names`` are the listeners' protocol names
    (``protocols.py``: ``uwsgi``, ``fastcgi``), which systemd's sockets keep across the
    re-execution this way; the others are named ``wsgiserve`` (HTTP)."""
    env = {key: value for key, value in environ.items() if key != "LISTEN_PIDFDID"}
    env["LISTEN_PID"] = str(os.getpid())
    env["LISTEN_FDS"] = str(listener_count)
    names = [*fd_names, *[_FD_NAME] * (listener_count - len(fd_names))]
    env["LISTEN_FDNAMES"] = ":".join(names[:listener_count])
    env[HANDOVER_VARIABLE] = handover.encode()
    return env


# -- placing the listeners at fds 3.. ------------------------------------------------------------


def listen_fd_moves(
    fds: Sequence[int], *, start: int = SD_LISTEN_FDS_START
) -> list[tuple[int, int]]:
    """``(fd, target)`` for each listener not already at its target ``start + index``."""
    return [(fd, start + index) for index, fd in enumerate(fds) if fd != start + index]


class FdPlacement:
    """Listeners duplicated onto fds ``start..`` and made inheritable; ``undo()`` restores the
    descriptors that were there (an epoll fd, a log file...) when exec fails."""

    def __init__(self, fds: Sequence[int], *, start: int) -> None:
        self._in_place = [fd for index, fd in enumerate(fds) if fd == start + index]
        # (target, copy of what was there or -1, whether that was inheritable)
        self._saved: list[tuple[int, int, bool]] = []
        floor = start + len(fds)  # copies go above every target, so none is overwritten
        moves = listen_fd_moves(fds, start=start)
        sources = []
        try:
            # Copies first: a listener may sit at another listener's target.
            sources = [(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor), t) for fd, t in moves]
            for source, target in sources:
                self._saved.append(_save(target, floor))
                os.dup2(source, target, inheritable=True)
            for fd in self._in_place:
                os.set_inheritable(fd, True)
        except OSError:
            self.undo()
            raise
        finally:
            for source, _ in sources:
                os.close(source)

    def undo(self) -> None:
        """Put back what the targets held before (idempotent)."""
        while self._saved:
            target, copy, was_inheritable = self._saved.pop()
            if copy < 0:
                with contextlib.suppress(OSError):
                    os.close(target)
                continue
            os.dup2(copy, target, inheritable=was_inheritable)
            os.close(copy)
        for fd in self._in_place:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)
        self._in_place = []


def _save(target: int, floor: int) -> tuple[int, int, bool]:
    try:
        was_inheritable = os.get_inheritable(target)
    except OSError:  # EBADF: nothing there
        return target, -1, False
    return target, fcntl.fcntl(target, fcntl.F_DUPFD_CLOEXEC, floor), was_inheritable


def place_listen_fds(fds: Sequence[int], *, start: int = SD_LISTEN_FDS_START) -> FdPlacement:
    """Put the listeners ``fds`` at ``start, start + 1, ...`` for the next image."""
    return FdPlacement(fds, start=start)


def reexec(
    argv: Sequence[str],
    environ: Mapping[str, str],
    listener_fds: Sequence[int],
    *,
    blocked_signals: Iterable[int],
) -> OSError:
    """Replace this process image by ``argv`` with the listeners at fds 3.. (see the module
    notes). Returns only when exec failed: the error, with fds and signal mask restored."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked_signals)
    _flush_output()
    try:
        placement = place_listen_fds(listener_fds)
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return exc
    try:
        os.execve(argv[0], list(argv), dict(environ))
    except OSError as exc:
        placement.undo()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return exc


def _flush_output() -> None:
    """exec discards buffered output: flush every logging handler and the standard streams."""
    handlers = list(logging.root.handlers)
    for candidate in list(logging.root.manager.loggerDict.values()):
        if isinstance(candidate, logging.Logger):
            handlers.extend(candidate.handlers)
    for handler in set(handlers):
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
