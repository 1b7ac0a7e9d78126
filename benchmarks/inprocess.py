"""The in-process limit: requests/s of the WSGI app called directly, with no server at all.

For each request a fresh copy of a prepared environ gets an empty BytesIO as wsgi.input; the
app is called, its response iterated and closed (Django fires request_finished from
close()). No sockets, no parsing, no threads: no server can beat this rate, and a server's
distance from it is that server's overhead.

    python benchmarks/inprocess.py --endpoint json --duration 5 --repeat 5

Endpoints: hello (the plain WSGI app), json, template-db, post-100k (a 100 KB body in
wsgi.input, as wrk's Lua script sends it) and file-1m (the FileResponse is iterated: there
is no wsgi.file_wrapper, so a server that sends the file with sendfile() may beat this).

Run it with the project's interpreter (it imports Django for the json endpoint). The
benchmark harness (benchmarks/run.py) runs it pinned to the server CPU with ``--json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    WSGIApp = Callable[[dict[str, object], Callable[..., object]], Iterable[bytes]]

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTPROJECT_DIR = REPO_ROOT / "testproject"
HELLO_BODY = b"Hello, World!"
POST_BODY = b"x" * (100 * 1024)  # what benchmarks/apps/post_100k.lua sends
FILE_BYTES = 1024 * 1024
# endpoint: (method, path, request body); must match harness/servers.py ENDPOINTS.
REQUESTS = {
    "hello": ("GET", "/", b""),
    "json": ("GET", "/json", b""),
    "template-db": ("GET", "/template-db/", b""),
    "post-100k": ("POST", "/echo/", POST_BODY),
    "file-1m": ("GET", f"/download-sized/{FILE_BYTES}", b""),
}


def load_app(endpoint: str) -> WSGIApp:
    """The WSGI app of ``endpoint``: the hello function, or testproject's Django handler."""
    sys.path.insert(0, str(REPO_ROOT))
    if endpoint == "hello":
        from benchmarks.apps.hello import application

        return application
    sys.path.insert(0, str(TESTPROJECT_DIR))
    os.chdir(TESTPROJECT_DIR)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def base_environ(method: str, path: str, body: bytes) -> dict[str, object]:
    """The environ a server would build for ``method path`` with wrk's headers."""
    environ: dict[str, object] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_body": body,  # not WSGI: call_once() wraps it in a fresh BytesIO
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["CONTENT_TYPE"] = "application/octet-stream"
    return environ


def call_once(app: WSGIApp, template: dict[str, object]) -> tuple[str, bytes]:
    """One request: copy the environ, call the app, iterate and close the response."""
    environ = template.copy()
    environ["wsgi.input"] = io.BytesIO(environ.pop("wsgi.input_body"))  # type: ignore[arg-type]
    statuses: list[str] = []

    def start_response(status: str, headers: object, exc_info: object = None) -> object:
        statuses.append(status)
        return None

    response = app(environ, start_response)
    try:
        body = b"".join(response)
    finally:
        close = getattr(response, "close", None)
        if close is not None:
            close()
    return statuses[-1], body


def check_response(endpoint: str, status: str, body: bytes) -> str | None:
    if not status.startswith("200"):
        return f"status {status!r}"
    if endpoint == "hello" and body != HELLO_BODY:
        return f"unexpected body {body[:60]!r}"
    if endpoint in ("json", "post-100k"):
        try:
            document = json.loads(body)
        except ValueError:
            return f"body is not JSON: {body[:60]!r}"
        if endpoint == "post-100k" and document.get("body_length") != len(POST_BODY):
            return f"echo saw {document.get('body_length')!r} body bytes"
    if endpoint == "template-db" and b"</html>" not in body.lower():
        return f"not an HTML page: {body[:60]!r}"
    if endpoint == "file-1m" and len(body) != FILE_BYTES:
        return f"{len(body)} bytes instead of {FILE_BYTES}"
    return None


def measure(
    app: WSGIApp, template: dict[str, object], duration_s: float, max_requests: int
) -> tuple[int, float]:
    """(requests, requests/s) for ``duration_s`` seconds or ``max_requests``, first to end."""
    count = 0
    started = time.perf_counter()
    deadline = started + duration_s
    while count < max_requests:
        call_once(app, template)
        count += 1
        if time.perf_counter() >= deadline:
            break
    return count, count / (time.perf_counter() - started)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", choices=tuple(REQUESTS), default="json")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per repetition")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="cap per repetition")
    parser.add_argument("--json", action="store_true", help="print one JSON line (for run.py)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    app = load_app(args.endpoint)
    method, path, body = REQUESTS[args.endpoint]
    template = base_environ(method, path, body)
    error = check_response(args.endpoint, *call_once(app, template))
    if error is not None:
        print(f"in-process {args.endpoint}: {path} answered badly: {error}", file=sys.stderr)
        return 2
    measure(app, template, args.warmup, args.max_requests)
    runs = [measure(app, template, args.duration, args.max_requests) for _ in range(args.repeat)]
    rates = [rate for _, rate in runs]
    result = {
        "endpoint": args.endpoint,
        "requests": [count for count, _ in runs],
        "rates": rates,
        "median": statistics.median(rates),
    }
    if args.json:
        print(json.dumps(result))
    else:
        listed = ", ".join(f"{rate:,.0f}" for rate in rates)
        print(f"in-process {args.endpoint} {path}: median {result['median']:,.0f} req/s ({listed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
