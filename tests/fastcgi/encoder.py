"""A small test-side FastCGI encoder (the web server side), written from the FastCGI 1.0
specification and independent of the package: records (spec §3.3), name-value pairs (spec
§3.4), BEGIN_REQUEST bodies (spec §5.1); and a decoder of what the application sends back."""

from __future__ import annotations

import itertools
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

BEGIN, ABORT, END, PARAMS, STDIN, STDOUT, STDERR, DATA = 1, 2, 3, 4, 5, 6, 7, 8
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11
RESPONDER, AUTHORIZER, FILTER = 1, 2, 3
KEEP_CONN = 1


def record(
    record_type: int,
    request_id: int,
    content: bytes = b"",
    *,
    padding: int | None = None,
    version: int = 1,
) -> bytes:
    """One record; padding to 8 bytes by default, or exactly ``padding`` (junk) bytes."""
    if padding is None:
        padding = (8 - len(content) % 8) % 8
    header = struct.pack(">BBHHBB", version, record_type, request_id, len(content), padding, 0)
    return header + content + b"\xaa" * padding


def length(n: int) -> bytes:
    return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)


def pairs(items: list[tuple[bytes, bytes]], *, long_lengths: bool = False) -> bytes:
    """Name-value pairs; ``long_lengths`` uses the four-byte form even for short lengths
    (allowed: the high bit alone says which form is used)."""
    encode = (lambda n: struct.pack(">I", n | 0x80000000)) if long_lengths else length
    return b"".join(encode(len(n)) + encode(len(v)) + n + v for n, v in items)


def begin(request_id: int = 1, *, role: int = RESPONDER, flags: int = 0) -> bytes:
    return record(BEGIN, request_id, struct.pack(">HB5x", role, flags))


def stream(record_type: int, request_id: int, data: bytes, cuts: Sequence[int] = ()) -> bytes:
    """A whole stream: ``data`` cut at ``cuts`` into non-empty records, then the empty one."""
    bounds = [0, *sorted(set(cuts)), len(data)]
    records = [
        record(record_type, request_id, data[a:b]) for a, b in itertools.pairwise(bounds) if b > a
    ]
    return b"".join(records) + record(record_type, request_id)


def request(
    items: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    request_id: int = 1,
    flags: int = 0,
    param_cuts: Sequence[int] = (),
    stdin_cuts: Sequence[int] = (),
) -> bytes:
    """BEGIN_REQUEST, the PARAMS stream, the STDIN stream (nginx's order)."""
    return (
        begin(request_id, flags=flags)
        + stream(PARAMS, request_id, pairs(items), param_cuts)
        + stream(STDIN, request_id, body, stdin_cuts)
    )


def nginx_request(items: list[tuple[bytes, bytes]], body: bytes = b"", *, flags: int = 0) -> bytes:
    """As nginx sends it: request id 1, all params in one padded record, the body in
    records of at most 32 KiB."""
    return request(items, body, flags=flags, stdin_cuts=list(range(32768, len(body), 32768)))


def parse_records(data: bytes) -> list[tuple[int, int, bytes]]:
    """Decode what the application sent: (type, request id, content), checking the framing
    and that every record starts 8-byte aligned."""
    out = []
    position = 0
    while position < len(data):
        assert position % 8 == 0, "record not 8-byte aligned"
        version, record_type, request_id, size, padding, _ = struct.unpack_from(
            ">BBHHBB", data, position
        )
        assert version == 1
        start = position + 8
        out.append((record_type, request_id, data[start : start + size]))
        position = start + size + padding
    assert position == len(data), "truncated record"
    return out


def decode_pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    position = 0

    def take_length() -> int:
        nonlocal position
        if data[position] < 128:
            position += 1
            return data[position - 1]
        (n,) = struct.unpack_from(">I", data, position)
        position += 4
        return n & 0x7FFFFFFF

    while position < len(data):
        name_length = take_length()
        value_length = take_length()
        name = data[position : position + name_length]
        value = data[position + name_length : position + name_length + value_length]
        out.append((name, value))
        position += name_length + value_length
    return out


def end_request_body(app_status: int, protocol_status: int) -> bytes:
    return struct.pack(">IB3x", app_status, protocol_status)
