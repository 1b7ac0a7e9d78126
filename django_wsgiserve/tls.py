"""TLS for listeners, when CERTFILE (and KEYFILE) are set: small deployments without a proxy.

Design note. ``server_context()`` builds one ``ssl.SSLContext`` with the ssl module's modern
server defaults (``create_default_context(Purpose.CLIENT_AUTH)``), TLS 1.2 as the floor, only
AEAD cipher suites for TLS 1.2 (TLS 1.3 suites are left to OpenSSL: all of them are AEAD) and
ALPN ``http/1.1``. The management command builds one first to turn a missing or mismatched
file into a clear error naming the option; each worker's loop then builds its own.

How connections use it (``connection.py``): the handshake runs non-blocking in the loop; an
``SSLSocket`` is never read by the loop while a pool thread writes to it (reading stops while
a request runs); it has no ``sendmsg`` and no send flags, so parts are joined; and files go
out with ``pread`` + ``send`` instead of ``os.sendfile``, which cannot encrypt.

Imports only the stdlib and ``errors``.
"""

from __future__ import annotations

import enum
import ssl

from .errors import ConfigError

__all__ = [
    "TLS12_CIPHERS",
    "HandshakeStep",
    "advance_handshake",
    "read_decrypted",
    "server_context",
]

# The TLS 1.2 cipher suites of Mozilla's "intermediate" server profile (Server Side TLS 5.x):
# ECDHE or DHE key exchange and an AEAD cipher (AES-GCM, ChaCha20-Poly1305), and nothing else.
# The ssl module's defaults also offer CBC suites with HMAC-SHA2 (ECDHE-RSA-AES128-SHA256...),
# whose MAC-then-encrypt padding is what LUCKY13-style timing attacks go after; TLS scanners
# flag them. Every client of the intermediate profile (Firefox 27, Chrome 31, Android 4.4.2,
# Java 8u31, OpenSSL 1.0.1) has one of these. The DHE suites are only chosen when the context
# has DH parameters, which it does not load: ECDHE serves those clients. Used in this order.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)


def server_context(certfile: str, keyfile: str = "", *, source: str = "") -> ssl.SSLContext:
    """A server-side context for ``certfile``/``keyfile``; ConfigError naming CERTFILE when
    the files cannot be used."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Sets the TLS 1.2 (and older) suites only: OpenSSL keeps TLS 1.3 suites in a separate list.
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(certfile, keyfile or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the certificate {certfile!r}"
            + (f" with the key {keyfile!r}" if keyfile else "")
            + f": {exc}",
            option="CERTFILE",
            source=source or None,
        ) from exc
    return context


class HandshakeStep(enum.Enum):
    DONE = "done"
    WANT_READ = "want read"
    WANT_WRITE = "want write"


def advance_handshake(sock: ssl.SSLSocket) -> HandshakeStep:
    """One non-blocking step of a server-side handshake; raises ``OSError`` (``ssl.SSLError``
    included) when it fails."""
    try:
        sock.do_handshake()
    except ssl.SSLWantReadError:
        return HandshakeStep.WANT_READ
    except ssl.SSLWantWriteError:
        return HandshakeStep.WANT_WRITE
    return HandshakeStep.DONE


def read_decrypted(sock: ssl.SSLSocket, size: int) -> bytes:
    """``recv`` plus every byte TLS has decrypted already: epoll cannot tell about those, so
    they must be taken now or wait for the next packet."""
    data = sock.recv(size)
    if data:
        chunks = [data]
        while sock.pending():
            chunks.append(sock.recv(size))
        data = b"".join(chunks)
    return data
