"""Which protocol a listener speaks: HTTP/1.1 (the default), uwsgi or FastCGI.

Design note. The protocol is a property of a listening socket, declared once where the socket
comes from:

* ``BIND``: an optional prefix before the address, ``uwsgi:127.0.0.1:9000``,
  ``fastcgi:unix:/run/app.sock``, ``uwsgi:[::1]:9000``, ``fastcgi:9000``; without one the
  listener speaks HTTP. ``split_protocol()`` takes the prefix off; ``sockets.parse_bind`` does
  the rest. (A host literally named ``uwsgi`` or ``fastcgi`` must be written as its address.)
* systemd socket activation: the socket's ``FileDescriptorName=`` (``LISTEN_FDNAMES``),
  ``uwsgi`` or ``fastcgi``; any other name is HTTP (``protocol_of_fd_name()``).

The sockets travel as plain ``socket.socket`` objects through the master, the workers and a
configuration reload, so the protocol rides on the socket itself: ``with_protocol()`` turns a
listener into a ``ProtocolSocket`` (the same descriptor, detached and re-wrapped, no dup) and
``protocol_of()`` reads it back, HTTP for any other socket.

Imports only the stdlib.
"""

from __future__ import annotations

import enum
import socket

__all__ = [
    "ListenerProtocol",
    "ProtocolSocket",
    "protocol_of",
    "protocol_of_fd_name",
    "split_protocol",
    "with_protocol",
]


class ListenerProtocol(enum.Enum):
    """What the peers of a listener speak."""

    HTTP = "http"
    UWSGI = "uwsgi"  # nginx uwsgi_pass
    FASTCGI = "fastcgi"  # nginx fastcgi_pass, Apache mod_proxy_fcgi

    @property
    def prefix(self) -> str:
        """The ``BIND`` prefix that selects it (none for HTTP)."""
        return "" if self is ListenerProtocol.HTTP else self.value + ":"


_PREFIXED = (ListenerProtocol.UWSGI, ListenerProtocol.FASTCGI)


def split_protocol(spec: str) -> tuple[ListenerProtocol, str]:
    """``"uwsgi:unix:/run/app.sock"`` -> (UWSGI, ``"unix:/run/app.sock"``); an entry without
    a protocol prefix is HTTP and is returned whole."""
    for protocol in _PREFIXED:
        prefix = protocol.prefix
        if spec.startswith(prefix):
            return protocol, spec[len(prefix) :]
    return ListenerProtocol.HTTP, spec


def protocol_of_fd_name(name: str) -> ListenerProtocol:
    """The protocol of a socket systemd passed with ``FileDescriptorName=name``."""
    for protocol in _PREFIXED:
        if name == protocol.value:
            return protocol
    return ListenerProtocol.HTTP


class ProtocolSocket(socket.socket):
    """A listening socket that knows which protocol its peers speak."""

    __slots__ = ("protocol",)

    protocol: ListenerProtocol


def with_protocol(sock: socket.socket, protocol: ListenerProtocol) -> socket.socket:
    """``sock`` marked with ``protocol``: the socket itself for HTTP (nothing to mark), else a
    ``ProtocolSocket`` that takes over its descriptor (``sock`` is left detached)."""
    if protocol is ListenerProtocol.HTTP and not isinstance(sock, ProtocolSocket):
        return sock
    blocking = sock.getblocking()
    marked = ProtocolSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    marked.setblocking(blocking)
    marked.protocol = protocol
    return marked


def protocol_of(sock: socket.socket) -> ListenerProtocol:
    """The protocol ``sock`` listens for (HTTP unless marked by ``with_protocol``)."""
    if isinstance(sock, ProtocolSocket):
        return sock.protocol
    return ListenerProtocol.HTTP
