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
``--app hello`` serves the plain WSGI hello app (benchmarks/apps/hello.py) instead: the
server's own cost, with no Django in it. Besides req/s, each row gives the CPU time the server
spent per request (user + system of every process of its session, read from /proc around the
measured wrk run, divided by the requests wrk counted): a figure the machine's other load
disturbs less than a rate.
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
from harness.procs import ChildProcess, child_env, session_cpu_s, stop_all  # noqa: E402
from harness.servers import ServerSpec  # noqa: E402

PROJECT = REPO / "testproject"
NGINX = "/usr/sbin/nginx"
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_REQUESTS = re.compile(r"(\d+) requests in")
# app: (URL path, what its answer starts with)
APPS = {"json": ("/json", b"HTTP/1.1 200"), "hello": ("/", b"HTTP/1.1 200")}
HELLO_FLUP = (
    "import sys; sys.path.insert(0, {repo!r});"
    "from flup.server.fcgi import WSGIServer;"
    "from benchmarks.apps.hello import application;"
    "WSGIServer(application, bindAddress={path!r}, maxThreads=8).run()"
)

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


def server_argv(name: str, path: str, python: str, app: str = "json") -> list[str]:
    peer = peers_bin()
    hello = app == "hello"
    if name.startswith("ours-"):
        prefix = {"http": "", "uwsgi": "uwsgi:", "fastcgi": "fastcgi:"}[SERVERS[name][0]]
        start = [python, "-m", "django"] if hello else [python, "manage.py"]
        settings = ["--settings", "benchmarks.apps.hello_settings"] if hello else []
        return [
            *start, "serve", *settings, "--bind", f"{prefix}unix:{path}", "--workers", "1",
            "--threads", "8", "--no-access-log", "--noreload",
        ]  # fmt: skip
    if name == "uwsgi":
        module = "benchmarks.apps.hello:application" if hello else "testproject.wsgi:application"
        return [
            str(peer / "uwsgi"), "--socket", path, "--module", module,
            "--chdir", str(REPO if hello else PROJECT), "--processes", "1", "--threads", "8",
            "--disable-logging", "--master", "--die-on-term",
        ]  # fmt: skip
    if name == "gunicorn-uwsgi":
        module = "benchmarks.apps.hello:application" if hello else "testproject.wsgi:application"
        return [
            str(peer / "gunicorn"), "--protocol", "uwsgi", "-k", "gthread", "-w", "1",
            "--threads", "8", "-b", f"unix:{path}", "--chdir", str(REPO if hello else PROJECT),
            "--no-control-socket", module,
        ]  # fmt: skip
    if hello:
        return [str(peer / "python"), "-c", HELLO_FLUP.format(repo=str(REPO), path=path)]
    return [str(peer / "python"), "-c", FLUP.format(project=str(PROJECT), path=path)]


def wait_ready(
    port: int, *children: ChildProcess, target: str = "/json", timeout_s: float = 60
) -> None:
    """Until nginx answers 200 for ``target`` through the server (bounded)."""
    end = time.monotonic() + timeout_s
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
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
    raise RuntimeError(f"not serving {target} through nginx: {last}")


def measure(
    name: str, python: str, duration: float, work: Path, app: str = "json"
) -> tuple[float, float]:
    """req/s, and the server's CPU microseconds per request."""
    protocol = SERVERS[name][0]
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    upstream, port = str(tmp / "app.sock"), free_port()
    keepalive = "keepalive 32;" if protocol != "uwsgi" else ""  # nginx keeps no uwsgi upstream
    (tmp / "nginx.conf").write_text(
        CONFIG.substitute(
            tmp=tmp, upstream=upstream, port=port, keepalive=keepalive, **{"pass": PASS[protocol]}
        )
    )
    if app == "hello":
        env = child_env(PYTHONPATH=str(REPO))
    else:
        env = child_env(DJANGO_SETTINGS_MODULE="testproject.settings", PYTHONPATH=str(PROJECT))
    server = ChildProcess(
        ["taskset", "-c", "1", *server_argv(name, upstream, python, app)],
        cwd=REPO if app == "hello" else PROJECT,
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
        target = APPS[app][0]
        wait_ready(port, server, nginx, target=target)
        url = f"http://127.0.0.1:{port}{target}"
        wrk = ["taskset", "-c", "0", "wrk", "-t1", "-c64", "--timeout", "10s"]
        subprocess.run([*wrk, "-d1", url], capture_output=True, check=True, timeout=60)
        cpu_before = session_cpu_s(server.pid)
        result = subprocess.run(
            [*wrk, f"-d{duration:g}", url], capture_output=True, check=True, timeout=120
        )
        cpu_s = session_cpu_s(server.pid) - cpu_before
        output = result.stdout.decode()
        if "Non-2xx" in output or "Socket errors" in output:
            print(f"  {name}: {output.strip().splitlines()[-3:]}", flush=True)
        match, count = _RPS.search(output), _REQUESTS.search(output)
        if match is None or count is None:
            raise RuntimeError(output)
        return float(match.group(1)), cpu_s * 1e6 / max(1, int(count.group(1)))
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
    parser.add_argument(
        "--app", choices=tuple(APPS), default="json", help="testproject /json, or plain hello"
    )
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
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    try:
        for index in range(args.repeat):
            order = names[index % len(names) :] + names[: index % len(names)]
            for name in order:
                rate, cpu_us = measure(name, python, args.duration, work, args.app)
                runs[name].append((rate, cpu_us))
                print(
                    f"  run {index + 1}: {name} {rate:,.0f} req/s, {cpu_us:.1f} us CPU/request",
                    flush=True,
                )
    finally:
        stop_all()
    report = render(runs, names, args)
    print("\n" + report)
    if args.output is not None:
        args.output.write_text(report)
    print(f"logs: {work.name} in the temporary directory")
    return 0


def render(
    runs: dict[str, list[tuple[float, float]]], names: list[str], args: argparse.Namespace
) -> str:
    """The Markdown report: how it was run, then one row per server."""
    rates = {name: [rate for rate, _ in runs[name]] for name in names}
    reference = statistics.median(rates["uwsgi"]) if rates.get("uwsgi") else None
    nginx = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    path = APPS[args.app][0]
    what = "testproject `/json`" if args.app == "json" else "the plain WSGI hello app"
    options = "" if args.app == "json" else " --app hello"
    lines = [
        "# Behind nginx: HTTP, uwsgi and FastCGI",
        "",
        f"`benchmarks/protocols.py --repeat {args.repeat} --duration {args.duration:g}"
        f"{options}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{nginx.replace('nginx version: ', '')}. {what}, one worker with 8 threads on CPU 1; "
        "nginx and wrk (64 keep-alive connections) on CPU 0; medians of interleaved runs. "
        "CPU/request: user + system time of the server's processes over the measured run, "
        "divided by the requests answered.",
        "",
        f"| server | nginx to it | {path} req/s (median) | vs uWSGI | CPU us/request "
        "(median) | runs (req/s) |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        median = statistics.median(rates[name])
        cpu = statistics.median(cpu_us for _, cpu_us in runs[name])
        ratio = f"{median / reference:.2f}" if reference else "-"
        all_runs = ", ".join(f"{rate:,.0f}" for rate in rates[name])
        lines.append(
            f"| {name} | {SERVERS[name][0]} | {median:,.0f} | {ratio} | {cpu:.0f} | {all_runs} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
