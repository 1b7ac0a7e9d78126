"""OutputQueue: a connection's pending response bytes and file parts, and the sends.

Design note. A response leaves in three ways, cheapest first: sent at once by the thread that
made it (a pool thread for an application, the loop thread for a static file or an error);
queued here when the socket would block, and sent by the loop once the socket is writable;
and, past ``HIGH_WATERMARK`` bytes queued in memory, written to a per-connection *spill* file
that the loop sends with ``os.sendfile``, so a client that stops reading a large generated
response costs disk, not memory and, until ``SPILL_LIMIT``, not an application thread either.
File bodies (``wsgi.file_wrapper``, static files) that do not fit at once are queued as a
``_FileSegment`` owning a duplicated descriptor; a segment may carry ``on_done``, the
application's ``close()``, which runs in a pool thread (``run_job``) once the file is sent
or dropped.

Threads: every method is called with the owning connection's lock held, by whichever thread
holds it; the queue has no lock of its own. ``OSError``s of writes are translated here, the
socket boundary for output: a vanished peer becomes ``ClientDisconnectedError``.

Knows sockets and files, not HTTP or WSGI. Never imports Django.
"""

from __future__ import annotations

import collections
import enum
import errno
import logging
import os
import socket
import ssl
import tempfile
from typing import TYPE_CHECKING

from .errors import ClientDisconnectedError

if TYPE_CHECKING:
    import io
    from collections.abc import Callable

    from .context import WorkerStats

__all__ = [
    "HIGH_WATERMARK",
    "LOW_WATERMARK",
    "SPILL_LIMIT",
    "WOULD_BLOCK",
    "FlushResult",
    "OutputQueue",
    "disconnected",
]

logger = logging.getLogger(__name__)

# A non-blocking send or recv that cannot go on now; TLS says so with its own exceptions.
WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
# A pool thread waits once this much response data is queued in memory (waitress's
# outbuf_high_watermark is 16 MiB; we keep it small: one slow client, one MiB).
HIGH_WATERMARK = 1 << 20
LOW_WATERMARK = 256 << 10
# Past HIGH_WATERMARK in memory, further response bytes go to a temporary file that the loop
# sends with sendfile (waitress spills to a file past 1 MiB too). Only past SPILL_LIMIT bytes
# waiting on disk for one connection does the pool thread wait.
SPILL_LIMIT = 32 << 20
# pread() size for files over TLS, where os.sendfile cannot be used (it cannot encrypt).
_TLS_FILE_CHUNK = 256 << 10
# Linux: hold the head back until the file follows, so both leave in one segment.
_MSG_MORE = getattr(socket, "MSG_MORE", 0)
_DISCONNECT_ERRNOS = frozenset(
    {errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED}
)


class FlushResult(enum.Enum):
    DONE = "done"  # nothing is queued any more
    BLOCKED = "blocked"  # the socket is full: wait until it is writable
    FAILED = "failed"  # the peer has gone, or a file shrank: the connection must close


class _FileSegment:
    """A part of a file still to be sent; owns a duplicated descriptor."""

    __slots__ = ("count", "fd", "is_spill", "offset", "on_done")

    def __init__(
        self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None = None
    ) -> None:
        self.fd, self.offset, self.count = fd, offset, count
        self.on_done = on_done
        self.is_spill = False  # part of the spill file (see SPILL_LIMIT)


