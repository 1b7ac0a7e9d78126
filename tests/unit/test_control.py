"""control.py (the control socket's protocol, its paths, its client) and statusview.py, without
a server: request lines in, commands or errors out; reply lines; where the socket goes;
what the client says when there is nobody to talk to; the status tables."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import socket
import threading
import time

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from hypothesis import given, settings, strategies as st

from django_wsgiserve import control, statusview
from django_wsgiserve.config import InvalidOptionValueError, resolve_config
from django_wsgiserve.errors import ControlRequestError, ControlSocketError

# -- requests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", control.COMMANDS)
def test_every_command_parses(command):
    assert control.parse_request(control.encode_request(command).rstrip(b"\n")) == command


def test_other_keys_are_ignored():
    assert control.parse_request(b'{"command": "status", "verbose": true}') == "status"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param(b"garbage", "not a JSON object", id="not-json"),
        pytest.param(b"[1, 2]", "not a JSON object: list", id="array"),
        pytest.param(b'"status"', "not a JSON object: str", id="string"),
        pytest.param(b"{}", 'no "command"', id="no-command"),
        pytest.param(b'{"command": 7}', 'no "command"', id="command-not-text"),
        pytest.param(b'{"command": "dance"}', "unknown command 'dance'", id="unknown"),
        pytest.param(b'{"command": "STATUS"}', "unknown command", id="case-matters"),
        pytest.param(b'{"command": "status"', "not a JSON object", id="truncated"),
        pytest.param(b"\xff\xfe{}", "not a JSON object", id="not-utf-8"),
        pytest.param(b"[" * 4000, "not a JSON object", id="nested-deep"),
        pytest.param(b" " * 4097, "longer than 4096 bytes", id="too-long"),
    ],
)
def test_bad_requests(line, message):
    with pytest.raises(ControlRequestError, match=message):
        control.parse_request(line)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
def test_no_line_raises_anything_but_a_request_error(line):
    with contextlib.suppress(ControlRequestError):
        assert control.parse_request(line) in control.COMMANDS


# -- replies --------------------------------------------------------------------------------------


def test_a_reply_is_one_ascii_line_whatever_it_holds():
    line = control.encode_reply({"message": "two\nlines, \u00e9t\u00e9", "n": 3})
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    line.decode("ascii")
    assert control.parse_reply(line[:-1]) == {
        "ok": True,
        "message": "two\nlines, \u00e9t\u00e9",
        "n": 3,
    }


def test_an_error_reply_has_its_code():
    reply = control.parse_reply(control.error_reply("no\nway", code="refused").rstrip(b"\n"))
    assert reply == {"ok": False, "error": "no\nway", "code": "refused"}


@pytest.mark.parametrize("line", [b"[]", b'{"error": "x"}', b'{"ok": "yes"}', b"nonsense"])
def test_what_is_not_a_reply(line):
    with pytest.raises(ValueError):  # noqa: PT011  (JSONDecodeError or ours)
        control.parse_reply(line)


# -- paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param(
            {},
            ["/run/mysite/control.sock", "/tmp/django-wsgiserve-1000/mysite.sock"],
            id="nothing-set",
        ),
        pytest.param(
            {"XDG_RUNTIME_DIR": "/run/user/1000"},
            [
                "/run/mysite/control.sock",
                "/run/user/1000/django-wsgiserve/mysite.sock",
                "/tmp/django-wsgiserve-1000/mysite.sock",
            ],
            id="login-session",
        ),
        pytest.param(
            {"RUNTIME_DIRECTORY": "/run/mysite"},
            ["/run/mysite/control.sock", "/tmp/django-wsgiserve-1000/mysite.sock"],
            id="systemd-runtime-directory",
        ),
        pytest.param(
            {"RUNTIME_DIRECTORY": "/run/nginx-upstream:/run/mysite"},
            ["/run/mysite/control.sock", "/tmp/django-wsgiserve-1000/mysite.sock"],
            id="several-runtime-directories-the-named-one",
        ),
        pytest.param(
            {"RUNTIME_DIRECTORY": "/run/shop"},
            [
                "/run/shop/control.sock",
                "/run/mysite/control.sock",
                "/tmp/django-wsgiserve-1000/mysite.sock",
            ],
            id="unit-named-otherwise",
        ),
        pytest.param(
            {"XDG_RUNTIME_DIR": "relative"},
            ["/run/mysite/control.sock", "/tmp/django-wsgiserve-1000/mysite.sock"],
            id="relative-xdg-ignored",
        ),
        pytest.param(
            {"XDG_RUNTIME_DIR": "/" + "x" * 120},
            ["/run/mysite/control.sock", "/tmp/django-wsgiserve-1000/mysite.sock"],
            id="too-long-for-a-unix-socket",
        ),
    ],
)
def test_automatic_paths(environ, expected):
    assert control.automatic_paths("mysite", environ=environ, uid=1000) == expected


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        pytest.param("mysite.settings", "mysite", id="package"),
        pytest.param("config.settings.production", "config", id="nested"),
        pytest.param(None, "django", id="settings-configured-by-hand"),
    ],
)
def test_project_name(module, expected):
    assert control.project_name(module) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("ctl.sock", "must be an absolute path", id="relative"),
        pytest.param("/" + "x" * 120, "longer than the 107 bytes", id="too-long"),
    ],
)
def test_control_socket_setting_checks(value, message):
    with pytest.raises(InvalidOptionValueError, match=message) as caught:
        resolve_config({"CONTROL_SOCKET": value}, {}, {})
    assert caught.value.option == "CONTROL_SOCKET"
    assert caught.value.source == "settings.WSGISERVE['CONTROL_SOCKET']"


@pytest.mark.parametrize("value", ["", "off", "/run/mysite/control.sock"])
def test_control_socket_setting_values(value):
    assert resolve_config({}, {"WSGISERVE_CONTROL_SOCKET": value}, {}).control_socket == value


def test_a_private_directory_is_made_for_a_shared_place(tmp_path):
    path = str(tmp_path / "django-wsgiserve" / "mysite.sock")
    assert control.prepare_directory(path, environ={}, uid=os.geteuid()) == ""
    assert (tmp_path / "django-wsgiserve").stat().st_mode & 0o777 == 0o700
    assert control.prepare_directory(path, environ={}, uid=os.geteuid()) == ""  # again


@pytest.mark.parametrize(
    ("mode", "is_link"),
    [pytest.param(0o755, False, id="open-mode"), pytest.param(0o700, True, id="symlink")],
)
def test_a_shared_place_someone_prepared_is_refused(tmp_path, mode, is_link):
    uid = os.geteuid()
    directory = tmp_path / f"django-wsgiserve-{uid}"
    if is_link:
        (tmp_path / "elsewhere").mkdir(mode=mode)
        directory.symlink_to(tmp_path / "elsewhere")
    else:
        directory.mkdir()
        directory.chmod(mode)
    problem = control.prepare_directory(str(directory / "mysite.sock"), environ={}, uid=uid)
    assert "not a directory of mode 0700 owned by uid" in problem


def test_a_runtime_directory_must_exist(tmp_path):
    path = str(tmp_path / "absent" / "control.sock")
    assert control.prepare_directory(path, environ={}, uid=0) == f"{tmp_path}/absent does not exist"


def test_find_socket_takes_the_first_socket(tmp_path):
    (tmp_path / "file").write_text("not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(tmp_path / "b.sock"))
        paths = [str(tmp_path / name) for name in ("missing", "file", "b.sock")]
        assert control.find_socket(paths) == str(tmp_path / "b.sock")
        assert control.find_socket(paths[:2]) is None


# -- the client -----------------------------------------------------------------------------------


def serve_once(path, answer):
    """A listener at ``path`` answering one connection with ``answer`` (bytes, or None to
    close without answering), in a thread; returns the listener and the thread."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def run():
        connection, _ = listener.accept()
        with connection:
            connection.recv(4096)
            if answer is not None:
                connection.sendall(answer)

    thread = threading.Thread(target=run)
    thread.start()
    return listener, thread


