"""The load generator: wrk (from Debian, harness/debian.py, if missing), its output parsed.

wrk is a closed-loop C client (each connection sends its next request
when the previous response is complete). It is pinned to its own CPU so that it never
competes with the server for a core.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.debian import ensure_debian_packages
from harness.procs import child_env, run_bounded

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["LoadResult", "Scenario", "ensure_wrk", "parse_wrk_output", "run_wrk", "wrk_version"]

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_PERCENTILE = r"^\s+{}%\s+([\d.]+)(us|ms|s|m|h)\s*$"
_LATENCY_MAX = re.compile(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m|h)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One load shape: how many connections, and whether they are kept alive."""

    connections: int
    keepalive: bool

    @property
    def mode(self) -> str:
        return "keep-alive" if self.keepalive else "close"

    @property
    def name(self) -> str:
        return f"{self.mode} c{self.connections}"

    @property
    def wrk_threads(self) -> int:
        # -t1 for one connection, -t2 otherwise: two event loops keep wrk ahead of any
        # pure-Python server while sharing the one client core.
        return 1 if self.connections == 1 else 2


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one wrk run reported (latencies in milliseconds)."""

    rps: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    non_2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    def describe_errors(self) -> str:
        parts = [f"non-2xx {self.non_2xx}"] if self.non_2xx else []
        parts += [f"socket {kind} {n}" for kind, n in self.socket_errors.items() if n]
        return ", ".join(parts)


def _milliseconds(match: re.Match[str] | None) -> float | None:
    return float(match.group(1)) * _UNIT_MS[match.group(2)] if match else None


def parse_wrk_output(text: str) -> LoadResult | None:
    """Parse wrk's report (run with --latency); None if it has no Requests/sec line."""
    rate = _RATE.search(text)
    if rate is None:
        return None
    total = _TOTAL.search(text)
    non_2xx = _NON_2XX.search(text)
    socket_errors = _SOCKET_ERRORS.search(text)
    kinds = ("connect", "read", "write", "timeout")
    return LoadResult(
        rps=float(rate.group(1)),
        requests=int(total.group(1)) if total else 0,
        p50_ms=_milliseconds(re.search(_PERCENTILE.format(50), text, re.MULTILINE)),
        p99_ms=_milliseconds(re.search(_PERCENTILE.format(99), text, re.MULTILINE)),
        max_ms=_milliseconds(_LATENCY_MAX.search(text)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=dict(zip(kinds, map(int, socket_errors.groups()), strict=True))
        if socket_errors
        else {},
    )


def ensure_wrk() -> str:
    """Path to wrk; installs Debian's ``wrk`` package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    error = ensure_debian_packages(["wrk"], why="the load generator")
    if error is not None:
        raise RuntimeError(error)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("apt-get installed wrk but it is not on PATH")
    return found


def wrk_version(wrk: str) -> str:
    # `wrk -v` prints its version banner and exits non-zero.
    output = run_bounded([wrk, "-v"], timeout_s=10).output.strip()
    first_line = output.splitlines()[0] if output else "wrk (unknown version)"
    return first_line.split(" Copyright")[0]


def run_wrk(
    wrk: str,
    url: str,
    scenario: Scenario,
    *,
    duration_s: int,
    timeout_s: int,
    pin: list[str],
    script: Path | None = None,
) -> tuple[LoadResult | None, str]:
    """One bounded wrk run; returns (result or None, wrk's raw output).

    ``timeout_s`` is wrk's --timeout: every 2 s wrk counts each connection whose request
    has waited longer as a "timeout" socket error. A short one (1 s) makes starved
    connections (a server serving a few connections and ignoring the rest) visible:
    wrk's latency statistics only ever include requests that completed. ``script`` is a
    wrk Lua script (``-s``), e.g. one that turns every request into a POST with a body.
    """
    argv = [
        *pin,
        wrk,
        f"-t{scenario.wrk_threads}",
        f"-c{scenario.connections}",
        f"-d{duration_s}s",
        "--timeout",
        f"{timeout_s}s",
        "--latency",
    ]
    if not scenario.keepalive:
        argv += ["-H", "Connection: close"]
    if script is not None:
        argv += ["-s", str(script)]
    result = run_bounded([*argv, url], timeout_s=duration_s + 30, env=child_env())
    return parse_wrk_output(result.output), result.output
