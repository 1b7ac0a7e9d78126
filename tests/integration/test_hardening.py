"""Hardening of a real ``serve`` process: overload, slow clients, forwarded headers, the PROXY
protocol, error hygiene.

Every test is bounded (a few seconds on two cores): bursts are a few hundred loopback
connections, timeouts are shortened to a second or two with options, and nothing asserts on
latency (latency figures live in benchmarks/slowclients.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import selectors
import socket
import struct
import time
from typing import TYPE_CHECKING

import pytest

from django_wsgiserve.http.proxy_protocol import V2_SIGNATURE
from tests.live import REPO, ResponseReader, is_closed, read_response

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.live import LiveServer

pytestmark = pytest.mark.integration

PROJECT = REPO / "testproject"
SPOOFED = (
    "X-Forwarded-For: 6.6.6.6\r\n"
    "X-Forwarded-Proto: https\r\n"
    "X-Forwarded-Host: evil.example\r\n"
    "Forwarded: for=6.6.6.6;proto=https\r\n"
)


def echo(
    server: LiveServer, headers: str = "", *, raw_prefix: bytes = b"", host: str = "test"
) -> dict[str, object]:
    raw = f"GET /echo/ HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n".encode()
    response = server.request(raw_prefix + raw)
    assert response.status == 200, response
    return json.loads(response.body)  # type: ignore[no-any-return]


def status_and_head(data: bytes) -> tuple[int, str]:
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1")
    match = re.match(r"HTTP/1\.1 (\d{3})", head)
    return (int(match.group(1)) if match else 0), head + "\r\n"


def burst(server: LiveServer, raw: bytes, count: int, *, timeout: float) -> list[bytes]:
    """Send ``raw`` on ``count`` connections at once; return what each received until EOF."""
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, bytearray] = {}
    try:
        for _ in range(count):
            sock = server.connect()
            sock.sendall(raw)
            sock.setblocking(False)
            received[sock] = bytearray()
            selector.register(sock, selectors.EVENT_READ)
        open_count, deadline = count, time.monotonic() + timeout
        while open_count and time.monotonic() < deadline:
            for key, _ in selector.select(0.5):
                sock = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                received[sock] += data
                if not data:
                    selector.unregister(sock)
                    open_count -= 1
        return [bytes(value) for value in received.values()]
    finally:
        for sock in received:
            sock.close()
        selector.close()


def no_client_errors_logged(log: str) -> None:
    """Client mistakes never appear as ERROR lines or tracebacks (error hygiene)."""
    assert "Traceback" not in log
    assert not re.search(r"\bERROR\b", log), log[-3000:]
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", log), "raw control characters in the log"


# -- overload ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server("--workers", "1", "--threads", "2", "--max-queued-requests", "8")


def test_overload_burst_gets_503_with_retry_after_then_full_service(
    small_server: LiveServer,
) -> None:
    raw = b"GET /sleepy/?s=0.25 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    replies = burst(small_server, raw, 200, timeout=30)
    statuses = [status_and_head(reply) for reply in replies]
    served = [head for status, head in statuses if status == 200]
    refused = [head for status, head in statuses if status == 503]
    # Every request got an answer (no timeouts, no resets): either served or refused at once.
    assert len(served) + len(refused) == 200, sorted({s for s, _ in statuses})
    assert len(served) >= 10  # 2 running + 8 queued at the very least
    assert len(refused) >= 100
    assert all("\r\nRetry-After: 1\r\n" in head for head in refused)
    assert all("\r\nConnection: close\r\n" in head for head in refused)
    # Full service right after: the same worker (no death, no restart) serves everything.
    pid_before = small_server.pid
    for _ in range(20):
        assert small_server.get("/hello").status == 200
    assert small_server.process is not None
    assert small_server.process.poll() is None
    assert small_server.pid == pid_before
    log = small_server.log()
    assert len(re.findall(r"Worker \d+ \(pid \d+\) started", log)) <= 1  # never respawned
    assert "Request queue full" in log
    assert log.count("Request queue full") <= 2  # rate-limited
    assert "Open file limit (RLIMIT_NOFILE)" in log


# -- slow clients -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_file(files_dir: Path) -> str:
    (files_dir / "big.bin").write_bytes(bytes(range(256)) * (16 * 4096))  # 16 MiB
    return "big.bin"


@pytest.fixture(scope="module")
def strict_server(start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server(
        "--threads", "4", "--header-timeout", "2", "--write-timeout", "2", "--body-timeout", "2"
    )


@contextlib.contextmanager
def open_sockets(server: LiveServer, count: int, **kwargs: int) -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    try:
        sockets.extend(server.connect(**kwargs) for _ in range(count))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_slowloris_and_non_readers_do_not_starve_a_normal_client(
    strict_server: LiveServer, big_file: str
) -> None:
    server = strict_server
    non_reader_request = f"GET /file_wrapper/?path={big_file} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    with (
        open_sockets(server, 300) as slowloris,
        open_sockets(server, 50, receive_buffer=4096) as non_readers,
    ):
        for sock in slowloris:
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n")  # and never the blank line
        for sock in non_readers:
            sock.sendall(non_reader_request)  # and never read the 16 MiB
        with server.connect() as sock:
            reader = ResponseReader(sock)
            for number in range(50):
                for slow in slowloris[number::50]:
                    slow.sendall(b"X-Slow: 1\r\n")  # trickle, as slowloris does
                sock.sendall(f"GET /echo/{number} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                response = reader.read()
                assert response.status == 200
                assert json.loads(response.body)["path"] == f"/echo/{number}"
        # HEADER_TIMEOUT answers the slowloris connections with 408 and closes them; WRITE_TIMEOUT
        # drops the non-readers (their responses can never complete).
        for sock in slowloris[:20]:
            sock.settimeout(10)
            response = read_response(sock)
            assert response.status == 408
            assert is_closed(sock)
        for sock in non_readers[:5]:
            assert drained_until_closed(sock, timeout=15)
    no_client_errors_logged(server.log())


def drained_until_closed(sock: socket.socket, *, timeout: float) -> bool:
    """Read what the server managed to send; True once it has closed the connection."""
    sock.settimeout(timeout)
    total = 0
    try:
        while data := sock.recv(1 << 20):
            total += len(data)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return total < 16 * 1024 * 1024  # closed before the whole body: dropped, not completed


# -- forwarded headers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def distrusting_server(start_server: Callable[..., LiveServer]) -> LiveServer:
    """Loopback (the tests' own address) is not a trusted proxy here."""
    return start_server("--trusted-proxies", "10.0.0.0/8")


def test_spoofed_forwarded_headers_from_untrusted_peer_are_stripped(
    distrusting_server: LiveServer,
) -> None:
    seen = echo(distrusting_server, SPOOFED)
    assert seen["remote_addr"] == "127.0.0.1"
    assert seen["url_scheme"] == "http"
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert not {"HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO"} & set(headers)
    assert not {"HTTP_X_FORWARDED_HOST", "HTTP_FORWARDED"} & set(headers)


def test_forwarded_headers_from_trusted_peer_set_remote_addr_and_scheme(
    server: LiveServer,
) -> None:
    seen = echo(
        server, "X-Forwarded-For: 6.6.6.6, 203.0.113.9, 127.0.0.1\r\nX-Forwarded-Proto: https\r\n"
    )
    # Over TCP the peer is 127.0.0.1; over the unix socket it is 'unix': both trusted by default.
    assert seen["remote_addr"] == "203.0.113.9"
    assert seen["url_scheme"] == "https"
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["HTTP_X_FORWARDED_PROTO"] == "https"


@pytest.fixture(scope="module")
def project(
    start_server: Callable[..., LiveServer], tmp_path_factory: pytest.TempPathFactory
) -> tuple[LiveServer, LiveServer]:
    """testproject (Django) with no database work: /echo/ reports is_secure() and REMOTE_ADDR."""
    root = tmp_path_factory.mktemp("hardening-project")
    env = {
        "TESTPROJECT_DB": str(root / "db.sqlite3"),
        "TESTPROJECT_STATIC_ROOT": str(root / "static"),
        "TESTPROJECT_MEDIA_ROOT": str(root / "media"),
    }
    (root / "static").mkdir()
    trusting = start_server(
        "--threads",
        "2",
        settings="testproject.settings",
        cwd=PROJECT,
        manage=["manage.py"],
        env=env,
    )
    distrusting = start_server(
        "--threads",
        "2",
        "--trusted-proxies",
        "192.0.2.1",
        settings="testproject.settings",
        cwd=PROJECT,
        manage=["manage.py"],
        env=env,
    )
    return trusting, distrusting


def test_django_is_secure_follows_trusted_proxy_only(
    project: tuple[LiveServer, LiveServer],
) -> None:
    trusting, distrusting = project
    behind_proxy = echo(
        trusting,
        "X-Forwarded-For: 198.51.100.4\r\nX-Forwarded-Proto: https\r\n",
        host="localhost",
    )
    assert behind_proxy["is_secure"] is True
    assert behind_proxy["scheme"] == "https"
    assert behind_proxy["remote_addr"] == "198.51.100.4"
    spoofed = echo(distrusting, SPOOFED, host="localhost")
    assert spoofed["is_secure"] is False
    assert spoofed["remote_addr"] == "127.0.0.1"
    assert spoofed["host"] == "localhost"


# -- PROXY protocol ---------------------------------------------------------------------------


def proxy_v2(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    payload = (
        socket.inet_aton(source[0])
        + socket.inet_aton(destination[0])
        + struct.pack("!HH", source[1], destination[1])
    )
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(payload)) + payload


@pytest.fixture(scope="module")
def proxied_server(start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server("--proxy-protocol", "--header-timeout", "2")


@pytest.mark.parametrize(
    ("prefix", "remote_addr"),
    [
        pytest.param(b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 443\r\n", "203.0.113.7", id="v1"),
        pytest.param(b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n", "2001:db8::7", id="v1-6"),
        pytest.param(b"PROXY UNKNOWN\r\n", "127.0.0.1", id="v1-unknown"),
        pytest.param(proxy_v2(("198.51.100.8", 4711), ("10.0.0.1", 443)), "198.51.100.8", id="v2"),
        pytest.param(V2_SIGNATURE + b"\x20\x00\x00\x00", "127.0.0.1", id="v2-local"),
    ],
)
def test_proxy_protocol_sets_remote_addr(
    proxied_server: LiveServer, prefix: bytes, remote_addr: str
) -> None:
    assert echo(proxied_server, raw_prefix=prefix)["remote_addr"] == remote_addr


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param(b"", id="missing"),
        pytest.param(b"PROXY TCP4 203.0.113.7 10.0.0.1 4711\r\n", id="v1-short"),
        pytest.param(b"PROXY TCP4 999.0.113.7 10.0.0.1 4711 443\r\n", id="v1-bad-address"),
        pytest.param(V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12), id="v2-bad-version"),
    ],
)
def test_malformed_proxy_header_is_rejected(proxied_server: LiveServer, prefix: bytes) -> None:
    with proxied_server.connect() as sock:
        sock.sendall(prefix + b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        assert is_closed(sock)


def test_proxy_header_from_untrusted_peer_is_rejected(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server("--proxy-protocol", "--trusted-proxies", "10.0.0.0/8")
    with server.connect() as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 443\r\nGET /hello HTTP/1.1\r\n\r\n")
        assert is_closed(sock)
    no_client_errors_logged(server.log())


# -- error hygiene ----------------------------------------------------------------------------


def test_bad_clients_are_not_logged_as_errors(start_server: Callable[..., LiveServer]) -> None:
    server = start_server("--header-timeout", "1")
    for raw, status in (
        (b"GET /\x1b[31mred HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", 400),
        (
            b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        # A TLS ClientHello on the plain port: no line ever ends, so HEADER_TIMEOUT answers.
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), 408),
    ):
        with server.connect() as sock:
            sock.sendall(raw)
            assert read_response(sock).status == status
    with server.connect() as sock:  # reset in the middle of a request
        sock.sendall(b"POST /echo/ HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with server.connect() as sock:  # 408 after HEADER_TIMEOUT
        sock.sendall(b"GET /hello HTTP/1.1\r\n")
        assert read_response(sock).status == 408
    assert server.get("/hello").status == 200
    no_client_errors_logged(server.log())
