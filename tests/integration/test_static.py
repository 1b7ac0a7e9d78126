"""Static and media files answered by the worker's I/O loop, through a real ``manage.py serve``
of testproject (collectstatic output with hashed, pre-compressed names).

The worker's counters (``environ["wsgiserve.stats"]``, shown by testproject's
``/server-stats/`` view when TESTPROJECT_SERVER_STATS=1) prove that bodies went through
``os.sendfile`` and that static answers never used an application thread; testproject's
request_finished receiver (TESTPROJECT_REQUEST_FINISHED_LOG) shows when Django's
``close()`` ran. Every server here has ONE application thread.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import select
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import brotli
import pytest

from tests.live import REPO, LiveServer, Response, ResponseReader, read_response

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.integration

PROJECT = REPO / "testproject"
SECRET = b"TOP-SECRET-OUTSIDE-THE-ROOTS"
MEDIA_TEXT = b"an uploaded file\n"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Migrated database, collected static files, a media root, and a secret file beside them."""
    root = tmp_path_factory.mktemp("static-project")
    paths = {
        "root": root,
        "static": root / "static",
        "media": root / "media",
        "finished": root / "request-finished.log",
    }
    paths["media"].mkdir()
    (paths["media"] / "hello.txt").write_bytes(MEDIA_TEXT)
    (root / "secret.txt").write_bytes(SECRET)
    env = {**os.environ, **_project_env(paths)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for command in (["migrate", "--noinput"], ["collectstatic", "--noinput", "--verbosity", "0"]):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=PROJECT,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
    return paths


def _project_env(paths: dict[str, Path]) -> dict[str, str]:
    return {
        "TESTPROJECT_DB": str(paths["root"] / "db.sqlite3"),
        "TESTPROJECT_STATIC_ROOT": str(paths["static"]),
        "TESTPROJECT_MEDIA_ROOT": str(paths["media"]),
        "TESTPROJECT_SERVER_STATS": "1",
        "TESTPROJECT_REQUEST_FINISHED_LOG": str(paths["finished"]),
        "TESTPROJECT_ALLOWED_HOSTS": "t,test",  # the Host values tests/live.py sends
    }


@pytest.fixture(scope="module")
def site(start_server: Callable[..., LiveServer], project: dict[str, Path]) -> LiveServer:
    """testproject with static and media files, one worker, ONE application thread."""
    return start_server(
        "--workers", "1", "--threads", "1", "--serve-media",
        settings="testproject.settings", cwd=PROJECT, manage=["manage.py"],
        env=_project_env(project),
    )  # fmt: skip


def hashed(project: dict[str, Path], name: str) -> str:
    manifest = json.loads((project["static"] / "staticfiles.json").read_text())
    return "/static/" + manifest["paths"][name]


def stats(server: LiveServer) -> dict[str, int]:
    response = server.get("/server-stats/")
    assert response.status == 200
    return json.loads(response.body)  # type: ignore[no-any-return]


def exchange(sock: socket.socket, raw: bytes, *, method: str = "GET") -> Response:
    sock.sendall(raw)
    return read_response(sock, method=method)


# -- whitenoise's rules, answered by the loop ---------------------------------------------------


def test_hashed_name_is_immutable_with_security_headers(site, project):
    before = stats(site)
    response = site.get(hashed(project, "bench/small.css"))
    assert response.status == 200
    assert response.body == (project["static"] / "bench" / "small.css").read_bytes()
    assert len(response.body) == 2045
    assert response.header("cache-control") == "max-age=315360000, public, immutable"
    assert response.header("content-type") == 'text/css; charset="utf-8"'
    assert response.header("vary") == "Accept-Encoding"
    assert response.header("etag")
    assert response.header("last-modified")
    # What testproject's SecurityMiddleware adds (SECURE_CONTENT_TYPE_NOSNIFF and defaults).
    assert response.header("x-content-type-options") == "nosniff"
    assert response.header("referrer-policy") == "same-origin"
    assert response.header("cross-origin-opener-policy") == "same-origin"
    assert response.header("strict-transport-security") is None  # plain HTTP
    after = stats(site)
    assert after["static_responses"] - before["static_responses"] == 1


def test_unhashed_name_gets_max_age(site):
    response = site.get("/static/bench/small.css")
    assert response.status == 200
    assert response.header("cache-control") == "max-age=60, public"


@pytest.mark.parametrize(
    ("accept_encoding", "encoding", "decode"),
    [
        pytest.param("gzip", "gzip", gzip.decompress, id="gzip"),
        pytest.param("gzip, deflate, br", "br", brotli.decompress, id="br-smallest"),
        pytest.param("br", "br", brotli.decompress, id="br"),
        pytest.param("identity", None, bytes, id="identity"),
        pytest.param("", None, bytes, id="none"),
    ],
)
def test_accept_encoding_chooses_the_variant(site, project, accept_encoding, encoding, decode):
    original = (project["static"] / "bench" / "large.js").read_bytes()
    response = site.get("/static/bench/large.js", f"Accept-Encoding: {accept_encoding}\r\n")
    assert response.status == 200
    assert response.header("content-encoding") == encoding
    assert response.header("vary") == "Accept-Encoding"
    assert int(response.header("content-length") or -1) == len(response.body)
    assert decode(response.body) == original


def test_conditional_requests_get_304(site):
    first = site.get("/static/css/site.css")
    etag, last_modified = first.header("etag"), first.header("last-modified")
    by_etag = site.get("/static/css/site.css", f"If-None-Match: {etag}\r\n")
    assert (by_etag.status, by_etag.body) == (304, b"")
    assert by_etag.header("etag") == etag
    assert by_etag.header("content-length") is None
    assert by_etag.header("x-content-type-options") == "nosniff"
    by_date = site.get("/static/css/site.css", f"If-Modified-Since: {last_modified}\r\n")
    assert by_date.status == 304
    stale = site.get("/static/css/site.css", 'If-None-Match: "other"\r\n')
    assert stale.status == 200


@pytest.mark.parametrize(
    ("range_header", "status", "content_range", "part"),
    [
        pytest.param("bytes=0-9", 206, "bytes 0-9/2045", slice(0, 10), id="first-ten"),
        pytest.param("bytes=2000-", 206, "bytes 2000-2044/2045", slice(2000, None), id="open"),
        pytest.param("bytes=-5", 206, "bytes 2040-2044/2045", slice(-5, None), id="suffix"),
        pytest.param("bytes=5000-", 416, "bytes */2045", slice(0, 0), id="unsatisfiable"),
        pytest.param("bytes=0-1,5-6", 200, None, slice(None), id="multi-range-ignored"),
    ],
)
def test_ranges(site, project, range_header, status, content_range, part):
    original = (project["static"] / "bench" / "small.css").read_bytes()
    response = site.get("/static/bench/small.css", f"Range: {range_header}\r\n")
    assert response.status == status
    assert response.header("content-range") == content_range
    assert response.body == original[part]


def test_head_has_the_get_headers_and_no_body(site):
    with site.connect() as sock:
        head = exchange(
            sock, b"HEAD /static/bench/small.css HTTP/1.1\r\nHost: t\r\n\r\n", method="HEAD"
        )
        assert head.status == 200
        assert head.header("content-length") == "2045"
        # The connection stays usable: no body bytes were sent after the HEAD head.
        get = exchange(sock, b"GET /static/bench/small.css HTTP/1.1\r\nHost: t\r\n\r\n")
        assert len(get.body) == 2045


def test_other_methods_get_405_and_the_connection_goes_on(site):
    with site.connect() as sock:
        response = exchange(
            sock,
            b"POST /static/bench/small.css HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde",
        )
        assert response.status == 405
        assert response.header("allow") == "GET, HEAD"
        assert response.header("content-length") == "0"
        again = exchange(sock, b"GET /static/bench/small.css HTTP/1.1\r\nHost: t\r\n\r\n")
        assert again.status == 200


def test_pipelined_static_and_app_requests_keep_their_order(site):
    paths = ["/static/css/site.css", "/json", "/static/bench/small.css"] * 5
    raw = b"".join(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for path in paths)
    with site.connect() as sock:
        sock.sendall(raw)
        reader = ResponseReader(sock)
        types = [reader.read().header("content-type") for _ in paths]
    css = 'text/css; charset="utf-8"'
    assert types == [css, "application/json", css] * 5


def test_percent_encoded_path_is_served(site):
    assert site.get("/static/bench/small%2Ecss").status == 200


def test_access_log_has_static_requests(site):
    site.get("/static/css/site.css?from=access-log-test")
    deadline = time.monotonic() + 10
    while "site.css?from=access-log-test" not in site.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert '"GET /static/css/site.css?from=access-log-test HTTP/1.1" 200' in site.log()


# -- roots cannot be escaped ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/static/../secret.txt", id="dotdot"),
        pytest.param("/static/../../secret.txt", id="dotdot-twice"),
        pytest.param("/static/%2e%2e/secret.txt", id="encoded-dots"),
        pytest.param("/static/%2E%2E%2Fsecret.txt", id="encoded-slash"),
        pytest.param("/static/css/..%2f..%2fsecret.txt", id="mixed"),
        pytest.param("/static/%00", id="nul"),
        pytest.param("/static/css/site.css%00.txt", id="nul-suffix"),
        pytest.param("/static/..%5csecret.txt", id="encoded-backslash"),
        pytest.param("/static//secret.txt", id="double-slash"),
        pytest.param("/media/../secret.txt", id="media-dotdot"),
        pytest.param("/media/%2e%2e/secret.txt", id="media-encoded-dots"),
        pytest.param("/media/..%2fsecret.txt", id="media-encoded-slash"),
        pytest.param("/media/%2e%2e%5csecret.txt", id="media-encoded-backslash"),
        pytest.param("/media/hello.txt%00", id="media-nul"),
        pytest.param("/media/%00/../secret.txt", id="media-nul-dotdot"),
        pytest.param("/media//secret.txt", id="media-double-slash"),
        pytest.param("/media/./../secret.txt", id="media-dot"),
    ],
)
def test_traversal_never_escapes_the_roots(site, path):
    response = site.get(path)
    assert response.status in (400, 404), response.status
    assert SECRET not in response.body


