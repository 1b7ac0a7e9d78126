"""manage.py serve without a running server: --print-config, errors, --help, and the run path
with the worker replaced by a stand-in that returns at once."""

from __future__ import annotations

import io
import logging
import socket
import types
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from django_wsgiserve import config, sockets
from django_wsgiserve.management.commands.serve import Command, ListenError


def _print_config(*args: str, **options: Any) -> dict[str, tuple[str, str]]:
    out = io.StringIO()
    call_command("serve", "--print-config", *args, stdout=out, **options)
    header, *lines = out.getvalue().splitlines()
    assert header.split() == ["OPTION", "VALUE", "SOURCE"]
    value_at, source_at = header.index("VALUE"), header.index("SOURCE")
    return {
        line[:value_at].strip(): (line[value_at:source_at].strip(), line[source_at:])
        for line in lines
    }


def _command_error(*args: str, **options: Any) -> CommandError:
    with pytest.raises(CommandError) as caught:
        call_command("serve", "--print-config", *args, stdout=io.StringIO(), **options)
    return caught.value


# -- --print-config -----------------------------------------------------------------------------


def test_print_config_lists_every_option():
    rows = _print_config()
    assert list(rows) == [option.setting for option in config.OPTIONS]
    assert rows["THREADS"] == ("8", "default")
    assert rows["BIND"] == ("['127.0.0.1:8000']", "default")


def test_print_config_shows_precedence(monkeypatch):
    monkeypatch.setenv("WSGISERVE_THREADS", "3")
    monkeypatch.setenv("WSGISERVE_TIMEOUT", "5")
    settings = {"THREADS": 2, "BACKLOG": 100, "TIMEOUT": 9.0}
    with override_settings(WSGISERVE=settings):
        rows = _print_config("--threads", "4", "--no-access-log")
    assert rows["THREADS"] == ("4", "command line --threads")
    assert rows["TIMEOUT"] == ("5.0", "environment WSGISERVE_TIMEOUT")
    assert rows["BACKLOG"] == ("100", "settings.WSGISERVE['BACKLOG']")
    assert rows["ACCESS_LOG"] == ("False", "command line --no-access-log")
    assert rows["MAX_HEADERS"] == ("100", "default")


@pytest.mark.parametrize(
    ("argv", "bind", "source"),
    [
        pytest.param(["9000"], "127.0.0.1:9000", "command line addrport '9000'", id="port"),
        pytest.param(["0:9000"], "0:9000", "command line addrport '0:9000'", id="zero"),
        pytest.param(["1.2.3.4:80"], "1.2.3.4:80", "command line addrport '1.2.3.4:80'", id="ipv4"),
        pytest.param(["[::1]:80"], "[::1]:80", "command line addrport '[::1]:80'", id="ipv6"),
        pytest.param(["-6", "9000"], "[::1]:9000", "command line addrport '9000'", id="6-port"),
        pytest.param(["-6"], "[::1]:8000", "command line --ipv6", id="6-alone"),
        pytest.param(["--ipv6", "localhost:80"], "localhost:80", None, id="6-name"),
        pytest.param(["unix:/run/x.sock"], "unix:/run/x.sock", None, id="unix"),
        pytest.param(
            ["--bind", "0:1", "--bind", "0:2"], "0:1', '0:2", "command line --bind", id="b"
        ),
    ],
)
def test_addrport(argv, bind, source):
    value, actual_source = _print_config(*argv)["BIND"]
    assert value == f"['{bind}']"
    if source is not None:
        assert actual_source == source


def test_ipv6_flag_does_not_override_configured_bind():
    with override_settings(WSGISERVE={"BIND": ["0:80"]}):
        assert _print_config("-6")["BIND"] == ("['0:80']", "settings.WSGISERVE['BIND']")


def test_addrport_overrides_settings():
    with override_settings(WSGISERVE={"BIND": ["0:80"]}):
        assert _print_config("81")["BIND"][0] == "['127.0.0.1:81']"


def test_runserver_flags():
    rows = _print_config("--noreload", "--nostatic")
    assert rows["RELOAD"] == ("False", "command line --no-reload")
    assert rows["STATIC"] == ("False", "command line --no-static")
    assert _print_config("--reload")["RELOAD"] == ("True", "command line --reload")


# -- errors: status 2, option and source named --------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["nonsense"], '"nonsense" is not a valid port number', id="addrport"),
        pytest.param(["-6", "1.2.3.4:80"], "is not a valid IPv6 address", id="ipv6-mismatch"),
        pytest.param(["70000"], "BIND (command line addrport '70000'): ", id="port-range"),
        pytest.param(["80", "--bind", "0:81"], "either addrport or --bind", id="both"),
        pytest.param(["--threads", "many"], "THREADS (command line --threads): expected", id="cli"),
        pytest.param(["--access-log-format", "xml"], "expected one of", id="choice"),
    ],
)
def test_command_line_errors(argv, message):
    error = _command_error(*argv)
    assert message in str(error)
    assert error.returncode == 2


