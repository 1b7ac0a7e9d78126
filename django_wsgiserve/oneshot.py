"""One-shot uwsgi connections served by the pool thread that accepts them.

Design note. nginx never keeps a ``uwsgi_pass`` connection open: every request is a new
connection that carries one packet (vars block and body, buffered by nginx before it
connects) and ends when the response does. Through the loop such a request costs a dozen
system calls in the loop thread (accept, register, read, modify, shut down, read the EOF,
unregister, close) and two thread hand-offs (loop to pool, pool back to loop), each a
release and a re-acquisition of the GIL while the pool threads want it: measured behind
nginx on a plain WSGI app, 114 us of worker CPU per request against 44 us for an HTTP
keep-alive request; served as below, 60 us (uWSGI: 15-20 us).

So when every listener of a worker speaks uwsgi, the pool threads accept themselves, the way
uWSGI's threads do: an idle pool thread waits in its own epoll on the listeners (registered
with ``EPOLLEXCLUSIVE``, so one connection wakes one thread) and on an eventfd that
``ThreadPool.submit`` counts jobs on; it accepts, reads what has arrived without waiting
(``MSG_DONTWAIT``), and when that is a whole request (packet and body) it runs the
application and writes the response itself, blocking with ``WRITE_TIMEOUT``
(``SO_SNDTIMEO``), then closes. Only an idle thread accepts, so the workers share the
connections by how busy they are, and a worker never accepts more than it can start.

Everything else goes to the loop, as a ``UwsgiConnection`` fed the bytes already read
(``Loop.call_soon_threadsafe``): a packet that has not arrived whole (a slow or hostile peer
never holds a thread), a malformed one (the loop answers or closes and logs as usual), and a
static file (sent by the loop with sendfile). The environ, the access log, the metrics, the
in-flight table and ``wsgi.file_wrapper`` (sendfile, in the thread) are the dispatcher's and
the request cycle's, as for every request. A draining worker stops the threads accepting at
once (``pause``) and the loop takes what waits in the backlog, as it does for HTTP; a request
being served here keeps its thread until its response is sent (the pool's shutdown waits).

Threads: ``wait_for_work`` and ``serve`` run in pool threads; ``wake``, ``pause`` any thread.
Never imports Django.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

from .errors import ClientDisconnectedError, ProtocolError
from .gateway import GatewayRequest, request_view
from .http.cgi import CGIRequest
from .http.events import NEED_DATA, Data, EndOfMessage
from .requestbody import RequestBody
from .uwsgi import UwsgiRequestParser, UwsgiResponseWriter

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .context import WorkerContext, WorkerStats
    from .dispatch import Dispatcher
    from .pool import Jobs
    from .wsgi import EnvironTemplate

__all__ = ["OneShotAcceptor", "OneShotListener"]

logger = logging.getLogger(__name__)

_RECV_BYTES = 65536
_WRITER = UwsgiResponseWriter()
# Reading what a peer sent after its request, before the close (nginx sends nothing).
_DRAIN_READS = 4


class OneShotListener:
    """A uwsgi listener served by the pool threads, and how the loop takes a connection over."""

    __slots__ = ("hand_over", "is_unix", "sock", "template")

    def __init__(
        self,
        sock: socket.socket,
        template: EnvironTemplate,
        hand_over: Callable[[socket.socket, Any, bytes], None],
    ) -> None:
        self.sock = sock
        self.template = template
        self.hand_over = hand_over  # (client, address, bytes read): the loop serves it
        self.is_unix = sock.family == socket.AF_UNIX


class OneShotAcceptor:
    """The pool threads' wait for work: a job, or a connection to accept (see the notes)."""

    def __init__(
        self,
        listeners: Sequence[OneShotListener],
        *,
        context: WorkerContext,
        dispatcher: Dispatcher,
        get_date: Callable[[], bytes],
        threads: int,
    ) -> None:
        self._listeners = {listener.sock.fileno(): listener for listener in listeners}
        self._context = context
        self._dispatcher = dispatcher
        self._get_date = get_date
        self._threads = threads
        # Semaphore mode: each submit adds one, each woken thread takes one. It and the
        # threads' epolls live as long as the worker process (the pool's threads are daemons).
        self._jobs_ready = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC | os.EFD_SEMAPHORE)
        self._is_accepting = True
        self._lock = threading.Lock()
        self._pollers: list[select.epoll] = []  # each thread's, made on its first wait
        self._local = threading.local()
        # SO_SNDTIMEO is a struct timeval: seconds and microseconds (0, 0 would never time out).
        seconds, fraction = divmod(max(context.limits.write_timeout, 0.001), 1.0)
        self._send_timeout = struct.pack("ll", int(seconds), int(fraction * 1_000_000))

    # -- any thread ---------------------------------------------------------------------------

    def wake(self, count: int = 1) -> None:
        """``count`` jobs were queued: wake as many waiting threads (any thread). One write
        each: with ``EPOLLEXCLUSIVE`` a write wakes one waiter, whatever it adds."""
        with contextlib.suppress(OSError):
            for _ in range(count):
                os.eventfd_write(self._jobs_ready, 1)

    def pause(self) -> None:
        """Stop accepting, before the worker closes its listeners (the loop thread, when the
        worker drains). Each thread's epoll forgets them here: a closed descriptor could
        not be unregistered later."""
        with self._lock:
            self._is_accepting = False
            for poller in self._pollers:
                for fd in self._listeners:
                    with contextlib.suppress(OSError):
                        poller.unregister(fd)

    # -- pool threads -------------------------------------------------------------------------

    def wait_for_work(self, jobs: Jobs) -> tuple[Callable[[], None] | None, bool]:
        """The next job of this thread: a queued one (True), or the serving of a connection
        it accepted (False). Blocks (GIL released) while there is neither."""
        try:
            poller: select.epoll = self._local.poller
        except AttributeError:
            poller = self._local.poller = self._new_poller()
        while True:
            try:
                return jobs.get_nowait(), True
            except queue.Empty:
                pass
            for fd, _ in poller.poll():
                if fd == self._jobs_ready:
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(self._jobs_ready)
                    continue
                job = self._accept(self._listeners[fd])
                if job is not None:
                    return job, False

    def _new_poller(self) -> select.epoll:
        poller = select.epoll()
        poller.register(self._jobs_ready, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        with self._lock:
            if self._is_accepting:
                for fd in self._listeners:
                    poller.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            self._pollers.append(poller)
        return poller

    def _accept(self, listener: OneShotListener) -> Callable[[], None] | None:
        if not self._is_accepting:
            return None
        try:
            client, address = listener.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None  # another thread, or another worker, took it
        except OSError as exc:
            if self._is_accepting:  # else the worker has just closed its listeners
                logger.warning("accept() failed: %s", exc)
            return None
        return lambda: self.serve(listener, client, address)

    def serve(self, listener: OneShotListener, client: socket.socket, address: Any) -> None:
        """Serve ``client``'s request here if it has arrived whole, else hand it to the loop."""
        started = time.monotonic()
        try:
            data = client.recv(_RECV_BYTES, socket.MSG_DONTWAIT)
        except BlockingIOError:
            data = b""  # not there yet: the loop waits for it
        except OSError:
            client.close()
            return
        else:
            if not data:  # closed before sending anything
                client.close()
                return
        parser = UwsgiRequestParser(max_body_bytes=self._context.limits.max_body_bytes)
        parser.feed(data)
        request = self._complete_request(parser)
        if request is None:
            client.setblocking(False)
            listener.hand_over(client, address, data)
            return
        variables, body = request
        view = request_view(variables)
        static = self._context.static
        if static is not None and view.path.startswith(static.prefixes):
            body.close()
            client.setblocking(False)
            listener.hand_over(client, address, data)
            return
        peer = ("", "") if listener.is_unix else (address[0], str(address[1]))
        sink = OneShotSink(client, peer, listener.template, self._get_date, self._context.stats)
        with contextlib.suppress(OSError):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self._send_timeout)
        body_file, body_size = body.take()
        self._dispatcher.run_here(
            sink, view, body_file, body_size, started, GatewayRequest(variables, _WRITER)
        )

    @staticmethod
    def _complete_request(
        parser: UwsgiRequestParser,
    ) -> tuple[CGIRequest, RequestBody] | None:
        """The request and its body when ``parser`` holds all of it; None otherwise (not
        there yet, or not valid: the loop's connection reports it)."""
        variables: CGIRequest | None = None
        body = RequestBody(memory_limit=_RECV_BYTES)
        try:
            while True:
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                event_type = type(event)
                if event_type is CGIRequest:
                    variables = event  # type: ignore[assignment]
                elif event_type is Data:
                    body.add(event.data)  # type: ignore[union-attr]
                elif event_type is EndOfMessage and variables is not None:
                    return variables, body
                else:
                    break
        except ProtocolError:
            pass
        body.close()
        return None


