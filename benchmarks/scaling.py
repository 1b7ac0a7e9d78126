"""How throughput scales with WORKERS, and how evenly the workers share connections.

Runs testproject's ``/json`` behind ``manage.py serve --workers N`` for each N, with wrk
(keep-alive, ``--connections`` connections, ``--duration`` seconds, ``--repeat`` runs each, the
order of N alternating between runs so that drift does not favour one). Halfway through each
run it reads ``ss -tnp`` to count the established connections each worker process accepted:
with every worker sharing the inherited listening socket, that is the accept balance.

    .venv/bin/python benchmarks/scaling.py                      # 1 and 2 workers, 3 x 5 s
    .venv/bin/python benchmarks/scaling.py --workers 1 2 4 --repeat 5 --duration 10
    .venv/bin/python benchmarks/scaling.py --cpu-affinity     # serve --cpu-affinity

Readiness is the server's ``READY=1`` on a notify socket this script owns (no polling); each
server runs in its own session and is stopped with SIGTERM to its group (SIGKILL after 10 s).
Standard library only; loopback only. Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTPROJECT = REPO / "testproject"
PYTHON = REPO / ".venv" / "bin" / "python"
WRK = "/usr/bin/wrk"

__all__ = ["main"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One ``manage.py serve`` in its own session, ready once it sent READY=1."""

    def __init__(
        self, workers: int, threads: int, log_dir: Path, extra: tuple[str, ...] = ()
    ) -> None:
        self.port = free_port()
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = f"wsgiserve-scaling-{uuid.uuid4().hex}"
        self.notify.bind("\0" + name)
        env = {**os.environ, "NOTIFY_SOCKET": "@" + name, "PYTHONUNBUFFERED": "1"}
        env["TESTPROJECT_DB"] = str(log_dir / "db.sqlite3")
        command = [str(PYTHON), "manage.py", "serve", f"127.0.0.1:{self.port}", "--noreload"]
        command += ["--workers", str(workers), "--threads", str(threads), "--no-access-log"]
        command += extra
        command += ["--skip-checks"]
        self.log_path = log_dir / f"server-{workers}-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=TESTPROJECT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.notify.settimeout(30)
        while b"READY=1" not in self.notify.recv(4096):
            pass

    def connections_per_worker(self) -> dict[int, int]:
        """Established server-side connections on our port, by owning process id."""
        output = subprocess.run(
            ["ss", "-tnpH", "state", "established", f"( sport = :{self.port} )"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout
        counts: collections.Counter[int] = collections.Counter()
        for line in output.splitlines():
            match = re.search(r"pid=(\d+)", line)
            if match:
                counts[int(match.group(1))] += 1
        return dict(counts)

    def stop(self) -> int:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            code = self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            code = self.process.wait(10)
        self.notify.close()
        return code


def run_once(workers: int, args: argparse.Namespace, log_dir: Path) -> tuple[float, list[int]]:
    """One wrk run against a fresh server: requests/s and connections per worker."""
    server = Server(
        workers, args.threads, log_dir, ("--cpu-affinity",) if args.cpu_affinity else ()
    )
    spread: dict[int, int] = {}
    try:
        url = f"http://127.0.0.1:{server.port}/json"
        command = [WRK, "-t1", f"-c{args.connections}", f"-d{args.duration}s", url]
        sampler = threading.Timer(
            args.duration / 2, lambda: spread.update(server.connections_per_worker())
        )
        sampler.start()
        result = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=args.duration + 30
        )
        sampler.join()
    finally:
        code = server.stop()
    if code != 0:
        print(f"warning: server exited with {code}; see {server.log_path}", file=sys.stderr)
    match = re.search(r"Requests/sec:\s*([\d.]+)", result.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", result.stdout)
    if errors:
        print(f"warning: wrk reported errors: {errors.group(0)}", file=sys.stderr)
    assert match, result.stdout
    return float(match.group(1)), sorted(spread.values(), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--cpu-affinity", action="store_true", help="serve --cpu-affinity (one CPU per worker)"
    )
    args = parser.parse_args()
    rates: dict[int, list[float]] = {n: [] for n in args.workers}
    spreads: dict[int, list[list[int]]] = {n: [] for n in args.workers}
    with tempfile.TemporaryDirectory(prefix="wsgiserve-scaling-") as tmp:
        subprocess.run(
            [str(PYTHON), "manage.py", "migrate", "--noinput", "-v0"],
            cwd=TESTPROJECT,
            env={**os.environ, "TESTPROJECT_DB": str(Path(tmp) / "db.sqlite3")},
            check=True,
            timeout=120,
        )
        for repetition in range(args.repeat):
            order = args.workers if repetition % 2 == 0 else list(reversed(args.workers))
            for workers in order:
                rate, spread = run_once(workers, args, Path(tmp))
                rates[workers].append(rate)
                spreads[workers].append(spread)
                print(f"run {repetition + 1}: {workers} worker(s): {rate:,.0f} req/s, "
                      f"connections per worker {spread}", file=sys.stderr)  # fmt: skip
                time.sleep(0.5)
    base = statistics.median(rates[args.workers[0]])
    setup = f"wrk -t1 -c{args.connections} -d{args.duration}s, {args.threads} threads per worker"
    if args.cpu_affinity:
        setup += ", --cpu-affinity"
    print(f"\n/json, {setup}, median of {args.repeat}, {os.cpu_count()} CPUs shared with wrk\n")
    print("| workers | req/s (median) | vs first | connections per worker (each run) |")
    print("|---|---|---|---|")
    for workers in args.workers:
        median = statistics.median(rates[workers])
        runs = "; ".join("/".join(map(str, spread)) for spread in spreads[workers])
        print(f"| {workers} | {median:,.0f} | {median / base:.2f}x | {runs} |")


if __name__ == "__main__":
    main()
