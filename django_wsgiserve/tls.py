"""TLS for listeners, when CERTFILE (and KEYFILE) are set: small deployments without a proxy.

Design note. ``server_context()`` builds one ``ssl.SSLContext`` with the ssl module's modern
server defaults (``create_default_context(Purpose.CLIENT_AUTH)``), TLS 1.2 as the floor and
ALPN ``http/1.1``. The management command builds one first to turn a missing or mismatched
file into a clear error naming the option; each worker's loop then builds its own.

How connections use it (``connection.py``): the handshake runs non-blocking in the loop; an
``SSLSocket`` is never read by the loop while a pool thread writes to it (reading stops while
a request runs); it has no ``sendmsg`` and no send flags, so parts are joined; and files go
out with ``pread`` + ``send`` instead of ``os.sendfile``, which cannot encrypt.

Imports only the stdlib and ``errors``.
"""

from __future__ import annotations

import ssl

from .errors import ConfigError

__all__ = ["server_context"]


def server_context(certfile: str, keyfile: str = "", *, source: str = "") -> ssl.SSLContext:
    """A server-side context for ``certfile``/``keyfile``; ConfigError naming CERTFILE when
    the files cannot be used."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
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
