"""What is measured: the endpoints (apps) and the servers, one registry entry each.

Adding a peer is one ``ServerSpec``: a name, the pip requirements it needs in the peers
virtualenv (and the Debian packages they build against), and a function from a ``Launch``
(endpoint, port, threads, interpreters) to the argv that starts it with ONE worker process
listening on 127.0.0.1:port. Peers without a command line of their own (tornado, bjoern) are
started by benchmarks/apps/serve_peer.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.loadgen import Scenario

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ENDPOINTS", "OURS", "SERVERS", "WORK_DIR", "Endpoint", "Launch", "ServerSpec"]

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO_ROOT / "benchmarks"
TESTPROJECT_DIR = REPO_ROOT / "testproject"
# The harness's own testproject database and collectstatic output (testproject reads these
# TESTPROJECT_* variables), so benchmarking never writes into testproject/.
WORK_DIR = BENCH_DIR / ".work"
HELLO_BODY = b"Hello, World!"
HELLO_SETTINGS = "benchmarks.apps.hello_settings"
OURS = "ours"
POST_BODY_BYTES = 100 * 1024  # the body benchmarks/apps/post_100k.lua sends
POST_BODY_BYTE = b"x"
FILE_BYTES = 1024 * 1024


def _check_hello(body: bytes) -> str | None:
    return None if body == HELLO_BODY else f"unexpected body {body[:60]!r}"


def _json_object(body: bytes) -> dict[str, object] | str:
    try:
        document = json.loads(body)
    except ValueError:
        return f"body is not JSON: {body[:60]!r}"
    return document if isinstance(document, dict) else f"body is not a JSON object: {body[:60]!r}"


def _check_json(body: bytes) -> str | None:
    document = _json_object(body)
    return document if isinstance(document, str) else None


def _check_echo(body: bytes) -> str | None:
    document = _json_object(body)
    if isinstance(document, str):
        return document
    length = document.get("body_length")
    return None if length == POST_BODY_BYTES else f"echo saw {length!r} body bytes"


def _check_html(body: bytes) -> str | None:
    return None if b"</html>" in body.lower() else f"not an HTML page: {body[:60]!r}"


def _check_size(size: int) -> Callable[[bytes], str | None]:
    def check(body: bytes) -> str | None:
        return None if len(body) == size else f"{len(body)} bytes instead of {size}"

    return check


def _check_slept(body: bytes) -> str | None:
    return None if body.startswith(b"slept") else f"unexpected body {body[:60]!r}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An app and the URL path measured on it."""

    name: str
    path: str
    title: str
    wsgi_app: str  # "module:callable", importable with app_dir on sys.path
    app_dir: Path  # working directory of the servers
    manage_prefix: tuple[str, ...]  # how to reach Django's command line for this app
    manage_suffix: tuple[str, ...]
    check_body: Callable[[bytes], str | None]
    env: tuple[tuple[str, str], ...] = ()  # extra environment of every process serving it
    method: str = "GET"
    body_bytes: int = 0  # POST body size (the same bytes wrk's Lua script sends)
    wrk_script: Path | None = None  # wrk -s (a POST body)
    scenarios: tuple[Scenario, ...] = ()  # () = the plan's scenarios
    servers: tuple[str, ...] = ()  # () = every selected server
    threads: int | None = None  # thread count for threaded servers (None = the plan's)
    inprocess: bool = True  # benchmarks/inprocess.py knows this endpoint
    note: str = ""  # printed under the endpoint's heading

    def manage(self, python: str, command: str, *args: str) -> list[str]:
        """argv of a Django management command run against this endpoint's settings."""
        return [python, *self.manage_prefix, command, *args, *self.manage_suffix]

    @property
    def in_testproject(self) -> bool:
        return self.app_dir == TESTPROJECT_DIR

    def request_body(self) -> bytes:
        return POST_BODY_BYTE * self.body_bytes


def _testproject(name: str, path: str, title: str, check: Callable[..., str | None], **extra: Any):
    return Endpoint(
        name=name,
        path=path,
        title=title,
        wsgi_app="testproject.wsgi:application",
        app_dir=TESTPROJECT_DIR,
        manage_prefix=("manage.py",),
        manage_suffix=(),
        check_body=check,
        env=(
            ("TESTPROJECT_DB", str(WORK_DIR / "db.sqlite3")),
            ("TESTPROJECT_STATIC_ROOT", str(WORK_DIR / "staticfiles")),
            ("TESTPROJECT_MEDIA_ROOT", str(WORK_DIR / "media")),
        ),
        **extra,
    )


KEEPALIVE_C64 = (Scenario(64, keepalive=True),)
# Secondary endpoints skip runserver and gunicorn sync (no keep-alive; hello and json have
# them for reference), so that the full suite stays near 20 minutes.
KEEPALIVE_SERVERS = (
    OURS,
    "gunicorn-gthread",
    "waitress",
    "gunicorn-gevent",
    "uwsgi",
    "granian",
    "cheroot",
    "tornado",
    "bjoern",
    f"{OURS}-accesslog",
)
BLOCKING_SERVERS = (OURS, "gunicorn-gevent", "gunicorn-gthread", "waitress")
STATIC_SERVERS = (OURS, f"{OURS}-accesslog")
DEFAULT_BLOCKING_THREADS = 256

