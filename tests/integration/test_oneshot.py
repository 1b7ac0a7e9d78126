"""uwsgi listeners only: the pool threads accept and serve one-shot connections themselves
(django_wsgiserve/oneshot.py), and hand the loop whatever has not arrived whole.

A real ``serve`` with ``--bind uwsgi:unix:PATH``, spoken to in raw uwsgi packets (the test
encoder in tests/uwsgi), so that every path is reached on purpose: a whole packet, a packet in
two parts, a body larger than one read, a silent client, a malformed packet, more clients than
threads, file_wrapper by sendfile, and a SIGTERM while a request runs in an accepting thread.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest

from tests.live import LiveServer, is_closed, wait_until
from tests.uwsgi.encoder import packet

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


class UwsgiServer:
    def __init__(self, server: LiveServer, path: str) -> None:
        self.server = server
        self.path = path

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(20)
        sock.connect(self.path)
        return sock

    def exchange(self, data: bytes, *, pause_after: int | None = None) -> bytes:
        """Send ``data`` (in two parts, ``pause_after`` bytes first, when given) and read the
        response until the server closes."""
        with self.connect() as sock:
            if pause_after is None:
                sock.sendall(data)
            else:
                sock.sendall(data[:pause_after])
                time.sleep(0.3)
                sock.sendall(data[pause_after:])
            return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def request(method: str, path: str, body: bytes = b"", query: str = "") -> bytes:
    pairs = [
        (b"REQUEST_METHOD", method.encode()),
        (b"REQUEST_URI", (path + ("?" + query if query else "")).encode()),
        (b"PATH_INFO", path.encode()),
        (b"QUERY_STRING", query.encode()),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"SERVER_NAME", b"example.test"),
        (b"SERVER_PORT", b"80"),
        (b"REMOTE_ADDR", b"192.0.2.7"),
        (b"HTTP_HOST", b"example.test"),
    ]
    if body:
        pairs.append((b"CONTENT_LENGTH", str(len(body)).encode()))
        pairs.append((b"CONTENT_TYPE", b"application/octet-stream"))
    return packet(pairs, body)


def split_response(raw: bytes) -> tuple[bytes, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body


@pytest.fixture(scope="module")
def uwsgi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UwsgiServer]:
    directory: Path = tmp_path_factory.mktemp("oneshot")
    path = str(directory / "app.sock")
    args = ["--bind", f"uwsgi:unix:{path}", "--workers", "2", "--threads", "2"]
    (directory / "big.bin").write_bytes(bytes(range(256)) * 12000)  # 3,072,000 bytes
    server = LiveServer(
        log_path=directory / "server.log",
        args=[*args, "--header-timeout", "1"],
        env={"WSGISERVE_TEST_FILES_DIR": str(directory)},
        binds_itself=True,
    )
    server.start()
    try:
        yield UwsgiServer(server, path)
    finally:
        assert server.stop() == 0, server.log()


def test_a_whole_packet_is_answered(uwsgi_server: UwsgiServer) -> None:
    status, body = split_response(uwsgi_server.exchange(request("GET", "/echo/x", query="a=1")))
    assert status == b"HTTP/1.1 200 OK"
    echoed = json.loads(body)
    assert echoed["path"] == "/echo/x"
    assert echoed["query_string"] == "a=1"


def test_a_packet_in_two_parts_is_answered_by_the_loop(uwsgi_server: UwsgiServer) -> None:
    raw = request("GET", "/echo/late")
    for cut in (2, 10, len(raw) - 1):
        status, body = split_response(uwsgi_server.exchange(raw, pause_after=cut))
        assert status == b"HTTP/1.1 200 OK", cut
        assert json.loads(body)["path"] == "/echo/late"


def test_a_body_larger_than_one_read_arrives_whole(uwsgi_server: UwsgiServer) -> None:
    payload = bytes(range(256)) * 2048  # 512 KiB
    status, body = split_response(uwsgi_server.exchange(request("POST", "/echo/up", payload)))
    assert status == b"HTTP/1.1 200 OK"
    echoed = json.loads(body)
    assert echoed["content_length"] == str(len(payload))
    assert hashlib.sha256(payload).hexdigest() in body.decode()


def test_a_silent_client_is_closed_after_the_header_timeout(uwsgi_server: UwsgiServer) -> None:
    with uwsgi_server.connect() as silent:
        # The threads handed it to the loop: other requests are served meanwhile.
        status, _ = split_response(uwsgi_server.exchange(request("GET", "/hello")))
        assert status == b"HTTP/1.1 200 OK"
        assert is_closed(silent, timeout=10)


def test_a_malformed_packet_is_closed_and_the_server_goes_on(uwsgi_server: UwsgiServer) -> None:
    bad = bytes([99, 4, 0, 0]) + b"\x00\x00\x00\x00"  # modifier1 99: not a WSGI request
    assert uwsgi_server.exchange(bad) == b""
    status, _ = split_response(uwsgi_server.exchange(request("GET", "/hello")))
    assert status == b"HTTP/1.1 200 OK"


def test_a_file_wrapper_response_is_sent_whole(uwsgi_server: UwsgiServer) -> None:
    raw = uwsgi_server.exchange(request("GET", "/file_wrapper/", query="path=big.bin"))
    status, body = split_response(raw)
    assert status == b"HTTP/1.1 200 OK"
    assert body == bytes(range(256)) * 12000


def test_more_clients_than_threads_are_all_answered(uwsgi_server: UwsgiServer) -> None:
    results: list[bytes] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        for turn in range(10):
            query = "s=0.01" if turn % 3 == 0 else ""
            path = "/sleepy/" if query else f"/echo/{number}-{turn}"
            status, _ = split_response(uwsgi_server.exchange(request("GET", path, query=query)))
            with lock:
                results.append(status)

    threads = [threading.Thread(target=client, args=(number,)) for number in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [b"HTTP/1.1 200 OK"] * 120


def test_sigterm_lets_a_request_running_in_an_accepting_thread_finish(tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    server = LiveServer(
        log_path=tmp_path / "server.log",
        args=["--bind", f"uwsgi:unix:{path}", "--workers", "1", "--threads", "2"],
        binds_itself=True,
    )
    server.start()
    front = UwsgiServer(server, path)
    answers: list[bytes] = []
    try:
        running = threading.Thread(
            target=lambda: answers.append(front.exchange(request("GET", "/sleepy/", query="s=1.5")))
        )
        running.start()
        assert wait_until(lambda: "GET /sleepy/" in server.log() or running.is_alive(), 10)
        time.sleep(0.5)  # the request is in the application now
        server.send_signal(15)
        running.join(30)
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert len(answers) == 1
    status, body = split_response(answers[0])
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"slept 1.5"


def test_a_peer_that_stops_reading_frees_its_thread_after_the_write_timeout(
    tmp_path: Path,
) -> None:
    (tmp_path / "big.bin").write_bytes(bytes(64) * 100_000)  # 6.4 MB: more than the buffers
    path = str(tmp_path / "app.sock")
    one_thread = ["--bind", f"uwsgi:unix:{path}", "--workers", "1", "--threads", "1"]
    server = LiveServer(
        log_path=tmp_path / "server.log",
        # Below a second: SO_SNDTIMEO takes the microseconds too.
        args=[*one_thread, "--write-timeout", "0.5"],
        env={"WSGISERVE_TEST_FILES_DIR": str(tmp_path)},
        binds_itself=True,
    )
    server.start()
    front = UwsgiServer(server, path)
    try:
        with front.connect() as stalled:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.sendall(request("GET", "/file_wrapper/", query="path=big.bin"))
            # The only thread is blocked sending to a peer that reads nothing, until the
            # write timeout frees it: then the next request is answered.
            status, _ = split_response(front.exchange(request("GET", "/hello")))
            assert status == b"HTTP/1.1 200 OK"
    finally:
        assert server.stop() == 0, server.log()