class OneShotSink:
    """A uwsgi connection as its one pool thread sees it: the ``wsgi.ResponseSink``, writing
    with blocking sends bounded by ``SO_SNDTIMEO`` (pool thread)."""

    __slots__ = ("_get_date", "_sock", "_stats", "peer", "template")

    can_sendfile = True
    may_keep_alive = False  # uwsgi: one request per connection

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, str],
        template: EnvironTemplate,
        get_date: Callable[[], bytes],
        stats: WorkerStats,
    ) -> None:
        self._sock = sock
        self._get_date = get_date
        self._stats = stats
        self.peer = peer
        self.template = template

    @property
    def sink(self) -> OneShotSink:
        """The dispatcher reads a connection's sink; this one is its own."""
        return self

    def get_date(self) -> bytes:
        return self._get_date()

    def send(self, parts: list[bytes]) -> None:
        sock = self._sock
        try:
            sent = sock.sendmsg(parts)
            total = sum(map(len, parts))
            if sent < total:
                sock.sendall(b"".join(parts)[sent:])
        except OSError as exc:  # a reset, a closed peer, or SO_SNDTIMEO (WRITE_TIMEOUT)
            raise ClientDisconnectedError(f"sending failed: {exc}") from exc

    def send_file(
        self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None = None
    ) -> bool:
        sock, stats = self._sock, self._stats
        try:
            while count > 0:
                sent = os.sendfile(sock.fileno(), fd, offset, count)
                if sent == 0:
                    break  # the file is shorter than it said: the response ends here
                offset += sent
                count -= sent
                stats.sendfile_calls += 1  # approximate counters (context.WorkerStats)
                stats.sendfile_bytes += sent
        except OSError as exc:
            raise ClientDisconnectedError(f"sendfile failed: {exc}") from exc
        return False

    def finish(self, *, keep_alive: bool) -> None:
        """Close. The whole request was read, so nothing unread makes the close a reset;
        whatever a peer sent after it is read and dropped first."""
        sock = self._sock
        with contextlib.suppress(OSError):
            for _ in range(_DRAIN_READS):
                if not sock.recv(_RECV_BYTES, socket.MSG_DONTWAIT):
                    break
        sock.close()
