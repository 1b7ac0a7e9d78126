"""tests.settings with the configuration probe app, and WSGISERVE from a file the test
rewrites before SIGHUP (``wsgiserve_from_test_files()``): tests/integration/test_reload_config.py.
"""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import wsgiserve_from_test_files

WSGI_APPLICATION = "tests.apps.config_probe.application"

WSGISERVE = wsgiserve_from_test_files()
