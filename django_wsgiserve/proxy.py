"""Trusted proxies: who may tell us the client's address and scheme (TRUSTED_PROXIES).

Design note. A reverse proxy in front of the server reports the real client in
``X-Forwarded-For`` and the scheme the client used in ``X-Forwarded-Proto``. Anyone can send
those headers, so they mean something only when the *peer* (the address of the TCP connection,
or the one a PROXY protocol header gave) is a proxy the operator trusts:

* From a trusted peer, ``REMOTE_ADDR`` becomes the right-most ``X-Forwarded-For`` hop that is not
  itself a trusted proxy (each proxy *appends* the address it saw, so everything left of the
  first untrusted hop, counting from the right, was written by the client and may be forged),
  and ``wsgi.url_scheme`` becomes the right-most ``X-Forwarded-Proto`` value (the one our
  proxy set) when it is ``http`` or ``https``. The header is rewritten to that single value,
  so Django's ``SECURE_PROXY_SSL_HEADER``, which reads the first value, agrees with the
  environ.
* From anyone else every forwarding header (``_FORWARDED_KEYS``) is removed before the
  application sees it, so ``SECURE_PROXY_SSL_HEADER`` and ``USE_X_FORWARDED_HOST`` cannot be
  fooled by a client that talks to the server directly.

``TRUSTED_PROXIES`` holds addresses and CIDR ranges (``10.0.0.0/8``, ``::1``) and the word
``unix`` for clients of a unix socket (only local processes with write permission on the
socket file can connect there). The default, loopback and ``unix``, suits a proxy on the same
host. ``"*"`` trusts every peer (only for a server that no client can reach directly).

Runs in pool threads, on an environ built for one request; ``TrustedProxies`` is immutable
after construction and safe to share. Imports only the stdlib.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "DEFAULT_TRUSTED_PROXIES",
    "FORWARDED_HEADERS",
    "TrustedProxies",
    "parse_trusted_proxies",
]

# gunicorn forwarded_allow_ips defaults to 127.0.0.1,::1 (plus unix sockets since 22.0).
DEFAULT_TRUSTED_PROXIES = ("127.0.0.1", "::1", "unix")
UNIX_PEER = "unix"
ANY_PEER = "*"

#: The headers a client could use to pose as a proxy; removed unless the peer is trusted.
FORWARDED_HEADERS = (
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "X-Forwarded-Protocol",
    "X-Forwarded-Ssl",
    "X-Forwarded-Scheme",
    "X-Real-Ip",
    "X-Url-Scheme",
)
_FORWARDED_KEYS = frozenset("HTTP_" + name.upper().replace("-", "_") for name in FORWARDED_HEADERS)
_SCHEMES = frozenset({"http", "https"})

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted_proxies(specs: Iterable[str]) -> TrustedProxies:
    """Build a ``TrustedProxies`` from addresses, CIDR ranges, ``unix`` and ``*``.

    Raises ``ValueError`` with an operator-facing message for anything else.
    """
    networks: list[_Network] = []
    trusts_unix = trusts_any = False
    for spec in specs:
        text = spec.strip()
        if text == UNIX_PEER:
            trusts_unix = True
        elif text == ANY_PEER:
            trusts_any = True
        else:
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValueError(
                    f"{spec!r} is not an IP address, a CIDR range (10.0.0.0/8), 'unix' or '*'"
                ) from None
    return TrustedProxies(networks=networks, trusts_unix=trusts_unix, trusts_any=trusts_any)


class TrustedProxies:
    """The set of trusted peers, and the environ rewrite that depends on it."""

    __slots__ = ("_cache", "_networks", "trusts_any", "trusts_unix")

    def __init__(
        self, *, networks: Iterable[_Network], trusts_unix: bool, trusts_any: bool = False
    ) -> None:
        self._networks = tuple(networks)
        self.trusts_unix = trusts_unix
        self.trusts_any = trusts_any
        # Verdicts for addresses seen; bounded so forged X-Forwarded-For hops cannot grow it.
        self._cache: dict[str, bool] = {}

    @property
    def is_empty(self) -> bool:
        """True when no peer at all is trusted."""
        return not (self._networks or self.trusts_unix or self.trusts_any)

    def is_trusted(self, address: str) -> bool:
        """Is ``address`` (``""`` for a unix-socket peer) a trusted proxy? (any thread)"""
        if self.trusts_any:
            return True
        if not address:
            return self.trusts_unix
        verdict = self._cache.get(address)
        if verdict is None:
            verdict = self._lookup(address)
            if len(self._cache) < 1024:
                self._cache[address] = verdict
        return verdict

    def _lookup(self, address: str) -> bool:
        valid = _valid_address(address.strip())
        if valid is None:
            return False  # "unknown", obfuscated identifiers, garbage: never a trusted proxy
        ip = ipaddress.ip_address(valid)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)

    def apply(self, environ: dict[str, Any]) -> None:
        """Rewrite ``environ`` for its peer (``REMOTE_ADDR``); see the notes above (pool thread)."""
        if _FORWARDED_KEYS.isdisjoint(environ):
            return
        if not self.is_trusted(environ.get("REMOTE_ADDR", "")):
            for key in _FORWARDED_KEYS.intersection(environ):
                del environ[key]
            return
        forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded_for is not None:
            client = self._client_address(forwarded_for)
            if client is not None:
                environ["REMOTE_ADDR"] = client
                environ["REMOTE_PORT"] = ""
        forwarded_proto = environ.get("HTTP_X_FORWARDED_PROTO")
        if forwarded_proto is not None:
            scheme = forwarded_proto.rpartition(",")[2].strip().lower()
            if scheme in _SCHEMES:
                environ["wsgi.url_scheme"] = scheme
                environ["HTTP_X_FORWARDED_PROTO"] = scheme
            else:
                del environ["HTTP_X_FORWARDED_PROTO"]

    def _client_address(self, forwarded_for: str) -> str | None:
        """The right-most hop that is not a trusted proxy (or the left-most, if all are)."""
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        hops = [hop for hop in hops if hop]
        if not hops:
            return None
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return _valid_address(hop)
        return _valid_address(hops[0])


def _valid_address(hop: str) -> str | None:
    """``hop`` as an IP address string, or None when it is not one (``unknown``, junk).

    Some proxies (Azure, IIS ARR) append the client's port: ``1.2.3.4:5678``, ``[::1]:80``.
    """
    if hop.startswith("["):
        hop = hop[1:].partition("]")[0]
    elif hop.count(":") == 1:
        hop = hop.partition(":")[0]
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return None
