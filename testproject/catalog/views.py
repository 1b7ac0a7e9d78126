"""Views of the demo catalog.

Besides an ordinary list/detail/form application, this module has a handful of
endpoints that the django-wsgiserve test suite and benchmarks exercise:
streaming, sleeping, uploads, ``wsgi.file_wrapper`` downloads, errors and a
request echo. Everything works with ``DEBUG = False``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import (
    FileResponse,
    Http404,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import DetailView, ListView, TemplateView

from .forms import ContactForm, UploadForm
from .models import Item

if TYPE_CHECKING:
    from collections.abc import Iterator

    from django.http import HttpRequest

MAX_STREAM_LINES = 10_000
MAX_STREAM_DELAY = 1.0
MAX_SLEEP = 120.0
MAX_SIZED_DOWNLOAD = 200 * 1024 * 1024
READ_CHUNK = 64 * 1024
SAFE_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
# 64 KiB of the repeating pattern bytes(range(256)); 65536 is a multiple of 256,
# so consecutive blocks continue the pattern seamlessly.
PATTERN_BLOCK = bytes(range(256)) * (READ_CHUNK // 256)


class HttpResponseSeeOther(HttpResponseRedirect):
    status_code = 303


class BadParameterError(ValueError):
    pass


def _float_param(request: HttpRequest, name: str, default: float, maximum: float) -> float:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadParameterError(f"{name} must be a number") from None
    if not math.isfinite(value) or value < 0:
        raise BadParameterError(f"{name} must be a finite number >= 0")
    return min(value, maximum)


def _int_param(request: HttpRequest, name: str, default: int, maximum: int) -> int:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameterError(f"{name} must be an integer") from None
    if value < 0:
        raise BadParameterError(f"{name} must be >= 0")
    return min(value, maximum)


def _downloads_dir() -> Path:
    return Path(settings.MEDIA_ROOT) / "downloads"


# --- ordinary pages -------------------------------------------------------------------


class HomeView(TemplateView):
    template_name = "catalog/home.html"

    def get_context_data(self, **kwargs: object) -> dict[str, object]:
        context = super().get_context_data(**kwargs)
        context["first_item_pk"] = Item.objects.values_list("pk", flat=True).first()
        return context


class ItemListView(ListView):
    model = Item
    paginate_by = 10
    context_object_name = "items"
    template_name = "catalog/item_list.html"


class ItemDetailView(DetailView):
    model = Item
    context_object_name = "item"
    template_name = "catalog/item_detail.html"


def template_db(request: HttpRequest) -> HttpResponse:
    """A template page backed by exactly one database query (benchmarks)."""
    items = list(Item.objects.all()[:10])
    return render(request, "catalog/template_db.html", {"items": items})


def contact(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = ContactForm(request.POST)
        if form.is_valid():
            form.save()
            return HttpResponseSeeOther(reverse("contact_thanks"))
    else:
        form = ContactForm()
    return render(request, "catalog/contact.html", {"form": form})


def contact_thanks(request: HttpRequest) -> HttpResponse:
    return render(request, "catalog/contact_thanks.html")


# --- JSON -----------------------------------------------------------------------------


def json_hello(request: HttpRequest) -> JsonResponse:
    """No database access: the classic JSON benchmark."""
    return JsonResponse({"message": "Hello, World!"})


def api_items(request: HttpRequest) -> JsonResponse:
    items = [
        {
            "id": item["id"],
            "name": item["name"],
            "slug": item["slug"],
            "price": str(item["price"]),
            "in_stock": item["in_stock"],
            "url": reverse("item_detail", kwargs={"pk": item["id"]}),
        }
        for item in Item.objects.values("id", "name", "slug", "price", "in_stock")
    ]
    return JsonResponse({"count": len(items), "items": items})


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello, World!", content_type="text/plain; charset=utf-8")


# --- uploads and downloads ------------------------------------------------------------


def upload(request: HttpRequest) -> HttpResponse:
    want_json = request.GET.get("format") == "json"
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            uploaded = form.cleaned_data["file"]
            safe_name = default_storage.get_valid_name(os.path.basename(uploaded.name))
            stored_name = default_storage.save(f"uploads/{safe_name}", uploaded)
            digest = hashlib.sha256()
            size = 0
            with default_storage.open(stored_name, "rb") as stored:
                for chunk in stored.chunks(READ_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
            result = {
                "name": stored_name,
                "original_name": uploaded.name,
                "size": size,
                "sha256": digest.hexdigest(),
            }
            if want_json:
                return JsonResponse(result, status=201)
            return render(request, "catalog/upload_done.html", {"result": result}, status=201)
        if want_json:
            return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    else:
        form = UploadForm()
    return render(request, "catalog/upload.html", {"form": form})


def download(request: HttpRequest, name: str) -> FileResponse:
    if not SAFE_NAME_RE.fullmatch(name) or name.strip(".") == "":
        raise Http404("invalid file name")
    path = _downloads_dir() / name
    if not path.is_file():
        raise Http404("no such file")
    return FileResponse(path.open("rb"), as_attachment=True)


def _ensure_sized_file(size: int) -> Path:
    """Create ``downloads/sized-<size>.bin`` once, atomically (temp file + os.replace)."""
    directory = _downloads_dir()
    path = directory / f"sized-{size}.bin"
    if path.is_file() and path.stat().st_size == size:
        return path
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".sized-{size}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            full_blocks, remainder = divmod(size, len(PATTERN_BLOCK))
            for _ in range(full_blocks):
                tmp.write(PATTERN_BLOCK)
            tmp.write(PATTERN_BLOCK[:remainder])
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return path


def download_sized(request: HttpRequest, size: int) -> HttpResponse:
    if size > MAX_SIZED_DOWNLOAD:
        return HttpResponseBadRequest(
            f"size must be at most {MAX_SIZED_DOWNLOAD} bytes",
            content_type="text/plain; charset=utf-8",
        )
    path = _ensure_sized_file(size)
    return FileResponse(path.open("rb"), as_attachment=True)


# --- streaming, sleeping, errors ------------------------------------------------------


def stream(request: HttpRequest) -> HttpResponse:
    try:
        count = _int_param(request, "n", 10, MAX_STREAM_LINES)
        delay = _float_param(request, "delay", 0.0, MAX_STREAM_DELAY)
    except BadParameterError as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")

    def lines() -> Iterator[bytes]:
        for number in range(1, count + 1):
            if delay and number > 1:
                time.sleep(delay)
            yield f"line {number}\n".encode()

    return StreamingHttpResponse(lines(), content_type="text/plain; charset=utf-8")


def sleep(request: HttpRequest) -> HttpResponse:
    try:
        seconds = _float_param(request, "s", 1.0, MAX_SLEEP)
    except BadParameterError as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    time.sleep(seconds)
    return HttpResponse(f"slept {seconds:g}", content_type="text/plain; charset=utf-8")


def server_stats(request: HttpRequest) -> JsonResponse:
    """The serving worker's counters (django-wsgiserve's ``environ["wsgiserve.stats"]``), only
    when TESTPROJECT_SERVER_STATS is "1": the test suite checks that files went by sendfile."""
    stats = request.META.get("wsgiserve.stats")
    if os.environ.get("TESTPROJECT_SERVER_STATS") != "1" or stats is None:
        raise Http404("no server statistics")
    return JsonResponse({"pid": os.getpid(), **stats.as_dict()})


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


@csrf_exempt
def echo(request: HttpRequest) -> JsonResponse:
    """Describe the request as Django saw it. The body is read in chunks, so it is
    not subject to DATA_UPLOAD_MAX_MEMORY_SIZE and may be large."""
    digest = hashlib.sha256()
    length = 0
    while chunk := request.read(READ_CHUNK):
        digest.update(chunk)
        length += len(chunk)
    return JsonResponse(
        {
            "method": request.method,
            "path": request.path,
            "path_info": request.path_info,
            "query_string": request.META.get("QUERY_STRING", ""),
            "headers": dict(request.headers),
            "content_type": request.META.get("CONTENT_TYPE", ""),
            "content_length": request.META.get("CONTENT_LENGTH", ""),
            "body_length": length,
            "body_sha256": digest.hexdigest(),
            "is_secure": request.is_secure(),
            "scheme": request.scheme,
            "host": request.get_host(),
            "remote_addr": request.META.get("REMOTE_ADDR"),
            "script_name": request.META.get("SCRIPT_NAME", ""),
        }
    )
