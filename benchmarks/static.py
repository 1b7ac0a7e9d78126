"""Static files benchmark: our loop's static serving vs whitenoise's middleware under gunicorn
vs nginx, in one run, on the same STATIC_ROOT.

    python3 benchmarks/static.py [--quick] [--repetitions N] [--duration S] [--output FILE]

testproject is migrated and collected into a tmp dir (whitenoise's storage: hashed names and
.gz/.br files), plus two files made here: 50 KiB and 10 MiB of bytes. wrk sends no
Accept-Encoding, so every server sends the identity bytes. Each server runs ONE worker process
on CPU 1 (taskset), wrk runs on CPU 0; keep-alive, 64 connections for the small files and 16 for
the 10 MiB one. Order is rotated on every repetition; the report shows medians.

* ours: ``manage.py serve --workers 1 --threads 4 --no-access-log`` (testproject.settings).
* gunicorn: ``gunicorn -k gthread -w 1 --threads 4`` from benchmarks/.venv-peers (made by
  benchmarks/run.py; created here the same way if missing), testproject with
  WhiteNoiseMiddleware right after SecurityMiddleware, as whitenoise's docs say.
* nginx: /usr/sbin/nginx (Debian package), ``master_process off``, one worker, sendfile on,
  access_log off, config from benchmarks/nginx-static.conf.template, pid/logs in the tmp dir.

``--access-logs``: every server writes an access line per response, as in production (ours
``--access-log`` to its log file, nginx ``access_log`` to a file, gunicorn
``--access-logfile``).

Every process is started in its own session and stopped by its process group id.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.loadgen import ensure_wrk, parse_wrk_output
from harness.peers_venv import PEERS_VENV, prepare_peers
from harness.procs import ChildProcess, child_env, find_free_port, stop_all
from harness.servers import SERVERS

REPO = Path(__file__).resolve().parent.parent
PROJECT = REPO / "testproject"
NGINX = "/usr/sbin/nginx"
TEMPLATE = Path(__file__).resolve().parent / "nginx-static.conf.template"
SERVER_CPU, WRK_CPU = "1", "0"
WHITENOISE_SETTINGS = """\
from testproject.settings import *  # noqa: F403
from testproject.settings import MIDDLEWARE

