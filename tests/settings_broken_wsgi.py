"""tests.settings, but WSGI_APPLICATION names a module whose import fails (boot-failure tests)."""

from __future__ import annotations

from tests.settings import *  # noqa: F403

WSGI_APPLICATION = "tests.apps.broken_wsgi.application"
