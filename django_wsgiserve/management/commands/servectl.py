"""``manage.py servectl``: ask the running ``serve`` master for its status, or to act.

Design note: a thin adapter, like ``serve``. It resolves CONTROL_SOCKET from the same places
``serve`` does (``settings.WSGISERVE``, the environment, ``--control-socket``), finds the
socket (the automatic path: ``control.automatic_paths``, under this user's uid and USER's),
sends one request (``control.send_command``) and prints the reply: tables for people
(``statusview``), the reply itself with ``--json``. Not reaching the master (no socket, nobody
listening, permission denied, no answer in time) exits with status 2 and says which path,
which setting and where its value came from; a request the master refuses exits with 1.
"""

from __future__ import annotations

import json
import os
import pwd
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from django_wsgiserve import control, statusview
from django_wsgiserve.config import (
    OPTIONS_BY_NAME,
    error_message,
    given_cli_options,
    resolve_config,
    wsgiserve_setting,
)
from django_wsgiserve.errors import ConfigError, ControlSocketError

if TYPE_CHECKING:
    from django.core.management.base import CommandParser

    from django_wsgiserve.config import ServerConfig

__all__ = ["Command"]

_ACTIONS = ("status", "config", *(c for c in control.COMMANDS if c != "status"))
_ACTION_HELP = (
    "status: workers, running requests and options set; config: every option and its "
    "source; reload (as SIGHUP), add-worker (TTIN), remove-worker (TTOU), stop (TERM: "
    "graceful)."
)
_TIMEOUT_S = 10.0


class Command(BaseCommand):
    help = (
        "Talks to a running `manage.py serve` over its control socket: status, config, reload, "
        "add-worker, remove-worker, stop. See docs/operations.md."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=_ACTIONS, help=_ACTION_HELP)
        parser.add_argument("--json", action="store_true", help="Print the reply as JSON.")
        parser.add_argument(
            "--timeout",
            type=float,
            default=_TIMEOUT_S,
            metavar="SECONDS",
            help=f"How long to wait for the server's answer. Default: {_TIMEOUT_S:g}.",
        )
        declared = OPTIONS_BY_NAME["control_socket"]
        declared.codec.add_argument(parser, declared, declared.doc.replace("%", "%%"))

    def handle(self, *args: Any, **options: Any) -> None:
        config = self.get_config(options)
        path = self.socket_path(config)
        action = options["action"]
        command = "status" if action == "config" else action
        try:
            reply = control.send_command(path, command, timeout_s=options["timeout"])
        except ControlSocketError as exc:
            raise CommandError(
                f"Cannot reach the server at {exc.path}: {exc} {self.where(config)}.",
                returncode=2,
            ) from exc
        if not reply["ok"]:
            refused = reply.get("code") == "refused"
            raise CommandError(
                f"The server at {path} answered: {reply.get('error')}",
                returncode=2 if refused else 1,
            )
        if options["json"]:
            self.stdout.write(json.dumps(reply, indent=2, sort_keys=True))
        elif action == "status":
            self.stdout.write("\n".join(statusview.render_status(reply)))
        elif action == "config":
            self.stdout.write("\n".join(statusview.render_config(reply)))
        else:
            self.stdout.write(str(reply.get("message", "Done.")))

    def get_config(self, options: dict[str, Any]) -> ServerConfig:
        """CONTROL_SOCKET (and USER), resolved as ``serve`` resolves them."""
        try:
            return resolve_config(
                wsgiserve_setting(settings), os.environ, given_cli_options(options)
            )
        except ConfigError as exc:
            raise CommandError(error_message(exc), returncode=2) from exc

    def socket_path(self, config: ServerConfig) -> str:
        """The control socket to talk to (see the module notes)."""
        if config.control_socket == control.OFF:
            raise CommandError(
                f"The server has no control socket {self.where(config)}.", returncode=2
            )
        if config.control_socket:
            return config.control_socket
        name = control.project_name(settings.SETTINGS_MODULE)
        paths: list[str] = []
        for uid in dict.fromkeys((os.geteuid(), _uid_of(config.user))):
            if uid is not None:
                paths += control.automatic_paths(name, environ=os.environ, uid=uid)
        paths = list(dict.fromkeys(paths))
        found = control.find_socket(paths)
        if found is None:
            raise CommandError(
                f"Cannot reach the server: no control socket at {', '.join(paths)}. Is the "
                f"server running, and as this user or USER? {self.where(config)}.",
                returncode=2,
            )
        return found

    def where(self, config: ServerConfig) -> str:
        """Which setting gave the path, and from where."""
        value = repr(config.control_socket) if config.control_socket else "automatic"
        return f"(CONTROL_SOCKET: {value}; source: {config.source_of('control_socket')})"


def _uid_of(user: str) -> int | None:
    """USER's uid: the server runs as it, and so its automatic path has it."""
    if not user:
        return None
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None
