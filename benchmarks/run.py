"""Core benchmark: requests/s of django-wsgiserve and its peers, one worker each.

    python benchmarks/run.py [--quick] [--servers ours,gunicorn-gthread,waitress]
                             [--endpoints json,hello] [--duration 5] [--repeat 5]

Runs on any Python 3.10+ with only the standard library. Servers run from the project's
interpreter (ours, runserver, the in-process limit) or from benchmarks/.venv-peers, which
this script creates. wrk is installed with apt-get when missing. Writes
benchmarks/results/<date>-core.csv (raw runs) and <date>-core.md (medians), and prints the
Markdown. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import sys
from dataclasses import replace
from pathlib import Path

from harness.loadgen import Scenario, ensure_wrk, wrk_version
from harness.peers_venv import (
    ensure_matplotlib,
    installed_versions,
    peers_bin,
    prepare_peers,
    project_versions,
)
from harness.procs import child_env, run_bounded, stop_all
from harness.report import (
    INPROCESS,
    NOISY_OTHER_CPUS,
    EndpointInfo,
    ReportContext,
    RunRecord,
    render_markdown,
    write_csv,
)
from harness.runner import Plan, Runner, prepare_endpoint, probe_serve_options
from harness.servers import (
    BENCH_DIR,
    DEFAULT_BLOCKING_THREADS,
    ENDPOINTS,
    OURS,
    REPO_ROOT,
    SERVERS,
    resolve_static,
)
from harness.targets import (
    BLOCKING_ENDPOINT,
    BLOCKING_SCENARIO,
    MAIN_SCENARIO,
    render_matrix,
    render_targets,
    summary_matrix,
)

# The full suite: every peer, one worker each (ours-accesslog only on request).
DEFAULT_SERVERS = ",".join(name for name in SERVERS if name != f"{OURS}-accesslog")
DEFAULT_ENDPOINTS = ",".join(ENDPOINTS)
DOCS_DIR = REPO_ROOT / "docs"


def _csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Core benchmark: one worker per server, wrk on loopback, medians + ratios."
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke run: --repeat 1 --duration 2")
    add("--servers", default=DEFAULT_SERVERS, help=f"comma list or 'all' ({', '.join(SERVERS)})")
    add("--endpoints", default=DEFAULT_ENDPOINTS, help="comma list or 'all'")
    add("--duration", type=int, help="seconds per measured run (default 2)")
    add("--warmup", type=int, default=1, help="seconds of discarded load before each run")
    add("--repeat", type=int, help="repetitions, median reported (default 3; --quick 1)")
    add("--threads", type=int, default=4, help="threads per worker for threaded servers")
    add("--blocking-threads", type=int, default=DEFAULT_BLOCKING_THREADS, help="for sleep-50ms")
    add("--fairness-endpoint", default="json", help="per-connection counts here ('' = none)")
    add("--fairness-duration", type=float, default=3.0, help="seconds of the fairness run")
    add(
        "--docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write docs/benchmarks.{md,csv,png} (default: only for the full suite)",
    )
    add("--concurrency", default="1,64", help="keep-alive connection counts")
    add("--close-concurrency", type=int, default=64, help="'Connection: close' run; 0 = none")
    add("--server-cpu", default="1", help="CPU list for servers (taskset -c)")
    add("--client-cpu", default="0", help="CPU list for wrk (taskset -c)")
    add("--no-pin", action="store_true", help="do not pin with taskset")
    add("--ready-timeout", type=float, default=30.0, help="seconds for a server to listen")
    add("--wrk-timeout", type=int, default=1, help="wrk --timeout: slower requests are errors")
    add("--noisy-retries", type=int, default=1, help="re-measurements of a disturbed run")
    add("--noisy-retry-budget", type=int, default=15, help="re-measurements in total")
    add("--python", help="the project's interpreter (default: .venv/bin/python)")
    add("--no-prepare", action="store_true", help="skip testproject migrate/collectstatic")
    add("--no-inprocess", action="store_true", help="skip the in-process limit")
    add("--results-dir", type=Path, default=BENCH_DIR / "results")
    add("--list", action="store_true", help="list servers and endpoints, then exit")
    args = parser.parse_args(argv)
    args.duration = args.duration or 2
    args.repeat = args.repeat or (1 if args.quick else 3)
    if args.docs is None:
        full = args.servers == DEFAULT_SERVERS and args.endpoints == DEFAULT_ENDPOINTS
        args.docs = full and not args.quick
    return args


def _project_python(args: argparse.Namespace) -> str:
    if args.python:
        return str(args.python)
    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def _describe_interpreter(python: str) -> str:
    """Which interpreter ran the project, without the machine's path to it (results are
    committed)."""
    try:
        relative = Path(os.path.abspath(python)).relative_to(REPO_ROOT)
    except ValueError:
        return "the harness's own" if python == sys.executable else "given with --python"
    return "the project's .venv" if relative == Path(".venv/bin/python") else f"{relative}"


def _pins(args: argparse.Namespace) -> tuple[list[str], list[str], str]:
    """(server prefix, client prefix, description) for CPU pinning."""
    if args.no_pin or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return [], [], "not pinned"
    description = f"server on CPU {args.server_cpu}, wrk on CPU {args.client_cpu} (taskset -c)"
    return ["taskset", "-c", args.server_cpu], ["taskset", "-c", args.client_cpu], description


def _scenarios(args: argparse.Namespace) -> list[Scenario]:
    scenarios = [Scenario(int(n), keepalive=True) for n in _csv_list(args.concurrency)]
    if args.close_concurrency:
        scenarios.append(Scenario(args.close_concurrency, keepalive=False))
    return scenarios


def _select(names: list[str], registry: dict[str, object], what: str) -> list[str]:
    if names == ["all"]:
        return list(registry)
    unknown = [name for name in names if name not in registry]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(registry)})")
    return names


def _endpoint_names(args: argparse.Namespace) -> list[str]:
    return _select(_csv_list(args.endpoints), ENDPOINTS, "endpoints")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _meta(args: argparse.Namespace, plan: Plan, pin_text: str, wrk_text: str) -> list[str]:
    project = project_versions(plan.project_python)
    peers = installed_versions(peers_bin() / "python") if (peers_bin() / "python").exists() else {}
    wanted = dict.fromkeys(package for spec in plan.specs for package in spec.packages)
    peer_text = ", ".join(f"{name} {peers[name]}" for name in wanted if name in peers)
    now = datetime.datetime.now().astimezone()
    return [
        f"{now:%Y-%m-%d %H:%M %Z}; {_cpu_model()}, {os.cpu_count()} CPUs; "
        f"Linux {platform.release()}; harness on Python {platform.python_version()}",
        f"Project interpreter ({_describe_interpreter(plan.project_python)}): "
        + ", ".join(f"{name} {version}" for name, version in project.items()),
        f"Peers (benchmarks/.venv-peers, same Django): {peer_text or 'none selected'}",
        f"One worker process per server, {plan.threads} threads where the server has a "
        f"thread pool; {pin_text}",
        f"Load: {wrk_text} on 127.0.0.1; {plan.duration_s} s per run after a {plan.warmup_s} s "
        f"warm-up; {plan.repeat} repetition(s), median; order rotated every repetition; "
        f"wrk --timeout {plan.wrk_timeout_s}s (slower requests count as socket timeouts)",
        f"Noise check: a run during which other processes used more than {NOISY_OTHER_CPUS} "
        f"CPU is measured again (up to {plan.noisy_retries}x per run, "
        f"{plan.noisy_retry_budget} in all); the quietest is kept and flagged if still noisy",
        "Scenarios per endpoint: hello, json, static: keep-alive c1 and c64, Connection: close "
        "c64; template-db, post-100k, file-1m: keep-alive c64; sleep-50ms: keep-alive c256 "
        f"with {args.blocking_threads} threads for threaded servers (gevent: "
        "--worker-connections 1000). Fairness: harness/fairness.py on "
        f"{args.fairness_endpoint or 'no endpoint'}, {plan.fairness_connections} keep-alive "
        f"connections, {args.fairness_duration:g} s",
        f"Command: `{Path(sys.executable).name} benchmarks/run.py {' '.join(sys.argv[1:])}`",
    ]


def _prepare(
    args: argparse.Namespace, python: str, log_dir: Path
) -> tuple[list[str], list[str], list[RunRecord]]:
    """(usable server names, usable endpoint names, setup failure records)."""
    server_names = _select(_csv_list(args.servers), SERVERS, "servers")
    endpoint_names = _endpoint_names(args)
    failures: list[RunRecord] = []
    print("preparing the peers' virtualenv", flush=True)
    uninstallable = prepare_peers(python, [SERVERS[name] for name in server_names], log_dir)
    for name, reason in uninstallable.items():
        print(f"  {name}: not installed: {reason}", flush=True)
        failures += [
            RunRecord(1, name, ep, "-", "-", 0, "not installed", note=reason)
            for ep in endpoint_names
        ]
    usable_endpoints = []
    for name in endpoint_names:
        endpoint = ENDPOINTS[name]
        reason = prepare_endpoint(python, endpoint, log_dir, migrate=not args.no_prepare)
        if reason is None and name == "static":
            resolved = resolve_static(endpoint)
            reason = resolved if isinstance(resolved, str) else None
            if not isinstance(resolved, str):
                ENDPOINTS[name] = resolved
        if reason is None:
            usable_endpoints.append(name)
            continue
        print(f"  endpoint {name}: unavailable: {reason}", flush=True)
        failures.append(RunRecord(1, "all", name, "-", "-", 0, "unavailable", note=reason))
    usable_servers = [name for name in server_names if name not in uninstallable]
    return usable_servers, usable_endpoints, failures


def build_plan(args: argparse.Namespace, log_dir: Path) -> tuple[Plan, list[RunRecord], list[str]]:
    """Install/prepare everything; returns the plan, setup failures and report metadata."""
    python = _project_python(args)
    wrk = ensure_wrk()
    if "sleep-50ms" in ENDPOINTS:
        ENDPOINTS["sleep-50ms"] = replace(ENDPOINTS["sleep-50ms"], threads=args.blocking_threads)
    server_names, endpoint_names, failures = _prepare(args, python, log_dir)
    server_pin, client_pin, pin_text = _pins(args)
    endpoints = [ENDPOINTS[name] for name in endpoint_names]
    serve_options = {}
    if any(name.startswith(OURS) for name in server_names):
        serve_options = {ep.name: probe_serve_options(python, ep) for ep in endpoints}
    plan = Plan(
        specs=[SERVERS[name] for name in server_names],
        endpoints=endpoints,
        scenarios=_scenarios(args),
        repeat=args.repeat,
        duration_s=args.duration,
        warmup_s=args.warmup,
        threads=args.threads,
        ready_timeout_s=args.ready_timeout,
        project_python=python,
        peers_bin=peers_bin(),
        wrk=wrk,
        server_pin=server_pin,
        client_pin=client_pin,
        log_dir=log_dir,
        measure_inprocess=not args.no_inprocess,
        serve_options=serve_options,
        wrk_timeout_s=args.wrk_timeout,
        noisy_retries=args.noisy_retries,
        noisy_retry_budget=args.noisy_retry_budget,
        fairness_endpoint=args.fairness_endpoint or None,
        fairness_duration_s=args.fairness_duration,
    )
    return plan, failures, _meta(args, plan, pin_text, wrk_version(wrk))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _context(
    args: argparse.Namespace, title: str, meta: list[str], plan: Plan | None
) -> ReportContext:
    endpoints = [ENDPOINTS[name] for name in _endpoint_names(args)]
    return ReportContext(
        title=title,
        meta=meta,
        servers=_select(_csv_list(args.servers), SERVERS, "servers"),
        endpoints=[EndpointInfo(e.name, e.method, e.path, e.title, e.note) for e in endpoints],
        scenarios=[scenario.name for scenario in plan.scenarios] if plan else [],
    )


def _matrix(records: list[RunRecord], context: ReportContext) -> dict[str, dict[str, float]]:
    """Medians per endpoint at keep-alive c64 (the blocking view at its own c256)."""
    pairs = [
        (info.name, BLOCKING_SCENARIO if info.name == BLOCKING_ENDPOINT else MAIN_SCENARIO)
        for info in context.endpoints
    ]
    return summary_matrix(records, context.servers, pairs)


def _plot(
    matrix: dict[str, dict[str, float]], context: ReportContext, png: Path, log_dir: Path
) -> str | None:
    """docs/benchmarks.png, drawn by plot.py with the peers' interpreter (has matplotlib)."""
    error = ensure_matplotlib(log_dir)
    if error is not None:
        return f"no plot: {error}"
    data_path = log_dir / "plot-data.json"
    data = {"title": context.title, "servers": [INPROCESS, *context.servers], "matrix": matrix}
    data_path.write_text(json.dumps(data, indent=1))
    argv = [str(peers_bin() / "python"), str(BENCH_DIR / "plot.py"), str(data_path), str(png)]
    result = run_bounded(argv, timeout_s=300, env=child_env())
    return None if result.ok else f"plot failed: {result.output[-300:]}"


