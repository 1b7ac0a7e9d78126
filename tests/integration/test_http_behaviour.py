"""What a migrating user meets, through a real ``serve``: statuses without content, an app's
``Connection: close``, other hop-by-hop headers, fragments, HTTP/1.2 and repeated singleton
fields (see docs/http.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.live import ResponseReader, is_closed, read_response

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.live import LiveServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def one_worker(start_server: Callable[..., LiveServer]) -> LiveServer:
    """One worker, so that "once per header name" is once in the whole log."""
    return start_server("--threads", "2", "--workers", "1")


# -- 1. statuses without content --------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("", id="204"),
        pytest.param("content_length=0", id="204-app-length-zero"),
        pytest.param("body=oops", id="204-app-body"),
        pytest.param("status=304", id="304"),
        pytest.param("status=304&content_length=0", id="304-app-length-zero"),
        pytest.param("status=304&content_length=1234", id="304-app-length"),
    ],
)
def test_a_status_without_content_has_no_content_length(one_worker: LiveServer, query: str):
    with one_worker.connect() as sock:
        # Pipelined: a body or a wrong length after the first head would corrupt the second.
        sock.sendall(
            f"GET /no_content/?{query} HTTP/1.1\r\nHost: a\r\n\r\n"
            "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n".encode()
        )
        reader = ResponseReader(sock)
        first = reader.read()
        assert first.status in (204, 304)
        assert first.header("etag") == '"v1"'
        assert first.header("content-length") is None
        assert first.header("transfer-encoding") is None
        assert first.header("connection") is None
        second = reader.read()
        assert (second.status, second.body) == (200, b"Hello, World!")


# -- 2. hop-by-hop headers from the application -----------------------------------------------


def test_connection_close_from_the_app_is_honoured(one_worker: LiveServer):
    with one_worker.connect() as sock:
        sock.sendall(
            b"GET /hop_by_hop/?header=connection&value=close HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /echo/not-answered HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        reader = ResponseReader(sock)
        response = reader.read()
        assert response.status == 200
        assert response.header_list("connection") == ["close"]
        assert response.body.startswith(b"the body")
        assert reader.buffer == b""
        assert is_closed(sock)
    assert "'Connection'" not in one_worker.log()


@pytest.mark.parametrize(
    ("choice", "name"),
    [
        pytest.param("keep-alive", "Keep-Alive", id="keep-alive"),
        pytest.param("upgrade", "Upgrade", id="upgrade"),
        pytest.param("transfer-encoding", "Transfer-Encoding", id="transfer-encoding"),
    ],
)
def test_other_hop_by_hop_headers_are_dropped_and_logged_once(
    one_worker: LiveServer, choice: str, name: str
):
    with one_worker.connect() as sock:
        reader = ResponseReader(sock)
        for _ in range(3):
            sock.sendall(f"GET /hop_by_hop/?header={choice} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            response = reader.read()
            assert response.status == 200
            assert response.header(name) is None
            assert response.header("connection") is None
            assert response.body.startswith(b"the body")
    # The keep-alive connection went on; the warning is in the log once.
    warnings = [line for line in one_worker.log().splitlines() if f"header {name!r}" in line]
    assert len(warnings) == 1, warnings
    assert "hop-by-hop" in warnings[0]


# -- 3. a fragment in the request-target ------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/echo/frag#x", id="path"),
        pytest.param("/echo/?q=1#x", id="query"),
        pytest.param("http://a/echo/#", id="absolute-form"),
    ],
)
def test_a_fragment_in_the_target_is_400(one_worker: LiveServer, target: str):
    with one_worker.connect() as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        response = read_response(sock)
        assert response.status == 400
        assert response.header("connection") == "close"
        assert is_closed(sock)


# -- 4. a higher minor version ----------------------------------------------------------------


def test_http_1_2_is_served_as_1_1(one_worker: LiveServer):
    with one_worker.connect() as sock:
        reader = ResponseReader(sock)
        for number in range(2):  # persistent, as HTTP/1.1 is
            sock.sendall(f"GET /echo/{number} HTTP/1.2\r\nHost: a\r\n\r\n".encode())
            response = reader.read()
            assert response.status == 200
            assert response.http_version == "HTTP/1.1"
            echo = json.loads(response.body)
            assert echo["path"] == f"/echo/{number}"
            assert echo["server_protocol"] == "HTTP/1.1"
        sock.sendall(b"GET /hello HTTP/2.0\r\nHost: a\r\n\r\n")
        assert reader.read().status == 505


# -- 5. repeated singleton fields -------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param("Content-Type: text/plain\r\nContent-Type: application/json\r\n", id="ct"),
        pytest.param("Content-Type: a/b\r\ncontent-type: a/b\r\n", id="ct-identical"),
        pytest.param("Authorization: Basic YTpi\r\nAuthorization: Bearer t\r\n", id="auth"),
        pytest.param("Range: bytes=0-1\r\nRange: bytes=4-5\r\n", id="range"),
    ],
)
def test_a_repeated_singleton_field_is_400(one_worker: LiveServer, fields: str):
    with one_worker.connect() as sock:
        sock.sendall(
            f"POST /echo/ HTTP/1.1\r\nHost: a\r\n{fields}Content-Length: 2\r\n\r\n{{}}".encode()
        )
        response = read_response(sock)
        assert response.status == 400
        assert response.header("connection") == "close"
        assert is_closed(sock)


def test_a_repeated_list_field_is_combined(one_worker: LiveServer):
    response = one_worker.get("/echo/", "Accept: text/html\r\nAccept: */*\r\n")
    assert json.loads(response.body)["headers"]["HTTP_ACCEPT"] == "text/html, */*"
