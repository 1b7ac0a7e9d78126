"""``manage.py serve``: run django-wsgiserve the way ``runserver`` runs the development server.

Design note: a thin adapter, shaped like ``runserver`` (class attributes and hook methods to
override, output through ``self.stdout``/``self.stderr``, user mistakes as ``CommandError``). It
reads ``settings.WSGISERVE``, ``os.environ`` and argv, hands them to ``resolve_config()``, and
keeps the result in a ``ServerConfig`` rather than on ``self``. Configuration problems exit with
status 2; bind problems get runserver's wording.

Serving: the command runs the checks, imports the application only with PRELOAD, closes the
database connections, binds (or inherits) the listeners once, then runs the prefork master
(``django_wsgiserve.arbiter.Arbiter``), which forks WORKERS workers; a worker that cannot import
the application makes the command exit with that worker's exit code (4). With ``--reload``
Django's autoreloader runs ``inner_run`` in a thread, where signal handlers cannot be
installed, so one worker serves in this process (``django_wsgiserve.worker.serve``) and the
reloader restarts it on code changes.

Configuration reloads (SIGHUP, ``django_wsgiserve.reexec``): the master runs this command's own
command line (``reload_command()``) again with the hidden ``--reload-check``, which prints the
configuration as JSON; when it changed, the master re-executes that command line in place and
``inner_run`` takes the ``Handover`` from the environment: the listeners it passes replace
binding (``take_over_listeners``) and the master adopts the old workers.

Lifecycle hooks: ``get_hooks()`` gives the server layers ``django_wsgiserve.signals.send``.
The command sends ``server_starting`` before it binds (not in a master re-executed by a
configuration reload, which goes on serving); with ``--reload`` it is also the one worker and
sends ``worker_starting`` before loading the application.

Logging: when ``settings.LOGGING`` configures neither ``django_wsgiserve`` nor
``django_wsgiserve.access`` (and ``LOGGING_CONFIG`` is not None), the command applies
``accesslog.default_logging_config()`` so that server messages reach stderr and access lines
stdout; the library itself never installs handlers.
"""

from __future__ import annotations

import argparse
import functools
import logging
import logging.config
import os
import re
import site
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.core.servers.basehttp import get_internal_wsgi_application
from django.db import connections
from django.urls import clear_url_caches
from django.utils import autoreload

from django_wsgiserve import __version__, accesslog, reexec, signals, sockets, systemd, tls, units
from django_wsgiserve.config import (
    OPTIONS_BY_NAME,
    ServerConfig,
    add_arguments,
    describe_config,
    given_cli_options,
    resolve_config,
)
from django_wsgiserve.errors import ConfigError
from django_wsgiserve.hooks import Hook, Hooks, start_worker
from django_wsgiserve.protocols import with_protocol

