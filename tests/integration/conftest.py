"""Fixtures that start real ``serve`` processes (see tests/live.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.live import LiveServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("files")


@pytest.fixture(scope="module")
def start_server(
    tmp_path_factory: pytest.TempPathFactory, files_dir: Path
) -> Iterator[Callable[..., LiveServer]]:
    """Start servers for a test module; all are stopped (and must exit 0) at the end."""
    servers: list[LiveServer] = []
    logs = tmp_path_factory.mktemp("logs")

    def start(
        *args: str,
        family: str = "tcp",
        env: dict[str, str] | None = None,
        settings: str = "tests.settings",
        **kwargs: object,
    ) -> LiveServer:
        server = LiveServer(
            log_path=logs / f"server-{len(servers)}.log",
            family=family,
            settings=settings,
            args=list(args),
            env={"WSGISERVE_TEST_FILES_DIR": str(files_dir), **(env or {})},
            **kwargs,  # type: ignore[arg-type]
        )
        servers.append(server)
        return server.start()

    yield start
    failures = []
    for server in servers:
        code = server.stop()
        if code != 0:
            failures.append(f"exit code {code}; log:\n{server.log()[-4000:]}")
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module", params=["tcp", "unix"])
def server(request: pytest.FixtureRequest, start_server: Callable[..., LiveServer]) -> LiveServer:
    """A server for the test apps, over TCP and over a unix socket."""
    return start_server("--threads", "4", family=request.param)
