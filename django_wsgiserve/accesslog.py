"""Access log: one INFO record per response on the ``django_wsgiserve.access`` logger.

Design note:

* ``AccessLog.log()`` is on the per-request hot path. When the logger is not enabled for INFO it
  returns after one ``isEnabledFor`` check (cached by ``logging``); otherwise it builds one
  message and calls ``logger.info`` once. The text formats pass their fields as lazy ``%s``
  arguments, so the line is only formatted if a handler emits it, and aggregators can group on
  the constant message template. The ``[%d/%b/%Y:%H:%M:%S %z]`` timestamp is rendered once per
  second and cached (English month names, whatever the locale, as Apache and nginx write them).
* Request-derived text (method, target, version, Referer, User-Agent) is escaped before it is
  logged: control characters (C0, DEL and C1, which includes the 8-bit CSI) become ``\\xNN`` or
  ``\\n``/``\\r``/``\\t``, and ``"``/``\\`` are backslash-escaped, so a client can neither inject
  log lines, nor terminal escapes, nor fake fields. The JSON format relies on ``json.dumps``.
* Structured fields go in ``extra=`` (``status_code``, ``request_time_ms``, ``peer``,
  ``worker_pid``, ``bytes_sent``, ``method``, ``path``) for JSON or coloured handlers.
* Safe to call from any thread: the timestamp cache is one tuple swapped atomically.
* Batched writes. ``BufferedStreamHandler`` (what ``default_logging_config()`` installs for
  the access logger) keeps formatted lines in a deque, without taking a lock per line, and
  writes them with one ``write`` when flushed: by the worker's loop every ``FLUSH_INTERVAL_S``
  (checked once per turn), on drain
  and at exit (``logging.shutdown`` flushes too), or by the thread whose line fills
  ``MAX_PENDING_LINES``. When the access logger is configured exactly that way (one such
  handler, ``%(message)s``, no filters, not propagating), ``AccessLog`` skips the logging
  machinery altogether and hands the line straight to the handler: no ``LogRecord``, no
  handler lock, one string format. Any other ``LOGGING`` for ``django_wsgiserve.access``
  gets every line the ordinary way, through ``logger.info``.
* The library never installs handlers. ``default_logging_config()`` is a ``dictConfig`` fragment
  that only the management command applies, and only when ``settings.LOGGING`` configures
  neither ``django_wsgiserve`` nor ``django_wsgiserve.access``. ``AccessFormatter`` colours lines
  by status like Django's ``ServerFormatter``, with ANSI codes written here.

Imports only the stdlib; never Django.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from .http.events import Request

__all__ = [
    "ACCESS_LOGGER_NAME",
    "FORMATS",
    "AccessFormatter",
    "AccessLog",
    "BufferedStreamHandler",
    "default_logging_config",
    "escape",
]

ACCESS_LOGGER_NAME = "django_wsgiserve.access"
# How often the loop writes the lines kept so far: a log line lands within this long of its
# response, and a busy worker writes ~100 times a second instead of at every turn of its loop.
FLUSH_INTERVAL_S = 0.01
FORMATS = ("combined", "common", "json", "django")

# Apache's %r/%i escaping rules (mod_log_config): no raw control bytes, quotes escaped.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f"\\]')
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_COMBINED = '%s - - [%s] "%s %s %s" %s %s "%s" "%s"'
_COMMON = '%s - - [%s] "%s %s %s" %s %s'
_DJANGO = '"%s %s %s" %s %s'  # runserver: "GET / HTTP/1.1" 200 1234


def _escape_match(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or f"\\x{ord(char):02x}"


def escape(text: str) -> str:
    """Backslash-escape control characters, ``"`` and ``\\`` in request-derived text."""
    # Printable ASCII without a quote or a backslash (nearly every field) is returned as it
    # is, at a third of the cost of the regular expression's search.
    if _is_safe(text):
        return text
    return _UNSAFE.sub(_escape_match, text)


