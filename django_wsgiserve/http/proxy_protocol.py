"""Sans-I/O parser of the PROXY protocol header, versions 1 (text) and 2 (binary).

Design note. A load balancer that speaks the PROXY protocol (HAProxy, AWS NLB, many others;
spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt) sends one header before
the first byte of HTTP, telling us the client's address. With PROXY_PROTOCOL on, the header
is *required* on every connection: a connection without one is rejected, never served with
the balancer's own address, or a client could skip the header and hide behind the balancer.

``ProxyHeaderParser.feed(data)`` returns ``None`` while more bytes are needed, then one
``ProxyInfo``; ``remainder`` holds what followed the header (the start of the HTTP request).
The version is told apart by the first byte (``P`` or ``\\r``). Limits: a v1 line is at most
107 bytes (spec §2.1); a v2 header carries at most ``MAX_V2_PAYLOAD`` bytes after its 16-byte
preamble. Errors raise ``ProxyProtocolError``. ``LOCAL`` (v2) and ``UNKNOWN`` (v1) headers,
and non-IP families, give ``ProxyInfo(source=None)``: the balancer's own connection (health
checks), served under the peer address.

Like the rest of ``http/``: no I/O, no module state, only the stdlib and ``errors``. The
parser scans each byte at most once per feed and keeps at most one header's worth of bytes.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from django_wsgiserve.errors import ProxyProtocolError

__all__ = ["MAX_V1_BYTES", "MAX_V2_PAYLOAD", "V2_SIGNATURE", "ProxyHeaderParser", "ProxyInfo"]

V1_PREFIX = b"PROXY "
MAX_V1_BYTES = 107  # spec §2.1: "PROXY UNKNOWN ffff:...:ffff ffff:...:ffff 65535 65535\r\n"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_PREAMBLE = 16
# Addresses take at most 216 bytes (AF_UNIX); the rest are TLVs (AWS, Azure and GCP add a few
# dozen bytes). HAProxy accepts what fits its buffer; 4 KiB leaves plenty of room.
MAX_V2_PAYLOAD = 4096
_V2_ADDRESS_SIZES = {0x1: 12, 0x2: 36, 0x3: 216}  # family -> bytes of addresses and ports


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    """What the header said. ``source``/``destination`` are (address, port) or None when the
    header does not describe a proxied TCP connection (v2 LOCAL, v1 UNKNOWN, AF_UNIX)."""

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None


class ProxyHeaderParser:
    """Reads one PROXY protocol header from the start of a connection."""

    __slots__ = ("_buffer", "remainder")

    def __init__(self) -> None:
        self._buffer = b""
        self.remainder = b""

    def feed(self, data: bytes) -> ProxyInfo | None:
        """Add ``data``; return the header once complete, None while more is needed."""
        buffer = self._buffer + data
        self._buffer = buffer
        if not buffer:
            return None
        if buffer[0] == V1_PREFIX[0]:
            return self._feed_v1(buffer)
        if buffer[0] == V2_SIGNATURE[0]:
            return self._feed_v2(buffer)
        raise ProxyProtocolError("the connection does not start with a PROXY protocol header")

    def _feed_v1(self, buffer: bytes) -> ProxyInfo | None:
        end = buffer.find(b"\r\n", 0, MAX_V1_BYTES)
        if end < 0:
            prefix = buffer[: len(V1_PREFIX)]
            if not V1_PREFIX.startswith(prefix):
                raise ProxyProtocolError("the connection does not start with 'PROXY '")
            if b"\n" in buffer or len(buffer) >= MAX_V1_BYTES:
                raise ProxyProtocolError(f"PROXY v1 line without CRLF in {MAX_V1_BYTES} bytes")
            return None
        self.remainder = buffer[end + 2 :]
        self._buffer = b""
        return _parse_v1_line(buffer[:end])

    def _feed_v2(self, buffer: bytes) -> ProxyInfo | None:
        signature = buffer[: len(V2_SIGNATURE)]
        if not V2_SIGNATURE.startswith(signature):
            raise ProxyProtocolError("invalid PROXY v2 signature")
        if len(buffer) < _V2_PREAMBLE:
            return None
        version_command, family_protocol, length = struct.unpack_from("!BBH", buffer, 12)
        if length > MAX_V2_PAYLOAD:
            raise ProxyProtocolError(f"PROXY v2 header of {length} bytes is too long")
        end = _V2_PREAMBLE + length
        if len(buffer) < end:
            return None
        self.remainder = buffer[end:]
        self._buffer = b""
        return _parse_v2(version_command, family_protocol, buffer[_V2_PREAMBLE:end])


def _parse_v1_line(line: bytes) -> ProxyInfo:
    """``PROXY TCP4 192.0.2.1 198.51.100.1 56324 443`` (spec §2.1), without its CRLF."""
    parts = line.split(b" ")
    if parts[0] != b"PROXY" or len(parts) < 2:
        raise ProxyProtocolError("malformed PROXY v1 line")
    protocol = parts[1]
    if protocol == b"UNKNOWN":
        # "the receiver must ignore anything presented before the CRLF" (spec §2.1).
        return ProxyInfo(version=1, source=None, destination=None)
    if protocol not in (b"TCP4", b"TCP6") or len(parts) != 6:
        raise ProxyProtocolError("malformed PROXY v1 line")
    version = 4 if protocol == b"TCP4" else 6
    source = _v1_address(parts[2], version), _v1_port(parts[4])
    destination = _v1_address(parts[3], version), _v1_port(parts[5])
    return ProxyInfo(version=1, source=source, destination=destination)


def _v1_address(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyProtocolError("invalid address in a PROXY v1 line") from None
    if address.version != version:
        raise ProxyProtocolError("address family does not match the PROXY v1 protocol")
    return str(address)


def _v1_port(text: bytes) -> int:
    # Spec §2.1: 1 to 5 digits, no leading zero (except "0" itself), at most 65535.
    if not (text.isdigit() and len(text) <= 5 and (text == b"0" or text[:1] != b"0")):
        raise ProxyProtocolError("invalid port in a PROXY v1 line")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError("invalid port in a PROXY v1 line")
    return port


def _parse_v2(version_command: int, family_protocol: int, payload: bytes) -> ProxyInfo:
    """The 13th byte onwards of a v2 header (spec §2.2)."""
    if version_command >> 4 != 2:
        raise ProxyProtocolError("unsupported PROXY protocol version")
    command = version_command & 0xF
    family, protocol = family_protocol >> 4, family_protocol & 0xF
    if command > 1 or family > 3 or protocol > 2:
        raise ProxyProtocolError("invalid PROXY v2 command, family or protocol")
    needed = _V2_ADDRESS_SIZES.get(family, 0)
    if len(payload) < needed:
        raise ProxyProtocolError("PROXY v2 addresses are truncated")
    if command == 0 or family in (0, 3):
        # LOCAL: the balancer's own connection (health checks). UNSPEC or AF_UNIX: nothing
        # we could put in REMOTE_ADDR. Either way the real peer stands.
        return ProxyInfo(version=2, source=None, destination=None)
    if family == 1:
        source_ip, destination_ip = payload[0:4], payload[4:8]
        ports = payload[8:12]
    else:
        source_ip, destination_ip = payload[0:16], payload[16:32]
        ports = payload[32:36]
    source_port, destination_port = struct.unpack("!HH", ports)
    return ProxyInfo(
        version=2,
        source=(str(ipaddress.ip_address(source_ip)), source_port),
        destination=(str(ipaddress.ip_address(destination_ip)), destination_port),
    )
