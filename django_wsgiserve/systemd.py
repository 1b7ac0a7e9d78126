"""systemd integration: socket activation (sd_listen_fds) and the notify protocol (sd_notify).

Both are pure functions over an injected ``environ`` mapping, so tests need no systemd:

* ``listen_fds(environ)`` honours ``LISTEN_PID`` (the fds are only ours when it is our pid),
  ``LISTEN_FDS`` and ``LISTEN_FDNAMES``, and removes the variables so that child processes do
  not mistake them for their own (sd_listen_fds(3) with ``unset_environment=1``).
* ``notify(message, environ)`` sends one datagram to ``NOTIFY_SOCKET`` (``@`` means the Linux
  abstract namespace). It never raises: a broken notify socket must not take the server down.

Imports only the stdlib.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import MutableMapping

__all__ = ["SD_LISTEN_FDS_START", "InheritedSocket", "listen_fds", "monotonic_usec", "notify"]

SD_LISTEN_FDS_START = 3
_LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID")


@dataclass(frozen=True, slots=True)
class InheritedSocket:
    """A listening socket handed over by systemd, with its ``FileDescriptorName=``."""

    sock: socket.socket
    name: str


def listen_fds(environ: MutableMapping[str, str], *, unset: bool = True) -> list[InheritedSocket]:
    """Return the listening sockets passed by systemd, or an empty list.

    The variables are removed from ``environ`` whenever ``unset`` is true, whether or not they
    were meant for this process, exactly as sd_listen_fds(3) does.
    """
    try:
        pid = int(environ.get("LISTEN_PID", ""))
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        pid, count = -1, 0
    names = environ.get("LISTEN_FDNAMES", "").split(":") if environ.get("LISTEN_FDNAMES") else []
    if unset:
        for variable in _LISTEN_VARIABLES:
            environ.pop(variable, None)
    if pid != os.getpid() or count <= 0:
        return []
    inherited = []
    for index in range(count):
        fd = SD_LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        # socket.socket(fileno=...) detects family and type itself and does not dup the fd.
        sock = socket.socket(fileno=fd)
        name = names[index] if index < len(names) else "unknown"
        inherited.append(InheritedSocket(sock=sock, name=name))
    return inherited


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd wants it in ``MONOTONIC_USEC=``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def notify(message: str, environ: MutableMapping[str, str]) -> bool:
    """Send ``message`` (``KEY=VALUE`` lines) to ``NOTIFY_SOCKET``; return whether it was sent.

    A no-op returning False when ``NOTIFY_SOCKET`` is unset. Never raises.
    """
    address = environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False  # unset, or a scheme (vsock:) we do not speak
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError:
        return False
    return True
