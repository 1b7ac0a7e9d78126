"""choose_framing as a table (RFC 9112 §6.3, RFC 9110 §6.4.1)."""

from __future__ import annotations

import pytest

from django_wsgiserve.http import Framing, choose_framing, has_no_content

CL = Framing.CONTENT_LENGTH
CHUNKED = Framing.CHUNKED
CLOSE = Framing.CLOSE_DELIMITED
NONE = Framing.NO_BODY


@pytest.mark.parametrize(
    ("method", "version", "status", "length", "keep_alive", "expected"),
    [
        pytest.param(b"GET", b"1.1", 200, 10, True, (CL, True), id="1.1-length"),
        pytest.param(b"GET", b"1.1", 200, 0, True, (CL, True), id="1.1-length-zero"),
        pytest.param(b"GET", b"1.1", 200, None, True, (CHUNKED, True), id="1.1-stream-chunked"),
        pytest.param(b"GET", b"1.1", 200, None, False, (CHUNKED, False), id="1.1-stream-close"),
        pytest.param(b"GET", b"1.0", 200, 10, True, (CL, True), id="1.0-length-keep-alive"),
        pytest.param(b"GET", b"1.0", 200, 10, False, (CL, False), id="1.0-length-close"),
        pytest.param(b"GET", b"1.0", 200, None, True, (CLOSE, False), id="1.0-stream-close-delim"),
        pytest.param(b"GET", b"1.0", 200, None, False, (CLOSE, False), id="1.0-stream-no-ka"),
        pytest.param(b"HEAD", b"1.1", 200, None, True, (NONE, True), id="head-no-length"),
        pytest.param(b"HEAD", b"1.1", 200, 1234, True, (NONE, True), id="head-with-length"),
        pytest.param(b"HEAD", b"1.0", 200, None, True, (NONE, True), id="head-1.0-keeps-alive"),
        pytest.param(b"HEAD", b"1.1", 200, None, False, (NONE, False), id="head-close"),
        pytest.param(b"GET", b"1.1", 204, None, True, (NONE, True), id="204"),
        pytest.param(b"GET", b"1.1", 204, 0, True, (NONE, True), id="204-with-length"),
        pytest.param(b"GET", b"1.1", 304, 100, True, (NONE, True), id="304"),
        pytest.param(b"GET", b"1.0", 304, None, True, (NONE, True), id="304-1.0"),
        pytest.param(b"GET", b"1.1", 100, None, True, (NONE, True), id="100"),
        pytest.param(b"GET", b"1.1", 101, None, True, (NONE, True), id="101"),
        pytest.param(b"GET", b"1.1", 199, None, True, (NONE, True), id="199"),
        pytest.param(b"POST", b"1.1", 201, None, True, (CHUNKED, True), id="201-stream"),
        pytest.param(b"GET", b"1.1", 205, None, True, (CHUNKED, True), id="205-is-not-204"),
        pytest.param(b"GET", b"1.1", 404, 9, True, (CL, True), id="404-length"),
        pytest.param(b"GET", b"1.1", 500, None, False, (CHUNKED, False), id="500-stream-close"),
        pytest.param(b"head", b"1.1", 200, None, True, (CHUNKED, True), id="method-case-sensitive"),
    ],
)
def test_choose_framing(method, version, status, length, keep_alive, expected):
    result = choose_framing(
        method=method,
        http_version=version,
        status_code=status,
        content_length=length,
        keep_alive=keep_alive,
    )
    assert result == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(100, True, id="100"),
        pytest.param(103, True, id="103"),
        pytest.param(199, True, id="199"),
        pytest.param(200, False, id="200"),
        pytest.param(204, True, id="204"),
        pytest.param(205, False, id="205"),
        pytest.param(206, False, id="206"),
        pytest.param(304, True, id="304"),
        pytest.param(302, False, id="302"),
        pytest.param(404, False, id="404"),
    ],
)
def test_has_no_content(status, expected):
    # RFC 9110 §6.4.1: 1xx, 204 and 304 never have content, so no framing header (§8.6).
    assert has_no_content(status) is expected
