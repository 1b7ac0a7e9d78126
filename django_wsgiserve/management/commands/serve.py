"""``manage.py serve``: run django-wsgiserve the way ``runserver`` runs the development server.

Design note: a thin adapter, shaped like ``runserver`` (class attributes and hook methods to
override, output through ``self.stdout``/``self.stderr``, user mistakes as ``CommandError``). It
reads ``settings.WSGISERVE``, ``os.environ`` and argv, hands them to ``resolve_config()``, and
keeps the result in a ``ServerConfig`` rather than on ``self``. Configuration problems exit with
status 2; bind problems get runserver's wording.

For now one worker serves in this process (``django_wsgiserve.worker.serve``); the prefork master
comes later. Logging: when ``settings.LOGGING`` configures neither ``django_wsgiserve`` nor
``django_wsgiserve.access`` (and ``LOGGING_CONFIG`` is not None), the command applies
``accesslog.default_logging_config()`` so that server messages reach stderr and access lines
stdout; the library itself never installs handlers.
"""

from __future__ import annotations

import functools
import logging
import logging.config
import os
import re
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.core.servers.basehttp import get_internal_wsgi_application
from django.db import connections
from django.utils import autoreload

from django_wsgiserve import __version__, accesslog, sockets, systemd
from django_wsgiserve.config import (
    OPTIONS_BY_NAME,
    ServerConfig,
    add_arguments,
    describe_config,
    given_cli_options,
    resolve_config,
)
from django_wsgiserve.errors import ConfigError

if TYPE_CHECKING:
    import socket

    from django.core.management.base import CommandParser

    from django_wsgiserve.wsgi import WSGIApplication

__all__ = ["Command", "ListenError"]

logger = logging.getLogger(__name__)

# runserver's addrport syntax (django/core/management/commands/runserver.py).
_ADDRPORT = re.compile(
    r"""(?:
    (?P<addr>
        (?P<ipv4>\d{1,3}(?:\.\d{1,3}){3}) |         # IPv4 address
        (?P<ipv6>\[[a-fA-F0-9:]+\]) |               # IPv6 address
        (?P<fqdn>[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*) # FQDN
    ):)?(?P<port>\d+)""",
    re.X,
)


class ListenError(CommandError):
    """The listening sockets could not be bound or taken over."""


