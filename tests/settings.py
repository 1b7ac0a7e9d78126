"""Minimal Django settings for django-wsgiserve's own test suite.

No database: the server is tested against the plain WSGI apps of tests/apps/
(``tests.apps.router.application``); the realistic Django project lives in
testproject/. Nothing here reads the environment.
"""

from __future__ import annotations

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
