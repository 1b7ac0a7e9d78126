"""Hypothesis properties of UwsgiRequestParser (deterministic: derandomized, bounded examples).

1. Round trip: generated vars and body, encoded by the test-side encoder, parse back to the
   same variables and body.
2. Split invariance: the events are the same however the bytes are split into feeds.
3. Robustness: arbitrary bytes and mutated valid packets give events or a ProtocolError, never
   any other exception, and the outcome (error class included) does not depend on the split.
"""

from __future__ import annotations

import string

from hypothesis import given, settings, strategies as st

from django_wsgiserve.uwsgi import CGIRequest, Data
from tests.properties import PROPERTY_SETTINGS, mutate, splits
from tests.uwsgi.encoder import packet
from tests.uwsgi.test_parser import run

TCHARS = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
# Variables the parser interprets; the generator sets them itself, with valid values.
INTERPRETED = {"REQUEST_METHOD", "CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING"}
INTERESTING = b"\x00\x01\x02\x05\x0e\x1e\xff\x7f0-=: "


names = st.text(alphabet=TCHARS, min_size=1, max_size=20).filter(
    lambda name: name not in INTERPRETED
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str], bytes]:
    """A packet, the variables it must give, and its body."""
    variables = draw(st.dictionaries(names, st.binary(max_size=300), max_size=12))
    method = draw(st.sampled_from(["GET", "POST", "PUT"]) | st.text(TCHARS, min_size=1))
    body = draw(st.binary(max_size=300))
    pairs = [(name.encode(), value) for name, value in variables.items()]
    pairs.insert(draw(st.integers(0, len(pairs))), (b"REQUEST_METHOD", method.encode()))
    if body or draw(st.booleans()):
        pairs.insert(draw(st.integers(0, len(pairs))), (b"CONTENT_LENGTH", b"%d" % len(body)))
    expected = {name.decode(): value.decode("latin-1") for name, value in pairs}
    return packet(pairs, body, modifier2=draw(st.integers(0, 255))), expected, body


@PROPERTY_SETTINGS
@given(requests())
def test_round_trip(generated):
    raw, variables, body = generated
    events, error = run([raw], {})
    assert error is None, error
    request = events[0]
    assert isinstance(request, CGIRequest)
    assert dict(request.variables) == variables
    assert list(request.variables) == list(variables)
    assert request.content_length == len(body)
    assert b"".join(event.data for event in events if isinstance(event, Data)) == body


@PROPERTY_SETTINGS
@given(requests(), st.data())
def test_split_invariance(generated, data):
    raw = generated[0]
    whole = run([raw], {})
    assert whole[1] is None
    assert run(data.draw(splits(raw)), {}) == whole
    assert run([raw[i : i + 1] for i in range(len(raw))], {}) == whole


def outcome(pieces: list[bytes], limits: dict[str, int]) -> tuple[list[object], type | None]:
    """Parse; anything but a ProtocolError propagates and fails the test."""
    events, error = run(pieces, limits)
    return events, type(error) if error is not None else None


limits: st.SearchStrategy[dict[str, int]] = st.just({}) | st.fixed_dictionaries(
    {},
    optional={"max_vars_bytes": st.integers(0, 64), "max_body_bytes": st.integers(0, 64)},
)


@st.composite
def arbitrary(draw: st.DrawFn) -> bytes:
    """Random bytes, half of the time behind a plausible packet header so that the vars
    decoding is reached."""
    tail = draw(st.binary(max_size=300))
    if draw(st.booleans()):
        size = draw(st.integers(0, len(tail)) | st.integers(0, 0xFFFF))
        return bytes([0, size & 0xFF, size >> 8, 0]) + tail
    return tail


@settings(PROPERTY_SETTINGS, max_examples=500)
@given(arbitrary(), limits, st.data())
def test_arbitrary_bytes_only_raise_protocol_errors(raw, limits, data):
    whole = outcome([raw], limits)
    assert outcome(data.draw(splits(raw)), limits) == whole


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    return mutate(draw, draw(requests())[0], INTERESTING)


@settings(PROPERTY_SETTINGS, max_examples=500)
@given(mutated(), limits, st.data())
def test_mutated_packets_only_raise_protocol_errors(raw, limits, data):
    whole = outcome([raw], limits)
    assert outcome(data.draw(splits(raw)), limits) == whole
    assert outcome([raw[i : i + 1] for i in range(len(raw))], limits) == whole
