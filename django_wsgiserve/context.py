"""What every connection of a worker shares, built once per worker: ``WorkerContext``.

Design note. A connection needs plain limits, the response writer, the static file table, the
access log, the trusted proxies and the worker's counters. They are gathered here once, from
the ``ServerConfig``, into a frozen object every connection holds a reference to, instead of
reaching into the loop for each of them. ``WorkerStats`` is the one mutable member: counters
updated by the loop and the pool threads (see its docstring).

Also here: ``StaticResponse``, the answer of the static table (static.py builds them from
whitenoise's table, the connection sends them), and ``StaticResponder``, what a connection
needs of that table.

Never imports Django or sockets; threads only for the request count's lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .http.writer import ResponseWriter
from .proxy import parse_trusted_proxies

if TYPE_CHECKING:
    from .accesslog import AccessLog
    from .config import ServerConfig
    from .http.events import Request
    from .metrics import WorkerMetrics
    from .proxy import TrustedProxies
    from .scoreboard import WorkerScoreboard

__all__ = ["Limits", "StaticResponder", "StaticResponse", "WorkerContext", "WorkerStats"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The plain numbers connections need, taken from ServerConfig once."""

    max_request_line: int
    max_headers: int
    max_header_bytes: int
    max_body_bytes: int
    body_buffer_bytes: int
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    drain_keepalive_timeout: float
    write_timeout: float

    @classmethod
    def from_config(cls, config: ServerConfig) -> Limits:
        return cls(
            max_request_line=config.max_request_line,
            max_headers=config.max_headers,
            max_header_bytes=config.max_header_bytes,
            max_body_bytes=config.max_body_bytes,
            body_buffer_bytes=config.body_buffer_bytes,
            header_timeout=config.header_timeout,
            body_timeout=config.body_timeout,
            keepalive_timeout=config.keepalive_timeout,
            drain_keepalive_timeout=config.drain_keepalive_timeout,
            write_timeout=config.write_timeout,
        )


class WorkerStats:
    """Per-worker counters. ``requests`` is exact (``count_request``, under a lock: the loop
    and the pool threads all count); the others are updated without a lock by whichever
    thread sends, so exact only while one thread sends at a time: for tests and debugging,
    not accounting."""

    __slots__ = (
        "_lock",
        "parked_requests",
        "requests",
        "sendfile_bytes",
        "sendfile_calls",
        "static_responses",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0  # dispatched to the application or answered from the static table
        self.parked_requests = 0  # of which read and run by a pool thread (parking.py)
        self.sendfile_calls = 0
        self.sendfile_bytes = 0
        self.static_responses = 0

    def count_request(self, *, parked: bool = False) -> None:
        """One more request; ``parked``: read by the pool thread that runs it (any thread)."""
        with self._lock:
            self.requests += 1
            if parked:
                self.parked_requests += 1

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__ if name != "_lock"}


class StaticResponse:
    """A complete response the static table made: head fields, and the file part to send."""

    __slots__ = (
        "body",
        "content_length",
        "count",
        "fd",
        "file",
        "headers",
        "offset",
        "prepared",
        "status",
        "status_code",
    )

    def __init__(
        self,
        *,
        status: str,
        status_code: int,
        headers: list[tuple[str, str]],
        content_length: int | None,
        file: Any,
        fd: int = -1,
        offset: int = 0,
        count: int = 0,
        prepared: bytes | None = None,
        body: bytes | None = None,
    ) -> None:
        self.status, self.status_code, self.headers = status, status_code, headers
        # The status line and headers, validated once (ResponseWriter.prepare_head).
        self.prepared = prepared
        self.content_length = content_length
        self.file = file  # closed by the connection once sent or duplicated
        self.fd, self.offset, self.count = fd, offset, count
        # A small file's bytes (``count`` of them), sent with the head in one send().
        self.body = body


class StaticResponder(Protocol):
    """What a connection needs of ``static.StaticTable``."""

    prefixes: tuple[bytes, ...]

    def respond(self, request: Request) -> StaticResponse | None:
        """The response to ``request``, or None when the application must answer it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerContext:
    """Everything a worker's connections share; see the module notes."""

    limits: Limits
    writer: ResponseWriter
    proxies: TrustedProxies
    is_proxy_protocol: bool
    stats: WorkerStats
    access_log: AccessLog | None = None
    static: StaticResponder | None = None
    metrics: WorkerMetrics | None = None  # METRICS_BIND: this worker's slot (metrics.py)
    # Its slot in the master's scoreboard (scoreboard.py): prefork workers only.
    scoreboard: WorkerScoreboard | None = None

    @classmethod
    def from_config(
        cls,
        config: ServerConfig,
        *,
        access_log: AccessLog | None = None,
        static: StaticResponder | None = None,
        metrics: WorkerMetrics | None = None,
        scoreboard: WorkerScoreboard | None = None,
    ) -> WorkerContext:
        return cls(
            limits=Limits.from_config(config),
            writer=ResponseWriter(server_header=config.server_header),
            proxies=parse_trusted_proxies(config.trusted_proxies),
            is_proxy_protocol=config.proxy_protocol,
            stats=WorkerStats(),
            access_log=access_log,
            static=static,
            metrics=metrics,
            scoreboard=scoreboard,
        )
