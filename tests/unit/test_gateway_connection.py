"""uwsgi and FastCGI connections over a socketpair: a real Loop and connection, a fake clock
and a synchronous pool (as in test_connection_fuzz.py), the peer played by the test with the
encoders of tests/uwsgi and tests/fastcgi."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from django_wsgiserve.gatewayconn import FastCGIPeerConnection, UwsgiConnection
from django_wsgiserve.wsgi import FileWrapper
from tests.fastcgi import encoder as fcgi
from tests.unit.test_connection_fuzz import Harness, SyncPool
from tests.uwsgi import encoder as uwsgi

if TYPE_CHECKING:
    import socket

STDOUT, END_REQUEST, GET_VALUES_RESULT = 6, 3, 10
KEEP_CONN = 1

NGINX_VARS = [
    (b"QUERY_STRING", b"a=1"),
    (b"REQUEST_METHOD", b"GET"),
    (b"CONTENT_TYPE", b""),
    (b"CONTENT_LENGTH", b""),
    (b"REQUEST_URI", b"/app/p%20q?a=1"),
    (b"DOCUMENT_URI", b"/app/p q"),
    (b"SERVER_PROTOCOL", b"HTTP/1.1"),
    (b"REQUEST_SCHEME", b"https"),
    (b"HTTPS", b"on"),
    (b"REMOTE_ADDR", b"203.0.113.9"),
    (b"REMOTE_PORT", b"5555"),
    (b"SERVER_PORT", b"443"),
    (b"SERVER_NAME", b"example.com"),
    (b"HTTP_HOST", b"example.com"),
    (b"HTTP_USER_AGENT", b"test"),
]


def environ_app(environ, start_response):
    """The environ's text values and the body, as JSON."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    data = {key: value for key, value in environ.items() if isinstance(value, str)}
    data["body"] = environ["wsgi.input"].read(length).decode("latin-1")
    data["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
    body = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class GatewayHarness(Harness):
    """One Loop + gateway connection on a socketpair; ``client`` plays nginx."""

    def __init__(
        self, protocol: str, *, app: Any = environ_app, pool: Any = None, **options: Any
    ) -> None:
        self.protocol = protocol
        options.setdefault("KEEPALIVE_TIMEOUT", 75.0)  # the default, not the fuzz tests' 20 s
        super().__init__(pool=pool or SyncPool(), app=app, **options)

    def make_connection(self, sock: socket.socket, peer: tuple[str, str], **common: Any) -> Any:
        if self.protocol == "uwsgi":
            return UwsgiConnection(sock, peer, **common)
        return FastCGIPeerConnection(sock, peer, max_conns=100, max_reqs=4, **common)

    def take(self) -> bytes:
        data = bytes(self.received)
        self.received.clear()
        return data


@pytest.fixture
def harnesses():
    made: list[GatewayHarness] = []

    def make(protocol: str, **options: Any) -> GatewayHarness:
        harness = GatewayHarness(protocol, **options)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def split_head(data: bytes) -> tuple[bytes, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def stdout_of(data: bytes) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """The STDOUT stream's bytes and every record."""
    records = fcgi.parse_records(data)
    return b"".join(c for t, _, c in records if t == STDOUT), records


# -- uwsgi -------------------------------------------------------------------------------------


def test_uwsgi_environ_from_trusted_peer_and_close(harnesses):
    harness = harnesses("uwsgi", script_name="/app")
    harness.send(uwsgi.packet([*NGINX_VARS, (b"PATH_INFO", b"/app/p q")]))
    assert harness.client_closed  # one request per connection
    head, body = split_head(harness.take())
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Transfer-Encoding" not in head
    assert b"Connection" not in head
    environ = json.loads(body)
    assert environ["REMOTE_ADDR"] == "203.0.113.9"
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["SERVER_NAME"] == "example.com"
    assert environ["PATH_INFO"] == "/p q"
    assert environ["SCRIPT_NAME"] == "/app"
    assert environ["QUERY_STRING"] == "a=1"
    assert "CONTENT_LENGTH" not in environ


def test_uwsgi_untrusted_peer_is_not_believed(harnesses):
    harness = harnesses("uwsgi", peer=("192.0.2.1", "999"))
    harness.send(uwsgi.packet(NGINX_VARS))
    environ = json.loads(split_head(harness.take())[1])
    assert environ["REMOTE_ADDR"] == "192.0.2.1"
    assert environ["REMOTE_PORT"] == "999"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["SERVER_NAME"] == "test"
    assert "HTTPS" not in environ


def test_uwsgi_body_and_content_length(harnesses):
    harness = harnesses("uwsgi")
    variables = [
        (b"REQUEST_METHOD", b"POST"),
        (b"REQUEST_URI", b"/upload"),
        (b"PATH_INFO", b"/upload"),
        (b"CONTENT_LENGTH", b"5"),
        (b"CONTENT_TYPE", b"text/plain"),
        (b"HTTP_CONTENT_LENGTH", b"5"),
        (b"HTTP_TRANSFER_ENCODING", b"chunked"),  # nginx de-chunked it and set CONTENT_LENGTH
    ]
    harness.send(uwsgi.packet(variables, b"hello"))
    environ = json.loads(split_head(harness.take())[1])
    assert environ["CONTENT_LENGTH"] == "5"
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert "HTTP_CONTENT_LENGTH" not in environ
    assert "HTTP_TRANSFER_ENCODING" not in environ
    assert environ["body"] == "hello"


def test_uwsgi_file_wrapper_by_sendfile(harnesses, tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 300_000)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](path.open("rb"))

    harness = harnesses("uwsgi", app=app)
    harness.send(uwsgi.packet([(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/f")]))
    for _ in range(20):
        if harness.client_closed:
            break
        harness.advance(0.01)
    head, body = split_head(harness.take())
    assert b"Content-Length: 300000" in head
    assert body == b"x" * 300_000


def test_uwsgi_head_request_has_no_body(harnesses):
    harness = harnesses("uwsgi")
    harness.send(uwsgi.packet([(b"REQUEST_METHOD", b"HEAD"), (b"REQUEST_URI", b"/")]))
    head, body = split_head(harness.take())
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b""


def test_uwsgi_app_error_is_500(harnesses):
    def app(environ, start_response):
        raise RuntimeError("boom")

    harness = harnesses("uwsgi", app=app)
    harness.send(uwsgi.packet([(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/")]))
    assert harness.take().startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert harness.client_closed


def test_uwsgi_bad_variable_is_answered_malformed_packet_is_not(harnesses):
    harness = harnesses("uwsgi")
    harness.send(uwsgi.packet([(b"REQUEST_METHOD", b"G ET")]))
    assert harness.take().startswith(b"HTTP/1.1 400 ")
    assert harness.client_closed
    other = harnesses("uwsgi")
    other.send(uwsgi.packet([], modifier1=5))
    assert other.take() == b""
    assert other.client_closed


def test_uwsgi_modifier1_30_mounts_the_application_at_script_name(harnesses):
    # nginx: uwsgi_param SCRIPT_NAME /app; uwsgi_modifier1 30; (uwsgi_params' PATH_INFO is
    # the whole path).
    harness = harnesses("uwsgi")
    variables = [
        *NGINX_VARS,
        (b"SCRIPT_NAME", b"/app"),
        (b"PATH_INFO", b"/app/p q"),
    ]
    harness.send(uwsgi.packet(variables, modifier1=30))
    head, body = split_head(harness.take())
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    environ = json.loads(body)
    assert environ["SCRIPT_NAME"] == "/app"
    assert environ["PATH_INFO"] == "/p q"
    assert environ["RAW_URI"] == "/app/p%20q?a=1"


def test_uwsgi_body_timeout_closes(harnesses):
    harness = harnesses("uwsgi")
    variables = [(b"REQUEST_METHOD", b"POST"), (b"CONTENT_LENGTH", b"10")]
    harness.send(uwsgi.packet(variables, b"abc"))
    assert harness.take() == b""
    harness.advance(6.0)
    assert harness.take().startswith(b"HTTP/1.1 408 ")
    assert harness.client_closed


# -- FastCGI -----------------------------------------------------------------------------------


def test_fastcgi_stock_params_make_path_info(harnesses):
    harness = harnesses("fastcgi")
    variables = [
        (b"SCRIPT_NAME", b"/admin/login/"),
        (b"REQUEST_URI", b"/admin/login/?next=/"),
        (b"DOCUMENT_URI", b"/admin/login/"),
        (b"REQUEST_METHOD", b"GET"),
        (b"QUERY_STRING", b"next=/"),
    ]
    harness.send(fcgi.nginx_request(variables))
    assert harness.client_closed  # no FCGI_KEEP_CONN: closed after END_REQUEST
    stdout, records = stdout_of(harness.take())
    assert records[-1][0] == END_REQUEST
    assert records[-1][2] == fcgi.end_request_body(0, 0)
    head, body = split_head(stdout)
    assert head.startswith(b"Status: 200 OK\r\n")
    environ = json.loads(body)
    assert environ["PATH_INFO"] == "/admin/login/"
    assert environ["SCRIPT_NAME"] == ""


def test_fastcgi_keep_conn_serves_requests_in_turn_and_idles(harnesses):
    harness = harnesses("fastcgi", KEEPALIVE_TIMEOUT=20.0)
    variables = [(b"REQUEST_METHOD", b"POST"), (b"REQUEST_URI", b"/x"), (b"CONTENT_LENGTH", b"3")]
    for _ in range(2):
        harness.send(fcgi.nginx_request(variables, b"abc", flags=KEEP_CONN))
        stdout, records = stdout_of(harness.take())
        assert records[-1][0] == END_REQUEST
        assert json.loads(split_head(stdout)[1])["body"] == "abc"
        assert not harness.client_closed
    harness.advance(21.0)  # idle past KEEPALIVE_TIMEOUT: a quiet (lingering) close
    assert harness.take() == b""
    assert harness.client_closed


def test_fastcgi_large_body_is_records_of_memoryviews(harnesses):
    payload = bytes(range(256)) * 1000

    def app(environ, start_response):
        start_response("200 OK", [])
        return [payload]

    harness = harnesses("fastcgi", app=app)
    harness.send(fcgi.nginx_request([(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/")]))
    stdout, _ = stdout_of(harness.take())
    head, body = split_head(stdout)
    assert b"Content-Length: 256000" in head
    assert body == payload


def test_fastcgi_file_wrapper_is_read_and_framed(harnesses, tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"y" * 100_000)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "100000")])
        return FileWrapper(path.open("rb"), 32768)

    harness = harnesses("fastcgi", app=app)
    harness.send(fcgi.nginx_request([(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/")]))
    stdout, _ = stdout_of(harness.take())
    assert split_head(stdout)[1] == b"y" * 100_000


def test_fastcgi_get_values_answered(harnesses):
    harness = harnesses("fastcgi")
    query = fcgi.record(9, 0, fcgi.pairs([(b"FCGI_MPXS_CONNS", b"")]))
    harness.send(query)
    records = fcgi.parse_records(harness.take())
    assert records[0][0] == GET_VALUES_RESULT
    assert fcgi.decode_pairs(records[0][2]) == [(b"FCGI_MPXS_CONNS", b"0")]
    assert not harness.client_closed


def test_fastcgi_protocol_error_answers_active_request(harnesses):
    harness = harnesses("fastcgi")
    variables = [(b"REQUEST_METHOD", b"POST"), (b"CONTENT_LENGTH", b"999999999999")]
    harness.send(fcgi.nginx_request(variables))
    stdout, records = stdout_of(harness.take())
    assert stdout.startswith(b"Status: 413 ")
    assert records[-1][0] == END_REQUEST
    assert harness.client_closed


def test_fastcgi_app_error_is_500(harnesses):
    def app(environ, start_response):
        raise RuntimeError("boom")

    harness = harnesses("fastcgi", app=app)
    harness.send(
        fcgi.nginx_request([(b"REQUEST_METHOD", b"GET")], flags=KEEP_CONN),
    )
    stdout, records = stdout_of(harness.take())
    assert stdout.startswith(b"Status: 500 Internal Server Error\r\n")
    assert closing_notice(records) == [(GET_VALUES_RESULT, 0, b"")]
    assert harness.client_closed  # an application error closes the connection


POST_VARIABLES = [(b"REQUEST_METHOD", b"POST"), (b"REQUEST_URI", b"/x"), (b"CONTENT_LENGTH", b"3")]


def cut_inside_params(request: bytes) -> int:
    """Where ``request`` (fcgi.request) is cut after its first PARAMS record: the request has
    begun, its variables are not all there."""
    params_length = int.from_bytes(request[16 + 4 : 16 + 6], "big")
    params_padding = request[16 + 6]
    return 16 + 8 + params_length + params_padding


def closing_notice(records: list[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]]:
    """The records after FCGI_END_REQUEST."""
    ends = [
        index for index, (record_type, _, _) in enumerate(records) if record_type == END_REQUEST
    ]
    return records[ends[-1] + 1 :]


def test_fastcgi_request_cut_inside_params_is_not_idle_for_a_drain(harnesses):
    harness = harnesses("fastcgi", KEEPALIVE_TIMEOUT=20.0, DRAIN_KEEPALIVE_TIMEOUT=2.0)
    harness.send(fcgi.nginx_request(POST_VARIABLES, b"abc", flags=KEEP_CONN))
    assert stdout_of(harness.take())[1][-1][0] == END_REQUEST
    request = fcgi.nginx_request(POST_VARIABLES, b"def", flags=KEEP_CONN)
    cut = cut_inside_params(request)
    harness.send(request[:cut])  # BEGIN_REQUEST and a PARAMS record, not the stream's end
    harness.loop.request_stop()
    harness.advance(0.0)  # the drain begins
    harness.advance(3.0)  # past its window: an idle connection would be closed now
    assert not harness.client_closed
    harness.send(request[cut:])
    stdout, records = stdout_of(harness.take())
    assert json.loads(split_head(stdout)[1])["body"] == "def"
    assert END_REQUEST in [record_type for record_type, _, _ in records]
    assert harness.client_closed  # answered, then closed: the worker drains


def test_fastcgi_request_cut_inside_params_gets_header_timeout(harnesses):
    harness = harnesses("fastcgi", KEEPALIVE_TIMEOUT=20.0, HEADER_TIMEOUT=10.0)
    request = fcgi.nginx_request(POST_VARIABLES, b"abc", flags=KEEP_CONN)
    harness.send(request[: cut_inside_params(request)])
    harness.advance(11.0)  # HEADER_TIMEOUT, not KEEPALIVE_TIMEOUT, bounds a begun request
    stdout, records = stdout_of(harness.take())
    assert stdout.startswith(b"Status: 408 ")
    assert END_REQUEST in [record_type for record_type, _, _ in records]
    assert harness.client_closed


def test_fastcgi_keep_conn_closed_in_a_drain_ends_with_a_closing_notice(harnesses):
    harness = harnesses("fastcgi", KEEPALIVE_TIMEOUT=20.0)
    harness.send(fcgi.nginx_request(POST_VARIABLES, b"abc", flags=KEEP_CONN))
    assert closing_notice(fcgi.parse_records(harness.take())) == []  # kept: nothing after
    harness.loop.request_stop()
    harness.advance(0.0)
    harness.send(fcgi.nginx_request(POST_VARIABLES, b"def", flags=KEEP_CONN))
    records = fcgi.parse_records(harness.take())
    # Bytes after END_REQUEST, in the same send, make nginx drop the connection instead of
    # reusing it while our FIN is on its way: an empty FCGI_GET_VALUES_RESULT.
    assert closing_notice(records) == [(GET_VALUES_RESULT, 0, b"")]
    assert harness.client_closed


def test_fastcgi_without_keep_conn_has_no_closing_notice(harnesses):
    harness = harnesses("fastcgi")
    harness.loop.request_stop()
    harness.advance(0.0)
    harness.send(fcgi.nginx_request(POST_VARIABLES, b"abc"))
    records = fcgi.parse_records(harness.take())
    assert records[-1][0] == END_REQUEST
    assert harness.client_closed


class FullPool(SyncPool):
    """A pool whose queue is always full: every request is refused with 503."""

    pending = 1_000_000


@pytest.mark.parametrize("protocol", ["uwsgi", "fastcgi"])
def test_overloaded_503_carries_retry_after_as_over_http(harnesses, protocol):
    harness = harnesses(protocol, pool=FullPool())
    variables = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/x")]
    if protocol == "uwsgi":
        harness.send(uwsgi.packet(variables))
        response = harness.take()
    else:
        harness.send(fcgi.nginx_request(variables, flags=KEEP_CONN))
        response, _ = stdout_of(harness.take())
    head, _ = split_head(response)
    assert b" 503 Service Unavailable\r\n" in head
    assert b"\r\nRetry-After: 1" in head  # what an HTTP listener's 503 carries
    assert harness.client_closed
