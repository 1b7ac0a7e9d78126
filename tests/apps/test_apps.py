"""Unit checks of the plain-WSGI test apps, called directly (no server), so they
are known to be good before the server's tests rely on them."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from wsgiref.util import FileWrapper, is_hop_by_hop, setup_testing_defaults

import pytest

from . import big, hop_by_hop, raises, router, stream, write_callable
from ._util import FILES_DIR_ENV, pattern_bytes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path


@dataclass
class Result:
    status: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    written: list[bytes] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    start_calls: int = 0

    @property
    def body(self) -> bytes:
        return b"".join(self.written + self.chunks)

    @property
    def code(self) -> int:
        assert self.status is not None
        return int(self.status.split()[0])

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(values) <= 1, values
        return values[0] if values else None


def make_environ(
    path: str,
    query: str = "",
    method: str = "GET",
    body: bytes | None = None,
    wsgi: dict[str, Any] | None = None,
    **cgi: str,
) -> dict[str, Any]:
    """A test environ; ``cgi`` adds/overrides CGI keys, ``wsgi`` any other keys."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(body or b""),
    }
    if body is not None:
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["CONTENT_TYPE"] = "application/octet-stream"
    setup_testing_defaults(environ)
    environ.update(cgi)
    environ.update(wsgi or {})
    return environ


def start(result: Result) -> Callable[..., Callable[[bytes], None]]:
    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        result.start_calls += 1
        result.status = status
        result.headers = list(headers)
        return result.written.append

    return start_response


def close(iterable: Iterable[bytes]) -> None:
    closer = getattr(iterable, "close", None)
    if closer is not None:
        closer()


def call(path: str, query: str = "", app: Any = router.application, **kwargs: Any) -> Result:
    """Call ``app`` like a server would: iterate the whole body, then close()."""
    result = Result()
    iterable = app(make_environ(path, query, **kwargs), start(result))
    try:
        for chunk in iterable:
            assert type(chunk) is bytes
            result.chunks.append(chunk)
    finally:
        close(iterable)
    assert result.start_calls == 1
    return result


@pytest.fixture
def files_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "files"
    directory.mkdir()
    monkeypatch.setenv(FILES_DIR_ENV, str(directory))
    return directory


# --- router -----------------------------------------------------------------------------


def test_router_index_lists_every_app() -> None:
    result = call("/")
    assert result.code == 200
    assert result.body.decode().split() == [f"/{name}" for name in sorted(router.RAW_APPS)]


def test_router_unknown_app_is_404() -> None:
    assert call("/nope/x").code == 404


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/hello", "hello"), ("/echo/a/b", "echo"), ("echo", "echo"), ("//x", "x"), ("", "")],
)
def test_first_segment(path: str, expected: str) -> None:
    assert router.first_segment(path) == expected


def test_router_validates_all_but_file_wrapper_and_no_start_response() -> None:
    assert set(router.VALIDATED_APPS) == set(router.RAW_APPS) - {
        "file_wrapper",
        "no_start_response",
    }


def test_nonstandard_method_bypasses_the_validator_warning() -> None:
    # With filterwarnings=error, the validator's WSGIWarning would fail the request.
    result = call("/echo/", method="PROPFIND")
    assert json.loads(result.body)["method"] == "PROPFIND"


def test_validator_is_active() -> None:
    with pytest.raises(AssertionError):
        call("/hello", wsgi={"wsgi.url_scheme": "gopher"})


# --- individual apps ----------------------------------------------------------------


def test_hello() -> None:
    result = call("/hello")
    assert (result.status, result.body) == ("200 OK", b"Hello, World!")
    assert result.header("Content-Length") == "13"


