"""Static (and optionally media) files answered by the worker's I/O loop, by whitenoise's rules.

Design note. whitenoise decides everything about a static response: which URLs exist (the
table its middleware builds from STATIC_ROOT, STATIC_URL, WHITENOISE_ROOT and, with
WHITENOISE_USE_FINDERS, the finders), their headers (Content-Type, Cache-Control with
``immutable`` for the manifest's hashed names, ETag, Last-Modified, Vary, CORS,
WHITENOISE_ADD_HEADERS_FUNCTION), conditional requests (304), Accept-Encoding negotiation over
the ``.gz``/``.br`` files collectstatic wrote, single byte ranges (206/416) and 405 for other
methods. We never re-implement any of it: ``build_static_table()`` constructs a
``WhiteNoiseMiddleware`` (which reads every WHITENOISE_* setting exactly as the middleware would)
without wrapping any application, once, in the master before fork, and keeps its ``files``
dict re-keyed by the UTF-8 bytes of each URL.

Per request the loop calls ``StaticTable.respond(request)``; for a path outside the table it
returns None after one ``bytes.startswith`` and (under a prefix) one dict lookup, and the request
goes to the application as usual. The undecoded path is tried first; only a path containing
``%`` is percent-decoded, like PATH_INFO. Outside autorefresh mode nothing here touches the
filesystem except ``open()`` of a file in the table. In autorefresh mode (WHITENOISE_AUTOREFRESH,
default DEBUG) and for media files, whitenoise's ``find_file`` runs on each request: it rejects
non-canonical URLs (``..``, ``//``, backslashes) and checks that the resolved path is inside a
root (``path_is_child_of``); paths with NUL never reach the filesystem.

What Django's SecurityMiddleware would add to the response, when it is in MIDDLEWARE, is computed
once here from the SECURE_* settings and appended unless whitenoise already set the header.
HSTS, like the middleware, only on requests Django would consider secure (SECURE_PROXY_SSL_HEADER);
with SECURE_SSL_REDIRECT a request that is not secure is left to Django, which redirects it.

Hot path. For a file of the table (never in autorefresh mode, nor for media) asked for with GET
or HEAD and no Range, ``respond`` does not call ``get_response``: it calls the two pure parts of
it, whitenoise's own ``is_not_modified`` (304) and ``get_path_and_headers`` (the Accept-Encoding
variant), so status and headers are exactly whitenoise's; only the ``open()`` differs. Each
variant's body is opened once per worker, lazily (so never in the master before fork): a file of
at most MEMORY_FILE_BYTES is read into memory and goes out with the head in one ``send()``; a
larger one keeps its descriptor open and is sent with ``os.sendfile`` at explicit offsets, which
never move the file position, so one descriptor serves every connection. At most
MAX_CACHED_FILES variants are kept (the oldest is dropped first). Per request this costs no
system call beyond the sends. The choice this makes, documented: like whitenoise's headers,
which come from the stat() of the scan, the body is the file as this worker first read it; a
file changed or deleted on disk afterwards keeps being served as it was until the workers
restart (whitenoise would send the new bytes under the old Content-Length and ETag, or pass a
deleted file to the application). With WHITENOISE_AUTOREFRESH every request goes through
``get_response`` and sees the disk as it is. Range requests and other methods take that path too.

The objects are built in the master and inherited by workers through fork(); ``respond`` runs in
the loop thread only. This module imports Django and whitenoise; the layers below it
(connection, loop) know only the ``StaticResponder`` protocol of ``connection.py``.
"""

from __future__ import annotations

import logging
import os
import warnings
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes, urlparse

from whitenoise.base import WhiteNoise  # type: ignore[import-untyped]
from whitenoise.middleware import WhiteNoiseMiddleware  # type: ignore[import-untyped]
from whitenoise.responders import SlicedFile, StaticFile  # type: ignore[import-untyped]
from whitenoise.string_utils import (  # type: ignore[import-untyped]
    ensure_leading_trailing_slash,
)

from .context import StaticResponse
from .errors import ApplicationError
from .http.writer import ResponseWriter

if TYPE_CHECKING:
    from django.conf import LazySettings

    from .http.events import Request

__all__ = ["StaticTable", "build_static_table", "describe_static_files", "security_headers"]

logger = logging.getLogger(__name__)

SECURITY_MIDDLEWARE = "django.middleware.security.SecurityMiddleware"