class Command(BaseCommand):
    help = (
        "Starts django-wsgiserve, a production WSGI server. Every option can also be set in "
        "settings.WSGISERVE or as a WSGISERVE_* environment variable; see docs/settings.md."
    )
    # Checks run in inner_run(), as in runserver, so that they run again after each reload.
    requires_system_checks: list[str] = []

    default_addr = "127.0.0.1"
    default_addr_ipv6 = "::1"
    default_port = "8000"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "addrport",
            nargs="?",
            help="Optional port number, ipaddr:port or unix:/path; overrides BIND.",
        )
        parser.add_argument(
            "--ipv6", "-6", action="store_true", dest="use_ipv6", help="Default to [::1]."
        )
        parser.add_argument(
            "--noreload", action="store_false", dest="reload", default=None, help="As --no-reload."
        )
        parser.add_argument(
            "--nostatic", action="store_false", dest="static", default=None, help="As --no-static."
        )
        # BaseCommand only adds --skip-checks when it runs the checks itself (Django 4.2 runserver).
        parser.add_argument("--skip-checks", action="store_true", help="Skip system checks.")
        parser.add_argument(
            "--print-config",
            action="store_true",
            help="Print every option, its value and where it came from, then exit.",
        )
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        config = self.get_config(options)
        if options["print_config"]:
            self.print_config(config)
            return
        colour = options.get("force_color") or (sys.stdout.isatty() and not options["no_color"])
        self.configure_logging(colour=bool(colour))
        if config.reload:
            autoreload.run_with_reloader(self._inner_run_reloading, config, **options)
        else:
            self.inner_run(config, **options)

    # -- configuration ---------------------------------------------------------------------

    def get_config(self, options: dict[str, Any]) -> ServerConfig:
        """Resolve settings.WSGISERVE < environment < command line; errors exit with status 2."""
        wsgiserve = getattr(settings, "WSGISERVE", {})
        if not isinstance(wsgiserve, dict):
            kind = type(wsgiserve).__name__
            raise CommandError(f"settings.WSGISERVE must be a dict, not {kind}.", returncode=2)
        cli = given_cli_options(options)
        cli_sources = {}
        bind_option = OPTIONS_BY_NAME["bind"]
        if options.get("addrport"):
            if "bind" in cli:
                raise CommandError("Give either addrport or --bind, not both.", returncode=2)
            cli["bind"] = (self.addrport_to_bind(options["addrport"], ipv6=options["use_ipv6"]),)
            cli_sources["bind"] = f"command line addrport {options['addrport']!r}"
        elif (
            options.get("use_ipv6")
            and "bind" not in cli
            and bind_option.setting not in wsgiserve
            and bind_option.env not in os.environ
        ):
            # --ipv6 only changes the default address, as in runserver.
            cli["bind"] = (f"[{self.default_addr_ipv6}]:{self.default_port}",)
            cli_sources["bind"] = "command line --ipv6"
        try:
            return resolve_config(wsgiserve, os.environ, cli, cli_sources=cli_sources)
        except ConfigError as exc:
            raise CommandError(f"{exc.option} ({exc.source}): {exc}", returncode=2) from exc

    def addrport_to_bind(self, addrport: str, *, ipv6: bool) -> str:
        """runserver's ``addrport`` ("8000", "0:8000", "[::1]:8000") as a BIND entry."""
        if addrport.startswith("unix:"):
            return addrport
        match = _ADDRPORT.fullmatch(addrport)
        if match is None:
            message = f'"{addrport}" is not a valid port number or address:port pair.'
            raise CommandError(message, returncode=2)
        addr, _ipv4, raw_ipv6, fqdn, port = match.groups()
        if not addr:
            addr = self.default_addr_ipv6 if ipv6 else self.default_addr
        elif raw_ipv6:
            addr = addr[1:-1]
        elif ipv6 and not fqdn:
            raise CommandError(f'"{addr}" is not a valid IPv6 address.', returncode=2)
        return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"

    def print_config(self, config: ServerConfig) -> None:
        """--print-config: one line per option with its value and source."""
        rows = [("OPTION", "VALUE", "SOURCE"), *describe_config(config)]
        name_width = max(len(row[0]) for row in rows)
        value_width = max(len(row[1]) for row in rows)
        for name, value, source in rows:
            self.stdout.write(f"{name:<{name_width}}  {value:<{value_width}}  {source}")

    def configure_logging(self, *, colour: bool) -> None:
        """Apply the default handlers unless the project's LOGGING configures our loggers."""
        if getattr(settings, "LOGGING_CONFIG", None) is None:
            return  # the project configures logging itself
        loggers = (getattr(settings, "LOGGING", None) or {}).get("loggers") or {}
        if any(name.split(".")[0] == "django_wsgiserve" for name in loggers):
            return
        logging.config.dictConfig(accesslog.default_logging_config(colour=colour))

    # -- running ---------------------------------------------------------------------------

    def _inner_run_reloading(self, config: ServerConfig, **options: Any) -> None:
        try:
            self.inner_run(config, **options)
        except ListenError as exc:
            # Like runserver: this runs in the reloader's thread, where sys.exit would only end
            # the thread and leave the reloader waiting for a code change that cannot help.
            self.stderr.write(f"Error: {exc}")
            os._exit(1)

    def inner_run(self, config: ServerConfig, **options: Any) -> None:
        """Check, load the application, listen, then serve until SIGTERM or CONTROL-C."""
        # An exception silenced in the reloader's parent is raised here, in the child.
        autoreload.raise_last_exception()
        if not options.get("skip_checks"):
            self.stdout.write("Performing system checks...\n\n")
            self.check(display_num_errors=True)
        self.check_migrations()
        application = self.get_handler(**options)
        connections.close_all()  # before serving (and, later, before fork())
        listeners, inherited = self.open_listeners(config)
        try:
            self.on_bind(listeners, config)
            # Imported only now: --print-config, checks and tests do not load the server.
            from django_wsgiserve.worker import serve

            serve(
                config, listeners, application, on_ready=functools.partial(self.on_ready, listeners)
            )
        finally:
            sockets.close_listeners(listeners, unlink_unix=not inherited)

    def get_handler(self, **options: Any) -> WSGIApplication:
        """The WSGI application (``settings.WSGI_APPLICATION``), like runserver's hook."""
        try:
            return get_internal_wsgi_application()
        except ImproperlyConfigured as exc:
            raise CommandError(f"WSGI_APPLICATION: {exc}") from exc

    def open_listeners(self, config: ServerConfig) -> tuple[list[socket.socket], bool]:
        """The sockets passed by systemd, else the BIND addresses; and whether inherited."""
        try:
            inherited = sockets.inherited_listeners(os.environ)
        except ValueError as exc:
            raise ListenError(str(exc)) from exc
        if inherited:
            if config.source_of("bind") != "default":
                logger.info("BIND ignored: listening sockets were passed by systemd")
            return inherited, True
        try:
            return sockets.bind_listeners(config.addresses, backlog=config.backlog), False
        except sockets.BindError as exc:
            message = sockets.friendly_bind_error(exc)
            raise ListenError(f"Can't listen at {exc.address}: {message}") from exc

    def on_bind(self, listeners: list[socket.socket], config: ServerConfig) -> None:
        """Print the banner (runserver's, without the development-server warning)."""
        now = datetime.now().strftime("%B %d, %Y - %X")
        python = ".".join(str(part) for part in sys.version_info[:3])
        lines = [
            now,
            f"Django version {django.get_version()}, using settings {settings.SETTINGS_MODULE!r}",
            f"django-wsgiserve {__version__} on Python {python} (pid {os.getpid()})",
            *(f"Listening at {sockets.listener_url(sock)}" for sock in listeners),
            # One in-process worker until the prefork master honours WORKERS.
            f"Workers: 1 \N{MULTIPLICATION SIGN} {config.threads} threads",
            f"Static files: {self.describe_static(config)}",
            "Quit the server with CONTROL-C.",
        ]
        self.stdout.write("\n".join(lines))

    def describe_static(self, config: ServerConfig) -> str:
        """The banner's static files line: off, or the directory served."""
        if not config.static:
            return "off"
        return str(getattr(settings, "STATIC_ROOT", None) or "on, but STATIC_ROOT is not set")

    def on_ready(self, listeners: list[socket.socket]) -> None:
        """Called by the worker once it accepts connections: tell systemd (Type=notify)."""
        urls = ", ".join(sockets.listener_url(sock) for sock in listeners)
        systemd.notify(f"READY=1\nSTATUS=Listening at {urls}", os.environ)
