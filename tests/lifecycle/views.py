"""Views for the lifecycle tests: the answering process and its threads, a stream, an error."""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from . import receivers

if TYPE_CHECKING:
    from collections.abc import Iterator

    from django.http import HttpRequest


def state(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "pid": os.getpid(),
            "threads": sorted(thread.name for thread in threading.enumerate()),
            "ticks": receivers.TICKS["count"],
        }
    )


@csrf_exempt
def echo(request: HttpRequest) -> JsonResponse:
    """The body's length and the answering pid, for tests/keepalive.py's load."""
    return JsonResponse({"body_length": len(request.body), "pid": os.getpid()})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for _ in range(200):
            yield b"x" * 1024
            time.sleep(0.01)

    return StreamingHttpResponse(chunks())


def error(request: HttpRequest) -> JsonResponse:
    raise RuntimeError("this view fails on purpose")
