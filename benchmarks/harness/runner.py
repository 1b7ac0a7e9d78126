"""The measuring loop: repetitions x endpoints x (in-process + servers), order rotated.

Per repetition, every endpoint is measured on every server, and the order of servers (and
endpoints) rotates from one repetition to the next, so that slow drifts of the machine
(thermal, noisy neighbours) spread over all servers instead of favouring one. A server is
started once per (repetition, endpoint), checked (listening, then 200 with the right body),
loaded with every scenario (warm-up run discarded, then the measured run) and stopped.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

from harness.cpuwatch import CpuSample, group_rss_mb, other_cpus
from harness.loadgen import Scenario, run_wrk
from harness.procs import (
    ChildProcess,
    child_env,
    find_free_port,
    run_bounded,
    wait_until_listening,
)
from harness.report import DIRECT, FAIRNESS, FAIRNESS_PREFIX, INPROCESS, RunRecord
from harness.servers import BENCH_DIR, REPO_ROOT, WORK_DIR, Endpoint, Launch, ServerSpec

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from harness.loadgen import LoadResult

__all__ = ["Plan", "Runner", "prepare_endpoint", "probe_serve_options", "server_env"]

HOST = "127.0.0.1"
_PORT_RACE = re.compile(r"address already in use|errno 98|port is already in use", re.IGNORECASE)
_START_ATTEMPTS = 3
_SETTLE_S = 0.5
_Item = TypeVar("_Item")


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything decided before the first measurement."""

    specs: list[ServerSpec]
    endpoints: list[Endpoint]
    scenarios: list[Scenario]
    repeat: int
    duration_s: int
    warmup_s: int
    threads: int
    ready_timeout_s: float
    project_python: str
    peers_bin: Path
    wrk: str
    server_pin: list[str]
    client_pin: list[str]
    log_dir: Path
    measure_inprocess: bool = True
    wrk_timeout_s: int = 1
    noisy_retries: int = 1  # per run
    noisy_retry_budget: int = 15  # in total, so that a busy machine cannot double the time
    serve_options: dict[str, frozenset[str]] = field(default_factory=dict)  # per endpoint
    fairness_endpoint: str | None = None  # per-connection counts measured on this one
    fairness_connections: int = 64
    fairness_duration_s: float = 3.0

    def scenarios_for(self, endpoint: Endpoint) -> list[Scenario]:
        return list(endpoint.scenarios) or self.scenarios

    def specs_for(self, endpoint: Endpoint) -> list[ServerSpec]:
        return [s for s in self.specs if not endpoint.servers or s.name in endpoint.servers]

    def estimated_seconds(self) -> float:
        per_run = self.warmup_s + self.duration_s + 1
        total = 0.0
        for endpoint in self.endpoints:
            per_start = 3 + len(self.scenarios_for(endpoint)) * per_run
            if endpoint.name == self.fairness_endpoint:
                per_start += self.fairness_duration_s + 1
            inprocess = self.measure_inprocess and endpoint.inprocess
            total += len(self.specs_for(endpoint)) * per_start + (per_run + 2) * inprocess
        retries = self.noisy_retry_budget * self.duration_s if self.noisy_retries else 0
        return self.repeat * total + retries


def server_env(endpoint: Endpoint) -> dict[str, str]:
    """Environment of a server process: clean, with the app and repo root importable."""
    pythonpath = os.pathsep.join([str(endpoint.app_dir), str(REPO_ROOT)])
    return child_env(PYTHONPATH=pythonpath, **dict(endpoint.env))


def _rotate(items: list[_Item], shift: int) -> list[_Item]:
    shift %= max(len(items), 1)
    return items[shift:] + items[:shift]


