"""RequestParser against the data vectors in ``tests/http/vectors``.

Layout: ``valid/<name>.http`` holds the exact bytes a client sends (CRLF line ends, possibly
several pipelined requests); ``valid/<name>.toml`` holds one ``[[request]]`` table per request
with the keys method, target, path, query, http_version, host, headers (``[[name, value]]``,
names lower-cased), keep_alive, is_chunked, expect_continue, trailers, ``body`` or ``body_hex``
and, when the body is Content-Length framed, content_length (absent means ``None``). Text is
mapped to bytes as latin-1, so ``"\\u00e9"`` is the byte 0xE9. ``invalid/<name>.toml`` has
``error`` (the exact class name in ``django_wsgiserve.errors``), ``status_code`` and optionally
``requests_before_error``. Either kind may have a ``[limits]`` table of RequestParser keyword
arguments.

Every vector is fed whole, line by line (split after each LF), byte by byte and in random
chunks from seeds derived from its file name; the outcome must be the same for every split.
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path
from typing import Any

import pytest
import tomllib

from django_wsgiserve import errors
from django_wsgiserve.errors import ProtocolError
from django_wsgiserve.http import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Request,
    RequestParser,
)

VECTORS = Path(__file__).parent / "vectors"
SPLITS = ("whole", "lines", "bytes", "random-0", "random-1", "random-2")


def _names(kind: str) -> list[str]:
    return sorted(path.stem for path in (VECTORS / kind).glob("*.http"))


def _load(kind: str, name: str) -> tuple[bytes, dict[str, Any]]:
    raw = (VECTORS / kind / f"{name}.http").read_bytes()
    with (VECTORS / kind / f"{name}.toml").open("rb") as file:
        return raw, tomllib.load(file)


def split(raw: bytes, how: str, name: str) -> list[bytes]:
    """Cut ``raw`` into the pieces fed to the parser, one way of SPLITS."""
    if how == "whole":
        return [raw]
    if how == "lines":  # split after each LF (not after a bare CR)
        *lines, rest = raw.split(b"\n")
        return [line + b"\n" for line in lines] + ([rest] if rest else [])
    if how == "bytes":
        return [raw[i : i + 1] for i in range(len(raw))]
    seed = zlib.crc32(name.encode()) + int(how.rpartition("-")[2])
    rng = random.Random(seed)
    pieces = []
    start = 0
    while start < len(raw):
        size = rng.randint(1, 24)
        pieces.append(raw[start : start + size])
        start += size
    return pieces


def run(pieces: list[bytes], limits: dict[str, int]) -> tuple[list[object], ProtocolError | None]:
    """Feed the pieces, pull every event, then EOF. Consecutive Data events are merged, so
    the result does not depend on how the body happened to be split."""
    parser = RequestParser(**limits)
    events: list[object] = []

    def drain() -> bool:
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                return False
            if isinstance(event, Data) and events and isinstance(events[-1], Data):
                events[-1] = Data(events[-1].data + event.data)
            else:
                events.append(event)
            if isinstance(event, ConnectionClosed):
                return True

    try:
        for piece in pieces:
            parser.feed(piece)
            drain()
        parser.feed_eof()
        assert drain(), "the parser wants data after EOF"
    except ProtocolError as exc:
        # Once failed, the parser stays failed.
        with pytest.raises(ProtocolError):
            parser.next_event()
        return events, exc
    # After ConnectionClosed, ConnectionClosed again.
    assert parser.next_event() == ConnectionClosed()
    return events, None


def _latin1(text: str) -> bytes:
    return text.encode("latin-1")


def expected_events(spec: dict[str, Any]) -> list[object]:
    events: list[object] = []
    for request in spec["request"]:
        events.append(
            Request(
                method=_latin1(request["method"]),
                target=_latin1(request["target"]),
                path=_latin1(request["path"]),
                query=_latin1(request["query"]),
                http_version=_latin1(request["http_version"]),
                headers=tuple((_latin1(n), _latin1(v)) for n, v in request["headers"]),
                content_length=request.get("content_length"),
                is_chunked=request["is_chunked"],
                keep_alive=request["keep_alive"],
                expect_continue=request["expect_continue"],
                host=_latin1(request["host"]),
            )
        )
        if "body_hex" in request:
            body = bytes.fromhex(request["body_hex"])
        else:
            body = _latin1(request["body"])
        if body:
            events.append(Data(body))
        trailers = tuple((_latin1(n), _latin1(v)) for n, v in request["trailers"])
        events.append(EndOfMessage(trailers=trailers))
    events.append(ConnectionClosed())
    return events


def _cases(kind: str) -> list[Any]:
    return [pytest.param(name, id=name) for name in _names(kind)]


def test_vector_counts():
    assert len(_names("valid")) >= 25
    assert len(_names("invalid")) >= 40
    for kind in ("valid", "invalid"):
        for name in _names(kind):
            assert (VECTORS / kind / f"{name}.toml").is_file(), name


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("name", _cases("valid"))
def test_valid_vector(name, how):
    raw, spec = _load("valid", name)
    events, error = run(split(raw, how, name), spec.get("limits", {}))
    assert error is None, f"{type(error).__name__}: {error}"
    assert events == expected_events(spec)


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("name", _cases("invalid"))
def test_invalid_vector(name, how):
    raw, spec = _load("invalid", name)
    events, error = run(split(raw, how, name), spec.get("limits", {}))
    assert error is not None, f"no error; events: {events}"
    assert type(error) is getattr(errors, spec["error"]), f"{type(error).__name__}: {error}"
    assert error.status_code == spec["status_code"]
    requests = [event for event in events if isinstance(event, Request)]
    assert len(requests) == spec.get("requests_before_error", 0)