class OutputQueue:
    """What one connection still has to send; see the module notes (caller holds the lock)."""

    __slots__ = (
        "_fd",
        "_items",
        "_run_job",
        "_sock",
        "_spill",
        "_spill_end",
        "_spill_tail",
        "_stats",
        "bytes_in_memory",
        "is_tls",
        "spilled_pending",
    )

    def __init__(
        self,
        sock: socket.socket,
        *,
        stats: WorkerStats,
        run_job: Callable[[Callable[[], None]], None],
    ) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self.is_tls = isinstance(sock, ssl.SSLSocket)
        self._stats = stats
        self._run_job = run_job  # runs a segment's on_done in a pool thread
        self._items: collections.deque[memoryview | _FileSegment] = collections.deque()
        self.bytes_in_memory = 0
        self.spilled_pending = 0
        self._spill: io.BufferedRandom | None = None
        self._spill_end = 0
        self._spill_tail: _FileSegment | None = None

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def is_full(self) -> bool:
        """The producer should wait (HIGH_WATERMARK in memory or SPILL_LIMIT on disk)."""
        return self.bytes_in_memory > HIGH_WATERMARK or self.spilled_pending > SPILL_LIMIT

    @property
    def has_room(self) -> bool:
        """A waiting producer may go on (below the low watermarks)."""
        return self.bytes_in_memory <= LOW_WATERMARK and self.spilled_pending <= SPILL_LIMIT // 2

    # -- adding output ---------------------------------------------------------------------

    def send(self, parts: list[bytes]) -> bool:
        """Send ``parts`` now as far as the socket takes them and queue the rest; True when
        something is queued (the loop must flush). Raises ClientDisconnectedError."""
        if self._items:
            for part in parts:
                size = len(part)
                if self.bytes_in_memory + size <= HIGH_WATERMARK or not self._spill_part(part):
                    self._items.append(memoryview(part))
                    self.bytes_in_memory += size
            return True
        if len(parts) > 1 and self.is_tls:
            parts = [b"".join(parts)]  # an SSLSocket has no sendmsg
        try:
            sock = self._sock
            sent = sock.send(parts[0]) if len(parts) == 1 else sock.sendmsg(parts)
        except WOULD_BLOCK:
            sent = 0
        except OSError as exc:
            raise disconnected(exc) from exc
        for part in parts:
            size = len(part)
            if sent >= size:
                sent -= size
                continue
            self._items.append(memoryview(part)[sent:])
            self.bytes_in_memory += size - sent
            sent = 0
        return bool(self._items)

    def send_file(
        self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None = None
    ) -> bool:
        """Send ``count`` bytes of ``fd`` from ``offset`` now as far as the socket takes them;
        queue the rest (with ``on_done``, run once sent). True when something is queued."""
        if not self._items:
            sent = self._sendfile_now(fd, offset, count)
            offset, count = offset + sent, count - sent
        if not count:
            return False
        self._items.append(_FileSegment(os.dup(fd), offset, count, on_done))
        return True

    def send_head_and_file(self, head: bytes, fd: int, offset: int, count: int) -> bool:
        """The head, then ``count`` bytes of ``fd``, in one TCP segment where they fit (a
        static file); True when something is queued."""
        if not count or self._items:
            queued = self.send([head])
            return self.send_file(fd, offset, count) or queued if count else queued
        try:
            sent = self._sock.send(head, 0 if self.is_tls else _MSG_MORE)
        except WOULD_BLOCK:
            sent = 0
        except OSError as exc:
            raise disconnected(exc) from exc
        if sent < len(head):
            self._items.append(memoryview(head)[sent:])
            self.bytes_in_memory += len(head) - sent
            self._items.append(_FileSegment(os.dup(fd), offset, count))
            return True
        return self.send_file(fd, offset, count)

    # -- the loop's flush ------------------------------------------------------------------

    def flush(self) -> FlushResult:
        """Send what is queued until done or the socket is full (loop thread)."""
        items = self._items
        sock = self._sock
        while items:
            item = items[0]
            try:
                if type(item) is _FileSegment:
                    if not self._flush_segment(item):
                        return FlushResult.FAILED
                else:
                    assert type(item) is memoryview
                    sent = sock.send(item)
                    self.bytes_in_memory -= sent
                    if sent == len(item):
                        items.popleft()
                    else:
                        items[0] = item[sent:]
            except WOULD_BLOCK:
                return FlushResult.BLOCKED
            except OSError as exc:
                logger.debug("Write failed: %s", exc)
                return FlushResult.FAILED
        if self._spill is not None:
            self._release_spill()
        return FlushResult.DONE

    def _flush_segment(self, segment: _FileSegment) -> bool:
        sent = self._sendfile(segment.fd, segment.offset, segment.count)
        if sent == 0:  # file truncated under us: the framing is broken
            logger.warning("A file shrank while it was being sent")
            return False
        segment.offset += sent
        segment.count -= sent
        if segment.is_spill:
            self.spilled_pending -= sent
        if not segment.count:
            if segment is self._spill_tail:
                self._spill_tail = None
            self._segment_done(segment)
            self._items.popleft()
        return True

    def clear(self) -> None:
        """Drop everything queued; each file's ``on_done`` still runs (connection closed)."""
        for item in self._items:
            if type(item) is _FileSegment:
                self._segment_done(item)
        self._items.clear()
        self.bytes_in_memory = 0
        self._release_spill()

    # -- internals -------------------------------------------------------------------------

    def _spill_part(self, part: bytes) -> bool:
        """Queue ``part`` in the spill file rather than in memory; False when that is not
        possible now (over SPILL_LIMIT, or the disk refused)."""
        if self.spilled_pending >= SPILL_LIMIT:
            return False
        try:
            if self._spill is None:
                self._spill = tempfile.TemporaryFile()  # noqa: SIM115 - _release_spill closes
                self._spill_end = 0
            fd = self._spill.fileno()
            written = 0
            while written < len(part):
                written += os.pwrite(fd, memoryview(part)[written:], self._spill_end + written)
        except OSError as exc:
            logger.warning("Cannot spill a response to a temporary file: %s", exc)
            return False
        tail = self._spill_tail
        if tail is not None and self._items[-1] is tail:
            tail.count += written  # the loop has not finished it: it just grows
        else:
            tail = _FileSegment(os.dup(fd), self._spill_end, written)
            tail.is_spill = True
            self._items.append(tail)
            self._spill_tail = tail
        self._spill_end += written
        self.spilled_pending += written
        return True

    def _release_spill(self) -> None:
        """Nothing waits in the spill file any more: let it go."""
        if self._spill is not None:
            self._spill.close()  # the segments had their own descriptors
            self._spill = None
        self._spill_tail = None
        self.spilled_pending = 0

    def _segment_done(self, segment: _FileSegment) -> None:
        os.close(segment.fd)
        if segment.on_done is not None:
            self._run_job(segment.on_done)
            segment.on_done = None

    def _sendfile(self, fd: int, offset: int, count: int) -> int:
        """The worker's only call of os.sendfile (counted in WorkerStats); over TLS, which
        sendfile cannot encrypt, pread() and send() instead (not counted)."""
        if self.is_tls:
            data = os.pread(fd, min(count, _TLS_FILE_CHUNK), offset)
            return self._sock.send(data) if data else 0
        sent = os.sendfile(self._fd, fd, offset, count)
        stats = self._stats
        stats.sendfile_calls += 1
        stats.sendfile_bytes += sent
        return sent

    def _sendfile_now(self, fd: int, offset: int, count: int) -> int:
        total = 0
        while count:
            try:
                sent = self._sendfile(fd, offset, count)
            except WOULD_BLOCK:
                break
            except OSError as exc:
                raise disconnected(exc) from exc
            if sent == 0:
                break  # the file is shorter than it was: the flush will find out
            total += sent
            offset += sent
            count -= sent
        return total


def disconnected(exc: OSError) -> ClientDisconnectedError:
    """The error a pool thread sees when a write fails: the peer has gone."""
    if exc.errno in _DISCONNECT_ERRNOS:
        return ClientDisconnectedError(f"the client has gone ({exc.strerror})")
    return ClientDisconnectedError(f"write failed: {exc}")
