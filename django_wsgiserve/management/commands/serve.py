"""``manage.py serve``: run django-wsgiserve the way ``runserver`` runs the development server.

Design note: a thin adapter, shaped like ``runserver`` (class attributes and hook methods to
override, output through ``self.stdout``/``self.stderr``, user mistakes as ``CommandError``). It
reads ``settings.WSGISERVE``, ``os.environ`` and argv, hands them to ``resolve_config()``, and
keeps the result in a ``ServerConfig`` rather than on ``self``; configuration problems exit with
status 2. Then it runs the checks, imports the application only with PRELOAD, closes the
database connections, opens the listeners (``sockets.open_listeners``) and runs the prefork
master (``arbiter.Arbiter``) until it stops; a worker that cannot import the application makes
the command exit with that worker's exit code (4). With ``--reload`` Django's autoreloader runs
``inner_run`` in a thread, where no signal handler can be installed, so one worker serves in
this process (``worker.serve``).

Configuration reloads (SIGHUP, ``reexec``): the master runs this command line again with the
hidden ``--reload-check`` (``reload_command()``); when the configuration changed it re-executes
it in place, and ``inner_run`` takes the ``Handover``: the listeners passed replace binding.
``get_hooks()`` gives the server layers ``signals.send``. When ``settings.LOGGING`` configures
neither ``django_wsgiserve`` logger, the command applies ``accesslog.default_logging_config()``.
"""

from __future__ import annotations

import argparse
import functools
import logging.config
import os
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

from django_wsgiserve import (
    __version__,
    accesslog,
    control,
    project,
    reexec,
    signals,
    sockets,
    systemd,
    units,
)
from django_wsgiserve.config import (
    add_arguments,
    config_table,
    error_message,
    given_cli_options,
    resolve_config,
    wsgiserve_setting,
)
from django_wsgiserve.errors import ConfigError, ListenerError
from django_wsgiserve.hooks import Hook, Hooks, start_worker
from django_wsgiserve.tls import server_context

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from django.core.management.base import CommandParser

    from django_wsgiserve.config import ServerConfig
    from django_wsgiserve.static import StaticTable
    from django_wsgiserve.wsgi import WSGIApplication

__all__ = ["Command", "ListenError"]

