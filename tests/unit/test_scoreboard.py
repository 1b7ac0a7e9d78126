"""scoreboard.py: what the workers' threads run, as the master reads it.

The torn-read test forks a real writer process (the master and its workers share the mapping
the same way) and checks that no reading mixes two writes.
"""

from __future__ import annotations

import os
import threading

import pytest

from django_wsgiserve.scoreboard import (
    _ROW,
    METHOD_BYTES,
    TARGET_BYTES,
    RunningRequest,
    Scoreboard,
)


@pytest.fixture
def board():
    scoreboard = Scoreboard(slots=4, threads=2)
    yield scoreboard
    scoreboard.close()


def in_thread(function):
    """Run ``function`` in a new thread (a pool thread has its own row), and wait."""
    thread = threading.Thread(target=function)
    thread.start()
    thread.join()
    return thread


def test_a_running_request_shows_with_its_method_path_start_and_thread(board):
    slot = board.claim()
    recorder = board.recorder(slot)
    thread_ids = []

    def run():
        thread_ids.append(threading.get_native_id())
        recorder.begin(b"POST", b"/orders/42/pay", 1234.5)

    in_thread(run)
    reading = board.read(slot)
    assert reading.running == (RunningRequest(1234.5, thread_ids[0], "POST", "/orders/42/pay"),)
    assert reading.changing_rows == 0


def test_an_ended_request_is_gone(board):
    slot = board.claim()
    recorder = board.recorder(slot)

    def run():
        recorder.begin(b"GET", b"/a", 10.0)
        recorder.end()

    in_thread(run)
    assert board.read(slot).running == ()


def test_each_thread_has_its_row(board):
    slot = board.claim()
    recorder = board.recorder(slot)
    in_thread(lambda: recorder.begin(b"GET", b"/one", 1.0))
    in_thread(lambda: recorder.begin(b"GET", b"/two", 2.0))
    paths = sorted(request.path for request in board.read(slot).running)
    assert paths == ["/one", "/two"]


def test_the_query_is_left_out_and_a_long_path_is_cut(board):
    slot = board.claim()
    recorder = board.recorder(slot)
    long_path = b"/" + b"p" * 500
    in_thread(lambda: recorder.begin(b"GET", b"/login?token=secret", 1.0))
    in_thread(lambda: recorder.begin(b"M" * 40, long_path, 2.0))
    by_start = {request.started: request for request in board.read(slot).running}
    assert by_start[1.0].path == "/login"
    assert by_start[2.0].path == long_path[:TARGET_BYTES].decode()
    assert by_start[2.0].method == "M" * METHOD_BYTES


def test_a_thread_beyond_the_rows_is_not_recorded(board):
    slot = board.claim()
    recorder = board.recorder(slot)
    for start in (1.0, 2.0, 3.0):  # three threads, two rows
        in_thread(lambda start=start: recorder.begin(b"GET", b"/", start))
    assert sorted(request.started for request in board.read(slot).running) == [1.0, 2.0]


def test_the_header_holds_what_the_loop_published(board):
    slot = board.claim()
    board.recorder(slot).publish(requests=1200, connections=17, busy=2, queued=3)
    reading = board.read(slot)
    assert (reading.requests, reading.connections) == (1200, 17)
    assert (reading.busy_threads, reading.queued_requests) == (2, 3)


def test_a_released_slot_comes_back_empty(board):
    slot = board.claim()
    recorder = board.recorder(slot)
    recorder.publish(requests=5, connections=1, busy=1, queued=0)
    in_thread(lambda: recorder.begin(b"GET", b"/killed-mid-request", 1.0))
    board.release(slot)
    again = board.claim()
    assert again == slot
    reading = board.read(again)
    assert reading.running == ()
    assert (reading.requests, reading.connections, reading.busy_threads) == (0, 0, 0)


def test_slots_run_out_and_come_back(board):
    slots = [board.claim() for _ in range(4)]
    assert sorted(slots) == [0, 1, 2, 3]
    assert board.claim() is None
    board.release(slots[2])
    assert board.claim() == slots[2]


def test_releasing_twice_or_none_changes_nothing(board):
    slot = board.claim()
    board.release(slot)
    board.release(slot)
    board.release(None)
    assert board.claim() == slot


def test_a_row_caught_between_its_two_sequence_numbers_is_reported_as_changing(board):
    # The first sequence number written, the body and the last not yet: a write in progress.
    slot = board.claim()
    offset = slot * (32 + board.rows * _ROW.size) + 32
    _ROW.pack_into(board._map, offset, 7, 5.0, 1, b"GET", b"/half-written", 6)
    reading = board.read(slot)
    assert reading.running == ()
    assert reading.changing_rows == 1


def _request(number: int) -> tuple[bytes, bytes]:
    """Method and path that tell the same number: a reading that mixes writes shows."""
    return f"M{number % 1000:03d}".encode(), f"/{number}/".encode() + b"x" * (number % 150)


def _consistent(request: RunningRequest) -> bool:
    number = request.path.split("/")[1] if request.path.count("/") == 2 else ""
    if not number.isdigit():
        return False  # a path of one write cut by another's
    method, path = _request(int(number))
    return request.method == method.decode() and request.path == path.decode()


def test_no_reading_mixes_two_writes_of_another_process(board):
    slot = board.claim()
    recorder = board.recorder(slot)
    writes = 300_000
    pid = os.fork()
    if pid == 0:  # the writer: a worker's pool thread
        code = 1
        try:
            for number in range(writes):
                recorder.begin(*_request(number), float(number + 1))
                if number % 3 == 0:
                    recorder.end()
            code = 0
        finally:
            os._exit(code)
    readings = mixed = 0
    status = None
    try:
        while readings < 2_000_000 and status is None:
            reading = board.read(slot)
            readings += 1
            mixed += sum(not _consistent(request) for request in reading.running)
            if readings % 1000 == 0:
                reaped, code = os.waitpid(pid, os.WNOHANG)
                status = code if reaped else None
    finally:
        if status is None:
            status = os.waitpid(pid, 0)[1]
    assert os.waitstatus_to_exitcode(status) == 0
    assert mixed == 0
    final = board.read(slot).running
    assert [request.started for request in final] == [float(writes)]
