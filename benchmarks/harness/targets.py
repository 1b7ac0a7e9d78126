"""The performance targets, checked against the medians of one run, and the summary matrix.

Targets (one worker, keep-alive, medians):

- Django views: >= 0.75 of the in-process limit, ahead of uWSGI and granian, and >= 2.4x
  gunicorn gthread (checked at keep-alive c64, the throughput scenario, per Django endpoint
  with an in-process limit);
- plain WSGI hello: >= 2x waitress (keep-alive c64 and c1);
- blocking view (50 ms of I/O, 256 connections): our threads reach gunicorn gevent's
  throughput (>= 0.95 of it counts as reached) with bounded memory (RSS reported).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.report import DIRECT, FAIRNESS, INPROCESS, median_rps, ratio, select, summarize

if TYPE_CHECKING:
    from harness.report import RunRecord

__all__ = ["Target", "check_targets", "render_matrix", "render_targets", "summary_matrix"]

OURS = "ours"
MAIN_SCENARIO = "keep-alive c64"
DJANGO_ENDPOINTS = ("json", "template-db", "post-100k", "file-1m")
BLOCKING_ENDPOINT = "sleep-50ms"
BLOCKING_SCENARIO = "keep-alive c256"
REACHED = 0.95  # "reach the throughput of": within 5 %


@dataclass(frozen=True, slots=True)
class Target:
    """One row of the targets table."""

    what: str
    goal: str
    measured: float | None  # the ratio
    threshold: float
    detail: str = ""

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "not measured"
        return "met" if self.measured >= self.threshold else "missed"


def _vs(records: list[RunRecord], endpoint: str, scenario: str, other: str) -> float | None:
    ours = median_rps(records, endpoint, OURS, scenario)
    reference = (
        median_rps(records, endpoint, INPROCESS, DIRECT)
        if other == INPROCESS
        else median_rps(records, endpoint, other, scenario)
    )
    return ratio(ours, reference)


def _starvation(records: list[RunRecord], server: str) -> str:
    """A caveat when the fairness run saw ``server`` leave connections without responses."""
    runs = [r for r in records if r.mode == FAIRNESS and r.server == server and r.measured]
    zero = _median_int([r.conn_zero for r in runs if r.conn_zero is not None])
    if not zero or server in (OURS, INPROCESS):
        return ""
    total = runs[0].concurrency
    return f"{server} left {zero} of {total} keep-alive connections unserved (fairness run)"


def _median_int(values: list[int]) -> int | None:
    return sorted(values)[len(values) // 2] if values else None


def _django_targets(records: list[RunRecord], endpoint: str) -> list[Target]:
    where = f"{endpoint}, {MAIN_SCENARIO}"
    checks = (
        ("of the in-process limit", "≥ 0.75", INPROCESS, 0.75),
        ("vs uwsgi", "> 1 (ahead; uWSGI ≈ 0.66 of the limit)", "uwsgi", 1.0),
        ("vs granian", "> 1 (ahead; granian ≈ 0.50 of the limit)", "granian", 1.0),
        ("vs gunicorn-gthread", "≥ 2.4", "gunicorn-gthread", 2.4),
    )
    return [
        Target(
            f"{where}: ours {label}",
            goal,
            _vs(records, endpoint, MAIN_SCENARIO, other),
            bar,
            _starvation(records, other),
        )
        for label, goal, other, bar in checks
    ]


def _blocking_target(records: list[RunRecord]) -> Target:
    ours = summarize(select(records, BLOCKING_ENDPOINT, OURS, BLOCKING_SCENARIO))
    gevent = summarize(select(records, BLOCKING_ENDPOINT, "gunicorn-gevent", BLOCKING_SCENARIO))
    detail = (
        f"ours {ours.threads or '?'} threads: {_num(ours.rps)} req/s, RSS {_num(ours.rss_mb)} MiB; "
        f"gevent: {_num(gevent.rps)} req/s, RSS {_num(gevent.rss_mb)} MiB"
    )
    return Target(
        f"{BLOCKING_ENDPOINT}, {BLOCKING_SCENARIO}: ours vs gunicorn-gevent",
        f"≥ {REACHED} (reach gevent's throughput), memory bounded",
        ratio(ours.rps, gevent.rps),
        REACHED,
        detail,
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def check_targets(records: list[RunRecord]) -> list[Target]:
    targets: list[Target] = []
    for endpoint in DJANGO_ENDPOINTS:
        if any(record.endpoint == endpoint and record.measured for record in records):
            targets += _django_targets(records, endpoint)
    for scenario in (MAIN_SCENARIO, "keep-alive c1"):
        targets.append(
            Target(
                f"hello, {scenario}: ours vs waitress",
                "≥ 2.0",
                _vs(records, "hello", scenario, "waitress"),
                2.0,
            )
        )
    targets.append(_blocking_target(records))
    return [target for target in targets if target.measured is not None or target.detail]


def render_targets(records: list[RunRecord]) -> list[str]:
    lines = [
        "## Targets",
        "",
        "One worker, medians. Django targets at keep-alive c64 for every Django endpoint "
        "with an in-process limit (the targets name Django views); the endpoint "
        "sections below also show keep-alive c1 and Connection: close.",
        "",
        "| target | goal | measured | verdict | detail |",
        "|---|---|---|---|---|",
    ]
    for target in check_targets(records):
        measured = "-" if target.measured is None else f"{target.measured:.2f}"
        lines.append(
            f"| {target.what} | {target.goal} | {measured} | **{target.verdict}** "
            f"| {target.detail} |"
        )
    return [*lines, ""]


def summary_matrix(
    records: list[RunRecord], servers: list[str], endpoints: list[tuple[str, str]]
) -> dict[str, dict[str, float]]:
    """{endpoint: {server: median req/s}} for (endpoint, scenario) pairs; the plot's data."""
    matrix: dict[str, dict[str, float]] = {}
    for endpoint, scenario in endpoints:
        row = {}
        for server in [INPROCESS, *servers]:
            rps = (
                median_rps(records, endpoint, server, DIRECT if server == INPROCESS else scenario)
                if server != INPROCESS or scenario != BLOCKING_SCENARIO
                else None
            )
            if rps is not None:
                row[server] = rps
        if row:
            matrix[f"{endpoint} ({scenario})"] = row
    return matrix


def render_matrix(
    matrix: dict[str, dict[str, float]], servers: list[str], image: str | None
) -> list[str]:
    """The summary table (and the plot under it when ``image`` is given)."""
    everyone = [INPROCESS, *servers]
    columns = [server for server in everyone if any(server in row for row in matrix.values())]
    lines = [
        "## Summary: req/s (median) per endpoint and server",
        "",
        "| endpoint | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, row in matrix.items():
        cells = [_num(row.get(server)) for server in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    return [*lines, f"![req/s per server and endpoint]({image})", ""] if image else lines
