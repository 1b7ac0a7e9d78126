"""SIGHUP reloads the configuration too, through a real ``manage.py serve`` (reexec.py).

The server runs with ``tests.settings_config``, whose ``WSGISERVE`` is read from
``wsgiserve.json`` in the test's directory: a test rewrites the file, sends SIGHUP to the
master and looks from outside: ``/config`` (``tests.apps.config_probe``) reports the answering
worker's pid and its number of application threads (THREADS), the ``Server`` header is
SERVER_HEADER, and the log says what changed. Load comes from ``Load`` (client threads, one
request per connection, bounded in time); every failure counts. Servers started by
``tests/live.py`` get their socket as systemd would pass it (so BIND is ignored there); the
BIND tests start the server without it, on unix sockets in the test's directory.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sys
from typing import TYPE_CHECKING, Any

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from tests.integration.test_arbiter import Load
from tests.integration.test_systemd import (
    SOCKET_ACTIVATE,
    START_TIMEOUT_S,
    _fields,
    _first_connection,
    _free_port,
    _indices,
    _read_pending,
    _require,
    _spawn,
    _stop,
)
from tests.keepalive import KeepAliveLoad
from tests.live import (
    LiveServer,
    NotifyListener,
    count_messages,
    read_response,
    stop_all,
    wait_until,
    workers_of,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

SETTINGS = "tests.settings_config"


def write_config(directory: Path, **wsgiserve: object) -> None:
    (directory / "wsgiserve.json").write_text(json.dumps(wsgiserve), "utf-8")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start servers with the JSON-configured settings; each must exit 0 at the end."""
    servers: list[LiveServer] = []

    def start_server(*args: str, bound: bool = False, **kwargs: Any) -> LiveServer:
        server = LiveServer(
            log_path=tmp_path / f"server-{len(servers)}.log",
            binds_itself=bound,
            settings=SETTINGS,
            args=["--no-access-log", *args],
            env={"WSGISERVE_TEST_FILES_DIR": str(tmp_path)},
            **kwargs,
        )
        servers.append(server)
        return server.start()

    yield start_server
    stop_all(servers)
    for server in servers:
        assert "ResourceWarning" not in server.log(), server.log()[-3000:]


def probe(server: LiveServer, path: str = "/config") -> tuple[dict[str, Any], str | None]:
    response = server.get(path)
    assert response.status == 200, response
    return json.loads(response.body), response.header("server")


def hup_and_wait_ready(server: LiveServer, ready_count: int) -> None:
    server.send_signal(signal.SIGHUP)
    assert wait_until(lambda: count_messages(server, "READY=1") >= ready_count, timeout=30), (
        server.log()[-3000:]
    )


def assert_master_alive(server: LiveServer) -> None:
    assert server.process is not None
    assert server.process.poll() is None, server.log()[-3000:]


# -- a real server -------------------------------------------------------------------------------


def test_config_change_under_load_fails_no_request(start, tmp_path):
    write_config(tmp_path, WORKERS=2, THREADS=2)
    server = start()
    assert probe(server)[0]["threads"] == 2
    first = workers_of(server)
    assert len(first) == 2
    write_config(tmp_path, WORKERS=2, THREADS=4, MAX_REQUESTS=40, SERVER_HEADER="reloaded")
    # Clients of both kinds: one request per connection, and keep-alive ones (the old
    # workers, adopted by the re-executed master, drain their kept-alive connections).
    with Load(server) as load, KeepAliveLoad(server.address, clients=4) as keepalive:
        load.wait_for_requests(30)
        hup_and_wait_ready(server, 2)
        assert wait_until(lambda: len(workers_of(server)) == 2 and not first & workers_of(server))
        load.wait_for_requests(60)
        # MAX_REQUESTS is in effect: the new workers recycle themselves under the load.
        assert wait_until(lambda: "(MAX_REQUESTS): asking to be replaced" in server.log())
        load.wait_for_requests(30)
    assert load.failures == []
    assert keepalive.result.failures == []
    assert keepalive.result.ok > 0
    assert_master_alive(server)
    config, server_header = probe(server)
    assert config["threads"] == 4
    assert server_header == "reloaded"
    assert config["pid"] in workers_of(server)
    log = server.log()
    assert (
        "Reloading (SIGHUP): configuration changed (THREADS 2 -> 4, MAX_REQUESTS 0 -> 40, "
        "SERVER_HEADER 'django-wsgiserve' -> 'reloaded'); re-executing the master"
    ) in log
    assert re.search(
        rf"Master \(pid {server.pid}\) re-executed with the new configuration \(.*\); adopted 2 "
        r"old worker\(s\)",
        log,
    ), log[-3000:]
    for pid in first:  # the old workers drained, as children of the same master
        assert re.search(rf"Worker \d+ \(pid {pid}\) exited with code 0", log), log[-3000:]
    assert "Workers: 2 \N{MULTIPLICATION SIGN} 4 threads" in log  # the new image's banner


