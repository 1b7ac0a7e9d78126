"""Minimal Django settings whose WSGI_APPLICATION is the plain hello app.

Lets ``python -m django serve --settings=benchmarks.apps.hello_settings`` (and runserver)
serve benchmarks.apps.hello, so a Django-shipped server can be measured on the same
no-framework app as the others. Run with the repository root as the working directory.
"""

from __future__ import annotations

SECRET_KEY = "benchmarks-only-not-a-secret"  # benchmarks only, never deployed
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django_wsgiserve"]
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
WSGI_APPLICATION = "benchmarks.apps.hello.application"
USE_TZ = True
