"""The Dockerfile and deploy/kubernetes/ run for real, without a container runtime or a cluster.

What a pod of the Deployment would run is run here: the Dockerfile's ``python manage.py ...``
build steps (collectstatic), the init containers' commands (migrate), then the web container's
command (the image's ``CMD``) with the environment it gets (the image's ``ENV`` overridden by
the Deployment's ``env``), in a network namespace of its own (tests/netns.py), so that it binds
the very addresses the files declare (``0.0.0.0:8000``, ``METRICS_BIND`` ``0.0.0.0:9100``).
Absolute paths in that environment (``/data/db.sqlite3``...) are moved under a temporary
directory that stands for the container's filesystem; the working directory is the one the
Dockerfile copies the project to. Then the kubelet's requests: each probe's port and path, the
Service's target port with the Service's name as Host, and SIGTERM, after which the server
must fail readiness and exit 0 within ``terminationGracePeriodSeconds``. Change a port, a
path, a timeout or the CMD in one file and not in the others, and one of these fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests import netns
from tests.deployfiles import (
    DOCKERFILE,
    REPO,
    container_argv,
    container_env,
    container_port,
    load_manifests,
    parse_dockerfile,
)
from tests.live import LiveServer, read_response, stop_all, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

# Seconds above DRAIN_DELAY + GRACEFUL_TIMEOUT that Kubernetes must wait before its SIGKILL:
# the master still reaps its workers and closes its listeners after the drain.
GRACE_MARGIN_S = 5
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
IMAGE = parse_dockerfile(DOCKERFILE.read_text())
MANIFESTS = load_manifests()
POD = MANIFESTS["Deployment"]["spec"]["template"]["spec"]
(WEB,) = POD["containers"]


@pytest.fixture(scope="module", autouse=True)
def _namespaces() -> None:
    reason = netns.available()
    if reason is not None:
        pytest.skip(f"no network namespace for the pod (needs root): {reason}")


def project_dir() -> Path:
    """The repository directory the Dockerfile copies to its final WORKDIR."""
    sources = [sources for sources, target in IMAGE.copies() if target == IMAGE.workdir]
    assert sources, f"no COPY to the WORKDIR {IMAGE.workdir}"
    (source,) = sources[-1]
    assert (REPO / source / "manage.py").exists()
    return REPO / source


def in_rootfs(env: dict[str, str], rootfs: Path) -> dict[str, str]:
    """The container's environment, its absolute paths moved under ``rootfs``."""
    return {
        name: str(rootfs / value.lstrip("/")) if value.startswith("/") else value
        for name, value in env.items()
    }


def host_env(env: dict[str, str]) -> dict[str, str]:
    """This machine's environment without the server's options, then the container's."""
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("WSGISERVE_") and name != "DJANGO_SETTINGS_MODULE"
    }
    return {**base, **env}


def run_python(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A ``python ...`` command of the image, with this interpreter, in the project."""
    assert argv[0] == "python", f"the image runs its Python as `python`: {argv}"
    return subprocess.run(
        [sys.executable, *argv[1:]],
        cwd=project_dir(),
        env=host_env(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def kubelet_get(pid: int, port: int, path: str, host: str = "") -> tuple[int, bytes]:
    """An HTTP GET as a kubelet sends it, inside the pod's network namespace."""
    with netns.entered(pid), socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\n"
            "User-Agent: kube-probe/1.31\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode()
        )
        response = read_response(sock)
    return response.status, response.body


def probe_ok(pid: int, probe: dict[str, Any]) -> bool:
    try:
        status, _ = kubelet_get(
            pid, container_port(WEB, probe["httpGet"]["port"]), probe_path(probe)
        )
    except OSError:
        return False
    return status == 200


