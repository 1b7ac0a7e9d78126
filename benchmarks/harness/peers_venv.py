"""The peers' virtualenv, benchmarks/.venv-peers, created and filled by the harness.

Peers never go into the project's .venv. Django and whitenoise are pinned to the versions
the project's interpreter has, so every server runs the same Django code. Each server's
packages are installed separately: one that fails to install is reported and skipped. A
server whose packages compile against Debian headers (bjoern: libev-dev) gets them first
(harness/debian.py); if they cannot be had, the server is reported as not installed.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from harness.debian import ensure_debian_packages
from harness.procs import child_env, run_bounded
from harness.servers import BENCH_DIR

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from harness.servers import ServerSpec

__all__ = [
    "PEERS_VENV",
    "ensure_matplotlib",
    "installed_versions",
    "peers_bin",
    "prepare_peers",
    "project_versions",
]

PEERS_VENV = BENCH_DIR / ".venv-peers"
_PIP_TIMEOUT_S = 900
_PROJECT_PACKAGES = ("Django", "whitenoise")
# gcc's "file.h:4:10: fatal error: ev.h: No such file or directory"
_COMPILER_ERROR = re.compile(r":\d+:\d+: (?:fatal )?error: ")


def peers_bin() -> Path:
    return PEERS_VENV / "bin"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_versions(project_python: str) -> dict[str, str]:
    """Versions of Python, Django and whitenoise in the project's interpreter ({} if none)."""
    code = (
        "import json, sys, importlib.metadata as m\n"
        "v = {'Python': sys.version.split()[0]}\n"
        f"for name in {list(_PROJECT_PACKAGES)!r}:\n"
        "    try: v[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(v))\n"
    )
    result = run_bounded([project_python, "-c", code], timeout_s=60, env=child_env())
    if not result.ok:
        return {}
    return dict(json.loads(result.output.strip().splitlines()[-1]))


def installed_versions(python: Path) -> dict[str, str]:
    """{normalized name: version} of what ``python``'s environment has installed."""
    argv = [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"]
    result = run_bounded(argv, timeout_s=120, env=child_env())
    if not result.ok:
        return {}
    start = result.output.find("[")
    packages = json.loads(result.output[start:]) if start >= 0 else []
    return {_normalize(item["name"]): item["version"] for item in packages}


def _missing(requirements: Iterable[str], installed: dict[str, str]) -> list[str]:
    missing = []
    for requirement in requirements:
        name, _, pinned = requirement.partition("==")
        version = installed.get(_normalize(name))
        if version is None or (pinned and version != pinned):
            missing.append(requirement)
    return missing


def _pip_install(python: Path, requirements: list[str], log_path: Path) -> str | None:
    """Install ``requirements``; returns an error message or None."""
    argv = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--timeout", "60"]
    print(f"  pip install {' '.join(requirements)} (log: {log_path})", flush=True)
    result = run_bounded([*argv, *requirements], timeout_s=_PIP_TIMEOUT_S, env=child_env())
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(result.output)
    if result.ok:
        return None
    return f"pip install {' '.join(requirements)} failed: {_pip_failure(result.output)[:200]}"


def _pip_failure(output: str) -> str:
    """The line that says why pip failed: a compiler's error (a missing header names the
    package to install) rather than pip's closing summary, when there is one."""
    lines = output.strip().splitlines() or ["no output"]
    compiler = [line.strip() for line in lines if _COMPILER_ERROR.search(line)]
    return compiler[0] if compiler else lines[-1]


def _base_requirements(project_python: str) -> list[str]:
    versions = project_versions(project_python)
    pins = [f"{name}=={versions[name]}" if name in versions else name for name in _PROJECT_PACKAGES]
    return [*pins, "brotli"]


def _ensure_venv(project_python: str) -> str | None:
    python = peers_bin() / "python"
    if python.exists():
        return None
    print(f"creating {PEERS_VENV}", flush=True)
    argv = [project_python, "-m", "venv", str(PEERS_VENV)]
    result = run_bounded(argv, timeout_s=300, env=child_env())
    return None if result.ok else f"python -m venv failed: {result.output[-300:]}"


def prepare_peers(project_python: str, specs: list[ServerSpec], log_dir: Path) -> dict[str, str]:
    """Create/fill the peers venv for ``specs``; returns {server name: why it is unusable}."""
    wanted = [spec for spec in specs if spec.needs_peers_venv]
    if not wanted:
        return {}
    error = _ensure_venv(project_python)
    python = peers_bin() / "python"
    if error is None:
        missing = _missing(_base_requirements(project_python), installed_versions(python))
        if missing:
            error = _pip_install(python, missing, log_dir / "pip-base.log")
    if error is not None:
        return {spec.name: error for spec in wanted}
    failures = {}
    for spec in wanted:
        missing = _missing(spec.packages, installed_versions(python))
        if not missing:
            continue
        spec_error = ensure_debian_packages(spec.debian_packages, why=f"to build {spec.name}")
        if spec_error is None:
            spec_error = _pip_install(python, missing, log_dir / f"pip-{spec.name}.log")
        if spec_error is not None:
            failures[spec.name] = spec_error
    return failures


def ensure_matplotlib(log_dir: Path) -> str | None:
    """matplotlib in the peers venv (benchmark-only: it draws docs/benchmarks.png)."""
    python = peers_bin() / "python"
    if not python.exists():
        return f"{python} does not exist"
    if not _missing(["matplotlib"], installed_versions(python)):
        return None
    return _pip_install(python, ["matplotlib"], log_dir / "pip-matplotlib.log")
