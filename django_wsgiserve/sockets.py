"""Listening sockets: parse ``BIND`` entries, bind them, or take them over from systemd.

Design note:

* ``parse_bind()`` is pure: it turns one ``BIND`` entry into a ``BindAddress`` or raises
  ``ValueError`` with a message meant for the operator; ``config.py`` wraps that message in a
  ``ConfigError`` naming ``BIND`` and the value's source.
* ``bind_listeners()`` binds every address or none: on the first failure the sockets already
  bound are closed and a ``BindError`` (an ``OSError`` carrying the address) is raised;
  ``friendly_bind_error()`` words it the way ``runserver`` does. ``reuse_or_bind_listeners()``
  does the same for a configuration reload, reusing the listeners of addresses kept in BIND.
* ``open_listeners()`` is what a starting server does: take systemd's sockets, or the ones a
  configuration reload handed over (``take_over_listeners()``), or bind BIND; its problems are a
  ``ListenerError`` worded for the operator. ``addrport_to_bind()`` reads runserver's
  ``addrport`` argument (``8000``, ``0:8000``, ``[::1]:8000``) as a BIND entry.
* Every listener returned is non-blocking (the worker's loop accepts from a selector) and
  close-on-exec (Python sockets are non-inheritable by default, PEP 446; systemd's fds are made so
  by ``systemd.listen_fds()``). TCP_NODELAY is set per accepted connection by the loop, because
  inheritance of the option from a listener is not portable.
* A unix socket path is only ever removed when it is a socket nobody answers on (a stale file left
  by a crashed server), and ``close_listeners()`` unlinks only paths this process bound itself,
  never ones handed over by systemd.
* ``refuse_new_connections()`` is for the shutdown of the whole server: the kernel then
  takes no new TCP connection on a listener, while the workers still accept, and answer, what
  waits in its backlog. Closing is not enough: the kernel resets every connection left in a
  backlog when the last copy of its socket closes, and between a worker's last ``accept()``
  and its ``close()`` (a few milliseconds of a busy process) new connections keep arriving.

Imports only the stdlib, ``errors`` and ``systemd``; never Django.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import logging
import os
import re
import resource
import socket
import stat
import struct
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from django_wsgiserve import systemd
from django_wsgiserve.errors import ListenerError
from django_wsgiserve.protocols import (
    ListenerProtocol,
    protocol_of,
    protocol_of_fd_name,
    split_protocol,
    with_protocol,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, MutableMapping, Sequence

__all__ = [
    "DEFAULT_HOST",
    "BindAddress",
    "BindError",
    "addrport_to_bind",
    "bind_listeners",
    "close_listeners",
    "friendly_bind_error",
    "inherited_listeners",
    "listener_url",
    "open_listeners",
    "parse_bind",
    "raise_file_limit",
    "refuse_new_connections",
    "reuse_or_bind_listeners",
    "share_with_reloader_child",
    "take_over_listeners",
]

logger = logging.getLogger(__name__)

# A bare "PORT" listens on loopback only, as runserver does: exposing a server on every
# interface must be asked for explicitly ("0.0.0.0:8000").
DEFAULT_HOST = "127.0.0.1"

_UNIX_PREFIX = "unix:"
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})*")

# runserver's addrport syntax (django/core/management/commands/runserver.py).
_ADDRPORT = re.compile(
    r"""(?:
    (?P<addr>
        (?P<ipv4>\d{1,3}(?:\.\d{1,3}){3}) |         # IPv4 address
        (?P<ipv6>\[[a-fA-F0-9:]+\]) |               # IPv6 address
        (?P<fqdn>[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*) # FQDN
    ):)?(?P<port>\d+)""",
    re.X,
)

# runserver's wording (django/core/management/commands/runserver.py), so habits carry over.
_FRIENDLY_ERRORS = {
    errno.EACCES: "You don't have permission to access that port.",
    errno.EADDRINUSE: "That port is already in use.",
    errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
}


@dataclass(frozen=True, slots=True)
class BindAddress:
    """One parsed ``BIND`` entry: a TCP host and port, or a unix socket path, and the
    protocol its peers speak (``protocols.py``)."""

    family: socket.AddressFamily
    host: str = ""
    port: int = 0
    path: str = ""
    protocol: ListenerProtocol = ListenerProtocol.HTTP

    def __str__(self) -> str:
        prefix = self.protocol.prefix
        if self.family == socket.AF_UNIX:
            return prefix + _UNIX_PREFIX + self.path
        if self.family == socket.AF_INET6:
            return f"{prefix}[{self.host}]:{self.port}"
        return f"{prefix}{self.host}:{self.port}"


class BindError(OSError):
    """Binding or listening on ``address`` failed; ``errno`` and ``strerror`` are the OS's."""

    def __init__(self, address: BindAddress, error_number: int, strerror: str) -> None:
        super().__init__(error_number, strerror)
        self.address = address


def parse_bind(spec: str) -> BindAddress:
    """Parse ``HOST:PORT``, ``[IPv6]:PORT``, ``PORT`` or ``unix:/path/to.sock``, each
    optionally after a protocol prefix, ``uwsgi:`` or ``fastcgi:`` (``protocols.py``).

    A bare port listens on ``127.0.0.1``; host ``0`` means ``0.0.0.0`` (a runserver habit).
    Host names are accepted and bound as IPv4, like runserver without ``--ipv6``.
    """
    protocol, address = split_protocol(spec)
    parsed = _parse_address(address)
    return parsed if protocol is ListenerProtocol.HTTP else replace(parsed, protocol=protocol)


def _parse_address(spec: str) -> BindAddress:
    if spec.startswith(_UNIX_PREFIX):
        path = spec[len(_UNIX_PREFIX) :]
        if not path or "\0" in path:
            raise ValueError(f"{spec!r}: expected unix:/path/to.sock")
        return BindAddress(family=socket.AF_UNIX, path=path)
    if spec.startswith("["):
        host, bracket, port_text = spec[1:].partition("]:")
        if not bracket:
            raise ValueError(f"{spec!r}: expected [IPv6]:PORT")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{spec!r}: {host!r} is not an IPv6 address") from None
        return BindAddress(family=socket.AF_INET6, host=host, port=_parse_port(spec, port_text))
    host, colon, port_text = spec.rpartition(":")
    if not colon:
        return BindAddress(family=socket.AF_INET, host=DEFAULT_HOST, port=_parse_port(spec, spec))
    if ":" in host:
        raise ValueError(f"{spec!r}: write IPv6 addresses in brackets, as in [::1]:8000")
    host = "0.0.0.0" if host == "0" else host
    if not _HOSTNAME.fullmatch(host) or (
        host.replace(".", "").isdigit() and not _is_ipv4_address(host)
    ):
        raise ValueError(f"{spec!r}: {host!r} is not an IPv4 address or host name")
    return BindAddress(family=socket.AF_INET, host=host, port=_parse_port(spec, port_text))


def addrport_to_bind(
    addrport: str, *, default_addr: str, default_addr_ipv6: str, ipv6: bool
) -> str:
    """runserver's ``addrport`` ("8000", "0:8000", "[::1]:8000", or our "unix:/path") as a BIND
    entry; ``ipv6`` is runserver's ``--ipv6``. Raises ValueError with runserver's wording."""
    if addrport.startswith(_UNIX_PREFIX):
        return addrport
    match = _ADDRPORT.fullmatch(addrport)
    if match is None:
        raise ValueError(f'"{addrport}" is not a valid port number or address:port pair.')
    addr, _ipv4, raw_ipv6, fqdn, port = match.groups()
    if not addr:
        addr = default_addr_ipv6 if ipv6 else default_addr
    elif raw_ipv6:
        addr = addr[1:-1]
    elif ipv6 and not fqdn:
        raise ValueError(f'"{addr}" is not a valid IPv6 address.')
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _is_ipv4_address(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _parse_port(spec: str, text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise ValueError(f"{spec!r}: the port must be a number from 0 to 65535")
    return int(text)


def bind_listeners(addresses: Iterable[BindAddress], *, backlog: int) -> list[socket.socket]:
    """Bind and listen on every address; return non-blocking, close-on-exec sockets.

    All or nothing: on failure the sockets bound so far are closed and ``BindError`` is raised.
    """
    listeners: list[socket.socket] = []
    try:
        for address in addresses:
            # A loop, not extend(): the sockets bound before a failure must be closed.
            listeners.append(_bind_one(address, backlog=backlog))  # noqa: PERF401
    except BindError:
        close_listeners(listeners, unlink_unix=True)
        raise
    return listeners


def reuse_or_bind_listeners(
    current: Sequence[tuple[str, socket.socket]], wanted: Sequence[str], *, backlog: int
) -> tuple[list[socket.socket], list[socket.socket]]:
    """The listeners for the ``wanted`` BIND entries, in their order, and those bound now.

    ``current`` pairs each open listener with the BIND entry it was bound for; one bound for
    the same address (as parsed: ``"8000"`` is ``"127.0.0.1:8000"``) is reused, the other
    addresses are bound (all or nothing: ``BindError``). Used by a configuration reload, which
    must know every address can be listened on before it re-executes the master.
    """
    addresses = [parse_bind(spec) for spec in wanted]
    # Keyed without the protocol: a listener whose protocol changed is reused too (the
    # re-executed master marks it again from its BIND entry).
    reusable = {_without_protocol(parse_bind(spec)): sock for spec, sock in current}
    fresh = bind_listeners(
        [a for a in addresses if _without_protocol(a) not in reusable], backlog=backlog
    )
    pending = iter(fresh)
    return [reusable.get(_without_protocol(a)) or next(pending) for a in addresses], fresh


def _without_protocol(address: BindAddress) -> BindAddress:
    return replace(address, protocol=ListenerProtocol.HTTP)


def _bind_one(address: BindAddress, *, backlog: int) -> socket.socket:
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        if address.family == socket.AF_UNIX:
            _remove_stale_unix_socket(address)
            sockaddr: str | tuple[str, int] = address.path
        else:
            # SO_REUSEADDR: restart at once although connections of the previous server are
            # still in TIME_WAIT (every server since Apache does this; it does not allow two
            # live listeners on one port on Linux, that would be SO_REUSEPORT).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if address.family == socket.AF_INET6:
                # "[::]:8000" means IPv6 only; listening on IPv4 too is a second BIND entry.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sockaddr = (address.host, address.port)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        number = exc.errno if exc.errno is not None else errno.EINVAL
        raise BindError(address, number, exc.strerror or str(exc)) from exc
    logger.debug("Listening at %s", address)
    return with_protocol(sock, address.protocol)


def _remove_stale_unix_socket(address: BindAddress) -> None:
    """Unlink ``address.path`` if it is a socket file left behind with nobody listening."""
    try:
        mode = os.stat(address.path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        return  # not ours to remove: bind() fails with EADDRINUSE and says so
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(address.path)
        except ConnectionRefusedError:
            logger.info("Removing stale unix socket %s", address.path)
            os.unlink(address.path)
            return
        except OSError:
            return  # e.g. EACCES: let bind() report the real problem
    raise BindError(address, errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))


# Linux: a classic BPF socket filter of one instruction, BPF_RET|BPF_K with k = 0: "accept no
# packet". On a listening TCP socket it drops every SYN (and the last ACK of a handshake), so
# no connection joins the backlog; connections already in it are separate sockets, untouched.
_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_BPF_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)


def refuse_new_connections(listeners: Iterable[socket.socket]) -> None:
    """Let no new TCP connection into the backlog of ``listeners`` (Linux; elsewhere a no-op).

    For the shutdown of the whole server, on sockets this process bound (never on systemd's,
    which outlive it): connections already in the backlog can still be accepted and served,
    a client that connects now has its SYN dropped and is refused once the socket is closed
    (its retry, a second later, meets no listener). Unix sockets need no filter: their path
    is removed first, so no new client can reach them.
    """
    if not sys.platform.startswith("linux"):
        return
    program = ctypes.create_string_buffer(_BPF_DROP_ALL)
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }, native layout.
    fprog = struct.pack("@HP", 1, ctypes.addressof(program))
    for sock in listeners:
        if sock.fileno() != -1 and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # a seccomp filter may forbid it: close as before
                sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


def close_listeners(listeners: Iterable[socket.socket], *, unlink_unix: bool) -> None:
    """Close ``listeners``; with ``unlink_unix``, also remove their unix socket files.

    Pass ``unlink_unix=False`` for sockets inherited from systemd: their path belongs to the
    .socket unit and is reused by the next start.
    """
    for sock in listeners:
        if sock.fileno() == -1:
            continue  # already closed by its user
        path = sock.getsockname() if sock.family == socket.AF_UNIX else None
        sock.close()
        if unlink_unix and isinstance(path, str) and path:
            try:
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.unlink(path)
            except FileNotFoundError:
                pass


def open_listeners(
    environ: MutableMapping[str, str],
    bind: Sequence[str],
    *,
    backlog: int,
    is_bind_default: bool,
    handed_over_bind: Sequence[str] | None = None,
) -> tuple[list[socket.socket], bool]:
    """The listeners a starting server serves on, and whether systemd passed them.

    In order: the sockets a configuration reload handed over (``handed_over_bind``: the BIND
    entries they were bound for, see ``take_over_listeners``); else systemd's (``LISTEN_FDS``,
    which make BIND moot); else ``bind``, bound now. Raises ``ListenerError``.
    """
    try:
        inherited = inherited_listeners(environ)
    except ValueError as exc:
        raise ListenerError(str(exc)) from exc
    if handed_over_bind is not None:
        listeners = take_over_listeners(inherited, handed_over_bind, bind, backlog=backlog)
        return listeners, False
    if inherited:
        if not is_bind_default:
            logger.info("BIND ignored: listening sockets were passed by systemd")
        return inherited, True
    try:
        return bind_listeners([parse_bind(spec) for spec in bind], backlog=backlog), False
    except BindError as exc:
        message = friendly_bind_error(exc)
        raise ListenerError(f"Can't listen at {exc.address}: {message}") from exc


def take_over_listeners(
    listeners: list[socket.socket],
    handed_over_bind: Sequence[str],
    bind: Sequence[str],
    *,
    backlog: int,
) -> list[socket.socket]:
    """The listeners a master bound for ``handed_over_bind`` before it re-executed itself for a
    configuration reload, listening with ``backlog`` (BACKLOG may be what changed)."""
    if len(listeners) != len(handed_over_bind):
        close_listeners(listeners, unlink_unix=False)
        raise ListenerError(
            f"The reload handed over {len(listeners)} listening socket(s) for "
            f"{len(handed_over_bind)} BIND address(es); restart the server."
        )
    for sock in listeners:
        sock.listen(backlog)
    # Each keeps the protocol of its BIND entry (a uwsgi: or fastcgi: prefix).
    listeners = [
        with_protocol(sock, parse_bind(spec).protocol)
        for sock, spec in zip(listeners, handed_over_bind, strict=True)
    ]
    if tuple(bind) != tuple(handed_over_bind):
        logger.warning(
            "BIND changed again while the server reloaded: listening at %s; send SIGHUP "
            "again to apply %s",
            ", ".join(handed_over_bind),
            ", ".join(bind),
        )
    return listeners


def friendly_bind_error(exc: OSError) -> str:
    """runserver's message for the common bind errors, else the OS's ``strerror``."""
    if exc.errno in _FRIENDLY_ERRORS:
        return _FRIENDLY_ERRORS[exc.errno]
    return exc.strerror or str(exc)


def listener_url(sock: socket.socket, *, scheme: str = "http") -> str:
    """Where ``sock`` listens: ``http://127.0.0.1:8000/``, ``https://[::1]:8000/``,
    ``unix:/p``."""
    name = sock.getsockname()
    protocol = protocol_of(sock)
    if protocol is not ListenerProtocol.HTTP:
        scheme = protocol.value
    if sock.family == socket.AF_UNIX:
        if isinstance(name, bytes):  # abstract namespace: b"\0name"
            name = name.decode("utf-8", "backslashreplace")
        path = f"@{name[1:]}" if name.startswith("\0") else name
        return protocol.prefix + _UNIX_PREFIX + path
    if sock.family == socket.AF_INET6:
        return f"{scheme}://[{name[0]}]:{name[1]}/"
    return f"{scheme}://{name[0]}:{name[1]}/"


def inherited_listeners(environ: MutableMapping[str, str]) -> list[socket.socket]:
    """The listening sockets passed by systemd socket activation (``LISTEN_FDS``), non-blocking.

    Removes the ``LISTEN_*`` variables from ``environ`` (see ``systemd.listen_fds``). Raises
    ``ValueError`` when a passed fd is not a listening stream socket (e.g. ``Accept=yes``).
    """
    inherited = systemd.listen_fds(environ)
    for item in inherited:
        sock = item.sock
        if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN
        ):
            fileno = sock.fileno()
            for other in inherited:
                other.sock.close()
            raise ValueError(
                f"fd {fileno} ({item.name}) passed by systemd is not a listening stream "
                "socket: use ListenStream= and Accept=no in the .socket unit"
            )
    for item in inherited:
        item.sock.setblocking(False)
    # FileDescriptorName=uwsgi or fastcgi selects the listener's protocol (protocols.py).
    return [with_protocol(item.sock, protocol_of_fd_name(item.name)) for item in inherited]