# The request headers whitenoise's StaticFile.get_response() reads, by their environ names.
_REQUEST_KEYS = {
    b"if-none-match": "HTTP_IF_NONE_MATCH",
    b"if-modified-since": "HTTP_IF_MODIFIED_SINCE",
    b"accept-encoding": "HTTP_ACCEPT_ENCODING",
    b"range": "HTTP_RANGE",
}
_METHODS = {b"GET": "GET", b"HEAD": "HEAD"}
_METHODS_TEXT = frozenset(_METHODS.values())
# Validates and encodes head fields once (prepare_head needs no server configuration).
_HEAD_WRITER = ResponseWriter()
# status line, status code, headers, Content-Length, prepared head start (or None).
_HeadFields = tuple[str, int, list[tuple[str, str]], int | None, bytes | None]
# Bodies up to this size live in memory and leave with their head in one send(): no open(),
# close() or sendfile() per request. respond() went from 16.2 to 1.8 us in-process, and a 2 KB
# file from 22.3k to 45.4k req/s (nginx 90.6k; wrk -c64, one worker, medians of 5 interleaved
# runs). Larger ones keep a descriptor for sendfile: 50 KB did 34.7k req/s so, 29.6k from memory.
MEMORY_FILE_BYTES = 16 * 1024
MEMORY_BUDGET_BYTES = 16 * 1024 * 1024  # per worker; past it, small files are sent like large
MAX_CACHED_FILES = 1024  # variants (file paths) whose body or descriptor a worker keeps
# A variant's body as a worker keeps it: (bytes in memory or None, open descriptor or -1).
_Body = tuple[bytes | None, int]


def security_headers(settings: Any) -> tuple[list[tuple[str, str]], tuple[str, str] | None]:
    """What SecurityMiddleware.process_response adds: (headers for every response, the HSTS
    header for secure requests only). Empty when the middleware is not in MIDDLEWARE."""
    if SECURITY_MIDDLEWARE not in (getattr(settings, "MIDDLEWARE", None) or ()):
        return [], None
    headers = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    policy = settings.SECURE_REFERRER_POLICY
    if policy:
        values = [v.strip() for v in policy.split(",")] if isinstance(policy, str) else policy
        headers.append(("Referrer-Policy", ",".join(values)))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    hsts = None
    if settings.SECURE_HSTS_SECONDS:
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        hsts = ("Strict-Transport-Security", value)
    return headers, hsts


def _proxy_ssl_header(settings: Any) -> tuple[bytes, str] | None:
    """SECURE_PROXY_SSL_HEADER as (lower-case header name, secure value)."""
    setting = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if not setting:
        return None
    meta_name, value = setting
    if not meta_name.startswith("HTTP_"):
        return None  # not a request header: never secure over our plain-HTTP listeners
    return meta_name[5:].lower().replace("_", "-").encode("latin-1"), value


