"""FastCGI 1.0 wire format: record headers, name-value pairs and the constants of spec §8.

Design note: pure functions over bytes, shared by ``FastCGIConnection`` (which reads records)
and ``FastCGIResponseWriter`` (which writes them). Section numbers ("spec §3.3") refer to the
FastCGI Specification, Document Version 1.0 (Open Market, 29 April 1996). No state; imports
only the stdlib and ``errors``.
"""

from __future__ import annotations

import enum
import struct
from typing import TYPE_CHECKING

from django_wsgiserve.errors import InvalidFastCGIRecordError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = [
    "HEADER",
    "KEEP_CONN",
    "MAX_ALIGNED_CONTENT",
    "VERSION_1",
    "ProtocolStatus",
    "RecordType",
    "Role",
    "decode_pairs",
    "encode_pairs",
    "end_request_record",
    "padding_for",
    "record",
    "record_header",
]

# Spec §3.3 / §8: version, type, requestId (u16 BE), contentLength (u16 BE), paddingLength,
# reserved. "Future versions of the protocol will not reduce this number" (8 bytes).
HEADER = struct.Struct(">BBHHBx")
VERSION_1 = 1
# Spec §5.1: flags & FCGI_KEEP_CONN: the web server keeps the connection after the request.
KEEP_CONN = 1
# Spec §3.3: contentData is "between 0 and 65535 bytes". 65528 is the largest multiple of 8
# below it: records of that size need no padding to stay 8-byte aligned (spec §3.3 "Padding").
MAX_ALIGNED_CONTENT = 65528

_PADDING = bytes(7)
_LENGTH4 = struct.Struct(">I")
_END_REQUEST_BODY = struct.Struct(">IB3x")  # spec §5.5: appStatus (u32 BE), protocolStatus
_FOUR_BYTE_FLAG = 0x80000000
_MAX_PAIR_LENGTH = 0x7FFFFFFF  # spec §3.4: 31 bits in the four-byte form


class RecordType(enum.IntEnum):
    """Spec §8: values for the type component of FCGI_Header."""

    BEGIN_REQUEST = 1
    ABORT_REQUEST = 2
    END_REQUEST = 3
    PARAMS = 4
    STDIN = 5
    STDOUT = 6
    STDERR = 7
    DATA = 8
    GET_VALUES = 9
    GET_VALUES_RESULT = 10
    UNKNOWN_TYPE = 11


class Role(enum.IntEnum):
    """Spec §8: values for the role component of FCGI_BeginRequestBody."""

    RESPONDER = 1
    AUTHORIZER = 2
    FILTER = 3


class ProtocolStatus(enum.IntEnum):
    """Spec §5.5: values for the protocolStatus component of FCGI_EndRequestBody."""

    REQUEST_COMPLETE = 0
    CANT_MPX_CONN = 1
    OVERLOADED = 2
    UNKNOWN_ROLE = 3


def padding_for(length: int) -> int:
    """The padding that keeps a record of ``length`` content bytes 8-byte aligned."""
    return -length % 8


def record_header(record_type: int, request_id: int, length: int, padding: int) -> bytes:
    """The 8-byte header of a record (spec §3.3)."""
    return HEADER.pack(VERSION_1, record_type, request_id, length, padding)


def record(record_type: int, request_id: int, content: bytes = b"") -> bytes:
    """One whole record, padded to 8 bytes; ``content`` must fit (at most 65535 bytes)."""
    padding = padding_for(len(content))
    return (
        HEADER.pack(VERSION_1, record_type, request_id, len(content), padding)
        + content
        + _PADDING[:padding]
    )


def end_request_record(request_id: int, app_status: int, protocol_status: int) -> bytes:
    """{FCGI_END_REQUEST, R, {protocolStatus, appStatus}} (spec §5.5)."""
    body = _END_REQUEST_BODY.pack(app_status & 0xFFFFFFFF, protocol_status)
    return record(RecordType.END_REQUEST, request_id, body)


def _encode_length(length: int) -> bytes:
    # Spec §3.4: lengths of 127 bytes and less take one byte, longer ones four bytes with the
    # high bit set.
    if length < 0x80:
        return bytes((length,))
    return _LENGTH4.pack(length | _FOUR_BYTE_FLAG)


def encode_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Name-value pairs (spec §3.4): name length, value length, name, value."""
    return b"".join(
        _encode_length(len(name)) + _encode_length(len(value)) + name + value
        for name, value in pairs
    )


def decode_pairs(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield the name-value pairs of a complete stream (spec §3.4); raise
    ``InvalidFastCGIRecordError`` if a pair is cut short. One pass over ``data``."""
    end = len(data)
    position = 0
    while position < end:
        name_length, position = _decode_length(data, position, end)
        value_length, position = _decode_length(data, position, end)
        name_end = position + name_length
        value_end = name_end + value_length
        if value_end > end:
            raise InvalidFastCGIRecordError("a name-value pair runs past the end of its stream")
        yield data[position:name_end], data[name_end:value_end]
        position = value_end


def _decode_length(data: bytes, position: int, end: int) -> tuple[int, int]:
    if position >= end:
        raise InvalidFastCGIRecordError("a name-value pair is cut inside its lengths")
    first = data[position]
    if first < 0x80:
        return first, position + 1
    if position + 4 > end:
        raise InvalidFastCGIRecordError("a name-value pair is cut inside a four-byte length")
    (length,) = _LENGTH4.unpack_from(data, position)
    return length & _MAX_PAIR_LENGTH, position + 4
