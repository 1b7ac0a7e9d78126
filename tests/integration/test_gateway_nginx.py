"""testproject behind a real nginx speaking uwsgi (``uwsgi_pass``) and FastCGI
(``fastcgi_pass``, with and without ``fastcgi_keep_conn on``) to a real ``manage.py serve``
whose listener is declared with a BIND prefix (``uwsgi:unix:...``, ``fastcgi:unix:...``), and
with systemd's ``FileDescriptorName=`` (LISTEN_FDNAMES) for one of them. nginx's stock
``uwsgi_params`` and ``fastcgi_params`` are included unchanged; and ``uwsgi_modifier1 30`` for
an application mounted under a prefix."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from typing import TYPE_CHECKING

import pytest

from tests.integration.test_testproject import PROJECT, Browser, project_env
from tests.nginx import NginxProxy, nginx_missing_reason

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.live import LiveServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(nginx_missing_reason() is not None, reason=str(nginx_missing_reason())),
]

__all__ = ["project_env"]  # the fixture, shared with test_testproject


class Front:
    """nginx's listening socket, for ``Browser``."""

    def __init__(self, address: str) -> None:
        self.address = address

    def connect(self, timeout: float = 30.0) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(self.address)
        return sock


@pytest.fixture(scope="module", params=["uwsgi", "fastcgi", "fastcgi-keep"])
def front(
    request: pytest.FixtureRequest,
    start_server: Callable[..., LiveServer],
    project_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Front]:
    protocol = request.param
    directory: Path = tmp_path_factory.mktemp(protocol)
    app_socket = str(directory / "app.sock")
    scheme = protocol.partition("-")[0]
    start_server(
        "--threads",
        "4",
        "--bind",
        f"{scheme}:unix:{app_socket}",
        settings="testproject.settings",
        cwd=PROJECT,
        manage=["manage.py"],
        env=project_env,
        binds_itself=True,
    )
    with NginxProxy(directory / "nginx", app_socket, protocol=protocol) as nginx:
        yield Front(nginx.address)


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        pytest.param("/", b"<html", id="home"),
        pytest.param("/items/1/", b"<html", id="detail"),
        pytest.param("/json", b"Hello, World!", id="json"),
        pytest.param("/api/items/", b"[", id="api"),
    ],
)
def test_pages(front: Front, path: str, needle: bytes) -> None:
    response = Browser(front).request("GET", path)  # type: ignore[arg-type]
    assert response.status == 200
    assert needle in response.body


def test_head_has_headers_and_no_body(front: Front) -> None:
    response = Browser(front).request("HEAD", "/json")  # type: ignore[arg-type]
    assert response.status == 200
    assert response.body == b""


def test_errors_pass_through(front: Front) -> None:
    browser = Browser(front)  # type: ignore[arg-type]
    assert browser.request("GET", "/items/99999/").status == 404
    assert browser.request("GET", "/boom/").status == 500


def test_admin_login_with_csrf(front: Front) -> None:
    browser = Browser(front)  # type: ignore[arg-type]
    response = browser.post_form(
        "/admin/login/?next=/admin/", {"username": "admin", "password": "admin", "next": "/admin/"}
    )
    assert response.status == 302
    assert response.header("location") == "/admin/"
    index = browser.request("GET", "/admin/")
    assert index.status == 200
    assert b"Site administration" in index.body


def test_multipart_upload(front: Front) -> None:
    browser = Browser(front)  # type: ignore[arg-type]
    content = os.urandom(1_000_000)
    response = browser.upload(content)
    assert response.status in (200, 201)
    stored = json.loads(response.body)
    assert stored["size"] == len(content)
    assert stored["sha256"] == hashlib.sha256(content).hexdigest()


def test_large_file_response(front: Front) -> None:
    # 50 MB: past every buffer on the way, nginx's temporary file included.
    size = 50_000_000
    response = Browser(front).request("GET", f"/download-sized/{size}")  # type: ignore[arg-type]
    assert response.status == 200
    assert response.header("content-length") == str(size)
    expected = (bytes(range(256)) * (size // 256 + 1))[:size]
    assert hashlib.sha256(response.body).digest() == hashlib.sha256(expected).digest()


def test_streaming_response(front: Front) -> None:
    response = Browser(front).request("GET", "/stream/?n=5")  # type: ignore[arg-type]
    assert response.status == 200
    assert response.body == b"".join(b"line %d\n" % n for n in range(1, 6))


def test_static_file_from_the_loop(front: Front) -> None:
    browser = Browser(front)  # type: ignore[arg-type]
    page = browser.request("GET", "/")
    match = re.search(rb"/static/css/site\.[0-9a-f]{12}\.css", page.body)
    assert match
    css = browser.request("GET", match.group(0).decode())
    assert css.status == 200
    assert css.body
    assert css.header("cache-control")
    again = browser.request("GET", match.group(0).decode(), headers={"If-None-Match": "*"})
    assert again.status in (200, 304)


def test_many_requests_in_turn(front: Front) -> None:
    # With fastcgi_keep_conn, these reuse nginx's cached upstream connections.
    browser = Browser(front)  # type: ignore[arg-type]
    for _ in range(20):
        assert browser.request("GET", "/json").status == 200


def test_uwsgi_modifier1_30_mounts_the_application_under_script_name(
    start_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """nginx ``uwsgi_param SCRIPT_NAME /myapp; uwsgi_modifier1 30;``, as old uWSGI
    deployments mounted under a prefix have it: the server takes SCRIPT_NAME off PATH_INFO."""
    app_socket = str(tmp_path / "app.sock")
    start_server("--threads", "2", "--bind", f"uwsgi:unix:{app_socket}", binds_itself=True)
    with NginxProxy(tmp_path / "nginx", app_socket, protocol="uwsgi-modifier1-30") as nginx:
        browser = Browser(Front(nginx.address))  # type: ignore[arg-type]
        response = browser.request("GET", "/myapp/echo/a%20b?x=1")
        error_log = nginx.error_log()
    assert response.status == 200, error_log
    echoed = json.loads(response.body)
    assert echoed["script_name"] == "/myapp"
    assert echoed["path"] == "/echo/a b"
    assert echoed["query_string"] == "x=1"
