"""Tests of the demo catalog's views through Django's test client.

Run with ``python manage.py test catalog`` from the testproject directory. No
collectstatic is needed: the pages are rendered with the plain (non-manifest)
static files storage, and MEDIA_ROOT points at a temporary directory.
"""

# This is a Django (unittest) TestCase module: its assertion methods report the
# compared values, which bare asserts would not under the unittest runner.
# ruff: noqa: PT009

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from decimal import Decimal
from io import StringIO
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client, TestCase, override_settings
from django.urls import reverse

from .models import ContactMessage, Item
from .views import MAX_SIZED_DOWNLOAD

PLAIN_STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


@override_settings(STORAGES=PLAIN_STORAGES)
class CatalogTestCase(TestCase):
    """Base class: pages render with the plain static storage (no manifest needed)."""


def pattern(size: int) -> bytes:
    block = bytes(range(256))
    return (block * (size // 256 + 1))[:size]


class MediaRootMixin:
    """Point MEDIA_ROOT at a fresh temporary directory for each test."""

    media_root: Path

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        self.media_root = Path(tempfile.mkdtemp(prefix="catalog-media-"))
        self.addCleanup(shutil.rmtree, self.media_root, ignore_errors=True)  # type: ignore[attr-defined]
        media_override = override_settings(MEDIA_ROOT=str(self.media_root))
        media_override.enable()
        self.addCleanup(media_override.disable)  # type: ignore[attr-defined]


class PageTests(CatalogTestCase):
    def test_sample_items_from_data_migration(self) -> None:
        self.assertEqual(Item.objects.count(), 25)

    def test_home_links_everything(self) -> None:
        response = self.client.get("/")
        self.assertEqual(response.status_code, 200)
        self.assertTemplateUsed(response, "base.html")
        for name in ["item_list", "contact", "upload", "json", "api_items", "hello", "stream"]:
            self.assertContains(response, reverse(name))
        self.assertContains(response, "/static/css/site.css")
        self.assertContains(response, "/static/js/site.js")
        self.assertContains(response, "/static/img/logo.svg")

    def test_item_list_paginates(self) -> None:
        response = self.client.get("/items/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(len(response.context["items"]), 10)
        self.assertContains(response, "Page 1 of 3")
        last = self.client.get("/items/", {"page": 3})
        self.assertEqual(len(last.context["items"]), 5)
        self.assertEqual(self.client.get("/items/", {"page": 4}).status_code, 404)
        self.assertEqual(self.client.get("/items/", {"page": "last"}).status_code, 200)

    def test_item_detail(self) -> None:
        item = Item.objects.create(
            name="Test widget", slug="test-widget", price=Decimal("9.50"), description="Shiny"
        )
        response = self.client.get(f"/items/{item.pk}/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Test widget")
        self.assertContains(response, "9.50")
        self.assertEqual(self.client.get("/items/999999/").status_code, 404)

    def test_404_page_uses_project_template(self) -> None:
        response = self.client.get("/no-such-page/")
        self.assertEqual(response.status_code, 404)
        self.assertContains(response, "Page not found", status_code=404)

    def test_template_db_does_one_query(self) -> None:
        with self.assertNumQueries(1):
            response = self.client.get("/template-db/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(len(response.context["items"]), 10)

    def test_contact_get_shows_form_with_csrf(self) -> None:
        response = self.client.get("/contact/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "csrfmiddlewaretoken")
        self.assertContains(response, 'name="email"')

    def test_contact_valid_post_saves_and_redirects_303(self) -> None:
        response = self.client.post(
            "/contact/", {"name": "Ada", "email": "ada@example.com", "message": "Hello"}
        )
        self.assertEqual(response.status_code, 303)
        self.assertEqual(response["Location"], "/contact/thanks/")
        message = ContactMessage.objects.get()
        self.assertEqual(
            (message.name, message.email, message.message), ("Ada", "ada@example.com", "Hello")
        )
        self.assertEqual(self.client.get("/contact/thanks/").status_code, 200)

    def test_contact_invalid_post_rerenders_with_errors(self) -> None:
        response = self.client.post("/contact/", {"name": "", "email": "nope", "message": ""})
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "errorlist")
        self.assertFalse(ContactMessage.objects.exists())

    def test_contact_post_without_csrf_token_is_rejected(self) -> None:
        client = Client(enforce_csrf_checks=True)
        response = client.post(
            "/contact/", {"name": "Ada", "email": "ada@example.com", "message": "Hello"}
        )
        self.assertEqual(response.status_code, 403)
        self.assertFalse(ContactMessage.objects.exists())

    def test_contact_post_with_csrf_token(self) -> None:
        client = Client(enforce_csrf_checks=True)
        token = client.get("/contact/").context["csrf_token"]
        response = client.post(
            "/contact/",
            {
                "name": "Ada",
                "email": "ada@example.com",
                "message": "Hi",
                "csrfmiddlewaretoken": token,
            },
        )
        self.assertEqual(response.status_code, 303)

    def test_admin_login_and_changelists(self) -> None:
        self.assertEqual(self.client.get("/admin/").status_code, 302)
        call_command("createdemouser", password="pw-for-tests", stdout=StringIO())
        self.assertTrue(self.client.login(username="admin", password="pw-for-tests"))
        for path in ["/admin/", "/admin/catalog/item/", "/admin/catalog/contactmessage/"]:
            self.assertEqual(self.client.get(path).status_code, 200, path)


class CreateDemoUserTests(CatalogTestCase):
    def test_is_idempotent(self) -> None:
        call_command("createdemouser", stdout=StringIO())
        call_command("createdemouser", password="other", stdout=StringIO())
        user = get_user_model().objects.get(username="admin")
        self.assertTrue(user.is_superuser and user.is_staff)
        self.assertTrue(user.check_password("other"))
        self.assertEqual(get_user_model().objects.count(), 1)


class ApiTests(CatalogTestCase):
    def test_json_hello_without_database(self) -> None:
        with self.assertNumQueries(0):
            response = self.client.get("/json")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], "application/json")
        self.assertEqual(response.json(), {"message": "Hello, World!"})

    def test_api_items(self) -> None:
        response = self.client.get("/api/items/")
        self.assertEqual(response.status_code, 200)
        data = response.json()
        self.assertEqual(data["count"], 25)
        self.assertEqual(len(data["items"]), 25)
        self.assertEqual(data["items"][0]["url"], f"/items/{data['items'][0]['id']}/")

    def test_hello(self) -> None:
        response = self.client.get("/hello")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content, b"Hello, World!")
        self.assertTrue(response["Content-Type"].startswith("text/plain"))

    def test_echo(self) -> None:
        body = b"x" * 1000
        response = self.client.post(
            "/echo/?a=1&b=2",
            data=body,
            content_type="application/octet-stream",
            HTTP_X_CUSTOM="yes",
        )
        self.assertEqual(response.status_code, 200)
        data = response.json()
        self.assertEqual(data["method"], "POST")
        self.assertEqual(data["path"], "/echo/")
        self.assertEqual(data["query_string"], "a=1&b=2")
        self.assertEqual(data["headers"]["X-Custom"], "yes")
        self.assertEqual(data["body_length"], 1000)
        self.assertEqual(data["body_sha256"], hashlib.sha256(body).hexdigest())
        self.assertFalse(data["is_secure"])
        self.assertEqual(data["remote_addr"], "127.0.0.1")
        self.assertEqual(data["script_name"], "")

    def test_echo_is_csrf_exempt_and_accepts_any_method(self) -> None:
        client = Client(enforce_csrf_checks=True)
        for method in ["get", "post", "put", "patch", "delete", "options"]:
            response = getattr(client, method)("/echo/")
            self.assertEqual(response.status_code, 200, method)
            self.assertEqual(response.json()["method"], method.upper())

    def test_echo_large_body_is_not_limited_by_data_upload_max_memory_size(self) -> None:
        body = b"y" * (3 * 1024 * 1024)
        response = self.client.put("/echo/", data=body, content_type="application/octet-stream")
        self.assertEqual(response.json()["body_length"], len(body))


class StreamingAndTimingTests(CatalogTestCase):
    def test_stream_default(self) -> None:
        response = self.client.get("/stream/")
        self.assertTrue(response.streaming)
        self.assertEqual(
            b"".join(response.streaming_content),
            b"".join(f"line {n}\n".encode() for n in range(1, 11)),
        )

    def test_stream_count_and_delay(self) -> None:
        response = self.client.get("/stream/", {"n": 3, "delay": "0.01"})
        self.assertEqual(b"".join(response.streaming_content), b"line 1\nline 2\nline 3\n")

    def test_stream_count_is_capped(self) -> None:
        response = self.client.get("/stream/", {"n": 10**9})
        lines = b"".join(response.streaming_content).splitlines()
        self.assertEqual(len(lines), 10_000)

    def test_stream_bad_parameters(self) -> None:
        for query in [{"n": "x"}, {"n": -1}, {"delay": "nan"}, {"delay": "soon"}]:
            self.assertEqual(self.client.get("/stream/", query).status_code, 400, query)

    def test_sleep(self) -> None:
        response = self.client.get("/sleep/", {"s": "0.01"})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content, b"slept 0.01")
        self.assertEqual(self.client.get("/sleep/", {"s": "inf"}).status_code, 400)

    def test_boom_returns_500(self) -> None:
        client = Client(raise_request_exception=False)
        response = client.get("/boom/")
        self.assertEqual(response.status_code, 500)
        self.assertContains(response, "Server error", status_code=500)

    def test_boom_raises(self) -> None:
        with self.assertRaisesMessage(RuntimeError, "boom"):
            self.client.get("/boom/")


