"""Keep-alive client load for drain tests and the reload benchmark.

``KeepAliveLoad`` runs client threads that POST a body to the echo app with Python's
``http.client``, the way a browser or a proxy does: most threads keep one connection and
reuse it for every request (reconnecting only when a response says ``Connection: close``),
the others open a connection per request. Nothing is retried: each request either gets its
full 200 response or counts as a failure with its exception, except a connect that fails
(nothing listens any more, after a shutdown), which is counted apart as *refused*. Every
loop is bounded by a stop event and by ``max_seconds``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass, field

__all__ = ["KeepAliveLoad", "LoadResult"]


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass
class LoadResult:
    ok: int = 0
    refused: int = 0
    failures: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)


class KeepAliveLoad:
    """``clients`` threads; the first ``keepalive_clients`` of them keep their connection."""

    def __init__(
        self,
        address: tuple[str, int] | str,
        *,
        clients: int = 8,
        keepalive_clients: int | None = None,
        path: str = "/echo/drain",
        body_bytes: int = 2048,
        max_seconds: float = 120.0,
        timeout: float = 30.0,
    ) -> None:
        self.address = address
        self.path = path
        self.body = b"d" * body_bytes
        self.timeout = timeout
        self.max_seconds = max_seconds
        keepalive = clients if keepalive_clients is None else keepalive_clients
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(index < keepalive,), daemon=True)
            for index in range(clients)
        ]

    def __enter__(self) -> KeepAliveLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        return self.result

    @property
    def requests(self) -> int:
        return self.result.ok + len(self.result.failures)

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> bool:
        """Wait until ``count`` more requests succeeded (False on timeout or failure)."""
        target = self.result.ok + count
        end = time.monotonic() + timeout
        while self.result.ok < target and not self.result.failures:
            if time.monotonic() > end:
                return False
            time.sleep(0.01)
        return not self.result.failures

    def _connection(self) -> http.client.HTTPConnection:
        if isinstance(self.address, str):
            return _UnixHTTPConnection(self.address, self.timeout)
        return http.client.HTTPConnection(*self.address, timeout=self.timeout)

    def _run(self, keep_alive: bool) -> None:
        end = time.monotonic() + self.max_seconds
        headers = {"Content-Type": "application/octet-stream"}
        if not keep_alive:
            headers["Connection"] = "close"
        connection = self._connection()
        try:
            while not self._stop.is_set() and time.monotonic() < end:
                if not keep_alive or connection.sock is None:
                    connection.close()
                    try:
                        connection.connect()
                    except OSError:  # refused, or reset before the handshake completed
                        with self._lock:
                            self.result.refused += 1
                        time.sleep(0.01)
                        continue
                self._one(connection, headers)
        finally:
            connection.close()

    def _one(self, connection: http.client.HTTPConnection, headers: dict[str, str]) -> None:
        try:
            connection.request("POST", self.path, body=self.body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            if response.will_close:
                connection.close()
            if response.status != 200:
                raise AssertionError(f"status {response.status}: {data[:200]!r}")
            reply = json.loads(data)
            if reply.get("body_length") != len(self.body):
                raise AssertionError(f"body_length {reply.get('body_length')}")
        except Exception as exc:  # noqa: BLE001 - every failure counts, none is retried
            connection.close()
            with self._lock:
                self.result.failures.append(f"{type(exc).__name__}: {exc}")
            return
        with self._lock:
            self.result.ok += 1
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.result.pids.append(int(reply["pid"]))
