"""The shared metrics table (rows per thread, fold on reap) and its exposition."""

from __future__ import annotations

import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from django_wsgiserve.arbiter.scrape import MasterMetrics
from django_wsgiserve.arbiter.workers import Worker, WorkerState
from django_wsgiserve.hooks import Hook, Hooks, ReloadOutcome
from django_wsgiserve.metrics import (
    REFUSED,
    RETIRED_MAX_REQUESTS,
    MetricsTable,
    render_table,
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def request_count(text: str) -> float:
    return sum(
        value
        for (name, _labels), value in samples(text).items()
        if name == "http_server_request_duration_seconds_count"
    )


def test_each_thread_adds_to_its_own_row_and_no_increment_is_lost():
    table = MetricsTable(slots=2, rows=6)
    slot = table.claim()
    assert slot is not None
    recorder = table.recorder(slot)

    def work() -> None:
        for _ in range(2000):
            recorder.observe_request(b"GET", 200, 0.003, 10)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = "\n".join(render_table(table.totals())) + "\n"
    assert request_count(text) == 8000
    assert samples(text)[("wsgiserve_response_bytes_total", ())] == 80000


def test_a_reaped_workers_counts_are_kept_once_and_its_slot_starts_from_zero():
    table = MetricsTable(slots=1, rows=2)
    slot = table.claim()
    assert slot is not None
    table.recorder(slot).observe_request(b"POST", 201, 0.2, 5)
    table.recorder(slot).count(REFUSED)
    table.fold(slot)
    table.fold(slot)  # a second fold of a free slot adds nothing
    again = table.claim()
    assert again == slot
    table.recorder(again).observe_request(b"GET", 404, 0.001, 1)
    values = samples("\n".join(render_table(table.totals())) + "\n")
    assert request_count("\n".join(render_table(table.totals())) + "\n") == 2
    assert values[("wsgiserve_refused_requests_total", ())] == 1
    assert values[("wsgiserve_response_bytes_total", ())] == 6


@pytest.mark.parametrize(
    ("method", "status", "labels"),
    [
        pytest.param(b"GET", 200, ("GET", "2xx"), id="get-2xx"),
        pytest.param(b"PROPFIND", 301, ("_OTHER", "3xx"), id="other-method"),
        pytest.param(b"DELETE", 0, ("DELETE", "5xx"), id="no-status"),
        pytest.param(b"OPTIONS", 103, ("OPTIONS", "1xx"), id="informational"),
    ],
)
def test_the_duration_histogram_is_cumulative_by_method_and_status_class(method, status, labels):
    table = MetricsTable(slots=1, rows=1)
    recorder = table.recorder(0)
    table.claim()
    for seconds in (0.004, 0.005, 0.3, 20.0):
        recorder.observe_request(method, status, seconds, 0)
    values = samples("\n".join(render_table(table.totals())) + "\n")
    base = (("http_request_method", labels[0]), ("http_response_status_class", labels[1]))

    def bucket(le: str) -> float:
        key = tuple(sorted((*base, ("le", le))))
        return values[("http_server_request_duration_seconds_bucket", key)]

    # Prometheus buckets count observations <= le: 0.005 falls in the le="0.005" bucket.
    assert bucket("0.005") == 2
    assert bucket("0.25") == 2
    assert bucket("0.5") == 3
    assert bucket("10") == 3
    assert bucket("+Inf") == 4
    assert values[("http_server_request_duration_seconds_count", base)] == 4
    assert values[("http_server_request_duration_seconds_sum", base)] == pytest.approx(20.309)


def test_queue_and_proxy_times_and_loop_errors_are_counted():
    table = MetricsTable(slots=1, rows=2)
    table.claim()
    recorder = table.recorder(0)
    recorder.observe_queue(0.0002)
    recorder.observe_proxy(-1.0)  # the proxy's clock ahead of ours: counted as 0
    for status in (408, 400, 431, 503, 500):
        recorder.count_error(status)
    values = samples("\n".join(render_table(table.totals())) + "\n")
    assert values[("wsgiserve_request_queue_seconds_bucket", (("le", "0.0005"),))] == 1
    assert values[("wsgiserve_proxy_queue_seconds_bucket", (("le", "0.0005"),))] == 1
    assert values[("wsgiserve_proxy_queue_seconds_sum", ())] == 0
    assert values[("wsgiserve_client_errors_total", (("kind", "timeout"),))] == 1
    assert values[("wsgiserve_client_errors_total", (("kind", "bad_request"),))] == 2
    assert values[("wsgiserve_refused_requests_total", ())] == 1


def worker(state: WorkerState, slot: int | None, *, was_killed: bool = False) -> Worker:
    return Worker(
        pid=1_000_000,  # no such process: no /proc figures
        number=3,
        channel_fd=-1,
        state=state,
        last_seen=0.0,
        was_killed=was_killed,
        slot_metrics=slot,
    )


@pytest.mark.parametrize(
    ("state", "code", "was_killed", "retired", "reason"),
    [
        pytest.param(WorkerState.STOPPING, 0, False, 0.0, "exit", id="exit"),
        pytest.param(WorkerState.READY, 1, False, 0.0, "crash", id="crash"),
        pytest.param(WorkerState.READY, -9, False, 0.0, "killed", id="oom"),
        pytest.param(WorkerState.ABORTING, -6, False, 0.0, "stuck", id="aborted"),
        pytest.param(WorkerState.STOPPING, -9, True, 0.0, "stuck", id="past-grace"),
        pytest.param(
            WorkerState.STOPPING, 0, False, RETIRED_MAX_REQUESTS, "max_requests", id="max"
        ),
    ],
)
def test_restarts_are_counted_by_reason(state, code, was_killed, retired, reason):
    metrics = MasterMetrics(MetricsTable(slots=2, rows=1))
    slot = metrics.claim()
    recorder = metrics.recorder(slot)
    assert recorder is not None
    if retired:
        recorder.set_retire_reason(retired)
    metrics.worker_reaped(worker(state, slot, was_killed=was_killed), code)
    values = samples(metrics.render([]).decode())
    restarts = {
        labels[0][1]: value
        for (name, labels), value in values.items()
        if name == "wsgiserve_worker_restarts_total"
    }
    assert restarts[reason] == 1
    assert sum(restarts.values()) == 1


def test_master_metrics_count_reloads_workers_and_build():
    seen: list[Hook] = []
    metrics = MasterMetrics(MetricsTable(slots=2, rows=1))
    hooks = metrics.observe_hooks(Hooks(lambda hook, **arguments: seen.append(hook)))
    hooks.send(Hook.RELOAD_FINISHED, outcome=ReloadOutcome.RELOADED, message="", changes=[])
    hooks.send(Hook.RELOAD_FINISHED, outcome=ReloadOutcome.FAILED, message="", changes=[])
    hooks.send(Hook.RELOAD_FINISHED, outcome=ReloadOutcome.FAILED, message="", changes=[])
    assert seen == [Hook.RELOAD_FINISHED] * 3  # passed on
    slot = metrics.claim()
    values = samples(metrics.render([worker(WorkerState.READY, slot)]).decode())
    assert values[("wsgiserve_reloads_total", (("outcome", "reloaded"),))] == 1
    assert values[("wsgiserve_reloads_total", (("outcome", "failed"),))] == 2
    assert values[("wsgiserve_workers", (("state", "ready"),))] == 1
    assert values[("wsgiserve_worker_connections", (("worker", "3"),))] == 0
    build = [labels for (name, labels) in values if name == "wsgiserve_build_info"]
    assert dict(build[0]).keys() == {"version", "python"}
