"""ReceiveBuffer: the input side every sans-I/O parser shares (HTTP, uwsgi, FastCGI).

Bytes the connection received are appended with ``feed()``; ``feed_eof()`` records that the
peer closed its sending side. The parser consumes ``_buf`` from the front as it turns bytes
into events. No I/O, no state beyond the buffer and the EOF flag.
"""

from __future__ import annotations

__all__ = ["ReceiveBuffer"]


class ReceiveBuffer:
    """Base of the parsers: ``feed``, ``feed_eof``, ``buffered_bytes``."""

    _buf: bytearray
    _eof: bool

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        if data:
            if self._eof:
                raise RuntimeError(f"{type(self).__name__}.feed() called after feed_eof()")
            self._buf += data

    def feed_eof(self) -> None:
        """Record that the peer closed its sending side; nothing more will be fed."""
        self._eof = True

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet turned into events."""
        return len(self._buf)
