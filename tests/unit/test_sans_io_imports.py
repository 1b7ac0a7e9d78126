"""The protocol packages are sans-I/O: an import-linter style contract, checked on the source.

``http/``, ``uwsgi/`` and ``fastcgi/`` may import the stdlib (but nothing that does I/O,
threads or logging), ``django_wsgiserve.errors``, ``django_wsgiserve.http`` and their own
package; never Django, never the layers above them.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "django_wsgiserve"
SANS_IO = ("http", "uwsgi", "fastcgi")
FORBIDDEN_STDLIB = {
    "asyncio",
    "logging",
    "multiprocessing",
    "os",
    "select",
    "selectors",
    "signal",
    "socket",
    "ssl",
    "subprocess",
    "threading",
    "time",
}


def _modules() -> list[Path]:
    return sorted(path for name in SANS_IO for path in (PACKAGE / name).glob("*.py"))


def _imported(path: Path) -> set[str]:
    """Absolute dotted names of everything ``path`` imports."""
    package = f"django_wsgiserve.{path.parent.name}"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.add(f"{base}.{node.module}" if node.module else base)
            else:
                assert node.module is not None
                names.add(node.module)
    return names


def _is_allowed(name: str, own_package: str) -> bool:
    top = name.partition(".")[0]
    if top == "django_wsgiserve":
        return (
            name == "django_wsgiserve.errors"
            or name == "django_wsgiserve.http"
            or name.startswith(("django_wsgiserve.http.", f"django_wsgiserve.{own_package}."))
            or name == f"django_wsgiserve.{own_package}"
        )
    return top in sys.stdlib_module_names and top not in FORBIDDEN_STDLIB


def test_the_packages_exist():
    assert {path.parent.name for path in _modules()} == set(SANS_IO)


@pytest.mark.parametrize(
    "path", [pytest.param(path, id=f"{path.parent.name}/{path.name}") for path in _modules()]
)
def test_sans_io_module_imports(path: Path):
    bad = sorted(name for name in _imported(path) if not _is_allowed(name, path.parent.name))
    assert bad == [], f"{path.parent.name}/{path.name} imports {bad}"
