"""The control socket: its protocol, where it lives, and the client the command uses.

Design note.

* **Protocol.** A unix stream socket served by the master (arbiter/control.py). A request is
  one line holding one JSON object, ``{"command": "status"}``; the master answers each line
  with one line holding one JSON object: ``{"ok": true, ...}`` or ``{"ok": false, "error":
  "..."}``. Commands: ``COMMANDS``. A request line is at most ``MAX_REQUEST_BYTES``; keys
  other than ``command`` are ignored (room for later versions). JSON text is UTF-8 (RFC 8259
  section 8.1); replies are ASCII (non-ASCII characters escaped), so a reply never holds a raw
  newline and one line is one reply.
* **Where the socket lives** when CONTROL_SOCKET is automatic (empty, the default): both the
  master and the command run ``manage.py`` of the same project, so the path derives from the
  project's name (the settings module's top package, as the systemd unit's name does) and
  from places both can see, best first (``automatic_paths``):

  1. ``$RUNTIME_DIRECTORY/control.sock``: systemd sets it for a unit with ``RuntimeDirectory=``
     (the generated unit has ``RuntimeDirectory=<name>``, so it is ``/run/<name>``);
  2. ``/run/<name>/control.sock``, when that directory exists: what the command finds when it
     is run from a shell beside that unit;
  3. ``$XDG_RUNTIME_DIR/django-wsgiserve/<name>.sock``: a login session's private runtime
     directory (not aged by systemd-tmpfiles, unlike /tmp);
  4. ``/tmp/django-wsgiserve-<uid>/<name>.sock``, in a directory of mode 0700 that must be
     owned by that uid (anyone can create names in /tmp).

  The master takes the first it can use (``prepare_directory``); the command connects to the
  first that exists as a socket, looking under its own uid and USER's. Not /tmp under the
  generated unit: ``PrivateTmp=yes`` hides the service's /tmp from every other process.
  gunicorn's default, ``gunicorn.ctl`` in the working directory, landed on persistent and
  shared volumes, where a stale file from another container broke the next start.
* **Permissions.** The socket is bound under umask 0o177 (mode 0600) and owned by the
  server's user; the master also checks each peer's SO_PEERCRED (arbiter/control.py).

Imports only the stdlib and ``errors``; never Django.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import posixpath
import pwd
import socket
import stat
import time
from typing import TYPE_CHECKING, Any

from django_wsgiserve.errors import ControlRequestError, ControlSocketError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "AUTOMATIC",
    "COMMANDS",
    "MAX_REPLY_BYTES",
    "MAX_REQUEST_BYTES",
    "OFF",
    "automatic_paths",
    "check_socket_path",
    "encode_reply",
    "encode_request",
    "error_reply",
    "find_socket",
    "parse_reply",
    "parse_request",
    "prepare_directory",
    "project_name",
    "send_command",
]

AUTOMATIC = ""  # CONTROL_SOCKET's default: the path is chosen as the module notes say
OFF = "off"  # CONTROL_SOCKET "off": no control socket
COMMANDS = ("status", "reload", "add-worker", "remove-worker", "stop")
# A request is a few dozen bytes; anything near this is not a client of ours.
MAX_REQUEST_BYTES = 4096
# A status reply holds a line per running request: THREADS x workers x ~300 bytes.
MAX_REPLY_BYTES = 64 << 20
_SOCKET_NAME = "control.sock"
_SHARED_DIRECTORY = "django-wsgiserve"
# sockaddr_un.sun_path is 108 bytes on Linux, with its terminating NUL.
_MAX_PATH_BYTES = 107
_CONNECT_RETRY_S = 0.02


# -- the protocol ----------------------------------------------------------------------------


def encode_request(command: str) -> bytes:
    """One request line."""
    return json.dumps({"command": command}).encode("ascii") + b"\n"


def parse_request(line: bytes) -> str:
    """The command of one request line (without its newline); raises ControlRequestError."""
    if len(line) > MAX_REQUEST_BYTES:
        raise ControlRequestError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    try:
        request = json.loads(line.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ControlRequestError(f"not a JSON object: {exc}") from exc
    except RecursionError as exc:  # [[[[... a few thousand deep
        raise ControlRequestError("not a JSON object: nested too deeply") from exc
    if not isinstance(request, dict):
        raise ControlRequestError(f"not a JSON object: {type(request).__name__}")
    command = request.get("command")
    if not isinstance(command, str):
        raise ControlRequestError('no "command": expected {"command": "status"}')
    if command not in COMMANDS:
        raise ControlRequestError(
            f"unknown command {command[:40]!r}; commands: {', '.join(COMMANDS)}"
        )
    return command


def encode_reply(document: Mapping[str, Any]) -> bytes:
    """One successful reply line: ``{"ok": true, ...document}``."""
    return _line({"ok": True, **document})


def error_reply(message: str, *, code: str = "failed") -> bytes:
    """One error reply line; ``code``: ``"failed"`` (the command could not be done),
    ``"bad-request"`` or ``"refused"`` (the peer is not allowed)."""
    return _line({"ok": False, "error": message, "code": code})


def _line(document: Mapping[str, Any]) -> bytes:
    # ensure_ascii: no raw newline or other control character can end up inside the line.
    return json.dumps(document, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


def parse_reply(line: bytes) -> dict[str, Any]:
    """A reply line as a dict with ``ok``; raises ValueError if it is not one."""
    reply = json.loads(line.decode("utf-8"))
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ValueError(f"not a reply: {line[:200]!r}")
    return reply


# -- where the socket lives ------------------------------------------------------------------


def project_name(settings_module: str | None) -> str:
    """The name paths derive from: the settings module's top package (``mysite.settings``
    -> ``mysite``), the systemd unit's default name too; ``django`` without one."""
    return (settings_module or "").split(".")[0] or "django"


