"""Hypothesis properties of RequestParser (deterministic: derandomized, bounded examples).

1. Round trip: a generated valid request, serialised, parses back to the same fields and body.
2. Split invariance: the events are the same however the bytes are split into feeds.
3. Robustness: arbitrary bytes and mutated valid requests give events or a ProtocolError, never
   any other exception, and the outcome (error class included) does not depend on the split.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from hypothesis import given, settings, strategies as st

from django_wsgiserve.http import Data, EndOfMessage, Request
from tests.http.test_parser_vectors import run
from tests.properties import PROPERTY_SETTINGS, mutate, splits

TCHARS = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
# Headers the parser interprets; the generator adds them itself, with valid values. Singleton
# fields (RFC 9110 §5.3) are left out so that a repeated name cannot make a request invalid.
FRAMING_NAMES = {"host", "content-length", "transfer-encoding", "connection", "expect"}
SINGLETON_NAMES = {
    "content-type",
    "authorization",
    "proxy-authorization",
    "range",
    "if-range",
    "if-modified-since",
    "if-unmodified-since",
}
FIELD_VCHARS = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
# Visible ASCII but "?" (it starts the query) and "#" (RFC 9112 §3.2: no fragment).
PATH_CHARS = bytes(c for c in range(0x21, 0x7F) if c not in b"?#")
QUERY_CHARS = bytes(c for c in range(0x21, 0x7F) if c != ord("#"))
INTERESTING = b'\r\n\t :;,="\\\x00\x7f0159aFxX-+/?*@[]\xff'


@dataclass
class GeneratedRequest:
    raw: bytes
    method: bytes
    target: bytes
    path: bytes
    query: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    content_length: int | None
    is_chunked: bool
    keep_alive: bool
    trailers: list[tuple[bytes, bytes]]


tokens = st.text(alphabet=TCHARS, min_size=1, max_size=12).map(str.encode)
ows = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t "])


@st.composite
def field_values(draw: st.DrawFn) -> bytes:
    inner = draw(st.lists(st.sampled_from([*FIELD_VCHARS, 0x20, 0x09]), max_size=20))
    return bytes(inner).strip(b" \t")


@st.composite
def fields(draw: st.DrawFn) -> tuple[bytes, bytes]:
    name = draw(
        tokens.filter(lambda name: name.lower().decode() not in FRAMING_NAMES | SINGLETON_NAMES)
    )
    return name, draw(field_values())


@st.composite
def chunked_body(draw: st.DrawFn, body: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Serialise ``body`` with random chunk boundaries, extensions and trailers."""
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=5)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]
    out = b""
    for piece in pieces:
        size = b"%x" % len(piece)
        if draw(st.booleans()):
            size = size.upper()
        ext = draw(st.sampled_from([b"", b";a", b";a=b", b' ; q="x\\"y"', b";n=1;m"]))
        out += size + ext + b"\r\n" + piece + b"\r\n"
    trailers = draw(st.lists(fields(), max_size=3))
    out += b"0\r\n" + b"".join(n + b":" + b" " + v + b"\r\n" for n, v in trailers) + b"\r\n"
    return out, [(n.lower(), v) for n, v in trailers]