def probe_path(probe: dict[str, Any]) -> str:
    assert probe["httpGet"].get("scheme", "HTTP") == "HTTP", "METRICS_BIND speaks plain HTTP"
    return str(probe["httpGet"]["path"])


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The container's filesystem after the image's build steps and the init containers."""
    root = tmp_path_factory.mktemp("rootfs")
    for container in [*POD.get("initContainers", []), WEB]:
        for mount in container.get("volumeMounts", []):
            (root / mount["mountPath"].lstrip("/")).mkdir(parents=True, exist_ok=True)
    build_steps = [argv for argv in IMAGE.run_commands() if argv[:2] == ["python", "manage.py"]]
    assert build_steps, "the Dockerfile runs no manage.py step (collectstatic)"
    for argv in build_steps:
        result = run_python(argv, in_rootfs(IMAGE.env, root))
        assert result.returncode == 0, f"Dockerfile RUN {argv}:\n{result.stderr}"
    for init in POD.get("initContainers", []):
        assert init["image"] == WEB["image"], "the init containers run the release's image"
        argv = container_argv(IMAGE, init)
        result = run_python(argv, in_rootfs(container_env(IMAGE, init), root))
        assert result.returncode == 0, f"init container {init['name']}:\n{result.stderr}"
    return root


def start_pod(rootfs: Path, log_path: Path) -> LiveServer:
    """The web container's command in a network namespace; returns once it is ready."""
    argv = container_argv(IMAGE, WEB)
    assert argv[:1] == ["python"], argv
    assert "serve" in argv, argv
    serve = argv.index("serve")
    env = in_rootfs(container_env(IMAGE, WEB), rootfs)
    server = LiveServer(
        log_path=log_path,
        settings=env["DJANGO_SETTINGS_MODULE"],
        args=argv[serve + 1 :],
        # A container has no NOTIFY_SOCKET; an abstract one would not reach out of the
        # namespace anyway.
        env={**env, "NOTIFY_SOCKET": ""},
        cwd=project_dir(),
        manage=[str(netns.SHIM), *argv[1:serve]],
        binds_itself=True,
        wait_ready=False,
    ).start()
    ready = netns.wait_for_own_namespace(server.pid) and wait_until(
        lambda: probe_ok(server.pid, WEB["readinessProbe"]) or server.process.poll() is not None,
        30,
    )
    if not ready or server.process.poll() is not None:
        server.stop()
        pytest.fail(f"the pod never became ready; log:\n{server.log()[-3000:]}")
    return server


@pytest.fixture(scope="module")
def pod(rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_pod(rootfs, tmp_path_factory.mktemp("pod") / "server.log")
    yield server
    # A first SIGTERM starts DRAIN_DELAY; stop_all's second one ends it (no need to wait).
    os.kill(server.pid, signal.SIGTERM)
    stop_all([server])


def test_the_cmd_parses_and_the_grace_period_covers_drain_delay_and_graceful_timeout(rootfs):
    argv = container_argv(IMAGE, WEB)
    result = run_python([*argv, "--print-config"], in_rootfs(container_env(IMAGE, WEB), rootfs))
    assert result.returncode == 0, result.stderr
    config = {}
    for line in result.stdout.splitlines()[1:]:
        option, value, _source = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        config[option] = value
    drain_delay_s, graceful_timeout_s = (
        float(config["DRAIN_DELAY"]),
        float(config["GRACEFUL_TIMEOUT"]),
    )
    grace_s = POD["terminationGracePeriodSeconds"]
    assert grace_s >= drain_delay_s + graceful_timeout_s + GRACE_MARGIN_S, (
        f"terminationGracePeriodSeconds {grace_s} < DRAIN_DELAY {drain_delay_s} + "
        f"GRACEFUL_TIMEOUT {graceful_timeout_s} + {GRACE_MARGIN_S} s"
    )
    assert config["ACCESS_LOG_FORMAT"] == "'json'"


@pytest.mark.parametrize("kind", PROBES)
def test_each_probe_answers_200_on_its_declared_port_and_path(pod, kind):
    if kind not in WEB:
        pytest.skip(f"the Deployment declares no {kind}")
    probe = WEB[kind]
    port = container_port(WEB, probe["httpGet"]["port"])
    assert kubelet_get(pod.pid, port, probe_path(probe))[0] == 200


def test_the_server_listens_on_every_address_of_the_pod_at_each_container_port(pod):
    # The kubelet and the Service reach the pod's own IP address, not its loopback.
    listening = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pod.pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A" and set(address) == {"0"}:  # LISTEN on 0.0.0.0 or [::]
                listening.add(int(port, 16))
    declared = {entry["containerPort"] for entry in WEB["ports"]}
    assert declared <= listening, f"declared {declared}, listening on every address {listening}"


def test_the_service_reaches_django_by_its_name_and_the_access_log_is_json(pod):
    service = MANIFESTS["Service"]
    (entry,) = service["spec"]["ports"]
    port = container_port(WEB, entry.get("targetPort", entry["port"]))
    status, body = kubelet_get(pod.pid, port, "/json", host=service["metadata"]["name"])
    assert status == 200, body[:300]
    assert json.loads(body) == {"message": "Hello, World!"}

    def json_access_line() -> dict[str, Any] | None:
        for line in pod.log().splitlines():
            if line.startswith("{") and json.loads(line).get("path") == "/json":
                return dict(json.loads(line))
        return None

    assert wait_until(lambda: json_access_line() is not None, 10), pod.log()[-2000:]
    assert json_access_line()["status_code"] == 200  # type: ignore[index]


def test_sigterm_fails_readiness_then_the_server_exits_within_the_grace_period(rootfs, tmp_path):
    server = start_pod(rootfs, tmp_path / "server.log")
    try:
        assert probe_ok(server.pid, WEB["livenessProbe"])
        os.kill(server.pid, signal.SIGTERM)  # what the kubelet sends to the container's PID 1
        assert wait_until(lambda: not probe_ok(server.pid, WEB["readinessProbe"]), 5)
        assert server.process is not None
        assert server.process.wait(POD["terminationGracePeriodSeconds"]) == 0
    finally:
        stop_all([server])
