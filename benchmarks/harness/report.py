"""Results: one CSV row per run (raw), and a Markdown table of medians and ratios.

Statuses in the CSV: ``ok``; ``errors`` (the run completed but wrk saw non-2xx responses
or socket errors: it is flagged and still counted); ``failed to start``, ``not installed``,
``unavailable``, ``load failed`` and ``died`` (no rate).
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "DIRECT",
    "FAIRNESS",
    "FAIRNESS_PREFIX",
    "INPROCESS",
    "NOISY_OTHER_CPUS",
    "EndpointInfo",
    "ReportContext",
    "RunRecord",
    "median_rps",
    "ratio",
    "render_markdown",
    "select",
    "write_csv",
]

INPROCESS = "in-process"
DIRECT = "direct"
FAIRNESS = "fairness"  # the mode of per-connection fairness runs (harness/fairness.py)
FAIRNESS_PREFIX = "fairness "  # their scenario: "fairness keep-alive c64"
REFERENCE_SERVERS = ("waitress", "gunicorn-gthread")
# A run during which other processes used more than this many CPUs is flagged "noisy".
NOISY_OTHER_CPUS = 0.25


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One measured (or failed) run; the CSV columns, in order."""

    repetition: int
    server: str
    endpoint: str
    scenario: str
    mode: str
    concurrency: int
    status: str
    rps: float | None = None
    requests: int | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    non_2xx: int = 0
    socket_errors: int = 0
    other_cpus: float | None = None  # CPUs used by other processes during the run
    note: str = ""
    threads: int | None = None  # threads per worker given to a threaded server
    rss_mb: float | None = None  # VmRSS of the server's process group after the run, MiB
    conn_min: int | None = None  # fairness runs: fewest responses on one connection
    conn_median: float | None = None
    conn_max: int | None = None
    conn_zero: int | None = None  # connections that got no response at all

    @property
    def noisy(self) -> bool:
        return self.other_cpus is not None and self.other_cpus > NOISY_OTHER_CPUS

    @property
    def measured(self) -> bool:
        return self.rps is not None and self.status in ("ok", "errors")


def write_csv(records: list[RunRecord], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[field.name for field in fields(RunRecord)])
        writer.writeheader()
        for record in records:
            row = asdict(record)
            row.update({k: f"{v:.3f}" for k, v in row.items() if isinstance(v, float)})
            writer.writerow(row)


@dataclass(frozen=True, slots=True)
class Summary:
    """Medians over the repetitions of one (endpoint, scenario, server)."""

    rps: float | None
    rps_min: float | None
    rps_max: float | None
    p50_ms: float | None
    p99_ms: float | None
    runs: int
    flagged: int
    noisy: int
    notes: tuple[str, ...]
    rss_mb: float | None = None
    threads: int | None = None


