"""WSGI_APPLICATION of tests.settings_lifecycle: Django's own handler."""

from __future__ import annotations

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
