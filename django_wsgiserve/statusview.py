"""The control socket's status, for people: ``render_status`` and ``render_config``.

Design note. ``manage.py servectl status`` prints what the master's ``status`` reply holds
(arbiter/status.py) as three tables: the workers, the requests running (oldest first, so what
is stuck is on top), and the options that are not at their default, each with its source;
``servectl config`` prints every option, like ``serve --print-config``. Pure functions of the
reply document (JSON data), so they are tested without a server; a field the master did not
send (an older master, or an adopted worker's unknown counts) shows as ``-``.

Imports only the stdlib; never Django.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["format_bytes", "format_duration", "render_config", "render_status"]

_MISSING = "-"


def render_status(document: Mapping[str, Any]) -> list[str]:
    """The status reply as lines: a summary, the workers, the running requests, the options
    set (not at their default)."""
    server = document.get("server") or {}
    workers = document.get("workers") or []
    requests = document.get("requests") or []
    threads = server.get("threads")
    state = str(server.get("state", _MISSING))
    if server.get("is_reloading"):
        state += ", reloading"
    lines = [
        f"Master pid {server.get('pid', _MISSING)}: {state}; "
        f"{server.get('workers_wanted', _MISSING)} worker(s) wanted, "
        f"{threads if threads is not None else _MISSING} thread(s) each",
        *(f"Listening at {url}" for url in server.get("listening") or []),
        f"Control socket {server.get('control_socket') or _MISSING}",
        "",
    ]
    rows: list[tuple[str, ...]] = [
        (
            _text(worker.get("number")),
            _text(worker.get("pid")),
            str(worker.get("state", _MISSING)) + (" (adopted)" if worker.get("is_adopted") else ""),
            format_duration(worker.get("age_s")),
            _text(worker.get("requests")),
            _text(worker.get("connections")),
            _busy(worker.get("busy_threads"), threads),
            format_bytes(worker.get("rss_bytes")),
            _seconds(worker.get("cpu_s")),
        )
        for worker in workers
    ]
    headers = ("WORKER", "PID", "STATE", "AGE", "REQUESTS", "CONNS", "BUSY", "RSS", "CPU")
    lines += _table(headers, rows) if rows else ["No worker."]
    lines.append("")
    if requests:
        lines.append(f"{len(requests)} request(s) running, oldest first:")
        rows = [
            (
                format_duration(request.get("age_s")),
                _text(request.get("worker")),
                _text(request.get("worker_pid")),
                _text(request.get("thread_id")),
                _text(request.get("method")),
                _text(request.get("path")),
            )
            for request in sorted(requests, key=_age, reverse=True)
        ]
        lines += _table(("AGE", "WORKER", "PID", "THREAD", "METHOD", "PATH"), rows)
    else:
        lines.append("No request running.")
    options = [row for row in document.get("config") or [] if row.get("source") != "default"]
    lines.append("")
    if options:
        lines.append("Options set (servectl config shows them all):")
        lines += render_config({"config": options})
    else:
        lines.append("Every option has its default (servectl config shows them).")
    return lines


def render_config(document: Mapping[str, Any]) -> list[str]:
    """The options of a status reply, as ``serve --print-config`` shows them."""
    rows = [
        (_text(row.get("option")), _text(row.get("shown")), _text(row.get("source")))
        for row in document.get("config") or []
    ]
    return _table(("OPTION", "VALUE", "SOURCE"), rows)


def format_duration(seconds: object) -> str:
    """``0.42s``, ``12.3s``, ``4m05s``, ``2h03m``, ``3d04h``; ``-`` when unknown."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return _MISSING
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def format_bytes(size: object) -> str:
    """``812 KiB``, ``85.2 MiB``, ``1.5 GiB``; ``-`` when unknown."""
    if not isinstance(size, (int, float)) or isinstance(size, bool):
        return _MISSING
    if size < 1 << 20:
        return f"{size / 1024:.0f} KiB"
    if size < 1 << 30:
        return f"{size / (1 << 20):.1f} MiB"
    return f"{size / (1 << 30):.1f} GiB"


def _seconds(value: object) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return _MISSING
    return f"{value:.1f}s"


def _busy(busy: object, threads: object) -> str:
    if busy is None:
        return _MISSING
    return f"{busy}/{threads}" if threads is not None else str(busy)


def _age(request: Mapping[str, Any]) -> float:
    age = request.get("age_s")
    return float(age) if isinstance(age, (int, float)) else 0.0


def _text(value: object) -> str:
    # Control characters in a path would move the terminal's cursor: show them escaped.
    text = _MISSING if value is None else str(value)
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart; the last column is not padded."""
    widths = [max(len(row[index]) for row in (headers, *rows)) for index in range(len(headers))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