ENDPOINTS = {
    "hello": Endpoint(
        name="hello",
        path="/",
        title="plain WSGI hello world (benchmarks/apps/hello.py)",
        wsgi_app="benchmarks.apps.hello:application",
        app_dir=REPO_ROOT,
        manage_prefix=("-m", "django"),
        manage_suffix=(f"--settings={HELLO_SETTINGS}",),
        check_body=_check_hello,
    ),
    "json": _testproject("json", "/json", "Django JSON view (testproject /json)", _check_json),
    "template-db": _testproject(
        "template-db",
        "/template-db/",
        "Django template page with one DB query (testproject /template-db/)",
        _check_html,
        scenarios=KEEPALIVE_C64,
        servers=KEEPALIVE_SERVERS,
    ),
    "post-100k": _testproject(
        "post-100k",
        "/echo/",
        "POST with a 100 KB body (testproject /echo/ reads and hashes it)",
        _check_echo,
        method="POST",
        body_bytes=POST_BODY_BYTES,
        wrk_script=BENCH_DIR / "apps" / "post_100k.lua",
        scenarios=KEEPALIVE_C64,
        servers=KEEPALIVE_SERVERS,
    ),
    "file-1m": _testproject(
        "file-1m",
        f"/download-sized/{FILE_BYTES}",
        "1 MB FileResponse (testproject /download-sized/1048576)",
        _check_size(FILE_BYTES),
        scenarios=KEEPALIVE_C64,
        servers=KEEPALIVE_SERVERS,
    ),
    "static": _testproject(
        "static",
        "/static/bench/small.css",  # replaced by the hashed name from staticfiles.json
        "static file, 2 KB CSS (STATIC_ROOT after collectstatic)",
        _check_size(0),  # resolve_static() sets the size
        servers=STATIC_SERVERS,
        inprocess=False,
        note="Only our server: it answers STATIC_ROOT from its I/O loop (whitenoise's rules). "
        "testproject has no WhiteNoiseMiddleware, so the peers would answer 404 here; "
        "benchmarks/static.py compares static serving with whitenoise and nginx.",
    ),
    "sleep-50ms": _testproject(
        "sleep-50ms",
        "/sleep/?s=0.05",
        "blocking view: 50 ms of simulated I/O (testproject /sleep/?s=0.05), 256 connections",
        _check_slept,
        scenarios=(Scenario(256, keepalive=True),),
        servers=BLOCKING_SERVERS,
        threads=DEFAULT_BLOCKING_THREADS,
        inprocess=False,
        note="Threaded servers get the thread count shown; gunicorn-gevent runs "
        "--worker-connections 1000. RSS: the server's whole process tree after the run.",
    ),
}


