"""ControlEndpoint: the master's control socket, served by its loop without ever blocking.

Design note. ``manage.py servectl`` asks the master for its workers and every running request,
and asks it to reload, add or remove a worker, or stop (the protocol and the paths are in
``django_wsgiserve/control.py``). Modelled on health.py, the master's other listener:

* **Access.** The socket is bound under umask 0o177 (mode 0600), after the master has switched
  to USER, so the file is the server's user's. Each peer's credentials (SO_PEERCRED) are
  checked too: the server's uid or root, else a ``refused`` error reply and a WARNING. A stale
  file left by a crashed master is removed after a connect test (sockets.py); a live one is
  another server's and is left alone.
* **Never blocking.** The listener and its connections are non-blocking and registered in the
  master's selector. A connection's requests are answered one at a time: the next line is read
  only once the previous reply has been written out (a reply larger than the socket buffer
  leaves through EVENT_WRITE), so what a client makes the master hold stays bounded: a
  partial line of at most ``MAX_REQUEST_BYTES`` and one reply. A client gets
  ``_IDLE_TIMEOUT_S`` for each request line (from its connection or its previous answer: bytes
  trickling in do not extend it) and for each part of a reply it reads; past that ``check()``,
  called once per turn of the loop, drops it. A line too long is answered with an error, then
  the connection is closed. Nothing a client
  sends can raise out of here: a request the handler fails on gets an error reply and the
  traceback goes to the log.
* **The file.** ``check()`` also looks every ``_FILE_CHECK_S`` whether the path still names our
  socket: one removed (systemd-tmpfiles ages files in /tmp, an operator cleans up) is bound
  again. ``close()`` removes the file only while it is ours. A re-executed master (a
  configuration reload) binds it again: exec closes the old descriptor, so the file is stale
  then.
* **Workers** are forked after the socket exists: ``fds()`` lists what a child must close.

Master, main thread only. Never imports Django.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import struct
from typing import TYPE_CHECKING

from django_wsgiserve import control, sockets
from django_wsgiserve.errors import ControlRequestError, ListenerError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["ControlEndpoint", "open_control_endpoint"]

logger = logging.getLogger(__package__)

# A client sends its request at once and reads the reply at once; 10 s of silence is a
# client gone wrong (or a probe left open), not a slow network.
_IDLE_TIMEOUT_S = 10.0
# Commands are rare and short: more clients than this at once are not operators.
_MAX_CLIENTS = 16
# Clients waiting to be accepted: a burst of commands beyond it waits in connect().
_BACKLOG = 64
_FILE_CHECK_S = 5.0
_RECEIVE_BYTES = 65536
_PEER_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid (socket(7))


class _Client:
    __slots__ = ("deadline", "inbox", "is_closing", "outbox", "pid", "sock")

    def __init__(self, sock: socket.socket, pid: int, deadline: float) -> None:
        self.sock = sock
        self.pid = pid
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.deadline = deadline
        self.is_closing = False  # write what is pending, then close


class ControlEndpoint:
    """The master's control socket at ``path``; see the module notes."""

    def __init__(
        self,
        path: str,
        *,
        selector: selectors.BaseSelector,
        clock: Callable[[], float],
        handle: Callable[[str, int], bytes],
    ) -> None:
        """``handle(command, peer_pid)``: the reply line to a valid request (the master's).
        Raises ``sockets.BindError`` when the path cannot be listened at."""
        self.path = path
        self._selector = selector
        self._clock = clock
        self._handle = handle
        self._clients: dict[int, _Client] = {}
        self._listener, self._identity = _bind(path)
        self._next_file_check = clock() + _FILE_CHECK_S
        selector.register(self._listener, selectors.EVENT_READ, self._accept)

    def fds(self) -> list[int]:
        """Descriptors a forked worker must close."""
        return [self._listener.fileno(), *self._clients]

    def check(self, now: float) -> None:
        """Drop silent clients; bind the socket again if its file was removed (once per turn
        of the master's loop)."""
        for fd, client in list(self._clients.items()):
            if now >= client.deadline:
                self._close(fd)
        if now >= self._next_file_check:
            self._next_file_check = now + _FILE_CHECK_S
            current = _identity_of(self.path)
            if current != self._identity:
                self._rebind(current)

    def close(self) -> None:
        """Close every connection and the listener; remove the file while it is ours."""
        for fd in list(self._clients):
            self._close(fd)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._listener)
        self._listener.close()
        if _identity_of(self.path) == self._identity:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    # -- the file --------------------------------------------------------------------------

    def _rebind(self, current: tuple[int, int] | None) -> None:
        try:
            listener, identity = _bind(self.path)
        except OSError as exc:
            # Someone else's socket now, or the directory went: say so once, keep serving.
            logger.warning(
                "Control socket %s was replaced or removed, and cannot be listened at again "
                "(%s): servectl cannot reach this server until it restarts",
                self.path,
                exc.strerror or exc,
            )
            self._identity = current
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._listener)
        self._listener.close()
        self._listener, self._identity = listener, identity
        self._selector.register(listener, selectors.EVENT_READ, self._accept)
        logger.warning("Control socket %s had been removed: listening there again", self.path)

    # -- events ----------------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(_MAX_CLIENTS):  # a few at a time: the master has other work
            try:
                sock, _address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("Control socket %s: accept() failed: %s", self.path, exc)
                return
            sock.setblocking(False)
            pid, uid = _peer(sock)
            client = _Client(sock, pid, self._clock() + _IDLE_TIMEOUT_S)
            fd = sock.fileno()
            self._clients[fd] = client
            self._selector.register(sock, selectors.EVENT_READ, lambda fd=fd: self._on_event(fd))
            if uid is not None and uid not in (os.geteuid(), 0):
                logger.warning(
                    "Control socket: refused pid %d (uid %d): only uid %d (the server's) and "
                    "root may use it",
                    pid,
                    uid,
                    os.geteuid(),
                )
                message = (
                    f"permission denied: uid {uid} is neither the server's (uid "
                    f"{os.geteuid()}) nor root"
                )
                self._reply_and_close(client, control.error_reply(message, code="refused"))
                self._serve(fd, client)
            elif len(self._clients) > _MAX_CLIENTS:
                message = f"busy: {_MAX_CLIENTS} control connections are open; try again"
                self._reply_and_close(client, control.error_reply(message))
                self._serve(fd, client)

    def _on_event(self, fd: int) -> None:
        client = self._clients.get(fd)
        if client is None:
            return
        if not client.outbox and not client.is_closing:
            self._receive(fd, client)
        if fd in self._clients:
            self._serve(fd, client)

    def _receive(self, fd: int, client: _Client) -> None:
        try:
            data = client.sock.recv(_RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(fd)
            return
        if data:
            client.inbox += data
            return
        # End of input: a last request without its newline is still a request.
        if client.inbox.strip():
            client.inbox += b"\n"
        else:
            client.inbox.clear()
        client.is_closing = True

    def _serve(self, fd: int, client: _Client) -> None:
        """Write what is pending; answer the complete lines, one reply out at a time; then
        wait for what comes next: writable, readable, or nothing (closed)."""
        if client.outbox:
            self._flush(fd, client)
        while fd in self._clients and not client.outbox:
            line, newline, rest = bytes(client.inbox).partition(b"\n")
            if not newline:
                if len(client.inbox) > control.MAX_REQUEST_BYTES:
                    message = f"request longer than {control.MAX_REQUEST_BYTES} bytes"
                    self._reply_and_close(client, control.error_reply(message, code="bad-request"))
                    self._flush(fd, client)
                break
            client.inbox[:] = rest
            if line.strip():  # blank lines (a habit of interactive clients) are skipped
                client.outbox += self._answer(client, line.rstrip(b"\r"))
                # Time for the next request starts now: bytes trickling in do not extend it.
                client.deadline = self._clock() + _IDLE_TIMEOUT_S
            self._flush(fd, client)
        if fd not in self._clients:
            return
        if client.outbox:
            events = selectors.EVENT_WRITE
        elif client.is_closing:
            self._close(fd)
            return
        else:
            events = selectors.EVENT_READ
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(client.sock, events, lambda fd=fd: self._on_event(fd))

    def _answer(self, client: _Client, line: bytes) -> bytes:
        try:
            command = control.parse_request(line)
        except ControlRequestError as exc:
            return control.error_reply(str(exc), code="bad-request")
        try:
            return self._handle(command, client.pid)
        except Exception:
            logger.exception("Control socket: %r failed", command)
            return control.error_reply(f"{command} failed: the master's log says why")

    def _reply_and_close(self, client: _Client, reply: bytes) -> None:
        """Send ``reply`` and close; whatever else the client sent is not read."""
        client.outbox += reply
        client.is_closing = True
        client.inbox.clear()

    def _flush(self, fd: int, client: _Client) -> None:
        try:
            sent = client.sock.send(client.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(fd)
            return
        del client.outbox[:sent]
        client.deadline = self._clock() + _IDLE_TIMEOUT_S

    def _close(self, fd: int) -> None:
        client = self._clients.pop(fd, None)
        if client is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()


def open_control_endpoint(
    setting: str,
    *,
    source: str,
    name: str,
    environ: Mapping[str, str],
    selector: selectors.BaseSelector,
    clock: Callable[[], float],
    handle: Callable[[str, int], bytes],
    is_reexecuted: bool,
) -> ControlEndpoint | None:
    """The control socket for CONTROL_SOCKET ``setting`` (from ``source``) of project ``name``.

    An explicit path that cannot be listened at raises ListenerError at a first start (the
    command exits with status 2); the automatic path only warns (a server without a control
    socket still serves), and so does a re-executed master, which must not die with workers
    to look after. None for ``off``, or when there is no socket.
    """
    if setting == control.OFF:
        return None
    uid = os.geteuid()
    paths = [setting] if setting else control.automatic_paths(name, environ=environ, uid=uid)
    problems = []
    for path in paths:
        if not setting:
            problem = control.prepare_directory(path, environ=environ, uid=uid)
            if problem:
                problems.append(problem)
                continue
        try:
            return ControlEndpoint(path, selector=selector, clock=clock, handle=handle)
        except OSError as exc:
            problems.append(f"{path}: {_bind_problem(exc)}")
            break  # the first usable place decides; another would not be where servectl looks
    message = f"CONTROL_SOCKET ({source}): no control socket, servectl cannot reach this server"
    if setting and not is_reexecuted:
        raise ListenerError(f"CONTROL_SOCKET ({source}): can't listen at {problems[0]}")
    logger.warning("%s: %s", message, "; ".join(problems) or "no place for it")
    return None


def _bind(path: str) -> tuple[socket.socket, tuple[int, int] | None]:
    """The listener at ``path``, mode 0600, and the file's identity; raises OSError."""
    address = sockets.parse_bind(f"unix:{path}")
    previous = os.umask(0o177)  # the master is single-threaded: nobody else creates files now
    try:
        (listener,) = sockets.bind_listeners([address], backlog=_BACKLOG)
    finally:
        os.umask(previous)
    return listener, _identity_of(path)


def _identity_of(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _peer(sock: socket.socket) -> tuple[int, int | None]:
    """The peer's pid and uid (SO_PEERCRED; Linux); (0, None) where unknown."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return 0, None  # the file's mode 0600 still keeps others out
    try:
        pid, uid, _gid = _PEER_CREDENTIALS.unpack(
            sock.getsockopt(socket.SOL_SOCKET, option, _PEER_CREDENTIALS.size)
        )
    except OSError:
        return 0, None
    return pid, uid


def _bind_problem(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "another server listens there (a second server of this project?)"
    return exc.strerror or str(exc)
