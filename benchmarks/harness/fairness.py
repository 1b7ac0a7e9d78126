"""Per-connection fairness: how many responses each of N keep-alive connections got.

wrk reports totals only. This small closed-loop client (stdlib, one thread, non-blocking
sockets and a selector) opens N keep-alive connections, keeps one GET in flight on each for
a fixed time, and counts the complete responses per connection. A server that serves some
connections and leaves the others waiting (thread-per-connection keep-alive with fewer
threads than connections) shows up as max/min >> 1, or as connections with zero responses.

    python3 benchmarks/harness/fairness.py --port 8000 --path /json --connections 64 --duration 3

Prints one JSON line: {"counts": [...], "errors": n, "reconnects": n, "elapsed": s}. It is
bounded in time: connects are non-blocking too, and the clock starts when they are sent,
so a connection still waiting to be accepted at the deadline simply counts zero. A
connection the server closes (Connection: close, as gunicorn's sync worker does, or an
idle-connection limit) is reopened and keeps its slot; "reconnects" counts those.
"""

from __future__ import annotations

import argparse
import errno
import json
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field

__all__ = ["Slot", "main", "run"]

_HEADER_END = b"\r\n\r\n"


@dataclass(slots=True)
class Slot:
    """One client connection (reopened in place when the server closes it)."""

    index: int
    sock: socket.socket | None = None
    buffer: bytearray = field(default_factory=bytearray)
    count: int = 0


def _response_length(head: bytes, buffer: bytearray) -> int | None:
    """Bytes of the first complete response in ``buffer``; None while incomplete."""
    header_end = len(head) + len(_HEADER_END)
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            total = header_end + int(value.strip())
            return total if len(buffer) >= total else None
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            end = buffer.find(b"\r\n0\r\n\r\n", header_end - 2)
            return end + 7 if end >= 0 else None
    return header_end  # no body framing: a bodiless response (204/304)


def _wants_close(head: bytes) -> bool:
    lowered = head.lower()
    return b"\r\nconnection: close" in lowered or lowered.startswith(b"http/1.0")


class Client:
    """N connections, one request in flight on each, counted until a deadline."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.address = (host, port)
        self.request = request
        self.selector = selectors.DefaultSelector()
        self.errors = 0
        self.reconnects = 0

    def open(self, slot: Slot) -> None:
        """(Re)connect ``slot`` without blocking; its request goes out once it is connected."""
        self.close(slot)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        error = sock.connect_ex(self.address)
        if error not in (0, errno.EINPROGRESS):
            sock.close()
            self.errors += 1
            return
        slot.sock = sock
        self.selector.register(sock, selectors.EVENT_WRITE, slot)

    def on_connected(self, slot: Slot) -> None:
        sock = slot.sock
        assert sock is not None
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.errors += 1
            self.close(slot)
            return
        self.selector.modify(sock, selectors.EVENT_READ, slot)
        self.send(slot)

    def send(self, slot: Slot) -> None:
        try:
            sent = slot.sock.send(self.request) if slot.sock else 0
        except OSError:
            sent = 0
        if sent != len(self.request):  # a tiny request into an empty socket buffer
            self.errors += 1
            self.open(slot)

    def close(self, slot: Slot) -> None:
        if slot.sock is not None:
            self.selector.unregister(slot.sock)
            slot.sock.close()
            slot.sock = None
        slot.buffer.clear()

    def on_readable(self, slot: Slot) -> None:
        try:
            data = slot.sock.recv(262144) if slot.sock else b""
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.errors += bool(slot.buffer)
            self.reconnects += 1
            self.open(slot)
            return
        slot.buffer += data
        self._consume(slot)

    def _consume(self, slot: Slot) -> None:
        head_end = slot.buffer.find(_HEADER_END)
        if head_end < 0:
            return
        head = bytes(slot.buffer[:head_end])
        length = _response_length(head, slot.buffer)
        if length is None:
            return
        slot.count += 1
        if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")):
            self.errors += 1
        if _wants_close(head):
            self.reconnects += 1
            self.open(slot)
            return
        del slot.buffer[:length]
        self.send(slot)


def run(args: argparse.Namespace) -> dict[str, object]:
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nUser-Agent: fairness\r\n\r\n"
    ).encode()
    client = Client(args.host, args.port, request)
    slots = [Slot(index) for index in range(args.connections)]
    for slot in slots:
        client.open(slot)
    started = time.monotonic()
    deadline = started + args.duration
    while (now := time.monotonic()) < deadline:
        for key, events in client.selector.select(timeout=min(0.1, deadline - now)):
            if events & selectors.EVENT_WRITE:
                client.on_connected(key.data)
            else:
                client.on_readable(key.data)
    elapsed = time.monotonic() - started
    counts = [slot.count for slot in slots]
    for slot in slots:
        client.close(slot)
    return {
        "counts": counts,
        "errors": client.errors,
        "reconnects": client.reconnects,
        "elapsed": elapsed,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/json")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=3.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(run(parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
