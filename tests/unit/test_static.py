"""django_wsgiserve.static: the table built from whitenoise, lookups, and the security headers."""

from __future__ import annotations

import gzip
import os
from typing import TYPE_CHECKING

import pytest
from django.test import override_settings
from whitenoise.base import WhiteNoise

from django_wsgiserve import static as static_module
from django_wsgiserve.http.events import Request
from django_wsgiserve.static import StaticTable, build_static_table, security_headers

if TYPE_CHECKING:
    from pathlib import Path

SECURITY = "django.middleware.security.SecurityMiddleware"


def make_request(path: bytes, method: bytes = b"GET", headers=()) -> Request:
    return Request(
        method=method,
        target=path,
        path=path,
        query=b"",
        http_version=b"1.1",
        headers=tuple(headers),
        content_length=None,
        is_chunked=False,
        keep_alive=True,
        expect_continue=False,
        host=b"t",
    )


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    static, media = tmp_path / "static", tmp_path / "media"
    (static / "css").mkdir(parents=True)
    (static / "css" / "a b.css").write_text("body {}\n")
    (static / "app.js").write_text("x = 1;\n" * 100)
    media.mkdir()
    (media / "upload.txt").write_text("uploaded\n")
    (tmp_path / "secret.txt").write_text("secret\n")
    return {"static": static, "media": media}


def table_for(roots, *, script_name: str = "", settings=None) -> StaticTable:
    static = WhiteNoise(None, max_age=60)
    static.add_files(str(roots["static"]), prefix="/static/")
    media = WhiteNoise(None, autorefresh=True, max_age=60)
    media.add_files(str(roots["media"]), prefix="/media/")
    return StaticTable(
        static=static,
        media=media,
        media_prefix="/media/",
        script_name=script_name,
        settings=settings,
    )


@pytest.mark.parametrize(
    ("path", "found"),
    [
        pytest.param(b"/static/app.js", True, id="plain"),
        pytest.param(b"/static/css/a%20b.css", True, id="percent-encoded"),
        pytest.param(b"/static/%61pp.js", True, id="needlessly-encoded"),
        pytest.param(b"/static/app.js/", False, id="trailing-slash"),
        pytest.param(b"/static/../secret.txt", False, id="dotdot"),
        pytest.param(b"/static/%2e%2e/secret.txt", False, id="encoded-dotdot"),
        pytest.param(b"/static/app.js%00", False, id="nul"),
        pytest.param(b"/media/upload.txt", True, id="media"),
        pytest.param(b"/media/../secret.txt", False, id="media-dotdot"),
        pytest.param(b"/media/%2e%2e/secret.txt", False, id="media-encoded-dotdot"),
        pytest.param(b"/media/..%5csecret.txt", False, id="media-backslash"),
        pytest.param(b"/media/%00", False, id="media-nul"),
        pytest.param(b"/media//etc/passwd", False, id="media-absolute"),
        pytest.param(b"/media/", False, id="media-directory"),
        pytest.param(b"/other/app.js", False, id="elsewhere"),
    ],
)
def test_find(roots, path, found):
    assert (table_for(roots).find(path) is not None) is found


def test_script_name_is_part_of_the_url(roots):
    table = table_for(roots, script_name="/app")
    assert table.find(b"/app/static/app.js") is not None
    assert table.find(b"/app/media/upload.txt") is not None
    assert table.find(b"/static/app.js") is None
    assert table.prefixes == (b"/app/media/", b"/app/static/")


def test_respond_uses_whitenoise_rules(roots):
    table = table_for(roots)
    response = table.respond(make_request(b"/static/app.js"))
    assert response is not None
    assert (response.status, response.content_length, response.count) == ("200 OK", 700, 700)
    assert (response.file, response.body) == (None, b"x = 1;\n" * 100)  # small: in memory
    assert response.prepared is not None
    assert response.prepared.startswith(b"HTTP/1.1 200 OK\r\n")
    ranged = table.respond(make_request(b"/static/app.js", headers=[(b"range", b"bytes=10-19")]))
    assert ranged is not None
    try:
        assert (ranged.status_code, ranged.offset, ranged.count) == (206, 10, 10)
    finally:
        ranged.file.close()
    not_allowed = table.respond(make_request(b"/static/app.js", method=b"DELETE"))
    assert not_allowed is not None
    assert (not_allowed.status_code, not_allowed.file, not_allowed.content_length) == (405, None, 0)
    assert ("Allow", "GET, HEAD") in not_allowed.headers


def test_file_deleted_after_the_scan_goes_to_the_application(roots, caplog):
    table = table_for(roots)
    (roots["static"] / "app.js").unlink()
    assert table.respond(make_request(b"/static/app.js")) is None
    assert "unavailable" in caplog.text


# -- the hot path: whitenoise's headers, bodies opened once per worker ---------------------------

