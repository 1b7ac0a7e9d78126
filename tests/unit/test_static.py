"""django_wsgiserve.static: the table built from whitenoise, lookups, and the security headers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from django.test import override_settings
from whitenoise.base import WhiteNoise

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
    try:
        assert (response.status, response.content_length, response.count) == ("200 OK", 700, 700)
        assert response.fd == response.file.fileno()
        assert response.prepared is not None
        assert response.prepared.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        response.file.close()
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
