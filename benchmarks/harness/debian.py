"""Debian packages the harness needs: wrk, and the headers a peer compiles against.

A package that is missing is installed with ``apt-get`` when the harness runs as root (as on
the benchmark machines); otherwise the caller gets a message saying what to install, and the
server or tool that needed it is reported instead of measured.
"""

from __future__ import annotations

import os
import shutil

from harness.procs import child_env, run_bounded

__all__ = ["ensure_debian_packages", "missing_debian_packages"]

_APT_TIMEOUT_S = 600


def missing_debian_packages(packages: tuple[str, ...] | list[str]) -> list[str]:
    """The packages of ``packages`` that dpkg does not list as installed."""
    missing = []
    for package in packages:
        argv = ["dpkg-query", "--show", "--showformat=${Status}", package]
        result = run_bounded(argv, timeout_s=30, env=child_env())
        if not (result.ok and result.output.strip().endswith("installed")):
            missing.append(package)
    return missing


def ensure_debian_packages(packages: tuple[str, ...] | list[str], *, why: str) -> str | None:
    """Install what ``packages`` lacks (apt-get, as root); None, or why it could not."""
    missing = missing_debian_packages(packages)
    if not missing:
        return None
    names = " ".join(missing)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{names} not installed ({why}): run apt-get install {names} as root"
    print(f"installing {names} ({why}): apt-get update && apt-get install -y {names}", flush=True)
    env = child_env(DEBIAN_FRONTEND="noninteractive")
    for argv in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", *missing],
    ):
        result = run_bounded(argv, timeout_s=_APT_TIMEOUT_S, env=env)
        if not result.ok:
            tail = " | ".join(result.output.strip().splitlines()[-2:])
            return f"{' '.join(argv)} failed: {tail[-300:]}"
    return None