def _median(values: list[float | None] | list[float] | list[int]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarize(records: list[RunRecord]) -> Summary:
    measured = [record for record in records if record.measured]
    rates = [record.rps for record in measured if record.rps is not None]
    notes = [f"{record.status}: {record.note}" for record in records if record.note]
    return Summary(
        rps=_median(list(rates)),
        rps_min=min(rates) if rates else None,
        rps_max=max(rates) if rates else None,
        p50_ms=_median([record.latency_p50_ms for record in measured]),
        p99_ms=_median([record.latency_p99_ms for record in measured]),
        runs=len(measured),
        flagged=sum(record.status == "errors" for record in measured),
        noisy=sum(record.noisy for record in measured),
        notes=tuple(dict.fromkeys(notes)),
        rss_mb=_median([record.rss_mb for record in measured]),
        threads=next((record.threads for record in measured if record.threads), None),
    )


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def _ratio(value: float | None, reference: float | None) -> str:
    quotient = ratio(value, reference)
    if quotient is None:
        return "-"
    return f"{quotient:.2f}" if quotient >= 0.1 else f"{quotient:.2g}"


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """What the report says about one endpoint."""

    name: str
    method: str
    path: str
    title: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class ReportContext:
    """What the Markdown report needs besides the records."""

    title: str
    meta: list[str]  # one bullet each: machine, versions, method
    servers: list[str]  # table row order
    endpoints: list[EndpointInfo]
    scenarios: list[str]  # scenario names, table order
    preamble: list[str] = field(default_factory=list)  # Markdown lines after the bullets


_TABLE_HEAD = (
    "| server | threads | req/s (median) | min-max | p50 ms | p99 ms | RSS MiB | vs in-process "
    + "".join(f"| vs {name} " for name in REFERENCE_SERVERS)
    + "| runs | flags |"
)


def select(records: list[RunRecord], endpoint: str, server: str, scenario: str) -> list[RunRecord]:
    return [
        record
        for record in records
        if record.endpoint == endpoint
        and record.server == server
        and record.scenario in (scenario, "-")
    ]


def median_rps(records: list[RunRecord], endpoint: str, server: str, scenario: str) -> float | None:
    return summarize(select(records, endpoint, server, scenario)).rps


def _flags(summary: Summary, records: list[RunRecord]) -> str:
    flags = [f"errors in {summary.flagged} run(s)"] if summary.flagged else []
    flags += [f"noisy machine in {summary.noisy} run(s)"] if summary.noisy else []
    flags += sorted({record.status for record in records if not record.measured})
    return "; ".join(flags)


def _scenario_table(
    records: list[RunRecord], context: ReportContext, endpoint: str, scenario: str
) -> list[str]:
    limit = median_rps(records, endpoint, INPROCESS, DIRECT)
    references = [median_rps(records, endpoint, name, scenario) for name in REFERENCE_SERVERS]
    lines = [f"### {scenario}", "", _TABLE_HEAD, "|---" * (10 + len(REFERENCE_SERVERS)) + "|"]
    for server in context.servers:
        chosen = select(records, endpoint, server, scenario)
        if not chosen:
            continue
        summary = summarize(chosen)
        cells = [
            server,
            _fmt(summary.threads, "d"),
            _fmt(summary.rps),
            f"{_fmt(summary.rps_min)}-{_fmt(summary.rps_max)}" if summary.runs else "-",
            _fmt(summary.p50_ms, ".2f"),
            _fmt(summary.p99_ms, ".2f"),
            _fmt(summary.rss_mb),
            _ratio(summary.rps, limit),
            *(_ratio(summary.rps, reference) for reference in references),
            str(summary.runs),
            _flags(summary, chosen),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def endpoint_scenarios(records: list[RunRecord], context: ReportContext, name: str) -> list[str]:
    """Load scenarios measured on ``name`` (fairness and in-process excluded), in order."""
    seen = [
        r.scenario
        for r in records
        if r.endpoint == name and r.mode not in (DIRECT, FAIRNESS, "-") and r.scenario != "-"
    ]
    return sorted(
        dict.fromkeys(seen),
        key=lambda s: context.scenarios.index(s) if s in context.scenarios else 99,
    )


def _limit_line(records: list[RunRecord], name: str) -> str:
    limit = summarize(select(records, name, INPROCESS, DIRECT))
    if limit.rps is None:
        detail = "; ".join(limit.notes) or "not measured for this endpoint"
        return f"In-process limit: not available ({detail})."
    return (
        f"In-process limit (the app called directly, no server): **{limit.rps:,.0f} req/s** "
        f"(median of {limit.runs}, {_fmt(limit.rps_min)}-{_fmt(limit.rps_max)})."
    )


def _endpoint_section(
    records: list[RunRecord], context: ReportContext, endpoint: EndpointInfo
) -> list[str]:
    name = endpoint.name
    heading = f"## {name}: `{endpoint.method} {endpoint.path}`, {endpoint.title}"
    lines = [heading, ""] + ([endpoint.note, ""] if endpoint.note else [])
    if not any(record.endpoint == name and record.measured for record in records):
        notes = sorted(
            {record.note for record in records if record.endpoint == name and record.note}
        )
        return [*lines, "Not measured: " + ("; ".join(notes) or "no runs") + ".", ""]
    lines += [_limit_line(records, name), ""]
    for scenario in endpoint_scenarios(records, context, name):
        lines += _scenario_table(records, context, name, scenario)
    return lines


def _fairness_section(records: list[RunRecord], context: ReportContext) -> list[str]:
    chosen = [record for record in records if record.mode == FAIRNESS]
    if not chosen:
        return []
    first = chosen[0]
    lines = [
        f"## Per-connection fairness: {first.endpoint}, {first.concurrency} keep-alive connections",
        "",
        "benchmarks/harness/fairness.py keeps one request in flight on each connection and "
        "counts the responses each one got (medians over the repetitions). A fair server "
        "gives every connection about the same share: max/min near 1. Starvation (a few "
        "connections served, the rest waiting) shows as max/min >> 1 or as connections "
        "with zero responses.",
        "",
        "| server | threads | responses/s | per-conn min | median | max | max/min "
        "| conns with 0 | runs | flags |",
        "|---" * 10 + "|",
    ]
    for server in context.servers:
        runs = [record for record in chosen if record.server == server and record.measured]
        if not runs:
            continue
        summary = summarize(runs)
        low = _median([r.conn_min for r in runs if r.conn_min is not None])
        high = _median([r.conn_max for r in runs if r.conn_max is not None])
        spread = "inf" if low == 0 and high else _ratio(high, low)
        cells = [
            server,
            _fmt(summary.threads, "d"),
            _fmt(summary.rps),
            _fmt(low),
            _fmt(_median([r.conn_median for r in runs])),
            _fmt(high),
            spread,
            _fmt(_median([r.conn_zero for r in runs])),
            str(summary.runs),
            _flags(summary, runs),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _problems_section(records: list[RunRecord]) -> list[str]:
    problems = list(
        dict.fromkeys(
            f"- {record.server} / {record.endpoint} / {record.scenario} (repetition "
            f"{record.repetition}): {record.status}" + (f": {record.note}" if record.note else "")
            for record in records
            if record.status != "ok"
        )
    )
    noisy = [record for record in records if record.noisy]
    if noisy:
        worst = max(record.other_cpus or 0.0 for record in noisy)
        problems.append(
            f"- {len(noisy)} of {sum(r.measured for r in records)} runs were noisy: other "
            f"processes used more than {NOISY_OTHER_CPUS} CPU (up to {worst:.2f}) while they ran "
            "(column other_cpus in the CSV); compare only on a quiet machine"
        )
    return ["## Problems", "", *(problems or ["- none"]), ""]


def render_markdown(records: list[RunRecord], context: ReportContext) -> str:
    """The human-readable report: medians per server, ratios to the limit and to peers."""
    lines = [f"# {context.title}", "", *(f"- {line}" for line in context.meta), ""]
    lines += context.preamble
    for endpoint in context.endpoints:
        lines += _endpoint_section(records, context, endpoint)
    lines += _fairness_section(records, context)
    lines += _problems_section(records)
    lines.append(
        "Ratios divide medians. *vs in-process* is the share of the in-process limit a server "
        "reaches (1.00 = zero server overhead). RSS: VmRSS summed over the server's process "
        "group right after the measured run (a prefork master and its worker both count). "
        "See benchmarks/README.md."
    )
    return "\n".join(lines) + "\n"
