"""RequestCycle against a recording sink: the response head an application's headers become.

Covers what the server adds or removes: no Content-Length for a status without content (RFC
9110 §8.6), ``Connection: close`` from the application honoured, other hop-by-hop headers
dropped with one warning per name (PEP 3333).
"""

from __future__ import annotations

import io
import logging
import tempfile
import threading
from typing import TYPE_CHECKING, Any

import pytest

from django_wsgiserve.http import Request, RequestParser, ResponseWriter
from django_wsgiserve.wsgi import EnvironTemplate, HopByHopWarnings, RequestCycle

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"
WSGI_LOGGER = "django_wsgiserve.wsgi"


class RecordingSink:
    """A ``ResponseSink`` that keeps every byte and the keep-alive decision."""

    def __init__(self, *, can_sendfile: bool = False) -> None:
        self.can_sendfile = can_sendfile
        self.may_keep_alive = True  # False: as while the worker drains
        self.data = b""
        self.keep_alive: bool | None = None

    def send(self, parts: list[bytes]) -> None:
        self.data += b"".join(parts)

    def send_file(
        self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None = None
    ) -> bool:
        with open(fd, "rb", closefd=False) as file:
            file.seek(offset)
            self.data += file.read(count)
        return False

    def finish(self, *, keep_alive: bool) -> None:
        self.keep_alive = keep_alive

    @property
    def head(self) -> list[str]:
        """The status line and header lines of the (one) response."""
        head, _, _ = self.data.partition(b"\r\n\r\n")
        return head.decode("latin-1").split("\r\n")

    @property
    def body(self) -> bytes:
        return self.data.partition(b"\r\n\r\n")[2]

    def header_names(self) -> list[str]:
        return [line.partition(":")[0].lower() for line in self.head[1:]]


def parse(raw: bytes) -> Request:
    parser = RequestParser()
    parser.feed(raw)
    request = parser.next_event()
    assert isinstance(request, Request)
    return request


def run_app(
    app: Callable[..., Iterable[bytes]],
    *,
    method: str = "GET",
    sink: RecordingSink | None = None,
    warnings: HopByHopWarnings | None = None,
) -> RecordingSink:
    """Run ``app`` for one keep-alive HTTP/1.1 request; return the sink."""
    request = parse(f"{method} /x HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    template = EnvironTemplate(server_name="a", server_port="80", script_name="")
    environ = template.build(request, io.BytesIO(), 0, ("127.0.0.1", "1234"))
    sink = sink or RecordingSink()
    RequestCycle(
        app=app,
        environ=environ,
        request=request,
        sink=sink,
        writer=ResponseWriter(),
        get_date=lambda: DATE,
        access_log=None,
        keep_alive=request.keep_alive,
        started=0.0,
        hop_by_hop_warnings=warnings or HopByHopWarnings(),
    ).run()
    return sink


def app_for(
    status: str, headers: list[tuple[str, str]], body: Any = (b"",)
) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response(status, list(headers))
        return body() if callable(body) else list(body)

    return app


def generated() -> Iterable[bytes]:
    yield b""
    yield b"never sent"


# -- statuses without content (RFC 9110 §8.6, §6.4.1) -------------------------------------------


@pytest.mark.parametrize(
    "status", ["204 No Content", "304 Not Modified", "103 Early Hints", "100 Continue"]
)
@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param([], (), id="no-length-empty-iterable"),
        pytest.param([], (b"",), id="no-length-one-empty-item"),
        pytest.param([], (b"never sent",), id="no-length-one-item-with-bytes"),
        pytest.param([], generated, id="no-length-generator"),
        pytest.param([("Content-Length", "0")], (b"",), id="app-length-zero"),
        pytest.param([("Content-Length", "42")], (), id="app-length-42"),
        pytest.param([("content-length", "10")], (b"never sent",), id="app-length-lower-case"),
    ],
)
def test_a_status_without_content_has_no_content_length(status, headers, body):
    sink = run_app(app_for(status, [("ETag", '"v1"'), *headers], body))
    assert sink.head[0] == f"HTTP/1.1 {status}"
    assert "content-length" not in sink.header_names()
    assert "transfer-encoding" not in sink.header_names()
    assert 'ETag: "v1"' in sink.head
    assert sink.body == b""
    assert sink.keep_alive is True


