"""Django system checks for the server configuration (``manage.py check``, tag ``wsgiserve``).

Design note: the checks report the problems ``resolve_config()`` would raise for when
``manage.py serve`` starts, so they surface in ``manage.py check`` and in every command that runs
checks. They read ``settings.WSGISERVE`` and ``os.environ`` (the command line is not known here),
and never start anything.

Every check id is declared once, as a ``SystemCheck`` in ``CHECKS`` below, with the problem it
reports (``docs/settings.md`` lists them from there) and the hint its messages carry; each
configuration error class of ``config.py`` has its check in ``_CONFIG_ERROR_CHECKS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core import checks as django_checks
from django.core.checks import CheckMessage, register

from django_wsgiserve.config import (
    ConflictingOptionsError,
    InvalidOptionValueError,
    ServerConfig,
    SettingNotADictError,
    UnknownOptionError,
    config_errors,
    error_message,
    resolve_config,
    wsgiserve_setting,
)
from django_wsgiserve.errors import ConfigError
from django_wsgiserve.proxy import FORWARDED_HEADERS, parse_trusted_proxies

if TYPE_CHECKING:
    from collections.abc import Sequence

    from django.apps import AppConfig

__all__ = [
    "CHECKS",
    "CHECK_IDS",
    "SystemCheck",
    "check_config",
    "check_deploy",
    "check_proxies",
    "check_static",
]

WHITENOISE_MIDDLEWARE = "whitenoise.middleware.WhiteNoiseMiddleware"
_DOCS = "See docs/settings.md for every option, its type and its default."


@dataclass(frozen=True, slots=True)
class SystemCheck:
    """One check id: the problem it reports (for the docs) and its messages' usual hint."""

    id: str
    problem: str
    hint: str

    def error(self, message: str, *, hint: str | None = None) -> CheckMessage:
        """An Error with this id."""
        return django_checks.Error(message, hint=self.hint if hint is None else hint, id=self.id)

    def warning(self, message: str, *, hint: str | None = None) -> CheckMessage:
        """A Warning with this id."""
        return django_checks.Warning(message, hint=self.hint if hint is None else hint, id=self.id)


UNKNOWN_OPTION = SystemCheck(
    "wsgiserve.E001",
    "Unknown key in settings.WSGISERVE or unknown WSGISERVE_* variable.",
    "Remove it or correct its spelling. " + _DOCS,
)
INVALID_VALUE = SystemCheck(
    "wsgiserve.E002", "A value of the wrong type or out of range.", "Correct the value. " + _DOCS
)
CONFLICTING_OPTIONS = SystemCheck(
    "wsgiserve.E003", "Values that are impossible together.", "Change one of the values. " + _DOCS
)
SETTING_NOT_A_DICT = SystemCheck(
    "wsgiserve.E004",
    "settings.WSGISERVE is not a dict.",
    'Write WSGISERVE = {"BIND": ["127.0.0.1:8000"], ...}. ' + _DOCS,
)
REDUNDANT_WHITENOISE = SystemCheck(
    "wsgiserve.W001",
    "WhiteNoiseMiddleware is in MIDDLEWARE although STATIC is on.",
    f"Remove it from MIDDLEWARE, or set WSGISERVE['STATIC'] = False. {_DOCS}",
)
RELOAD_IN_DEPLOYMENT = SystemCheck(
    "wsgiserve.W002",
    "RELOAD is on (reported by check --deploy only).",
    "Remove RELOAD from the WSGISERVE setting and the environment in production.",
)
UNVETTED_PROXY_SSL_HEADER = SystemCheck(
    "wsgiserve.W003",
    "SECURE_PROXY_SSL_HEADER disagrees with TRUSTED_PROXIES.",
    "Add your proxy's address to TRUSTED_PROXIES, or remove the setting.",
)
FORWARDED_WITHOUT_PROXY = SystemCheck(
    "wsgiserve.W004",
    "USE_X_FORWARDED_HOST/PORT is on while no proxy is trusted.",
    "Add your proxy's address to TRUSTED_PROXIES, or turn the setting off.",
)
# Every check, in the order docs/settings.md lists them.
CHECKS: tuple[SystemCheck, ...] = (
    UNKNOWN_OPTION,
    INVALID_VALUE,
    CONFLICTING_OPTIONS,
    SETTING_NOT_A_DICT,
    REDUNDANT_WHITENOISE,
    RELOAD_IN_DEPLOYMENT,
    UNVETTED_PROXY_SSL_HEADER,
    FORWARDED_WITHOUT_PROXY,
)
CHECK_IDS: tuple[tuple[str, str], ...] = tuple((check.id, check.problem) for check in CHECKS)

