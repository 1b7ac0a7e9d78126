"""10,000 idle keep-alive connections on one worker, while requests keep being served.

    .venv/bin/python benchmarks/connections.py [--connections 10000] [--repeat 3]

One worker (``--workers 1``) of ``manage.py serve`` with the test apps. Each repetition opens
``--connections`` connections, sends one request on each and reads the answer (so each is an
idle *keep-alive* connection, past its first request, as a browser leaves them), then measures
the latency of 1,000 requests on another connection, and the worker's resident memory (RSS,
``/proc/<pid>/status``) before and after: the difference divided by the count is the memory
per idle connection. The client raises its own RLIMIT_NOFILE to the hard limit (the server
does the same at start). Prints the medians over the repetitions.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.slowclients import measure, percentile  # noqa: E402
from tests.live import LiveServer, ResponseReader  # noqa: E402

if TYPE_CHECKING:
    import socket

__all__ = ["main"]

_BATCH = 50


def worker_pid(server: LiveServer) -> int:
    """The worker serving: the master's only child, or the server itself without a master."""
    pid = server.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else pid


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_idle(server: LiveServer, count: int) -> list[socket.socket]:
    """``count`` connections, each after one complete request (in batches that stay below
    MAX_QUEUED_REQUESTS, or the excess would rightly get 503)."""
    sockets = []
    request = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n"
    for start in range(0, count, _BATCH):
        batch = [server.connect(timeout=30) for _ in range(min(_BATCH, count - start))]
        for sock in batch:
            sock.sendall(request)
        for sock in batch:
            assert ResponseReader(sock).read().status == 200
        sockets += batch
    return sockets


def run_once(
    server: LiveServer, connections: int, requests: int, repetition: int
) -> tuple[float, ...]:
    measure(server, 200)  # warm-up
    pid = worker_pid(server)
    before = rss_kib(pid)
    started = time.perf_counter()
    idle = open_idle(server, connections)
    opened_s = time.perf_counter() - started
    time.sleep(1.0)
    after = rss_kib(pid)
    try:
        latencies = measure(server, requests)
    finally:
        for sock in idle:
            sock.close()
    per_connection = (after - before) * 1024 / connections
    row = (per_connection, statistics.median(latencies), percentile(latencies, 0.99), opened_s)
    print(
        f"run {repetition + 1}: {connections} idle connections opened in {opened_s:.1f} s; "
        f"RSS {before} -> {after} KiB = {per_connection:.0f} B per connection; "
        f"meanwhile p50 {row[1]:.3f} ms p99 {row[2]:.3f} ms"
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 100:
        print(f"the hard file limit ({hard}) is too low for {args.connections} connections")
        return 2
    work = tempfile.mkdtemp(prefix="wsgiserve-bench-")
    rows = []
    codes = []
    for repetition in range(args.repeat):
        # A fresh worker each time: RSS does not shrink after connections close, so a second
        # run in the same worker would reuse the first one's memory and read too low.
        server = LiveServer(
            log_path=Path(work, f"server-{repetition}.log"),
            args=["--workers", "1", "--max-connections", str(args.connections + 100)],
            env={"WSGISERVE_ACCESS_LOG": "0"},
        )
        server.start()
        try:
            rows.append(run_once(server, args.connections, args.requests, repetition))
        finally:
            codes.append(server.stop())
    medians = [statistics.median(column) for column in zip(*rows, strict=True)]
    print(
        f"median of {args.repeat}: {medians[0]:.0f} bytes per idle keep-alive connection; "
        f"requests while {args.connections} are open: p50 {medians[1]:.3f} ms, "
        f"p99 {medians[2]:.3f} ms"
    )
    print(f"server exit codes {codes}; logs in {work}")
    return 0 if not any(codes) else 1


if __name__ == "__main__":
    sys.exit(main())