def test_echo_get() -> None:
    result = call(
        "/echo/some/path",
        "a=1&b=%20",
        HTTP_X_CUSTOM="yes",
        HTTP_USER_AGENT="tests",
        REMOTE_ADDR="10.1.2.3",
        REMOTE_PORT="54321",
        SCRIPT_NAME="/mount",
    )
    data = json.loads(result.body)
    assert result.code == 200
    assert result.header("Content-Length") == str(len(result.body))
    assert data["method"] == "GET"
    assert data["path"] == "/echo/some/path"
    assert data["script_name"] == "/mount"
    assert data["query_string"] == "a=1&b=%20"
    assert data["headers"]["HTTP_X_CUSTOM"] == "yes"
    assert data["headers"]["HTTP_USER_AGENT"] == "tests"
    assert all(key.startswith("HTTP_") for key in data["headers"])
    assert (data["remote_addr"], data["remote_port"]) == ("10.1.2.3", "54321")
    assert (data["server_name"], data["server_port"]) == ("127.0.0.1", "80")
    assert data["server_protocol"] == "HTTP/1.0"
    assert data["url_scheme"] == "http"
    assert data["content_length"] is None
    assert data["body_length"] == 0
    assert data["body_sha256"] == hashlib.sha256(b"").hexdigest()
    assert data["cgi"]["REQUEST_METHOD"] == "GET"


def test_echo_post_body() -> None:
    body = bytes(range(256)) * 1000
    data = json.loads(call("/echo/", method="POST", body=body).body)
    assert data["body_length"] == len(body)
    assert data["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert data["body_head"].encode("latin-1") == body[:200]
    assert data["content_type"] == "application/octet-stream"
    assert data["content_length"] == str(len(body))


def test_echo_reads_only_content_length_bytes() -> None:
    environ_input = io.BytesIO(b"0123456789EXTRA")
    data = json.loads(
        call("/echo/", method="PUT", CONTENT_LENGTH="10", wsgi={"wsgi.input": environ_input}).body
    )
    assert data["body_length"] == 10
    assert data["body_head"] == "0123456789"
    assert environ_input.read() == b"EXTRA"


def test_echo_without_content_length() -> None:
    body = b"chunked body" * 10_000
    terminated = call(
        "/echo/",
        method="POST",
        wsgi={"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True},
    )
    data = json.loads(terminated.body)
    assert data["body_length"] == len(body)
    assert data["wsgi"]["input_terminated"] is True
    # Without wsgi.input_terminated, a body without CONTENT_LENGTH must count as empty.
    plain = call("/echo/", method="POST", wsgi={"wsgi.input": io.BytesIO(body)})
    assert json.loads(plain.body)["body_length"] == 0


def test_sleepy() -> None:
    result = call("/sleepy/", "s=0.01")
    assert (result.code, result.body) == (200, b"slept 0.01")
    assert call("/sleepy/", "s=nan").code == 400
    assert call("/sleepy/", "s=-1").code == 400


def test_stream_has_no_content_length() -> None:
    result = call("/stream/", "n=3&size=5&delay=0.001")
    assert result.code == 200
    assert result.header("Content-Length") is None
    assert result.chunks == [b"aaaaa", b"bbbbb", b"ccccc"]
    assert call("/stream/").body == stream.expected_body()
    assert call("/stream/", "n=0").body == b""
    assert call("/stream/", "n=x").code == 400


@pytest.mark.parametrize("size", [0, 1, 255, 65536, 65537, 200_000])
def test_big(size: int) -> None:
    result = call("/big/", f"size={size}")
    assert result.header("Content-Length") == str(size)
    assert result.body == pattern_bytes(size)
    assert all(len(chunk) <= 64 * 1024 for chunk in result.chunks)


def test_big_default_is_5_mib() -> None:
    result = call("/big/")
    assert result.header("Content-Length") == str(big.DEFAULT_SIZE) == str(5 * 1024 * 1024)
    assert len(result.body) == big.DEFAULT_SIZE
    assert (
        hashlib.sha256(result.body).digest()
        == hashlib.sha256(pattern_bytes(big.DEFAULT_SIZE)).digest()
    )


def test_pattern_bytes_offset() -> None:
    assert pattern_bytes(4, offset=254) == b"\xfe\xff\x00\x01"
    assert pattern_bytes(1000, offset=300) == pattern_bytes(1300)[300:]


class FakeFileWrapper:
    """Stands in for a server's wsgi.file_wrapper, to check it is returned as-is."""

    def __init__(self, filelike: io.BufferedReader, block_size: int = 8192) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self):
        while chunk := self.filelike.read(self.block_size):
            yield chunk

    def close(self) -> None:
        self.filelike.close()


def test_file_wrapper_uses_the_servers_wrapper(files_dir: Path) -> None:
    content = pattern_bytes(100_000)
    (files_dir / "data.bin").write_bytes(content)
    result = Result()
    iterable = router.application(
        make_environ(
            "/file_wrapper/",
            "path=data.bin&offset=1000",
            wsgi={"wsgi.file_wrapper": FakeFileWrapper},
        ),
        start(result),
    )
    assert type(iterable) is FakeFileWrapper
    try:
        assert iterable.block_size == 8192
        assert iterable.filelike.tell() == 1000
        assert result.header("Content-Length") == str(100_000 - 1000)
        assert b"".join(iterable) == content[1000:]
    finally:
        iterable.close()
    assert iterable.filelike.closed


def test_file_wrapper_falls_back_to_wsgiref(files_dir: Path) -> None:
    (files_dir / "sub").mkdir()
    (files_dir / "sub" / "a.txt").write_bytes(b"hello file")
    result = Result()
    iterable = router.application(make_environ("/file_wrapper/", "path=sub/a.txt"), start(result))
    assert isinstance(iterable, FileWrapper)
    body = b"".join(iterable)
    iterable.close()
    assert (result.code, body, result.header("Content-Length")) == (200, b"hello file", "10")


def test_file_wrapper_options(files_dir: Path) -> None:
    (files_dir / "a.txt").write_bytes(b"0123456789")
    result = call("/file_wrapper/", "path=a.txt&nolength=1&block=3&offset=10")
    assert (result.code, result.body, result.header("Content-Length")) == (200, b"", None)
    assert call("/file_wrapper/", "path=a.txt&offset=11").code == 400
    assert call("/file_wrapper/", "path=a.txt&block=x").code == 400


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("missing.txt", 404),
        ("", 403),
        (".", 403),
        ("..", 403),
        ("../secret.txt", 403),
        ("sub/../../secret.txt", 403),
        ("/etc/passwd", 403),
        ("link", 403),
        ("a%00b", 403),
    ],
)
def test_file_wrapper_refuses_paths_outside(files_dir: Path, path: str, code: int) -> None:
    (files_dir.parent / "secret.txt").write_text("secret")
    (files_dir / "link").symlink_to(files_dir.parent / "secret.txt")
    result = call("/file_wrapper/", f"path={quote(path, safe='%')}")
    assert result.code == code
    assert b"secret" not in result.body


