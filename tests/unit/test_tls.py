"""server_context(): which TLS 1.2 suites it offers, checked by handshakes in memory."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import pytest

from django_wsgiserve.errors import ConfigError
from django_wsgiserve.tls import server_context
from tests.certificates import self_signed

if TYPE_CHECKING:
    from pathlib import Path

# CBC suites with HMAC-SHA2 (the ssl module's defaults offered them) and with HMAC-SHA1.
CBC_SUITES = [
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-SHA256",
    "AES128-SHA",
]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    cert, key = certificate
    return server_context(str(cert), str(key))


def client(
    certificate: tuple[Path, Path], *, ciphers: str = "", tls12_only: bool = True
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(certificate[0]))
    if tls12_only:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if ciphers:
        context.set_ciphers(ciphers)
    return context


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[str, str]:
    """Run a handshake between the two contexts over memory buffers; return the client's
    (version, cipher). Raises the ssl.SSLError of whichever side refuses."""
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    client_side = client.wrap_bio(client_in, client_out, server_hostname="127.0.0.1")
    done = {"client": False, "server": False}
    for _ in range(10):  # a TLS 1.2 handshake takes two round trips
        for name, side, out, peer_in in (
            ("client", client_side, client_out, server_in),
            ("server", server_side, server_out, client_in),
        ):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
                finally:
                    # Even a refusal sends an alert: hand it over.
                    peer_in.write(out.read())
        if all(done.values()):
            version, cipher = client_side.version(), client_side.cipher()
            assert version is not None
            assert cipher is not None
            return version, cipher[0]
    raise AssertionError("the handshake did not finish")


def test_tls12_offers_only_aead_suites(server: ssl.SSLContext) -> None:
    tls12 = [cipher for cipher in server.get_ciphers() if cipher["protocol"] == "TLSv1.2"]
    assert tls12
    assert [cipher["name"] for cipher in tls12 if not cipher["aead"]] == []


def test_tls13_suites_are_the_ssl_module_defaults(server: ssl.SSLContext) -> None:
    def tls13(context: ssl.SSLContext) -> set[str]:
        return {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.3"}

    assert tls13(server) == tls13(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))


@pytest.mark.parametrize(
    "ciphers",
    [pytest.param(":".join(CBC_SUITES), id="all-cbc")]
    + [pytest.param(name, id=name) for name in CBC_SUITES[:2]],
)
def test_a_cbc_only_tls12_client_is_refused(server, certificate, ciphers) -> None:
    with pytest.raises(ssl.SSLError):
        handshake(server, client(certificate, ciphers=ciphers))


@pytest.mark.parametrize(
    "cipher",
    [
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ],
)
def test_an_aead_tls12_client_is_served(server, certificate, cipher) -> None:
    assert handshake(server, client(certificate, ciphers=cipher)) == ("TLSv1.2", cipher)


def test_a_default_client_gets_tls13(server, certificate) -> None:
    version, _ = handshake(server, client(certificate, tls12_only=False))
    assert version == "TLSv1.3"


def test_a_missing_certificate_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load the certificate") as caught:
        server_context(str(tmp_path / "missing.pem"))
    assert caught.value.option == "CERTFILE"
