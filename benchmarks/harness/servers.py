"""What is measured: the endpoints (apps) and the servers, one registry entry each.

Adding a peer is one ``ServerSpec``: a name, the pip requirements it needs in the peers
virtualenv, and a function from a ``Launch`` (endpoint, port, threads, interpreters) to the
argv that starts it with ONE worker process listening on 127.0.0.1:port.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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


def _check_hello(body: bytes) -> str | None:
    return None if body == HELLO_BODY else f"unexpected body {body[:60]!r}"


def _check_json(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except ValueError:
        return f"body is not JSON: {body[:60]!r}"
    return None if isinstance(document, dict) else f"body is not a JSON object: {body[:60]!r}"


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

    def manage(self, python: str, command: str, *args: str) -> list[str]:
        """argv of a Django management command run against this endpoint's settings."""
        return [python, *self.manage_prefix, command, *args, *self.manage_suffix]


ENDPOINTS = {
    "json": Endpoint(
        name="json",
        path="/json",
        title="Django JSON view (testproject /json)",
        wsgi_app="testproject.wsgi:application",
        app_dir=TESTPROJECT_DIR,
        manage_prefix=("manage.py",),
        manage_suffix=(),
        check_body=_check_json,
        env=(
            ("TESTPROJECT_DB", str(WORK_DIR / "db.sqlite3")),
            ("TESTPROJECT_STATIC_ROOT", str(WORK_DIR / "staticfiles")),
        ),
    ),
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