def test_the_client_reads_one_reply(tmp_path):
    path = tmp_path / "c.sock"
    listener, thread = serve_once(path, control.encode_reply({"message": "ok"}))
    with listener:
        assert control.send_command(str(path), "reload", timeout_s=5) == {
            "ok": True,
            "message": "ok",
        }
        thread.join()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        pytest.param(None, "closed the connection without answering", id="closed"),
        pytest.param(b"<html>\n", "the answer is not a reply", id="garbage"),
        pytest.param(b'{"ok": 1}\n', "the answer is not a reply", id="not-a-reply"),
    ],
)
def test_the_client_says_what_went_wrong(tmp_path, answer, message):
    path = tmp_path / "c.sock"
    listener, thread = serve_once(path, answer)
    with listener, pytest.raises(ControlSocketError, match=message) as caught:
        control.send_command(str(path), "status", timeout_s=5)
    thread.join()
    assert caught.value.path == str(path)


def test_the_client_waits_while_the_backlog_is_full(tmp_path):
    path = tmp_path / "c.sock"
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as first,
    ):
        listener.bind(str(path))
        listener.listen(0)
        first.connect(str(path))  # the backlog is full: a connect with a timeout gets EAGAIN

        def master():
            time.sleep(0.2)  # busy for a moment
            accepted, _ = listener.accept()
            accepted.close()
            accepted, _ = listener.accept()
            with accepted:
                accepted.recv(4096)
                accepted.sendall(control.encode_reply({}))

        thread = threading.Thread(target=master)
        thread.start()
        assert control.send_command(str(path), "status", timeout_s=10) == {"ok": True}
        thread.join()


