"""TLS (CERTFILE/KEYFILE) through a real ``serve``: pages, keep-alive, files, bad clients."""

from __future__ import annotations

import hashlib
import json
import ssl
from typing import TYPE_CHECKING

import pytest

from tests.certificates import self_signed
from tests.live import ResponseReader, is_closed

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.live import LiveServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(
    start_server: Callable[..., LiveServer], certificate: tuple[Path, Path]
) -> LiveServer:
    cert, key = certificate
    return start_server(
        "--threads",
        "2",
        "--workers",
        "1",
        env={"WSGISERVE_CERTFILE": str(cert), "WSGISERVE_KEYFILE": str(key)},
    )


def client(server: LiveServer, certificate: tuple[Path, Path]) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    return context.wrap_socket(server.connect(), server_hostname="127.0.0.1")


def test_pages_over_tls_with_keep_alive(tls_server: LiveServer, certificate) -> None:
    with client(tls_server, certificate) as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        reader = ResponseReader(sock)
        for number in range(20):
            sock.sendall(f"GET /echo/{number} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            echo = json.loads(reader.read().body)
            assert echo["path"] == f"/echo/{number}"
            assert echo["url_scheme"] == "https"


def test_pipelined_requests_and_bodies_over_tls(tls_server: LiveServer, certificate) -> None:
    body = b"x" * 300_000
    raw = b"POST /echo/ HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    raw += b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n" * 3
    with client(tls_server, certificate) as sock:
        sock.sendall(raw)
        reader = ResponseReader(sock)
        assert json.loads(reader.read().body)["body_sha256"] == hashlib.sha256(body).hexdigest()
        for _ in range(3):
            assert reader.read().body == b"Hello, World!"


@pytest.mark.parametrize(
    "size", [pytest.param(5_000, id="small"), pytest.param(3_000_000, id="3MB")]
)
def test_files_over_tls(tls_server: LiveServer, certificate, files_dir: Path, size: int) -> None:
    content = bytes(range(256)) * (size // 256) + b"end"
    (files_dir / f"tls-{size}.bin").write_bytes(content)
    with client(tls_server, certificate) as sock:
        sock.sendall(f"GET /file_wrapper/?path=tls-{size}.bin HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        reader = ResponseReader(sock)
        assert reader.read().body == content
        sock.sendall(b"GET /big/?size=2000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert len(reader.read().body) == 2_000_000


def test_banner_and_status_say_https(tls_server: LiveServer) -> None:
    assert "Listening at https://127.0.0.1:" in tls_server.log()
    assert tls_server.notify is not None
    assert any("https://127.0.0.1:" in m for m in tls_server.notify.messages if "READY=1" in m)


def test_plain_http_on_a_tls_port_is_closed(tls_server: LiveServer) -> None:
    with tls_server.connect() as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        assert is_closed(sock)
    assert "Traceback" not in tls_server.log()


def test_untrusted_certificate_fails_the_handshake_not_the_server(
    tls_server: LiveServer, certificate
) -> None:
    with tls_server.connect() as raw, pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    with client(tls_server, certificate) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert ResponseReader(sock).read().body == b"Hello, World!"


# CBC suites a scanner flags (LUCKY13): those the ssl module offered by default (HMAC-SHA2) and
# the older HMAC-SHA1 ones, with ECDHE and with RSA key exchange.
CBC_ONLY = ":".join(
    (
        "ECDHE-RSA-AES128-SHA256",
        "ECDHE-RSA-AES256-SHA384",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-RSA-AES256-SHA",
        "AES128-SHA256",
        "AES256-SHA256",
        "AES128-SHA",
        "AES256-SHA",
    )
)


def tls12_client(certificate: tuple[Path, Path], ciphers: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(certificate[0]))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    return context


def test_a_cbc_only_tls12_client_is_refused(tls_server: LiveServer, certificate) -> None:
    context = tls12_client(certificate, CBC_ONLY)
    with tls_server.connect() as raw, pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname="127.0.0.1").close()
    assert "Traceback" not in tls_server.log()


@pytest.mark.parametrize(
    "cipher",
    ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"],
)
def test_an_aead_tls12_client_is_served(tls_server: LiveServer, certificate, cipher: str) -> None:
    context = tls12_client(certificate, cipher)
    with context.wrap_socket(tls_server.connect(), server_hostname="127.0.0.1") as sock:
        assert sock.version() == "TLSv1.2"
        assert sock.cipher()[0] == cipher  # type: ignore[index]
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert ResponseReader(sock).read().body == b"Hello, World!"


def test_tls13_is_still_served(tls_server: LiveServer, certificate) -> None:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with context.wrap_socket(tls_server.connect(), server_hostname="127.0.0.1") as sock:
        assert sock.version() == "TLSv1.3"
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert ResponseReader(sock).read().body == b"Hello, World!"


def test_missing_certificate_is_a_clear_error(start_server, tmp_path: Path) -> None:
    from tests.live import LiveServer

    server = LiveServer(
        log_path=tmp_path / "bad.log",
        env={"WSGISERVE_CERTFILE": str(tmp_path / "missing.pem")},
        wait_ready=False,
    )
    server.start()
    assert server.process is not None
    code = server.process.wait(30)
    server.stop()
    assert code == 2
    assert "CERTFILE (environment WSGISERVE_CERTFILE): cannot load the certificate" in server.log()
