"""Listener protocols: the BIND prefixes and systemd's FileDescriptorName."""

from __future__ import annotations

import os
import socket

import pytest

from django_wsgiserve import sockets
from django_wsgiserve.protocols import ListenerProtocol, protocol_of, with_protocol


@pytest.mark.parametrize(
    ("spec", "protocol", "text"),
    [
        pytest.param("8000", ListenerProtocol.HTTP, "127.0.0.1:8000", id="http"),
        pytest.param("uwsgi:9000", ListenerProtocol.UWSGI, "uwsgi:127.0.0.1:9000", id="uwsgi"),
        pytest.param(
            "fastcgi:unix:/run/a.sock",
            ListenerProtocol.FASTCGI,
            "fastcgi:unix:/run/a.sock",
            id="fastcgi-unix",
        ),
        pytest.param("uwsgi:[::1]:9000", ListenerProtocol.UWSGI, "uwsgi:[::1]:9000", id="ipv6"),
        pytest.param("unix:/run/h.sock", ListenerProtocol.HTTP, "unix:/run/h.sock", id="unix"),
    ],
)
def test_parse_bind_protocol_prefix(spec: str, protocol: ListenerProtocol, text: str) -> None:
    address = sockets.parse_bind(spec)
    assert address.protocol is protocol
    assert str(address) == text
    assert sockets.parse_bind(str(address)) == address


def test_bound_listener_carries_its_protocol(tmp_path) -> None:
    path = tmp_path / "app.sock"
    (listener,) = sockets.bind_listeners([sockets.parse_bind(f"uwsgi:unix:{path}")], backlog=8)
    try:
        assert protocol_of(listener) is ListenerProtocol.UWSGI
        assert sockets.listener_url(listener) == f"uwsgi:unix:{path}"
        assert not listener.getblocking()
    finally:
        sockets.close_listeners([listener], unlink_unix=True)


@pytest.mark.parametrize(
    ("name", "protocol"),
    [
        pytest.param("uwsgi", ListenerProtocol.UWSGI, id="uwsgi"),
        pytest.param("fastcgi", ListenerProtocol.FASTCGI, id="fastcgi"),
        pytest.param("http", ListenerProtocol.HTTP, id="other"),
    ],
)
def test_systemd_fd_name_selects_protocol(name: str, protocol: ListenerProtocol) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        probe.listen()
        saved = os.dup(3) if _is_open(3) else None
        os.dup2(probe.fileno(), 3)
        environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": name}
        try:
            (listener,) = sockets.inherited_listeners(environ)
            assert protocol_of(listener) is protocol
            listener.close()
        finally:
            if saved is not None:
                os.dup2(saved, 3)
                os.close(saved)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_with_protocol_keeps_the_descriptor() -> None:
    with socket.socket() as plain:
        fd = plain.fileno()
        marked = with_protocol(plain, ListenerProtocol.FASTCGI)
        with marked:
            assert marked.fileno() == fd
            assert plain.fileno() == -1
            assert protocol_of(marked) is ListenerProtocol.FASTCGI