class UploadTests(MediaRootMixin, CatalogTestCase):
    def test_get_shows_multipart_form(self) -> None:
        response = self.client.get("/upload/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, 'enctype="multipart/form-data"')
        self.assertContains(response, "csrfmiddlewaretoken")

    def test_upload_json(self) -> None:
        content = b"some uploaded bytes\n" * 100
        response = self.client.post(
            "/upload/?format=json", {"file": SimpleUploadedFile("report 1.txt", content)}
        )
        self.assertEqual(response.status_code, 201)
        data = response.json()
        self.assertEqual(data["size"], len(content))
        self.assertEqual(data["sha256"], hashlib.sha256(content).hexdigest())
        self.assertTrue(data["name"].startswith("uploads/"))
        stored = self.media_root / data["name"]
        self.assertEqual(stored.read_bytes(), content)

    def test_upload_html(self) -> None:
        content = b"\x00\x01binary\xff" * 10
        response = self.client.post("/upload/", {"file": SimpleUploadedFile("data.bin", content)})
        self.assertEqual(response.status_code, 201)
        self.assertContains(response, hashlib.sha256(content).hexdigest(), status_code=201)
        self.assertContains(response, "uploads/data", status_code=201)

    def test_same_name_twice_gets_distinct_names(self) -> None:
        names = {
            self.client.post(
                "/upload/?format=json", {"file": SimpleUploadedFile("same.txt", data)}
            ).json()["name"]
            for data in [b"one", b"two"]
        }
        self.assertEqual(len(names), 2)

    def test_missing_file(self) -> None:
        self.assertEqual(self.client.post("/upload/?format=json", {}).status_code, 400)
        response = self.client.post("/upload/", {})
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "errorlist")

    def test_upload_requires_csrf_token(self) -> None:
        client = Client(enforce_csrf_checks=True)
        response = client.post("/upload/", {"file": SimpleUploadedFile("a.txt", b"a")})
        self.assertEqual(response.status_code, 403)


