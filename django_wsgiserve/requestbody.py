"""RequestBody: a request body as it arrives, in memory or, past a limit, in a temporary file.

Design note. The loop thread buffers every body whole before the application sees it, so a
slow client costs buffer, never a thread. Up to BODY_BUFFER_BYTES the pieces stay in memory
(joined once, when the body is taken); past it they go to a temporary file, which becomes
``wsgi.input`` (the request cycle closes it). Loop thread only. Never imports Django.
"""

from __future__ import annotations

import io
import tempfile

__all__ = ["RequestBody"]


class RequestBody:
    """The body of the request being read (loop thread)."""

    __slots__ = ("_chunks", "_file", "_limit", "size")

    def __init__(self, *, memory_limit: int) -> None:
        self._limit = memory_limit
        self._chunks: list[bytes] = []
        self._file: io.BufferedRandom | None = None
        self.size = 0

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._chunks.append(data)
        if self.size > self._limit:
            body_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the request cycle
            body_file.writelines(self._chunks)
            self._chunks = []
            self._file = body_file

    def take(self) -> tuple[io.BytesIO | io.BufferedRandom, int]:
        """The whole body as a readable file, and its size; the buffer starts anew."""
        size = self.size
        if self._file is not None:
            body: io.BytesIO | io.BufferedRandom = self._file
            body.seek(0)
            self._file = None
        else:
            chunks = self._chunks
            body = io.BytesIO(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            if chunks:
                self._chunks = []
        self.size = 0
        return body, size

    def close(self) -> None:
        """Drop what was buffered (the connection closed before the body was taken)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunks = []
        self.size = 0
