"""Start a peer that has no command line of its own, for the harness (harness/servers.py).

    python serve_peer.py tornado 127.0.0.1 8000 testproject.wsgi:application --threads 4
    python serve_peer.py bjoern 127.0.0.1 8000 benchmarks.apps.hello:application

One process listening on HOST:PORT and serving the WSGI application MODULE:CALLABLE. Run by
benchmarks/.venv-peers' interpreter in the app's directory, with the app and the repository
on PYTHONPATH (harness/runner.py's ``server_env``). Neither server handles SIGTERM: its
default action ends the process, and the harness stops the whole process group anyway.

- tornado: ``HTTPServer(WSGIContainer(app, executor=ThreadPoolExecutor(N)))`` on asyncio.
  Without an executor WSGIContainer calls the application on the I/O loop itself, one
  request at a time, so a Django view that waits for its database stops every connection;
  the thread pool (tornado 6.3+) is how the other threaded peers run too.
- bjoern: ``bjoern.run(app, host, port)``, its libev loop and the application on one thread
  (``--threads`` is ignored: bjoern has no thread pool).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["main"]


def _load(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name or "application")


def _serve_tornado(app: Any, host: str, port: int, threads: int) -> None:
    from tornado.httpserver import HTTPServer
    from tornado.wsgi import WSGIContainer

    async def serve() -> None:
        executor = ThreadPoolExecutor(threads, thread_name_prefix="wsgi") if threads else None
        server = HTTPServer(WSGIContainer(app, executor=executor))
        server.listen(port, address=host)
        await asyncio.Event().wait()  # until SIGTERM

    asyncio.run(serve())


def _serve_bjoern(app: Any, host: str, port: int, threads: int) -> None:
    import bjoern

    bjoern.run(app, host, port)


_SERVERS = {"tornado": _serve_tornado, "bjoern": _serve_bjoern}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=sorted(_SERVERS))
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("app", help="MODULE:CALLABLE")
    parser.add_argument("--threads", type=int, default=4, help="tornado's thread pool (0: none)")
    args = parser.parse_args(argv)
    _SERVERS[args.server](_load(args.app), args.host, args.port, args.threads)


if __name__ == "__main__":
    main()
