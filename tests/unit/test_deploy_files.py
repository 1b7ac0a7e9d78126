"""The Dockerfile, .dockerignore and deploy/kubernetes/ agree with each other (no server).

What a cluster or ``docker build`` would refuse, or would run wrongly without an error:
a Service that selects no pod or targets a port the container lacks, a named USER under
``runAsNonRoot``, a read-only root filesystem over the database, a shell-form CMD that keeps
SIGTERM from the server, a file the image needs left out of the build context. What the
server does with these files is tests/integration/test_deploy.py's.
"""

from __future__ import annotations

import re

import pytest

from tests.deployfiles import (
    DEPLOY_DIR,
    DOCKERFILE,
    DOCKERIGNORE,
    REPO,
    container_argv,
    container_env,
    container_port,
    dockerignore_excludes,
    load_manifests,
    memory_bytes,
    parse_dockerfile,
)

IMAGE = parse_dockerfile(DOCKERFILE.read_text())
MANIFESTS = load_manifests()
DEPLOYMENT = MANIFESTS["Deployment"]
POD = DEPLOYMENT["spec"]["template"]["spec"]
(WEB,) = POD["containers"]
ALL_CONTAINERS = [*POD.get("initContainers", []), WEB]


def test_the_cmd_is_exec_form_and_runs_serve():
    # A shell-form CMD runs under /bin/sh -c, which does not pass SIGTERM on to the server.
    assert IMAGE.cmd[:3] == ["python", "manage.py", "serve"]
    assert container_argv(IMAGE, WEB) == IMAGE.cmd, "the Deployment runs the image's CMD"


def test_the_image_runs_as_a_numeric_non_root_user_the_pod_agrees_with():
    # runAsNonRoot can only verify a numeric USER: a name makes the kubelet refuse the pod.
    user, _, group = IMAGE.user.partition(":")
    assert user.isdigit(), f"USER {IMAGE.user!r} is not numeric"
    assert int(user) != 0
    security = POD.get("securityContext", {})
    assert security.get("runAsNonRoot") is True
    assert security.get("runAsUser", int(user)) == int(user), "the image made /data for USER"
    if group:
        assert security.get("runAsGroup", int(group)) == int(group)


def test_the_service_selects_the_pods_and_targets_a_declared_port():
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    match_labels = DEPLOYMENT["spec"]["selector"]["matchLabels"]
    assert match_labels.items() <= labels.items(), "the Deployment's selector misses its pods"
    service = MANIFESTS["Service"]
    assert service["spec"]["selector"].items() <= labels.items(), "the Service selects no pod"
    for entry in service["spec"]["ports"]:
        port = container_port(WEB, entry.get("targetPort", entry["port"]))
        assert port in {p["containerPort"] for p in WEB["ports"]}


def test_probes_and_container_ports_are_exposed_by_the_image():
    assert {"readinessProbe", "livenessProbe"} <= WEB.keys()
    exposed = {
        int(port.split("/")[0]) for line in IMAGE.arguments("EXPOSE") for port in line.split()
    }
    declared = {entry["containerPort"] for entry in WEB["ports"]}
    assert declared == exposed
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if kind in WEB:
            assert container_port(WEB, WEB[kind]["httpGet"]["port"]) in declared


def test_secrets_and_config_maps_do_not_set_server_options():
    # tests/integration/test_deploy.py cannot resolve valueFrom: what it leaves out must not
    # change the server's configuration (ports, timeouts) that it checks.
    for container in ALL_CONTAINERS:
        for entry in container.get("env", []):
            if "value" not in entry:
                assert not entry["name"].startswith("WSGISERVE_"), entry


@pytest.mark.parametrize(
    ("variable", "is_file"),
    [
        pytest.param("TESTPROJECT_DB", True, id="database"),
        pytest.param("TESTPROJECT_MEDIA_ROOT", False, id="media"),
    ],
)
def test_what_the_server_writes_is_on_a_volume_under_a_read_only_root(variable, is_file):
    for container in ALL_CONTAINERS:
        if not container.get("securityContext", {}).get("readOnlyRootFilesystem"):
            continue
        mounts = [mount["mountPath"] for mount in container.get("volumeMounts", [])]
        assert "/tmp" in mounts or container is not WEB, "request bodies spill to /tmp"
        path = container_env(IMAGE, container)[variable]
        # sqlite writes its journal next to the database: the directory must be writable.
        directory = path.rsplit("/", 1)[0] if is_file else path
        assert any(f"{directory}/".startswith(f"{mount}/") for mount in mounts), (
            f"{container['name']}: {variable}={path} is on the read-only root filesystem"
        )


def test_workers_are_given_and_their_memory_ceiling_fits_the_limit():
    # os.cpu_count() in a container counts the node's CPUs: WORKERS = 0 would overshoot.
    env = container_env(IMAGE, WEB)
    workers = int(env["WSGISERVE_WORKERS"])
    assert workers >= 1
    limit = WEB["resources"]["limits"]["memory"]
    ceiling = int(env.get("WSGISERVE_MAX_WORKER_MEMORY", "0"))
    if ceiling:
        assert workers * ceiling < memory_bytes(limit), "workers would meet the OOM killer"


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        pytest.param("512Mi", 512 * 1024**2, id="Mi"),
        pytest.param("1G", 10**9, id="G"),
        pytest.param(1000, 1000, id="plain"),
    ],
)
def test_memory_quantities(quantity, expected):
    assert memory_bytes(quantity) == expected


def test_dockerignore_keeps_what_the_image_copies_and_drops_local_state():
    text = DOCKERIGNORE.read_text()
    for sources, _ in IMAGE.copies():
        for source in sources:
            assert (REPO / source).exists(), source
            assert not dockerignore_excludes(source, text), f"COPY {source} is ignored"
    local_state = [
        ".git",
        ".venv/bin/python",
        "benchmarks/.venv-peers",
        "testproject/db.sqlite3",
        "testproject/staticfiles/css/site.css",
        "testproject/media/upload.bin",
        "testproject/catalog/__pycache__/views.cpython-311.pyc",
    ]
    for path in local_state:
        assert dockerignore_excludes(path, text), f"{path} goes into the build context"


@pytest.mark.parametrize(
    ("pattern", "path", "excluded"),
    [
        pytest.param("**/__pycache__", "a/b/__pycache__/x.pyc", True, id="any-depth"),
        pytest.param("**/__pycache__", "__pycache__", True, id="top-level"),
        pytest.param("*.egg-info", "x.egg-info/PKG-INFO", True, id="star-directory"),
        pytest.param("*.egg-info", "a/x.egg-info", False, id="star-is-one-level"),
        pytest.param("docs\n!docs/keep.md", "docs/keep.md", False, id="exception"),
        pytest.param("testproject/media", "testproject/mediaX", False, id="whole-names"),
    ],
)
def test_dockerignore_matching(pattern, path, excluded):
    assert dockerignore_excludes(path, pattern) is excluded


def test_operations_doc_points_to_the_files_and_copies_none():
    text = (REPO / "docs" / "operations.md").read_text()
    for path in [DOCKERFILE, *sorted(DEPLOY_DIR.glob("*.yaml"))]:
        assert str(path.relative_to(REPO)) in text
    # One source of truth: the manifests live in deploy/kubernetes/, not in the docs.
    assert not re.search(r"^\s*kind:\s*(Deployment|Service)\b", text, re.MULTILINE)
    assert not re.search(r"^\s*CMD \[", text, re.MULTILINE)
