"""sockets.py: parsing BIND entries, binding TCP and unix listeners, friendly errors."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from django_wsgiserve.errors import ListenerError
from django_wsgiserve.sockets import (
    BindAddress,
    BindError,
    addrport_to_bind,
    bind_listeners,
    close_listeners,
    friendly_bind_error,
    inherited_listeners,
    listener_url,
    open_listeners,
    parse_bind,
    refuse_new_connections,
    take_over_listeners,
)

INET, INET6, UNIX = socket.AF_INET, socket.AF_INET6, socket.AF_UNIX


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(
    not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1 cannot be bound)"
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("8000", BindAddress(family=INET, host="127.0.0.1", port=8000), id="port"),
        pytest.param("0", BindAddress(family=INET, host="127.0.0.1", port=0), id="port-zero"),
        pytest.param("0:8000", BindAddress(family=INET, host="0.0.0.0", port=8000), id="zero-host"),
        pytest.param("1.2.3.4:80", BindAddress(family=INET, host="1.2.3.4", port=80), id="ipv4"),
        pytest.param(
            "localhost:65535", BindAddress(family=INET, host="localhost", port=65535), id="name"
        ),
        pytest.param("[::1]:8000", BindAddress(family=INET6, host="::1", port=8000), id="ipv6"),
        pytest.param("[::]:80", BindAddress(family=INET6, host="::", port=80), id="ipv6-any"),
        pytest.param(
            "[fe80::1%eth0]:80", BindAddress(family=INET6, host="fe80::1%eth0", port=80), id="zone"
        ),
        pytest.param("unix:/run/a.sock", BindAddress(family=UNIX, path="/run/a.sock"), id="unix"),
        pytest.param(
            "unix:rel.sock", BindAddress(family=UNIX, path="rel.sock"), id="unix-relative"
        ),
    ],
)
def test_parse_bind(spec, expected):
    assert parse_bind(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("", "port must be a number", id="empty"),
        pytest.param("http", "port must be a number", id="word"),
        pytest.param("65536", "port must be a number", id="port-too-big"),
        pytest.param("1.2.3.4:-1", "port must be a number", id="negative-port"),
        pytest.param("1.2.3.4:", "port must be a number", id="missing-port"),
        pytest.param("1.2.3.4:\uff18\uff10", "port must be a number", id="non-ascii-digits"),
        pytest.param(":8000", "not an IPv4 address or host name", id="missing-host"),
        pytest.param("999.1.1.1:80", "not an IPv4 address", id="bad-ipv4"),
        pytest.param("bad_host:80", "not an IPv4 address or host name", id="underscore"),
        pytest.param("::1:8000", "brackets", id="bare-ipv6"),
        pytest.param("[::1]", r"expected \[IPv6\]:PORT", id="ipv6-without-port"),
        pytest.param("[nope]:80", "is not an IPv6 address", id="bad-ipv6"),
        pytest.param("unix:", "unix:/path/to.sock", id="unix-empty"),
        pytest.param("unix:/a\0b", "unix:/path/to.sock", id="unix-nul"),
    ],
)
def test_parse_bind_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_bind(spec)


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        pytest.param("0:80", "0.0.0.0:80", id="ipv4"),
        pytest.param("[::1]:80", "[::1]:80", id="ipv6"),
        pytest.param("unix:/run/a.sock", "unix:/run/a.sock", id="unix"),
    ],
)
def test_bind_address_str(spec, text):
    assert str(parse_bind(spec)) == text


def test_bind_ipv4_port_zero():
    (listener,) = bind_listeners([parse_bind("127.0.0.1:0")], backlog=16)
    with listener:
        assert listener.getblocking() is False
        assert listener.get_inheritable() is False
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        port = listener.getsockname()[1]
        assert port > 0
        assert listener_url(listener) == f"http://127.0.0.1:{port}/"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass


@needs_ipv6
def test_bind_ipv6_port_zero():
    (listener,) = bind_listeners([parse_bind("[::1]:0")], backlog=16)
    with listener:
        assert listener.getblocking() is False
        assert listener.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        port = listener.getsockname()[1]
        assert listener_url(listener) == f"http://[::1]:{port}/"


def test_port_in_use_gives_runserver_message():
    (first,) = bind_listeners([parse_bind("127.0.0.1:0")], backlog=16)
    with first:
        address = parse_bind(f"127.0.0.1:{first.getsockname()[1]}")
        with pytest.raises(BindError) as caught:
            bind_listeners([address], backlog=16)
    assert caught.value.errno == errno.EADDRINUSE
    assert caught.value.address == address
    assert friendly_bind_error(caught.value) == "That port is already in use."


def test_failure_closes_and_unlinks_what_was_bound(tmp_path):
    (busy,) = bind_listeners([parse_bind("127.0.0.1:0")], backlog=16)
    path = tmp_path / "a.sock"
    with busy:
        addresses = [parse_bind(f"unix:{path}"), parse_bind(f"127.0.0.1:{busy.getsockname()[1]}")]
        with pytest.raises(BindError):
            bind_listeners(addresses, backlog=16)
    assert not path.exists()


@pytest.mark.parametrize(
    ("number", "message"),
    [
        pytest.param(errno.EADDRINUSE, "That port is already in use.", id="in-use"),
        pytest.param(errno.EACCES, "You don't have permission to access that port.", id="access"),
        pytest.param(errno.EADDRNOTAVAIL, "That IP address can't be assigned to.", id="not-avail"),
        pytest.param(errno.ENOENT, "No such file or directory", id="other"),
    ],
)
def test_friendly_bind_error(number, message):
    error = BindError(parse_bind("80"), number, os.strerror(number))
    assert friendly_bind_error(error) == message
    assert isinstance(error, OSError)
    assert error.errno == number


def test_address_not_available():
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never assigned to a local interface.
    with pytest.raises(BindError) as caught:
        bind_listeners([parse_bind("192.0.2.1:0")], backlog=16)
    assert friendly_bind_error(caught.value) == "That IP address can't be assigned to."


def test_unix_socket(tmp_path):
    path = tmp_path / "s.sock"
    (listener,) = bind_listeners([parse_bind(f"unix:{path}")], backlog=16)
    assert listener.getblocking() is False
    assert listener_url(listener) == f"unix:{path}"
    with socket.socket(UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(path))
    close_listeners([listener], unlink_unix=True)
    assert not path.exists()


def test_stale_unix_socket_is_replaced(tmp_path):
    path = tmp_path / "s.sock"
    stale = socket.socket(UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a crashed server leaves
    assert path.exists()
    (listener,) = bind_listeners([parse_bind(f"unix:{path}")], backlog=16)
    close_listeners([listener], unlink_unix=True)


def test_live_unix_socket_is_refused(tmp_path):
    path = tmp_path / "s.sock"
    with socket.socket(UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen(1)
        with pytest.raises(BindError) as caught:
            bind_listeners([parse_bind(f"unix:{path}")], backlog=16)
        assert caught.value.errno == errno.EADDRINUSE
        assert path.exists()


def test_regular_file_is_not_removed(tmp_path):
    path = tmp_path / "not-a-socket"
    path.write_text("data")
    with pytest.raises(BindError) as caught:
        bind_listeners([parse_bind(f"unix:{path}")], backlog=16)
    assert caught.value.errno == errno.EADDRINUSE
    assert path.read_text() == "data"


def test_close_listeners_keeps_inherited_paths(tmp_path):
    path = tmp_path / "s.sock"
    (listener,) = bind_listeners([parse_bind(f"unix:{path}")], backlog=16)
    close_listeners([listener], unlink_unix=False)
    assert path.exists()
    assert listener.fileno() == -1


def test_close_listeners_twice_is_harmless(tmp_path):
    (listener,) = bind_listeners([parse_bind(f"unix:{tmp_path / 's.sock'}")], backlog=16)
    close_listeners([listener], unlink_unix=False)
    close_listeners([listener], unlink_unix=True)
    assert (tmp_path / "s.sock").exists()


def test_listener_url_abstract_unix_socket():
    with socket.socket(UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(f"\0wsgiserve-test-abstract-{os.getpid()}")
        assert listener_url(sock) == f"unix:@wsgiserve-test-abstract-{os.getpid()}"


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({}, id="nothing-passed"),
        pytest.param({"LISTEN_FDS": "1", "LISTEN_PID": "0"}, id="meant-for-another-process"),
        pytest.param({"LISTEN_FDS": "x", "LISTEN_PID": "y"}, id="garbage"),
    ],
)
def test_inherited_listeners_none(environ):
    assert inherited_listeners(environ) == []
    assert "LISTEN_FDS" not in environ
    assert "LISTEN_PID" not in environ


def test_refuse_new_connections_keeps_the_backlog_and_takes_nothing_new():
    """For a full shutdown: a connection already in the backlog is still accepted and served,
    a new one joins nothing (its SYN is dropped; it is refused once the socket closes)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    queued = socket.create_connection(listener.getsockname(), timeout=5)
    late = socket.socket()
    late.settimeout(0.3)
    try:
        queued.sendall(b"request")
        refuse_new_connections([listener])
        with pytest.raises(TimeoutError):
            late.connect(listener.getsockname())
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.recv(16) == b"request"
            accepted.sendall(b"response")
        assert queued.recv(16) == b"response"
    finally:
        queued.close()
        late.close()
        listener.close()


