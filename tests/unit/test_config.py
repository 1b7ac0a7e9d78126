"""ServerConfig, resolve_config() and the generated settings page: pure tests, no Django."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from django_wsgiserve import config
from django_wsgiserve.config import (
    OPTIONS,
    ConflictingOptionsError,
    InvalidOptionValueError,
    ServerConfig,
    UnknownOptionError,
    add_arguments,
    config_errors,
    describe_config,
    given_cli_options,
    resolve_config,
)
from django_wsgiserve.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gen_settings_doc", REPO / "scripts" / "gen_settings_doc.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- precedence ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "environ", "cli", "expected", "source"),
    [
        pytest.param({}, {}, {}, 8, "default", id="default"),
        pytest.param(
            {"THREADS": 2}, {}, {}, 2, "settings.WSGISERVE['THREADS']", id="settings-over-default"
        ),
        pytest.param(
            {"THREADS": 2},
            {"WSGISERVE_THREADS": "3"},
            {},
            3,
            "environment WSGISERVE_THREADS",
            id="environment-over-settings",
        ),
        pytest.param(
            {"THREADS": 2},
            {"WSGISERVE_THREADS": "3"},
            {"threads": "4"},
            4,
            "command line --threads",
            id="cli-over-environment",
        ),
        pytest.param(
            {}, {}, {"threads": 5}, 5, "command line --threads", id="cli-typed-call-command"
        ),
        pytest.param(
            {},
            {"WSGISERVE_THREADS": "3"},
            {},
            3,
            "environment WSGISERVE_THREADS",
            id="environment-over-default",
        ),
        pytest.param(
            {"THREADS": 2},
            {},
            {"threads": "6"},
            6,
            "command line --threads",
            id="cli-over-settings",
        ),
    ],
)
def test_precedence(settings, environ, cli, expected, source):
    resolved = resolve_config(settings, environ, cli)
    assert resolved.threads == expected
    assert resolved.source_of("threads") == source
    assert resolved.source_of("THREADS") == source


def test_sources_are_per_option():
    resolved = resolve_config(
        {"BACKLOG": 10, "THREADS": 2}, {"WSGISERVE_TIMEOUT": "5"}, {"static": False}
    )
    assert resolved.source_of("backlog") == "settings.WSGISERVE['BACKLOG']"
    assert resolved.source_of("timeout") == "environment WSGISERVE_TIMEOUT"
    assert resolved.source_of("static") == "command line --no-static"
    assert resolved.source_of("max_headers") == "default"


def test_cli_sources_relabel():
    resolved = resolve_config(
        {}, {}, {"bind": ("0:80",)}, cli_sources={"bind": "command line addrport '0:80'"}
    )
    assert resolved.source_of("bind") == "command line addrport '0:80'"


def test_source_of_unknown_name():
    with pytest.raises(KeyError):
        resolve_config({}, {}, {}).source_of("thread")


def test_workers_zero_means_cpu_count(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert resolve_config({}, {}, {}).workers == 6
    assert resolve_config({"WORKERS": 3}, {}, {}).workers == 3
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert resolve_config({}, {}, {}).workers == 1


def test_workers_zero_is_counted_by_the_constructor(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert ServerConfig().workers == 6
    assert dataclasses.replace(ServerConfig(workers=2), workers=0).workers == 6


# -- environment text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        pytest.param("threads", "12", 12, id="int"),
        pytest.param("threads", " 12 ", 12, id="int-spaces"),
        pytest.param("max_requests", "+0", 0, id="int-plus"),
        pytest.param("timeout", "2.5", 2.5, id="seconds-decimal"),
        pytest.param("timeout", "3", 3.0, id="seconds-integer"),
        pytest.param("timeout", "1e1", 10.0, id="seconds-exponent"),
        pytest.param("reload", "1", True, id="bool-1"),
        pytest.param("reload", "0", False, id="bool-0"),
        pytest.param("reload", "TRUE", True, id="bool-true-upper"),
        pytest.param("reload", "false", False, id="bool-false"),
        pytest.param("reload", "yes", True, id="bool-yes"),
        pytest.param("reload", "no", False, id="bool-no"),
        pytest.param("reload", "on", True, id="bool-on"),
        pytest.param("reload", "off", False, id="bool-off"),
        pytest.param("bind", "0:80, [::]:80", ("0:80", "[::]:80"), id="list-comma"),
        pytest.param("bind", "unix:/run/a.sock,", ("unix:/run/a.sock",), id="list-trailing-comma"),
        pytest.param("server_header", " spaced ", " spaced ", id="str-verbatim"),
        pytest.param("server_header", "", "", id="str-empty"),
        pytest.param("umask", "022", 0o022, id="octal-plain"),
        pytest.param("umask", "0o027", 0o027, id="octal-prefix"),
        pytest.param("umask", "", None, id="octal-empty-is-none"),
        pytest.param("access_log_format", "json", "json", id="choice"),
    ],
)
def test_environment_parsing(name, text, expected):
    declared = config.OPTIONS_BY_NAME[name]
    resolved = resolve_config({}, {declared.env: text}, {})
    assert getattr(resolved, name) == expected
    assert resolved.source_of(name) == f"environment {declared.env}"


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        pytest.param("threads", "8x", "expected an integer, got '8x'", id="int-garbage"),
        pytest.param("threads", "1.5", "expected an integer", id="int-decimal"),
        pytest.param("threads", "", "expected an integer", id="int-empty"),
        pytest.param("threads", "0", "must be at least 1", id="int-below-minimum"),
        pytest.param("timeout", "soon", "number of seconds", id="seconds-garbage"),
        pytest.param("timeout", "inf", "number of seconds", id="seconds-infinite"),
        pytest.param("timeout", "nan", "number of seconds", id="seconds-nan"),
        pytest.param("timeout", "-1", "must be at least 0", id="seconds-negative"),
        pytest.param("header_timeout", "0", "must be greater than 0", id="seconds-not-above"),
        pytest.param("reload", "maybe", "True or False", id="bool-garbage"),
        pytest.param("umask", "0o999", "octal", id="octal-bad-digit"),
        pytest.param("umask", "01777", "between 0o000 and 0o777", id="octal-range"),
        pytest.param("access_log_format", "apache", "expected one of", id="choice"),
        pytest.param("bind", "", "needs at least one address", id="list-empty"),
        pytest.param("bind", "localhost:99999", "port must be a number", id="bind-port"),
    ],
)
def test_environment_errors_name_option_and_source(name, text, fragment):
    declared = config.OPTIONS_BY_NAME[name]
    with pytest.raises(InvalidOptionValueError, match=fragment) as caught:
        resolve_config({}, {declared.env: text}, {})
    assert caught.value.option == declared.setting
    assert caught.value.source == f"environment {declared.env}"


# -- settings values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        pytest.param("THREADS", 4, 4, id="int"),
        pytest.param("TIMEOUT", 5, 5.0, id="seconds-from-int"),
        pytest.param("TIMEOUT", 0.25, 0.25, id="seconds-float"),
        pytest.param("RELOAD", True, True, id="bool"),
        pytest.param("BIND", ["0:80", "[::]:80"], ("0:80", "[::]:80"), id="list-to-tuple"),
        pytest.param("BIND", ("unix:/run/x.sock",), ("unix:/run/x.sock",), id="tuple"),
        pytest.param("SCRIPT_NAME", "/app", "/app", id="str"),
        pytest.param("UMASK", 0o022, 0o022, id="octal-int"),
        pytest.param("UMASK", "0o077", 0o077, id="octal-text"),
        pytest.param("UMASK", None, None, id="octal-none"),
    ],
)
def test_settings_values(key, value, expected):
    resolved = resolve_config({key: value}, {}, {})
    assert getattr(resolved, key.lower()) == expected
    assert isinstance(getattr(resolved, key.lower()), type(expected))


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        pytest.param("THREADS", "8", "expected an integer, got str '8'", id="int-as-string"),
        pytest.param("THREADS", True, "expected an integer, got bool True", id="bool-as-int"),
        pytest.param("THREADS", 2.0, "expected an integer, got float", id="float-as-int"),
        pytest.param("MAX_REQUESTS", -1, "must be at least 0", id="negative"),
        pytest.param("TIMEOUT", "30", "number of seconds", id="seconds-as-string"),
        pytest.param("TIMEOUT", False, "number of seconds", id="bool-as-seconds"),
        pytest.param("TIMEOUT", float("inf"), "finite", id="seconds-infinite"),
        pytest.param("RELOAD", 1, "True or False", id="int-as-bool"),
        pytest.param("RELOAD", "yes", "True or False", id="string-as-bool"),
        pytest.param("BIND", "0:8000", r"write \['0:8000'\]", id="string-as-list"),
        pytest.param("BIND", [8000], "list of strings", id="list-of-int"),
        pytest.param("BIND", [], "needs at least one address", id="list-empty"),
        pytest.param("BIND", ["1.2.3.4:80", "1.2.3.4:80"], "more than once", id="duplicate"),
        pytest.param("BIND", ["::1:80"], "brackets", id="bare-ipv6"),
        pytest.param("SCRIPT_NAME", "app", "start with '/'", id="script-name-relative"),
        pytest.param("SCRIPT_NAME", "/app/", "not end with '/'", id="script-name-slash"),
        pytest.param("SERVER_HEADER", "x\r\nSet-Cookie: a", "printable ASCII", id="header-crlf"),
        pytest.param("SERVER_HEADER", 1, "a string", id="header-not-str"),
        pytest.param("ACCESS_LOG_FORMAT", "apache", "one of combined", id="choice"),
        pytest.param("UMASK", True, "octal", id="octal-bool"),
        pytest.param("UMASK", 0o1000, "between", id="octal-range"),
        pytest.param("HEADER_TIMEOUT", 0, "greater than 0", id="header-timeout-zero"),
    ],
)
def test_settings_errors_name_option_and_source(key, value, fragment):
    with pytest.raises(InvalidOptionValueError, match=fragment) as caught:
        resolve_config({key: value}, {}, {})
    assert caught.value.option == key
    assert caught.value.source == f"settings.WSGISERVE[{key!r}]"


@pytest.mark.parametrize(
    ("bind", "fragment"),
    [
        pytest.param(
            ["uwsgi:127.0.0.1:9000", "127.0.0.1:9000"],
            "'uwsgi:127.0.0.1:9000' and '127.0.0.1:9000' are one address with two protocols",
            id="tcp-two-protocols",
        ),
        pytest.param(
            ["fastcgi:9000", "uwsgi:127.0.0.1:9000"],
            "'fastcgi:9000' and 'uwsgi:127.0.0.1:9000' are one address with two protocols",
            id="bare-port-two-protocols",
        ),
        pytest.param(
            ["uwsgi:unix:/run/app.sock", "fastcgi:unix:/run/app.sock"],
            "are one address with two protocols",
            id="unix-two-protocols",
        ),
        pytest.param(
            ["unix:/run/app.sock", "unix:/run//app.sock"],
            "'unix:/run/app.sock' and 'unix:/run//app.sock' are one address",
            id="unix-same-path-spelled-twice",
        ),
        pytest.param(
            ["9000", "127.0.0.1:9000"], "given more than once", id="tcp-same-address-spelled-twice"
        ),
        pytest.param(
            ["0.0.0.0:9000", "uwsgi:127.0.0.1:9000"],
            "overlap: 0.0.0.0 listens on every IPv4 address",
            id="ipv4-wildcard-overlap",
        ),
        pytest.param(
            ["[::1]:9000", "[::]:9000"],
            "overlap: :: listens on every IPv6 address",
            id="ipv6-wildcard-overlap",
        ),
    ],
)
def test_bind_entries_that_are_one_socket_are_refused(bind, fragment):
    # Two BIND entries for one socket would fail later with "address in use" (or, for a unix
    # socket, take over a path and share its listener); a listener speaks one protocol.
    with pytest.raises(InvalidOptionValueError, match=re.escape(fragment)) as caught:
        resolve_config({"BIND": bind}, {}, {})
    assert caught.value.option == "BIND"
    assert caught.value.source == "settings.WSGISERVE['BIND']"


@pytest.mark.parametrize(
    "bind",
    [
        pytest.param(["[::]:9000", "0.0.0.0:9000"], id="ipv6-only-beside-ipv4"),
        pytest.param(["127.0.0.1:9000", "uwsgi:127.0.0.2:9000"], id="other-host"),
        pytest.param(["127.0.0.1:9000", "uwsgi:127.0.0.1:9001"], id="other-port"),
        pytest.param(["127.0.0.1:0", "uwsgi:127.0.0.1:0"], id="two-ephemeral-ports"),
        pytest.param(["unix:/run/a.sock", "uwsgi:unix:/run/b.sock"], id="other-path"),
    ],
)
def test_bind_entries_for_different_sockets_are_accepted(bind):
    assert resolve_config({"BIND": bind}, {}, {}).bind == tuple(bind)


def test_invalid_setting_is_reported_even_when_overridden():
    with pytest.raises(InvalidOptionValueError) as caught:
        resolve_config({"THREADS": "8"}, {"WSGISERVE_THREADS": "8"}, {})
    assert caught.value.source == "settings.WSGISERVE['THREADS']"


def test_bad_cli_value_names_the_flag():
    with pytest.raises(InvalidOptionValueError) as caught:
        resolve_config({}, {}, {"threads": "many"})
    assert caught.value.option == "THREADS"
    assert caught.value.source == "command line --threads"


# -- unknown names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        pytest.param("THREAD", "unknown option; did you mean 'THREADS'?", id="typo"),
        pytest.param("MAX_HEADERS_BYTES", "did you mean 'MAX_HEADER_BYTES'?", id="close"),
        pytest.param("threads", "keys are upper-case: 'THREADS'", id="lower-case"),
        pytest.param("COMPLETELY_DIFFERENT", "unknown option", id="no-suggestion"),
        pytest.param("IPV6", "unknown option", id="ipv6-is-a-command-flag-only"),
    ],
)
def test_unknown_settings_key(key, message):
    with pytest.raises(UnknownOptionError) as caught:
        resolve_config({key: 1}, {}, {})
    assert message in str(caught.value)
    assert str(caught.value).startswith("unknown option")
    assert caught.value.option == key
    assert caught.value.source == f"settings.WSGISERVE[{key!r}]"


def test_unknown_settings_key_that_is_not_a_string():
    with pytest.raises(UnknownOptionError, match="keys are strings"):
        resolve_config({1: 1}, {}, {})  # type: ignore[dict-item]


def test_unknown_environment_variable():
    with pytest.raises(UnknownOptionError) as caught:
        resolve_config({}, {"WSGISERVE_THREAD": "4"}, {})
    assert str(caught.value) == "unknown option; did you mean 'WSGISERVE_THREADS'?"
    assert caught.value.option == "THREAD"
    assert caught.value.source == "environment WSGISERVE_THREAD"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("WSGISERVE_TEST_FILES_DIR", id="test-suite-variable"),
        pytest.param("WSGISERVE", id="no-underscore"),
        pytest.param("wsgiserve_threads", id="lower-case"),
        pytest.param("OTHER_THREADS", id="other-prefix"),
    ],
)
def test_ignored_environment_variables(name):
    resolve_config({}, {name: "x"}, {})


def test_unknown_cli_key_is_an_error():
    with pytest.raises(UnknownOptionError):
        resolve_config({}, {}, {"thread": 4})


# -- combinations and construction --------------------------------------------------------------


def test_jitter_without_max_requests():
    with pytest.raises(ConflictingOptionsError) as caught:
        resolve_config({}, {"WSGISERVE_MAX_REQUESTS_JITTER": "50"}, {})
    assert caught.value.option == "MAX_REQUESTS_JITTER"
    assert caught.value.source == "environment WSGISERVE_MAX_REQUESTS_JITTER"


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"MAX_REQUESTS": 1000, "MAX_REQUESTS_JITTER": 50}, id="jitter-with-max"),
        pytest.param({"BODY_BUFFER_BYTES": 10, "MAX_BODY_BYTES": 5}, id="buffer-above-max-body"),
        pytest.param({"KEEPALIVE_TIMEOUT": 0}, id="keepalive-off"),
        pytest.param({"TIMEOUT": 0, "GRACEFUL_TIMEOUT": 0}, id="zero-timeouts"),
    ],
)
def test_allowed_combinations(settings):
    resolve_config(settings, {}, {})


def test_config_errors_collects_every_problem():
    errors = config_errors(
        {"THREAD": 1, "BACKLOG": "1"}, {"WSGISERVE_TIMEOUT": "x", "WSGISERVE_NOPE": "1"}, {}
    )
    assert [(type(e), e.option) for e in errors] == [
        (UnknownOptionError, "THREAD"),
        (UnknownOptionError, "NOPE"),
        (InvalidOptionValueError, "BACKLOG"),
        (InvalidOptionValueError, "TIMEOUT"),
    ]
    assert config_errors({"MAX_REQUESTS_JITTER": 5}, {}, {})[0].option == "MAX_REQUESTS_JITTER"
    assert config_errors({}, {}, {}) == []


def test_config_errors_are_config_errors():
    for error_class in (UnknownOptionError, InvalidOptionValueError, ConflictingOptionsError):
        assert issubclass(error_class, ConfigError)


def test_defaults_are_valid_and_frozen():
    default = ServerConfig()
    assert default.bind == ("127.0.0.1:8000",)
    assert default.addresses[0].port == 8000
    assert default.addresses[0].family == socket.AF_INET
    with pytest.raises(dataclasses.FrozenInstanceError):
        default.threads = 2  # type: ignore[misc]


def test_constructor_validates_like_the_resolver():
    with pytest.raises(InvalidOptionValueError) as caught:
        ServerConfig(threads=0)
    assert caught.value.source == "default"
    assert ServerConfig(timeout=5).timeout == 5.0


def test_replace_validates_and_reparses_bind():
    resolved = resolve_config({}, {}, {})
    replaced = dataclasses.replace(resolved, bind=("[::1]:9000",))
    assert replaced.addresses[0].family == socket.AF_INET6
    assert replaced.sources == resolved.sources
    with pytest.raises(InvalidOptionValueError):
        dataclasses.replace(resolved, bind=())


def test_sources_are_read_only():
    resolved = resolve_config({"THREADS": 2}, {}, {})
    with pytest.raises(TypeError):
        resolved.sources["threads"] = "x"  # type: ignore[index]


# -- declarations, argparse, describe -----------------------------------------------------------


def test_declarations_have_four_unique_spellings():
    names = [o.name for o in OPTIONS]
    field_names = {f.name for f in dataclasses.fields(ServerConfig)}
    assert set(names) == field_names - {"sources", "addresses"}
    for spelling in ("setting", "env", "flag"):
        values = [getattr(o, spelling) for o in OPTIONS]
        assert len(values) == len(set(values)), spelling
    assert config.OPTIONS_BY_NAME["max_header_bytes"].env == "WSGISERVE_MAX_HEADER_BYTES"
    assert config.OPTIONS_BY_NAME["max_header_bytes"].flag == "--max-header-bytes"
    assert all(o.doc and o.group for o in OPTIONS)


def _parse(argv: list[str]) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return given_cli_options(vars(parser.parse_args(argv)))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param([], {}, id="nothing-given"),
        pytest.param(["--threads", "4"], {"threads": "4"}, id="text-value"),
        pytest.param(["--static"], {"static": True}, id="bool-positive"),
        pytest.param(["--no-static"], {"static": False}, id="bool-negative"),
        pytest.param(
            ["--bind", "0:80", "--bind", "[::]:80"], {"bind": ["0:80", "[::]:80"]}, id="list"
        ),
        pytest.param(["--access-log-format", "json"], {"access_log_format": "json"}, id="choice"),
    ],
)
def test_add_arguments_and_given_cli_options(argv, expected):
    assert _parse(argv) == expected


def test_cli_flags_resolve():
    cli = _parse(["--no-access-log", "--reload", "--bind", "0:80", "--timeout", "1.5"])
    resolved = resolve_config({}, {}, cli)
    assert resolved.access_log is False
    assert resolved.source_of("access_log") == "command line --no-access-log"
    assert resolved.reload is True
    assert resolved.source_of("reload") == "command line --reload"
    assert resolved.bind == ("0:80",)
    assert resolved.timeout == 1.5


@pytest.mark.parametrize(
    ("settings", "environ", "expected", "source"),
    [
        pytest.param({}, {}, ("[::1]:8000",), "command line --ipv6", id="changes-the-default"),
        pytest.param(
            {"BIND": ["0:80"]}, {}, ("0:80",), "settings.WSGISERVE['BIND']", id="below-settings"
        ),
        pytest.param(
            {}, {"WSGISERVE_BIND": "0:81"}, ("0:81",), "environment WSGISERVE_BIND", id="below-env"
        ),
    ],
)
def test_cli_defaults(settings, environ, expected, source):
    cli_defaults = {"bind": (("[::1]:8000",), "command line --ipv6")}
    resolved = resolve_config(settings, environ, {}, cli_defaults=cli_defaults)
    assert resolved.bind == expected
    assert resolved.source_of("bind") == source


def test_config_table():
    header, *lines = config.config_table(resolve_config({}, {}, {"threads": "3"}))
    assert header.split() == ["OPTION", "VALUE", "SOURCE"]
    assert len(lines) == len(OPTIONS)
    threads = next(line for line in lines if line.startswith("THREADS "))
    assert threads.split() == ["THREADS", "3", "command", "line", "--threads"]
    assert threads.index("3") == header.index("VALUE")


def test_describe_config():
    resolved = resolve_config(
        {"BIND": ["0:80"], "UMASK": 0o022}, {"WSGISERVE_THREADS": "3"}, {"reload": True}
    )
    rows = {name: (value, source) for name, value, source in describe_config(resolved)}
    assert list(rows) == [o.setting for o in OPTIONS]
    assert rows["BIND"] == ("['0:80']", "settings.WSGISERVE['BIND']")
    assert rows["UMASK"] == ("0o22", "settings.WSGISERVE['UMASK']")
    assert rows["THREADS"] == ("3", "environment WSGISERVE_THREADS")
    assert rows["RELOAD"] == ("True", "command line --reload")
    assert rows["ACCESS_LOG_FORMAT"] == ("'combined'", "default")


# -- one codec per kind: each written form of a value reads back as the value -------------------

_NON_DEFAULTS = {
    "BIND": ["0:80", "[::1]:8000", "unix:/run/site/http.sock"],
    "UMASK": 0o027,
    "TIMEOUT": 2.5,
    "STATIC": False,
    "SERVER_HEADER": "a b",
    "ACCESS_LOG_FORMAT": "json",
    "THREADS": 3,
}


@pytest.mark.parametrize("declared", [pytest.param(o, id=o.setting) for o in OPTIONS])
@pytest.mark.parametrize(
    "wsgiserve", [pytest.param({}, id="default"), pytest.param(_NON_DEFAULTS, id="non-default")]
)
def test_each_form_of_a_value_reads_back(declared, wsgiserve):
    value = getattr(resolve_config(wsgiserve, {}, {}), declared.name)
    codec = declared.codec
    # A configuration reload (JSON), settings syntax (docs, --print-config), command line.
    assert codec.coerce(json.loads(json.dumps(codec.to_json(value)))) == value
    assert codec.coerce(ast.literal_eval(codec.show(value))) == value
    from_cli = resolve_config({}, {}, _parse(codec.arguments(declared, value)))
    assert getattr(from_cli, declared.name) == value


# -- the generated page -------------------------------------------------------------------------


def test_settings_doc_is_up_to_date():
    generator = _load_generator()
    assert generator.check() is None


def test_settings_doc_check_detects_a_stale_page(tmp_path):
    generator = _load_generator()
    stale = tmp_path / "settings.md"
    stale.write_text(generator.render().replace("`WSGISERVE_THREADS`", "`WSGISERVE_THREAD`"))
    assert "is stale" in generator.check(stale)
    assert "is stale" in generator.check(tmp_path / "missing.md")


def test_settings_doc_lists_every_option_and_check_id():
    page = _load_generator().render()
    for declared in OPTIONS:
        assert f"### `{declared.setting}`" in page
        assert f"`{declared.env}`" in page
        assert f"`{declared.flag}`" in page
    for check_id in ("E001", "E002", "E003", "E004", "W001", "W002"):
        assert f"wsgiserve.{check_id}" in page