def test_a_304_file_wrapper_gets_no_content_length():
    with tempfile.TemporaryFile() as file:
        file.write(b"x" * 100)
        file.seek(0)

        def app(environ, start_response):
            start_response("304 Not Modified", [])
            return environ["wsgi.file_wrapper"](file)

        sink = run_app(app, sink=RecordingSink(can_sendfile=True))
    assert "content-length" not in sink.header_names()
    assert sink.body == b""
    assert sink.keep_alive is True


@pytest.mark.parametrize(
    ("method", "status", "headers", "body", "expected"),
    [
        pytest.param("GET", "200 OK", [], (), "Content-Length: 0", id="200-empty"),
        pytest.param("GET", "200 OK", [], (b"abc",), "Content-Length: 3", id="200-one-item"),
        pytest.param("GET", "205 Reset Content", [], (), "Content-Length: 0", id="205"),
        pytest.param(
            "HEAD", "200 OK", [("Content-Length", "42")], (), "Content-Length: 42", id="head"
        ),
    ],
)
def test_a_status_with_content_keeps_its_length(method, status, headers, body, expected):
    sink = run_app(app_for(status, headers, body), method=method)
    assert expected in sink.head


# -- hop-by-hop headers from the application (PEP 3333) -----------------------------------------


@pytest.mark.parametrize("value", ["close", "Close", " close ", "close, close"])
def test_connection_close_from_the_app_closes_after_the_response(value, caplog):
    caplog.set_level(logging.WARNING, logger=WSGI_LOGGER)
    sink = run_app(app_for("200 OK", [("Connection", value), ("Content-Length", "2")], [b"ok"]))
    assert sink.head[0] == "HTTP/1.1 200 OK"
    assert [line for line in sink.head if line.lower().startswith("connection")] == [
        "Connection: close"
    ]
    assert sink.body == b"ok"
    assert sink.keep_alive is False
    assert caplog.records == []


def test_connection_close_among_other_options_closes_and_warns(caplog):
    caplog.set_level(logging.WARNING, logger=WSGI_LOGGER)
    sink = run_app(app_for("200 OK", [("Connection", "close, x-foo")], [b"ok"]))
    assert sink.head[0] == "HTTP/1.1 200 OK"
    assert "Connection: close" in sink.head
    assert "Connection: close, x-foo" not in sink.head
    assert sink.body == b"ok"
    assert sink.keep_alive is False
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "'Connection'" in record.getMessage()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("Connection", "keep-alive", id="connection-keep-alive"),
        pytest.param("Keep-Alive", "timeout=5", id="keep-alive"),
        pytest.param("Transfer-Encoding", "chunked", id="transfer-encoding"),
        pytest.param("TE", "trailers", id="te"),
        pytest.param("Trailer", "X-Checksum", id="trailer"),
        pytest.param("Upgrade", "websocket", id="upgrade"),
        pytest.param("Proxy-Authenticate", "Basic", id="proxy-authenticate"),
        pytest.param("Proxy-Authorization", "Basic Zm9vOmJhcg==", id="proxy-authorization"),
        pytest.param("Proxy-Connection", "keep-alive", id="proxy-connection"),
    ],
)
def test_other_hop_by_hop_headers_are_dropped_with_a_warning(name, value, caplog):
    caplog.set_level(logging.WARNING, logger=WSGI_LOGGER)
    headers = [("Content-Type", "text/plain"), (name, value), ("Content-Length", "2")]
    sink = run_app(app_for("200 OK", headers, [b"ok"]))
    assert sink.head[0] == "HTTP/1.1 200 OK"
    assert name.lower() not in sink.header_names()
    assert "Content-Type: text/plain" in sink.head
    assert "Content-Length: 2" in sink.head
    assert sink.body == b"ok"
    assert sink.keep_alive is True
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert repr(name) in record.getMessage()
    assert "GET /x" in record.getMessage()
    assert value not in record.getMessage()  # Proxy-Authorization holds credentials


