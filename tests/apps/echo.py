"""Describe the request as the server presented it, as JSON.

The body is read from ``wsgi.input`` with ``read(n)`` in a loop (the validator
allows exactly one argument). With a CONTENT_LENGTH, exactly that many bytes
are read; without one, the body is read to EOF only when the server sets
``wsgi.input_terminated`` (otherwise it counts as empty, as PEP 3333 requires).

``body_head`` holds the first 200 bytes decoded as latin-1 (lossless: encode it
back with latin-1 to get the bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

CHUNK = 64 * 1024
HEAD_SIZE = 200

CGI_KEYS = [
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
]


def _read_body(environ: WSGIEnvironment) -> tuple[int, str, bytes]:
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    head = b""
    length = 0
    raw_length = environ.get("CONTENT_LENGTH", "")
    remaining: int | None = int(raw_length) if raw_length else None
    if remaining is None and not environ.get("wsgi.input_terminated"):
        remaining = 0
    while remaining is None or remaining > 0:
        size = CHUNK if remaining is None else min(CHUNK, remaining)
        chunk = stream.read(size)
        if not chunk:
            break
        digest.update(chunk)
        if len(head) < HEAD_SIZE:
            head += chunk[: HEAD_SIZE - len(head)]
        length += len(chunk)
        if remaining is not None:
            remaining -= len(chunk)
    return length, digest.hexdigest(), head


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    length, sha256, head = _read_body(environ)
    data: dict[str, object] = {
        "method": environ.get("REQUEST_METHOD"),
        "path": environ.get("PATH_INFO"),
        "script_name": environ.get("SCRIPT_NAME"),
        "query_string": environ.get("QUERY_STRING"),
        "headers": {key: value for key, value in environ.items() if key.startswith("HTTP_")},
        "content_type": environ.get("CONTENT_TYPE"),
        "content_length": environ.get("CONTENT_LENGTH"),
        "remote_addr": environ.get("REMOTE_ADDR"),
        "remote_port": environ.get("REMOTE_PORT"),
        "server_name": environ.get("SERVER_NAME"),
        "server_port": environ.get("SERVER_PORT"),
        "server_protocol": environ.get("SERVER_PROTOCOL"),
        "url_scheme": environ.get("wsgi.url_scheme"),
        "wsgi": {
            "version": list(environ.get("wsgi.version", ())),
            "multithread": environ.get("wsgi.multithread"),
            "multiprocess": environ.get("wsgi.multiprocess"),
            "run_once": environ.get("wsgi.run_once"),
            "input_terminated": environ.get("wsgi.input_terminated"),
            "file_wrapper": "wsgi.file_wrapper" in environ,
        },
        # Every CGI key, verbatim (missing ones as null), for exhaustive checks.
        "cgi": {key: environ.get(key) for key in CGI_KEYS},
        "body_length": length,
        "body_sha256": sha256,
        "body_head": head.decode("latin-1"),
        "pid": os.getpid(),  # which worker process answered (prefork tests)
    }
    body = json.dumps(data, sort_keys=True).encode("utf-8")
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]
