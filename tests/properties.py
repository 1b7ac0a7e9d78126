"""What the protocol parsers' property tests share: settings, splits and mutations.

HTTP (tests/http), uwsgi (tests/uwsgi) and FastCGI (tests/fastcgi) each generate their own
valid input; these strategies cut it into reads and damage it the same way for all three.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings, strategies as st

__all__ = ["PROPERTY_SETTINGS", "mutate", "splits"]

# Derandomized and without a database: the same examples on every run and machine.
PROPERTY_SETTINGS = settings(
    derandomize=True,
    database=None,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def splits(draw: st.DrawFn, raw: bytes) -> list[bytes]:
    """``raw`` cut into up to 31 reads at random points."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=30))))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True) if b > a]


def mutate(draw: st.DrawFn, raw: bytes, interesting: bytes) -> bytes:
    """``raw`` with 1 to 4 bytes inserted, deleted or replaced; new bytes are often among
    ``interesting`` (the protocol's delimiters and edge values)."""
    damaged = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(damaged)))
        byte = draw(st.sampled_from(interesting) | st.integers(0, 255))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        if action == "insert" or position == len(damaged):
            damaged.insert(position, byte)
        elif action == "delete":
            del damaged[position]
        else:
            damaged[position] = byte
    return bytes(damaged)
