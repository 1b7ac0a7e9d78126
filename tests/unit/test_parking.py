"""The pool threads' wait for work (parking.ParkedConnections), over real socket pairs and
a real epoll: queued jobs, parked connections that become readable, the connection a thread
holds, and the loop taking connections back."""

from __future__ import annotations

import queue
import socket
import threading
from typing import TYPE_CHECKING

import pytest

from django_wsgiserve.parking import ParkedConnections

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from django_wsgiserve.pool import Jobs


class FakeConnection:
    """Counts what the parking asks of a connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.fd = sock.fileno()
        self.parking: ParkedConnections | None = None  # set: watch_parked parks for real
        self.served = 0
        self.watched = 0
        self.reclaimed = 0

    def serve_parked(self) -> None:
        self.served += 1

    def watch_parked(self) -> None:
        self.watched += 1
        if self.parking is not None:
            assert self.parking.park(self)

    def reclaim(self) -> None:
        self.reclaimed += 1


@pytest.fixture
def pairs() -> Iterator[Callable[[], tuple[FakeConnection, socket.socket]]]:
    """Make connections over socket pairs: (the connection, the peer's end)."""
    sockets: list[socket.socket] = []

    def make() -> tuple[FakeConnection, socket.socket]:
        ours, peer = socket.socketpair()
        sockets.extend((ours, peer))
        return FakeConnection(ours), peer

    yield make
    for sock in sockets:
        sock.close()


class Waiter:
    """``wait_for_work`` in a thread of its own, as a pool thread calls it."""

    def __init__(self, parking: ParkedConnections, jobs: Jobs) -> None:
        self.result: tuple[Callable[[], None] | None, bool] | None = None
        self._thread = threading.Thread(target=self._run, args=(parking, jobs), daemon=True)
        self._thread.start()

    def _run(self, parking: ParkedConnections, jobs: Jobs) -> None:
        self.result = parking.wait_for_work(jobs)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def job() -> None:
    pass


def test_a_parked_connection_that_becomes_readable_is_served(pairs) -> None:
    parking = ParkedConnections(load=lambda: 0)
    connection, peer = pairs()
    assert parking.park(connection)
    peer.send(b"GET / HTTP/1.1\r\n\r\n")
    assert parking.wait_for_work(queue.SimpleQueue()) == (connection.serve_parked, False)


def test_one_wake_up_per_parking(pairs) -> None:
    """EPOLLONESHOT: a connection comes up once until it is parked again, whatever is
    still unread on it, so two threads never serve it at once."""
    parking = ParkedConnections(load=lambda: 0)
    jobs: Jobs = queue.SimpleQueue()
    first, first_peer = pairs()
    second, second_peer = pairs()
    for connection, peer in ((first, first_peer), (second, second_peer)):
        assert parking.park(connection)
        peer.send(b"x")
    taken = {parking.wait_for_work(jobs)[0], parking.wait_for_work(jobs)[0]}
    assert taken == {first.serve_parked, second.serve_parked}
    waiter = Waiter(parking, jobs)
    assert not waiter.join(0.3)  # neither comes up again: the thread waits
    jobs.put(job)
    parking.wake()
    assert waiter.join(5)
    assert waiter.result == (job, True)
    assert parking.park(first)  # parked again with its byte unread: up at once
    assert parking.wait_for_work(jobs) == (first.serve_parked, False)


def test_a_thread_leaving_parked_connections_unwatched_calls_another(pairs) -> None:
    """Nothing parked: idle threads wait on the queue. A thread that parks a connection
    and then leaves for a job, with nobody else looking, wakes one of them to watch it."""
    parking = ParkedConnections(load=lambda: 0)
    jobs: Jobs = queue.SimpleQueue()
    waiter = Waiter(parking, jobs)
    assert not waiter.join(0.3)  # blocked on the queue
    held, peer = pairs()
    held.parking = parking
    assert parking.hold(held)
    jobs.put(job)
    # This thread takes the job, hands its held connection to the epoll and calls the waiter.
    assert parking.wait_for_work(jobs) == (job, True)
    assert held.watched == 1
    peer.send(b"x")
    assert waiter.join(5)
    assert waiter.result == (held.serve_parked, False)


def test_a_queued_job_wakes_a_waiting_thread_and_goes_first(pairs) -> None:
    idle = []
    parking = ParkedConnections(load=lambda: 0, on_idle=lambda: idle.append(1))
    jobs: Jobs = queue.SimpleQueue()
    # Nothing parked: the thread waits on the queue itself.
    waiter = Waiter(parking, jobs)
    assert not waiter.join(0.2)
    jobs.put(job)
    assert waiter.join(5)
    assert waiter.result == (job, True)
    # A connection parked: the thread waits in the epoll, and the eventfd wakes it.
    connection, peer = pairs()
    assert parking.park(connection)
    waiter = Waiter(parking, jobs)
    assert not waiter.join(0.2)
    assert idle == [1]  # it wrote the log lines kept so far before it slept
    jobs.put(job)
    parking.wake()
    assert waiter.join(5)
    assert waiter.result == (job, True)
    peer.send(b"x")
    jobs.put(job)
    assert parking.wait_for_work(jobs) == (job, True)
    assert parking.wait_for_work(jobs) == (connection.serve_parked, False)


def test_the_held_connection_comes_last_and_without_a_wait(pairs) -> None:
    parking = ParkedConnections(load=lambda: 1)
    jobs: Jobs = queue.SimpleQueue()
    held, _held_peer = pairs()
    assert parking.hold(held)
    # Nothing else to do: this thread reads it itself (nothing has to be ready on it).
    assert parking.wait_for_work(jobs) == (held.serve_parked, False)
    assert held.watched == 0
    # Something else first: the held connection is handed to the epoll.
    assert parking.hold(held)
    jobs.put(job)
    assert parking.wait_for_work(jobs) == (job, True)
    assert held.watched == 1
    other, other_peer = pairs()
    assert parking.hold(held)
    assert parking.park(other)
    other_peer.send(b"x")
    assert parking.wait_for_work(jobs) == (other.serve_parked, False)
    assert held.watched == 2


def test_a_thread_holds_one_connection_at_a_time(pairs) -> None:
    parking = ParkedConnections(load=lambda: 1)
    first, _ = pairs()
    second, _ = pairs()
    assert parking.hold(first)
    assert parking.hold(second)
    assert first.watched == 1
    assert parking.wait_for_work(queue.SimpleQueue()) == (second.serve_parked, False)


def test_under_load_a_finished_connection_is_not_held(pairs) -> None:
    load = 2
    parking = ParkedConnections(load=lambda: load)
    connection, _ = pairs()
    assert not parking.is_quiet(1)
    assert not parking.hold(connection)
    load = 1
    assert parking.is_quiet(1)
    assert not parking.is_quiet(0)
    assert parking.hold(connection)


def test_a_forgotten_connection_does_not_come_up(pairs) -> None:
    parking = ParkedConnections(load=lambda: 0)
    jobs: Jobs = queue.SimpleQueue()
    connection, peer = pairs()
    assert parking.park(connection)
    parking.forget(connection)
    peer.send(b"x")
    waiter = Waiter(parking, jobs)
    assert not waiter.join(0.3)
    jobs.put(job)
    parking.wake()
    assert waiter.join(5)
    assert waiter.result == (job, True)


def test_stop_gives_every_connection_back_and_parks_no_more(pairs) -> None:
    parking = ParkedConnections(load=lambda: 0)
    first, _ = pairs()
    second, _ = pairs()
    assert parking.park(first)
    assert parking.park(second)
    assert parking.reclaim_all() == 2
    assert (first.reclaimed, second.reclaimed) == (1, 1)
    parking.stop()
    assert (first.reclaimed, second.reclaimed) == (2, 2)
    assert not parking.park(first)
    assert not parking.hold(first)


def test_a_thread_serving_parked_connections_writes_due_log_lines(pairs) -> None:
    """The loop may sleep for a tick while the pool threads serve parked connections: their
    looks for work write the access log lines that are due, as the loop's turns do."""
    turns: list[float] = []
    parking = ParkedConnections(load=lambda: 1, clock=lambda: 5.0, on_turn=turns.append)
    jobs: Jobs = queue.SimpleQueue()
    jobs.put(job)
    assert parking.wait_for_work(jobs) == (job, True)
    assert turns == []  # nothing parked: the loop reads, and writes at its turns
    held, _ = pairs()
    assert parking.hold(held)
    assert parking.wait_for_work(jobs) == (held.serve_parked, False)
    assert turns == [5.0]