def _is_safe(text: str) -> bool:
    """True when ``escape`` would return ``text`` as it is. A property of each character,
    so several fields can be checked at once, joined."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def _clf_time(second: int) -> str:
    """``10/Oct/2000:13:55:36 -0700`` in local time (Apache's %t without the brackets)."""
    local = time.localtime(second)
    offset_minutes = (local.tm_gmtoff or 0) // 60
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return (
        f"{local.tm_mday:02d}/{_MONTHS[local.tm_mon - 1]}/{local.tm_year}:"
        f"{local.tm_hour:02d}:{local.tm_min:02d}:{local.tm_sec:02d} {sign}{hours:02d}{minutes:02d}"
    )


def _iso_time(second: int) -> str:
    """``2000-10-10T13:55:36-07:00`` in local time (the JSON format's ``time``)."""
    local = time.localtime(second)
    offset = time.strftime("%z", local)
    return time.strftime("%Y-%m-%dT%H:%M:%S", local) + f"{offset[:3]}:{offset[3:]}"


class AccessLog:
    """Renders and logs one access record per response; construct once per worker process.

    ``format`` is one of ``FORMATS`` (the ACCESS_LOG_FORMAT option); ``clock`` is the wall clock
    (``time.time``), used for timestamps only. Any thread may call ``log()``.
    """

    __slots__ = (
        "_clock",
        "_colour",
        "_direct",
        "_flushed_at",
        "_format",
        "_format_time",
        "_logger",
        "_time_cache",
        "_worker_pid",
    )

    def __init__(
        self,
        *,
        format: str = "combined",  # noqa: A002 (named after the ACCESS_LOG_FORMAT option)
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown access log format {format!r}: expected one of {FORMATS}")
        self._format = format
        self._format_time = _iso_time if format == "json" else _clf_time
        self._logger = logger if logger is not None else logging.getLogger(ACCESS_LOGGER_NAME)
        self._clock = clock
        self._time_cache: tuple[int, str] = (-1, "")
        self._worker_pid = os.getpid()
        self._flushed_at = 0.0
        # The handler lines go straight to, when the logger is configured the default way.
        self._direct = _direct_handler(self._logger)
        self._colour = self._direct is not None and bool(
            getattr(self._direct.formatter, "colour", False)
        )

    def flush_if_due(self, now: float) -> None:
        """``flush()`` when ``FLUSH_INTERVAL_S`` has passed since the last one (the loop, once
        a turn, with its clock): under load a turn takes tens of microseconds, and a write
        per turn cost more than the lines themselves."""
        if now - self._flushed_at >= FLUSH_INTERVAL_S:
            self._flushed_at = now
            self.flush()

    def flush(self) -> None:
        """Write what the access logger's buffered handlers hold (drain, exit)."""
        direct = self._direct
        if direct is not None:
            direct.flush()
            return
        for handler in self._logger.handlers:
            if type(handler) is BufferedStreamHandler:
                handler.flush()

    def log(
        self,
        *,
        peer: str,
        method: str,
        target: str,
        http_version: str,
        status_code: int,
        bytes_sent: int,
        request_time_s: float,
        referer: str,
        user_agent: str,
    ) -> None:
        """Log one response; returns at once when ``django_wsgiserve.access`` is below INFO."""
        if self._direct is not None:
            self._log_direct(
                peer, method, target, http_version, status_code, bytes_sent, request_time_s,
                referer, user_agent,
            )  # fmt: skip
            return
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        extra = self._fields(peer, method, target, status_code, bytes_sent, request_time_s)
        log_format = self._format
        if log_format == "json":
            record = {"time": self._now(), **extra, "http_version": http_version}
            record.update(referer=referer, user_agent=user_agent)
            # ensure_ascii: every control and non-ASCII character becomes a \uXXXX escape.
            logger.info("%s", json.dumps(record, ensure_ascii=True), extra=extra)
            return
        request = (escape(method), escape(target), escape(http_version))
        if log_format == "django":
            logger.info(_DJANGO, *request, status_code, bytes_sent, extra=extra)
            return
        size = bytes_sent or "-"  # Apache's %b
        if log_format == "common":
            logger.info(_COMMON, peer, self._now(), *request, status_code, size, extra=extra)
            return
        referer, user_agent = escape(referer) or "-", escape(user_agent) or "-"
        logger.info(
            _COMBINED, peer, self._now(), *request, status_code, size, referer, user_agent,
            extra=extra,
        )  # fmt: skip

    def log_request(
        self,
        request: Request,
        *,
        peer: str,
        status_code: int,
        bytes_sent: int,
        request_time_s: float,
    ) -> None:
        """Log the response to a parsed ``request``: the one place a record's request fields
        (method, target, version, Referer, User-Agent) are taken from it."""
        direct = self._direct
        if direct is None and not self._logger.isEnabledFor(logging.INFO):
            return
        referer = user_agent = b""
        for name, value in request.headers:
            if name == b"referer":
                referer = value
            elif name == b"user-agent":
                user_agent = value
        method, target = request.method.decode("latin-1"), request.target.decode("latin-1")
        version = "HTTP/1.1" if request.http_version == b"1.1" else "HTTP/1.0"
        referer_text, agent = referer.decode("latin-1"), user_agent.decode("latin-1")
        if direct is not None and self._format != "json":
            # The default configuration's text line, without the two calls of log() and
            # _log_direct(): this runs once per response.
            line = self._text_line(
                peer, method, target, version, status_code, bytes_sent, referer_text, agent
            )
            direct.append(line)
            return
        self.log(
            peer=peer,
            method=method,
            target=target,
            http_version=version,
            status_code=status_code,
            bytes_sent=bytes_sent,
            request_time_s=request_time_s,
            referer=referer_text,
            user_agent=agent,
        )

    def _log_direct(
        self,
        peer: str,
        method: str,
        target: str,
        http_version: str,
        status_code: int,
        bytes_sent: int,
        request_time_s: float,
        referer: str,
        user_agent: str,
    ) -> None:
        """The line ``log()`` would make, handed to the buffered handler as it is (no
        ``LogRecord``): what the default logging configuration would write, byte for byte."""
        direct = self._direct
        assert direct is not None
        if self._format != "json":
            line = self._text_line(
                peer, method, target, http_version, status_code, bytes_sent, referer, user_agent
            )
            direct.append(line)
            return
        fields = self._fields(peer, method, target, status_code, bytes_sent, request_time_s)
        record = {"time": self._now(), **fields, "http_version": http_version}
        record.update(referer=referer, user_agent=user_agent)
        line = json.dumps(record, ensure_ascii=True)
        direct.append(self._painted(line, status_code) if self._colour else line)

    def _text_line(
        self,
        peer: str,
        method: str,
        target: str,
        http_version: str,
        status_code: int,
        bytes_sent: int,
        referer: str,
        user_agent: str,
    ) -> str:
        """A combined, common or django line, coloured when the handler's formatter is."""
        # One check of the five fields joined instead of five escape() calls: nearly every
        # request has nothing to escape (0.3 us of a 2 us line, benchmarks/hotpath.py).
        if not _is_safe(method + target + http_version + referer + user_agent):
            method, target, http_version = escape(method), escape(target), escape(http_version)
            referer, user_agent = escape(referer), escape(user_agent)
        log_format = self._format
        if log_format == "django":
            line = _DJANGO % (method, target, http_version, status_code, bytes_sent)
        elif log_format == "common":
            line = _COMMON % (
                peer, self._now(), method, target, http_version, status_code, bytes_sent or "-",
            )  # fmt: skip
        else:
            line = _COMBINED % (
                peer, self._now(), method, target, http_version, status_code, bytes_sent or "-",
                referer or "-", user_agent or "-",
            )  # fmt: skip
        return self._painted(line, status_code) if self._colour else line

    @staticmethod
    def _painted(line: str, status_code: int) -> str:
        """``line`` in the status' colour, when the handler's formatter colours."""
        colour = _colour_of(status_code)
        return f"{colour}{line}{_RESET}" if colour else line

    def _fields(
        self,
        peer: str,
        method: str,
        target: str,
        status_code: int,
        bytes_sent: int,
        request_time_s: float,
    ) -> dict[str, Any]:
        """The structured fields of a record (``extra=``, and the JSON format's keys)."""
        return {
            "status_code": status_code,
            "request_time_ms": round(request_time_s * 1000.0, 3),
            "peer": peer,
            "worker_pid": self._worker_pid,
            "bytes_sent": bytes_sent,
            "method": method,
            "path": target,
        }

    def _now(self) -> str:
        second = int(self._clock())
        cached = self._time_cache
        if cached[0] != second:
            cached = (second, self._format_time(second))
            self._time_cache = cached  # one tuple: readers never see a half-updated cache
        return cached[1]


# Django's DARK_PALETTE (django/utils/termcolors.py) for the HTTP_* roles: fg code, then bold.
_RESET = "\x1b[0m"
_INFO, _REDIRECT, _NOT_MODIFIED = "\x1b[1m", "\x1b[32m", "\x1b[36m"
_NOT_FOUND, _CLIENT_ERROR, _SERVER_ERROR = "\x1b[33m", "\x1b[31;1m", "\x1b[35;1m"


def _colour_of(status_code: int) -> str:
    if 200 <= status_code < 300:
        return ""  # the common case, plain
    if 100 <= status_code < 200:
        return _INFO
    if status_code == 304:
        return _NOT_MODIFIED
    if 300 <= status_code < 400:
        return _REDIRECT
    if status_code == 404:
        return _NOT_FOUND
    if 400 <= status_code < 500:
        return _CLIENT_ERROR
    return _SERVER_ERROR


class AccessFormatter(logging.Formatter):
    """A ``logging.Formatter`` that, with ``colour=True``, colours whole lines by status code.

    Records without an integer ``status_code`` attribute are left plain.
    """

    def __init__(
        self, fmt: str | None = None, datefmt: str | None = None, *, colour: bool = False
    ) -> None:
        super().__init__(fmt, datefmt)
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record``, wrapped in its status colour when colouring is on."""
        line = super().format(record)
        status_code = getattr(record, "status_code", None)
        if not self.colour or not isinstance(status_code, int):
            return line
        colour = _colour_of(status_code)
        return f"{colour}{line}{_RESET}" if colour else line


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` that writes its lines in batches; see the module notes.

    ``flush()`` writes every line kept so far with one ``write`` (and flushes the stream). The
    owner of the stream calls it often (the worker's loop, once per turn); a thread whose line
    makes ``max_pending_lines`` flushes at once, so memory stays bounded whatever the owner
    does. Lines are kept in a ``collections.deque``, whose ``append`` and ``popleft`` are
    atomic, so no lock is taken per line; the handler's lock serializes the writes.
    Usable in a project's own ``LOGGING`` like any handler (``"class":
    "django_wsgiserve.accesslog.BufferedStreamHandler"``).
    """

    # A few milliseconds of lines at tens of thousands a second.
    MAX_PENDING_LINES = 256

    def __init__(self, stream: Any = None, *, max_pending_lines: int = MAX_PENDING_LINES) -> None:
        super().__init__(stream)
        self._pending: collections.deque[str] = collections.deque()
        self._max_pending = max_pending_lines

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter and emit without the handler lock (``emit`` only appends)."""
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.append(self.format(record))
        except Exception:  # noqa: BLE001 - logging's contract: report, never raise
            self.handleError(record)

    def append(self, line: str) -> None:
        """Keep ``line`` for the next write (any thread)."""
        pending = self._pending
        pending.append(line)
        if len(pending) >= self._max_pending:
            self.flush()

    def flush(self) -> None:
        """Write every line kept so far, in one write (any thread)."""
        pending = self._pending
        if not pending:
            return
        with self.lock:  # type: ignore[union-attr]
            lines = []
            try:
                while True:
                    lines.append(pending.popleft())
            except IndexError:
                pass
            if not lines:
                return
            try:
                terminator = self.terminator
                self.stream.write(terminator.join(lines) + terminator)
                super().flush()
            except Exception:  # noqa: BLE001 - logging's contract: report, never raise
                self.handleError(logging.makeLogRecord({"msg": "access log write failed"}))

    def close(self) -> None:
        self.flush()
        super().close()


def _direct_handler(logger: logging.Logger) -> BufferedStreamHandler | None:
    """The handler ``AccessLog`` may hand lines to directly: when ``logger`` is configured as
    ``default_logging_config()`` does it (one ``BufferedStreamHandler`` formatting bare
    messages, no filters anywhere, INFO enabled, not propagating); else None."""
    if logger.filters or logger.propagate or not logger.isEnabledFor(logging.INFO):
        return None
    if len(logger.handlers) != 1:
        return None
    handler = logger.handlers[0]
    if type(handler) is not BufferedStreamHandler or handler.filters:
        return None
    if handler.level > logging.INFO:
        return None
    formatter = handler.formatter
    if type(formatter) is not AccessFormatter or formatter._fmt != "%(message)s":
        return None
    return handler


def default_logging_config(*, colour: bool) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` fragment for projects that do not configure our loggers.

    ``django_wsgiserve`` logs INFO and up to stderr as ``time [pid] LEVEL name: message``;
    ``django_wsgiserve.access`` logs bare lines to stdout through ``AccessFormatter`` and a
    ``BufferedStreamHandler`` (batched writes; the fast path of ``AccessLog``). Neither
    propagates, so a root handler in the project's LOGGING does not print them twice. The
    library never applies it: the ``serve`` command does, only when ``settings.LOGGING``
    mentions neither logger.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "incremental": False,
        "formatters": {
            "django_wsgiserve": {
                "format": "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
            },
            ACCESS_LOGGER_NAME: {
                "()": f"{__name__}.AccessFormatter",
                "fmt": "%(message)s",
                "colour": colour,
            },
        },
        "handlers": {
            "django_wsgiserve": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "django_wsgiserve",
            },
            ACCESS_LOGGER_NAME: {
                "class": f"{__name__}.BufferedStreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": ACCESS_LOGGER_NAME,
            },
        },
        "loggers": {
            "django_wsgiserve": {
                "handlers": ["django_wsgiserve"],
                "level": "INFO",
                "propagate": False,
            },
            ACCESS_LOGGER_NAME: {
                "handlers": [ACCESS_LOGGER_NAME],
                "level": "INFO",
                "propagate": False,
            },
        },
    }