LARGE = bytes(range(256)) * 100  # over MEMORY_FILE_BYTES: sent from a kept descriptor


def whitenoise_table(root: Path, *, autorefresh: bool = False) -> tuple[StaticTable, WhiteNoise]:
    static = WhiteNoise(None, max_age=60, autorefresh=autorefresh)
    static.add_files(str(root), prefix="/static/")
    return StaticTable(static=static), static


def body_of(response) -> bytes:
    if response.body is not None:
        return response.body
    if response.file is not None:
        return response.file.read()
    return os.pread(response.fd, response.count, response.offset)


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        pytest.param("GET", {}, id="get"),
        pytest.param("HEAD", {}, id="head"),
        pytest.param("GET", {"accept-encoding": "gzip, br"}, id="gzip"),
        pytest.param("GET", {"accept-encoding": "*"}, id="star"),
        pytest.param("GET", {"if-none-match": "ETAG"}, id="etag-304"),
        pytest.param("GET", {"if-none-match": '"other"'}, id="other-etag-200"),
        pytest.param("GET", {"if-modified-since": "Fri, 01 Jan 2100 00:00:00 GMT"}, id="ims-304"),
        pytest.param("GET", {"if-modified-since": "Thu, 01 Jan 1970 00:00:00 GMT"}, id="ims-200"),
        pytest.param("HEAD", {"if-none-match": "ETAG"}, id="head-304"),
        pytest.param("GET", {"range": "bytes=3-9"}, id="range"),
        pytest.param("GET", {"range": "bytes=900000-"}, id="range-416"),
        pytest.param("PUT", {}, id="405"),
    ],
)
@pytest.mark.parametrize("name", ["app.js", "large.bin", "empty.txt"])
def test_hot_path_answers_exactly_like_whitenoise(tmp_path, method, headers, name):
    (tmp_path / "app.js").write_text("x = 1;\n" * 100)
    (tmp_path / "app.js.gz").write_bytes(gzip.compress(b"x = 1;\n" * 100))
    (tmp_path / "large.bin").write_bytes(LARGE)
    (tmp_path / "empty.txt").write_bytes(b"")
    table, static = whitenoise_table(tmp_path)
    static_file = static.files[f"/static/{name}"]
    headers = {key: value.replace("ETAG", static_file.etag) for key, value in headers.items()}
    environ = {f"HTTP_{key.upper().replace('-', '_')}": value for key, value in headers.items()}
    expected = static_file.get_response(method, environ)
    request = make_request(
        f"/static/{name}".encode(),
        method=method.encode(),
        headers=[(key.encode(), value.encode()) for key, value in headers.items()],
    )
    expected_body = None
    if expected.file is not None:
        expected_body = expected.file.read()
        expected.file.close()
    for _ in range(2):  # opened and kept, then from the cache
        response = table.respond(request)
        assert response is not None
        assert response.status_code == expected.status.value
        headers_sent = response.headers
        if response.content_length == 0 and expected.status.value in (405, 416):
            headers_sent = headers_sent[:-1]  # the Content-Length: 0 we add to bodiless errors
        assert headers_sent == list(expected.headers)
        if expected_body is not None:
            assert body_of(response) == expected_body
        if response.file is not None:
            response.file.close()


def test_duplicate_request_headers_are_joined_like_environ(tmp_path):
    (tmp_path / "app.js").write_text("x = 1;\n" * 100)
    (tmp_path / "app.js.gz").write_bytes(gzip.compress(b"x = 1;\n" * 100))
    table, _ = whitenoise_table(tmp_path)
    request = make_request(
        b"/static/app.js",
        headers=[(b"accept-encoding", b"identity"), (b"accept-encoding", b"gzip")],
    )
    response = table.respond(request)
    assert response is not None
    assert ("Content-Encoding", "gzip") in response.headers


def test_large_file_keeps_one_descriptor(tmp_path):
    (tmp_path / "large.bin").write_bytes(LARGE)
    table, _ = whitenoise_table(tmp_path)
    first = table.respond(make_request(b"/static/large.bin"))
    second = table.respond(make_request(b"/static/large.bin"))
    assert first is not None
    assert second is not None
    assert first.body is None
    assert first.file is None
    assert first.fd == second.fd >= 0
    assert (first.offset, first.count) == (0, len(LARGE))
    assert os.pread(first.fd, len(LARGE) + 1, 0) == LARGE


def test_changed_file_keeps_the_tables_view_without_autorefresh(tmp_path):
    """Documented choice (static.py, "Hot path"): headers from the scan, like whitenoise; the
    body as the worker first read it, so Content-Length and ETag always describe it."""
    (tmp_path / "app.js").write_text("x = 1;\n" * 100)
    (tmp_path / "large.bin").write_bytes(LARGE)
    table, _ = whitenoise_table(tmp_path)
    before = {
        name: table.respond(make_request(name))
        for name in (b"/static/app.js", b"/static/large.bin")
    }
    (tmp_path / "app.js").write_text("changed, and longer than it was\n" * 100)
    (tmp_path / "large.bin").unlink()
    (tmp_path / "large.bin").write_bytes(b"new")  # a new file, as collectstatic writes them
    for name, old in before.items():
        response = table.respond(make_request(name))
        assert response is not None
        assert old is not None
        assert response.headers == old.headers
        assert body_of(response) == body_of(old)
        assert len(body_of(response)) == response.content_length


