"""The WSGI side of a request (PEP 3333): environ, start_response, write(), file_wrapper.

Design note. ``RequestCycle`` is the per-request state (the per-connection state is
``connection.Connection``). It runs in one pool thread from start to end: it builds the environ,
calls the application, sends the response head lazily (with the first non-empty body chunk, so
a status set during the first iteration is honoured), frames the body, always calls
``close()`` on what the application returned, and writes one access log record.

It knows WSGI but not sockets: bytes go out through a ``ResponseSink`` (implemented by
``Connection``), which may finish a write on the I/O loop when the socket would block.

``wsgi.file_wrapper`` bodies with a real descriptor (a file, or whitenoise's ``SlicedFile`` of
a 206: its ``fileobj`` from ``tell()``, ``remaining`` bytes) go out by sendfile. What does not
fit in the socket at once is handed to the loop, and then the pool thread is released at once:
``close()`` (Django's ``request_finished``) and the access record run later, in a pool thread,
when the loop has sent the file (``_finish_deferred``).

Invariants:
* Nothing an application does can corrupt the connection for the next request: wrong
  Content-Length, exceptions after the head was sent, or a missing start_response all end with
  either a correct 500 or a closed connection, never with a second status line.
* Hop-by-hop headers from the application (PEP 3333 forbids them) never reach the wire: the
  server owns the framing and the connection. ``Connection: close`` is honoured (the connection
  closes after the response; closing is always allowed, and an app or middleware that asks for
  it means it); any other hop-by-hop header is dropped with one WARNING per header name and
  worker process.
* The server never adds a Content-Length to a status without content (1xx, 204, 304), and the
  writer drops the application's (``http.framing.has_no_content``).
* Request headers whose names contain ``_`` are dropped: ``X_Forwarded_For`` and
  ``X-Forwarded-For`` would otherwise both become ``HTTP_X_FORWARDED_FOR`` and a client could
  spoof the header a proxy sets (Django's runserver does the same).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import stat
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote_to_bytes

from .errors import ApplicationError, ClientDisconnectedError
from .http.framing import Framing, choose_framing, has_no_content
from .http.writer import LAST_CHUNK

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from .accesslog import AccessLog
    from .http.events import Request
    from .http.writer import ResponseWriter
    from .metrics import WorkerMetrics

    ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
    WSGIApplication = Callable[..., Iterable[bytes]]

__all__ = [
    "EnvironTemplate",
    "FileWrapper",
    "HopByHopWarnings",
    "RequestCycle",
    "ResponseSink",
]

logger = logging.getLogger(__name__)

# RFC 9110 §7.6.1 and PEP 3333: an application must not send hop-by-hop headers (the list of
# wsgiref.util.is_hop_by_hop, plus Trailer and the legacy Proxy-Connection).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)

# Header names seen once are translated once: b"user-agent" -> "HTTP_USER_AGENT". None marks a
# name that must be dropped. Bounded so a client inventing names cannot grow it without limit.
_ENVIRON_KEYS: dict[bytes, str | None] = {
    b"content-type": "CONTENT_TYPE",
    b"content-length": "CONTENT_LENGTH",
    # We de-chunk bodies before the application sees them and set CONTENT_LENGTH.
    b"transfer-encoding": None,
}
_MAX_CACHED_KEYS = 512


def _environ_key(name: bytes) -> str | None:
    """Translate a header name not in ``_ENVIRON_KEYS`` yet, and remember it."""
    text = name.decode("latin-1")
    result = None if "_" in text else "HTTP_" + text.upper().replace("-", "_")
    if len(_ENVIRON_KEYS) < _MAX_CACHED_KEYS:
        _ENVIRON_KEYS[name] = result
    return result


# The usual methods as environ text, without a decode per request.
_METHODS = {method: method.decode("ascii") for method in (b"GET", b"HEAD", b"POST", b"PUT")}

# What start_response must look at in a response header name, found once per name (the same
# bound as _ENVIRON_KEYS): the lower-cased name is Content-Length, or hop-by-hop, or neither.
_ORDINARY, _CONTENT_LENGTH, _HOP_BY_HOP = range(3)
_RESPONSE_NAME_KINDS: dict[str, int] = {}


def _response_name_kind(name: str) -> int:
    """Classify a response header name not in ``_RESPONSE_NAME_KINDS`` yet; remember it."""
    lower = name.lower()
    if lower == "content-length":
        kind = _CONTENT_LENGTH
    elif lower in HOP_BY_HOP:
        kind = _HOP_BY_HOP
    else:
        kind = _ORDINARY
    if len(_RESPONSE_NAME_KINDS) < _MAX_CACHED_KEYS:
        _RESPONSE_NAME_KINDS[name] = kind
    return kind


class HopByHopWarnings:
    """Remembers the hop-by-hop header names already logged, so that an application (or a
    middleware) that sends one on every response logs it once, not once a request (any thread).

    The names are lower-cased and drawn from ``HOP_BY_HOP``, so the set stays tiny.
    """

    __slots__ = ("_lock", "_warned")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def warn(self, name: str, request: Request) -> None:
        """Log that the header ``name`` was dropped, unless that name was logged before. The
        value is not logged: Proxy-Authorization carries credentials."""
        lowered = name.lower()
        if lowered in self._warned:  # the usual case once warned: no lock
            return
        with self._lock:  # two pool threads may meet the same name at once: one logs
            if lowered in self._warned:
                return
            self._warned.add(lowered)
        logger.warning(
            "The application sent the hop-by-hop header %r in its response to %s %s; it is "
            "not sent (PEP 3333: the server owns the connection and the framing). Logged once "
            "per header name.",
            name,
            request.method.decode("latin-1"),
            request.target.decode("latin-1"),
        )


# One per worker process unless the caller passes its own (a fork starts with an empty set:
# the master runs no application).
_PROCESS_HOP_BY_HOP_WARNINGS = HopByHopWarnings()


class FileWrapper:
    """``wsgi.file_wrapper``: the server sends these with ``os.sendfile`` when it can."""

    __slots__ = ("block_size", "filelike")

    def __init__(self, filelike: Any, block_size: int = 8192) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self) -> FileWrapper:
        return self

    def __next__(self) -> bytes:
        data: bytes = self.filelike.read(self.block_size)
        if data:
            return data
        raise StopIteration

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


class ResponseSink(Protocol):
    """Where a ``RequestCycle`` sends its bytes (implemented by ``Connection``)."""

    can_sendfile: bool

    @property
    def may_keep_alive(self) -> bool:
        """False when the response must close the connection whatever the request asked
        (the worker is draining); read when the head is built."""

    def send(self, parts: list[bytes]) -> None:
        """Send ``parts`` in order; raises ClientDisconnectedError (pool thread)."""

    def send_file(
        self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None = None
    ) -> bool:
        """Send ``count`` bytes of ``fd`` from ``offset``; the fd may be closed on return.
        True when the rest is sent later and ``on_done`` will be called after it."""

    def finish(self, *, keep_alive: bool) -> None:
        """The response is complete; read the next request or close (pool thread)."""


class EnvironTemplate:
    """The environ keys that are the same for every request on one listener, built once."""

    __slots__ = ("base", "script_name")

    def __init__(
        self,
        *,
        server_name: str,
        server_port: str,
        script_name: str,
        url_scheme: str = "http",
        multiprocess: bool = False,
        server_software: str = "django-wsgiserve",
    ) -> None:
        self.script_name = script_name
        self.base: dict[str, Any] = {
            "SERVER_NAME": server_name,
            "SERVER_PORT": server_port,
            "SCRIPT_NAME": script_name,
            "SERVER_SOFTWARE": server_software,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": url_scheme,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }

    def build(
        self, request: Request, body: io.IOBase, body_size: int, peer: tuple[str, str]
    ) -> dict[str, Any]:
        """Return a fresh environ for ``request`` with ``body`` as ``wsgi.input``."""
        environ = self.base.copy()
        raw_path = request.path
        if b"%" in raw_path:
            raw_path = unquote_to_bytes(raw_path)
        path = full_path = raw_path.decode("latin-1")
        script_name = self.script_name
        if script_name and (path == script_name or path.startswith(script_name + "/")):
            path = path[len(script_name) :]
        method = request.method
        environ["REQUEST_METHOD"] = _METHODS.get(method) or method.decode("latin-1")
        environ["PATH_INFO"] = path
        query = request.query
        environ["QUERY_STRING"] = query.decode("latin-1") if query else ""
        target = request.target
        # The usual origin-form target without a query is the path: decode it once.
        environ["RAW_URI"] = full_path if target is raw_path else target.decode("latin-1")
        environ["SERVER_PROTOCOL"] = "HTTP/1.1" if request.http_version == b"1.1" else "HTTP/1.0"
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = peer
        environ["wsgi.input"] = body
        environ_key = _ENVIRON_KEYS.get
        host = request.host
        host_text = ""
        for name, value in request.headers:
            key = environ_key(name, "")
            if key == "":
                key = _environ_key(name)
            if key is None:
                continue
            text = value.decode("latin-1")
            if key in environ and key.startswith("HTTP_"):
                # RFC 9110 §5.3: repeated fields combine with commas; cookies with "; ".
                text = environ[key] + ("; " if key == "HTTP_COOKIE" else ", ") + text
            elif value is host:
                host_text = text  # the Host value decoded already (not absolute-form)
            environ[key] = text
        if host:
            environ["HTTP_HOST"] = host_text or host.decode("latin-1")
        if request.content_length is not None or request.is_chunked:
            # Chunked bodies were de-chunked: Django reads nothing without CONTENT_LENGTH.
            environ["CONTENT_LENGTH"] = str(body_size)
        else:
            environ.pop("CONTENT_LENGTH", None)
        return environ


class RequestCycle:
    """One request and its response, run by one pool thread (``run``)."""

    __slots__ = (
        "_access_log",
        "_app",
        "_bytes_sent",
        "_chunked",
        "_content_length",
        "_environ",
        "_framing",
        "_get_date",
        "_headers",
        "_headers_sent",
        "_hop_by_hop_warnings",
        "_is_deferred",
        "_is_head",
        "_keep_alive",
        "_metrics",
        "_request",
        "_sink",
        "_started",
        "_status",
        "_writer",
    )

    def __init__(
        self,
        *,
        app: WSGIApplication,
        environ: dict[str, Any],
        request: Request,
        sink: ResponseSink,
        writer: ResponseWriter,
        get_date: Callable[[], bytes],
        access_log: AccessLog | None,
        keep_alive: bool,
        started: float,
        hop_by_hop_warnings: HopByHopWarnings | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._app = app
        self._environ = environ
        self._request = request
        self._sink = sink
        self._writer = writer
        self._get_date = get_date
        self._access_log = access_log
        self._keep_alive = keep_alive
        self._started = started
        self._metrics = metrics
        self._hop_by_hop_warnings = hop_by_hop_warnings or _PROCESS_HOP_BY_HOP_WARNINGS
        self._is_head = request.method == b"HEAD"
        self._status: str | None = None
        self._headers: list[tuple[str, str]] = []
        self._content_length: int | None = None
        self._headers_sent = False
        self._framing = Framing.NO_BODY
        self._chunked = False
        self._bytes_sent = 0
        self._is_deferred = False  # the loop finishes the body, then calls _finish_deferred

    # -- pool thread ---------------------------------------------------------------------

    def run(self) -> None:
        """Call the application and send its response (pool thread)."""
        result: Iterable[bytes] | None = None
        try:
            result = self._app(self._environ, self.start_response)
            if type(result) is FileWrapper and self._send_file(result):
                pass
            else:
                self._send_iterable(result)
        except ClientDisconnectedError:
            logger.debug("Client %s disconnected during the response", self._peer())
            self._keep_alive = False
        except Exception:  # noqa: BLE001 - any application error becomes a 500 or a cut
            self._application_failed()
        finally:
            if not self._is_deferred:
                self._close_result(result)
        if not self._is_deferred:
            self._log_access()
        self._sink.finish(keep_alive=self._keep_alive)

    def _finish_deferred(self, result: Iterable[bytes]) -> None:
        """The loop has sent (or dropped) the file: close() and log (a pool thread)."""
        self._close_result(result)
        self._log_access()

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        """PEP 3333 ``start_response``."""
        if exc_info is not None:
            try:
                if self._headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._status is not None:
            raise ApplicationError("start_response() called twice without exc_info (PEP 3333)")
        if type(status) is not str:
            raise ApplicationError(f"WSGI status must be a str, not {type(status).__name__}")
        content_length = None
        has_hop_by_hop = False
        name_kind = _RESPONSE_NAME_KINDS.get
        for name, value in headers:
            if type(name) is not str or type(value) is not str:
                raise ApplicationError(f"WSGI header {name!r}: {value!r} must be a pair of str")
            kind = name_kind(name)
            if kind is None:
                kind = _response_name_kind(name)
            if kind == _CONTENT_LENGTH:
                try:
                    content_length = int(value)
                except ValueError:
                    raise ApplicationError(f"Invalid Content-Length {value!r}") from None
                if content_length < 0:
                    raise ApplicationError(f"Invalid Content-Length {value!r}")
            elif kind == _HOP_BY_HOP:
                has_hop_by_hop = True
        self._status = status
        self._headers = self._without_hop_by_hop(headers) if has_hop_by_hop else list(headers)
        self._content_length = content_length
        return self.write

    def _without_hop_by_hop(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The headers without hop-by-hop ones; honour ``Connection: close``, warn about the
        rest."""
        kept = []
        for name, value in headers:
            lower = name.lower()
            if lower not in HOP_BY_HOP:
                kept.append((name, value))
                continue
            if lower == "connection":
                # RFC 9110 §7.6.1: Connection is a list of options; "close" asks to close the
                # connection after this response (RFC 9112 §9.6), which a server may always do.
                # Projects set it to end a client's keep-alive (after an error, a logout).
                options = {option.strip().lower() for option in value.split(",")}
                if "close" in options:
                    self._keep_alive = False
                    if not options - {"close"}:
                        continue  # exactly what the server does itself: nothing to warn about
            self._hop_by_hop_warnings.warn(name, self._request)
        return kept

    def write(self, data: bytes) -> None:
        """The ``write()`` callable returned by ``start_response``."""
        if type(data) is not bytes:
            data = _as_bytes(data)
        if data:
            self._write(data)

    # -- sending -------------------------------------------------------------------------

    def _send_iterable(self, result: Iterable[bytes]) -> None:
        if (
            self._content_length is None
            and self._status is not None
            and type(result) is list
            and len(result) == 1
        ):
            # A one-item list has a known length: frame it with Content-Length, not chunks.
            self._set_content_length(len(result[0]))
        for data in result:
            if type(data) is not bytes:
                data = _as_bytes(data)
            if data:
                self._write(data)
        if not self._headers_sent:
            if self._content_length is None and self._status is not None:
                self._set_content_length(0)
            self._sink.send([self._head()])
        elif self._chunked:
            self._sink.send([LAST_CHUNK])
        declared = self._content_length
        if (
            declared is not None
            and self._bytes_sent < declared
            and self._framing is Framing.CONTENT_LENGTH
        ):
            logger.error(
                "%s %s: the application sent %d bytes but declared Content-Length %d; "
                "closing the connection",
                self._request.method.decode("latin-1"),
                self._request.target.decode("latin-1"),
                self._bytes_sent,
                self._content_length,
            )
            self._keep_alive = False

    def _write(self, data: bytes) -> None:
        parts = [] if self._headers_sent else [self._head()]
        framing = self._framing
        if framing is Framing.CONTENT_LENGTH:
            remaining = self._content_length - self._bytes_sent  # type: ignore[operator]
            if len(data) > remaining:
                self._too_much_data(len(data) - remaining)
                data = data[:remaining]
            if data:
                parts.append(data)
        elif framing is Framing.CHUNKED:
            parts += (b"%x\r\n" % len(data), data, b"\r\n")
        elif framing is Framing.CLOSE_DELIMITED:
            parts.append(data)
        self._bytes_sent += len(data)
        if parts:
            self._sink.send(parts)

    def _head(self) -> bytes:
        """Build the response head; marks the headers as sent."""
        if self._status is None:
            raise ApplicationError("The application returned a body before calling start_response")
        try:
            status_code = int(self._status[:3])
        except ValueError:
            raise ApplicationError(f"Invalid WSGI status {self._status!r}") from None
        request = self._request
        framing, keep_alive = choose_framing(
            method=request.method,
            http_version=request.http_version,
            status_code=status_code,
            content_length=self._content_length,
            # Decided now, not when the request came: a drain may have begun meanwhile.
            keep_alive=self._keep_alive and self._sink.may_keep_alive,
        )
        head = self._writer.head(
            status=self._status,
            headers=self._headers,
            http_version=request.http_version,
            framing=framing,
            keep_alive=keep_alive,
            date=self._get_date(),
        )
        self._framing = framing
        self._chunked = framing is Framing.CHUNKED
        self._keep_alive = keep_alive
        self._headers_sent = True
        return head

    def _set_content_length(self, length: int) -> None:
        """Declare a length the server measured, unless the status has no content (RFC 9110
        §8.6: never a Content-Length in a 1xx or 204, in a 304 only the 200's length)."""
        status_code = self._status[:3] if self._status is not None else ""
        if status_code.isdigit() and has_no_content(int(status_code)):
            return
        self._content_length = length
        self._headers.append(("Content-Length", str(length)))

    def _too_much_data(self, extra: int) -> None:
        logger.error(
            "%s %s: the application sent %d bytes more than its Content-Length %d; "
            "truncated, and the connection will be closed",
            self._request.method.decode("latin-1"),
            self._request.target.decode("latin-1"),
            extra,
            self._content_length,
        )
        self._keep_alive = False

    def _send_file(self, wrapper: FileWrapper) -> bool:
        """Send a ``wsgi.file_wrapper`` body with sendfile; False means "iterate it instead"."""
        if not self._sink.can_sendfile or self._status is None:
            return False
        file_range = _file_range(wrapper.filelike)
        if file_range is None:
            return False
        fd, offset, available = file_range
        declared = self._content_length
        if declared is None:
            declared = available
            self._set_content_length(available)
        count = min(declared, available)
        head = self._head()
        self._sink.send([head])
        if self._framing is not Framing.CONTENT_LENGTH:
            return True  # HEAD, 304 and friends: no body
        self._bytes_sent = count
        if count:
            self._is_deferred = self._sink.send_file(
                fd, offset, count, functools.partial(self._finish_deferred, wrapper)
            )
        if count < declared:
            logger.error(
                "%s: the file is %d bytes shorter than its Content-Length; closing the connection",
                self._request.target.decode("latin-1"),
                declared - count,
            )
            self._keep_alive = False
        return True

    # -- errors and the end of the cycle ---------------------------------------------------

    def _application_failed(self) -> None:
        request = self._request
        logger.error(
            "Error handling %s %s",
            request.method.decode("latin-1"),
            request.target.decode("latin-1"),
            exc_info=True,
        )
        self._keep_alive = False
        if self._headers_sent:
            return  # too late for a 500: closing the connection tells the client it is cut
        self._status = "500 Internal Server Error"
        self._bytes_sent = 0
        self._send_error_response()

    def _send_error_response(self) -> None:
        """Send a whole 500 response (its head was not sent yet)."""
        response = self._writer.error_response(
            status_code=500,
            reason="Internal Server Error",
            date=self._get_date(),
            http_version=self._request.http_version,
        )
        if self._is_head:
            response = response[: response.index(b"\r\n\r\n") + 4]
        self._headers_sent = True
        with contextlib.suppress(ClientDisconnectedError):
            self._sink.send([response])

    def _close_result(self, result: Iterable[bytes] | None) -> None:
        close = getattr(result, "close", None)
        if close is None:
            return
        try:
            close()
        except Exception:
            logger.error("Error closing the response iterable", exc_info=True)

    def _peer(self) -> str:
        return str(self._environ.get("REMOTE_ADDR", ""))

    def _log_access(self) -> None:
        """The access log record and the metrics of this response (pool thread)."""
        access_log, metrics = self._access_log, self._metrics
        if access_log is None and metrics is None:
            return
        status = self._status or "000"
        status_code = int(status[:3]) if status[:3].isdigit() else 0
        request_time_s = time.monotonic() - self._started
        if metrics is not None:
            metrics.observe_request(
                self._request.method, status_code, request_time_s, self._bytes_sent
            )
        if access_log is not None:
            access_log.log_request(
                self._request,
                peer=self._peer(),
                status_code=status_code,
                bytes_sent=self._bytes_sent,
                request_time_s=request_time_s,
            )


def _file_range(filelike: Any) -> tuple[int, int, int] | None:
    """(descriptor, offset, bytes available) of a regular file, or None: iterate it instead.

    whitenoise's ``SlicedFile`` (a 206 body) has no descriptor of its own, but its ``fileobj``
    is positioned at the range start and ``remaining`` is the range length."""
    limit = None
    if type(filelike).__name__ == "SlicedFile" and hasattr(filelike, "remaining"):
        limit = filelike.remaining
        filelike = getattr(filelike, "fileobj", None)
    try:
        fd = filelike.fileno()
        info = os.fstat(fd)
        offset = filelike.tell() if hasattr(filelike, "tell") else os.lseek(fd, 0, os.SEEK_CUR)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    available = max(0, info.st_size - offset)
    if limit is not None:
        available = min(available, max(0, limit))
    return fd, offset, available


def _as_bytes(data: object) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise ApplicationError(f"WSGI body chunks must be bytes, not {type(data).__name__}")
