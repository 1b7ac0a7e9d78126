"""Django system checks for the server configuration (``manage.py check``, tag ``wsgiserve``).

Design note: the checks report the problems ``resolve_config()`` would raise for when
``manage.py serve`` starts, so they surface in ``manage.py check`` and in every command that runs
checks. They read ``settings.WSGISERVE`` and ``os.environ`` (the command line is not known here),
and never start anything.

Check ids (``CHECK_IDS`` below is what ``docs/settings.md`` lists):

* ``wsgiserve.E001``: an unknown key in ``settings.WSGISERVE`` or an unknown ``WSGISERVE_*``
  environment variable (the message suggests the closest option).
* ``wsgiserve.E002``: a value of the wrong type or out of range.
* ``wsgiserve.E003``: values that are impossible together (e.g. MAX_REQUESTS_JITTER without
  MAX_REQUESTS).
* ``wsgiserve.E004``: ``settings.WSGISERVE`` is not a dict.
* ``wsgiserve.W001``: ``whitenoise.middleware.WhiteNoiseMiddleware`` is in MIDDLEWARE while STATIC
  is on: the server serves static files itself, so the middleware only costs time.
* ``wsgiserve.W002`` (``--deploy`` only): RELOAD is on; the autoreloader is for development.
* ``wsgiserve.W003``: ``SECURE_PROXY_SSL_HEADER`` disagrees with TRUSTED_PROXIES: it names a
  header the server does not vet (a client could set it), or no proxy is trusted at all (the
  server strips X-Forwarded-Proto from everyone, so the setting never applies).
* ``wsgiserve.W004``: ``USE_X_FORWARDED_HOST``/``USE_X_FORWARDED_PORT`` is on while no proxy is
  trusted (the server strips those headers from everyone).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core import checks as django_checks
from django.core.checks import CheckMessage, Error, register

from django_wsgiserve.config import (
    ConflictingOptionsError,
    InvalidOptionValueError,
    ServerConfig,
    UnknownOptionError,
    config_errors,
    resolve_config,
)
from django_wsgiserve.errors import ConfigError
from django_wsgiserve.proxy import FORWARDED_HEADERS, parse_trusted_proxies

if TYPE_CHECKING:
    from collections.abc import Sequence

    from django.apps import AppConfig

__all__ = ["CHECK_IDS", "check_config", "check_deploy", "check_proxies", "check_static"]

CHECK_IDS: tuple[tuple[str, str], ...] = (
    ("wsgiserve.E001", "Unknown key in settings.WSGISERVE or unknown WSGISERVE_* variable."),
    ("wsgiserve.E002", "A value of the wrong type or out of range."),
    ("wsgiserve.E003", "Values that are impossible together."),
    ("wsgiserve.E004", "settings.WSGISERVE is not a dict."),
    ("wsgiserve.W001", "WhiteNoiseMiddleware is in MIDDLEWARE although STATIC is on."),
    ("wsgiserve.W002", "RELOAD is on (reported by check --deploy only)."),
    ("wsgiserve.W003", "SECURE_PROXY_SSL_HEADER disagrees with TRUSTED_PROXIES."),
    ("wsgiserve.W004", "USE_X_FORWARDED_HOST/PORT is on while no proxy is trusted."),
)

WHITENOISE_MIDDLEWARE = "whitenoise.middleware.WhiteNoiseMiddleware"
_DOCS = "See docs/settings.md for every option, its type and its default."
_IDS_AND_HINTS: tuple[tuple[type[ConfigError], str, str], ...] = (
    (UnknownOptionError, "wsgiserve.E001", "Remove it or correct its spelling. " + _DOCS),
    (InvalidOptionValueError, "wsgiserve.E002", "Correct the value. " + _DOCS),
    (ConflictingOptionsError, "wsgiserve.E003", "Change one of the values. " + _DOCS),
)


def _error_from(exc: ConfigError) -> Error:
    message = f"{exc.option} ({exc.source}): {exc}"
    for error_class, check_id, hint in _IDS_AND_HINTS:
        if isinstance(exc, error_class):
            return Error(message, hint=hint, id=check_id)
    return Error(message, hint=_DOCS, id="wsgiserve.E002")


def _resolved_config() -> ServerConfig | None:
    """The configuration without command-line options, or None if it has errors."""
    wsgiserve = getattr(settings, "WSGISERVE", {})
    if not isinstance(wsgiserve, dict):
        return None
    try:
        return resolve_config(wsgiserve, os.environ, {})
    except ConfigError:
        return None  # reported by check_config


@register("wsgiserve")
def check_config(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """E001-E004: the WSGISERVE setting and WSGISERVE_* variables resolve without errors."""
    wsgiserve = getattr(settings, "WSGISERVE", {})
    if not isinstance(wsgiserve, dict):
        return [
            Error(
                f"settings.WSGISERVE must be a dict, not {type(wsgiserve).__name__}.",
                hint='Write WSGISERVE = {"BIND": ["127.0.0.1:8000"], ...}. ' + _DOCS,
                id="wsgiserve.E004",
            )
        ]
    return [_error_from(exc) for exc in config_errors(wsgiserve, os.environ, {})]


@register("wsgiserve")
def check_static(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """W001: whitenoise's middleware is redundant while the server serves static files."""
    config = _resolved_config()
    middleware = getattr(settings, "MIDDLEWARE", None) or ()
    if config is None or not config.static or WHITENOISE_MIDDLEWARE not in middleware:
        return []
    return [
        django_checks.Warning(
            f"{WHITENOISE_MIDDLEWARE} is no longer needed: with STATIC on, the server serves "
            "static files itself, before any middleware runs.",
            hint=f"Remove it from MIDDLEWARE, or set WSGISERVE['STATIC'] = False. {_DOCS}",
            id="wsgiserve.W001",
        )
    ]


