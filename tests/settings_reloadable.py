"""Test settings whose WSGI module can be broken on disk (tests/apps/reloadable.py)."""

from __future__ import annotations

from tests.settings import *  # noqa: F403

WSGI_APPLICATION = "tests.apps.reloadable.application"
