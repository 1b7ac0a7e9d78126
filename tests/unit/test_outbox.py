"""OutputQueue over a real socketpair: what is sent at once, queued, spilled and flushed."""

from __future__ import annotations

import os
import socket

import pytest

from django_wsgiserve.context import WorkerStats
from django_wsgiserve.errors import ClientDisconnectedError
from django_wsgiserve.outbox import HIGH_WATERMARK, FlushResult, OutputQueue


class Pair:
    """A queue on one end of a socketpair with small buffers; the test reads the other end."""

    def __init__(self) -> None:
        self.server, self.client = socket.socketpair()
        for sock in (self.server, self.client):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.setblocking(False)
        self.jobs: list[object] = []
        self.stats = WorkerStats()
        self.queue = OutputQueue(self.server, stats=self.stats, run_job=self.jobs.append)
        self.received = bytearray()

    def read(self) -> None:
        while True:
            try:
                data = self.client.recv(1 << 20)
            except BlockingIOError:
                return
            if not data:
                return
            self.received += data

    def drain(self) -> FlushResult:
        """Read and flush in turns until the queue is empty (bounded)."""
        result = FlushResult.BLOCKED
        for _ in range(100_000):
            self.read()
            result = self.queue.flush()
            if result is not FlushResult.BLOCKED:
                break
        self.read()
        return result

    def close(self) -> None:
        self.queue.clear()
        self.server.close()
        self.client.close()


@pytest.fixture
def pair():
    made = Pair()
    yield made
    made.close()


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    with open(path, "rb") as file:
        yield path, file


def test_small_parts_leave_at_once(pair):
    assert pair.queue.send([b"head\r\n\r\n", b"body"]) is False
    assert not pair.queue
    pair.read()
    assert pair.received == b"head\r\n\r\nbody"


def test_what_does_not_fit_is_queued_then_flushed_in_order(pair):
    payload = os.urandom(300_000)
    assert pair.queue.send([b"H", payload, b"T"]) is True
    assert pair.queue.bytes_in_memory > 0
    assert pair.drain() is FlushResult.DONE
    assert pair.received == b"H" + payload + b"T"
    assert pair.queue.bytes_in_memory == 0


def test_past_the_high_watermark_bytes_spill_to_a_file_and_keep_their_order(pair):
    parts = [os.urandom(256 << 10) for _ in range(12)]  # 3 MiB to a client that is not reading
    for part in parts:
        pair.queue.send([part])
    assert pair.queue.bytes_in_memory <= HIGH_WATERMARK
    assert pair.queue.spilled_pending > 0
    assert not pair.queue.has_room
    assert pair.drain() is FlushResult.DONE
    assert pair.received == b"".join(parts)
    assert pair.queue.spilled_pending == 0
    assert pair.stats.sendfile_bytes > 0  # the spilled part went out by sendfile


def test_a_file_part_that_does_not_fit_is_finished_by_the_flush_then_on_done_runs(pair, data_file):
    path, file = data_file
    done = object()
    assert pair.queue.send_file(file.fileno(), 10, 500_000, on_done=done) is True  # type: ignore[arg-type]
    assert pair.jobs == []
    assert pair.drain() is FlushResult.DONE
    assert pair.received == path.read_bytes()[10:500_010]
    assert pair.jobs == [done]


def test_head_and_file_go_out_together(pair, data_file):
    path, file = data_file
    pair.queue.send_head_and_file(b"HEAD\r\n\r\n", file.fileno(), 0, 1000)
    pair.drain()
    assert pair.received == b"HEAD\r\n\r\n" + path.read_bytes()[:1000]


def test_clear_drops_the_queue_and_still_runs_on_done(pair, data_file):
    _, file = data_file
    done = object()
    pair.queue.send([os.urandom(200_000)])
    pair.queue.send_file(file.fileno(), 0, 1 << 20, on_done=done)  # type: ignore[arg-type]
    pair.queue.clear()
    assert not pair.queue
    assert pair.jobs == [done]


def test_a_vanished_peer_is_a_client_disconnect(pair):
    pair.client.close()
    with pytest.raises(ClientDisconnectedError):
        pair.queue.send([b"x" * 100])


def test_a_flush_to_a_vanished_peer_fails(pair):
    pair.queue.send([os.urandom(300_000)])
    pair.client.close()
    assert pair.queue.flush() is FlushResult.FAILED


def test_a_file_that_shrank_fails_the_flush(pair, tmp_path):
    path = tmp_path / "shrinks.bin"
    path.write_bytes(b"a" * 400_000)
    with open(path, "rb") as file:
        pair.queue.send_file(file.fileno(), 0, 400_000)
        os.truncate(path, 1000)
        assert pair.drain() is FlushResult.FAILED