def raise_file_limit(*, needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit and log it; return the new soft limit.

    Every connection is a file descriptor and the usual soft limit is 1024, far below
    MAX_CONNECTIONS (10,000 by default); the hard limit is what an unprivileged process may
    raise itself to (nginx worker_rlimit_nofile, systemd's LimitNOFILE= sets both). Warns when
    even the hard limit is below ``needed``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            logger.warning("Could not raise the open file limit to %d: %s", hard, exc)
    limit = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
    logger.info("Open file limit (RLIMIT_NOFILE): %s", limit)
    if soft != resource.RLIM_INFINITY and soft < needed:
        logger.warning(
            "The open file limit (%d) is below the %d descriptors MAX_CONNECTIONS needs: raise "
            "it (ulimit -n, or LimitNOFILE= in the systemd unit) or lower MAX_CONNECTIONS",
            soft,
            needed,
        )
    return soft


# Set by the autoreloader's parent to its own pid: "LISTEN_FDS are for my child". Not a
# WSGISERVE_* name, which would be taken for an unknown option.
_RELOADER_PARENT_VARIABLE = "DJANGO_WSGISERVE_LISTEN_PARENT_PID"


def share_with_reloader_child(environ: MutableMapping[str, str], *, is_child: bool) -> None:
    """Under ``--reload``, let the autoreloader's child take over systemd's listening sockets.

    Django's autoreloader runs the server in a child process with a new pid (and again after
    every code change), so ``LISTEN_PID`` names the parent and ``listen_fds()`` would ignore
    the fds. The parent (``is_child=False``) keeps the fds inheritable and marks the variables
    with its pid; a child whose parent that is rewrites ``LISTEN_PID`` to its own pid before
    ``inherited_listeners()`` runs. The parent never uses the sockets itself.
    """
    if is_child:
        if environ.pop(_RELOADER_PARENT_VARIABLE, None) == str(os.getppid()):
            environ["LISTEN_PID"] = str(os.getpid())
        return
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return
    try:
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return
    for fd in range(systemd.SD_LISTEN_FDS_START, systemd.SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, True)  # the reloader starts its child with close_fds=False
    environ[_RELOADER_PARENT_VARIABLE] = str(os.getpid())
