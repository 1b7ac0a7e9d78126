"""The Django app: ``INSTALLED_APPS += ["django_wsgiserve"]`` adds ``manage.py serve``.

Design note: ``ready()`` only registers the system checks (``checks.py``); importing this module
loads no server code, reads no settings and starts nothing.
"""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["WsgiServeConfig"]


class WsgiServeConfig(AppConfig):
    """App configuration of django-wsgiserve."""

    name = "django_wsgiserve"
    verbose_name = "WSGI server"

    def ready(self) -> None:
        """Register the ``wsgiserve`` system checks (importing ``checks`` registers them)."""
        import django_wsgiserve.checks  # noqa: F401