_CONFIG_ERROR_CHECKS: tuple[tuple[type[ConfigError], SystemCheck], ...] = (
    (SettingNotADictError, SETTING_NOT_A_DICT),
    (UnknownOptionError, UNKNOWN_OPTION),
    (InvalidOptionValueError, INVALID_VALUE),
    (ConflictingOptionsError, CONFLICTING_OPTIONS),
)


def _error_from(exc: ConfigError) -> CheckMessage:
    for error_class, check in _CONFIG_ERROR_CHECKS:
        if isinstance(exc, error_class):
            return check.error(error_message(exc))
    return INVALID_VALUE.error(error_message(exc), hint=_DOCS)


def _resolved_config() -> ServerConfig | None:
    """The configuration without command-line options, or None if it has errors."""
    try:
        return resolve_config(wsgiserve_setting(settings), os.environ, {})
    except ConfigError:
        return None  # reported by check_config


@register("wsgiserve")
def check_config(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """E001-E004: the WSGISERVE setting and WSGISERVE_* variables resolve without errors."""
    try:
        wsgiserve = wsgiserve_setting(settings)
    except ConfigError as exc:
        return [_error_from(exc)]
    return [_error_from(exc) for exc in config_errors(wsgiserve, os.environ, {})]


@register("wsgiserve")
def check_static(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """W001: whitenoise's middleware is redundant while the server serves static files."""
    config = _resolved_config()
    middleware = getattr(settings, "MIDDLEWARE", None) or ()
    if config is None or not config.static or WHITENOISE_MIDDLEWARE not in middleware:
        return []
    return [
        REDUNDANT_WHITENOISE.warning(
            f"{WHITENOISE_MIDDLEWARE} is no longer needed: with STATIC on, the server serves "
            "static files itself, before any middleware runs."
        )
    ]


@register("wsgiserve", deploy=True)
def check_deploy(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """W002 (--deploy): the autoreloader is on."""
    config = _resolved_config()
    if config is None or not config.reload:
        return []
    return [
        RELOAD_IN_DEPLOYMENT.warning(
            f"RELOAD is on ({config.source_of('reload')}): the server restarts whenever Python "
            "files change, which is meant for development."
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
                UNVETTED_PROXY_SSL_HEADER.warning(
                    f"SECURE_PROXY_SSL_HEADER names {name}, which the server passes on from any "
                    "client: anyone can make request.is_secure() true.",
                    hint=f"Use ('{_PROTO_KEY}', 'https'), which the server accepts only from "
                    "TRUSTED_PROXIES (it also sets wsgi.url_scheme, so the setting can go).",
                )
            )
        elif nobody_trusted:
            messages.append(
                UNVETTED_PROXY_SSL_HEADER.warning(
                    f"SECURE_PROXY_SSL_HEADER is set but TRUSTED_PROXIES ({source}) trusts no "
                    f"peer, so the server removes {name} from every request."
                )
            )
    forwarded = [
        setting
        for setting in ("USE_X_FORWARDED_HOST", "USE_X_FORWARDED_PORT")
        if getattr(settings, setting, False)
    ]
    if forwarded and nobody_trusted:
        messages.append(
            FORWARDED_WITHOUT_PROXY.warning(
                f"{' and '.join(forwarded)} is on but TRUSTED_PROXIES ({source}) trusts no peer, "
                "so the server removes X-Forwarded-Host and X-Forwarded-Port from every request."
            )
        )
    return messages