def test_invalid_config_keeps_serving_then_a_valid_one_applies(start, tmp_path):
    write_config(tmp_path, WORKERS=2, THREADS=2)
    server = start()
    first = workers_of(server)
    with Load(server) as load:
        load.wait_for_requests(20)
        write_config(tmp_path, WORKERS=2, THREADS=0)
        hup_and_wait_ready(server, 2)  # READY=1 again: systemd is not left "reloading"
        assert re.search(
            r"ERROR .*Reload failed: .*\n.*CommandError: THREADS \(settings\.WSGISERVE\['THREADS'\]"
            r"\): must be at least 1, got 0\n.*Still serving with the current configuration and "
            r"2 worker\(s\)",
            server.log(),
        ), server.log()[-3000:]
        (tmp_path / "wsgiserve.json").write_text('{"THREADS": ', "utf-8")  # settings break
        hup_and_wait_ready(server, 3)
        assert "json.decoder.JSONDecodeError" in server.log()
        load.wait_for_requests(20)
        assert workers_of(server) == first  # the old workers never stopped
        assert probe(server)[0]["threads"] == 2
        write_config(tmp_path, WORKERS=2, THREADS=3)
        hup_and_wait_ready(server, 4)
        assert wait_until(lambda: len(workers_of(server)) == 2 and not first & workers_of(server))
        load.wait_for_requests(30)
    assert load.failures == []
    assert_master_alive(server)
    assert probe(server)[0]["threads"] == 3
    assert server.log().count("Reload failed") == 2
    assert count_messages(server, "STATUS=Reload failed") == 2


def test_unchanged_config_reloads_code_only(start, tmp_path):
    write_config(tmp_path, WORKERS=1, THREADS=2)
    server = start()
    first = workers_of(server)
    hup_and_wait_ready(server, 2)
    assert wait_until(lambda: len(workers_of(server)) == 1 and not first & workers_of(server))
    log = server.log()
    assert "Reloading (SIGHUP): configuration unchanged; starting 1 new worker(s)" in log
    assert "re-executing" not in log


def test_notify_sequence_across_the_reexec_and_term_while_it_starts(start, tmp_path):
    write_config(tmp_path, WORKERS=1, THREADS=2)
    server = start()
    assert server.notify is not None
    write_config(tmp_path, WORKERS=1, THREADS=3)
    hup_and_wait_ready(server, 2)
    assert probe(server)[0]["threads"] == 3
    # Again, with SIGTERM as soon as the master re-executes: it waits, blocked, until the new
    # image has its handlers, and then drains everything, adopted workers included.
    write_config(tmp_path, WORKERS=1, THREADS=4)
    server.send_signal(signal.SIGHUP)
    assert wait_until(lambda: server.log().count("re-executing the master") == 2)
    server.send_signal(signal.SIGTERM)
    assert server.process is not None
    assert server.process.wait(30) == 0, server.log()[-3000:]
    assert not workers_of(server)
    _read_pending(server.notify)
    messages = server.notify.messages
    readies = _indices(messages, "READY")
    reloadings = _indices(messages, "RELOADING")
    stopping = _indices(messages, "STOPPING")
    assert len(reloadings) == 2, messages
    assert readies[0] < reloadings[0] < readies[1] < reloadings[1], messages
    assert len(stopping) == 1, messages
    assert reloadings[1] < stopping[0], messages
    assert int(_fields(messages[reloadings[0]])["MONOTONIC_USEC"]) > 0


