"""The server's own Python cost per keep-alive HTTP request, measured in-process.

From "the bytes of a request arrived" to "the response bytes were handed to the socket":
the real ``RequestParser`` is fed a browser-like keep-alive GET and its events are pulled as
``Connection.process()`` pulls them; the body goes through the real ``RequestBody``; the
environ comes from a listener's ``EnvironTemplate`` (built as ``dispatch.environ_template``
builds it) with the trusted proxies applied, and a ``RequestCycle`` runs the application and
writes the head with the worker's ``ResponseWriter``, optionally with the access log on
(``AccessLog`` on a logger configured as ``accesslog.default_logging_config()`` does, writing
to /dev/null). This is the sequence of ``connection.Connection.process``/``_dispatch`` and
``dispatch.Dispatcher._run``/``_cycle``, replicated here with the same objects; only the
socket, the selector, the thread hand-off and the lock of the real sink are left out: the
sink keeps the parts it is given, and the next request is fed at once.

    .venv/bin/python benchmarks/hotpath.py                  # every scenario, median of 7
    .venv/bin/python benchmarks/hotpath.py --scenarios hello --requests 50000 --repeat 9
    .venv/bin/python benchmarks/hotpath.py --profile json-log   # cProfile, top functions
    .venv/bin/python benchmarks/hotpath.py --show hello     # the request and response bytes
    .venv/bin/python benchmarks/hotpath.py --vary           # a new request-target each time
    .venv/bin/python benchmarks/hotpath.py --interleave     # each request beside a Django one

Scenarios: ``hello`` (the plain WSGI app of benchmarks/apps/hello.py: 13 bytes, with
Content-Length) and ``json`` (a small JSON body with the headers Django's default middleware
adds), each with the access log off and on (``-log``, the default "combined" format).
Every request on the connection is the same, as wrk sends them; with ``--vary`` each has
its own query string (``/?page=N``), as a browser's differ, so that nothing a parser or
cache could remember from the previous request applies.
With ``--interleave`` each server request is followed by a real Django request (testproject's
``/json``, called in-process as benchmarks/inprocess.py calls it), as a worker alternates
between the two; it prints the server's path alone, Django alone, the two alternated, and
the difference: what each costs the other (the caches and predictors each leaves cold for
the other), which the figures of the path alone do not show. A loop of plain arithmetic of
the server's size is measured the same way, for comparison.
Standard library and the project only (``--interleave``: and Django).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import logging
import os
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from django_wsgiserve.accesslog import (  # noqa: E402 - after the sys.path line
    AccessFormatter,
    AccessLog,
    BufferedStreamHandler,
)
from django_wsgiserve.http.events import (  # noqa: E402
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Request,
)
from django_wsgiserve.http.parser import RequestParser  # noqa: E402
from django_wsgiserve.http.writer import ResponseWriter  # noqa: E402
from django_wsgiserve.proxy import parse_trusted_proxies  # noqa: E402
from django_wsgiserve.requestbody import RequestBody  # noqa: E402
from django_wsgiserve.wsgi import EnvironTemplate, RequestCycle  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

# What wrk and browsers send on a keep-alive connection (wrk sends Host only; with -H the rest).
REQUEST = (
    b"GET / HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8000\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
)
HELLO_BODY = b"Hello, World!"
JSON_BODY = b'{"message": "Hello, World!", "items": [1, 2, 3], "ok": true}'
# The headers of a Django JsonResponse after SecurityMiddleware, XFrameOptionsMiddleware and
# CommonMiddleware, in the order Django sends them.
JSON_HEADERS = (
    ("Content-Type", "application/json"),
    ("X-Frame-Options", "DENY"),
    ("Content-Length", str(len(JSON_BODY))),
    ("Vary", "Cookie"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)
HELLO_HEADERS = (("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO_BODY))))
STATIC_PREFIXES = (b"/static/",)  # Connection._dispatch asks the static table first
DATE = b"Sat, 05 Dec 2026 04:48:26 GMT"
PEER = ("127.0.0.1", "40000")


def hello_app(environ: dict[str, Any], start_response: Callable[..., object]) -> Iterable[bytes]:
    """benchmarks/apps/hello.py: 200, 13 bytes, Content-Length set."""
    start_response("200 OK", list(HELLO_HEADERS))
    return [HELLO_BODY]


def json_app(environ: dict[str, Any], start_response: Callable[..., object]) -> Iterable[bytes]:
    """A small JSON response, serialised ahead (Django's own cost is not ours)."""
    start_response("200 OK", list(JSON_HEADERS))
    return [JSON_BODY]


APPS = {"hello": hello_app, "json": json_app}
SCENARIOS = ("hello", "json", "hello-log", "json-log")


class CollectingSink:
    """A ``wsgi.ResponseSink`` that keeps what it is given (no socket, no lock)."""

    can_sendfile = True
    may_keep_alive = True

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.kept_alive: bool | None = None

    def send(self, parts: list[bytes]) -> None:
        self.sent += parts

    def send_file(
        self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None = None
    ) -> bool:
        raise AssertionError("no file bodies here")

    def finish(self, *, keep_alive: bool) -> None:
        self.kept_alive = keep_alive


def access_log() -> AccessLog:
    """An ``AccessLog`` on a logger set up as ``default_logging_config()`` sets up
    ``django_wsgiserve.access`` (so it takes the direct path), writing to /dev/null."""
    logger = logging.getLogger("benchmarks.hotpath.access")
    for handler in list(logger.handlers):
        if isinstance(handler, BufferedStreamHandler):  # an earlier call's
            logger.removeHandler(handler)
            handler.close()
            handler.stream.close()
    handler = BufferedStreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as we do
    handler.setFormatter(AccessFormatter("%(message)s", colour=False))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return AccessLog(format="combined", logger=logger)


def make_server(scenario: str, *, vary: bool = False) -> tuple[Callable[..., None], CollectingSink]:
    """A function serving ``n`` keep-alive requests on one connection, and its sink."""
    app = APPS[scenario.removesuffix("-log")]
    log = access_log() if scenario.endswith("-log") else None
    # dispatch.environ_template for a TCP listener on 127.0.0.1:8000.
    template = EnvironTemplate(
        server_name="127.0.0.1",
        server_port="8000",
        script_name="",
        url_scheme="http",
        multiprocess=True,
    )
    writer = ResponseWriter(server_header="django-wsgiserve")  # the SERVER_HEADER default
    proxies = parse_trusted_proxies(())
    parser = RequestParser()
    body = RequestBody(memory_limit=65536)
    sink = CollectingSink()
    sent = sink.sent
    requests = [REQUEST]
    if vary:
        requests = [REQUEST.replace(b"GET / ", b"GET /?page=%d " % n) for n in range(1000)]
    static_prefixes = STATIC_PREFIXES

    def get_date() -> bytes:
        return DATE

    def serve(count: int, *, flush: bool = True) -> None:
        now = time.monotonic()  # the loop's cached clock
        variants = len(requests)
        for number in range(count):
            sent.clear()
            parser.feed(requests[number % variants])  # Connection.on_readable
            request = None
            while True:  # Connection.process
                event = parser.next_event()
                if event is NEED_DATA:
                    raise AssertionError("the whole request was fed")
                event_type = type(event)
                if event_type is Request:
                    request = event  # Connection._start_request
                    if request.expect_continue and parser.buffered_bytes == 0:  # type: ignore[union-attr]
                        raise AssertionError("no Expect here")
                elif event_type is Data:
                    body.add(event.data)  # type: ignore[union-attr]
                elif event_type is EndOfMessage:
                    break
                elif event_type is ConnectionClosed:
                    raise AssertionError("keep-alive")
            # Connection._dispatch, then Dispatcher.dispatch, _run and _cycle.
            assert request is not None
            body_file, body_size = body.take()
            if request.path.startswith(static_prefixes):
                raise AssertionError("not a static path")
            keep_alive = request.keep_alive and True  # and not draining
            environ = template.build(request, body_file, body_size, PEER)
            proxies.apply(environ)
            RequestCycle(
                app=app,
                environ=environ,
                request=request,
                sink=sink,
                writer=writer,
                get_date=get_date,
                access_log=log,
                keep_alive=keep_alive,
                started=now,
                metrics=None,
            ).run()
            body_file.close()
        if log is not None and flush:
            log.flush()  # the loop's write: about 100 a second, so not after every request

    return serve, sink


def measure(serve: Callable[[int], None], requests: int, repeat: int) -> list[float]:
    """µs per request of ``repeat`` runs of ``requests`` requests each (after a warm-up)."""
    serve(min(requests, 2000))
    timings = []
    for _ in range(repeat):
        started = time.perf_counter_ns()
        serve(requests)
        timings.append((time.perf_counter_ns() - started) / requests / 1000.0)
    return timings


def _busy() -> int:
    """Plain arithmetic, about as long as the server's path: little code, no objects."""
    total = 0
    for number in range(400):
        total += number
    return total


def interleave(scenarios: list[str], requests: int, repeat: int) -> None:
    """Each scenario alone, Django alone, and the two alternated (see the module notes)."""
    from benchmarks import inprocess  # imports Django: only in this mode

    django_app = inprocess.load_app("json")
    template = inprocess.base_environ(*inprocess.REQUESTS["json"])

    def django(count: int) -> None:
        for _ in range(count):
            inprocess.call_once(django_app, template)

    def busy(count: int, *, flush: bool = True) -> None:
        for _ in range(count):
            _busy()

    subjects: dict[str, Callable[..., None]] = {"arithmetic": busy}
    for scenario in scenarios:
        subjects[scenario] = make_server(scenario)[0]
    django(2000)
    for serve in subjects.values():
        serve(2000)
    gc.collect()
    gc.freeze()  # as the worker does after loading the application

    def timed(run: Callable[[], None]) -> float:
        started = time.perf_counter_ns()
        run()
        return (time.perf_counter_ns() - started) / requests / 1000.0

    def alternated(serve: Callable[..., None]) -> None:
        for _ in range(requests):
            serve(1, flush=False)
            inprocess.call_once(django_app, template)
        serve(0)  # the access log's lines, written at once as by the loop

    def alone_and_alternated(serve: Callable[..., None]) -> tuple[float, float]:
        return timed(lambda: serve(requests)), timed(lambda: alternated(serve))

    results: dict[str, list[tuple[float, float]]] = {name: [] for name in subjects}
    django_alone: list[float] = []
    for _ in range(repeat):  # interleaved repetitions: a noisy moment touches every figure
        django_alone.append(timed(lambda: django(requests)))
        for name, serve in subjects.items():
            results[name].append(alone_and_alternated(serve))
    django_median = statistics.median(django_alone)
    print(f"Django /json alone: {django_median:.1f} us/request (median of {repeat})")
    for name, pairs in results.items():
        alone = statistics.median(pair[0] for pair in pairs)
        both = statistics.median(pair[1] for pair in pairs)
        print(
            f"{name:12} alone {alone:6.2f} us; alternated with Django {both:6.1f} us: "
            f"{both - alone - django_median:+5.1f} us beyond the sum"
        )


def show(scenario: str) -> None:
    serve, sink = make_server(scenario)
    serve(1)
    print(REQUEST.decode("latin-1"), end="")
    print(b"".join(sink.sent).decode("latin-1"))
    print(f"\n(keep-alive after: {sink.kept_alive})")


def profile(scenario: str, requests: int, top: int, *, vary: bool) -> None:
    serve, _ = make_server(scenario, vary=vary)
    serve(1000)
    profiler = cProfile.Profile()
    profiler.runcall(serve, requests)
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("tottime").print_stats(top)
    print(f"{scenario}: {requests} requests under cProfile (sorted by own time)")
    print(stream.getvalue())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--requests", type=int, default=20000, help="requests per repetition")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--profile", metavar="SCENARIO", choices=SCENARIOS)
    parser.add_argument("--top", type=int, default=25, help="functions --profile prints")
    parser.add_argument("--show", metavar="SCENARIO", choices=SCENARIOS)
    parser.add_argument("--vary", action="store_true", help="a new request-target each time")
    parser.add_argument(
        "--interleave", action="store_true", help="alternate with a Django request (see above)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.show:
        show(args.show)
        return 0
    if args.profile:
        profile(args.profile, args.requests, args.top, vary=args.vary)
        return 0
    if args.interleave:
        interleave(args.scenarios.split(","), min(args.requests, 5000), args.repeat)
        return 0
    for scenario in args.scenarios.split(","):
        serve, _ = make_server(scenario, vary=args.vary)
        timings = measure(serve, args.requests, args.repeat)
        listed = " ".join(f"{timing:.2f}" for timing in timings)
        name = f"{scenario}{' (vary)' if args.vary else ''}"
        print(f"{name:17} median {statistics.median(timings):6.2f} us/request  ({listed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
