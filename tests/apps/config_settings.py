"""Test settings whose ``WSGISERVE`` comes from a JSON file the test rewrites before SIGHUP.

The file is ``wsgiserve.json`` in WSGISERVE_TEST_FILES_DIR. A file that is not JSON makes
importing these settings fail, as a broken settings.py would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.settings import *  # noqa: F403

WSGI_APPLICATION = "tests.apps.config_probe.application"

_CONFIG = Path(os.environ.get("WSGISERVE_TEST_FILES_DIR", "/nonexistent")) / "wsgiserve.json"
WSGISERVE = json.loads(_CONFIG.read_text("utf-8"))