def test_bind_changes_with_own_sockets(start, tmp_path):
    first_path, second_path = tmp_path / "a.sock", tmp_path / "b.sock"
    write_config(tmp_path, WORKERS=1, THREADS=2, BIND=[f"unix:{first_path}"])
    server = start(bound=True)
    server.address = str(first_path)
    # An address that cannot be listened at: nothing changes.
    write_config(
        tmp_path, WORKERS=1, THREADS=2, BIND=[f"unix:{first_path}", "unix:/nonexistent/c.sock"]
    )
    hup_and_wait_ready(server, 2)
    assert "the new BIND cannot be listened at: unix:/nonexistent/c.sock: No such file" in (
        server.log()
    )
    # A second address: the first keeps serving throughout.
    write_config(tmp_path, WORKERS=1, THREADS=2, BIND=[f"unix:{first_path}", f"unix:{second_path}"])
    with Load(server) as load:
        load.wait_for_requests(20)
        hup_and_wait_ready(server, 3)
        load.wait_for_requests(30)
    assert load.failures == []
    second = LiveServer(log_path=tmp_path / "unused.log", address=str(second_path))
    assert second.get("/hello").body == b"Hello, World!"
    # The first address dropped: its file goes once the old worker has stopped.
    write_config(tmp_path, WORKERS=1, THREADS=2, BIND=[f"unix:{second_path}"])
    hup_and_wait_ready(server, 4)
    assert wait_until(lambda: not first_path.exists()), server.log()[-3000:]
    assert second.get("/hello").body == b"Hello, World!"
    assert_master_alive(server)
    assert f"Removed {first_path}, no longer in BIND" in server.log()
    server.address = str(second_path)
    assert server.stop() == 0
    assert not second_path.exists()  # bound by the server: removed at exit, as before


def test_socket_activation_keeps_serving_after_a_config_change(tmp_path):
    _require(SOCKET_ACTIVATE)
    write_config(tmp_path, SERVER_HEADER="before")
    notify = NotifyListener()
    address = f"127.0.0.1:{_free_port()}"
    env = {"DJANGO_SETTINGS_MODULE": SETTINGS, "WSGISERVE_TEST_FILES_DIR": str(tmp_path)}
    server = _spawn(address, notify, tmp_path / "server.log", env)
    try:
        with _first_connection(server) as first:
            first.sendall(b"GET /config HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            before = read_response(first)
        assert before.header("server") == "before", server.log()
        assert notify.wait_for("READY=1", START_TIMEOUT_S), server.log()
        # BIND changes too, and stays ignored: the activated socket is the one that serves.
        write_config(tmp_path, SERVER_HEADER="after", BIND=["127.0.0.1:1"])
        os.kill(server.process.pid, signal.SIGHUP)
        assert notify.wait_until(lambda m: len(_indices(m, "READY")) >= 2, START_TIMEOUT_S), (
            server.log()
        )
        with server.connect() as sock:
            sock.sendall(b"GET /config HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            after = read_response(sock)
        assert after.header("server") == "after", server.log()
        assert json.loads(after.body)["pid"] != json.loads(before.body)["pid"]
        assert server.process.poll() is None
        log = server.log()
        assert "configuration changed (BIND ['127.0.0.1:8000'] -> ['127.0.0.1:1']" in log
        assert log.count("BIND ignored: listening sockets were passed by systemd") == 1
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(START_TIMEOUT_S) == 0, server.log()
    finally:
        _stop(server.process)
        notify.close()


# -- the check the master runs (in-process) ------------------------------------------------------


def test_reload_check_prints_the_configuration_as_json():
    out = io.StringIO()
    with override_settings(WSGISERVE={"THREADS": 3}):
        call_command("serve", "--reload-check", "--max-requests", "9", stdout=out)
    options = json.loads(out.getvalue().splitlines()[-1])["options"]
    assert options["THREADS"] == {"value": 3, "source": "settings.WSGISERVE['THREADS']"}
    assert options["MAX_REQUESTS"] == {"value": 9, "source": "command line --max-requests"}
    assert options["BIND"]["value"] == ["127.0.0.1:8000"]


def test_reload_check_fails_on_a_bad_value():
    with (
        override_settings(WSGISERVE={"TIMEOUT": -1}),
        pytest.raises(CommandError, match=r"TIMEOUT \(settings\.WSGISERVE\['TIMEOUT'\]\)"),
    ):
        call_command("serve", "--reload-check", stdout=io.StringIO())


def test_reload_command_is_the_command_line_only_when_run_from_one():
    from django_wsgiserve.management.commands.serve import Command

    command = Command()
    assert command.reload_command() is None  # call_command(): not our argv
    command._called_from_command_line = True  # type: ignore[attr-defined]
    assert command.reload_command() == [sys.executable, *sys.orig_argv[1:]]