if TYPE_CHECKING:
    import socket

    from django.core.management.base import CommandParser

    from django_wsgiserve.static import StaticTable
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
        # Run by the master on SIGHUP (django_wsgiserve/reexec.py), not by people.
        parser.add_argument(
            reexec.CHECK_FLAG, action="store_true", dest="reload_check", help=argparse.SUPPRESS
        )
        parser.add_argument(
            "--systemd-unit",
            action="store_true",
            help="Print a hardened systemd .service for this project, then exit "
            "(see docs/deployment.md).",
        )
        parser.add_argument(
            "--socket",
            action="store_true",
            help="With --systemd-unit: also print a .socket unit (socket activation).",
        )
        parser.add_argument(
            "--unit-name",
            help="With --systemd-unit: the unit name (default: the settings module's package).",
        )
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        config = self.get_config(options)
        if options["print_config"]:
            self.print_config(config)
            return
        if options["reload_check"]:
            self.reload_check(config, **options)
            return
        if options["systemd_unit"] or options["socket"] or options["unit_name"]:
            self.print_systemd_units(config, options)
            return
        colour = options.get("force_color") or (sys.stdout.isatty() and not options["no_color"])
        self.configure_logging(colour=bool(colour))
        if config.reload:
            is_child = os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) == "true"
            sockets.share_with_reloader_child(os.environ, is_child=is_child)
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
            config = resolve_config(wsgiserve, os.environ, cli, cli_sources=cli_sources)
            if config.certfile:  # fail here, naming the option, rather than in every worker
                tls.server_context(
                    config.certfile, config.keyfile, source=config.source_of("certfile")
                )
        except ConfigError as exc:
            raise CommandError(f"{exc.option} ({exc.source}): {exc}", returncode=2) from exc
        return config

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
        script = os.path.abspath(sys.argv[0]) if sys.argv else ""
        manage_py = script if os.path.basename(script) == "manage.py" else None
        python_paths = (os.path.realpath(sys.executable), sys.prefix, sys.base_prefix)
        try:
            facts = units.gather_facts(
                config,
                values,
                os.environ,
                python=sys.executable,
                python_paths=python_paths,
                manage_py=manage_py,
                cwd=os.getcwd(),
                name=options["unit_name"],
                with_socket=options["socket"],
            )
            text = units.render_units(facts)
        except ValueError as exc:
            raise CommandError(str(exc), returncode=2) from exc
        for warning in units.unit_warnings(facts):
            self.stderr.write(f"Warning: {warning}", style_func=self.style.WARNING)
        self.stdout.write(text, ending="")

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
        # What Django's setup imported; project code imported from here on (the URLconf and
        # views, by the checks) is dropped in each new worker so that SIGHUP reloads it.
        modules_after_setup = frozenset(sys.modules)
        if not options.get("skip_checks"):
            self.stdout.write("Performing system checks...\n\n")
            self.check(display_num_errors=True)
        self.check_migrations()
        # Built once, here, before fork: the workers inherit it.
        self.static_table = self.get_static_table(config)
        # Under --reload we run in the autoreloader's thread, where no signal handler can be
        # installed: one worker serves in this process. Otherwise the master forks workers.
        is_prefork = not config.reload
        # Set when this process is a master re-executed by a configuration reload (SIGHUP).
        handover = reexec.take_handover(os.environ)
        self.hooks = self.get_hooks()
        if handover is None:  # a re-executed master goes on serving: it has started already
            self.hooks.send(Hook.SERVER_STARTING)
        if not is_prefork:  # --reload: this process is the one worker
            start_worker(self.hooks, number=1)
        application = None
        if config.preload or not is_prefork:
            application = self.get_handler(**options)
        connections.close_all()  # before serving, and before fork()
        listeners, inherited = self.open_listeners(config, handover)
        try:
            self.on_bind(listeners, config)
            if is_prefork:
                self.run_prefork(
                    config, listeners, application, inherited, modules_after_setup, handover
                )
                return
            # Imported only now: --print-config, checks and tests do not load the server.
            from django_wsgiserve.worker import serve

            assert application is not None
            serve(
                config,
                listeners,
                application,
                on_ready=functools.partial(self.on_ready, listeners),
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
        modules_after_setup: frozenset[str],
        handover: reexec.Handover | None = None,
    ) -> None:
        """Run the master (``django_wsgiserve.arbiter``) until it stops; boot failures exit
        with the worker's exit code (4: the application could not be imported)."""
        from django_wsgiserve.arbiter import Arbiter

        def load_application() -> WSGIApplication:  # in each new worker
            _forget_project_modules(modules_after_setup)
            return self.get_handler()

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
        )
        code = arbiter.run()
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
        """The sockets passed by systemd, else the BIND addresses; and whether inherited
        (from systemd). After a configuration reload, the ones the master handed over."""
        try:
            inherited = sockets.inherited_listeners(os.environ)
        except ValueError as exc:
            raise ListenError(str(exc)) from exc
        if handover is not None and handover.bind is not None:
            return self.take_over_listeners(config, inherited, handover.bind), False
        if inherited:
            if config.source_of("bind") != "default":
                logger.info("BIND ignored: listening sockets were passed by systemd")
            return inherited, True
        try:
            return sockets.bind_listeners(config.addresses, backlog=config.backlog), False
        except sockets.BindError as exc:
            message = sockets.friendly_bind_error(exc)
            raise ListenError(f"Can't listen at {exc.address}: {message}") from exc

    def take_over_listeners(
        self, config: ServerConfig, listeners: list[socket.socket], bind: tuple[str, ...]
    ) -> list[socket.socket]:
        """The listeners this master bound for ``bind`` before it re-executed itself."""
        if len(listeners) != len(bind):
            sockets.close_listeners(listeners, unlink_unix=False)
            raise ListenError(
                f"The reload handed over {len(listeners)} listening socket(s) for "
                f"{len(bind)} BIND address(es); restart the server."
            )
        for sock in listeners:
            sock.listen(config.backlog)  # BACKLOG may be what changed
        # Each keeps the protocol of its BIND entry (a uwsgi: or fastcgi: prefix).
        listeners = [
            with_protocol(sock, sockets.parse_bind(spec).protocol)
            for sock, spec in zip(listeners, bind, strict=True)
        ]
        if config.bind != bind:
            logger.warning(
                "BIND changed again while the server reloaded: listening at %s; send SIGHUP "
                "again to apply %s",
                ", ".join(bind),
                ", ".join(config.bind),
            )
        return listeners

    def on_bind(self, listeners: list[socket.socket], config: ServerConfig) -> None:
        """Print the banner (runserver's, without the development-server warning)."""
        now = datetime.now().strftime("%B %d, %Y - %X")
        python = ".".join(str(part) for part in sys.version_info[:3])
        scheme = "https" if config.certfile else "http"
        lines = [
            now,
            f"Django version {django.get_version()}, using settings {settings.SETTINGS_MODULE!r}",
            f"django-wsgiserve {__version__} on Python {python} (pid {os.getpid()})",
            *(f"Listening at {sockets.listener_url(sock, scheme=scheme)}" for sock in listeners),
            # With --reload one worker serves in this process.
            f"Workers: {1 if config.reload else config.workers or os.cpu_count() or 1} "
            f"\N{MULTIPLICATION SIGN} {config.threads} threads",
            f"Static files: {self.describe_static(config)}",
            "Quit the server with CONTROL-C.",
        ]
        self.stdout.write("\n".join(lines))

    def describe_static(self, config: ServerConfig) -> str:
        """The banner's static files line: off, or what is served."""
        if not config.static:
            return "off" + (self.describe_media(config) if config.serve_media else "")
        table = getattr(self, "static_table", None)
        static_root = getattr(settings, "STATIC_ROOT", None)
        if table is not None and len(table):
            text = f"{static_root} ({len(table)} URLs)"
        elif table is not None:  # autorefresh (DEBUG): looked up on disk and in the finders
            text = f"{static_root or 'STATIC_ROOT not set'}, and the finders (autorefresh)"
        elif static_root:
            text = f"{static_root} (empty: run collectstatic)"
        else:
            text = "on, but STATIC_ROOT is not set"
        return text + (self.describe_media(config) if config.serve_media else "")

    def describe_media(self, config: ServerConfig) -> str:
        """The banner's media part, with SERVE_MEDIA."""
        media_root = getattr(settings, "MEDIA_ROOT", None)
        if not media_root:
            return "; media: MEDIA_ROOT is not set"
        return f"; media: {media_root} at {settings.MEDIA_URL}"

    def on_ready(self, listeners: list[socket.socket]) -> None:
        """Called by the worker (--reload) once it accepts connections: tell systemd
        (Type=notify) and send ``server_ready``."""
        urls = ", ".join(sockets.listener_url(sock) for sock in listeners)
        systemd.notify(f"READY=1\nSTATUS=Listening at {urls}", os.environ)
        self.hooks.send(Hook.SERVER_READY, workers=1)


def _forget_project_modules(keep: frozenset[str]) -> None:
    """Drop from ``sys.modules`` the project's own modules imported after Django's setup (in a
    freshly forked worker), so that importing the application reads their current code.

    Library code (the standard library, site-packages, Django, django_wsgiserve) stays: only
    modules whose file lives outside ``sys.prefix``/``sys.base_prefix`` and site-packages go.
    """
    library_dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()}
    library_prefixes = tuple(os.path.join(os.path.realpath(path), "") for path in library_dirs)
    for name, module in list(sys.modules.items()):
        if name in keep or name.partition(".")[0] in ("django", "django_wsgiserve"):
            continue
        path = getattr(module, "__file__", None)
        if path and not os.path.realpath(path).startswith(library_prefixes):
            del sys.modules[name]
    clear_url_caches()
