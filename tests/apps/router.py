"""One WSGI application for the server's test suite, dispatching on the first path
segment to the small apps of this package: ``/echo/anything?x=1`` is answered by
``tests.apps.echo``, ``/hello`` by ``tests.apps.hello``, and so on. The environ is
passed on unchanged (PATH_INFO keeps its first segment).

Every app runs inside ``wsgiref.validate.validator``, which checks what the server
gives the app and what the app gives the server, except:

* ``file_wrapper``: the validator would hide the server's ``wsgi.file_wrapper``
  object behind its own iterator, defeating the point of the app;
* ``no_start_response``: the validator would raise its own AssertionError while
  iterating, hiding whether the server itself notices the missing start_response;
* requests the validator would only warn about (a method outside the standard
  eight, or no QUERY_STRING): with warnings turned into errors, as in this test
  suite, the warning would fail the request.

``/`` lists the apps; an unknown first segment is a 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from wsgiref.validate import validator

from . import (
    bad_content_length,
    big,
    closing,
    echo,
    file_wrapper,
    hello,
    hop_by_hop,
    huge_headers,
    late_status,
    no_content,
    no_start_response,
    raises,
    sleepy,
    spin,
    stats,
    stream,
    write_callable,
)
from ._util import simple_response

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

RAW_APPS: dict[str, WSGIApplication] = {
    "bad_content_length": bad_content_length.application,
    "big": big.application,
    "closing": closing.application,
    "echo": echo.application,
    "file_wrapper": file_wrapper.application,
    "hello": hello.application,
    "hop_by_hop": hop_by_hop.application,
    "huge_headers": huge_headers.application,
    "late_status": late_status.application,
    "no_content": no_content.application,
    "no_start_response": no_start_response.application,
    "raises": raises.application,
    "sleepy": sleepy.application,
    "spin": spin.application,
    "stats": stats.application,
    "stream": stream.application,
    "write_callable": write_callable.application,
}

UNVALIDATED = frozenset({"file_wrapper", "no_start_response"})

#: The request methods wsgiref.validate accepts without a warning.
VALIDATOR_METHODS = frozenset({"GET", "HEAD", "POST", "OPTIONS", "PATCH", "PUT", "DELETE", "TRACE"})

VALIDATED_APPS: dict[str, Callable[..., Iterable[bytes]]] = {
    name: validator(app) for name, app in RAW_APPS.items() if name not in UNVALIDATED
}


def first_segment(path_info: str) -> str:
    return path_info.lstrip("/").partition("/")[0]


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    name = first_segment(environ.get("PATH_INFO", ""))
    if name == "":
        index = "".join(f"/{app}\n" for app in sorted(RAW_APPS))
        return simple_response(start_response, "200 OK", index)
    if name not in RAW_APPS:
        return simple_response(start_response, "404 Not Found", f"no test app {name!r}\n")
    validate = (
        name in VALIDATED_APPS
        and environ.get("REQUEST_METHOD") in VALIDATOR_METHODS
        and "QUERY_STRING" in environ
    )
    app = VALIDATED_APPS[name] if validate else RAW_APPS[name]
    return app(environ, start_response)