def test_the_client_without_a_socket(tmp_path):
    with pytest.raises(ControlSocketError, match="no such socket: is the server running"):
        control.send_command(str(tmp_path / "none.sock"), "status", timeout_s=5)


def test_the_client_at_a_stale_socket(tmp_path):
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    with pytest.raises(ControlSocketError, match="nobody listens there"):
        control.send_command(str(path), "status", timeout_s=5)


def test_permission_denied_names_the_owner(tmp_path):
    path = tmp_path / "x.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        path.chmod(0o600)
        problem = control._connect_problem(str(path), PermissionError(errno.EACCES, "denied"))
    assert problem.startswith("permission denied: the socket is ")
    assert "(mode 0600): run this command as" in problem


# -- the status tables ----------------------------------------------------------------------------

DOCUMENT = {
    "ok": True,
    "server": {
        "pid": 100,
        "state": "running",
        "workers_wanted": 2,
        "threads": 8,
        "is_reloading": False,
        "listening": ["http://127.0.0.1:8000/"],
        "control_socket": "/run/mysite/control.sock",
    },
    "workers": [
        {
            "pid": 101,
            "number": 1,
            "state": "ready",
            "is_adopted": False,
            "age_s": 7384.2,
            "requests": 10234,
            "connections": 12,
            "busy_threads": 2,
            "rss_bytes": 89_338_265,
            "cpu_s": 120.33,
        },
        {
            "pid": 99,
            "number": 0,
            "state": "retiring",
            "is_adopted": True,
            "age_s": 90000,
            "requests": None,
            "connections": None,
            "busy_threads": None,
            "rss_bytes": None,
            "cpu_s": None,
        },
    ],
    "requests": [
        {
            "age_s": 0.25,
            "worker": 1,
            "worker_pid": 101,
            "thread_id": 7,
            "method": "GET",
            "path": "/fast",
        },
        {
            "age_s": 73.5,
            "worker": 1,
            "worker_pid": 101,
            "thread_id": 8,
            "method": "POST",
            "path": "/export\x1b[2J",
        },
    ],
    "config": [
        {"option": "BIND", "shown": "['127.0.0.1:8000']", "source": "default"},
        {"option": "THREADS", "shown": "8", "source": "command line --threads"},
    ],
}


