"""tests.settings plus tests.lifecycle, an app whose receivers record every lifecycle signal.

``WSGISERVE`` comes from a file configuration-reload tests rewrite before SIGHUP
(``wsgiserve_from_test_files()``); empty without one.
"""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, wsgiserve_from_test_files

INSTALLED_APPS = [*INSTALLED_APPS, "tests.lifecycle"]

ROOT_URLCONF = "tests.lifecycle.urls"

WSGI_APPLICATION = "tests.lifecycle.wsgi.application"

WSGISERVE = wsgiserve_from_test_files()
