"""accesslog.py: the four formats, escaping, colours, and the disabled fast path."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from django_wsgiserve import accesslog
from django_wsgiserve.accesslog import (
    ACCESS_LOGGER_NAME,
    AccessFormatter,
    AccessLog,
    BufferedStreamHandler,
    default_logging_config,
    escape,
)
from django_wsgiserve.http.events import Request

REPO = Path(__file__).resolve().parents[2]
NOW = 971186136.25  # 10/Oct/2000:13:55:36 UTC
SAMPLE: dict[str, Any] = {
    "peer": "192.0.2.7",
    "method": "GET",
    "target": "/apache_pb.gif?x=1",
    "http_version": "HTTP/1.1",
    "status_code": 200,
    "bytes_sent": 2326,
    "request_time_s": 0.0125,
    "referer": "http://www.example.com/start.html",
    "user_agent": "Mozilla/4.08",
}


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def access_logger(caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER_NAME)
    return logging.getLogger(ACCESS_LOGGER_NAME)


def _log(logger: logging.Logger, log_format: str = "combined", **overrides: Any) -> None:
    AccessLog(format=log_format, logger=logger, clock=lambda: NOW).log(**{**SAMPLE, **overrides})


@pytest.mark.parametrize(
    ("log_format", "line"),
    [
        pytest.param(
            "combined",
            '192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] "GET /apache_pb.gif?x=1 HTTP/1.1" 200 2326 '
            '"http://www.example.com/start.html" "Mozilla/4.08"',
            id="combined",
        ),
        pytest.param(
            "common",
            '192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] "GET /apache_pb.gif?x=1 HTTP/1.1" 200 2326',
            id="common",
        ),
        pytest.param("django", '"GET /apache_pb.gif?x=1 HTTP/1.1" 200 2326', id="django"),
    ],
)
def test_text_formats(access_logger, caplog, log_format, line):
    _log(access_logger, log_format)
    (record,) = caplog.records
    assert record.getMessage() == line
    assert record.levelno == logging.INFO
    assert record.name == ACCESS_LOGGER_NAME


def test_json_format(access_logger, caplog):
    _log(access_logger, "json")
    (record,) = caplog.records
    assert json.loads(record.getMessage()) == {
        "time": "2000-10-10T13:55:36+00:00",
        "peer": "192.0.2.7",
        "method": "GET",
        "path": "/apache_pb.gif?x=1",
        "http_version": "HTTP/1.1",
        "status_code": 200,
        "bytes_sent": 2326,
        "request_time_ms": 12.5,
        "referer": "http://www.example.com/start.html",
        "user_agent": "Mozilla/4.08",
        "worker_pid": os.getpid(),
    }


@pytest.mark.parametrize("log_format", accesslog.FORMATS)
def test_extra_fields(access_logger, caplog, log_format):
    _log(access_logger, log_format, status_code=404)
    (record,) = caplog.records
    assert record.status_code == 404
    assert record.request_time_ms == 12.5
    assert record.peer == "192.0.2.7"
    assert record.worker_pid == os.getpid()
    assert record.bytes_sent == 2326
    assert record.method == "GET"
    assert record.path == "/apache_pb.gif?x=1"


@pytest.mark.parametrize(
    ("log_format", "fragment"),
    [
        pytest.param("combined", '200 - "-" "-"', id="combined"),
        pytest.param("common", " 200 -", id="common"),
        pytest.param("django", " 200 0", id="django-like-runserver"),
    ],
)
def test_empty_fields(access_logger, caplog, log_format, fragment):
    _log(access_logger, log_format, bytes_sent=0, referer="", user_agent="")
    assert caplog.records[0].getMessage().endswith(fragment)


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        pytest.param("plain /path?a=b", "plain /path?a=b", id="plain"),
        pytest.param("a\r\nb", "a\\r\\nb", id="crlf"),
        pytest.param("\x1b[31mred", "\\x1b[31mred", id="esc"),
        pytest.param("\x9b31m", "\\x9b31m", id="c1-csi"),
        pytest.param("\x00\x7f\t", "\\x00\\x7f\\t", id="nul-del-tab"),
        pytest.param('say "hi"', 'say \\"hi\\"', id="quote"),
        pytest.param("back\\slash", "back\\\\slash", id="backslash"),
        pytest.param("caf\u00e9 \u2603", "caf\u00e9 \u2603", id="printable-unicode-kept"),
    ],
)
def test_escape(text, escaped):
    assert escape(text) == escaped


@pytest.mark.parametrize("log_format", accesslog.FORMATS)
def test_request_text_cannot_inject(access_logger, caplog, log_format):
    _log(
        access_logger,
        log_format,
        target='/x\r\n127.0.0.1 - - "GET /forged',
        user_agent="evil\x1b]0;title\x07",
        referer='a" "b',
        method="G\nET",
    )
    message = caplog.records[0].getMessage()
    assert not any(char in message for char in "\r\n\x1b\x07")
    if log_format == "combined":
        assert message.count('"') - message.count('\\"') == 6  # three quoted fields, no more


def test_timestamp_is_rendered_once_per_second(access_logger, monkeypatch):
    calls: list[int] = []

    def clf_time(second: int) -> str:
        calls.append(second)
        return "T"

    monkeypatch.setattr(accesslog, "_clf_time", clf_time)
    now = [100.0]
    log = AccessLog(logger=access_logger, clock=lambda: now[0])
    log.log(**SAMPLE)
    now[0] = 100.9
    log.log(**SAMPLE)
    now[0] = 101.0
    log.log(**SAMPLE)
    assert calls == [100, 101]


def test_no_work_when_the_logger_is_disabled(caplog):
    logger = logging.getLogger("django_wsgiserve.access.disabled-test")
    caplog.set_level(logging.WARNING, logger=logger.name)

    def clock():
        raise AssertionError("rendered although the logger is off")

    AccessLog(logger=logger, clock=clock).log(**SAMPLE)
    assert caplog.records == []


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown access log format"):
        AccessLog(format="apache")


def _record(status_code: int | None = None) -> logging.LogRecord:
    record = logging.LogRecord(ACCESS_LOGGER_NAME, logging.INFO, __file__, 1, "line", (), None)
    if status_code is not None:
        record.status_code = status_code
    return record


@pytest.mark.parametrize(
    ("status_code", "expected"),
    [
        pytest.param(101, "\x1b[1mline\x1b[0m", id="1xx-bold"),
        pytest.param(200, "line", id="2xx-plain"),
        pytest.param(204, "line", id="204-plain"),
        pytest.param(302, "\x1b[32mline\x1b[0m", id="3xx-green"),
        pytest.param(304, "\x1b[36mline\x1b[0m", id="304-cyan"),
        pytest.param(404, "\x1b[33mline\x1b[0m", id="404-yellow"),
        pytest.param(400, "\x1b[31;1mline\x1b[0m", id="4xx-red-bold"),
        pytest.param(500, "\x1b[35;1mline\x1b[0m", id="5xx-magenta-bold"),
        pytest.param(None, "line", id="no-status-plain"),
    ],
)
def test_colours_by_status(status_code, expected):
    formatter = AccessFormatter("%(message)s", colour=True)
    assert formatter.format(_record(status_code)) == expected


def test_no_colour_when_off():
    assert AccessFormatter("%(message)s").format(_record(500)) == "line"


def test_default_logging_config_shape():
    fragment = default_logging_config(colour=False)
    assert fragment["version"] == 1
    assert fragment["disable_existing_loggers"] is False
    assert fragment["incremental"] is False
    assert set(fragment["loggers"]) == {"django_wsgiserve", ACCESS_LOGGER_NAME}
    for logger_config in fragment["loggers"].values():
        assert logger_config["level"] == "INFO"
        assert logger_config["propagate"] is False
    assert fragment["handlers"][ACCESS_LOGGER_NAME]["stream"] == "ext://sys.stdout"
    assert fragment["handlers"]["django_wsgiserve"]["stream"] == "ext://sys.stderr"


def test_default_logging_config_applied():
    """Applied in a child process: dictConfig must not disturb this process's logging."""
    child = textwrap.dedent(
        """
        import logging, logging.config
        from django_wsgiserve.accesslog import AccessLog, default_logging_config
        logging.config.dictConfig(default_logging_config(colour=True))
        logging.getLogger("django_wsgiserve.worker").info("booted %s", 1)
        AccessLog(format="django").log(
            peer="p", method="GET", target="/missing", http_version="HTTP/1.1", status_code=404,
            bytes_sent=3, request_time_s=0.0, referer="", user_agent="",
        )
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", child],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert completed.stdout == '\x1b[33m"GET /missing HTTP/1.1" 404 3\x1b[0m\n'
    server_line = r"\S+ \S+ \[\d+\] INFO django_wsgiserve\.worker: booted 1\n"
    assert re.fullmatch(server_line, completed.stderr)


# -- batched writes and the direct path ------------------------------------------------------


class _CountingStream:
    """A text stream that records each write call."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    @property
    def text(self) -> str:
        return "".join(self.writes)


def _configured_logger(name: str, handler: logging.Handler, *, colour: bool) -> logging.Logger:
    """A fresh logger set up as default_logging_config() sets up the access logger."""
    handler.setFormatter(AccessFormatter("%(message)s", colour=colour))
    logger = logging.getLogger(f"tests.accesslog.{name}")
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def test_buffered_handler_writes_its_lines_in_one_write_when_flushed():
    stream = _CountingStream()
    handler = BufferedStreamHandler(stream)
    logger = _configured_logger("batched", handler, colour=False)
    for number in range(5):
        logger.info("line %d", number)
    assert stream.writes == []  # nothing until the owner flushes
    handler.flush()
    assert stream.writes == ["line 0\nline 1\nline 2\nline 3\nline 4\n"]
    handler.flush()
    assert len(stream.writes) == 1  # nothing new: no empty write


def test_buffered_handler_bounds_what_it_keeps():
    stream = _CountingStream()
    handler = BufferedStreamHandler(stream, max_pending_lines=3)
    for number in range(7):
        handler.append(f"l{number}")
    assert stream.writes == ["l0\nl1\nl2\n", "l3\nl4\nl5\n"]
    handler.close()
    assert stream.text == "l0\nl1\nl2\nl3\nl4\nl5\nl6\n"  # close() flushes


def test_buffered_handler_loses_no_line_when_threads_append_while_it_flushes():
    stream = _CountingStream()
    handler = BufferedStreamHandler(stream, max_pending_lines=50)
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            handler.flush()

    def writer(prefix: str) -> None:
        for number in range(2000):
            handler.append(f"{prefix}-{number}")

    flushing = threading.Thread(target=flusher)
    flushing.start()
    writers = [threading.Thread(target=writer, args=(f"t{n}",)) for n in range(6)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    flushing.join()
    handler.flush()
    lines = stream.text.splitlines()
    assert len(lines) == 6 * 2000
    assert set(lines) == {f"t{n}-{m}" for n in range(6) for m in range(2000)}


@pytest.mark.parametrize("log_format", accesslog.FORMATS)
@pytest.mark.parametrize("colour", [False, True], ids=["plain", "colour"])
@pytest.mark.parametrize("status_code", [200, 404, 500])
def test_direct_path_writes_what_the_logging_path_writes(log_format, colour, status_code):
    """The default configuration skips the logging machinery: the bytes must not change."""
    direct_stream, logging_stream = _CountingStream(), _CountingStream()
    direct_handler = BufferedStreamHandler(direct_stream)
    direct = _configured_logger(f"direct-{log_format}", direct_handler, colour=colour)
    # The same configuration with a filter: not eligible, so it goes through logger.info.
    plain = _configured_logger(
        f"plain-{log_format}", logging.StreamHandler(logging_stream), colour=colour
    )
    plain.addFilter(lambda record: True)
    fields = {**SAMPLE, "status_code": status_code, "target": '/a"b\x1b[2J', "user_agent": ""}
    for logger in (direct, plain):
        AccessLog(format=log_format, logger=logger, clock=lambda: NOW).log(**fields)
    direct_handler.flush()
    assert direct_stream.text == logging_stream.text
    assert direct_stream.text.count("\n") == 1


def test_a_project_logging_handler_still_gets_every_line():
    received: list[logging.LogRecord] = []

    class Collecting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            received.append(record)

    logger = _configured_logger("project", Collecting(), colour=False)
    access_log = AccessLog(format="combined", logger=logger, clock=lambda: NOW)
    for _ in range(3):
        access_log.log(**SAMPLE)
    access_log.flush()
    assert len(received) == 3
    assert received[0].status_code == 200  # the structured fields are there too


@pytest.mark.parametrize("log_format", accesslog.FORMATS)
@pytest.mark.parametrize("colour", [False, True], ids=["plain", "colour"])
def test_direct_line_of_a_parsed_request_is_the_logging_paths_line(log_format, colour):
    """log_request() builds the default configuration's line itself: the same bytes as the
    logging path writes for the same request."""
    direct_stream, logging_stream = _CountingStream(), _CountingStream()
    direct_handler = BufferedStreamHandler(direct_stream)
    direct = _configured_logger(f"request-direct-{log_format}", direct_handler, colour=colour)
    plain = _configured_logger(
        f"request-plain-{log_format}", logging.StreamHandler(logging_stream), colour=colour
    )
    plain.addFilter(lambda record: True)  # not eligible: logger.info
    request = Request(
        method=b"GET",
        target=b'/a"b\x1b[2J?q=\xe9',
        path=b'/a"b\x1b[2J',
        query=b"q=\xe9",
        http_version=b"1.0",
        headers=((b"host", b"x"), (b"referer", b"http://r/\\"), (b"user-agent", b"ua\tx")),
        content_length=None,
        is_chunked=False,
        keep_alive=False,
        expect_continue=False,
        host=b"x",
    )
    for logger in (direct, plain):
        AccessLog(format=log_format, logger=logger, clock=lambda: NOW).log_request(
            request, peer="192.0.2.1", status_code=404, bytes_sent=0, request_time_s=0.25
        )
    direct_handler.flush()
    assert direct_stream.text == logging_stream.text
    assert direct_stream.text.count("\n") == 1


@pytest.mark.parametrize("log_format", ["combined", "common", "django"])
@pytest.mark.parametrize(
    "unsafe",
    [
        pytest.param({}, id="nothing-to-escape"),
        pytest.param({"method": "G\x7fT"}, id="method"),
        pytest.param({"target": "/\x85"}, id="target-c1"),
        pytest.param({"target": "/caf\xe9"}, id="target-latin-1-printable"),
        pytest.param({"http_version": 'HTTP/1.1"'}, id="version"),
        pytest.param({"referer": "http://r/\\"}, id="referer"),
        pytest.param({"user_agent": "ua\nINFO fake"}, id="user-agent"),
        pytest.param({"referer": "", "user_agent": ""}, id="empty"),
    ],
)
def test_one_field_to_escape_among_safe_ones(log_format, unsafe):
    """The direct path checks the five request fields at once: one field that needs escaping
    gives the line the logging path (each field escaped on its own) gives."""
    direct_stream, logging_stream = _CountingStream(), _CountingStream()
    direct_handler = BufferedStreamHandler(direct_stream)
    direct = _configured_logger(f"one-direct-{log_format}", direct_handler, colour=False)
    plain = _configured_logger(
        f"one-plain-{log_format}", logging.StreamHandler(logging_stream), colour=False
    )
    plain.addFilter(lambda record: True)  # not eligible: logger.info
    for logger in (direct, plain):
        AccessLog(format=log_format, logger=logger, clock=lambda: NOW).log(**{**SAMPLE, **unsafe})
    direct_handler.flush()
    assert direct_stream.text == logging_stream.text
    assert direct_stream.text.count("\n") == 1
