"""balance.py: the shared connection-count table and the yield rule."""

from __future__ import annotations

import os

import pytest

from django_wsgiserve.balance import FREE, MAX_YIELDS, SLACK, BalanceTable
from django_wsgiserve.config import resolve_config
from django_wsgiserve.pool import ThreadPool
from django_wsgiserve.server import build_server


def test_claim_and_release_slots() -> None:
    table = BalanceTable(3)
    assert table.counts() == [FREE, FREE, FREE]
    assert [table.claim(), table.claim(), table.claim()] == [0, 1, 2]
    assert table.claim() is None  # full: that worker runs without balance
    assert table.counts() == [FREE, FREE, FREE]  # until each worker's loop publishes
    table.share(0).update(0)
    table.share(2).update(0)
    table.release(1)
    assert table.counts() == [0, FREE, 0]
    assert table.claim() == 1
    table.release(None)  # a worker forked without a slot
    table.release(7)  # never claimed: ignored


def test_a_booting_worker_does_not_count_until_its_loop_publishes() -> None:
    """A claimed slot is a worker still importing the project (seconds, with PRELOAD off: after
    every SIGHUP and respawn). Counted as 0 connections it would halve the average, and the
    workers that serve would yield, accepting one connection per MAX_YIELDS * BACKOFF_S."""
    table = BalanceTable(4)
    serving = [table.share(table.claim()) for _ in range(2)]  # type: ignore[arg-type]
    for share in serving:
        share.update(10)
    booting = table.claim()
    assert booting is not None
    assert table.counts()[booting] == FREE
    assert not serving[0].should_yield(10)
    table.share(booting).update(0)  # its loop runs: now it takes connections
    assert serving[0].should_yield(10)


def test_the_loop_publishes_its_count_when_it_starts_accepting() -> None:
    table = BalanceTable(2)
    slot = table.claim()
    assert slot is not None
    loop = build_server(
        config=resolve_config({"ACCESS_LOG": False}, {}, {}),
        listeners=[],
        application=lambda environ, start_response: [],
        pool=ThreadPool(threads=1),
        share=table.share(slot),
    ).loop
    seen = []
    loop.request_stop()
    loop.run(on_ready=lambda: seen.append(table.counts()[slot]))
    assert seen == [0]
    assert table.counts()[slot] == FREE  # drained: it left


def test_a_single_worker_never_yields() -> None:
    table = BalanceTable(4)
    share = table.share(table.claim())  # type: ignore[arg-type]
    share.update(1000)
    assert not share.should_yield(1000)


def test_the_busiest_worker_yields_past_average_plus_slack() -> None:
    table = BalanceTable(4)
    mine, other = (table.share(table.claim()) for _ in range(2))  # type: ignore[arg-type]
    other.update(0)
    # Average of (n, 0) is n/2; yield once n > n/2 + SLACK, i.e. n > 2 * SLACK.
    for count in range(2 * SLACK + 1):
        mine.update(count)
        assert not mine.should_yield(count), count
    mine.update(2 * SLACK + 1)
    assert mine.should_yield(2 * SLACK + 1)
    assert not other.should_yield(0)  # the one with fewer never yields


def test_draining_and_free_slots_do_not_count() -> None:
    table = BalanceTable(8)
    mine, draining = (table.share(table.claim()) for _ in range(2))  # type: ignore[arg-type]
    draining.update(50)
    mine.update(10)
    assert not mine.should_yield(10)  # below the average of (10, 50)
    draining.leave()
    assert not mine.should_yield(10)  # alone among the accepting workers


def test_yields_are_bounded_then_it_accepts() -> None:
    table = BalanceTable(2)
    mine, other = (table.share(table.claim()) for _ in range(2))  # type: ignore[arg-type]
    other.update(0)
    mine.update(20)
    decisions = [mine.should_yield(20) for _ in range(MAX_YIELDS + 1)]
    assert decisions == [True] * MAX_YIELDS + [False]
    assert mine.should_yield(20)  # the count restarts after an accept


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_counts_are_shared_with_forked_workers() -> None:
    table = BalanceTable(2)
    first, second = table.claim(), table.claim()
    assert first is not None
    assert second is not None
    pid = os.fork()
    if pid == 0:  # the worker: publish, then leave without running pytest's teardown
        code = 1
        try:
            table.share(second).update(17)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert table.counts() == [FREE, 17]
    table.share(first).update(3)
    assert not table.share(first).should_yield(3)
