"""Workers run their loop and pool threads under SCHED_BATCH; the master stays SCHED_OTHER.

Why (worker._use_batch_scheduling): a woken thread must not preempt the GIL holder. The
effect on speed is measured in benchmarks/, not here; this checks the policy really applies to
every thread of every worker, including threads started after the policy was set, and to a
worker the master starts later (SIGTTIN).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.live import LiveServer

pytestmark = pytest.mark.integration

SCHED_OTHER = 0
SCHED_BATCH = 3


def _workers(master: int) -> list[int]:
    text = Path(f"/proc/{master}/task/{master}/children").read_text()
    return [int(pid) for pid in text.split()]


def _policies(pid: int) -> dict[int, int]:
    """Thread id -> scheduling policy, for every thread of ``pid``."""
    return {int(tid): os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def _wait_for_workers(master: int, count: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = _workers(master)
        # A worker is complete once its pool threads exist: main thread + THREADS.
        if len(pids) == count and all(len(os.listdir(f"/proc/{p}/task")) >= 4 for p in pids):
            return pids
        time.sleep(0.05)
    raise AssertionError(f"expected {count} workers, have {_workers(master)}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_BATCH is Linux only")
def test_worker_threads_use_batch_scheduling(tmp_path: Path) -> None:
    server = LiveServer(
        log_path=tmp_path / "server.log",
        args=["--no-access-log", "--workers", "2", "--threads", "3"],
    ).start()
    try:
        assert server.get("/").status == 200
        assert set(_policies(server.pid).values()) == {SCHED_OTHER}
        workers = _wait_for_workers(server.pid, 2)
        for pid in workers:
            policies = _policies(pid)
            assert len(policies) >= 4, policies  # the loop thread and three pool threads
            assert set(policies.values()) == {SCHED_BATCH}, (pid, policies)
        server.send_signal(signal.SIGTTIN)
        added = set(_wait_for_workers(server.pid, 3)) - set(workers)
        assert len(added) == 1
        assert set(_policies(added.pop()).values()) == {SCHED_BATCH}
    finally:
        assert server.stop() == 0, server.log()[-3000:]


def _affinities(pid: int) -> set[frozenset[int]]:
    """The CPU sets of every thread of ``pid``."""
    return {frozenset(os.sched_getaffinity(int(tid))) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_cpu_affinity_pins_each_worker_to_its_own_cpu(tmp_path: Path) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    server = LiveServer(
        log_path=tmp_path / "server.log",
        args=["--no-access-log", "--workers", "2", "--threads", "3", "--cpu-affinity"],
    ).start()
    try:
        workers = _wait_for_workers(server.pid, 2)
        pinned = []
        for pid in workers:
            affinities = _affinities(pid)
            assert len(affinities) == 1, affinities  # every thread, the pool's included
            (cpus,) = affinities
            assert len(cpus) == 1
            assert cpus <= set(allowed)
            pinned.append(next(iter(cpus)))
        assert sorted(pinned) == sorted(allowed[:2] if len(allowed) >= 2 else allowed * 2)
        assert _affinities(server.pid) == {frozenset(allowed)}  # the master is not pinned
        assert "on CPU" in server.log()
        assert server.get("/").status == 200
    finally:
        assert server.stop() == 0, server.log()[-3000:]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_workers_are_not_pinned_by_default(tmp_path: Path) -> None:
    allowed = frozenset(os.sched_getaffinity(0))
    server = LiveServer(
        log_path=tmp_path / "server.log", args=["--no-access-log", "--workers", "2"]
    ).start()
    try:
        for pid in _wait_for_workers(server.pid, 2):
            assert _affinities(pid) == {allowed}
    finally:
        assert server.stop() == 0, server.log()[-3000:]
