"""Hypothesis properties of FastCGIConnection (deterministic: derandomized, bounded examples).

1. Round trip: generated requests, encoded by the test-side encoder with random record
   boundaries (pairs split across records), padding and interleaved management records, parse
   back to the same variables and bodies, and the answers come out in order.
2. Split invariance: events and sent bytes are the same however the input is split.
3. Robustness: arbitrary records and mutated valid streams give events or a ProtocolError,
   never any other exception, and the outcome does not depend on the split.
"""

from __future__ import annotations

import string
import struct

from hypothesis import given, settings, strategies as st

from django_wsgiserve.fastcgi import CGIRequest, Data, EndOfMessage
from tests.fastcgi.encoder import (
    GET_VALUES,
    GET_VALUES_RESULT,
    KEEP_CONN,
    PARAMS,
    STDIN,
    STDOUT,
    begin,
    pairs,
    parse_records,
    record,
    stream,
)
from tests.fastcgi.test_connection import run
from tests.properties import PROPERTY_SETTINGS as SHARED_SETTINGS, mutate, splits

TCHARS = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
INTERPRETED = {"REQUEST_METHOD", "CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING"}
INTERESTING = b"\x00\x01\x02\x04\x05\x08\x09\x80\xff\x7f"

PROPERTY_SETTINGS = settings(SHARED_SETTINGS, max_examples=150)

names = st.text(alphabet=TCHARS, min_size=1, max_size=140).filter(
    lambda name: name not in INTERPRETED
)


@st.composite
def cuts(draw: st.DrawFn, size: int) -> list[int]:
    return draw(st.lists(st.integers(1, max(1, size - 1)), max_size=6)) if size > 1 else []


@st.composite
def requests(draw: st.DrawFn, request_id: int) -> tuple[bytes, dict[str, str], bytes]:
    """A request's records (with KEEP_CONN), its variables and its body."""
    variables = draw(st.dictionaries(names, st.binary(max_size=200), max_size=8))
    body = draw(st.binary(max_size=400))
    items = [(name.encode(), value) for name, value in variables.items()]
    items.insert(draw(st.integers(0, len(items))), (b"REQUEST_METHOD", b"POST"))
    if draw(st.booleans()):
        items.append((b"CONTENT_LENGTH", b"%d" % len(body)))
    encoded = pairs(items, long_lengths=draw(st.booleans()))
    raw = (
        begin(request_id, flags=KEEP_CONN)
        + stream(PARAMS, request_id, encoded, draw(cuts(len(encoded))))
        + stream(STDIN, request_id, body, draw(cuts(len(body))))
    )
    if draw(st.booleans()):  # a management query somewhere in the request's records
        position = draw(st.sampled_from(_record_boundaries(raw)))
        query = record(GET_VALUES, 0, pairs([(b"FCGI_MPXS_CONNS", b"")]))
        raw = raw[:position] + query + raw[position:]
    expected = {name.decode(): value.decode("latin-1") for name, value in items}
    return raw, expected, body


def _record_boundaries(raw: bytes) -> list[int]:
    positions = []
    position = 0
    while position < len(raw):
        positions.append(position)
        size, padding = struct.unpack_from(">HB", raw, position + 4)
        position += 8 + size + padding
    return [*positions, len(raw)]


@st.composite
def conversations(draw: st.DrawFn) -> tuple[bytes, list[tuple[dict[str, str], bytes]]]:
    generated = [
        draw(requests(draw(st.integers(1, 0xFFFF)))) for _ in range(draw(st.integers(1, 3)))
    ]
    return b"".join(raw for raw, _, _ in generated), [(v, b) for _, v, b in generated]


@PROPERTY_SETTINGS
@given(conversations())
def test_round_trip(generated):
    raw, expected = generated
    events, sent, error = run([raw], {})
    assert error is None, error
    requests_seen = [event for event in events if isinstance(event, CGIRequest)]
    assert [dict(request.variables) for request in requests_seen] == [v for v, _ in expected]
    bodies: list[bytes] = []
    for event in events:
        if isinstance(event, CGIRequest):
            bodies.append(b"")
        elif isinstance(event, Data):
            bodies[-1] += event.data
    assert bodies == [body for _, body in expected]
    assert events.count(EndOfMessage()) == len(expected)
    records = parse_records(sent)
    answers = [r for r in records if r[0] == STDOUT and r[2]]
    assert len(answers) == len(expected)
    assert all(r[0] in (STDOUT, 3, GET_VALUES_RESULT) for r in records)


@PROPERTY_SETTINGS
@given(conversations(), st.data())
def test_split_invariance(generated, data):
    raw = generated[0]
    whole = run([raw], {})
    assert whole[2] is None
    assert run(data.draw(splits(raw)), {}) == whole
    assert run([raw[i : i + 1] for i in range(len(raw))], {}) == whole


def outcome(pieces: list[bytes], limits: dict[str, int]) -> tuple[object, ...]:
    """Run; anything but a ProtocolError propagates and fails the test."""
    events, sent, error = run(pieces, limits)
    return events, sent, type(error) if error is not None else None


limits: st.SearchStrategy[dict[str, int]] = st.just({}) | st.fixed_dictionaries(
    {},
    optional={"max_params_bytes": st.integers(0, 64), "max_body_bytes": st.integers(0, 64)},
)


@st.composite
def arbitrary_records(draw: st.DrawFn) -> bytes:
    """Well-framed records of random types, ids and contents, so that the dispatch and the
    state machine are reached (random bytes would mostly fail the version check)."""
    out = b""
    for _ in range(draw(st.integers(0, 8))):
        record_type = draw(st.integers(1, 12) | st.integers(0, 255))
        request_id = draw(st.sampled_from([0, 1, 2]) | st.integers(0, 0xFFFF))
        content = draw(
            st.binary(max_size=40)
            | st.just(struct.pack(">HB5x", 1, draw(st.integers(0, 255))))
            | st.builds(
                lambda items: pairs(items),
                st.lists(st.tuples(st.binary(max_size=5), st.binary(max_size=5)), max_size=3),
            )
        )
        out += record(record_type, request_id, content, padding=draw(st.integers(0, 9)))
    return out


@settings(PROPERTY_SETTINGS, max_examples=400)
@given(arbitrary_records() | st.binary(max_size=200), limits, st.data())
def test_arbitrary_records_only_raise_protocol_errors(raw, limits, data):
    whole = outcome([raw], limits)
    assert outcome(data.draw(splits(raw)), limits) == whole


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    return mutate(draw, draw(conversations())[0], INTERESTING)


@settings(PROPERTY_SETTINGS, max_examples=400)
@given(mutated(), limits, st.data())
def test_mutated_streams_only_raise_protocol_errors(raw, limits, data):
    whole = outcome([raw], limits)
    assert outcome(data.draw(splits(raw)), limits) == whole
    assert outcome([raw[i : i + 1] for i in range(len(raw))], limits) == whole
