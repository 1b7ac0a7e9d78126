"""tests.settings plus tests.lifecycle, an app whose receivers record every lifecycle signal.

``WSGISERVE`` comes from ``wsgiserve.json`` in WSGISERVE_TEST_FILES_DIR when that file exists
(configuration-reload tests rewrite it before SIGHUP), else it is empty.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.lifecycle"]

ROOT_URLCONF = "tests.lifecycle.urls"

WSGI_APPLICATION = "tests.lifecycle.wsgi.application"

_CONFIG = Path(os.environ.get("WSGISERVE_TEST_FILES_DIR", "/nonexistent")) / "wsgiserve.json"
WSGISERVE = json.loads(_CONFIG.read_text("utf-8")) if _CONFIG.exists() else {}