def test_a_dropped_transfer_encoding_does_not_change_the_framing():
    # The server frames the body itself: chunked here because the length is unknown.
    def app(environ, start_response):
        start_response("200 OK", [("Transfer-Encoding", "chunked")])
        yield b"abc"
        yield b"de"

    sink = run_app(app)
    assert [line for line in sink.head if line.lower().startswith("transfer-encoding")] == [
        "Transfer-Encoding: chunked"
    ]
    assert sink.body == b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"


def test_each_hop_by_hop_name_is_logged_once(caplog):
    caplog.set_level(logging.WARNING, logger=WSGI_LOGGER)
    warnings = HopByHopWarnings()
    for value in ("timeout=5", "timeout=6", "timeout=7"):
        run_app(app_for("200 OK", [("Keep-Alive", value)]), warnings=warnings)
    run_app(app_for("200 OK", [("keep-alive", "timeout=8")]), warnings=warnings)
    run_app(app_for("200 OK", [("Upgrade", "h2c")]), warnings=warnings)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "Keep-Alive" in messages[0]
    assert "Upgrade" in messages[1]


def test_pool_threads_meeting_the_same_name_log_it_once(caplog):
    caplog.set_level(logging.WARNING, logger=WSGI_LOGGER)
    warnings = HopByHopWarnings()
    request = parse(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(200):
            warnings.warn("Keep-Alive", request)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(caplog.records) == 1


def test_a_head_built_while_the_worker_drains_says_connection_close():
    """The keep-alive decision is taken when the head is built: a request that arrived
    before the drain began but answers during it closes its connection."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    sink = RecordingSink()
    sink.may_keep_alive = False
    run_app(app, sink=sink)
    assert "Connection: close" in sink.head
    assert sink.keep_alive is False


# -- the environ of a request (EnvironTemplate.build) ---------------------------------------------


def request_keys(environ: dict[str, Any]) -> dict[str, Any]:
    """The keys that depend on the request (not the listener's)."""
    skipped = {"wsgi.input", "REMOTE_ADDR", "REMOTE_PORT"}
    return {
        key: value
        for key, value in environ.items()
        if key.isupper()
        and key not in skipped
        and (key == "SERVER_PROTOCOL" or not key.startswith("SERVER_"))
    }


@pytest.mark.parametrize(
    ("script_name", "raw", "expected"),
    [
        pytest.param(
            "",
            b"GET /a/b HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\nConnection: keep-alive\r\n\r\n",
            {
                "REQUEST_METHOD": "GET",
                "PATH_INFO": "/a/b",
                "QUERY_STRING": "",
                "RAW_URI": "/a/b",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "HTTP_HOST": "h",
                "HTTP_USER_AGENT": "u",
                "HTTP_CONNECTION": "keep-alive",
            },
            id="browser-get",
        ),
        pytest.param(
            "/app",
            b"GET /app/x HTTP/1.1\r\nHost: h\r\n\r\n",
            {
                "REQUEST_METHOD": "GET",
                "SCRIPT_NAME": "/app",
                "PATH_INFO": "/x",
                "QUERY_STRING": "",
                "RAW_URI": "/app/x",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "HTTP_HOST": "h",
            },
            id="script-name-stripped-raw-uri-kept",
        ),
        pytest.param(
            "/app",
            b"GET /app HTTP/1.1\r\nHost: h\r\n\r\n",
            {
                "REQUEST_METHOD": "GET",
                "SCRIPT_NAME": "/app",
                "PATH_INFO": "",
                "QUERY_STRING": "",
                "RAW_URI": "/app",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "HTTP_HOST": "h",
            },
            id="script-name-alone",
        ),
        pytest.param(
            "",
            b"PATCH /%7Ex%20y?q=%20&r HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
            {
                "REQUEST_METHOD": "PATCH",
                "PATH_INFO": "/~x y",
                "QUERY_STRING": "q=%20&r",
                "RAW_URI": "/%7Ex%20y?q=%20&r",
                "SERVER_PROTOCOL": "HTTP/1.0",
                "CONTENT_LENGTH": "5",  # the body's size, as received
            },
            id="percent-encoded-query-1.0-no-host",
        ),
        pytest.param(
            "",
            b"GET http://b:8/p?q HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n",
            {
                "REQUEST_METHOD": "GET",
                "PATH_INFO": "/p",
                "QUERY_STRING": "q",
                "RAW_URI": "http://b:8/p?q",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "HTTP_HOST": "b:8",
                "HTTP_X_A": "1",
            },
            id="absolute-form-host-wins",
        ),
        pytest.param(
            "",
            b"POST / HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nAccept: x\r\nCookie: b=2\r\n"
            b"Accept: y\r\nX_Spoof: 1\r\nContent-Type: t\r\nTransfer-Encoding: chunked\r\n\r\n",
            {
                "REQUEST_METHOD": "POST",
                "PATH_INFO": "/",
                "QUERY_STRING": "",
                "RAW_URI": "/",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "HTTP_HOST": "h",
                "HTTP_COOKIE": "a=1; b=2",
                "HTTP_ACCEPT": "x, y",
                "CONTENT_TYPE": "t",
                "CONTENT_LENGTH": "5",
            },
            id="combined-dropped-chunked",
        ),
        pytest.param(
            "",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Same: a\r\nX-Other: a\r\n\r\n",
            {
                "REQUEST_METHOD": "GET",
                "PATH_INFO": "/",
                "QUERY_STRING": "",
                "RAW_URI": "/",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "HTTP_HOST": "a",
                "HTTP_X_SAME": "a",
                "HTTP_X_OTHER": "a",
            },
            id="one-byte-values-like-host",
        ),
    ],
)
def test_the_environ_of_a_request(script_name, raw, expected):
    template = EnvironTemplate(server_name="s", server_port="80", script_name=script_name)
    request = parse(raw)
    for _ in range(2):  # the second time with the names the first one taught
        environ = template.build(request, io.BytesIO(), 5, ("10.0.0.1", "4"))
        assert request_keys(environ) == {"SCRIPT_NAME": script_name, **expected}
        assert list(request_keys(environ)) == list({"SCRIPT_NAME": "", **expected})
        assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("10.0.0.1", "4")


@pytest.mark.parametrize(
    ("headers", "expected_head", "keep_alive"),
    [
        pytest.param(
            [("CONTENT-LENGTH", "2"), ("X-A", "1")],
            ["HTTP/1.1 200 OK", "CONTENT-LENGTH: 2", "X-A: 1"],
            True,
            id="length-upper-case",
        ),
        pytest.param(
            [("connection", "CLOSE"), ("content-length", "2")],
            ["HTTP/1.1 200 OK", "content-length: 2"],
            False,
            id="connection-lower-case",
        ),
        pytest.param(
            [("UPGRADE", "h2c"), ("Content-Length", "2")],
            ["HTTP/1.1 200 OK", "Content-Length: 2"],
            True,
            id="upgrade-upper-case",
        ),
        pytest.param(
            [("X-Content-Length", "9"), ("Connections", "close")],
            ["HTTP/1.1 200 OK", "X-Content-Length: 9", "Connections: close", "Content-Length: 2"],
            True,
            id="similar-names-are-ordinary",
        ),
    ],
)
def test_response_header_names_in_any_case_every_time(headers, expected_head, keep_alive):
    for _ in range(2):  # the second time with the names the first one taught
        sink = run_app(app_for("200 OK", headers, [b"ok"]))
        assert sink.head[: len(expected_head)] == expected_head
        assert sink.head[len(expected_head)].startswith("Date: ")
        assert sink.body == b"ok"
        assert sink.keep_alive is keep_alive
