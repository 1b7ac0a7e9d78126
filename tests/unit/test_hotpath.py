"""benchmarks/hotpath.py replays the worker's request sequence with the server's own objects:
it must keep producing what the server sends, and its modes must run."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from benchmarks import hotpath
from django_wsgiserve.accesslog import BufferedStreamHandler

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _close_the_access_log() -> Iterator[None]:
    """The scenarios with an access log open /dev/null for it: closed after each test."""
    logger = logging.getLogger("benchmarks.hotpath.access")
    yield
    for handler in list(logger.handlers):
        if isinstance(handler, BufferedStreamHandler):  # not pytest's capturing handlers
            logger.removeHandler(handler)
            handler.close()
            handler.stream.close()


@pytest.mark.parametrize("scenario", hotpath.SCENARIOS)
def test_each_scenario_answers_every_request_with_its_body(scenario: str) -> None:
    serve, sink = hotpath.make_server(scenario)
    for _ in range(3):
        serve(1)
        response = b"".join(sink.sent)
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        expected = hotpath.JSON_BODY if scenario.startswith("json") else hotpath.HELLO_BODY
        assert body == expected
        assert b"\r\nContent-Length: %d\r\n" % len(expected) in head + b"\r\n"
        assert sink.kept_alive is True


def test_interleave_reports_each_subject_beside_django() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "hotpath.py"),
            *("--interleave", "--scenarios", "hello,json-log", "--requests", "30"),
            *("--repeat", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"Django /json alone: [\d.]+ us/request \(median of 1\)", lines[0])
    names = [line.split()[0] for line in lines[1:]]
    assert names == ["arithmetic", "hello", "json-log"]
    for line in lines[1:]:
        assert re.search(
            r"alone +[\d.]+ us; alternated with Django +[\d.]+ us: +[+-][\d.]+ us", line
        )