@dataclass(frozen=True, slots=True)
class Launch:
    """Everything a server's argv may depend on."""

    endpoint: Endpoint
    port: int
    threads: int
    project_python: str  # the project's interpreter (has Django + django_wsgiserve)
    peers_bin: Path  # bin/ of benchmarks/.venv-peers
    serve_options: frozenset[str]  # options `manage.py serve --help` lists ("--workers", ...)
    host: str = "127.0.0.1"

    @property
    def addrport(self) -> str:
        return f"{self.host}:{self.port}"

    def peer(self, executable: str) -> str:
        return str(self.peers_bin / executable)


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One server configuration under test."""

    name: str
    description: str
    build_argv: Callable[[Launch], list[str]]
    packages: tuple[str, ...] = ()  # pip requirements in the peers venv
    needs_peers_venv: bool = True
    uses_threads: bool = True
    # Debian packages that installing ``packages`` needs (C headers to build against).
    debian_packages: tuple[str, ...] = ()


def _ours(*, access_log: bool) -> Callable[[Launch], list[str]]:
    def build(launch: Launch) -> list[str]:
        # Adjust here as `manage.py serve` grows. It accepts ADDRPORT --threads N --noreload;
        # other flags are passed only when `serve --help` lists them. No peer writes an
        # access log by default, so the plain "ours" entry turns ours off too.
        args = [launch.addrport, "--threads", str(launch.threads), "--noreload"]
        optional = {
            "--workers": ["--workers", "1"],
            "--no-access-log": [] if access_log else ["--no-access-log"],
            "--access-log": ["--access-log"] if access_log else [],
        }
        for option, extra in optional.items():
            if option in launch.serve_options:
                args += extra
        return launch.endpoint.manage(launch.project_python, "serve", *args)

    return build


def _runserver(launch: Launch) -> list[str]:
    return launch.endpoint.manage(launch.project_python, "runserver", launch.addrport, "--noreload")


def _gunicorn(worker_class: str) -> Callable[[Launch], list[str]]:
    def build(launch: Launch) -> list[str]:
        argv = [launch.peer("gunicorn"), "-k", worker_class, "-w", "1", "-b", launch.addrport]
        if worker_class == "gthread":
            argv += ["--threads", str(launch.threads)]
        if worker_class == "gevent":
            argv += ["--worker-connections", "1000"]
        return [*argv, "--chdir", str(launch.endpoint.app_dir), launch.endpoint.wsgi_app]

    return build


def _waitress(launch: Launch) -> list[str]:
    return [
        launch.peer("waitress-serve"),
        f"--listen={launch.addrport}",
        f"--threads={launch.threads}",
        launch.endpoint.wsgi_app,
    ]


def _uwsgi(launch: Launch) -> list[str]:
    # --http11-socket: uWSGI's own HTTP/1.1 keep-alive parser, no separate router process.
    return [
        launch.peer("uwsgi"),
        "--http11-socket",
        launch.addrport,
        "--wsgi",
        launch.endpoint.wsgi_app,
        "--chdir",
        str(launch.endpoint.app_dir),
        "--processes",
        "1",
        "--threads",
        str(launch.threads),
        "--die-on-term",
        "--need-app",
        "--disable-logging",
    ]


def _granian(launch: Launch) -> list[str]:
    return [
        launch.peer("granian"),
        "--interface",
        "wsgi",
        "--host",
        launch.host,
        "--port",
        str(launch.port),
        "--workers",
        "1",
        "--blocking-threads",
        str(launch.threads),
        "--working-dir",
        str(launch.endpoint.app_dir),
        launch.endpoint.wsgi_app,
    ]


def _cheroot(launch: Launch) -> list[str]:
    return [
        launch.peer("cheroot"),
        "--bind",
        launch.addrport,
        "--threads",
        str(launch.threads),
        "--chdir",
        str(launch.endpoint.app_dir),
        launch.endpoint.wsgi_app,
    ]


def _serve_peer(server: str) -> Callable[[Launch], list[str]]:
    """benchmarks/apps/serve_peer.py SERVER, run by the peers' interpreter."""

    def build(launch: Launch) -> list[str]:
        return [
            launch.peer("python"),
            str(BENCH_DIR / "apps" / "serve_peer.py"),
            server,
            launch.host,
            str(launch.port),
            launch.endpoint.wsgi_app,
            *("--threads", str(launch.threads)),
        ]

    return build


_SPECS = (
    ServerSpec(
        OURS, "manage.py serve --no-access-log", _ours(access_log=False), needs_peers_venv=False
    ),
    ServerSpec("gunicorn-gthread", "gunicorn -k gthread", _gunicorn("gthread"), ("gunicorn",)),
    ServerSpec("waitress", "waitress-serve", _waitress, ("waitress",)),
    ServerSpec(
        "gunicorn-sync",
        "gunicorn -k sync (no keep-alive)",
        _gunicorn("sync"),
        ("gunicorn",),
        True,
        False,
    ),
    ServerSpec(
        "gunicorn-gevent",
        "gunicorn -k gevent",
        _gunicorn("gevent"),
        ("gunicorn", "gevent", "packaging"),
        uses_threads=False,
    ),
    ServerSpec("uwsgi", "uWSGI (pyuwsgi wheel), --http11-socket", _uwsgi, ("pyuwsgi",)),
    ServerSpec("granian", "granian --interface wsgi (Rust I/O)", _granian, ("granian",)),
    ServerSpec("cheroot", "cheroot (CherryPy's server)", _cheroot, ("cheroot",)),
    ServerSpec(
        "tornado",
        "tornado HTTPServer + WSGIContainer with a thread pool",
        _serve_peer("tornado"),
        ("tornado",),
    ),
    ServerSpec(
        "bjoern",
        "bjoern (C, libev; the app on its one thread)",
        _serve_peer("bjoern"),
        ("bjoern",),
        uses_threads=False,
        debian_packages=("libev-dev",),
    ),
    ServerSpec(
        f"{OURS}-accesslog",
        "manage.py serve --access-log (what logging every request costs)",
        _ours(access_log=True),
        needs_peers_venv=False,
    ),
    ServerSpec(
        "runserver",
        "Django runserver --noreload (development server)",
        _runserver,
        needs_peers_venv=False,
        uses_threads=False,
    ),
)
SERVERS = {spec.name: spec for spec in _SPECS}


def resolve_static(endpoint: Endpoint) -> Endpoint | str:
    """``endpoint`` with the hashed URL collectstatic gave its file, or why there is none."""
    static_root = WORK_DIR / "staticfiles"
    original = endpoint.path.removeprefix("/static/")
    try:
        manifest = json.loads((static_root / "staticfiles.json").read_text())
        hashed = manifest["paths"][original]
        size = (static_root / hashed).stat().st_size
    except (OSError, ValueError, KeyError) as exc:
        return f"no hashed name for {original} in {static_root}/staticfiles.json: {exc!r}"
    return replace(endpoint, path=f"/static/{hashed}", check_body=_check_size(size))