class StaticTable:
    """The files the loop answers itself; see the module docstring. Build with
    ``build_static_table``; ``respond`` runs in the loop thread."""

    __slots__ = (
        "_always_headers",
        "_bodies",
        "_bodies_bytes",
        "_files",
        "_finders",
        "_has_custom_headers",
        "_heads",
        "_hsts",
        "_proxy_ssl_header",
        "_responses",
        "_script_name",
        "_ssl_redirect",
        "prefixes",
        "roots",
    )

    def __init__(
        self,
        *,
        static: WhiteNoise | None,
        media: WhiteNoise | None = None,
        media_prefix: str = "/",
        script_name: str = "",
        settings: Any = None,
    ) -> None:
        self._script_name = script_name.encode("utf-8")
        self._files: dict[bytes, Any] = {}
        self._heads: dict[tuple[int, bool], tuple[object, _HeadFields]] = {}
        # Filled lazily in the worker (see "Hot path"); by whitenoise's path of each variant.
        self._bodies: dict[str, _Body] = {}
        self._bodies_bytes = 0
        self._responses: dict[tuple[int, bool, str], tuple[object, StaticResponse]] = {}
        # (URL prefix, WhiteNoise) looked up with find_file() on every request.
        self._finders: list[tuple[bytes, WhiteNoise]] = []
        prefixes: list[str] = []
        self.roots: list[str] = []
        if static is not None:
            if static.autorefresh:
                self._finders.append((b"/", static))
                prefixes.append(getattr(static, "static_prefix", "/"))
                prefixes += [prefix for _, prefix in static.directories]
            else:
                for url, static_file in static.files.items():
                    # A file name that is not UTF-8 (surrogate escapes) cannot be requested.
                    key = url.encode("utf-8", "surrogateescape")
                    self._files[self._script_name + key] = static_file
                    # "/static/": every URL is under its first segment; "/robots.txt" alone.
                    first, slash, _ = url[1:].partition("/")
                    prefixes.append(f"/{first}{slash}")
            self.roots += [f"{root} at {prefix}" for root, prefix in static.directories]
        if media is not None:
            self._finders.append((media_prefix.encode("utf-8"), media))
            prefixes.append(media_prefix)
            self.roots += [f"{root} at {prefix}" for root, prefix in media.directories]
        self.prefixes = tuple(sorted({self._script_name + p.encode("utf-8") for p in prefixes}))
        always, self._hsts = security_headers(settings)
        self._always_headers = tuple(always)
        self._has_custom_headers = bool(
            static is not None and static.add_headers_function is not None
        )
        self._proxy_ssl_header = _proxy_ssl_header(settings) if settings is not None else None
        self._ssl_redirect = bool(
            settings is not None
            and SECURITY_MIDDLEWARE in (getattr(settings, "MIDDLEWARE", None) or ())
            and settings.SECURE_SSL_REDIRECT
        )

    def __len__(self) -> int:
        return len(self._files)

    def find(self, path: bytes) -> Any:
        """The whitenoise StaticFile (or Redirect) for a request path, or None."""
        files = self._files
        static_file = files.get(path)
        if static_file is not None:
            return static_file
        if b"%" in path:
            path = unquote_to_bytes(path)  # as PATH_INFO is decoded
            static_file = files.get(path)
            if static_file is not None:
                return static_file
        if not self._finders or b"\0" in path:
            return None
        script_name = self._script_name
        if script_name:
            if not path.startswith(script_name + b"/"):
                return None
            path = path[len(script_name) :]
        return self._find_on_disk(path)

    def _find_on_disk(self, path: bytes) -> Any:
        # Like whitenoise's decode_path_info: URLs are UTF-8, undecodable bytes replaced.
        url = path.decode("utf-8", "replace")
        for prefix, whitenoise in self._finders:
            if not path.startswith(prefix):
                continue
            try:
                found = whitenoise.find_file(url)
            except (OSError, ValueError) as exc:
                logger.debug("Static lookup of %r failed: %s", url, exc)
                continue
            if found is not None:
                return found
        return None

    def respond(self, request: Request) -> StaticResponse | None:
        """whitenoise's response to ``request``, or None to let the application answer."""
        static_file = self.find(request.path)
        if static_file is None:
            return None
        is_secure = self._is_secure(request)
        if self._ssl_redirect and not is_secure:
            return None  # SecurityMiddleware redirects it to https
        environ: dict[str, str] = {}
        for name, value in request.headers:
            key = _REQUEST_KEYS.get(name)
            if key is not None:
                text = value.decode("latin-1")
                environ[key] = environ[key] + ", " + text if key in environ else text
        method = _METHODS.get(request.method) or request.method.decode("latin-1")
        is_cacheable = not self._finders or static_file is self._files.get(request.path)
        if (
            is_cacheable
            and method in _METHODS_TEXT
            and "HTTP_RANGE" not in environ
            and type(static_file) is StaticFile
        ):
            response = self._respond_from_cache(static_file, method, environ, is_secure)
            if response is not None:
                return response
        try:
            whitenoise_response = static_file.get_response(method, environ)
        except OSError as exc:  # deleted or unreadable since the table was built
            logger.warning("Static file for %r unavailable: %s", request.path, exc)
            return None
        except Exception:  # never let a bad request header stop the I/O loop
            logger.exception("whitenoise failed on %r; passing it to the application", request.path)
            return None
        is_cacheable = is_cacheable and whitenoise_response.status not in (206, 416)
        return self._static_response(whitenoise_response, is_secure, is_cacheable)

    def _respond_from_cache(
        self, static_file: Any, method: str, environ: dict[str, str], is_secure: bool
    ) -> StaticResponse | None:
        """StaticFile.get_response() for GET/HEAD without Range, minus the open(): whitenoise's
        own conditional and variant rules, the body from ``_bodies``. None: take the slow path."""
        try:
            if static_file.is_not_modified(environ):
                return self._static_response(static_file.not_modified_response, is_secure, True)
            path, headers = static_file.get_path_and_headers(environ)
        except Exception:  # noqa: BLE001 - get_response() then fails the same way and logs it
            return None
        # The StaticResponse itself is reused (the connection only reads it): 2.8 -> 1.8 us
        # per respond() in-process. Keyed like _heads, by a header list we keep alive.
        key = (id(headers), is_secure, method)
        cached = self._responses.get(key)
        if cached is not None and cached[0] is headers:
            return cached[1]
        response = self._prepared_response(path, headers, method, is_secure)
        if response is not None:
            self._responses[key] = (headers, response)
        return response

    def _prepared_response(
        self, path: str, headers: Any, method: str, is_secure: bool
    ) -> StaticResponse | None:
        fields = self._fields(headers, HTTPStatus.OK, is_secure, has_file=method == "GET")
        status, status_code, head_headers, content_length, prepared = fields
        data, fd, count = None, -1, 0
        if method == "GET" and content_length is not None:
            body = self._bodies.get(path) or self._open_body(path, content_length)
            if body is None:
                return None
            (data, fd), count = body, content_length
        return StaticResponse(
            status=status,
            status_code=status_code,
            headers=head_headers,
            content_length=content_length,
            file=None,
            fd=fd,
            count=count,
            prepared=prepared,
            body=data,
        )

    def _open_body(self, path: str, size: int) -> _Body | None:
        """Open (and, when small, read) one variant for this worker; None when it cannot be
        read as the table describes it (the slow path then reports it)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        data = None
        if size <= MEMORY_FILE_BYTES and self._bodies_bytes + size <= MEMORY_BUDGET_BYTES:
            try:
                data = os.pread(fd, size, 0)
            except OSError:
                data = b""
            finally:
                os.close(fd)
            if len(data) != size:
                return None  # shrank since the scan; short reads of regular files are EOF
            self._bodies_bytes += size
            fd = -1
        if len(self._bodies) >= MAX_CACHED_FILES:
            self._forget(next(iter(self._bodies)))
        body = self._bodies[path] = (data, fd)
        return body

    def _forget(self, path: str) -> None:
        # A segment still being sent has its own dup() of the descriptor; a cached response
        # must not outlive it (its number may be reused): they are cheap to make again.
        self._responses.clear()
        data, fd = self._bodies.pop(path)
        if data is not None:
            self._bodies_bytes -= len(data)
        if fd >= 0:
            os.close(fd)

    def _static_response(
        self, response: Any, is_secure: bool, is_cacheable: bool
    ) -> StaticResponse:
        has_file = response.file is not None
        if is_cacheable:
            fields = self._fields(response.headers, response.status, is_secure, has_file=has_file)
        else:
            fields = self._head_fields(response.headers, response.status, is_secure, has_file)
        status, status_code, headers, content_length, prepared = fields
        file = response.file
        fd, offset, count = -1, 0, 0
        if file is not None:
            if type(file) is SlicedFile:
                fileobj = file.fileobj
                fd, offset, count = fileobj.fileno(), fileobj.tell(), file.remaining
            else:
                fd, count = file.fileno(), content_length or 0
        return StaticResponse(
            status=status,
            status_code=status_code,
            headers=headers,
            content_length=content_length,
            file=file,
            fd=fd,
            offset=offset,
            count=count,
            prepared=prepared,
        )

    def _fields(
        self, headers: Any, status: HTTPStatus, is_secure: bool, *, has_file: bool
    ) -> _HeadFields:
        # The header lists of the table's files are long-lived: validate and encode each one
        # once (keeping a reference, so that its id cannot be reused). A list with a
        # Content-Length (every 200 and 206) gives the same fields with or without a file.
        key = (id(headers), is_secure)
        cached = self._heads.get(key)
        if cached is not None and cached[0] is headers:
            return cached[1]
        fields = self._head_fields(headers, status, is_secure, has_file)
        self._heads[key] = (headers, fields)
        return fields

    def _head_fields(
        self, response_headers: Any, status: HTTPStatus, is_secure: bool, has_file: bool
    ) -> _HeadFields:
        headers = list(response_headers)
        content_length = None
        for name, value in headers:
            if name == "Content-Length":
                content_length = int(value)
                break
        extra = self._always_headers
        if is_secure and self._hsts is not None:
            extra = (*extra, self._hsts)
        if self._has_custom_headers:
            present = {name.lower() for name, _ in headers}
            extra = tuple(item for item in extra if item[0].lower() not in present)
        headers += extra
        if not has_file and content_length is None and status != 304:
            # 405, 416, 302: say that there is no body rather than leave the length open.
            content_length = 0
            headers.append(("Content-Length", "0"))
        status_line = f"{status.value} {status.phrase}"
        try:
            prepared = _HEAD_WRITER.prepare_head(status=status_line, headers=headers)
        except ApplicationError:
            prepared = None  # the connection's head() raises it again and answers 500
        return status_line, status.value, headers, content_length, prepared

    def _is_secure(self, request: Request) -> bool:
        proxy = self._proxy_ssl_header
        if proxy is None:
            return False
        name, secure_value = proxy
        for header, value in request.headers:
            if header == name:
                # Django's HttpRequest.scheme: the first comma-separated value decides.
                return value.split(b",", 1)[0].strip().decode("latin-1") == secure_value
        return False


def build_static_table(
    settings: LazySettings, *, serve_static: bool, serve_media: bool, script_name: str = ""
) -> StaticTable | None:
    """The static (and media) table for ``settings``, built once before fork; None when there
    is nothing to serve."""
    static = _static_whitenoise(settings) if serve_static else None
    media, media_prefix = _media_whitenoise(settings) if serve_media else (None, "/")
    if static is None and media is None:
        return None
    table = StaticTable(
        static=static,
        media=media,
        media_prefix=media_prefix,
        script_name=script_name,
        settings=settings,
    )
    logger.debug("Static table: %d file(s) under %s", len(table), table.prefixes)
    return table


def describe_static_files(
    settings: LazySettings, table: StaticTable | None, *, serve_static: bool, serve_media: bool
) -> str:
    """What the workers answer themselves, for the command's banner: off, or what is served."""
    media = _describe_media(settings) if serve_media else ""
    if not serve_static:
        return "off" + media
    static_root = getattr(settings, "STATIC_ROOT", None)
    if table is not None and len(table):
        text = f"{static_root} ({len(table)} URLs)"
    elif table is not None:  # autorefresh (DEBUG): looked up on disk and in the finders
        text = f"{static_root or 'STATIC_ROOT not set'}, and the finders (autorefresh)"
    elif static_root:
        text = f"{static_root} (empty: run collectstatic)"
    else:
        text = "on, but STATIC_ROOT is not set"
    return text + media


