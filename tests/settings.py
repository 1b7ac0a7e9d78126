"""Minimal Django settings for django-wsgiserve's own test suite, and the base of every variant.

No database: the server is tested against the plain WSGI apps of tests/apps/
(``tests.apps.router.application``); the realistic Django project lives in testproject/.
Nothing here reads the environment at import.

The variants, each importing this module and overriding only what differs:
``settings_broken_wsgi`` and ``settings_reloadable`` (another WSGI_APPLICATION),
``settings_config`` and ``settings_lifecycle`` (WSGISERVE from a file a test rewrites before
SIGHUP, ``wsgiserve_from_test_files()``). ``settings_static`` is testproject's settings with
whitenoise's middleware, for the static-file tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SECRET_KEY = "django-wsgiserve-tests-not-a-secret"

DEBUG = False

ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.staticfiles",
    "django_wsgiserve",
]

ROOT_URLCONF = "tests.urls"

DATABASES: dict[str, dict[str, object]] = {}

USE_TZ = True

STATIC_URL = "static/"

WSGI_APPLICATION = "tests.apps.router.application"

# Every key is optional; tests override what they need.
WSGISERVE: dict[str, object] = {}


def wsgiserve_from_test_files() -> dict[str, object]:
    """``WSGISERVE`` from ``wsgiserve.json`` in WSGISERVE_TEST_FILES_DIR, ``{}`` without one.

    For the variants whose configuration a test rewrites before SIGHUP: a file that is not JSON
    makes importing the settings fail, as a broken settings.py would.
    """
    path = Path(os.environ.get("WSGISERVE_TEST_FILES_DIR", "/nonexistent")) / "wsgiserve.json"
    if not path.exists():
        return {}
    wsgiserve: dict[str, object] = json.loads(path.read_text("utf-8"))
    return wsgiserve
