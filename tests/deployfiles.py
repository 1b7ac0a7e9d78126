"""The deployment files read as data: the Dockerfile, .dockerignore, deploy/kubernetes/*.yaml.

No container runtime or cluster runs the tests, so they take these files apart instead: what
the image sets (``ENV``, ``USER``, ``WORKDIR``, the exec-form ``CMD``), what the Deployment adds
(``env``, ports, probes, volumes) and what the container finally gets (the image's ``ENV``
overridden by the Deployment's ``env``, the image's ``CMD`` unless ``command``/``args`` replace
it: Kubernetes' rules). tests/unit/test_deploy_files.py checks the files against each other;
tests/integration/test_deploy.py runs what they say against the real server.

The Dockerfile reader knows the instructions these files use, not all of Docker's syntax: one
instruction per line, ``\\`` continues a line, ``#`` starts a comment line, ``ENV`` in both its
``KEY=VALUE ...`` and its old ``KEY VALUE`` form, ``CMD`` only in exec (JSON) form.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEPLOY_DIR",
    "DOCKERFILE",
    "DOCKERIGNORE",
    "Dockerfile",
    "container_argv",
    "container_env",
    "container_port",
    "dockerignore_excludes",
    "load_manifests",
    "memory_bytes",
    "parse_dockerfile",
]

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DEPLOY_DIR = REPO / "deploy" / "kubernetes"


@dataclass(frozen=True)
class Dockerfile:
    """The instructions of a Dockerfile: (KEYWORD, arguments, WORKDIR in force), in order."""

    instructions: tuple[tuple[str, str, str], ...]

    def arguments(self, keyword: str) -> list[str]:
        return [arguments for name, arguments, _ in self.instructions if name == keyword]

    @property
    def env(self) -> dict[str, str]:
        """Every ``ENV`` of the final stage, later ones overriding earlier ones."""
        env: dict[str, str] = {}
        for arguments in self.arguments("ENV"):
            words = shlex.split(arguments)
            if "=" not in words[0]:  # the old form: ENV KEY VALUE WITH SPACES
                env[words[0]] = arguments.split(None, 1)[1].strip()
                continue
            for word in words:
                key, _, value = word.partition("=")
                env[key] = value
        return env

    @property
    def cmd(self) -> list[str]:
        """The last ``CMD``; it must be the exec (JSON) form, where the program is PID 1."""
        (*_, last) = self.arguments("CMD")
        argv = json.loads(last)  # a shell-form CMD is not JSON: ValueError
        assert isinstance(argv, list), last
        assert all(isinstance(word, str) for word in argv), last
        return argv

    @property
    def user(self) -> str:
        (*_, last) = self.arguments("USER")
        return last.strip()

    @property
    def workdir(self) -> str:
        return self.instructions[-1][2]

    def copies(self) -> list[tuple[list[str], str]]:
        """(sources, absolute destination) of each ``COPY`` (no ``--from`` stages here)."""
        result = []
        for name, arguments, workdir in self.instructions:
            if name == "COPY":
                *sources, destination = shlex.split(arguments)
                result.append((sources, posixpath.normpath(posixpath.join(workdir, destination))))
        return result

    def run_commands(self) -> list[list[str]]:
        """The commands of every ``RUN`` (shell form), split at ``&&``."""
        commands = []
        for arguments in self.arguments("RUN"):
            commands += [shlex.split(part) for part in arguments.split("&&")]
        return commands


def parse_dockerfile(text: str) -> Dockerfile:
    instructions: list[tuple[str, str, str]] = []
    workdir = "/"
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        pending = ""
        keyword = keyword.upper()
        if keyword == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, arguments.strip()))
        instructions.append((keyword, arguments.strip(), workdir))
    assert not pending, "the Dockerfile ends in a continued line"
    return Dockerfile(tuple(instructions))


def load_manifests() -> dict[str, dict[str, Any]]:
    """{kind: document} of every YAML document in deploy/kubernetes/ (one of each kind)."""
    documents: dict[str, dict[str, Any]] = {}
    for path in sorted(DEPLOY_DIR.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is None:
                continue
            kind = document["kind"]
            assert kind not in documents, f"two {kind} documents ({path.name})"
            documents[kind] = document
    return documents


def container_env(image: Dockerfile, container: dict[str, Any]) -> dict[str, str]:
    """What the container's process sees: the image's ENV, then the container's ``env``.

    Entries with ``valueFrom`` (Secrets, ConfigMaps) cannot be known without a cluster: they
    are left out, and may not set the server's own options (tests/unit checks it)."""
    env = dict(image.env)
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
    return env


def container_argv(image: Dockerfile, container: dict[str, Any]) -> list[str]:
    """Kubernetes' rule: ``command`` replaces ENTRYPOINT, ``args`` replaces CMD."""
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    assert not image.arguments("ENTRYPOINT"), "the Dockerfile has an ENTRYPOINT: handle it here"
    return list(container.get("args") or image.cmd)


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number, or the name of one of the container's ports)."""
    if isinstance(port, int):
        return port
    names = {entry.get("name"): entry["containerPort"] for entry in container.get("ports", [])}
    assert port in names, f"no container port named {port!r} in {names}"
    return int(names[port])


_MEMORY_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": 1024**2}
_MEMORY_UNITS.update(Gi=1024**3)


def memory_bytes(quantity: str | int) -> int:
    """A Kubernetes memory quantity ("512Mi", "1G", 1000000) in bytes."""
    match = re.fullmatch(r"(\d+)([kMG]i?|)", str(quantity))
    assert match, f"unknown memory quantity {quantity!r}"
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2)]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match plus ``**``) as a regular expression."""
    parts = []
    for piece in re.split(r"(\*\*/?|\*|\?)", pattern.strip("/")):
        if piece.startswith("**"):
            parts.append("(?:.*/)?" if piece.endswith("/") else ".*")
        elif piece == "*":
            parts.append("[^/]*")
        elif piece == "?":
            parts.append("[^/]")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def dockerignore_excludes(path: str, text: str) -> bool:
    """Whether ``docker build`` leaves ``path`` (relative to the context) out: a pattern
    matches it or one of its parent directories; the last matching pattern wins, and a
    ``!pattern`` takes a path back."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keep = line.startswith("!")
            rules.append((keep, _pattern_regex(line.removeprefix("!"))))
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for keep, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not keep
    return excluded
