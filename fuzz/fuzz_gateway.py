"""Coverage-guided fuzzing of the gateway protocols (uwsgi, FastCGI) with atheris (libFuzzer).

    fuzz/run.sh gateway [libFuzzer options, e.g. -max_total_time=300]

Targets, chosen by the first byte of the input: ``UwsgiRequestParser`` and ``FastCGIConnection``,
each with default or small limits, fed the input split at positions drawn from the input
itself. The FastCGI harness plays the server: it takes ``data_to_send()`` after every event,
answers each request (head, body, ``end_request()``) at its ``EndOfMessage`` or
``RequestAborted``, and sends ``error_response()`` after a ``ProtocolError``. Everything the
connection sends must be well-formed, 8-byte aligned FastCGI records. Only ``ProtocolError``
may escape the protocol layer; anything else is a crash that libFuzzer saves as
``crash-<sha1>``. ``--write-seeds DIR`` writes a seed corpus (nginx-like requests) and exits.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

with atheris.instrument_imports():
    from django_wsgiserve.errors import ProtocolError
    from django_wsgiserve.fastcgi import FastCGIConnection, RequestAborted
    from django_wsgiserve.http.events import NEED_DATA, ConnectionClosed, EndOfMessage
    from django_wsgiserve.uwsgi import UwsgiRequestParser

__all__ = ["test_one_input"]

_SMALL_UWSGI = {"max_vars_bytes": 64, "max_body_bytes": 64}
_SMALL_FASTCGI = {"max_params_bytes": 64, "max_body_bytes": 64}
_MAX_EVENTS = 10_000  # a protocol layer that never asks for data would be a bug too


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


def _uwsgi(pieces: list[bytes], limits: dict[str, int]) -> None:
    parser = UwsgiRequestParser(**limits)

    def drain() -> bool:
        for _ in range(_MAX_EVENTS):
            event = parser.next_event()
            if event is NEED_DATA:
                return True
            if type(event) is ConnectionClosed:
                return False
        raise AssertionError("10,000 events without asking for data")

    for piece in pieces:
        parser.feed(piece)
        if not drain():
            return
    parser.feed_eof()
    drain()


def _check_records(data: bytes) -> None:
    """What the application sends must be whole, aligned version-1 records."""
    position = 0
    while position < len(data):
        version, _, _, size, padding = struct.unpack_from(">BBHHB", data, position)
        assert version == 1, "not a version-1 record"
        assert (size + padding) % 8 == 0, "unaligned record"
        position += 8 + size + padding
    assert position == len(data), "truncated record"


def _fastcgi(pieces: list[bytes], limits: dict[str, int]) -> None:
    connection = FastCGIConnection(**limits)
    sent = bytearray()

    def drain() -> bool:
        for _ in range(_MAX_EVENTS):
            event = connection.next_event()
            sent.extend(connection.data_to_send())
            if event is NEED_DATA:
                return True
            if type(event) is ConnectionClosed:
                return False
            if type(event) is EndOfMessage or type(event) is RequestAborted:
                writer = connection.response_writer()
                sent.extend(writer.response_head(status="200 OK", headers=[("X-A", "b")]))
                sent.extend(b"".join(writer.body(b"x" * 20000)))
                sent.extend(connection.end_request())
        raise AssertionError("10,000 events without asking for data")

    try:
        for piece in pieces:
            connection.feed(piece)
            if not drain():
                return
        connection.feed_eof()
        drain()
    except ProtocolError as exc:
        sent.extend(connection.data_to_send())
        sent.extend(connection.error_response(exc.status_code, exc.reason))
        raise
    finally:
        _check_records(bytes(sent))


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    mode = provider.ConsumeIntInRange(0, 3)
    cuts = [provider.ConsumeIntInRange(0, 4096) for _ in range(provider.ConsumeIntInRange(0, 8))]
    pieces = _pieces(provider.ConsumeBytes(provider.remaining_bytes()), cuts)
    try:
        if mode < 2:
            _uwsgi(pieces, _SMALL_UWSGI if mode == 1 else {})
        else:
            _fastcgi(pieces, _SMALL_FASTCGI if mode == 3 else {})
    except ProtocolError:
        pass


def write_seeds(directory: Path) -> None:
    """nginx-like uwsgi packets and FastCGI streams, built with the tests' encoders."""
    from tests.cgi_params import (
        FASTCGI_GET,
        UWSGI_GET,
        UWSGI_POST,
        UWSGI_POST_BODY,
    )
    from tests.fastcgi import encoder as fcgi
    from tests.uwsgi.encoder import packet

    seeds = {
        "uwsgi-get": b"\x00\x00" + packet(UWSGI_GET),
        "uwsgi-post": b"\x00\x00" + packet(UWSGI_POST, UWSGI_POST_BODY),
        "fastcgi-get": b"\x02\x00" + fcgi.nginx_request(FASTCGI_GET, flags=fcgi.KEEP_CONN),
        "fastcgi-post": b"\x02\x00"
        + fcgi.request(FASTCGI_GET[:4], b"body" * 40, param_cuts=[3, 50], stdin_cuts=[7]),
        "fastcgi-management": b"\x02\x00"
        + fcgi.record(fcgi.GET_VALUES, 0, fcgi.pairs([(b"FCGI_MAX_CONNS", b"")]))
        + fcgi.record(42, 0)
        + fcgi.begin(1, flags=fcgi.KEEP_CONN)
        + fcgi.begin(2)
        + fcgi.record(fcgi.ABORT, 1),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, seed in seeds.items():
        (directory / f"seed-{name}").write_bytes(seed)


def main() -> None:
    if sys.argv[1:2] == ["--write-seeds"]:
        write_seeds(Path(sys.argv[2]))
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
