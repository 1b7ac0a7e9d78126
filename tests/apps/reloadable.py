"""A WSGI module that refuses to import while a marker file exists, for reload tests.

The marker is ``break-reload`` in WSGISERVE_TEST_FILES_DIR: a test creates it to simulate a
deploy whose new code cannot be imported, then sends SIGHUP.
"""

from __future__ import annotations

import os

from .router import application

__all__ = ["application"]

_MARKER = os.path.join(os.environ.get("WSGISERVE_TEST_FILES_DIR", "/nonexistent"), "break-reload")
if os.path.exists(_MARKER):
    raise ImportError(f"tests.apps.reloadable is broken on purpose ({_MARKER} exists)")
