"""A network namespace of its own for a server, as a container has: run and reach it.

As a program (``python tests/netns.py PROGRAM-ARGS...``) it unshares the network namespace,
brings its loopback interface up and execs Python with PROGRAM-ARGS; exec keeps the pid, so
``/proc/<pid>/ns/net`` names the new namespace. There the server may bind the fixed ports a
Dockerfile or a Kubernetes manifest declares (``0.0.0.0:8000``) without meeting any other
process of this machine, and nothing outside can reach it. ``entered(pid)`` runs a block of
the test inside that namespace (sockets created there stay there). Both need CAP_SYS_ADMIN
(root); ``available()`` says whether this machine allows it.

An abstract unix socket (tests/live.py's ``NOTIFY_SOCKET``) belongs to a network namespace
too: a server in here cannot send ``READY=1`` to the test, whose readiness signal is the
readiness probe instead, as for a kubelet.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["SHIM", "available", "entered", "wait_for_own_namespace"]

SHIM = Path(__file__).resolve()
_CLONE_NEWNET = 0x40000000  # <sched.h>
_SIOCGIFFLAGS = 0x8913  # <linux/sockios.h>
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1  # <net/if.h>
_IFREQ = "16sh22x"  # struct ifreq on Linux: the name, then a 24-byte union (flags first)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack(_IFREQ, b"lo", 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))


def available() -> str | None:
    """None when a new network namespace can be made here, else why not."""
    result = subprocess.run(
        [sys.executable, str(SHIM), "-c", "pass"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return None if result.returncode == 0 else (result.stderr.strip() or "failed")[-300:]


def _namespace_inode(pid: int | str) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def wait_for_own_namespace(pid: int, timeout_s: float = 30.0) -> bool:
    """True once ``pid`` (started through this shim) has left the test's network namespace;
    False if it exits first or ``timeout_s`` passes. The unshare takes the shim milliseconds."""
    own = _namespace_inode("thread-self")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if _namespace_inode(pid) != own:
                return True
        except FileNotFoundError:
            return False
        time.sleep(0.01)
    return False


@contextlib.contextmanager
def entered(pid: int) -> Iterator[None]:
    """Run the block in ``pid``'s network namespace (this thread only), then come back."""
    libc = _libc()
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            _check(libc.setns(target, _CLONE_NEWNET), f"setns into pid {pid}'s namespace")
        finally:
            os.close(target)
        try:
            yield
        finally:
            _check(libc.setns(own, _CLONE_NEWNET), "setns back")
    finally:
        os.close(own)


def main(argv: list[str]) -> None:
    _check(_libc().unshare(_CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    _loopback_up()
    os.execv(sys.executable, [sys.executable, *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
