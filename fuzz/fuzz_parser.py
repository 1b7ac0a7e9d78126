"""Coverage-guided fuzzing of the sans-I/O parsers with atheris (libFuzzer).

    fuzz/run.sh [libFuzzer options, e.g. -max_total_time=300]

Target: ``RequestParser`` (with small limits half of the time) and ``ProxyHeaderParser``, fed
the input split at positions drawn from the input itself, must only ever raise
``ProtocolError``; anything else is a crash that libFuzzer saves as ``crash-<sha1>``.
Replay one with ``fuzz/run.sh crash-<sha1>``. The seed corpus is the parser vectors
(``tests/http/vectors/``). atheris is not a dependency of the project: ``run.sh`` installs it
into ``fuzz/.venv`` by itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

with atheris.instrument_imports():
    from django_wsgiserve.errors import ProtocolError
    from django_wsgiserve.http.events import NEED_DATA, ConnectionClosed
    from django_wsgiserve.http.parser import RequestParser
    from django_wsgiserve.http.proxy_protocol import ProxyHeaderParser

__all__ = ["test_one_input"]

_SMALL_LIMITS = {"max_request_line": 64, "max_headers": 8, "max_header_bytes": 128}


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


def _drain(parser: RequestParser) -> bool:
    """Take events until more data is needed; False once the connection is over."""
    for _ in range(10_000):  # a parser that never asks for data would be a bug too
        event = parser.next_event()
        if event is NEED_DATA:
            return True
        if type(event) is ConnectionClosed:
            return False
    raise AssertionError("the parser produced 10,000 events without asking for data")


def _parse_http(pieces: list[bytes], limits: dict[str, int]) -> None:
    parser = RequestParser(**limits)
    for piece in pieces:
        parser.feed(piece)
        if not _drain(parser):
            return
    parser.feed_eof()
    _drain(parser)


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    mode = provider.ConsumeIntInRange(0, 3)
    cuts = [provider.ConsumeIntInRange(0, 4096) for _ in range(provider.ConsumeIntInRange(0, 8))]
    payload = provider.ConsumeBytes(provider.remaining_bytes())
    pieces = _pieces(payload, cuts)
    try:
        if mode == 3:
            header = ProxyHeaderParser()
            for piece in pieces:
                if header.feed(piece) is not None:
                    break
        else:
            _parse_http(pieces, _SMALL_LIMITS if mode == 1 else {})
    except ProtocolError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
