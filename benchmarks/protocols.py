"""testproject's /json behind a real nginx, over HTTP, uwsgi and FastCGI, against the peers.

    make prepare    # testproject migrated and collected, as for every testproject benchmark
    .venv/bin/python benchmarks/protocols.py [--repeat 5] [--duration 4] [--servers ...]

One server process serves testproject (one worker, 8 threads) on a unix socket; nginx (one
process, upstream keep-alive where the protocol allows it) listens on 127.0.0.1 and passes
every request on: ``proxy_pass`` (HTTP/1.1), ``uwsgi_pass`` with the stock ``uwsgi_params``,
``fastcgi_pass`` with the stock ``fastcgi_params`` and ``fastcgi_keep_conn on``. wrk
(keep-alive, 64 connections) and nginx share CPU 0, the server has CPU 1. Servers:

* ours-http, ours-uwsgi, ours-fastcgi: ``manage.py serve --bind [uwsgi:|fastcgi:]unix:PATH``;
* uwsgi: uWSGI's own ``--socket`` (its uwsgi protocol), ``--processes 1 --threads 8``;
* gunicorn-uwsgi: gunicorn gthread with ``--protocol uwsgi``;
* flup-fastcgi: flup's threaded FastCGI ``WSGIServer``, the classic Django FastCGI setup.

Peers are installed into benchmarks/.venv-peers by the harness (never the project's .venv).
Runs are interleaved (the order rotates each repetition); the table gives medians and the
ratio to uWSGI. Loopback only; every process is stopped by its process group.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from string import Template

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))

from harness.peers_venv import peers_bin, prepare_peers  # noqa: E402
from harness.procs import ChildProcess, child_env, stop_all  # noqa: E402
from harness.servers import ServerSpec  # noqa: E402

PROJECT = REPO / "testproject"
NGINX = "/usr/sbin/nginx"
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")

PASS = {
    "http": """
        proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
        proxy_set_header Host $host;""",
    "uwsgi": "include /etc/nginx/uwsgi_params; uwsgi_pass app;",
    "fastcgi": "include /etc/nginx/fastcgi_params; fastcgi_pass app; fastcgi_keep_conn on;",
}
CONFIG = Template(
    """daemon off; master_process off; worker_processes 1;