# -- runserver's addrport -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addrport", "ipv6", "expected"),
    [
        pytest.param("8000", False, "127.0.0.1:8000", id="port"),
        pytest.param("8000", True, "[::1]:8000", id="port-ipv6"),
        pytest.param("0:8000", False, "0:8000", id="zero"),
        pytest.param("[::]:80", False, "[::]:80", id="ipv6-address"),
        pytest.param("example.org:80", True, "example.org:80", id="name-with-ipv6"),
        pytest.param("unix:/run/site.sock", False, "unix:/run/site.sock", id="unix"),
    ],
)
def test_addrport_to_bind(addrport, ipv6, expected):
    bind = addrport_to_bind(addrport, default_addr="127.0.0.1", default_addr_ipv6="::1", ipv6=ipv6)
    assert bind == expected


@pytest.mark.parametrize(
    ("addrport", "ipv6", "message"),
    [
        pytest.param("nope", False, '"nope" is not a valid port number', id="not-addrport"),
        pytest.param("1.2.3.4:80", True, '"1.2.3.4" is not a valid IPv6 address', id="v4-as-v6"),
    ],
)
def test_addrport_to_bind_errors(addrport, ipv6, message):
    with pytest.raises(ValueError, match=message):
        addrport_to_bind(addrport, default_addr="127.0.0.1", default_addr_ipv6="::1", ipv6=ipv6)


