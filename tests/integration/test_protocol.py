"""HTTP/1.1 behaviour of a real ``serve`` process, over raw sockets (TCP and unix)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest

from tests.live import ResponseReader, is_closed, read_response

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.live import LiveServer

pytestmark = pytest.mark.integration


def echo_of(response_body: bytes) -> dict[str, object]:
    return json.loads(response_body)  # type: ignore[no-any-return]


def test_simple_get(server: LiveServer) -> None:
    response = server.get("/hello")
    assert response.status == 200
    assert response.body == b"Hello, World!"
    assert response.header("content-length") == "13"
    assert response.header("date")
    assert response.header("server") == "django-wsgiserve"
    assert response.header("connection") == "close"


def test_keep_alive_100_requests_on_one_connection(server: LiveServer) -> None:
    with server.connect() as sock:
        reader = ResponseReader(sock)
        for number in range(100):
            sock.sendall(f"GET /echo/{number} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            response = reader.read()
            assert response.status == 200
            assert echo_of(response.body)["path"] == f"/echo/{number}"
            assert response.header("connection") is None


def test_ten_pipelined_requests_in_one_write(server: LiveServer) -> None:
    raw = b"".join(f"GET /echo/{n} HTTP/1.1\r\nHost: test\r\n\r\n".encode() for n in range(10))
    with server.connect() as sock:
        sock.sendall(raw)
        reader = ResponseReader(sock)
        paths = [echo_of(reader.read().body)["path"] for _ in range(10)]
    assert paths == [f"/echo/{n}" for n in range(10)]


def test_pipelined_posts_with_bodies(server: LiveServer) -> None:
    raw = b"".join(
        b"POST /echo/%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
        % (n, n * 10, b"x" * (n * 10))
        for n in range(5)
    )
    with server.connect() as sock:
        sock.sendall(raw)
        reader = ResponseReader(sock)
        lengths = [echo_of(reader.read().body)["body_length"] for _ in range(5)]
    assert lengths == [0, 10, 20, 30, 40]


def test_http10_closes_by_default(server: LiveServer) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
        response = read_response(sock)
        assert response.status == 200
        assert response.http_version == "HTTP/1.1"
        assert response.body == b"Hello, World!"
        assert is_closed(sock)


def test_http10_keep_alive(server: LiveServer) -> None:
    with server.connect() as sock:
        reader = ResponseReader(sock)
        for _ in range(3):
            sock.sendall(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            response = reader.read()
            assert response.body == b"Hello, World!"
            assert response.header("connection") == "keep-alive"


def test_http10_stream_is_close_delimited(server: LiveServer) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /stream/?n=3&size=5 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        response = read_response(sock)
    assert response.header("transfer-encoding") is None
    assert response.body == b"x" * 15 or len(response.body) == 15


def test_head_has_headers_but_no_body(server: LiveServer) -> None:
    with server.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        head = reader.read(method="HEAD")
        get = reader.read()
    assert head.status == 200
    assert head.header("content-length") == "13"
    assert head.body == b""
    assert get.body == b"Hello, World!"


def test_expect_100_continue(server: LiveServer) -> None:
    with server.connect() as sock:
        sock.sendall(
            b"POST /echo/ HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = sock.recv(1024)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        response = read_response(sock)
    assert echo_of(response.body)["body_length"] == 5


def test_expect_100_continue_not_sent_when_body_already_arrived(server: LiveServer) -> None:
    with server.connect() as sock:
        sock.sendall(
            b"POST /echo/ HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\nhello"
        )
        response = read_response(sock)
    assert response.status == 200


def test_chunked_request_is_dechunked_with_content_length(server: LiveServer) -> None:
    raw = (
        b"POST /echo/ HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    )
    response = server.request(raw)
    echo = echo_of(response.body)
    assert echo["body_length"] == 11
    assert echo["content_length"] == "11"
    assert echo["body_head"] == "hello world"
    assert "HTTP_TRANSFER_ENCODING" not in echo["headers"]  # type: ignore[operator]


def test_chunked_response(server: LiveServer) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /stream/?n=4&size=3 HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = ResponseReader(sock)
        response = reader.read()
        assert response.header("transfer-encoding") == "chunked"
        assert len(response.body) == 12
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read().body == b"Hello, World!"


def test_large_body_spills_to_a_file_and_arrives_intact(server: LiveServer) -> None:
    body = bytes(range(256)) * 8192  # 2 MiB, over BODY_BUFFER_BYTES (1 MiB)
    with server.connect() as sock:
        sock.sendall(b"POST /echo/ HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
        sock.sendall(body)
        response = read_response(sock)
    import hashlib

    assert echo_of(response.body)["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_environ(server: LiveServer) -> None:
    response = server.request(
        b"GET /echo/a%20b/%C3%A9?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8080\r\n"
        b"X-Custom: one\r\nX-Custom: two\r\nX_Spoofed: evil\r\nCookie: a=1\r\nCookie: b=2\r\n"
        b"Connection: close\r\n\r\n"
    )
    echo = echo_of(response.body)
    assert echo["path"] == "/echo/a b/\xc3\xa9"  # PEP 3333: latin-1 decoded bytes
    assert echo["query_string"] == "x=1&y=%20"
    assert echo["server_protocol"] == "HTTP/1.1"
    headers = echo["headers"]
    assert isinstance(headers, dict)
    assert headers["HTTP_HOST"] == "example.com:8080"
    assert headers["HTTP_X_CUSTOM"] == "one, two"
    assert headers["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_SPOOFED" not in headers


def test_absolute_form_target(server: LiveServer) -> None:
    response = server.request(
        b"GET http://other.example/echo/x?q=1 HTTP/1.1\r\n"
        b"Host: ignored\r\nConnection: close\r\n\r\n"
    )
    echo = echo_of(response.body)
    assert echo["path"] == "/echo/x"
    assert echo["headers"]["HTTP_HOST"] == "other.example"  # type: ignore[index]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="missing-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, id="two-hosts"),
        pytest.param(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, id="http2-version"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400, id="obs-fold"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400, id="bare-cr"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400, id="nul-in-value"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n", 400, id="space-before-colon"),
        pytest.param(b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400, id="two-spaces"),
        pytest.param(b"GET / HTTP/1.1\nHost: a\n\n", 400, id="bare-lf"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            400,
            id="conflicting-content-length",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400, id="cl-sign"
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501, id="te-gzip"
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            id="bad-chunk-size",
        ),
        pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, id="uri-long"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-A: b\r\n" * 101 + b"\r\n",
            431,
            id="too-many-headers",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 40000 + b"\r\n\r\n",
            431,
            id="header-too-large",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999\r\n\r\n",
            413,
            id="body-too-large",
        ),
        pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", 417, id="bad-expect"),
    ],
)
def test_malformed_requests_get_4xx_and_close(server: LiveServer, raw: bytes, status: int) -> None:
    with server.connect() as sock:
        sock.sendall(raw)
        response = read_response(sock)
        assert response.status == status
        assert response.header("connection") == "close"
        assert response.header("content-type") == "text/plain; charset=utf-8"
        assert str(status).encode() in response.body
        assert is_closed(sock)


SMUGGLED = b"GET /echo/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b"POST /echo/ HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
            id="CL.TE",
        ),
        pytest.param(
            b"POST /echo/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 50\r\n\r\n0\r\n\r\n" + SMUGGLED,
            id="TE.CL",
        ),
        pytest.param(
            b"POST /echo/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
            id="TE.TE",
        ),
        pytest.param(
            b"POST /echo/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"
            + SMUGGLED,
            id="TE-obfuscated",
        ),
        pytest.param(
            b"POST /echo/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n"
            + SMUGGLED,
            id="TE-vertical-tab",
        ),
        pytest.param(
            b"POST /echo/ HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            + SMUGGLED,
            id="TE-in-http10",
        ),
    ],
)
def test_smuggling_attempts_are_refused_without_a_second_request(
    server: LiveServer, raw: bytes
) -> None:
    with server.connect() as sock:
        sock.sendall(raw)
        reader = ResponseReader(sock)
        response = reader.read()
        assert response.status in (400, 501)
        assert response.header("connection") == "close"
        assert is_closed(sock)
        assert b"smuggled" not in reader.buffer


def test_exception_before_start_response_gives_500(server: LiveServer) -> None:
    with server.connect() as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"GET /raises/?when=before HTTP/1.1\r\nHost: a\r\n\r\n")
        response = reader.read()
    assert response.status == 500
    assert b"500" in response.body
    assert "Traceback" in server.log()


def test_exception_after_response_started_cuts_the_connection(server: LiveServer) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /raises/?when=after HTTP/1.1\r\nHost: a\r\n\r\n")
        with pytest.raises(ConnectionError):
            ResponseReader(sock).read()


def test_wsgi_violations_give_500(server: LiveServer) -> None:
    # A hop-by-hop header is not one: the server drops it (tests/integration/test_http_behaviour).
    assert server.get("/no_start_response/").status == 500


def test_write_callable_and_late_status(server: LiveServer) -> None:
    written = server.get("/write_callable/")
    assert written.status == 200
    assert written.body
    late = server.get("/late_status/")
    assert late.status != 500


@pytest.mark.parametrize("mode", ["short", "long"])
def test_wrong_content_length_from_the_app_never_corrupts_the_next_response(
    server: LiveServer, mode: str
) -> None:
    with server.connect() as sock:
        sock.sendall(
            f"GET /bad_content_length/?mode={mode} HTTP/1.1\r\nHost: a\r\n\r\n"
            "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n".encode()
        )
        reader = ResponseReader(sock)
        if mode == "long":
            first = reader.read()
            assert len(first.body) == 100
        else:
            with pytest.raises(ConnectionError):
                reader.read()
            return
        # The framing of the rest is in doubt: the server must close, not answer again.
        assert reader.buffer == b""
        assert is_closed(sock)


def test_client_disconnect_mid_response_still_calls_close(
    server: LiveServer, files_dir: object
) -> None:
    marker = f"closed-{server.family}-{time.monotonic_ns()}"
    with server.connect() as sock:
        sock.sendall(
            f"GET /closing/?marker={marker}&n=50&size=65536&delay=0.05 HTTP/1.1\r\n"
            "Host: a\r\n\r\n".encode()
        )
        sock.recv(1000)
    from pathlib import Path

    path = Path(str(files_dir)) / marker
    deadline = time.monotonic() + 15
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), server.log()[-2000:]


def test_slow_reader_of_5mb_does_not_block_other_clients(server: LiveServer) -> None:
    size = 5 * 1024 * 1024
    with server.connect(receive_buffer=16384) as slow:
        slow.sendall(f"GET /big/?size={size} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        reader = ResponseReader(slow)
        reader.buffer = bytearray(slow.recv(1000))
        for _ in range(20):
            assert server.get("/hello").body == b"Hello, World!"
        received = len(reader.buffer)
        while received < size:  # read slowly: 16 KiB a millisecond at most
            data = slow.recv(16384)
            assert data, "connection closed early"
            reader.buffer += data
            received += len(data)
            time.sleep(0.001)
        head, _, body = reader.buffer.partition(b"\r\n\r\n")
        while len(body) < size:
            body += slow.recv(65536)
    assert b"200 OK" in head
    assert body == (bytes(range(256)) * (size // 256))


def test_client_that_stops_reading_a_generated_response_does_not_hold_the_thread(
    start_server: Callable[..., LiveServer],
) -> None:
    # One application thread; the response (24 MiB, made by the app in 64 KiB blocks) is far
    # more than the socket buffers hold: past 1 MiB in memory it spills to a temporary file.
    server = start_server("--threads", "1", "--workers", "1", "--no-access-log")
    size = 24 * 1024 * 1024
    with server.connect(receive_buffer=65536) as stalled:
        stalled.sendall(f"GET /big/?size={size} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        reader = ResponseReader(stalled)
        reader.buffer = bytearray(stalled.recv(100))
        for _ in range(5):  # the only thread is free again
            assert server.get("/hello").body == b"Hello, World!"
        response = reader.read()
    assert len(response.body) == size
    assert response.body == bytes(range(256)) * (size // 256)