def test_raw_backslash_is_refused(site):
    response = site.request(b"GET /media/..\\secret.txt HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response.status in (400, 404)
    assert SECRET not in response.body


# -- media ----------------------------------------------------------------------------------------


def test_media_files_and_new_uploads_are_served(site, project):
    assert site.get("/media/hello.txt").body == MEDIA_TEXT
    (project["media"] / "new-upload.txt").write_bytes(b"arrived after the start\n")
    response = site.get("/media/new-upload.txt")
    assert response.status == 200
    assert response.body == b"arrived after the start\n"
    assert response.header("access-control-allow-origin") is None
    assert site.get("/media/missing.txt").status == 404


# -- no application thread, and sendfile --------------------------------------------------------


def test_static_answered_while_the_only_app_thread_sleeps(site):
    sleeper = site.connect(timeout=30)
    queued = site.connect(timeout=30)
    try:
        sleeper.sendall(b"GET /sleep/?s=3 HTTP/1.1\r\nHost: t\r\n\r\n")
        queued.sendall(b"GET /json HTTP/1.1\r\nHost: t\r\n\r\n")
        response = site.get("/static/bench/small.css")
        assert response.status == 200
        assert len(response.body) == 2045
        # The application's requests are still waiting for the one thread (a poll, not a
        # wait: recv() on a socket with a timeout would wait even with MSG_DONTWAIT).
        readable, _, _ = select.select([sleeper, queued], [], [], 0)
        assert readable == []
        assert read_response(sleeper).body == b"slept 3"
        assert read_response(queued).status == 200
    finally:
        sleeper.close()
        queued.close()


def _finished_count(project: dict[str, Path]) -> int:
    try:
        return len(project["finished"].read_text().splitlines())
    except FileNotFoundError:
        return 0


def _settled_count(project: dict[str, Path]) -> int:
    """The number of request_finished lines once earlier requests' close() have run."""
    count = -1
    while count != (count := _finished_count(project)):
        time.sleep(0.2)
    return count


def _wait_for_finished(project: dict[str, Path], count: int) -> int:
    deadline = time.monotonic() + 15
    while _finished_count(project) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return _finished_count(project)


def _pattern_sha256(size: int) -> str:
    block = bytes(range(256)) * 4096
    digest = hashlib.sha256()
    for start in range(0, size, len(block)):
        digest.update(block[: min(len(block), size - start)])
    return digest.hexdigest()


def test_slow_download_does_not_hold_the_app_thread(site, project):
    size = 50 * 1024 * 1024
    before = stats(site)
    finished = _settled_count(project)
    with site.connect(timeout=60, receive_buffer=64 * 1024) as slow:
        slow.sendall(b"GET /download-sized/%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
        reader = ResponseReader(slow)
        head_and_some = reader._read_until(b"\r\n\r\n")
        assert head_and_some.startswith(b"HTTP/1.1 200 OK")
        # The client reads nothing more for now: with THREADS=1, other requests still work.
        for _ in range(3):
            assert site.get("/json").status == 200
        # Their request_finished fired; the download's has not: close() waits for the file.
        assert _wait_for_finished(project, finished + 3) == finished + 3
        digest = hashlib.sha256(reader.buffer)
        received = len(reader.buffer)
        while received < size:
            chunk = slow.recv(1 << 20)
            assert chunk, f"closed after {received} bytes"
            digest.update(chunk)
            received += len(chunk)
    assert received == size
    assert digest.hexdigest() == _pattern_sha256(size)
    assert _wait_for_finished(project, finished + 4) == finished + 4
    after = stats(site)
    # The whole body went through os.sendfile (the JSON responses did not).
    assert after["sendfile_bytes"] - before["sendfile_bytes"] == size


def test_bodies_go_through_sendfile(site, project):
    large = (project["static"] / "bench" / "large.js").read_bytes()
    before = stats(site)
    static = site.get("/static/bench/large.js")
    download = site.get("/download-sized/1000000")
    with site.connect() as sock:
        raw = b"HEAD /static/bench/large.js HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        head = exchange(sock, raw, method="HEAD")
    after = stats(site)
    assert static.body == large
    assert len(download.body) == 1000000
    assert head.body == b""
    # Exactly the two bodies, no more: heads and the JSON of /server-stats/ went by send().
    assert after["sendfile_bytes"] - before["sendfile_bytes"] == len(large) + 1000000
    assert after["sendfile_calls"] > before["sendfile_calls"]
    assert after["static_responses"] - before["static_responses"] == 2  # GET and HEAD


def test_small_bodies_leave_from_memory_with_their_head(site, project):
    """Files up to MEMORY_FILE_BYTES are read once per worker and sent with the head."""
    small = (project["static"] / "bench" / "small.css").read_bytes()
    plain = b"GET /static/bench/small.css HTTP/1.1\r\nHost: t\r\n\r\n"
    gzipped = b"GET /static/bench/small.css HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n"
    before = stats(site)
    with site.connect() as sock:
        for _ in range(3):  # the first reads each variant, the others come from memory
            response = exchange(sock, plain)
            assert (response.status, response.body) == (200, small)
            assert response.header("content-encoding") is None
            compressed = exchange(sock, gzipped)
            assert compressed.header("content-encoding") == "gzip"
            assert int(compressed.header("content-length") or -1) == len(compressed.body)
            assert gzip.decompress(compressed.body) == small
    after = stats(site)
    assert after["sendfile_bytes"] == before["sendfile_bytes"]
    assert after["static_responses"] - before["static_responses"] == 6


# -- WhiteNoiseMiddleware kept in MIDDLEWARE, and DEBUG -----------------------------------------


@pytest.fixture(scope="module")
def with_middleware(start_server, project):
    """The same project with WhiteNoiseMiddleware in MIDDLEWARE (wsgiserve.W001)."""
    return start_server(
        "--workers", "1", "--threads", "1",
        settings="tests.settings_static", cwd=PROJECT, manage=["manage.py"],
        env=_project_env(project),
    )  # fmt: skip


@pytest.fixture(scope="module")
def middleware_only(start_server, project):
    """WhiteNoiseMiddleware serving (--nostatic): its file responses reach our file_wrapper."""
    return start_server(
        "--workers", "1", "--threads", "1", "--nostatic",
        settings="tests.settings_static", cwd=PROJECT, manage=["manage.py"],
        env=_project_env(project),
    )  # fmt: skip


def test_server_answers_before_the_middleware_and_warns(with_middleware):
    before = stats(with_middleware)
    response = with_middleware.get("/static/bench/small.css")
    assert response.status == 200
    assert stats(with_middleware)["static_responses"] - before["static_responses"] == 1
    assert "wsgiserve.W001" in with_middleware.log()


@pytest.mark.parametrize(
    ("range_header", "size"),
    [
        pytest.param("", 60 * 1024, id="whole-file"),
        pytest.param("Range: bytes=100-50099\r\n", 50000, id="sliced-206"),
    ],
)
def test_middleware_responses_go_through_sendfile(middleware_only, project, range_header, size):
    original = (project["static"] / "bench" / "large.js").read_bytes()
    before = stats(middleware_only)
    response = middleware_only.get("/static/bench/large.js", range_header)
    after = stats(middleware_only)
    assert response.status == (206 if range_header else 200)
    expected = original[100:50100] if range_header else original
    assert response.body == expected
    assert after["static_responses"] == before["static_responses"] == 0
    assert after["sendfile_bytes"] - before["sendfile_bytes"] == len(expected)


def test_debug_serves_from_the_finders_and_sees_new_files(start_server, project, tmp_path):
    extra = tmp_path / "extra-static"
    extra.mkdir()
    server = start_server(
        "--workers", "1", "--threads", "1",
        settings="tests.settings_static", cwd=PROJECT, manage=["manage.py"],
        env={
            **_project_env(project),
            "TESTPROJECT_DEBUG": "1",
            "TESTPROJECT_STATIC_ROOT": str(tmp_path / "never-collected"),
            "TEST_EXTRA_STATIC_DIR": str(extra),
        },
    )  # fmt: skip
    before = stats(server)
    assert server.get("/static/css/site.css").status == 200  # from STATICFILES_DIRS
    assert server.get("/static/late.css").status == 404
    (extra / "late.css").write_text("body { color: red }\n")
    response = server.get("/static/late.css")
    assert (response.status, response.body) == (200, b"body { color: red }\n")
    (extra / "late.css").write_text("body { color: blue; }\n")
    assert server.get("/static/late.css").body == b"body { color: blue; }\n"
    assert stats(server)["static_responses"] - before["static_responses"] == 3
