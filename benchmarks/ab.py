"""A/B: two builds (or two configurations) of our server, same machine, same run, interleaved.

    .venv/bin/python benchmarks/ab.py --python-a OLD/.venv/bin/python --python-b .venv/bin/python
    .venv/bin/python benchmarks/ab.py --python-a .venv/bin/python --args-b=--access-log
    .venv/bin/python benchmarks/ab.py --python-a .venv/bin/python --endpoints json \
        --args-b="--no-access-log --metrics-bind 127.0.0.1:0"    # the cost of /metrics

Each interpreter must have its own django-wsgiserve installed (e.g. a venv per git worktree
with ``pip install -e``), and each side imports that one: the repository itself is kept off
``sys.path``. The testproject of this repository is served by both. ``--args-a``
and ``--args-b`` are the serve options of each side (default ``--no-access-log``). For each
endpoint (testproject's ``/json`` and the plain WSGI hello app, ``benchmarks/apps/hello.py``)
and each repetition, A then B (or B then A: the order alternates), the server runs with
``--workers 1 --threads 8`` (``--threads``) and the side's options, pinned to CPU 1, and
``wrk -t1 -c64 -d<duration>`` (keep-alive; ``--connections``) pinned to CPU 0 after a
warm-up. Prints the
median req/s of each, the ratio B/A and every run, and the median CPU time the server's
processes used per request (user + system, from /proc): steadier than req/s on a shared
machine, since a neighbour's burst takes the server's CPU but not the server's work.
Loopback only; every server is stopped by its process group.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.procs import session_cpu_s

REPO = Path(__file__).resolve().parent.parent
ENDPOINTS = {
    # name: (working directory, extra serve arguments, path); None: a directory that holds
    # only this repository's benchmarks package (``_benchmarks_root``)
    "json": (REPO / "testproject", [], "/json"),
    "hello": (None, ["--settings", "benchmarks.apps.hello_settings"], "/"),
}
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_COUNT = re.compile(r"(\d+) requests in")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server not listening")


def _benchmarks_root(logs: Path) -> Path:
    """A directory holding only a link to this repository's ``benchmarks`` package. Neither
    the repository (``python -m`` puts the working directory first on sys.path) nor
    PYTHONPATH may hold it: its django_wsgiserve would shadow the one each interpreter has
    installed, and A and B would run the same code."""
    root = logs / "import-root"
    if not root.exists():
        root.mkdir()
        (root / "benchmarks").symlink_to(REPO / "benchmarks")
    return root


def measure(
    python: str, args: list[str], endpoint: str, load: argparse.Namespace, log: Path
) -> tuple[float, float]:
    """req/s and CPU microseconds per request of one server run: ``load`` has the
    duration, connections and threads."""
    directory, extra, path = ENDPOINTS[endpoint]
    directory = directory or _benchmarks_root(log.parent)
    port = free_port()
    argv = [
        "taskset", "-c", "1", python, "-m", "django", "serve", f"127.0.0.1:{port}",
        "--workers", "1", "--threads", str(load.threads), "--noreload", *args, *extra,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSGISERVE_", "PYTHON"))}
    env["PYTHONPATH"] = str(directory)  # not REPO: see _benchmarks_root
    if endpoint == "json":
        env["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv, cwd=directory, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        wait_listening(port, process)
        url = f"http://127.0.0.1:{port}{path}"
        wrk = ["taskset", "-c", "0", "wrk", "-t1", f"-c{load.connections}", "--timeout", "10s"]
        subprocess.run([*wrk, "-d1", url], capture_output=True, check=True, timeout=60)
        cpu_before = session_cpu_s(process.pid)
        result = subprocess.run(
            [*wrk, f"-d{load.duration:g}", url], capture_output=True, check=True, timeout=120
        )
        cpu_s = session_cpu_s(process.pid) - cpu_before
        output = result.stdout.decode()
        match, count = _RPS.search(output), _COUNT.search(output)
        if match is None or count is None:
            raise RuntimeError(output)
        return float(match.group(1)), cpu_s * 1e6 / max(1, int(count.group(1)))
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL after 15 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    except ProcessLookupError:
        process.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python-a", required=True, help="interpreter of build A (before)")
    parser.add_argument("--python-b", default=sys.executable, help="interpreter of build B")
    parser.add_argument("--args-a", default="--no-access-log", help="serve options of A")
    parser.add_argument("--args-b", default="--no-access-log", help="serve options of B")
    parser.add_argument("--endpoints", nargs="+", default=list(ENDPOINTS), choices=ENDPOINTS)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=64, help="wrk -c (keep-alive)")
    parser.add_argument("--threads", type=int, default=8, help="serve --threads")
    args = parser.parse_args()
    # Absolute (the servers run in other directories), but not resolved: a venv's python is
    # a symlink, and the venv is found from the path it was started by.
    pythons = {"a": os.path.abspath(args.python_a), "b": os.path.abspath(args.python_b)}
    options = {"a": shlex.split(args.args_a), "b": shlex.split(args.args_b)}
    logs = Path(tempfile.mkdtemp(prefix="wsgiserve-ab-"))
    print(
        "| endpoint | A req/s (median) | B req/s (median) | B/A | A runs | B runs "
        "| A CPU us/request | B CPU us/request |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for endpoint in args.endpoints:
        runs: dict[str, list[float]] = {"a": [], "b": []}
        cpu: dict[str, list[float]] = {"a": [], "b": []}
        for index in range(args.repeat):
            order = ("a", "b") if index % 2 == 0 else ("b", "a")
            for name in order:
                python = pythons[name]
                log = logs / f"{endpoint}-{name}-{index}.log"
                rate, cpu_us = measure(python, options[name], endpoint, args, log)
                runs[name].append(rate)
                cpu[name].append(cpu_us)
        a, b = statistics.median(runs["a"]), statistics.median(runs["b"])
        print(
            f"| {endpoint} | {a:,.0f} | {b:,.0f} | {b / a:.3f} | "
            f"{', '.join(f'{r:,.0f}' for r in runs['a'])} | "
            f"{', '.join(f'{r:,.0f}' for r in runs['b'])} | "
            f"{statistics.median(cpu['a']):.1f} | {statistics.median(cpu['b']):.1f} |"
        )
    print(f"\nlogs: {logs.name} in the temporary directory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