class DownloadTests(MediaRootMixin, CatalogTestCase):
    def fetch(self, path: str) -> tuple[int, dict[str, str], bytes]:
        response = self.client.get(path)
        try:
            body = b"".join(response.streaming_content) if response.streaming else response.content
            return response.status_code, dict(response.headers), body
        finally:
            response.close()

    def test_download_existing_file(self) -> None:
        downloads = self.media_root / "downloads"
        downloads.mkdir()
        (downloads / "report-1.txt").write_bytes(b"report contents")
        status, headers, body = self.fetch("/download/report-1.txt")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"report contents")
        self.assertEqual(headers["Content-Length"], "15")
        self.assertIn("attachment", headers["Content-Disposition"])
        self.assertIn("report-1.txt", headers["Content-Disposition"])

    def test_download_missing_or_unsafe_names(self) -> None:
        (self.media_root / "secret.txt").write_text("TOP-SECRET-CONTENT")
        (self.media_root / "downloads").mkdir()
        for path in [
            "/download/missing.txt",
            "/download/..",
            "/download/.",
            "/download/%2e%2e",
            "/download/..%2fsecret.txt",
            "/download/a%20b",
            "/download/%00",
        ]:
            status, _, body = self.fetch(path)
            self.assertEqual(status, 404, path)
            self.assertNotIn(b"TOP-SECRET-CONTENT", body)

    def test_download_sized(self) -> None:
        for size in [0, 1, 255, 256, 65536, 70000]:
            status, headers, body = self.fetch(f"/download-sized/{size}")
            self.assertEqual(status, 200, size)
            self.assertEqual(len(body), size)
            self.assertEqual(body, pattern(size))
            self.assertEqual(headers["Content-Length"], str(size))
            self.assertIn(f"sized-{size}.bin", headers["Content-Disposition"])
            stored = self.media_root / "downloads" / f"sized-{size}.bin"
            self.assertEqual(stored.stat().st_size, size)
        # No temporary files are left behind, and the file is reused.
        self.assertEqual(
            sorted(p.name for p in (self.media_root / "downloads").iterdir()),
            sorted(f"sized-{size}.bin" for size in [0, 1, 255, 256, 65536, 70000]),
        )
        status, _, body = self.fetch("/download-sized/70000")
        self.assertEqual((status, body), (200, pattern(70000)))
        status, _, body = self.fetch("/download/sized-256.bin")
        self.assertEqual((status, body), (200, bytes(range(256))))

    def test_download_sized_limit(self) -> None:
        status, _, _ = self.fetch(f"/download-sized/{MAX_SIZED_DOWNLOAD + 1}")
        self.assertEqual(status, 400)
        self.assertFalse((self.media_root / "downloads").exists())


class JsonEncodingTests(CatalogTestCase):
    def test_api_items_prices_are_strings(self) -> None:
        data = json.loads(self.client.get("/api/items/").content)
        self.assertTrue(all(isinstance(item["price"], str) for item in data["items"]))
