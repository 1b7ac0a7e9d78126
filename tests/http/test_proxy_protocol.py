"""The sans-I/O PROXY protocol parser (v1 text, v2 binary): valid headers, every split, and
malformed headers rejected with ProxyProtocolError."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings, strategies as st

from django_wsgiserve.errors import ProtocolError, ProxyProtocolError
from django_wsgiserve.http.proxy_protocol import (
    MAX_V2_PAYLOAD,
    V2_SIGNATURE,
    ProxyHeaderParser,
    ProxyInfo,
)

HTTP = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def v2(
    source: str,
    destination: str,
    ports: tuple[int, int] = (56324, 443),
    *,
    command: int = 1,
    tlvs: bytes = b"",
) -> bytes:
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    family = 0x11 if src.version == 4 else 0x21
    payload = src.packed + dst.packed + struct.pack("!HH", *ports) + tlvs
    return (
        V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(payload)) + payload
    )


def parse_all(raw: bytes) -> tuple[ProxyInfo | None, bytes]:
    parser = ProxyHeaderParser()
    info = parser.feed(raw)
    return info, parser.remainder


VALID = [
    pytest.param(
        b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n",
        ProxyInfo(1, ("192.0.2.1", 56324), ("198.51.100.1", 443)),
        id="v1-tcp4",
    ),
    pytest.param(
        b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
        ProxyInfo(1, ("2001:db8::1", 1), ("2001:db8::2", 65535)),
        id="v1-tcp6",
    ),
    pytest.param(b"PROXY UNKNOWN\r\n", ProxyInfo(1, None, None), id="v1-unknown"),
    pytest.param(
        b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n", ProxyInfo(1, None, None), id="v1-unknown-junk"
    ),
    pytest.param(
        v2("203.0.113.7", "10.0.0.1"),
        ProxyInfo(2, ("203.0.113.7", 56324), ("10.0.0.1", 443)),
        id="v2-inet",
    ),
    pytest.param(
        v2("2001:db8::7", "2001:db8::1", (80, 8080)),
        ProxyInfo(2, ("2001:db8::7", 80), ("2001:db8::1", 8080)),
        id="v2-inet6",
    ),
    pytest.param(
        v2("203.0.113.7", "10.0.0.1", tlvs=b"\x05\x00\x04abcd"),
        ProxyInfo(2, ("203.0.113.7", 56324), ("10.0.0.1", 443)),
        id="v2-with-tlv",
    ),
    pytest.param(v2("203.0.113.7", "10.0.0.1", command=0), ProxyInfo(2, None, None), id="v2-local"),
    pytest.param(
        V2_SIGNATURE + b"\x21\x00\x00\x00", ProxyInfo(2, None, None), id="v2-unspec-family"
    ),
    pytest.param(
        V2_SIGNATURE + b"\x21\x31" + struct.pack("!H", 216) + b"/a".ljust(216, b"\0"),
        ProxyInfo(2, None, None),
        id="v2-unix-family",
    ),
]


@pytest.mark.parametrize(("header", "expected"), VALID)
def test_valid_header_whole(header: bytes, expected: ProxyInfo) -> None:
    assert parse_all(header + HTTP) == (expected, HTTP)


@pytest.mark.parametrize(("header", "expected"), VALID)
def test_valid_header_byte_by_byte(header: bytes, expected: ProxyInfo) -> None:
    parser = ProxyHeaderParser()
    raw = header + HTTP
    for index in range(len(header) - 1):
        assert parser.feed(raw[index : index + 1]) is None
    assert parser.feed(raw[len(header) - 1 :]) == expected
    assert parser.remainder == HTTP


INVALID = [
    pytest.param(HTTP, id="plain-http"),
    pytest.param(b"\x16\x03\x01\x02\x00", id="tls-client-hello"),
    pytest.param(b"PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n", id="v1-bad-prefix"),
    pytest.param(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", id="v1-bad-protocol"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", id="v1-missing-port"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", id="v1-extra-field"),
    pytest.param(b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", id="v1-double-space"),
    pytest.param(b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n", id="v1-bad-address"),
    pytest.param(b"PROXY TCP4 ::1 ::2 1 2\r\n", id="v1-family-mismatch"),
    pytest.param(b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", id="v1-family-mismatch-6"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", id="v1-port-too-big"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", id="v1-port-leading-zero"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", id="v1-port-negative"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n", id="v1-port-non-ascii"),
    pytest.param(b"PROXY " + b"A" * 120, id="v1-too-long"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", id="v1-bare-lf"),
    pytest.param(b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c", id="v2-bad-signature"),
    pytest.param(V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), id="v2-version-1"),
    pytest.param(V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), id="v2-bad-command"),
    pytest.param(V2_SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12), id="v2-bad-family"),
    pytest.param(V2_SIGNATURE + b"\x21\x13\x00\x0c" + bytes(12), id="v2-bad-protocol"),
    pytest.param(V2_SIGNATURE + b"\x21\x11\x00\x08" + bytes(8), id="v2-truncated-inet"),
    pytest.param(V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12), id="v2-truncated-inet6"),
    pytest.param(
        V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", MAX_V2_PAYLOAD + 1), id="v2-too-long"
    ),
]


def feed_bytewise(raw: bytes) -> None:
    parser = ProxyHeaderParser()
    for index in range(len(raw)):
        parser.feed(raw[index : index + 1])


@pytest.mark.parametrize("raw", INVALID)
def test_malformed_header_is_rejected(raw: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        feed_bytewise(raw)
    with pytest.raises(ProxyProtocolError):
        ProxyHeaderParser().feed(raw)


def test_error_is_a_400_protocol_error() -> None:
    assert issubclass(ProxyProtocolError, ProtocolError)
    assert ProxyProtocolError.status_code == 400


def test_incomplete_header_needs_more() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(b"PROXY TCP4 1.2.3.4") is None
    assert parser.feed(b"") is None
    assert parser.feed(b" 5.6.7.8 1 2\r") is None
    assert parser.feed(b"\n") == ProxyInfo(1, ("1.2.3.4", 1), ("5.6.7.8", 2))


@settings(derandomize=True, database=None, max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(min_value=1, max_value=50), max_size=10))
def test_arbitrary_bytes_only_raise_proxy_protocol_errors(raw: bytes, sizes: list[int]) -> None:
    for prefix in (b"", b"PROXY ", V2_SIGNATURE):
        parser = ProxyHeaderParser()
        data = prefix + raw
        try:
            position = 0
            for size in [*sizes, len(data)]:
                parser.feed(data[position : position + size])
                position += size
        except ProxyProtocolError:
            pass