_ADDRPORT_HELP = "Optional port number, ipaddr:port or unix:/path; overrides BIND."
_PRINT_CONFIG_HELP = "Print every option, its value and where it came from, then exit."
_SYSTEMD_UNIT_HELP = (
    "Print a hardened systemd .service for this project, then exit (see docs/deployment.md)."
)
_SOCKET_HELP = "With --systemd-unit: also print a .socket unit (socket activation)."
_UNIT_NAME_HELP = "With --systemd-unit: the unit name (default: the settings module's package)."


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
        add = parser.add_argument
        add("addrport", nargs="?", help=_ADDRPORT_HELP)
        add("--ipv6", "-6", action="store_true", dest="use_ipv6", help="Default to [::1].")
        add("--noreload", action="store_false", dest="reload", default=None, help="As --no-reload.")
        add("--nostatic", action="store_false", dest="static", default=None, help="As --no-static.")
        # BaseCommand only adds --skip-checks when it runs the checks itself (Django 4.2 runserver).
        add("--skip-checks", action="store_true", help="Skip system checks.")
        add("--print-config", action="store_true", help=_PRINT_CONFIG_HELP)
        # Run by the master on SIGHUP (django_wsgiserve/reexec.py), not by people.
        add(reexec.CHECK_FLAG, action="store_true", dest="reload_check", help=argparse.SUPPRESS)
        add("--systemd-unit", action="store_true", help=_SYSTEMD_UNIT_HELP)
        add("--socket", action="store_true", help=_SOCKET_HELP)
        add("--unit-name", help=_UNIT_NAME_HELP)
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        config = self.get_config(options)
        if options["print_config"]:
            self.stdout.write("\n".join(config_table(config)))
        elif options["reload_check"]:
            self.reload_check(config, **options)
        elif options["systemd_unit"] or options["socket"] or options["unit_name"]:
            self.print_systemd_units(config, options)
        else:
            colour = options.get("force_color") or (sys.stdout.isatty() and not options["no_color"])
            self.configure_logging(colour=bool(colour))
            if not config.reload:
                self.inner_run(config, **options)
                return
            is_child = os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) == "true"
            sockets.share_with_reloader_child(os.environ, is_child=is_child)
            autoreload.run_with_reloader(self._inner_run_reloading, config, **options)

    # -- configuration ---------------------------------------------------------------------

    def get_config(self, options: dict[str, Any]) -> ServerConfig:
        """Resolve settings.WSGISERVE < environment < command line; errors exit with status 2."""
        cli = given_cli_options(options)
        cli_sources, cli_defaults = {}, {}
        addrport = options.get("addrport")
        if addrport and "bind" in cli:
            raise CommandError("Give either addrport or --bind, not both.", returncode=2)
        if addrport:
            cli["bind"] = (self.addrport_to_bind(addrport, ipv6=options["use_ipv6"]),)
            cli_sources["bind"] = f"command line addrport {addrport!r}"
        elif options.get("use_ipv6"):  # only the default address changes, as in runserver
            ipv6_bind = (f"[{self.default_addr_ipv6}]:{self.default_port}",)
            cli_defaults["bind"] = (ipv6_bind, "command line --ipv6")
        try:
            config = resolve_config(
                wsgiserve_setting(settings),
                os.environ,
                cli,
                cli_sources=cli_sources,
                cli_defaults=cli_defaults,
            )
            if config.certfile:  # fail here, naming the option, rather than in every worker
                server_context(config.certfile, config.keyfile, source=config.source_of("certfile"))
        except ConfigError as exc:
            raise CommandError(error_message(exc), returncode=2) from exc
        return config

    def addrport_to_bind(self, addrport: str, *, ipv6: bool) -> str:
        """runserver's ``addrport`` ("8000", "0:8000", "[::1]:8000") as a BIND entry."""
        try:
            return sockets.addrport_to_bind(
                addrport,
                default_addr=self.default_addr,
                default_addr_ipv6=self.default_addr_ipv6,
                ipv6=ipv6,
            )
        except ValueError as exc:
            raise CommandError(str(exc), returncode=2) from exc

    def reload_check(self, config: ServerConfig, **options: Any) -> None:
        """``--reload-check``, run by the master on SIGHUP: load what a new master would load
        (settings, configuration, system checks, the application with PRELOAD), then print the
        configuration as JSON on the last line. Problems exit non-zero, on stderr."""
        if not options.get("skip_checks"):
            self.check()  # errors raise SystemCheckError; warnings go to stderr
        if config.preload:
            self.get_handler(**options)
        self.stdout.write(reexec.check_output(config))

    def print_systemd_units(self, config: ServerConfig, options: dict[str, Any]) -> None:
        """--systemd-unit [--socket]: the units for this project, from settings and environment."""
        if not options["systemd_unit"]:
            raise CommandError("--socket and --unit-name go with --systemd-unit.", returncode=2)
        names = ("SETTINGS_MODULE", "BASE_DIR", "MEDIA_ROOT", "DATABASES")
        values = {name: getattr(settings, name, None) for name in names}
        try:
            text, warnings = units.units_for_this_process(
                config, values, os.environ, name=options["unit_name"], with_socket=options["socket"]
            )
        except ValueError as exc:
            raise CommandError(str(exc), returncode=2) from exc
        for warning in warnings:
            self.stderr.write(f"Warning: {warning}", style_func=self.style.WARNING)
        self.stdout.write(text, ending="")

    def configure_logging(self, *, colour: bool) -> None:
        """Apply the default handlers unless the project's LOGGING configures our loggers."""
        if getattr(settings, "LOGGING_CONFIG", None) is None:
            return  # the project configures logging itself
        loggers = (getattr(settings, "LOGGING", None) or {}).get("loggers") or {}
        if not any(name.split(".")[0] == "django_wsgiserve" for name in loggers):
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
        autoreload.raise_last_exception()  # one silenced in the reloader's parent
        # Project code imported from here on (the URLconf and views, by the checks) is
        # imported afresh by each new worker, so that SIGHUP reloads it.
        load_application = project.fresh_loader(self.get_handler)
        if not options.get("skip_checks"):
            self.stdout.write("Performing system checks...\n\n")
            self.check(display_num_errors=True)
        self.check_migrations()
        self.static_table = self.get_static_table(config)  # built once, before fork
        # Set when this process is a master re-executed by a configuration reload (SIGHUP),
        # which goes on serving: it has started already.
        handover = reexec.take_handover(os.environ)
        self.hooks = self.get_hooks()
        if handover is None:
            self.hooks.send(Hook.SERVER_STARTING)
        if config.reload:  # this process is the one worker
            start_worker(self.hooks, number=1)
        application = self.get_handler(**options) if config.preload or config.reload else None
        connections.close_all()  # before serving, and before fork()
        listeners, inherited = self.open_listeners(config, handover)
        try:
            self.on_bind(listeners, config)
            if not config.reload:
                self.run_prefork(
                    config, listeners, application, inherited, load_application, handover
                )
                return
            from django_wsgiserve.worker import serve  # not loaded by --print-config or checks

            assert application is not None
            on_ready = functools.partial(self.on_ready, listeners)
            serve(
                config,
                listeners,
                application,
                on_ready=on_ready,
                static=self.static_table,
                hooks=self.hooks,
            )
        finally:
            sockets.close_listeners(listeners, unlink_unix=not inherited)

    def run_prefork(
        self,
        config: ServerConfig,
        listeners: list[socket.socket],
        application: WSGIApplication | None,
        inherited: bool,
        load_application: Callable[[], WSGIApplication],
        handover: reexec.Handover | None = None,
    ) -> None:
        """Run the master until it stops; boot failures exit with the worker's exit code (4:
        the application could not be imported). ``load_application`` runs in each new worker."""
        from django_wsgiserve.arbiter import Arbiter

        try:
            arbiter = Arbiter(
                config,
                listeners,
                load_application=load_application,
                preloaded=application,
                app_name=str(getattr(settings, "WSGI_APPLICATION", "") or ""),
                title=f"[{settings.SETTINGS_MODULE}]",
                unlink_unix=not inherited,
                environ=os.environ,
                static=self.static_table,
                rebuild_static=functools.partial(self.get_static_table, config),
                reload_command=self.reload_command(),
                handover=handover,
                hooks=self.hooks,
                project=control.project_name(settings.SETTINGS_MODULE),
            )
            code = arbiter.run()
        except ListenerError as exc:  # METRICS_BIND or CONTROL_SOCKET cannot be listened at
            raise CommandError(str(exc), returncode=2) from exc
        if code:
            raise CommandError(arbiter.failure or f"The server failed ({code}).", returncode=code)

    def reload_command(self) -> list[str] | None:
        """The command line that started this server, which SIGHUP runs again to check the
        configuration and to re-execute the master; None unless run from a command line."""
        if not getattr(self, "_called_from_command_line", False):
            return None  # call_command(): argv is some other program's
        return [sys.executable, *sys.orig_argv[1:]]

    def get_hooks(self) -> Hooks:
        """The lifecycle hooks: ``django_wsgiserve.signals`` (see docs/hooks.md)."""
        return Hooks(signals.send)

    def get_static_table(self, config: ServerConfig) -> StaticTable | None:
        """The static (and, with SERVE_MEDIA, media) files the workers answer themselves."""
        if not (config.static or config.serve_media):
            return None
        from django_wsgiserve.static import build_static_table

        return build_static_table(
            settings,
            serve_static=config.static,
            serve_media=config.serve_media,
            script_name=config.script_name,
        )

    def get_handler(self, **options: Any) -> WSGIApplication:
        """The WSGI application (``settings.WSGI_APPLICATION``), like runserver's hook."""
        try:
            return get_internal_wsgi_application()
        except ImproperlyConfigured as exc:
            raise CommandError(f"WSGI_APPLICATION: {exc}") from exc

    def open_listeners(
        self, config: ServerConfig, handover: reexec.Handover | None = None
    ) -> tuple[list[socket.socket], bool]:
        """The listeners (systemd's, a reload's, or BIND's) and whether systemd passed them."""
        try:
            return sockets.open_listeners(
                os.environ,
                config.bind,
                backlog=config.backlog,
                is_bind_default=config.source_of("bind") == "default",
                handed_over_bind=None if handover is None else handover.bind,
            )
        except ListenerError as exc:
            raise ListenError(str(exc)) from exc

    def on_bind(self, listeners: list[socket.socket], config: ServerConfig) -> None:
        """Print the banner (runserver's, without the development-server warning)."""
        from django_wsgiserve.static import describe_static_files

        scheme = "https" if config.certfile else "http"
        static = describe_static_files(
            settings,
            getattr(self, "static_table", None),
            serve_static=config.static,
            serve_media=config.serve_media,
        )
        python = ".".join(str(part) for part in sys.version_info[:3])
        lines = [
            datetime.now().strftime("%B %d, %Y - %X"),
            f"Django version {django.get_version()}, using settings {settings.SETTINGS_MODULE!r}",
            f"django-wsgiserve {__version__} on Python {python} (pid {os.getpid()})",
            *(f"Listening at {sockets.listener_url(sock, scheme=scheme)}" for sock in listeners),
            # With --reload one worker serves in this process.
            f"Workers: {1 if config.reload else config.workers} "
            f"\N{MULTIPLICATION SIGN} {config.threads} threads",
            f"Static files: {static}",
            "Quit the server with CONTROL-C.",
        ]
        self.stdout.write("\n".join(lines))

    def on_ready(self, listeners: list[socket.socket]) -> None:
        """Called by the worker (--reload) once it accepts connections: tell systemd
        (Type=notify) and send ``server_ready``."""
        urls = ", ".join(sockets.listener_url(sock) for sock in listeners)
        systemd.notify(f"READY=1\nSTATUS=Listening at {urls}", os.environ)
        self.hooks.send(Hook.SERVER_READY, workers=1)