def _warm_up(endpoint: Endpoint, port: int, requests: int = 3) -> str | None:
    """A few real requests: status 200 and the expected body, or an error message."""
    body = endpoint.request_body() if endpoint.method == "POST" else None
    headers = {"Content-Type": "application/octet-stream"} if body else {}
    for _ in range(requests):
        connection = http.client.HTTPConnection(HOST, port, timeout=10)
        try:
            connection.request(endpoint.method, endpoint.path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return f"warm-up request failed: {exc!r}"
        finally:
            connection.close()
        if response.status != 200:
            return f"warm-up {endpoint.path} answered {response.status}: {answer[:80]!r}"
        error = endpoint.check_body(answer)
        if error is not None:
            return f"warm-up {endpoint.method} {endpoint.path}: {error}"
    return None


class Runner:
    """Runs a Plan and collects RunRecords, printing one progress line per run."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.records: list[RunRecord] = []
        self.broken: set[tuple[str, str]] = set()  # (server, endpoint) that failed once
        self.started = time.monotonic()
        self.retry_budget = plan.noisy_retry_budget  # re-measurements left for this whole run

    def progress(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.0f}s] {message}", flush=True)

    def run(self) -> list[RunRecord]:
        plan = self.plan
        for repetition in range(1, plan.repeat + 1):
            for endpoint in _rotate(plan.endpoints, repetition - 1):
                inprocess = plan.measure_inprocess and endpoint.inprocess
                items: list[str | ServerSpec] = [INPROCESS] if inprocess else []
                items += plan.specs_for(endpoint)
                for item in _rotate(items, repetition - 1):
                    if isinstance(item, ServerSpec):
                        self.run_server(item, endpoint, repetition)
                    else:
                        self.run_inprocess(endpoint, repetition)
        return self.records

    def _fail(
        self, server: str, endpoint: Endpoint, repetition: int, status: str, note: str
    ) -> None:
        self.broken.add((server, endpoint.name))
        self.records.append(
            RunRecord(repetition, server, endpoint.name, "-", "-", 0, status, note=note)
        )
        self.progress(f"r{repetition} {endpoint.name} {server}: {status}: {note}")

    def run_inprocess(self, endpoint: Endpoint, repetition: int) -> None:
        """One repetition of benchmarks/inprocess.py, pinned like a server."""
        if (INPROCESS, endpoint.name) in self.broken:
            return
        record = self._least_noisy(lambda: self._inprocess_once(endpoint, repetition))
        if isinstance(record, str):
            self._fail(INPROCESS, endpoint, repetition, "failed", record)
            return
        self.records.append(record)
        self._report_run(record)

    def _inprocess_once(self, endpoint: Endpoint, repetition: int) -> RunRecord | str:
        plan = self.plan
        argv = [
            *plan.server_pin,
            plan.project_python,
            str(BENCH_DIR / "inprocess.py"),
            *("--endpoint", endpoint.name, "--duration", str(plan.duration_s)),
            *("--warmup", str(plan.warmup_s), "--repeat", "1", "--json"),
        ]
        timeout_s = plan.warmup_s + plan.duration_s + 120
        before, started = CpuSample.take(), time.monotonic()
        result = run_bounded(argv, timeout_s=timeout_s, cwd=REPO_ROOT, env=server_env(endpoint))
        noise = other_cpus(before, CpuSample.take(), time.monotonic() - started)
        lines = result.output.strip().splitlines()
        if not result.ok or not lines or not lines[-1].startswith("{"):
            return (" | ".join(lines[-3:]) or "no output")[:300]
        measured = json.loads(lines[-1])
        return RunRecord(
            *(repetition, INPROCESS, endpoint.name, DIRECT, DIRECT, 1, "ok"),
            rps=float(measured["median"]),
            requests=int(sum(measured["requests"])),
            other_cpus=noise,
        )

    def _least_noisy(self, measure_once: Callable[[], RunRecord | str]) -> RunRecord | str:
        """Measure; while other processes disturbed the run, measure again (bounded)."""
        record = measure_once()
        for _ in range(self.plan.noisy_retries):
            if isinstance(record, str) or not record.noisy or self.retry_budget <= 0:
                break
            self.retry_budget -= 1
            self.progress(
                f"r{record.repetition} {record.endpoint:11} {record.server:16} "
                f"{record.scenario:14} noisy (other processes used {record.other_cpus:.2f} CPU): "
                "measuring again"
            )
            retry = measure_once()
            if isinstance(retry, str):
                break
            record = min(record, retry, key=lambda run: run.other_cpus or 0.0)
        return record

    def run_server(self, spec: ServerSpec, endpoint: Endpoint, repetition: int) -> None:
        """Start ``spec`` for ``endpoint``, run every scenario against it, stop it."""
        if (spec.name, endpoint.name) in self.broken:
            return
        started = self.start_server(spec, endpoint, repetition)
        if isinstance(started, str):
            self._fail(spec.name, endpoint, repetition, "failed to start", started)
            return
        child, port = started
        try:
            for scenario in self.plan.scenarios_for(endpoint):
                if not self.measure(child, spec, endpoint, port, scenario, repetition):
                    self._fail(spec.name, endpoint, repetition, "died", child.log_tail())
                    return
            if endpoint.name == self.plan.fairness_endpoint:
                self.measure_fairness(child, spec, endpoint, port, repetition)
        finally:
            child.stop()

    def _launch(self, endpoint: Endpoint, port: int) -> Launch:
        plan = self.plan
        return Launch(
            endpoint=endpoint,
            port=port,
            threads=endpoint.threads or plan.threads,
            project_python=plan.project_python,
            peers_bin=plan.peers_bin,
            serve_options=plan.serve_options.get(endpoint.name, frozenset()),
            host=HOST,
        )

    def start_server(
        self, spec: ServerSpec, endpoint: Endpoint, repetition: int
    ) -> tuple[ChildProcess, int] | str:
        """A ready server and its port, or why it is not ready (retries a lost port race)."""
        error = "not started"
        for attempt in range(1, _START_ATTEMPTS + 1):
            port = find_free_port(HOST)
            argv = [*self.plan.server_pin, *spec.build_argv(self._launch(endpoint, port))]
            log_path = self.plan.log_dir / f"{spec.name}-{endpoint.name}-r{repetition}.log"
            child = ChildProcess(
                argv, cwd=endpoint.app_dir, env=server_env(endpoint), log_path=log_path
            )
            try:
                error = wait_until_listening(child, HOST, port, self.plan.ready_timeout_s) or (
                    _warm_up(endpoint, port)
                )
                if error is None and child.is_running():
                    return child, port
            except BaseException:
                child.stop()
                raise
            child.stop()
            error = f"{error or 'exited after warm-up'}; log: {log_path}: {child.log_tail(3)}"
            if not _PORT_RACE.search(child.log_tail(20)) or attempt == _START_ATTEMPTS:
                break
            self.progress(f"{spec.name}: port {port} was taken, retrying")
        return error[:600]

    def measure(
        self,
        child: ChildProcess,
        spec: ServerSpec,
        endpoint: Endpoint,
        port: int,
        scenario: Scenario,
        repetition: int,
    ) -> bool:
        """Warm-up run (discarded) then the measured run; False if the server died."""
        plan = self.plan
        url = f"http://{HOST}:{port}{endpoint.path}"
        base = RunRecord(
            *(repetition, spec.name, endpoint.name, scenario.name, scenario.mode),
            *(scenario.connections, "ok"),
            threads=(endpoint.threads or plan.threads) if spec.uses_threads else None,
        )
        script = endpoint.wrk_script
        if plan.warmup_s:
            self._wrk(url, scenario, plan.warmup_s, script)
            # wrk leaves its last requests in flight: let the server finish them, so that they
            # do not queue up in front of the measured run (slow endpoints, small queues).
            time.sleep(_SETTLE_S)
        record = self._least_noisy(lambda: self._measured_run(child, url, scenario, base, script))
        assert not isinstance(record, str)
        self.records.append(record)
        self._report_run(record)
        return child.is_running()

    def _wrk(
        self, url: str, scenario: Scenario, duration_s: int, script: Path | None
    ) -> tuple[LoadResult | None, str]:
        plan = self.plan
        return run_wrk(
            plan.wrk,
            url,
            scenario,
            duration_s=duration_s,
            timeout_s=plan.wrk_timeout_s,
            pin=plan.client_pin,
            script=script,
        )

    def _measured_run(
        self,
        child: ChildProcess,
        url: str,
        scenario: Scenario,
        base: RunRecord,
        script: Path | None,
    ) -> RunRecord:
        before, started = CpuSample.take(child.pgid), time.monotonic()
        result, output = self._wrk(url, scenario, self.plan.duration_s, script)
        noise = other_cpus(before, CpuSample.take(child.pgid), time.monotonic() - started)
        measured = replace(base, other_cpus=noise, rss_mb=group_rss_mb(child.pgid))
        return _load_record(measured, result, output)

    def measure_fairness(
        self, child: ChildProcess, spec: ServerSpec, endpoint: Endpoint, port: int, repetition: int
    ) -> None:
        """Responses per keep-alive connection (harness/fairness.py, pinned like wrk)."""
        plan = self.plan
        scenario = Scenario(plan.fairness_connections, keepalive=True)
        base = RunRecord(
            *(repetition, spec.name, endpoint.name, FAIRNESS_PREFIX + scenario.name, FAIRNESS),
            *(scenario.connections, "ok"),
            threads=(endpoint.threads or plan.threads) if spec.uses_threads else None,
        )
        record = self._least_noisy(lambda: self._fairness_run(child, endpoint, port, base))
        assert not isinstance(record, str)
        self.records.append(record)
        self._report_run(record)

    def _fairness_run(
        self, child: ChildProcess, endpoint: Endpoint, port: int, base: RunRecord
    ) -> RunRecord:
        plan = self.plan
        argv = [
            *plan.client_pin,
            sys.executable,
            str(BENCH_DIR / "harness" / "fairness.py"),
            *("--port", str(port), "--path", endpoint.path),
            *("--connections", str(plan.fairness_connections)),
            *("--duration", str(plan.fairness_duration_s)),
        ]
        before, started = CpuSample.take(child.pgid), time.monotonic()
        result = run_bounded(argv, timeout_s=plan.fairness_duration_s + 60, env=child_env())
        noise = other_cpus(before, CpuSample.take(child.pgid), time.monotonic() - started)
        lines = result.output.strip().splitlines()
        if not result.ok or not lines or not lines[-1].startswith("{"):
            note = (" | ".join(lines[-3:]) or "no output")[:300]
            return replace(base, status="load failed", note=note, other_cpus=noise)
        return _fairness_record(replace(base, other_cpus=noise), json.loads(lines[-1]))

    def _report_run(self, record: RunRecord) -> None:
        rate = "-" if record.rps is None else f"{record.rps:,.0f}"
        p99 = "" if record.latency_p99_ms is None else f"  p99 {record.latency_p99_ms:8.2f} ms"
        flag = "" if record.status == "ok" else f"  [{record.status}: {record.note}]"
        if record.noisy:
            flag += f"  [noisy: other processes used {record.other_cpus:.2f} CPU]"
        if record.rss_mb is not None:
            p99 += f"  rss {record.rss_mb:.0f} MiB"
        if record.conn_min is not None:
            p99 += f"  per-conn min {record.conn_min} max {record.conn_max}"
        self.progress(
            f"r{record.repetition} {record.endpoint:11} {record.server:16} {record.scenario:14} "
            f"{rate:>10} req/s{p99}{flag}"
        )


def _fairness_record(base: RunRecord, measured: dict[str, object]) -> RunRecord:
    counts = [int(count) for count in measured["counts"]]  # type: ignore[union-attr]
    errors = int(measured["errors"])  # type: ignore[call-overload]
    reconnects = int(measured["reconnects"])  # type: ignore[call-overload]
    notes = [f"{errors} errors"] if errors else []
    notes += [f"server closed connections {reconnects} times"] if reconnects else []
    return replace(
        base,
        status="errors" if errors else "ok",
        rps=sum(counts) / float(measured["elapsed"]),  # type: ignore[arg-type]
        requests=sum(counts),
        socket_errors=errors,
        note=", ".join(notes),
        conn_min=min(counts),
        conn_median=statistics.median(counts),
        conn_max=max(counts),
        conn_zero=counts.count(0),
    )


def _load_record(base: RunRecord, result: LoadResult | None, output: str) -> RunRecord:
    """``base`` completed with what wrk reported (or why it reported nothing usable)."""
    if result is None or result.requests == 0:
        note = " | ".join(output.strip().splitlines()[-3:]) or "no output"
        return replace(base, status="load failed", note=note[:300])
    return replace(
        base,
        status="errors" if result.error_count else "ok",
        rps=result.rps,
        requests=result.requests,
        latency_p50_ms=result.p50_ms,
        latency_p99_ms=result.p99_ms,
        latency_max_ms=result.max_ms,
        non_2xx=result.non_2xx,
        socket_errors=sum(result.socket_errors.values()),
        note=result.describe_errors(),
    )


def probe_serve_options(python: str, endpoint: Endpoint) -> frozenset[str]:
    """Options listed by `serve --help` for this endpoint ({} if serve does not run yet)."""
    argv = endpoint.manage(python, "serve", "--help")
    result = run_bounded(argv, timeout_s=60, cwd=endpoint.app_dir, env=server_env(endpoint))
    return frozenset(re.findall(r"--[a-z][a-z0-9-]+", result.output)) if result.ok else frozenset()


_PREPARED: dict[str, str | None] = {}  # testproject: migrate + collectstatic, done once


def _prepare_testproject(python: str, endpoint: Endpoint, log_dir: Path) -> str | None:
    if not (endpoint.app_dir / "manage.py").exists():
        return f"{endpoint.app_dir}/manage.py not found (testproject not written yet?)"
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    for command in (["migrate", "--noinput"], ["collectstatic", "--noinput"]):
        argv = endpoint.manage(python, *command)
        result = run_bounded(argv, timeout_s=300, cwd=endpoint.app_dir, env=server_env(endpoint))
        (log_dir / f"prepare-{command[0]}.log").write_text(result.output)
        if not result.ok:
            tail = " | ".join(result.output.strip().splitlines()[-2:])
            return f"manage.py {' '.join(command)} failed: {tail[:300]}"
    return None


def prepare_endpoint(
    python: str, endpoint: Endpoint, log_dir: Path, *, migrate: bool
) -> str | None:
    """testproject: migrate + collectstatic (bounded, once); why it is unusable, or None."""
    if not endpoint.in_testproject:
        return None
    if not migrate:
        return None
    if "testproject" not in _PREPARED:
        _PREPARED["testproject"] = _prepare_testproject(python, endpoint, log_dir)
    return _PREPARED["testproject"]