def _describe_media(settings: LazySettings) -> str:
    media_root = getattr(settings, "MEDIA_ROOT", None)
    if not media_root:
        return "; media: MEDIA_ROOT is not set"
    return f"; media: {media_root} at {settings.MEDIA_URL}"


def _static_whitenoise(settings: LazySettings) -> WhiteNoise | None:
    if not getattr(settings, "STATIC_URL", None):
        return None
    # The middleware's own constructor reads every WHITENOISE_* setting, STATIC_ROOT,
    # STATIC_URL (minus FORCE_SCRIPT_NAME) and WHITENOISE_ROOT, adds the finders' files when
    # WHITENOISE_USE_FINDERS, and knows the manifest's hashed (immutable) names. It never calls
    # get_response here: we only keep its table and its StaticFile objects.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        whitenoise = WhiteNoiseMiddleware(get_response=None, settings=settings)
    for warning in caught:  # "No directory at: STATIC_ROOT" before the first collectstatic
        logger.warning("Static files: %s", warning.message)
    if not whitenoise.autorefresh and not whitenoise.files:
        return None
    return whitenoise


def _media_whitenoise(settings: LazySettings) -> tuple[WhiteNoise | None, str]:
    media_root = getattr(settings, "MEDIA_ROOT", None)
    media_url = getattr(settings, "MEDIA_URL", None)
    if not media_root or not media_url:
        logger.warning("SERVE_MEDIA is on but MEDIA_ROOT or MEDIA_URL is not set")
        return None, "/"
    prefix = ensure_leading_trailing_slash(urlparse(str(media_url)).path)
    max_age = getattr(settings, "WHITENOISE_MAX_AGE", 0 if settings.DEBUG else 60)
    # Uploads appear at any time: autorefresh looks each URL up on disk (within the root).
    media = WhiteNoise(
        None,
        autorefresh=True,
        max_age=max_age,
        allow_all_origins=False,
        charset=getattr(settings, "WHITENOISE_CHARSET", "utf-8"),
        mimetypes=getattr(settings, "WHITENOISE_MIMETYPES", None),
    )
    media.add_files(os.fspath(media_root), prefix=prefix)
    return media, prefix
