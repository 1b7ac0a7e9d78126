"""A small test-side uwsgi encoder (the nginx side of the protocol), written from the packet
layout and independent of the parser: 4-byte header (modifier1, u16 LE datasize, modifier2),
then (u16 LE key size, key, u16 LE value size, value) pairs, then the body."""

from __future__ import annotations

import struct


def encode_vars(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(
        struct.pack("<H", len(key)) + key + struct.pack("<H", len(value)) + value
        for key, value in pairs
    )


def packet(
    pairs: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    modifier1: int = 0,
    modifier2: int = 0,
) -> bytes:
    block = encode_vars(pairs)
    return struct.pack("<BHB", modifier1, len(block), modifier2) + block + body


def raw_packet(block: bytes, body: bytes = b"", *, datasize: int | None = None) -> bytes:
    """A packet around an arbitrary vars block, with a datasize that may lie."""
    size = len(block) if datasize is None else datasize
    return struct.pack("<BHB", 0, size, 0) + block + body
