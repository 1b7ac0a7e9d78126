"""testproject through a real ``manage.py serve``: pages, admin login, form POST with CSRF,
multipart upload, FileResponse download and a streaming response."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import pytest

from tests.live import REPO, LiveServer, Response, read_response

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

PROJECT = REPO / "testproject"


@pytest.fixture(scope="module")
def project_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A migrated database, collected static files and a media root, all in tmp dirs."""
    root = tmp_path_factory.mktemp("testproject")
    env = {
        "TESTPROJECT_DB": str(root / "db.sqlite3"),
        "TESTPROJECT_STATIC_ROOT": str(root / "static"),
        "TESTPROJECT_MEDIA_ROOT": str(root / "media"),
    }
    full_env = {**os.environ, **env}
    full_env.pop("DJANGO_SETTINGS_MODULE", None)
    for command in (
        ["migrate", "--noinput"],
        ["collectstatic", "--noinput", "--verbosity", "0"],
        ["createdemouser"],
    ):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=PROJECT,
            env=full_env,
            check=True,
            capture_output=True,
        )
    return env


@pytest.fixture(scope="module")
def site(start_server: Callable[..., LiveServer], project_env: dict[str, str]) -> LiveServer:
    return start_server(
        "--threads",
        "4",
        settings="testproject.settings",
        cwd=PROJECT,
        manage=["manage.py"],
        env=project_env,
    )


class Browser:
    """Just enough of a browser: cookies, and one connection per request."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Response:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        with self.server.connect() as sock:
            sock.sendall(raw)
            response = read_response(sock, method=method)
        for value in response.header_list("set-cookie"):
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return response

    def csrf_token(self, path: str) -> str:
        page = self.request("GET", path)
        assert page.status == 200
        match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body)
        assert match, page.body[:500]
        return match.group(1).decode()

    def post_form(self, path: str, fields: dict[str, str]) -> Response:
        from urllib.parse import urlencode

        body = urlencode({"csrfmiddlewaretoken": self.csrf_token(path), **fields}).encode()
        return self.request(
            "POST",
            path,
            body,
            {"Content-Type": "application/x-www-form-urlencoded", "Referer": "http://127.0.0.1/"},
        )

    def upload(self, content: bytes) -> Response:
        """POST ``content`` as a file to /upload/ (multipart/form-data, with the CSRF token)."""
        token = self.csrf_token("/upload/")
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"'
                f"\r\n\r\n{token}\r\n--{boundary}\r\nContent-Disposition: form-data; "
                f'name="file"; filename="data.bin"\r\nContent-Type: application/octet-stream'
                "\r\n\r\n"
            ).encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return self.request(
            "POST",
            "/upload/?format=json",
            body,
            {
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Referer": "http://127.0.0.1/",
            },
        )


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        pytest.param("/", b"<html", id="home"),
        pytest.param("/items/", b"/items/1/", id="list"),
        pytest.param("/items/1/", b"<html", id="detail"),
        pytest.param("/template-db/", b"<html", id="template-db"),
        pytest.param("/json", b"Hello, World!", id="json"),
        pytest.param("/api/items/", b"[", id="api"),
    ],
)
def test_pages(site: LiveServer, path: str, needle: bytes) -> None:
    response = Browser(site).request("GET", path)
    assert response.status == 200
    assert needle in response.body


def test_missing_item_is_404_and_view_error_is_500(site: LiveServer) -> None:
    browser = Browser(site)
    assert browser.request("GET", "/items/99999/").status == 404
    assert browser.request("GET", "/boom/").status == 500


def test_admin_login(site: LiveServer) -> None:
    browser = Browser(site)
    response = browser.post_form(
        "/admin/login/?next=/admin/", {"username": "admin", "password": "admin", "next": "/admin/"}
    )
    assert response.status == 302
    assert response.header("location") == "/admin/"
    index = browser.request("GET", "/admin/")
    assert index.status == 200
    assert b"Site administration" in index.body


def test_contact_form_post_with_csrf(site: LiveServer) -> None:
    browser = Browser(site)
    response = browser.post_form(
        "/contact/", {"name": "Ada", "email": "ada@example.com", "message": "Hello"}
    )
    assert response.status == 303
    assert response.header("location") == "/contact/thanks/"
    forged = Browser(site).request(
        "POST", "/contact/", b"name=x", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert forged.status == 403


def test_multipart_upload(site: LiveServer) -> None:
    browser = Browser(site)
    content = os.urandom(300_000)
    response = browser.upload(content)
    assert response.status in (200, 201)
    stored = json.loads(response.body)
    assert stored["size"] == len(content)
    assert stored["sha256"] == hashlib.sha256(content).hexdigest()


def test_file_response_download(site: LiveServer) -> None:
    size = 3_000_000
    response = Browser(site).request("GET", f"/download-sized/{size}")
    assert response.status == 200
    assert response.header("content-length") == str(size)
    assert "attachment" in (response.header("content-disposition") or "")
    assert response.body == (bytes(range(256)) * (size // 256 + 1))[:size]


def test_streaming_response(site: LiveServer) -> None:
    response = Browser(site).request("GET", "/stream/?n=5")
    assert response.status == 200
    assert response.header("transfer-encoding") == "chunked"
    assert response.body == b"".join(b"line %d\n" % n for n in range(1, 6))


def test_static_page_links_hashed_names(site: LiveServer, project_env: dict[str, str]) -> None:
    page = Browser(site).request("GET", "/")
    assert re.search(rb"/static/css/site\.[0-9a-f]{12}\.css", page.body)