def automatic_paths(name: str, *, environ: Mapping[str, str], uid: int) -> list[str]:
    """The automatic control socket paths of project ``name`` for ``uid``, best first (see the
    module notes); those too long for a unix socket are left out."""
    paths = []
    runtime = [d for d in environ.get("RUNTIME_DIRECTORY", "").split(":") if d]
    if runtime:
        # Several RuntimeDirectory= entries: the one named after the project, else the first.
        named = [d for d in runtime if posixpath.basename(d.rstrip("/")) == name]
        paths.append(posixpath.join((named or runtime)[0], _SOCKET_NAME))
    paths.append(posixpath.join("/run", name, _SOCKET_NAME))
    session = environ.get("XDG_RUNTIME_DIR", "")
    if posixpath.isabs(session):
        paths.append(posixpath.join(session, _SHARED_DIRECTORY, f"{name}.sock"))
    paths.append(posixpath.join("/tmp", f"{_SHARED_DIRECTORY}-{uid}", f"{name}.sock"))
    return [path for path in dict.fromkeys(paths) if len(os.fsencode(path)) <= _MAX_PATH_BYTES]


def check_socket_path(value: str) -> None:
    """CONTROL_SOCKET's own check: automatic, ``off``, or an absolute path a unix socket can
    have; raises ValueError."""
    if value in (AUTOMATIC, OFF):
        return
    if not posixpath.isabs(value):
        # The command, run from another directory, must find what the master made.
        raise ValueError(f"must be an absolute path, 'off' or empty (automatic), got {value!r}")
    if len(os.fsencode(value)) > _MAX_PATH_BYTES:
        raise ValueError(f"longer than the {_MAX_PATH_BYTES} bytes a unix socket path may have")


def prepare_directory(path: str, *, environ: Mapping[str, str], uid: int) -> str:
    """Make ``path`` (an automatic path) usable by the master: its directory must exist and
    be writable, and a directory of its own (under XDG_RUNTIME_DIR or /tmp) is created with
    mode 0700 and must be ours. Returns why it cannot be used, or "" (master)."""
    directory = posixpath.dirname(path)
    if posixpath.basename(directory) not in (_SHARED_DIRECTORY, f"{_SHARED_DIRECTORY}-{uid}"):
        # $RUNTIME_DIRECTORY or /run/<name>: systemd (or the administrator) made it.
        if not os.path.isdir(directory):
            return f"{directory} does not exist"
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"{directory} is not writable"
        return ""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass  # checked below
    except OSError as exc:
        return f"cannot create {directory}: {exc.strerror}"
    try:
        info = os.lstat(directory)
    except OSError as exc:
        return f"{directory}: {exc.strerror}"
    # Anyone may have made this name in /tmp first: only our own private directory will do.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
        return f"{directory} is not a directory of mode 0700 owned by uid {uid}"
    return ""


def find_socket(paths: Iterable[str]) -> str | None:
    """The first of ``paths`` that is a socket (the command)."""
    for path in paths:
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                return path
    return None


# -- the client ------------------------------------------------------------------------------


def send_command(path: str, command: str, *, timeout_s: float) -> dict[str, Any]:
    """Send ``command`` to the master at ``path`` and return its reply (``ok`` true or
    false); raises ControlSocketError with a message for the operator."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            _connect(sock, path, time.monotonic() + timeout_s)
            sock.sendall(encode_request(command))
            line = _read_line(sock, path)
        except TimeoutError as exc:
            raise ControlSocketError(
                f"the server did not answer within {timeout_s:g} s", path=path
            ) from exc
        except OSError as exc:
            raise ControlSocketError(_connect_problem(path, exc), path=path) from exc
    try:
        return parse_reply(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ControlSocketError(f"the answer is not a reply: {exc}", path=path) from exc


def _connect(sock: socket.socket, path: str, deadline: float) -> None:
    """Connect, waiting while the master's backlog is full (a unix socket with a timeout
    fails at once with EAGAIN then, where TCP would wait for the handshake)."""
    while True:
        code = sock.connect_ex(path)
        if code == 0:
            return
        if code != errno.EAGAIN:
            raise OSError(code, os.strerror(code))
        if time.monotonic() >= deadline:
            raise TimeoutError
        time.sleep(_CONNECT_RETRY_S)


def _read_line(sock: socket.socket, path: str) -> bytes:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1 << 16)
        if not chunk:
            # The master closes without an answer when it stops (or is re-executed) meanwhile.
            raise ControlSocketError(
                "the server closed the connection without answering", path=path
            )
        data += chunk
        if len(data) > MAX_REPLY_BYTES:
            raise ControlSocketError(
                f"the answer is longer than {MAX_REPLY_BYTES} bytes", path=path
            )
    return bytes(data[:-1])


def _connect_problem(path: str, exc: OSError) -> str:
    """What a failed connect (or exchange) means, in the operator's words."""
    if exc.errno == errno.ENOENT:
        return "no such socket: is the server running?"
    if exc.errno == errno.ECONNREFUSED:
        return "nobody listens there: the server has stopped (the file is left from a crash?)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {_owner_hint(path)}"
    if exc.errno == errno.ENOTSOCK:
        return "not a socket"
    return exc.strerror or str(exc)


def _owner_hint(path: str) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return "run this command as the server's user, or as root"
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = f"uid {info.st_uid}"
    mode = stat.S_IMODE(info.st_mode)
    return f"the socket is {owner}'s (mode {mode:04o}): run this command as {owner} or as root"