def test_autorefresh_sees_changes(tmp_path):
    (tmp_path / "app.js").write_text("x = 1;\n")
    table, _ = whitenoise_table(tmp_path, autorefresh=True)
    first = table.respond(make_request(b"/static/app.js"))
    assert first is not None
    assert body_of(first) == b"x = 1;\n"
    first.file.close()
    (tmp_path / "app.js").write_text("x = 2; y = 3;\n")
    second = table.respond(make_request(b"/static/app.js"))
    assert second is not None
    assert (body_of(second), second.content_length) == (b"x = 2; y = 3;\n", 14)
    second.file.close()


def test_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(static_module, "MAX_CACHED_FILES", 1)
    monkeypatch.setattr(static_module, "MEMORY_BUDGET_BYTES", 0)  # small files by descriptor
    (tmp_path / "a.js").write_text("a\n")
    (tmp_path / "b.js").write_text("b\n")
    table, _ = whitenoise_table(tmp_path)
    opened = []
    real_open = os.open
    monkeypatch.setattr(static_module.os, "open", lambda *a: opened.append(a) or real_open(*a))
    for name, expected in [(b"a.js", b"a\n"), (b"b.js", b"b\n")] * 3:
        response = table.respond(make_request(b"/static/" + name))
        assert response is not None
        assert response.body is None
        assert body_of(response) == expected
    assert len(opened) == 6  # one kept at a time: each request evicted the other file
    assert len(table._bodies) == 1


@pytest.mark.parametrize(
    ("overrides", "always", "hsts"),
    [
        pytest.param({}, [("Referrer-Policy", "same-origin"),
                          ("Cross-Origin-Opener-Policy", "same-origin")], None, id="defaults"),
        pytest.param(
            {"SECURE_CONTENT_TYPE_NOSNIFF": True, "SECURE_REFERRER_POLICY": "no-referrer, origin",
             "SECURE_CROSS_ORIGIN_OPENER_POLICY": None, "SECURE_HSTS_SECONDS": 3600,
             "SECURE_HSTS_INCLUDE_SUBDOMAINS": True, "SECURE_HSTS_PRELOAD": True},
            [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer,origin")],
            ("Strict-Transport-Security", "max-age=3600; includeSubDomains; preload"),
            id="all",
        ),
        pytest.param(
            {"SECURE_REFERRER_POLICY": ["same-origin", "origin"],
             "SECURE_CROSS_ORIGIN_OPENER_POLICY": "unsafe-none"},
            [("Referrer-Policy", "same-origin,origin"),
             ("Cross-Origin-Opener-Policy", "unsafe-none")], None, id="list-policy",
        ),
    ],
)  # fmt: skip
def test_security_headers_mirror_the_middleware(settings, overrides, always, hsts):
    settings.MIDDLEWARE = [SECURITY]
    settings.SECURE_CONTENT_TYPE_NOSNIFF = False
    for name, value in overrides.items():
        setattr(settings, name, value)
    assert security_headers(settings) == (always, hsts)


def test_no_security_headers_without_the_middleware(settings):
    settings.MIDDLEWARE = []
    assert security_headers(settings) == ([], None)


def test_hsts_only_for_requests_django_considers_secure(roots, settings):
    settings.MIDDLEWARE = [SECURITY]
    settings.SECURE_HSTS_SECONDS = 60
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    table = table_for(roots, settings=settings)
    plain = table.respond(make_request(b"/static/app.js", method=b"HEAD"))
    secure = table.respond(
        make_request(b"/static/app.js", method=b"HEAD", headers=[(b"x-forwarded-proto", b"https")])
    )
    assert plain is not None
    assert secure is not None
    assert ("Strict-Transport-Security", "max-age=60") not in plain.headers
    assert ("Strict-Transport-Security", "max-age=60") in secure.headers


def test_ssl_redirect_leaves_insecure_requests_to_django(roots, settings):
    settings.MIDDLEWARE = [SECURITY]
    settings.SECURE_SSL_REDIRECT = True
    assert table_for(roots, settings=settings).respond(make_request(b"/static/app.js")) is None


def test_build_without_collected_files(tmp_path, caplog):
    with override_settings(STATIC_ROOT=str(tmp_path / "missing"), DEBUG=False):
        from django.conf import settings

        assert build_static_table(settings, serve_static=True, serve_media=False) is None
    assert "No directory at" in caplog.text
