"""A streaming response whose iterable records ``close()`` in a marker file.

``?marker=`` names the marker file ([A-Za-z0-9._-]+) created in the directory of
WSGISERVE_TEST_FILES_DIR (or the temp directory when unset) when ``close()`` is
called; it contains ``closed after N chunks``. ``?n=`` chunks (default 10) of
``?size=`` bytes (default 1024) are yielded with ``?delay=`` seconds between them,
so a test can disconnect mid-body and check that the server still called close().
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from ._util import (
    SAFE_NAME_RE,
    BadRequestError,
    bad_request,
    float_param,
    int_param,
    marker_dir,
    query,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

MAX_DELAY = 60.0
MAX_SIZE = 16 * 1024 * 1024


def marker_path(name: str) -> str:
    return os.path.join(marker_dir(), name)


class ClosingBody:
    def __init__(self, marker: str | None, count: int, size: int, delay: float) -> None:
        self.marker = marker
        self.count = count
        self.size = size
        self.delay = delay
        self.sent = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for index in range(self.count):
            if self.delay and index:
                time.sleep(self.delay)
            self.sent += 1
            yield b"c" * self.size

    def close(self) -> None:
        self.closed = True
        if self.marker is None:
            return
        # Write then rename, so a test polling for the marker never sees it half-written.
        path = marker_path(self.marker)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(f"closed after {self.sent} chunks\n")
        os.replace(tmp, path)


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    params = query(environ)
    marker = params.get("marker") or None
    try:
        if marker is not None and (not SAFE_NAME_RE.fullmatch(marker) or marker.strip(".") == ""):
            raise BadRequestError(f"bad marker name {marker!r}")
        count = int_param(params, "n", 10)
        size = int_param(params, "size", 1024, MAX_SIZE)
        delay = float_param(params, "delay", 0.0, MAX_DELAY)
    except BadRequestError as exc:
        return bad_request(start_response, exc)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return ClosingBody(marker, count, size, delay)