def test_file_wrapper_without_files_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FILES_DIR_ENV, raising=False)
    result = call("/file_wrapper/", "path=x")
    assert result.code == 500
    assert FILES_DIR_ENV.encode() in result.body


def test_raises_before_start_response() -> None:
    result = Result()
    with pytest.raises(raises.AppError, match="before start_response"):
        router.application(make_environ("/raises/", "when=before"), start(result))
    assert result.start_calls == 0


def test_raises_after_first_chunk() -> None:
    result = Result()
    iterable = router.application(make_environ("/raises/", "when=after"), start(result))
    try:
        iterator = iter(iterable)
        assert next(iterator) == raises.FIRST_CHUNK
        assert result.code == 200
        with pytest.raises(raises.AppError, match="after the first chunk"):
            next(iterator)
    finally:
        close(iterable)


def test_raises_in_close() -> None:
    result = Result()
    iterable = router.application(make_environ("/raises/", "when=close"), start(result))
    assert b"".join(iterable) == raises.CLOSE_BODY
    with pytest.raises(raises.AppError, match="close"):
        close(iterable)
    assert call("/raises/", "when=never").code == 400


@pytest.mark.parametrize(("mode", "sent"), [("short", 10), ("long", 200), ("", 10)])
def test_bad_content_length(mode: str, sent: int) -> None:
    result = call("/bad_content_length/", f"mode={mode}")
    assert result.header("Content-Length") == "100"
    assert len(result.body) == sent