def test_bad_setting_names_option_and_source():
    with override_settings(WSGISERVE={"THREADS": "8"}):
        error = _command_error()
    assert str(error) == "THREADS (settings.WSGISERVE['THREADS']): expected an integer, got str '8'"
    assert error.returncode == 2


def test_bind_with_one_address_for_two_protocols_is_a_command_error():
    with override_settings(WSGISERVE={"BIND": ["uwsgi:127.0.0.1:9000", "127.0.0.1:9000"]}):
        error = _command_error()
    assert str(error).startswith(
        "BIND (settings.WSGISERVE['BIND']): 'uwsgi:127.0.0.1:9000' and '127.0.0.1:9000' are "
        "one address with two protocols"
    )
    assert error.returncode == 2


def test_unknown_setting_key():
    with override_settings(WSGISERVE={"MAX_REQUEST": 10}):
        error = _command_error()
    assert str(error).startswith("MAX_REQUEST (settings.WSGISERVE['MAX_REQUEST']): unknown option")
    assert "did you mean 'MAX_REQUESTS'?" in str(error)
    assert error.returncode == 2


def test_bad_environment_variable(monkeypatch):
    monkeypatch.setenv("WSGISERVE_RELOAD", "perhaps")
    error = _command_error()
    assert str(error).startswith("RELOAD (environment WSGISERVE_RELOAD): expected True or False")


def test_settings_not_a_dict():
    with override_settings(WSGISERVE=[("THREADS", 8)]):
        error = _command_error()
    assert str(error) == "settings.WSGISERVE must be a dict, not list."
    assert error.returncode == 2


def test_exit_status_2_from_the_command_line(capsys):
    with pytest.raises(SystemExit) as caught:
        Command().run_from_argv(["manage.py", "serve", "--print-config", "--backlog", "0"])
    assert caught.value.code == 2
    assert "CommandError: BACKLOG (command line --backlog): must be at least 1" in (
        capsys.readouterr().err
    )


def test_help_lists_generated_flags():
    help_text = Command().create_parser("manage.py", "serve").format_help()
    for option in config.OPTIONS:
        for flag in option.flags:
            assert flag in help_text
    assert "--no-static" in help_text
    for flag in (
        "addrport",
        "--ipv6",
        "--noreload",
        "--nostatic",
        "--print-config",
        "--skip-checks",
    ):
        assert flag in help_text
    assert "server options: Timeouts" in help_text


# -- pieces of the run path ---------------------------------------------------------------------


def test_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        resolved = config.resolve_config({"BIND": [f"127.0.0.1:{port}"]}, {}, {})
        with pytest.raises(ListenError) as caught:
            Command().open_listeners(resolved)
    assert str(caught.value) == f"Can't listen at 127.0.0.1:{port}: That port is already in use."


@override_settings(WSGI_APPLICATION="tests.apps.does_not_exist.application")
def test_bad_wsgi_application():
    with pytest.raises(CommandError, match=r"^WSGI_APPLICATION: "):
        Command().get_handler()


@pytest.mark.parametrize(
    ("logging_setting", "logging_config", "applied"),
    [
        pytest.param({}, "logging.config.dictConfig", True, id="not-configured"),
        pytest.param(
            {"loggers": {"django": {"level": "INFO"}}},
            "logging.config.dictConfig",
            True,
            id="other",
        ),
        pytest.param(
            {"loggers": {"django_wsgiserve": {}}}, "logging.config.dictConfig", False, id="ours"
        ),
        pytest.param(
            {"loggers": {"django_wsgiserve.access": {}}},
            "logging.config.dictConfig",
            False,
            id="acc",
        ),
        pytest.param({}, None, False, id="logging-config-none"),
    ],
)
def test_configure_logging(monkeypatch, logging_setting, logging_config, applied):
    applied_fragments: list[dict[str, Any]] = []
    monkeypatch.setattr("logging.config.dictConfig", applied_fragments.append)
    # Not override_settings: Django 6 reconfigures logging when LOGGING changes.
    monkeypatch.setattr(settings, "LOGGING", logging_setting)
    monkeypatch.setattr(settings, "LOGGING_CONFIG", logging_config)
    Command().configure_logging(colour=False)
    assert bool(applied_fragments) is applied
    if applied:
        assert applied_fragments[0]["loggers"]["django_wsgiserve.access"]["propagate"] is False


class _FakeMaster:
    """Stands in for django_wsgiserve.arbiter: records the Arbiter, returns from run() at once."""

    def __init__(self) -> None:
        self.calls: list[tuple[config.ServerConfig, list[socket.socket], dict[str, Any]]] = []
        self.exit_code = 0

    def arbiter(
        self, resolved: config.ServerConfig, listeners: list[socket.socket], **kwargs: Any
    ) -> _FakeMaster:
        self.calls.append((resolved, list(listeners), kwargs))
        return self

    def run(self) -> int:
        for listener in self.calls[-1][1]:  # the listeners really listen
            with socket.socket(listener.family, socket.SOCK_STREAM) as client:
                client.connect(listener.getsockname())
        return self.exit_code

    failure = "Worker 1 (pid 7) could not load the application 'x.application'"


