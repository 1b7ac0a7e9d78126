"""systemd.py and sockets.inherited_listeners(): socket activation and sd_notify, no systemd.

Socket activation is tested in a child process, because the protocol puts the sockets at fd 3
onwards, which the test runner's own process may be using: the child dup2()s a socket it bound
to fd 3, sets LISTEN_PID to its own pid, and reports what it inherited as JSON.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from django_wsgiserve import systemd

REPO = Path(__file__).resolve().parents[2]

_CHILD = textwrap.dedent(
    """
    import json, os, socket, sys
    from django_wsgiserve import sockets

    def is_open(fd):
        try:
            os.fstat(fd)
        except OSError:
            return False
        return True

    if sys.argv[1] == "listening":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    fd = sock.detach()
    if fd != 3:
        os.dup2(fd, 3)  # an inheritable fd 3, as systemd passes it
        os.close(fd)
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="http")
    try:
        listeners = sockets.inherited_listeners(os.environ)
    except ValueError as exc:
        print(json.dumps({"error": str(exc), "fd3_open": is_open(3)}))
        sys.exit(0)
    (listener,) = listeners
    print(json.dumps({
        "fileno": listener.fileno(),
        "family": int(listener.family),
        "port_matches": listener.getsockname()[1] == port,
        "blocking": listener.getblocking(),
        "inheritable": listener.get_inheritable(),
        "url": sockets.listener_url(listener),
        "left_in_environ": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    }))
    """
)


def _run_child(kind: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, kind],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report: dict[str, object] = json.loads(completed.stdout)
    return report


def test_inherited_listener_at_fd_3():
    report = _run_child("listening")
    assert report["fileno"] == systemd.SD_LISTEN_FDS_START
    assert report["family"] == int(socket.AF_INET)
    assert report["port_matches"] is True
    assert report["blocking"] is False
    assert report["inheritable"] is False
    assert str(report["url"]).startswith("http://127.0.0.1:")
    assert report["left_in_environ"] == []


def test_inherited_fd_that_is_not_a_listening_stream_socket():
    report = _run_child("datagram")
    assert "is not a listening stream socket" in str(report["error"])
    assert "(http)" in str(report["error"])
    assert report["fd3_open"] is False


@pytest.mark.parametrize(
    ("environ", "left"),
    [
        pytest.param({"LISTEN_PID": "0", "LISTEN_FDS": "1"}, {}, id="other-pid-unset"),
        pytest.param(
            {"LISTEN_PID": "0", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a", "OTHER": "x"},
            {"OTHER": "x"},
            id="only-listen-variables-removed",
        ),
    ],
)
def test_listen_fds_for_another_process(environ, left):
    assert systemd.listen_fds(environ) == []
    assert environ == left


def test_listen_fds_can_keep_the_variables():
    environ = {"LISTEN_PID": "0", "LISTEN_FDS": "1"}
    assert systemd.listen_fds(environ, unset=False) == []
    assert environ == {"LISTEN_PID": "0", "LISTEN_FDS": "1"}


def test_notify_to_a_path(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(path)
        assert systemd.notify("READY=1\nSTATUS=ok", {"NOTIFY_SOCKET": path}) is True
        receiver.settimeout(5)
        assert receiver.recv(4096) == b"READY=1\nSTATUS=ok"


def test_notify_to_an_abstract_socket():
    name = f"wsgiserve-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        assert systemd.notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name}) is True
        receiver.settimeout(5)
        assert receiver.recv(4096) == b"STOPPING=1"


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({}, id="unset"),
        pytest.param({"NOTIFY_SOCKET": ""}, id="empty"),
        pytest.param({"NOTIFY_SOCKET": "/nonexistent/wsgiserve/notify.sock"}, id="missing-path"),
        pytest.param({"NOTIFY_SOCKET": "@wsgiserve-test-nobody-listens"}, id="missing-abstract"),
        pytest.param({"NOTIFY_SOCKET": "vsock:2:1234"}, id="unknown-scheme"),
    ],
)
def test_notify_never_raises(environ):
    assert systemd.notify("READY=1", environ) is False
