"""Serve a file through ``environ["wsgi.file_wrapper"]`` (never wrapped in the validator).

``?path=`` names a file relative to the directory in the environment variable
WSGISERVE_TEST_FILES_DIR; anything resolving outside that directory is refused
(403). ``?offset=`` seeks before wrapping (Content-Length is then size - offset),
``?block=`` sets the wrapper's block size (default 8192), ``?nolength=1`` omits
Content-Length. Without a ``wsgi.file_wrapper`` in the environ,
``wsgiref.util.FileWrapper`` is used.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from wsgiref.util import FileWrapper

from ._util import (
    FILES_DIR_ENV,
    BadRequestError,
    bad_request,
    files_dir,
    int_param,
    query,
    simple_response,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

DEFAULT_BLOCK_SIZE = 8192


def resolve(base: str, relative: str) -> str | None:
    """The real path of ``relative`` under ``base``, or None if it escapes ``base``."""
    candidate = os.path.realpath(os.path.join(base, relative))
    if candidate == base or os.path.commonpath([base, candidate]) != base:
        return None
    return candidate


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    base = files_dir()
    if base is None:
        return simple_response(
            start_response, "500 Internal Server Error", f"{FILES_DIR_ENV} is not set\n"
        )
    params = query(environ)
    try:
        offset = int_param(params, "offset", 0)
        block_size = int_param(params, "block", DEFAULT_BLOCK_SIZE) or DEFAULT_BLOCK_SIZE
    except BadRequestError as exc:
        return bad_request(start_response, exc)
    relative = params.get("path", "")
    path = resolve(base, relative) if relative and "\x00" not in relative else None
    if path is None:
        return simple_response(start_response, "403 Forbidden", "path outside files dir\n")
    if not os.path.isfile(path):
        return simple_response(start_response, "404 Not Found", "no such file\n")

    f = open(path, "rb")  # noqa: SIM115 - closed by the file wrapper's close()
    try:
        size = os.fstat(f.fileno()).st_size
        if offset > size:
            f.close()
            return bad_request(start_response, BadRequestError(f"offset {offset} > size {size}"))
        f.seek(offset)
        headers = [("Content-Type", "application/octet-stream")]
        if params.get("nolength") != "1":
            headers.append(("Content-Length", str(size - offset)))
        start_response("200 OK", headers)
        wrapper = environ.get("wsgi.file_wrapper", FileWrapper)
        return wrapper(f, block_size)  # type: ignore[no-any-return]
    except BaseException:
        f.close()
        raise