MIDDLEWARE = [MIDDLEWARE[0], "whitenoise.middleware.WhiteNoiseMiddleware", *MIDDLEWARE[1:]]
"""


@dataclass(frozen=True)
class StaticFile:
    name: str
    url_path: str  # under /static/
    size: int
    connections: int


@dataclass
class Measurement:
    server: str
    file: str
    rps: float
    bytes_per_s: float
    p99_ms: float | None
    errors: str


def _prepare(work: Path) -> tuple[dict[str, str], list[StaticFile]]:
    env = child_env(
        TESTPROJECT_DB=str(work / "db.sqlite3"),
        TESTPROJECT_STATIC_ROOT=str(work / "static"),
        TESTPROJECT_MEDIA_ROOT=str(work / "media"),
    )
    for command in (["migrate", "--noinput", "-v0"], ["collectstatic", "--noinput", "-v0"]):
        subprocess.run(
            [_project_python(), "manage.py", *command],
            cwd=PROJECT, env=env, check=True, timeout=300,
        )  # fmt: skip
    bench = work / "static" / "bench"
    (bench / "fifty.bin").write_bytes(bytes(range(256)) * 200)  # 51,200 bytes
    with (bench / "ten.bin").open("wb") as ten:
        for _ in range(40):
            ten.write(bytes(range(256)) * 1024)  # 40 x 256 KiB = 10 MiB
    (work / "whitenoise_settings.py").write_text(WHITENOISE_SETTINGS)
    files = [
        StaticFile("2 KB", "bench/small.css", (bench / "small.css").stat().st_size, 64),
        StaticFile("50 KB", "bench/fifty.bin", 51200, 64),
        StaticFile("10 MB", "bench/ten.bin", 10 * 1024 * 1024, 16),
    ]
    return env, files


def _project_python() -> str:
    return str(REPO / ".venv" / "bin" / "python")


def _start(
    name: str, work: Path, env: dict[str, str], port: int, *, access_logs: bool = False
) -> ChildProcess:
    log = work / "logs" / f"{name}.log"
    pinned = ["taskset", "-c", SERVER_CPU]
    if name == "ours":
        # Its access lines go to the child's log file, as nginx's go to access.log.
        access = "--access-log" if access_logs else "--no-access-log"
        argv = [*pinned, _project_python(), "manage.py", "serve", f"127.0.0.1:{port}",
                "--workers", "1", "--threads", "4", access, "--noreload",
                "--skip-checks"]  # fmt: skip
        return ChildProcess(argv, cwd=PROJECT, env=env, log_path=log)
    if name == "gunicorn+whitenoise":
        gunicorn = str(PEERS_VENV / "bin" / "gunicorn")
        argv = [*pinned, gunicorn, "-k", "gthread", "-w", "1", "--threads", "4",
                "-b", f"127.0.0.1:{port}", "testproject.wsgi:application"]  # fmt: skip
        if access_logs:
            argv[-1:-1] = ["--access-logfile", str(work / "logs" / "gunicorn-access.log")]
        gunicorn_env = {
            **env,
            "DJANGO_SETTINGS_MODULE": "whitenoise_settings",
            "PYTHONPATH": f"{work}{os.pathsep}{PROJECT}",
        }
        return ChildProcess(argv, cwd=PROJECT, env=gunicorn_env, log_path=log)
    nginx_dir = work / "nginx"
    nginx_dir.mkdir(exist_ok=True)
    config = string.Template(TEMPLATE.read_text()).substitute(
        tmp=nginx_dir,
        port=port,
        static_root=work / "static",
        gzip_static="off",
        access_log=f"{nginx_dir}/access.log" if access_logs else "off",
    )
    (nginx_dir / "nginx.conf").write_text(config)
    argv = [*pinned, NGINX, "-c", str(nginx_dir / "nginx.conf"), "-e", str(nginx_dir / "error.log")]
    return ChildProcess(argv, cwd=work, env=env, log_path=log)


def _wait_ready(child: ChildProcess, port: int, path: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    request = f"HEAD /static/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    while time.monotonic() < deadline:
        if not child.is_running():
            raise RuntimeError(f"{child.argv[3]} exited: {child.log_tail()}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=2) as sock,
        ):
            sock.sendall(request.encode())
            if sock.recv(64).startswith(b"HTTP/1.1 200"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"not ready after {timeout_s:.0f} s: {child.log_tail()}")


def _wrk(url: str, connections: int, duration_s: int) -> str:
    argv = ["taskset", "-c", WRK_CPU, ensure_wrk(), "-t1", f"-c{connections}",
            f"-d{duration_s}s", "--latency", "--timeout", "10s", url]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    return result.stdout + result.stderr


def _measure(server: str, port: int, file: StaticFile, duration_s: int) -> Measurement:
    url = f"http://127.0.0.1:{port}/static/{file.url_path}"
    _wrk(url, file.connections, 1)  # warm-up: caches, connections, the JIT-less interpreter
    output = _wrk(url, file.connections, duration_s)
    result = parse_wrk_output(output)
    if result is None:
        raise RuntimeError(f"wrk failed against {server}: {output[-500:]}")
    return Measurement(
        server=server,
        file=file.name,
        rps=result.rps,
        bytes_per_s=result.rps * file.size,
        p99_ms=result.p99_ms,
        errors=result.describe_errors(),
    )


def _run_server(
    name: str,
    work: Path,
    env: dict[str, str],
    files: list[StaticFile],
    duration_s: int,
    *,
    access_logs: bool,
) -> list[Measurement]:
    port = find_free_port()
    child = _start(name, work, env, port, access_logs=access_logs)
    try:
        _wait_ready(child, port, files[0].url_path)
        return [_measure(name, port, file, duration_s) for file in files]
    finally:
        child.stop()


def _report(
    measurements: list[Measurement], files: list[StaticFile], command: str, *, access_logs: bool
) -> str:
    servers = ["ours", "gunicorn+whitenoise", "nginx"]
    logs = "on for every server (to a file)" if access_logs else "off"
    lines = [
        "# Static files: ours vs whitenoise middleware (gunicorn gthread) vs nginx",
        "",
        f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs; "
        f"one worker process each on CPU {SERVER_CPU}, wrk -t1 on CPU {WRK_CPU}; keep-alive; "
        f"access logs {logs}",
        f"- Command: `{command}`",
        "",
        "| file | server | req/s (median) | MB/s (median) | p99 ms | vs nginx req/s "
        "| vs nginx bytes/s | runs | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for file in files:
        by_server = {
            server: [m for m in measurements if m.server == server and m.file == file.name]
            for server in servers
        }
        nginx = by_server["nginx"]
        nginx_rps = statistics.median(m.rps for m in nginx) if nginx else None
        for server in servers:
            runs = by_server[server]
            if not runs:
                continue
            rps = statistics.median(m.rps for m in runs)
            mbps = statistics.median(m.bytes_per_s for m in runs) / 1e6
            p99 = statistics.median(m.p99_ms or 0.0 for m in runs)
            ratio = f"{rps / nginx_rps:.2f}" if nginx_rps else "-"
            errors = "; ".join(sorted({m.errors for m in runs if m.errors})) or ""
            lines.append(
                f"| {file.name} ({file.connections} conns) | {server} | {rps:,.0f} | {mbps:,.1f} "
                f"| {p99:.2f} | {ratio} | {ratio} | {len(runs)} | {errors} |"
            )
    lines += ["", "Each run: " + ", ".join(
        f"{m.server}/{m.file} {m.rps:,.0f}" for m in measurements)]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition of 3 s")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--output", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the tmp work dir")
    parser.add_argument(
        "--access-logs",
        action="store_true",
        help="every server writes its access log (ours --access-log, nginx access_log, "
        "gunicorn --access-logfile), as production runs them",
    )
    options = parser.parse_args()
    repetitions, duration = (1, 3) if options.quick else (options.repetitions, options.duration)
    if not Path(NGINX).exists():
        print("nginx is missing: apt-get install -y nginx", file=sys.stderr)
        return 2
    if not (PEERS_VENV / "bin" / "gunicorn").exists():
        logs = REPO / "benchmarks" / "results" / "logs"
        prepare_peers(_project_python(), [SERVERS["gunicorn-gthread"]], logs)
    work = Path(tempfile.mkdtemp(prefix="wsgiserve-static-bench-"))
    try:
        env, files = _prepare(work)
        servers = ["ours", "gunicorn+whitenoise", "nginx"]
        measurements: list[Measurement] = []
        for repetition in range(repetitions):
            shift = repetition % len(servers)
            for server in servers[shift:] + servers[:shift]:
                print(f"[{repetition + 1}/{repetitions}] {server}", file=sys.stderr, flush=True)
                measurements += _run_server(
                    server, work, env, files, duration, access_logs=options.access_logs
                )
        command = "python3 benchmarks/static.py " + " ".join(sys.argv[1:])
        report = _report(measurements, files, command.strip(), access_logs=options.access_logs)
        print(report)
        if options.output:
            options.output.write_text(report)
    finally:
        stop_all()
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
