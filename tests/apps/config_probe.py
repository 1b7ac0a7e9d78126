"""What a worker runs with, seen from outside, for the configuration-reload tests.

``/config`` answers JSON: the worker's pid and the number of its application threads (the
pool names them ``wsgiserve-<pid>-<n>``), which is THREADS. Every other path goes to
``tests.apps.router``.
"""

from __future__ import annotations

import json
import os
import threading
from typing import TYPE_CHECKING

from . import router

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["application"]


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    if environ.get("PATH_INFO") != "/config":
        return router.application(environ, start_response)
    prefix = f"wsgiserve-{os.getpid()}-"
    threads = sum(thread.name.startswith(prefix) for thread in threading.enumerate())
    body = json.dumps({"pid": os.getpid(), "threads": threads}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
