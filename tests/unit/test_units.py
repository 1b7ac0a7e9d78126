"""units.py and ``serve --systemd-unit``: golden unit files, and one rule per case.

The golden files in tests/unit/golden/ pin the whole text for a sample project; every fact is
given explicitly, so nothing depends on the machine. After an intended change, regenerate them
with ``WSGISERVE_TEST_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_units.py`` and
review the diff.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from django_wsgiserve import units
from django_wsgiserve.config import resolve_config
from django_wsgiserve.sockets import parse_bind

GOLDEN = Path(__file__).resolve().parent / "golden"


def _facts(**changes: Any) -> units.UnitFacts:
    """The sample of docs/deployment.md: /srv/mysite/current, sqlite in /var/lib/mysite."""
    bind = changes.pop("bind", ("127.0.0.1:8000",))
    facts = units.UnitFacts(
        name="mysite",
        description="mysite: Django site served by django-wsgiserve",
        working_directory="/srv/mysite/current",
        python="/srv/mysite/current/venv/bin/python",
        manage_py="/srv/mysite/current/manage.py",
        serve_args=("--workers", "4"),
        environment=(("DJANGO_SETTINGS_MODULE", "mysite.settings"), ("PYTHONUNBUFFERED", "1")),
        user="mysite",
        group="www-data",
        addresses=tuple(parse_bind(spec) for spec in bind),
        backlog=2048,
        graceful_timeout_s=30.0,
        read_write_paths=("/srv/mysite/media", "/var/lib/mysite"),
        read_paths=("/usr/lib/python3.11", "/usr"),
        watchdog_s=30,
    )
    return dataclasses.replace(facts, **changes)


def _setting(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


# -- golden files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("golden", "changes"),
    [
        pytest.param("mysite-tcp.txt", {}, id="service-tcp"),
        pytest.param(
            "mysite-socket-unix.txt",
            {"with_socket": True, "bind": ("unix:/run/mysite/mysite.sock", "127.0.0.1:8000")},
            id="service-and-socket-unix",
        ),
    ],
)
def test_golden_units(golden: str, changes: dict[str, Any]) -> None:
    text = units.render_units(_facts(**changes))
    path = GOLDEN / golden
    if os.environ.get("WSGISERVE_TEST_UPDATE_GOLDEN") == "1":
        path.write_text(text, "utf-8")
    assert text == path.read_text("utf-8")


def test_comments_are_on_their_own_lines() -> None:
    # systemd reads "Type=notify  # x" as the type "notify  # x".
    text = units.render_units(_facts(with_socket=True))
    for line in text.splitlines():
        assert line == "" or line.startswith(("#", "[")) or re.fullmatch(r"[A-Za-z]+=[^#]*", line)


def test_units_are_separated_by_their_paths() -> None:
    text = units.render_units(_facts(with_socket=True))
    headers = [line for line in text.splitlines() if line.startswith("# ")]
    assert headers == [
        "# /etc/systemd/system/mysite.service",
        "# /etc/systemd/system/mysite.socket",
    ]


# -- one rule per case --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, [""], id="unprivileged-port-no-capability"),
        pytest.param({"bind": ("0.0.0.0:80",)}, ["CAP_NET_BIND_SERVICE"], id="port-80"),
        pytest.param({"bind": ("[::]:443",)}, ["CAP_NET_BIND_SERVICE"], id="port-443-ipv6"),
        pytest.param(
            {"bind": ("0.0.0.0:80",), "with_socket": True}, [""], id="port-80-socket-unit-binds"
        ),
        pytest.param({"bind": ("unix:/run/mysite/s.sock",)}, [""], id="unix-socket"),
    ],
)
def test_capabilities(changes: dict[str, Any], expected: list[str]) -> None:
    service = units.render_service(_facts(**changes))
    assert _setting(service, "CapabilityBoundingSet") == expected
    ambient = [value for value in expected if value]
    assert _setting(service, "AmbientCapabilities") == ambient


@pytest.mark.parametrize(
    ("read_write_paths", "expected_rw", "expected_state"),
    [
        pytest.param(("/srv/mysite",), ["/srv/mysite"], [], id="sqlite-in-project"),
        pytest.param(
            ("/srv/mysite/media", "/srv/mysite"), ["/srv/mysite"], [], id="nested-collapse"
        ),
        pytest.param(("/var/lib/mysite",), [], ["mysite"], id="sqlite-in-var-lib"),
        pytest.param((), [], [], id="nothing-writable"),
        pytest.param(("/srv/my site",), ["/srv/my\\x20site"], [], id="space-escaped"),
    ],
)
def test_writable_paths(
    read_write_paths: tuple[str, ...], expected_rw: list[str], expected_state: list[str]
) -> None:
    service = units.render_service(_facts(read_write_paths=read_write_paths))
    assert _setting(service, "ReadWritePaths") == [" ".join(expected_rw)] * bool(expected_rw)
    assert _setting(service, "StateDirectory") == [" ".join(expected_state)] * bool(expected_state)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param(
            {"DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "/d/db"}}},
            ("/d",),
            id="sqlite-directory",
        ),
        pytest.param(
            {
                "DATABASES": {
                    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
                }
            },
            (),
            id="sqlite-memory",
        ),
        pytest.param(
            {"DATABASES": {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}}},
            (),
            id="postgresql",
        ),
        pytest.param({"MEDIA_ROOT": Path("/srv/media")}, ("/srv/media",), id="media-root-path"),
        pytest.param({"MEDIA_ROOT": ""}, (), id="media-root-unset"),
    ],
)
def test_writable_paths_from_settings(settings: dict[str, Any], expected: tuple[str, ...]) -> None:
    assert units.writable_paths(settings) == expected


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"bind": ("unix:/run/mysite/mysite.sock",)},
            {"RuntimeDirectory": ["mysite"], "UMask": ["0007"]},
            id="own-unix-socket-in-run",
        ),
        pytest.param(
            {"bind": ("unix:/run/mysite/mysite.sock",), "with_socket": True},
            {
                "RuntimeDirectory": ["mysite"],
                "RuntimeDirectoryPreserve": ["yes"],
                "UMask": ["0027"],
            },
            id="socket-unit-owns-the-path-control-socket-beside",
        ),
        pytest.param(
            {
                "bind": ("unix:/run/mysite/mysite.sock",),
                "with_socket": True,
                "control_socket": "off",
            },
            {"RuntimeDirectory": [], "RuntimeDirectoryPreserve": [], "UMask": ["0027"]},
            id="socket-unit-owns-the-path-no-control-socket",
        ),
        pytest.param(
            {"control_socket": ""},
            {"RuntimeDirectory": ["mysite"], "RuntimeDirectoryPreserve": []},
            id="automatic-control-socket-in-run-name",
        ),
        pytest.param(
            {"control_socket": "/run/ctl/mysite.sock"},
            {"RuntimeDirectory": ["ctl"]},
            id="control-socket-in-run",
        ),
        pytest.param(
            {"control_socket": "/srv/ctl/mysite.sock", "read_write_paths": ()},
            {"RuntimeDirectory": [], "ReadWritePaths": ["/srv/ctl"]},
            id="control-socket-elsewhere",
        ),
        pytest.param(
            {"bind": ("unix:/srv/sockets/mysite.sock",), "read_write_paths": ()},
            {"ReadWritePaths": ["/srv/sockets"], "UMask": ["0007"]},
            id="own-unix-socket-elsewhere",
        ),
        pytest.param(
            {"working_directory": "/home/me/mysite"},
            {"ProtectHome": ["read-only"]},
            id="project-under-home",
        ),
        pytest.param(
            {"read_paths": ("/root/.pyenv/versions/3.11.7/bin/python3.11",)},
            {"ProtectHome": ["read-only"]},
            id="interpreter-under-root",
        ),
        pytest.param({}, {"ProtectHome": ["yes"]}, id="nothing-under-home"),
        pytest.param({}, {"WatchdogSec": ["30"]}, id="watchdog"),
        pytest.param({"watchdog_s": 0}, {"WatchdogSec": []}, id="no-watchdog"),
        pytest.param({"notify_access": "all"}, {"NotifyAccess": ["all"]}, id="notify-access"),
        pytest.param({"graceful_timeout_s": 7.5}, {"TimeoutStopSec": ["18"]}, id="stop-timeout"),
        pytest.param(
            {"with_socket": True},
            {"Requires": ["mysite.socket"], "After": ["network-online.target mysite.socket"]},
            id="requires-socket",
        ),
        pytest.param(
            {"manage_py": None},
            {"ExecStart": ["/srv/mysite/current/venv/bin/python -m django serve --workers 4"]},
            id="no-manage-py",
        ),
        pytest.param(
            {"serve_args": ("--server-header", "a b%c$d")},
            {
                "ExecStart": [
                    "/srv/mysite/current/venv/bin/python /srv/mysite/current/manage.py serve "
                    '--server-header "a b%%c$$d"'
                ]
            },
            id="exec-quoting",
        ),
        pytest.param(
            {"environment": (("WSGISERVE_SERVER_HEADER", "x y"),)},
            {"Environment": ['"WSGISERVE_SERVER_HEADER=x y"']},
            id="environment-quoting",
        ),
    ],
)
def test_service_lines(changes: dict[str, Any], expected: dict[str, list[str]]) -> None:
    service = units.render_service(_facts(**changes))
    for key, values in expected.items():
        assert _setting(service, key) == values, key


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        pytest.param(
            ("unix:/run/mysite/mysite.sock",),
            {
                "ListenStream": ["/run/mysite/mysite.sock"],
                "SocketMode": ["0660"],
                "SocketGroup": ["www-data"],
            },
            id="unix",
        ),
        pytest.param(
            ("0.0.0.0:8000", "[::]:8000"),
            {
                "ListenStream": ["0.0.0.0:8000", "[::]:8000"],
                "BindIPv6Only": ["ipv6-only"],
                "SocketMode": [],
            },
            id="ipv4-and-ipv6",
        ),
        pytest.param(
            ("127.0.0.1:8000",),
            {"Backlog": ["2048"], "FileDescriptorName": ["http"], "WantedBy": ["sockets.target"]},
            id="tcp",
        ),
    ],
)
def test_socket_lines(bind: tuple[str, ...], expected: dict[str, list[str]]) -> None:
    socket_unit = units.render_socket(_facts(bind=bind, with_socket=True))
    for key, values in expected.items():
        assert _setting(socket_unit, key) == values, key


def test_host_names_cannot_go_into_a_socket_unit() -> None:
    with pytest.raises(ValueError, match="needs an IP address"):
        units.render_socket(_facts(bind=("localhost:8000",), with_socket=True))


def test_line_breaks_are_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        units.render_service(_facts(description="two\nlines"))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"bind": ("unix:/tmp/mysite.sock",)}, "private /tmp", id="unix-in-tmp"),
        pytest.param({"working_directory": "/home/me/site"}, "ProtectHome", id="home"),
        pytest.param(
            {"control_socket": "/tmp/mysite.ctl"}, "servectl will not see it", id="control-in-tmp"
        ),
    ],
)
def test_warnings(changes: dict[str, Any], expected: str) -> None:
    assert any(expected in warning for warning in units.unit_warnings(_facts(**changes)))


def test_no_warnings_for_the_sample() -> None:
    assert units.unit_warnings(_facts()) == []


@pytest.mark.parametrize(
    ("settings_module", "given", "expected"),
    [
        pytest.param("mysite.settings", None, "mysite", id="top-package"),
        pytest.param("config.settings.production", None, "config", id="nested"),
        pytest.param("mysite.settings", "shop.service", "shop", id="override-with-suffix"),
    ],
)
def test_unit_name(settings_module: str, given: str | None, expected: str) -> None:
    name = units.check_unit_name(given) if given else units.unit_name(settings_module)
    assert name == expected


def test_invalid_unit_name() -> None:
    with pytest.raises(ValueError, match="not a valid unit name"):
        units.check_unit_name("my site")


# -- gathering facts ----------------------------------------------------------------------------


def test_gather_facts_passes_command_line_and_environment_on() -> None:
    environ = {"WSGISERVE_THREADS": "4", "HOME": "/root"}
    config = resolve_config(
        {"USER": "nobody", "GROUP": "nogroup", "GRACEFUL_TIMEOUT": 20},
        environ,
        {"workers": "3", "bind": ["unix:/run/s/s.sock"], "static": False},
    )
    facts = units.gather_facts(
        config,
        {"SETTINGS_MODULE": "shop.settings", "MEDIA_ROOT": "/srv/shop/media"},
        environ,
        python="/srv/shop/venv/bin/../bin/python",
        python_paths=("/usr/bin/python3.11",),
        manage_py="/srv/shop/manage.py",
        cwd="/",
    )
    assert facts.name == "shop"
    assert facts.working_directory == "/srv/shop"
    assert facts.python == "/srv/shop/venv/bin/python"
    assert facts.serve_args == ("--bind", "unix:/run/s/s.sock", "--workers", "3", "--no-static")
    assert facts.environment == (
        ("DJANGO_SETTINGS_MODULE", "shop.settings"),
        ("WSGISERVE_THREADS", "4"),
        ("PYTHONUNBUFFERED", "1"),
    )
    assert (facts.user, facts.group) == ("nobody", "nogroup")
    assert facts.graceful_timeout_s == 20.0
    assert facts.read_write_paths == ("/srv/shop/media",)


def test_gather_facts_leaves_bind_to_the_socket_unit() -> None:
    environ = {"WSGISERVE_BIND": "127.0.0.1:9000"}
    config = resolve_config({"USER": "nobody"}, environ, {"bind": ["127.0.0.1:9001"]})
    facts = units.gather_facts(
        config,
        {"SETTINGS_MODULE": "shop.settings"},
        environ,
        python="/usr/bin/python3",
        python_paths=(),
        manage_py=None,
        cwd="/nonexistent",
        with_socket=True,
        name="web",
    )
    assert facts.serve_args == ()
    assert [key for key, _ in facts.environment] == ["DJANGO_SETTINGS_MODULE", "PYTHONUNBUFFERED"]
    assert [str(address) for address in facts.addresses] == ["127.0.0.1:9001"]
    assert facts.name == "web"
    assert facts.manage_py is None


# -- the command --------------------------------------------------------------------------------


def _systemd_unit(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("serve", "--systemd-unit", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_command_prints_the_units(tmp_path: Path) -> None:
    wsgiserve = {"USER": "nobody", "BIND": ["unix:/run/tests/tests.sock"]}
    with override_settings(MEDIA_ROOT=str(tmp_path / "media"), WSGISERVE=wsgiserve):
        text, _ = _systemd_unit("--socket", "--graceful-timeout", "5")
    assert text.startswith("# /etc/systemd/system/tests.service\n")
    assert "\n# /etc/systemd/system/tests.socket\n" in text
    assert f"ReadWritePaths={tmp_path / 'media'}" in text.splitlines()
    assert "Environment=DJANGO_SETTINGS_MODULE=tests.settings" in text.splitlines()
    assert "ListenStream=/run/tests/tests.sock" in text.splitlines()
    assert "TimeoutStopSec=15" in text.splitlines()
    exec_start = _setting(text, "ExecStart")[0]
    assert exec_start.startswith(os.path.normpath(sys.executable) + " ")
    assert exec_start.endswith(" serve --graceful-timeout 5")


def test_command_unit_name_option() -> None:
    with override_settings(WSGISERVE={"USER": "nobody"}):
        text, warnings = _systemd_unit("--unit-name", "shop")
    assert text.startswith("# /etc/systemd/system/shop.service\n")
    # The control socket follows the unit's RuntimeDirectory, where servectl does not look.
    assert "RuntimeDirectory=shop" in text.splitlines()
    assert "WSGISERVE[\"CONTROL_SOCKET\"] = '/run/shop/control.sock'" in warnings


def test_command_unit_name_with_a_control_socket_set() -> None:
    wsgiserve = {"USER": "nobody", "CONTROL_SOCKET": "/run/shop/control.sock"}
    with override_settings(WSGISERVE=wsgiserve):
        text, warnings = _systemd_unit("--unit-name", "shop")
    assert "RuntimeDirectory=shop" in text.splitlines()
    assert "CONTROL_SOCKET" not in warnings


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("--socket",), "go with --systemd-unit", id="socket-alone"),
        pytest.param(("--systemd-unit", "--unit-name", "a b"), "valid unit name", id="bad-name"),
        pytest.param(
            ("--systemd-unit", "--socket", "--bind", "localhost:80"), "IP address", id="hostname"
        ),
    ],
)
def test_command_errors(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message) as caught:
        call_command("serve", *args, stdout=io.StringIO(), stderr=io.StringIO())
    assert caught.value.returncode == 2


@pytest.mark.parametrize(
    ("cli", "watchdog", "notify_access"),
    [
        pytest.param({}, units.DEFAULT_WATCHDOG_S, "main", id="prefork"),
        pytest.param({"reload": True}, 0, "all", id="reload-child-notifies"),
    ],
)
def test_gather_facts_reload(cli: dict[str, Any], watchdog: int, notify_access: str) -> None:
    config = resolve_config({"USER": "nobody"}, {}, cli)
    facts = units.gather_facts(
        config, {}, {}, python="/usr/bin/python3", python_paths=(), manage_py=None, cwd="/"
    )
    assert (facts.watchdog_s, facts.notify_access) == (watchdog, notify_access)