def _write_results(
    args: argparse.Namespace, stem: str, records: list[RunRecord], context: ReportContext
) -> None:
    args.results_dir.mkdir(parents=True, exist_ok=True)
    outputs = [(args.results_dir / f"{stem}.csv", args.results_dir / f"{stem}.md", None)]
    if args.docs:
        DOCS_DIR.mkdir(exist_ok=True)
        outputs.append((DOCS_DIR / "benchmarks.csv", DOCS_DIR / "benchmarks.md", "benchmarks.png"))
    matrix = _matrix(records, context)
    for csv_path, md_path, image in outputs:
        preamble = render_targets(records) + render_matrix(matrix, context.servers, image)
        write_csv(records, csv_path)
        markdown = render_markdown(records, replace(context, preamble=preamble))
        md_path.write_text(markdown)
        print(f"wrote {csv_path} and {md_path}", flush=True)
    if args.docs:
        error = _plot(matrix, context, DOCS_DIR / "benchmarks.png", args.results_dir / "logs")
        print(error or f"wrote {DOCS_DIR / 'benchmarks.png'}", flush=True)
    print("\n" + markdown)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print("servers:", ", ".join(f"{s.name} ({s.description})" for s in SERVERS.values()))
        print("endpoints:", ", ".join(f"{e.name} ({e.path})" for e in ENDPOINTS.values()))
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    stem = f"{datetime.date.today().isoformat()}-suite" + ("-quick" if args.quick else "")
    log_dir = args.results_dir / "logs" / stem
    log_dir.mkdir(parents=True, exist_ok=True)
    interrupted, plan, meta = False, None, []
    try:
        plan, records, meta = build_plan(args, log_dir)
        print(f"plan: about {plan.estimated_seconds() / 60:.1f} min; logs in {log_dir}", flush=True)
        runner = Runner(plan)
        try:
            records += runner.run()
        except KeyboardInterrupt:
            interrupted = True
            records += runner.records
            print("interrupted: writing partial results", flush=True)
    finally:
        stop_all()
    title = f"django-wsgiserve benchmarks, {stem}" + (" (interrupted: partial)" * interrupted)
    _write_results(args, stem, records, _context(args, title, meta, plan))
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