# -- opening the listeners of a starting server -------------------------------------------------


def test_open_listeners_binds_bind():
    listeners, inherited = open_listeners({}, ["127.0.0.1:0"], backlog=8, is_bind_default=True)
    try:
        assert not inherited
        assert [sock.getsockname()[0] for sock in listeners] == ["127.0.0.1"]
    finally:
        close_listeners(listeners, unlink_unix=True)


def test_open_listeners_words_a_bind_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(ListenerError) as caught:
            open_listeners({}, [f"127.0.0.1:{port}"], backlog=8, is_bind_default=False)
    assert str(caught.value) == f"Can't listen at 127.0.0.1:{port}: That port is already in use."


def test_take_over_listeners_listens_again(caplog):
    (sock,) = bind_listeners([parse_bind("127.0.0.1:0")], backlog=1)
    try:
        assert take_over_listeners([sock], ["8000"], ["8000"], backlog=64) == [sock]
        assert caplog.messages == []
        take_over_listeners([sock], ["8000"], ["8001"], backlog=64)
        assert caplog.messages == [
            "BIND changed again while the server reloaded: listening at 8000; send SIGHUP "
            "again to apply 8001"
        ]
    finally:
        close_listeners([sock], unlink_unix=True)


def test_take_over_listeners_needs_one_per_bind_entry():
    (sock,) = bind_listeners([parse_bind("127.0.0.1:0")], backlog=1)
    with pytest.raises(ListenerError, match=r"handed over 1 listening socket\(s\) for 2 BIND"):
        take_over_listeners([sock], ["8000", "8001"], ["8000", "8001"], backlog=64)
    assert sock.fileno() == -1  # closed: the server cannot use them
