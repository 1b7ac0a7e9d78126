"""FastCGIResponseWriter: CGI-style heads in STDOUT records, bodies split into aligned records
without copying large buffers, END_REQUEST, and refusal of anything that could split the
response nginx relays."""

from __future__ import annotations

from typing import Any

import pytest

from django_wsgiserve.errors import ApplicationError
from django_wsgiserve.fastcgi import FastCGIResponseWriter, ProtocolStatus
from tests.fastcgi.encoder import END, STDOUT, end_request_body, parse_records

WRITER = FastCGIResponseWriter(request_id=1)


def test_response_head_exact_bytes():
    head = FastCGIResponseWriter(request_id=258).response_head(
        status="404 Not Found", headers=[("Content-Type", "text/html"), ("Content-Length", "9")]
    )
    content = b"Status: 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 9\r\n\r\n"
    padding = -len(content) % 8
    # version 1, FCGI_STDOUT, request id 258 = 0x0102, content length, padding, reserved.
    assert head == (bytes([1, 6, 1, 2, 0, len(content), padding, 0]) + content + bytes(padding))


def test_response_head_larger_than_one_record():
    headers = [(f"X-H{i}", "v" * 1000) for i in range(100)]
    records = parse_records(WRITER.response_head(status="200 OK", headers=headers))
    assert len(records) == 2
    text = b"".join(content for _, _, content in records)
    assert text.startswith(b"Status: 200 OK\r\nX-H0: ")
    assert text.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        pytest.param("200", [], id="status-without-reason-space"),
        pytest.param("200 OK\r\nX: y", [], id="status-with-crlf"),
        pytest.param(None, [], id="status-none"),
        pytest.param("200 OK", [("X-A", "a\r\nStatus: 302")], id="value-with-crlf"),
        pytest.param("200 OK", [("X:A", "a")], id="name-not-token"),
        pytest.param("200 OK", [(b"X-A", b"a")], id="bytes-pair"),
    ],
)
def test_invalid_status_or_header(status: Any, headers: Any):
    with pytest.raises(ApplicationError):
        WRITER.response_head(status=status, headers=headers)


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(1, id="1"),
        pytest.param(8, id="8"),
        pytest.param(16384, id="copy-limit"),
        pytest.param(16385, id="above-copy-limit"),
        pytest.param(65528, id="one-full-record"),
        pytest.param(65529, id="one-byte-more"),
        pytest.param(65535, id="65535"),
        pytest.param(300000, id="300000"),
    ],
)
def test_body_records(size: int):
    data = bytes(i % 251 for i in range(size))
    parts = WRITER.body(data)
    records = parse_records(b"".join(parts))  # also checks 8-byte alignment
    assert all(record_type == STDOUT and request_id == 1 for record_type, request_id, _ in records)
    assert all(0 < len(content) <= 65535 for _, _, content in records)
    assert b"".join(content for _, _, content in records) == data


def test_large_body_is_not_copied():
    data = bytes(200000)
    views = [part for part in WRITER.body(data) if isinstance(part, memoryview)]
    assert sum(len(view) for view in views) == len(data)
    assert all(view.obj is data for view in views)


def test_empty_body_sends_nothing():
    # An empty STDOUT record would end the stream (spec §3.3).
    assert WRITER.body(b"") == []


def test_end_request():
    records = parse_records(FastCGIResponseWriter(request_id=9).end_request(app_status=7))
    assert records == [(STDOUT, 9, b""), (END, 9, end_request_body(7, 0))]


def test_end_request_refusal():
    sent = WRITER.end_request(protocol_status=ProtocolStatus.OVERLOADED)
    assert parse_records(sent)[-1] == (END, 1, end_request_body(0, 2))


def test_error_response():
    records = parse_records(WRITER.error_response(status_code=400, reason="Bad Request"))
    assert b"".join(content for _, _, content in records) == (
        b"Status: 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 16\r\n\r\n400 Bad Request\n"
    )
