"""Latency of a normal client while 300 slowloris and 50 non-reading clients attack.

    .venv/bin/python benchmarks/slowclients.py [--repeat 3] [--requests 2000]

One worker (``--workers 1``, 8 threads) of ``manage.py serve`` with the test apps. Each
repetition measures the p50/p99 latency of ``--requests`` sequential keep-alive ``GET /hello``
requests twice: unloaded, then while

* 300 *slowloris* connections hold a request head open, adding one header line every second
  (HEADER_TIMEOUT is raised to 120 s so that they stay for the whole measurement: the worst
  case, a slot held for as long as the server allows), and
* 50 connections request a 16 MiB file with a 4 KiB receive buffer and never read it
  (WRITE_TIMEOUT raised likewise).

It prints the medians over the repetitions and the ratio loaded/unloaded p99 (target: < 2).
Everything is loopback; the server is stopped by process group at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.live import LiveServer, ResponseReader  # noqa: E402

if TYPE_CHECKING:
    import socket

__all__ = ["main"]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(server: LiveServer, count: int) -> list[float]:
    """Latencies (ms) of ``count`` sequential keep-alive requests."""
    latencies = []
    with server.connect() as sock:
        reader = ResponseReader(sock)
        request = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n"
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(request)
            response = reader.read()
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status == 200, response.status
    return latencies


class Attack:
    """300 slowloris + 50 non-readers, trickled by one background thread."""

    def __init__(self, server: LiveServer, *, slowloris: int, non_readers: int) -> None:
        self.server = server
        self.slow: list[socket.socket] = []
        self.stuck: list[socket.socket] = []
        self.stop = threading.Event()
        for _ in range(slowloris):
            sock = server.connect()
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: bench\r\n")
            self.slow.append(sock)
        for _ in range(non_readers):
            sock = server.connect(receive_buffer=4096)
            sock.sendall(b"GET /file_wrapper/?path=big.bin HTTP/1.1\r\nHost: bench\r\n\r\n")
            self.stuck.append(sock)
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        while not self.stop.wait(1.0):
            for sock in self.slow:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-Slow: 1\r\n")

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.slow + self.stuck:
            sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--slowloris", type=int, default=300)
    parser.add_argument("--non-readers", type=int, default=50)
    args = parser.parse_args(argv)
    files = tempfile.mkdtemp(prefix="wsgiserve-bench-")
    Path(files, "big.bin").write_bytes(bytes(range(256)) * (16 * 4096))
    server = LiveServer(
        log_path=Path(files, "server.log"),
        args=["--workers", "1", "--header-timeout", "120", "--write-timeout", "120"],
        env={"WSGISERVE_TEST_FILES_DIR": files, "WSGISERVE_ACCESS_LOG": "0"},
    )
    server.start()
    rows = []
    try:
        measure(server, 200)  # warm-up
        for repetition in range(args.repeat):
            unloaded = measure(server, args.requests)
            attack = Attack(server, slowloris=args.slowloris, non_readers=args.non_readers)
            try:
                time.sleep(1.0)  # let the non-readers fill their buffers
                loaded = measure(server, args.requests)
            finally:
                attack.close()
            row = (
                statistics.median(unloaded),
                percentile(unloaded, 0.99),
                statistics.median(loaded),
                percentile(loaded, 0.99),
            )
            rows.append(row)
            print(
                f"run {repetition + 1}: unloaded p50 {row[0]:.3f} ms p99 {row[1]:.3f} ms | "
                f"under attack p50 {row[2]:.3f} ms p99 {row[3]:.3f} ms"
            )
    finally:
        code = server.stop()
    medians = [statistics.median(column) for column in zip(*rows, strict=True)]
    print(
        f"median of {args.repeat}: unloaded p50 {medians[0]:.3f} ms, p99 {medians[1]:.3f} ms; "
        f"under attack ({args.slowloris} slowloris + {args.non_readers} non-readers) "
        f"p50 {medians[2]:.3f} ms, p99 {medians[3]:.3f} ms; "
        f"p99 ratio {medians[3] / medians[1]:.2f} (target < 2)"
    )
    print(f"server exit code {code}; log: {server.log_path}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