@pytest.fixture
def fake_worker(monkeypatch):
    master = _FakeMaster()
    module = types.ModuleType("django_wsgiserve.arbiter")
    module.Arbiter = master.arbiter  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "django_wsgiserve.arbiter", module)
    monkeypatch.setattr("logging.config.dictConfig", lambda fragment: None)
    return master


def test_run_binds_prints_banner_and_cleans_up(fake_worker, tmp_path):
    sock_path = tmp_path / "http.sock"
    out = io.StringIO()
    call_command(
        "serve", f"unix:{sock_path}", "--threads", "3", "--workers", "1", "--no-static",
        stdout=out, skip_checks=False,
    )  # fmt: skip
    banner = out.getvalue()
    assert "Performing system checks..." in banner
    assert "System check identified no issues" in banner
    assert "Django version " in banner
    assert "using settings 'tests.settings'" in banner
    assert "django-wsgiserve " in banner
    assert f"Listening at unix:{sock_path}\n" in banner
    assert "Workers: 1 \N{MULTIPLICATION SIGN} 3 threads" in banner
    assert "Static files: off" in banner
    assert banner.rstrip().endswith("Quit the server with CONTROL-C.")
    assert "development server" not in banner
    ((resolved, listeners, arbiter_options),) = fake_worker.calls
    assert resolved.threads == 3
    assert arbiter_options["preloaded"] is None  # PRELOAD off: the workers import the app
    assert callable(arbiter_options["load_application"])
    assert arbiter_options["app_name"] == "tests.apps.router.application"
    assert all(listener.fileno() == -1 for listener in listeners)  # closed
    assert not sock_path.exists()  # bound by the command: unlinked


def test_run_with_inherited_sockets(fake_worker, tmp_path, monkeypatch, caplog):
    sock_path = tmp_path / "inherited.sock"
    inherited = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    inherited.bind(str(sock_path))
    inherited.listen(1)
    monkeypatch.setattr(sockets, "inherited_listeners", lambda environ: [inherited])
    caplog.set_level(logging.INFO, logger="django_wsgiserve")
    with override_settings(WSGISERVE={"BIND": ["0:80"]}):
        call_command("serve", "--skip-checks", stdout=io.StringIO())
    assert "BIND ignored: listening sockets were passed by systemd" in caplog.messages
    assert inherited.fileno() == -1
    assert sock_path.exists()  # systemd's socket file is never unlinked


def test_static_line_names_static_root(fake_worker, tmp_path):
    out = io.StringIO()
    with override_settings(STATIC_ROOT=str(tmp_path / "static")):
        call_command("serve", "--skip-checks", "127.0.0.1:0", stdout=out)
    assert f"Static files: {tmp_path / 'static'}" in out.getvalue()
    assert "Listening at http://127.0.0.1:" in out.getvalue()


def test_reload_uses_the_autoreloader(monkeypatch):
    calls = []
    monkeypatch.setattr(
        "django.utils.autoreload.run_with_reloader", lambda *a, **kw: calls.append((a, kw))
    )
    monkeypatch.setattr("logging.config.dictConfig", lambda fragment: None)
    call_command("serve", "--reload", stdout=io.StringIO())
    ((args, kwargs),) = calls
    assert args[0].__name__ == "_inner_run_reloading"
    assert args[1].reload is True
    assert kwargs["reload"] is True


def test_bind_error_under_the_reloader_exits(monkeypatch):
    exits: list[int] = []
    stderr = io.StringIO()
    command = Command(stdout=io.StringIO(), stderr=stderr)

    def inner_run(resolved: config.ServerConfig, **options: Any) -> None:
        raise ListenError("Can't listen at 127.0.0.1:80: That port is already in use.")

    monkeypatch.setattr(command, "inner_run", inner_run)
    monkeypatch.setattr("os._exit", exits.append)
    command._inner_run_reloading(config.resolve_config({}, {}, {}))
    assert exits == [1]
    assert "Error: Can't listen at 127.0.0.1:80" in stderr.getvalue()


def test_preload_imports_the_application_in_the_master(fake_worker):
    call_command("serve", "--skip-checks", "127.0.0.1:0", "--preload", stdout=io.StringIO())
    ((_resolved, _listeners, arbiter_options),) = fake_worker.calls
    assert callable(arbiter_options["preloaded"])


def test_worker_boot_failure_exits_with_its_code(fake_worker):
    fake_worker.exit_code = 4
    with pytest.raises(CommandError, match="could not load the application") as caught:
        call_command("serve", "--skip-checks", "127.0.0.1:0", stdout=io.StringIO())
    assert caught.value.returncode == 4