@st.composite
def requests(draw: st.DrawFn) -> GeneratedRequest:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE"]) | tokens)
    path = b"/" + bytes(draw(st.lists(st.sampled_from(PATH_CHARS), max_size=20)))
    query = draw(st.none() | st.lists(st.sampled_from(QUERY_CHARS), max_size=15).map(bytes))
    target = path if query is None else path + b"?" + query
    version = draw(st.sampled_from([b"1.1", b"1.0"]))
    headers = draw(st.lists(fields(), max_size=6))
    body = draw(st.binary(max_size=200))
    framing = draw(st.sampled_from(["length", "chunked"] if version == b"1.1" else ["length"]))
    if not body and draw(st.booleans()):
        framing = "none"
    connection = draw(st.sampled_from([None, b"close", b"keep-alive", b"Upgrade, Close"]))

    lines = list(headers)
    if version == b"1.1" or draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), (b"Host", b"example.com"))
    if connection is not None:
        lines.append((b"Connection", connection))
    trailers: list[tuple[bytes, bytes]] = []
    if framing == "length":
        lines.append((b"Content-Length", b"%d" % len(body)))
        wire_body = body
    elif framing == "chunked":
        lines.append((b"Transfer-Encoding", b"chunked"))
        wire_body, trailers = draw(chunked_body(body))
    else:
        wire_body = b""
    head = method + b" " + target + b" HTTP/" + version + b"\r\n"
    for name, value in lines:
        head += name + b":" + draw(ows) + value + draw(ows) + b"\r\n"
    options = {o.strip().lower() for o in (connection or b"").split(b",")}
    keep_alive = b"close" not in options and (version == b"1.1" or b"keep-alive" in options)
    return GeneratedRequest(
        raw=head + b"\r\n" + wire_body,
        method=method,
        target=target,
        path=path,
        query=query or b"",
        http_version=version,
        headers=[(name.lower(), value) for name, value in lines],
        body=body,
        content_length=len(body) if framing == "length" else None,
        is_chunked=framing == "chunked",
        keep_alive=keep_alive,
        trailers=trailers,
    )


@PROPERTY_SETTINGS
@given(requests())
def test_round_trip(generated):
    events, error = run([generated.raw], {})
    assert error is None, error
    request = events[0]
    assert isinstance(request, Request)
    assert request.method == generated.method
    assert request.target == generated.target
    assert request.path == generated.path
    assert request.query == generated.query
    assert request.http_version == generated.http_version
    assert list(request.headers) == generated.headers
    assert request.content_length == generated.content_length
    assert request.is_chunked is generated.is_chunked
    assert request.keep_alive is generated.keep_alive
    body = b"".join(event.data for event in events if isinstance(event, Data))
    assert body == generated.body
    assert events[-2] == EndOfMessage(trailers=tuple(generated.trailers))


@PROPERTY_SETTINGS
@given(st.lists(requests(), min_size=1, max_size=3), st.data())
def test_split_invariance(generated, data):
    raw = b"".join(request.raw for request in generated)
    whole = run([raw], {})
    assert whole[1] is None
    assert run(data.draw(splits(raw)), {}) == whole
    assert run([raw[i : i + 1] for i in range(len(raw))], {}) == whole


def outcome(pieces: list[bytes], limits: dict[str, int]) -> tuple[list[object], type | None]:
    """Parse; anything but a ProtocolError propagates and fails the test."""
    events, error = run(pieces, limits)
    return events, type(error) if error is not None else None


# Small limits half of the time, so that limit errors meet syntax errors.
limits: st.SearchStrategy[dict[str, int]] = st.just({}) | st.fixed_dictionaries(
    {},
    optional={
        "max_request_line": st.integers(8, 64),
        "max_headers": st.integers(0, 8),
        "max_header_bytes": st.integers(2, 128),
        "max_body_bytes": st.integers(0, 64),
    },
)


@settings(PROPERTY_SETTINGS, max_examples=500)
@given(st.binary(max_size=300), limits, st.data())
def test_arbitrary_bytes_only_raise_protocol_errors(raw, limits, data):
    whole = outcome([raw], limits)
    assert outcome(data.draw(splits(raw)), limits) == whole


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    return mutate(
        draw,
        b"".join(r.raw for r in draw(st.lists(requests(), min_size=1, max_size=2))),
        INTERESTING,
    )


@settings(PROPERTY_SETTINGS, max_examples=500)
@given(mutated(), limits, st.data())
def test_mutated_requests_only_raise_protocol_errors(raw, limits, data):
    whole = outcome([raw], limits)
    assert outcome(data.draw(splits(raw)), limits) == whole
    assert outcome([raw[i : i + 1] for i in range(len(raw))], limits) == whole
