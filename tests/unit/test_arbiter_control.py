"""arbiter/control.py: the master's control socket, driven in this process.

The test turns the master's loop itself (``Master.turn``: one non-blocking ``select`` and the
callbacks, then ``check``) with a fake clock, and talks to the endpoint through real unix
sockets: nothing a client does may block a turn or raise out of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import stat

import pytest

from django_wsgiserve import control
from django_wsgiserve.arbiter.control import ControlEndpoint, open_control_endpoint
from django_wsgiserve.errors import ListenerError
from django_wsgiserve.sockets import BindError


class Master:
    """A selector, a fake clock and the endpoint, as the master holds them."""

    def __init__(self, path, handle=None):
        self.now = 1000.0
        self.selector = selectors.DefaultSelector()
        self.requests = []
        self.endpoint = ControlEndpoint(
            str(path), selector=self.selector, clock=lambda: self.now, handle=handle or self.handle
        )

    def handle(self, command, peer_pid):
        self.requests.append((command, peer_pid))
        return control.encode_reply({"command": command})

    def turn(self, times=5):
        for _ in range(times):
            for key, _mask in self.selector.select(0):
                key.data()
            self.endpoint.check(self.now)

    def close(self):
        self.endpoint.close()
        self.selector.close()


@pytest.fixture
def master(tmp_path):
    master = Master(tmp_path / "ctl.sock")
    yield master
    master.close()


def connect(master):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(master.endpoint.path)
    master.turn()  # accepted
    return sock


def replies(master, sock, count):
    """``count`` reply lines, turning the loop while they come."""
    data = b""
    sock.setblocking(False)
    for _ in range(200):
        master.turn(1)
        with contextlib.suppress(BlockingIOError):
            data += sock.recv(1 << 20)
        if data.count(b"\n") >= count:
            break
    sock.settimeout(5)
    return [json.loads(line) for line in data.splitlines()]


def closed(master, sock):
    master.turn()
    sock.settimeout(5)
    try:
        return sock.recv(1 << 20) == b""
    except ConnectionResetError:
        return True


def test_a_request_is_answered(master):
    with connect(master) as sock:
        sock.sendall(b'{"command": "status"}\n')
        assert replies(master, sock, 1) == [{"ok": True, "command": "status"}]
    assert master.requests == [("status", os.getpid())]  # SO_PEERCRED: this process


def test_requests_sent_together_are_answered_in_order(master):
    with connect(master) as sock:
        sock.sendall(b'{"command":"stop"}\r\n\n{"command":"reload"}\n{"command":"status"}')
        sock.shutdown(socket.SHUT_WR)  # the last one has no newline: still a request
        answered = replies(master, sock, 3)
        assert [reply["command"] for reply in answered] == ["stop", "reload", "status"]
        assert closed(master, sock)


def test_a_bad_request_gets_an_error_and_the_connection_goes_on(master):
    with connect(master) as sock:
        sock.sendall(b'nonsense\n{"command": "status"}\n')
        bad, good = replies(master, sock, 2)
    assert bad["ok"] is False
    assert bad["code"] == "bad-request"
    assert good == {"ok": True, "command": "status"}
    assert master.requests == [("status", os.getpid())]


def test_a_line_too_long_gets_an_error_and_is_closed(master):
    with connect(master) as sock:
        sock.sendall(b"x" * (control.MAX_REQUEST_BYTES + 10))
        (reply,) = replies(master, sock, 1)
        assert reply["error"] == "request longer than 4096 bytes"
        assert closed(master, sock)
    assert master.requests == []


def test_a_silent_client_is_dropped_after_the_timeout(master):
    with connect(master) as sock:
        sock.sendall(b'{"command": ')
        master.now += 9.0
        master.turn()
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1)  # still open
        master.now += 1.5
        assert closed(master, sock)
    assert master.endpoint.fds() == [master.endpoint.fds()[0]]  # only the listener left


def test_a_client_that_does_not_read_never_blocks_the_loop(tmp_path):
    big = control.encode_reply({"blob": "x" * (8 << 20)})  # more than a socket buffer
    master = Master(tmp_path / "ctl.sock", handle=lambda command, pid: big)
    try:
        with connect(master) as sock:
            sock.sendall(b'{"command": "status"}\n' * 3)
            master.turn(20)  # returns: the reply waits for the socket to be writable
            with connect(master) as other:  # and the master serves others meanwhile
                other.sendall(b'{"command": "status"}\n')
                data = b""
                while not data.endswith(b"\n"):
                    master.turn(1)
                    data += other.recv(1 << 20)
                assert data == big
            master.now += 11.0  # the first one never read: dropped
            master.turn()
            assert len(master.endpoint.fds()) == 1
    finally:
        master.close()


def test_a_handler_that_fails_gets_an_error_reply_and_a_traceback_in_the_log(tmp_path, caplog):
    def broken(command, pid):
        raise RuntimeError("bug")

    master = Master(tmp_path / "ctl.sock", handle=broken)
    try:
        with connect(master) as sock, caplog.at_level(logging.ERROR):
            sock.sendall(b'{"command": "reload"}\n')
            (reply,) = replies(master, sock, 1)
        assert reply == {
            "ok": False,
            "error": "reload failed: the master's log says why",
            "code": "failed",
        }
        assert "RuntimeError: bug" in caplog.text
    finally:
        master.close()


def test_the_socket_is_mode_0600(master):
    info = os.stat(master.endpoint.path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600


def test_workers_close_the_listener_and_every_connection(master):
    with connect(master) as first, connect(master):
        fds = master.endpoint.fds()
        assert len(fds) == 3
        first.close()
        master.turn()
        assert len(master.endpoint.fds()) == 2


def test_a_stale_file_is_replaced_and_a_live_socket_is_not(tmp_path):
    path = tmp_path / "ctl.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))
    master = Master(path)
    try:
        with selectors.DefaultSelector() as selector, pytest.raises(BindError):
            # Somebody listens there: that one is kept.
            ControlEndpoint(str(path), selector=selector, clock=float, handle=master.handle)
    finally:
        master.close()
    assert not path.exists()


def test_a_removed_file_is_bound_again(master, caplog):
    os.unlink(master.endpoint.path)
    master.now += 6.0
    with caplog.at_level(logging.WARNING):
        master.turn(1)
    assert os.path.exists(master.endpoint.path)
    assert "had been removed: listening there again" in caplog.text
    with connect(master) as sock:
        sock.sendall(b'{"command": "status"}\n')
        assert replies(master, sock, 1)[0]["ok"] is True


def test_close_leaves_a_file_that_is_not_ours(master):
    os.unlink(master.endpoint.path)
    with open(master.endpoint.path, "w") as other:  # someone else's file now
        other.write("x")
    master.endpoint.close()
    assert os.path.isfile(master.endpoint.path)


# -- choosing the path ----------------------------------------------------------------------------


def open_endpoint(setting, environ, *, is_reexecuted=False):
    selector = selectors.DefaultSelector()
    try:
        return open_control_endpoint(
            setting,
            source="default" if not setting else "settings.WSGISERVE['CONTROL_SOCKET']",
            name="mysite",
            environ=environ,
            selector=selector,
            clock=lambda: 0.0,
            handle=lambda command, pid: b"",
            is_reexecuted=is_reexecuted,
        ), selector
    except BaseException:
        selector.close()
        raise


def test_the_automatic_path_goes_into_the_runtime_directory(tmp_path):
    endpoint, selector = open_endpoint("", {"RUNTIME_DIRECTORY": str(tmp_path)})
    assert endpoint is not None
    assert endpoint.path == str(tmp_path / "control.sock")
    endpoint.close()
    selector.close()


def test_the_automatic_path_goes_into_the_session_directory(tmp_path):
    endpoint, selector = open_endpoint("", {"XDG_RUNTIME_DIR": str(tmp_path)})
    assert endpoint is not None
    assert endpoint.path == str(tmp_path / "django-wsgiserve" / "mysite.sock")
    endpoint.close()
    selector.close()


def test_off_opens_nothing():
    endpoint, selector = open_endpoint("off", {})
    assert endpoint is None
    selector.close()


def test_an_explicit_path_that_cannot_be_listened_at_stops_the_start(tmp_path):
    path = str(tmp_path / "absent" / "ctl.sock")
    with pytest.raises(ListenerError, match=r"CONTROL_SOCKET \(settings.WSGISERVE"):
        open_endpoint(path, {})


def test_a_reexecuted_master_only_warns(tmp_path, caplog):
    path = str(tmp_path / "absent" / "ctl.sock")
    with caplog.at_level(logging.WARNING):
        endpoint, selector = open_endpoint(path, {}, is_reexecuted=True)
    assert endpoint is None
    assert "servectl cannot reach this server" in caplog.text
    selector.close()


def test_an_automatic_path_in_use_only_warns(tmp_path, caplog):
    first, selector = open_endpoint("", {"RUNTIME_DIRECTORY": str(tmp_path)})
    try:
        with caplog.at_level(logging.WARNING):
            second, other = open_endpoint("", {"RUNTIME_DIRECTORY": str(tmp_path)})
        other.close()
        assert second is None
        assert "another server listens there" in caplog.text
    finally:
        assert first is not None
        first.close()
        selector.close()
