"""Results: one CSV row per run (raw), and a Markdown table of medians and ratios.

Statuses in the CSV: ``ok``; ``errors`` (the run completed but wrk saw non-2xx responses
or socket errors: it is flagged and still counted); ``failed to start``, ``not installed``,
``unavailable``, ``load failed`` and ``died`` (no rate).
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "DIRECT",
    "INPROCESS",
    "NOISY_OTHER_CPUS",
    "ReportContext",
    "RunRecord",
    "render_markdown",
    "write_csv",
]

INPROCESS = "in-process"
DIRECT = "direct"
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


def _median(values: list[float | None]) -> float | None:
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
    )


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "-"
    ratio = value / reference
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"


@dataclass(frozen=True, slots=True)
class ReportContext:
    """What the Markdown report needs besides the records."""

    title: str
    meta: list[str]  # one bullet each: machine, versions, method
    servers: list[str]  # table row order
    endpoints: list[tuple[str, str, str]]  # (name, path, title)
    scenarios: list[str]  # scenario names, table order


_TABLE_HEAD = (
    "| server | req/s (median) | min-max | p50 ms | p99 ms | vs in-process "
    + "".join(f"| vs {name} " for name in REFERENCE_SERVERS)
    + "| runs | flags |"
)


def _select(records: list[RunRecord], endpoint: str, server: str, scenario: str) -> list[RunRecord]:
    return [
        record
        for record in records
        if record.endpoint == endpoint
        and record.server == server
        and record.scenario in (scenario, "-")
    ]


def _flags(summary: Summary, records: list[RunRecord]) -> str:
    flags = [f"errors in {summary.flagged} run(s)"] if summary.flagged else []
    flags += [f"noisy machine in {summary.noisy} run(s)"] if summary.noisy else []
    flags += sorted({record.status for record in records if not record.measured})
    return "; ".join(flags)


def _scenario_table(
    records: list[RunRecord], context: ReportContext, endpoint: str, scenario: str
) -> list[str]:
    limit = summarize(_select(records, endpoint, INPROCESS, DIRECT)).rps
    references = [
        summarize(_select(records, endpoint, name, scenario)).rps for name in REFERENCE_SERVERS
    ]
    lines = [f"### {scenario}", "", _TABLE_HEAD, "|---" * (8 + len(REFERENCE_SERVERS)) + "|"]
    for server in context.servers:
        chosen = _select(records, endpoint, server, scenario)
        if not chosen:
            continue
        summary = summarize(chosen)
        cells = [
            server,
            _fmt(summary.rps),
            f"{_fmt(summary.rps_min)}-{_fmt(summary.rps_max)}" if summary.runs else "-",
            _fmt(summary.p50_ms, ".2f"),
            _fmt(summary.p99_ms, ".2f"),
            _ratio(summary.rps, limit),
            *(_ratio(summary.rps, reference) for reference in references),
            str(summary.runs),
            _flags(summary, chosen),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _endpoint_section(
    records: list[RunRecord], context: ReportContext, endpoint: tuple[str, str, str]
) -> list[str]:
    name, path, title = endpoint
    heading = f"## `GET {path}`: {title}"
    if not any(record.endpoint == name and record.measured for record in records):
        notes = sorted(
            {record.note for record in records if record.endpoint == name and record.note}
        )
        return [heading, "", "Not measured: " + ("; ".join(notes) or "no runs") + ".", ""]
    limit = summarize(_select(records, name, INPROCESS, DIRECT))
    if limit.rps is None:
        detail = "; ".join(limit.notes) or "not measured"
        limit_line = f"In-process limit: not available ({detail})."
    else:
        limit_line = (
            f"In-process limit (the app called directly, no server): **{limit.rps:,.0f} req/s** "
            f"(median of {limit.runs}, {_fmt(limit.rps_min)}-{_fmt(limit.rps_max)})."
        )
    lines = [heading, "", limit_line, ""]
    for scenario in context.scenarios:
        lines += _scenario_table(records, context, name, scenario)
    return lines


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
    for endpoint in context.endpoints:
        lines += _endpoint_section(records, context, endpoint)
    lines += _problems_section(records)
    lines.append(
        "Ratios divide medians. *vs in-process* is the share of the in-process limit a server "
        "reaches (1.00 = zero server overhead). See benchmarks/README.md."
    )
    return "\n".join(lines) + "\n"