def test_render_status():
    lines = statusview.render_status(DOCUMENT)
    assert lines[0] == "Master pid 100: running; 2 worker(s) wanted, 8 thread(s) each"
    assert "Listening at http://127.0.0.1:8000/" in lines
    header = next(line for line in lines if line.startswith("WORKER"))
    assert header.split() == [
        "WORKER",
        "PID",
        "STATE",
        "AGE",
        "REQUESTS",
        "CONNS",
        "BUSY",
        "RSS",
        "CPU",
    ]
    first = next(line for line in lines if line.startswith("1 "))
    assert first.split() == [
        "1",
        "101",
        "ready",
        "2h03m",
        "10234",
        "12",
        "2/8",
        "85.2",
        "MiB",
        "120.3s",
    ]
    adopted = next(line for line in lines if line.startswith("0 "))
    assert adopted.split() == ["0", "99", "retiring", "(adopted)", "1d01h", "-", "-", "-", "-", "-"]
    start = lines.index("2 request(s) running, oldest first:")
    assert lines[start + 1].split() == ["AGE", "WORKER", "PID", "THREAD", "METHOD", "PATH"]
    assert lines[start + 2].split() == ["1m13s", "1", "101", "8", "POST", "/export\\x1b[2J"]
    assert lines[start + 3].split() == ["0.25s", "1", "101", "7", "GET", "/fast"]
    assert lines[-1].split() == ["THREADS", "8", "command", "line", "--threads"]
    assert not any(line.startswith("BIND") for line in lines)  # at its default


def test_render_status_with_nothing_running():
    document = {**DOCUMENT, "requests": [], "config": DOCUMENT["config"][:1]}
    lines = statusview.render_status(document)
    assert "No request running." in lines
    assert lines[-1] == "Every option has its default (servectl config shows them)."


def test_render_config_shows_every_option():
    assert statusview.render_config(DOCUMENT) == [
        "OPTION   VALUE               SOURCE",
        "BIND     ['127.0.0.1:8000']  default",
        "THREADS  8                   command line --threads",
    ]


def test_render_status_of_a_document_missing_everything():
    lines = statusview.render_status({"ok": True})
    assert lines[0] == "Master pid -: -; - worker(s) wanted, - thread(s) each"
    assert "No worker." in lines


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        pytest.param(0.0123, "0.01s", id="tiny"),
        pytest.param(9.999, "10.00s", id="under-ten"),
        pytest.param(42.25, "42.2s", id="seconds"),
        pytest.param(245, "4m05s", id="minutes"),
        pytest.param(3600 * 2 + 180, "2h03m", id="hours"),
        pytest.param(86400 * 3 + 3600 * 4, "3d04h", id="days"),
        pytest.param(None, "-", id="unknown"),
        pytest.param(True, "-", id="not-a-number"),
    ],
)
def test_format_duration(seconds, expected):
    assert statusview.format_duration(seconds) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param(831_488, "812 KiB", id="kib"),
        pytest.param(89_338_265, "85.2 MiB", id="mib"),
        pytest.param(3 << 29, "1.5 GiB", id="gib"),
        pytest.param(None, "-", id="unknown"),
    ],
)
def test_format_bytes(size, expected):
    assert statusview.format_bytes(size) == expected


def test_the_json_of_a_status_round_trips():
    line = control.encode_reply({key: value for key, value in DOCUMENT.items() if key != "ok"})
    assert json.loads(line) == DOCUMENT


# -- the command's configuration errors ------------------------------------------------------------


def test_servectl_names_a_bad_setting_and_exits_with_2():
    with (
        override_settings(WSGISERVE={"CONTROL_SOCKET": "relative.sock"}),
        pytest.raises(CommandError, match=r"CONTROL_SOCKET \(settings.WSGISERVE") as caught,
    ):
        call_command("servectl", "status", stdout=io.StringIO(), stderr=io.StringIO())
    assert caught.value.returncode == 2


def test_servectl_without_a_server_exits_with_2(tmp_path):
    missing = str(tmp_path / "none.sock")
    with pytest.raises(CommandError, match="no such socket") as caught:
        call_command("servectl", "stop", "--control-socket", missing, stdout=io.StringIO())
    assert caught.value.returncode == 2
    assert missing in str(caught.value)
    assert "source: command line --control-socket" in str(caught.value)
