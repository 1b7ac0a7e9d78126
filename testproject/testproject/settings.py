"""Settings for the django-wsgiserve demo/test project.

Everything that differs between a developer's machine, the test suite and the
benchmarks is read from ``TESTPROJECT_*`` environment variables:

``TESTPROJECT_DEBUG``          "1" turns DEBUG on (default: off).
``TESTPROJECT_SECRET_KEY``     the secret key (default: an obviously insecure dev key).
``TESTPROJECT_ALLOWED_HOSTS``  comma-separated extra hosts.
``TESTPROJECT_DB``             path of the sqlite database (default: ``db.sqlite3`` here).
``TESTPROJECT_STATIC_ROOT``    collectstatic target (default: ``staticfiles/`` here).
``TESTPROJECT_MEDIA_ROOT``     uploads/downloads directory (default: ``media/`` here).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get(
    "TESTPROJECT_SECRET_KEY",
    "django-insecure-dev-only-key-for-the-wsgiserve-testproject-do-not-use-in-production",
)

DEBUG = os.environ.get("TESTPROJECT_DEBUG", "") == "1"

ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1", "testserver"]
ALLOWED_HOSTS += [
    host.strip()
    for host in os.environ.get("TESTPROJECT_ALLOWED_HOSTS", "").split(",")
    if host.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_wsgiserve",
    "catalog",
]

# No WhiteNoiseMiddleware on purpose: the server itself serves static files.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "testproject.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("TESTPROJECT_DB") or BASE_DIR / "db.sqlite3",
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Static files: collected into STATIC_ROOT with hashed, pre-compressed names.
STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("TESTPROJECT_STATIC_ROOT") or BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]

STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
    },
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage",
    },
}

MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("TESTPROJECT_MEDIA_ROOT") or BASE_DIR / "media")

SECURE_CONTENT_TYPE_NOSNIFF = True

# django-wsgiserve configuration. Every key is optional; the empty dict means
# "use the server's defaults" (command-line options of ``manage.py serve``
# override whatever is set here).
WSGISERVE: dict[str, object] = {}