def test_huge_headers() -> None:
    result = call("/huge_headers/", "n=500&value_size=20")
    extra = [(k, v) for k, v in result.headers if k.startswith("X-Header-")]
    assert len(extra) == 500
    assert extra[7] == ("X-Header-00007", "value-00007vvvvvvvvv")
    assert len({k for k, _ in extra}) == 500
    assert len([h for h in call("/huge_headers/").headers if h[0].startswith("X-")]) == 100


def test_write_callable() -> None:
    result = call("/write_callable/")
    assert result.written == list(write_callable.CHUNKS)
    assert result.chunks == []
    assert result.header("Content-Length") is None


def test_late_status_calls_start_response_while_iterating() -> None:
    result = Result()
    iterable = router.application(make_environ("/late_status/"), start(result))
    try:
        assert result.start_calls == 0
        iterator = iter(iterable)
        first = next(iterator)
        assert result.status == "201 Created"
        assert first + b"".join(iterator) == b"late status\n"
    finally:
        close(iterable)


def test_closing_records_close_after_partial_iteration(files_dir: Path) -> None:
    result = Result()
    iterable = router.application(
        make_environ("/closing/", "marker=m1&n=100&size=3&delay=0.001"), start(result)
    )
    iterator = iter(iterable)
    assert next(iterator) == b"ccc"
    assert not (files_dir / "m1").exists()
    close(iterable)
    assert (files_dir / "m1").read_text() == "closed after 1 chunks\n"
    assert [p.name for p in files_dir.iterdir()] == ["m1"]


def test_closing_full_and_bad_marker(files_dir: Path) -> None:
    result = call("/closing/", "marker=m2&n=4&size=2")
    assert result.body == b"c" * 8
    assert result.header("Content-Length") is None
    assert (files_dir / "m2").read_text() == "closed after 4 chunks\n"
    assert call("/closing/", "marker=../x").code == 400
    assert call("/closing/", "marker=..").code == 400
    assert call("/closing/").code == 200


@pytest.mark.parametrize("choice", sorted(hop_by_hop.HEADERS))
def test_hop_by_hop_sets_a_hop_by_hop_header(choice: str) -> None:
    result = call("/hop_by_hop/", f"header={choice}")
    names = [name for name, _ in result.headers if is_hop_by_hop(name)]
    assert names == [hop_by_hop.HEADERS[choice][0]]


def test_hop_by_hop_default_is_connection() -> None:
    assert ("Connection", "foo") in call("/hop_by_hop/").headers


def test_hop_by_hop_value_can_be_chosen() -> None:
    result = call("/hop_by_hop/", "header=connection&value=close")
    assert ("Connection", "close") in result.headers
    assert result.body == hop_by_hop.BODY


@pytest.mark.parametrize(
    ("query", "status", "length", "body"),
    [
        pytest.param("", "204 No Content", None, b"", id="default-204"),
        pytest.param("status=304", "304 Not Modified", None, b"", id="304"),
        pytest.param("content_length=0", "204 No Content", "0", b"", id="app-length"),
        pytest.param("status=304&content_length=9&body=x", "304 Not Modified", "9", b"x", id="all"),
    ],
)
def test_no_content(query: str, status: str, length: str | None, body: bytes) -> None:
    result = call("/no_content/", query)
    assert result.status == status
    assert result.header("Content-Length") == length
    assert result.header("ETag") == '"v1"'
    assert result.body == body


def test_no_content_refuses_other_statuses() -> None:
    assert call("/no_content/", "status=200").code == 400


def test_no_start_response() -> None:
    result = Result()
    iterable = router.application(make_environ("/no_start_response/"), start(result))
    assert list(iterable) == [b"x"]
    assert result.start_calls == 0