pid ${tmp}/nginx.pid; error_log ${tmp}/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path ${tmp}/body; proxy_temp_path ${tmp}/proxy;
    fastcgi_temp_path ${tmp}/fastcgi; uwsgi_temp_path ${tmp}/uwsgi; scgi_temp_path ${tmp}/scgi;
    upstream app { server unix:${upstream}; ${keepalive} }
    server {
        listen 127.0.0.1:${port};
        location / { ${pass} }
    }
}
"""
)
# name: (protocol nginx speaks to it, peer packages)
SERVERS = {
    "ours-http": ("http", ()),
    "ours-uwsgi": ("uwsgi", ()),
    "ours-fastcgi": ("fastcgi", ()),
    "uwsgi": ("uwsgi", ("uwsgi",)),
    "gunicorn-uwsgi": ("uwsgi", ("gunicorn",)),
    "flup-fastcgi": ("fastcgi", ("flup",)),
}
FLUP = (
    "import sys; sys.path.insert(0, {project!r});"
    "from flup.server.fcgi import WSGIServer;"
    "from testproject.wsgi import application;"
    "WSGIServer(application, bindAddress={path!r}, maxThreads=8).run()"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_argv(name: str, path: str, python: str) -> list[str]:
    peer = peers_bin()
    if name.startswith("ours-"):
        prefix = {"http": "", "uwsgi": "uwsgi:", "fastcgi": "fastcgi:"}[SERVERS[name][0]]
        return [
            python, "manage.py", "serve", "--bind", f"{prefix}unix:{path}", "--workers", "1",
            "--threads", "8", "--no-access-log", "--noreload",
        ]  # fmt: skip
    if name == "uwsgi":
        return [
            str(peer / "uwsgi"), "--socket", path, "--module", "testproject.wsgi:application",
            "--chdir", str(PROJECT), "--processes", "1", "--threads", "8", "--disable-logging",
            "--master", "--die-on-term",
        ]  # fmt: skip
    if name == "gunicorn-uwsgi":
        return [
            str(peer / "gunicorn"), "--protocol", "uwsgi", "-k", "gthread", "-w", "1",
            "--threads", "8", "-b", f"unix:{path}", "--chdir", str(PROJECT),
            "--no-control-socket", "testproject.wsgi:application",
        ]  # fmt: skip
    return [str(peer / "python"), "-c", FLUP.format(project=str(PROJECT), path=path)]


def wait_ready(port: int, *children: ChildProcess, timeout_s: float = 60) -> None:
    """Until nginx answers 200 for /json through the server (bounded)."""
    end = time.monotonic() + timeout_s
    request = b"GET /json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    last = "no answer"
    while time.monotonic() < end:
        for child in children:
            if not child.is_running():
                raise RuntimeError(f"exited before serving; see {child.log_path.name}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(request)
                answer = sock.recv(64)
                if answer.startswith(b"HTTP/1.1 200"):
                    return
                last = repr(answer)
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(f"not serving /json through nginx: {last}")


def measure(name: str, python: str, duration: float, work: Path) -> float:
    protocol = SERVERS[name][0]
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    upstream, port = str(tmp / "app.sock"), free_port()
    keepalive = "keepalive 32;" if protocol != "uwsgi" else ""  # nginx keeps no uwsgi upstream
    (tmp / "nginx.conf").write_text(
        CONFIG.substitute(
            tmp=tmp, upstream=upstream, port=port, keepalive=keepalive, **{"pass": PASS[protocol]}
        )
    )
    env = child_env(DJANGO_SETTINGS_MODULE="testproject.settings", PYTHONPATH=str(PROJECT))
    server = ChildProcess(
        ["taskset", "-c", "1", *server_argv(name, upstream, python)],
        cwd=PROJECT,
        env=env,
        log_path=work / f"{name}.log",
    )
    nginx = ChildProcess(
        ["taskset", "-c", "0", NGINX, "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "e.log")],
        cwd=tmp,
        env=child_env(),
        log_path=work / f"{name}-nginx.log",
    )
    try:
        wait_ready(port, server, nginx)
        url = f"http://127.0.0.1:{port}/json"
        wrk = ["taskset", "-c", "0", "wrk", "-t1", "-c64", "--timeout", "10s"]
        subprocess.run([*wrk, "-d1", url], capture_output=True, check=True, timeout=60)
        result = subprocess.run(
            [*wrk, f"-d{duration:g}", url], capture_output=True, check=True, timeout=120
        )
        output = result.stdout.decode()
        if "Non-2xx" in output or "Socket errors" in output:
            print(f"  {name}: {output.strip().splitlines()[-3:]}", flush=True)
        match = _RPS.search(output)
        if match is None:
            raise RuntimeError(output)
        return float(match.group(1))
    finally:
        nginx.stop()
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=SERVERS)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--python", default=sys.executable, help="the project's interpreter")
    parser.add_argument("--output", type=Path, help="also write the report here (Markdown)")
    args = parser.parse_args()
    python = os.path.abspath(args.python)
    if not os.access(NGINX, os.X_OK):
        print("nginx is missing: apt-get install nginx", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="wsgiserve-protocols-"))
    specs = [
        ServerSpec(name, name, lambda launch: [], packages=SERVERS[name][1])
        for name in args.servers
        if SERVERS[name][1]
    ]
    unusable = prepare_peers(python, specs, work) if specs else {}
    for name, why in unusable.items():
        print(f"skipping {name}: {why}", flush=True)
    names = [name for name in args.servers if name not in unusable]
    runs: dict[str, list[float]] = {name: [] for name in names}
    try:
        for index in range(args.repeat):
            order = names[index % len(names) :] + names[: index % len(names)]
            for name in order:
                runs[name].append(measure(name, python, args.duration, work))
                print(f"  run {index + 1}: {name} {runs[name][-1]:,.0f} req/s", flush=True)
    finally:
        stop_all()
    report = render(runs, names, args)
    print("\n" + report)
    if args.output is not None:
        args.output.write_text(report)
    print(f"logs: {work.name} in the temporary directory")
    return 0


def render(runs: dict[str, list[float]], names: list[str], args: argparse.Namespace) -> str:
    """The Markdown report: how it was run, then one row per server."""
    reference = statistics.median(runs["uwsgi"]) if runs.get("uwsgi") else None
    nginx = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    lines = [
        "# Behind nginx: HTTP, uwsgi and FastCGI",
        "",
        f"`benchmarks/protocols.py --repeat {args.repeat} --duration {args.duration:g}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}, {nginx.replace('nginx version: ', '')}. "
        "testproject `/json`, one worker with 8 threads on CPU 1; nginx and wrk (64 "
        "keep-alive connections) on CPU 0; medians of interleaved runs.",
        "",
        "| server | nginx to it | /json req/s (median) | vs uWSGI | runs |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        median = statistics.median(runs[name])
        ratio = f"{median / reference:.2f}" if reference else "-"
        all_runs = ", ".join(f"{rate:,.0f}" for rate in runs[name])
        lines.append(f"| {name} | {SERVERS[name][0]} | {median:,.0f} | {ratio} | {all_runs} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
