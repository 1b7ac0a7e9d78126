"""UwsgiResponseWriter: the HTTP-like head nginx's uwsgi module parses, validated like the HTTP
writer's (no response splitting), without the headers nginx supplies or would misread."""

from __future__ import annotations

from typing import Any

import pytest

from django_wsgiserve.errors import ApplicationError
from django_wsgiserve.uwsgi import UwsgiResponseWriter


def test_head_exact_bytes():
    head = UwsgiResponseWriter().head(
        status="201 Created",
        headers=[("Content-Type", "application/json"), ("Location", "/items/7")],
    )
    assert head == (
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nLocation: /items/7\r\n\r\n"
    )


def test_head_adds_nothing_of_its_own():
    # nginx adds Date and Server itself, and the end of the body is the end of the connection.
    head = UwsgiResponseWriter().head(status="200 OK", headers=[])
    assert head == b"HTTP/1.1 200 OK\r\n\r\n"


def test_latin1_header_value():
    head = UwsgiResponseWriter().head(status="200 OK", headers=[("X-Name", "caf\u00e9")])
    assert head == b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\n\r\n"


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        pytest.param("200", [], id="status-without-reason-space"),
        pytest.param("2000 OK", [], id="status-four-digits"),
        pytest.param("200 OK\r\nX: y", [], id="status-with-crlf"),
        pytest.param(b"200 OK", [], id="status-bytes"),
        pytest.param("200 OK", [("X-A", "a\r\nSet-Cookie: x=1")], id="value-with-crlf"),
        pytest.param("200 OK", [("X-A", "a\x00")], id="value-with-nul"),
        pytest.param("200 OK", [("X A", "a")], id="name-not-token"),
        pytest.param("200 OK", [("X-A", "\u20ac")], id="value-beyond-latin1"),
        pytest.param("200 OK", [("X-A",)], id="not-a-pair"),
    ],
)
def test_invalid_status_or_header(status: Any, headers: Any):
    with pytest.raises(ApplicationError):
        UwsgiResponseWriter().head(status=status, headers=headers)


def test_error_response():
    response = UwsgiResponseWriter().error_response(status_code=413, reason="Content Too Large")
    assert response == (
        b"HTTP/1.1 413 Content Too Large\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 22\r\n\r\n"
        b"413 Content Too Large\n"
    )