@register("wsgiserve", deploy=True)
def check_deploy(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """W002 (--deploy): the autoreloader is on."""
    config = _resolved_config()
    if config is None or not config.reload:
        return []
    return [
        django_checks.Warning(
            f"RELOAD is on ({config.source_of('reload')}): the server restarts whenever Python "
            "files change, which is meant for development.",
            hint="Remove RELOAD from the WSGISERVE setting and the environment in production.",
            id="wsgiserve.W002",
        )
    ]


# The environ keys the server removes from untrusted peers, and the one it rewrites itself.
_VETTED_KEYS = frozenset("HTTP_" + name.upper().replace("-", "_") for name in FORWARDED_HEADERS)
_PROTO_KEY = "HTTP_X_FORWARDED_PROTO"


@register("wsgiserve")
def check_proxies(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """W003/W004: Django's proxy settings agree with TRUSTED_PROXIES."""
    config = _resolved_config()
    if config is None:
        return []
    nobody_trusted = parse_trusted_proxies(config.trusted_proxies).is_empty
    source = config.source_of("trusted_proxies")
    messages: list[CheckMessage] = []
    header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if header:
        name = header[0] if isinstance(header, (tuple, list)) and header else str(header)
        if name not in _VETTED_KEYS:
            messages.append(
                django_checks.Warning(
                    f"SECURE_PROXY_SSL_HEADER names {name}, which the server passes on from any "
                    "client: anyone can make request.is_secure() true.",
                    hint=f"Use ('{_PROTO_KEY}', 'https'), which the server accepts only from "
                    "TRUSTED_PROXIES (it also sets wsgi.url_scheme, so the setting can go).",
                    id="wsgiserve.W003",
                )
            )
        elif nobody_trusted:
            messages.append(
                django_checks.Warning(
                    f"SECURE_PROXY_SSL_HEADER is set but TRUSTED_PROXIES ({source}) trusts no "
                    f"peer, so the server removes {name} from every request.",
                    hint="Add your proxy's address to TRUSTED_PROXIES, or remove the setting.",
                    id="wsgiserve.W003",
                )
            )
    forwarded = [
        setting
        for setting in ("USE_X_FORWARDED_HOST", "USE_X_FORWARDED_PORT")
        if getattr(settings, setting, False)
    ]
    if forwarded and nobody_trusted:
        messages.append(
            django_checks.Warning(
                f"{' and '.join(forwarded)} is on but TRUSTED_PROXIES ({source}) trusts no peer, "
                "so the server removes X-Forwarded-Host and X-Forwarded-Port from every request.",
                hint="Add your proxy's address to TRUSTED_PROXIES, or turn the setting off.",
                id="wsgiserve.W004",
            )
        )
    return messages
