"""Helpers shared by the plain-WSGI test applications (no Django involved)."""

from __future__ import annotations

import math
import os
import re
import tempfile
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

#: Directory the file-serving and marker-writing apps are confined to.
FILES_DIR_ENV = "WSGISERVE_TEST_FILES_DIR"

BLOCK_SIZE = 64 * 1024
#: 64 KiB of the repeating pattern ``bytes(range(256))``; as 65536 is a multiple
#: of 256, consecutive blocks continue the pattern seamlessly.
PATTERN_BLOCK = bytes(range(256)) * (BLOCK_SIZE // 256)

SAFE_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")


class BadRequestError(ValueError):
    """A query parameter is malformed; answered with 400."""


def pattern_bytes(size: int, offset: int = 0) -> bytes:
    """``size`` bytes of the repeating ``bytes(range(256))`` pattern, from ``offset``."""
    start = offset % 256
    return (bytes(range(256)) * ((start + size) // 256 + 1))[start : start + size]


def query(environ: WSGIEnvironment) -> dict[str, str]:
    """The query string as a dict (last value wins)."""
    parsed = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {key: values[-1] for key, values in parsed.items()}


def int_param(params: dict[str, str], name: str, default: int, maximum: int | None = None) -> int:
    raw = params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise BadRequestError(f"{name} must be >= 0, got {value}")
    if maximum is not None:
        value = min(value, maximum)
    return value


def float_param(params: dict[str, str], name: str, default: float, maximum: float) -> float:
    raw = params.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequestError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise BadRequestError(f"{name} must be a finite number >= 0, got {raw!r}")
    return min(value, maximum)


def simple_response(
    start_response: StartResponse,
    status: str,
    body: bytes | str,
    content_type: str = "text/plain; charset=utf-8",
    extra_headers: list[tuple[str, str]] | None = None,
) -> Iterable[bytes]:
    """Start a response with Content-Type and Content-Length and return its body."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    headers.extend(extra_headers or [])
    start_response(status, headers)
    return [body]


def bad_request(start_response: StartResponse, error: Exception) -> Iterable[bytes]:
    return simple_response(start_response, "400 Bad Request", f"{error}\n")


def files_dir() -> str | None:
    """The confinement directory from WSGISERVE_TEST_FILES_DIR (resolved), if set."""
    value = os.environ.get(FILES_DIR_ENV)
    return os.path.realpath(value) if value else None


def marker_dir() -> str:
    return files_dir() or tempfile.gettempdir()
