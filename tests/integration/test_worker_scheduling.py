"""CPU_AFFINITY and BATCH_SCHEDULING: what the kernel applies to each worker's threads.

The effect on speed is measured in benchmarks/ (scaling.py, README.md), not here. These check
that the pin and the policy apply to every thread of every worker (threads started later
inherit them, a worker added by SIGTTIN too), that the master keeps its own, and that neither
is applied by default.
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


def _workers(master: int) -> list[int]:
    text = Path(f"/proc/{master}/task/{master}/children").read_text()
    return [int(pid) for pid in text.split()]


SCHED_OTHER = 0
SCHED_BATCH = 3


def _policies(pid: int) -> set[int]:
    """The scheduling policies of the threads of ``pid``."""
    return {os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def _wait_for_workers(master: int, count: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = _workers(master)
        # A worker is complete once its pool threads exist: main thread + THREADS.
        if len(pids) == count and all(len(os.listdir(f"/proc/{p}/task")) >= 4 for p in pids):
            return pids
        time.sleep(0.05)
    raise AssertionError(f"expected {count} workers, have {_workers(master)}")


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_BATCH is Linux only")
def test_batch_scheduling_applies_to_every_worker_thread(tmp_path: Path) -> None:
    server = LiveServer(
        log_path=tmp_path / "server.log",
        args=["--no-access-log", "--workers", "2", "--threads", "3", "--batch-scheduling"],
    ).start()
    try:
        assert server.get("/").status == 200
        assert _policies(server.pid) == {SCHED_OTHER}
        workers = _wait_for_workers(server.pid, 2)
        for pid in workers:
            assert _policies(pid) == {SCHED_BATCH}, pid
        server.send_signal(signal.SIGTTIN)
        added = set(_wait_for_workers(server.pid, 3)) - set(workers)
        assert len(added) == 1
        assert _policies(added.pop()) == {SCHED_BATCH}
    finally:
        assert server.stop() == 0, server.log()[-3000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_BATCH is Linux only")
def test_default_scheduling_is_left_alone(tmp_path: Path) -> None:
    server = LiveServer(
        log_path=tmp_path / "server.log", args=["--no-access-log", "--workers", "1"]
    ).start()
    try:
        for pid in _wait_for_workers(server.pid, 1):
            assert _policies(pid) == {SCHED_OTHER}
    finally:
        assert server.stop() == 0, server.log()[-3000:]
