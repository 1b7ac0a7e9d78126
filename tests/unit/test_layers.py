"""The import-linter contracts of pyproject.toml (``make lint`` runs ``lint-imports``) catch what
they are meant to: each case copies the package into a temporary directory, adds one
deliberate violation and expects ``lint-imports`` to fail on it, naming the broken import.

The contracts: the layers are one-way (Django adapter > master > worker > server modules >
sans-I/O protocol packages > errors, and every module has its layer); only the Django adapter
imports Django or whitenoise; the protocol packages import nothing that does I/O.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_copy(tmp_path: Path, path: str, source: str) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on a copy of the package with ``source`` appended to ``path`` (relative
    to the package; created if missing)."""
    shutil.copytree(
        REPO / "django_wsgiserve",
        tmp_path / "django_wsgiserve",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    if path:
        target = tmp_path / "django_wsgiserve" / path
        existing = target.read_text("utf-8") if target.exists() else ""
        target.write_text(f"{existing}\n{source}\n", "utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_package_keeps_its_contracts(tmp_path):
    result = _lint_copy(tmp_path, "", "")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        pytest.param(
            "http/grammar.py",
            "from django_wsgiserve import config",
            "django_wsgiserve.http.grammar -> django_wsgiserve.config",
            id="sans-io-imports-a-server-module",
        ),
        pytest.param(
            "http/grammar.py",
            "from django_wsgiserve import uwsgi",
            "django_wsgiserve.http.grammar -> django_wsgiserve.uwsgi",
            id="http-imports-a-protocol-above-it",
        ),
        pytest.param(
            "uwsgi/writer.py",
            "from django_wsgiserve import fastcgi",
            "django_wsgiserve.uwsgi.writer -> django_wsgiserve.fastcgi",
            id="protocols-are-independent",
        ),
        pytest.param(
            "loop.py",
            "from django_wsgiserve import worker",
            "django_wsgiserve.loop -> django_wsgiserve.worker",
            id="server-module-imports-upward",
        ),
        pytest.param(
            "worker.py",
            "from django_wsgiserve import arbiter",
            "django_wsgiserve.worker -> django_wsgiserve.arbiter",
            id="worker-imports-the-master",
        ),
        pytest.param(
            "arbiter.py",
            "from django_wsgiserve import static",
            "django_wsgiserve.arbiter -> django_wsgiserve.static",
            id="master-imports-the-django-adapter",
        ),
        pytest.param(
            "config.py",
            "import django.conf",
            "django_wsgiserve.config -> django (",
            id="server-module-imports-django",
        ),
        pytest.param(
            "worker.py",
            "import whitenoise",
            "django_wsgiserve.worker -> whitenoise",
            id="server-module-imports-whitenoise",
        ),
        pytest.param(
            "fastcgi/records.py",
            "import socket",
            "django_wsgiserve.fastcgi.records -> socket",
            id="sans-io-imports-socket",
        ),
        pytest.param(
            "http/parser.py",
            "import logging",
            "django_wsgiserve.http.parser -> logging",
            id="sans-io-imports-logging",
        ),
        pytest.param(
            "newlayer.py",
            "from django_wsgiserve import errors",
            "django_wsgiserve.newlayer",
            id="a-module-without-a-layer",
        ),
    ],
)
def test_a_violation_breaks_a_contract(tmp_path, path, source, expected):
    result = _lint_copy(tmp_path, path, source)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout
    assert expected in result.stdout
