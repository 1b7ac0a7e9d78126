"""systemd unit files for a project: ``manage.py serve --systemd-unit [--socket]``.

Design note:

* ``render_units(facts)`` is pure: a frozen ``UnitFacts`` in, unit text out, the same bytes
  for the same facts (tests pin it with golden files). ``gather_facts()`` builds the facts from
  plain values (a few settings, ``os.environ``, the interpreter, the working directory); it
  reads only the user database (``pwd``/``grp``). ``units_for_this_process()`` is what the
  management command calls: it adds this process's interpreter, ``manage.py`` and directory.
* The service is ``Type=notify`` with ``NotifyAccess=main``: only the master talks to systemd.
  Reload is ``ExecReload=/bin/kill -HUP $MAINPID`` rather than ``Type=notify-reload``, which
  systemd 252 (Debian 12, RHEL 9) rejects and silently replaces by ``Type=simple``.
  ``KillMode=mixed``: SIGTERM goes to the master only, which drains its workers;
  ``TimeoutStopSec`` leaves GRACEFUL_TIMEOUT plus a margin before systemd's SIGKILL.
* Sandboxing is as strict as a Django site allows: the file system is read-only
  (``ProtectSystem=strict``) except ``ReadWritePaths=``/``StateDirectory=`` for MEDIA_ROOT and
  the directories of sqlite databases (sqlite writes its journal next to the database). No
  capabilities, unless the service itself binds a port below 1024 (then only
  CAP_NET_BIND_SERVICE). ``ProtectHome=yes`` hides /home, /root and /run/user completely, so it
  becomes ``read-only`` when the code, the virtualenv or the interpreter lives there.
* ``RuntimeDirectory=NAME`` holds the control socket (CONTROL_SOCKET automatic:
  ``$RUNTIME_DIRECTORY/control.sock``, where ``manage.py servectl`` finds it as
  ``/run/NAME/control.sock``), with ``RuntimeDirectoryPreserve=yes`` when the .socket unit's
  own socket is in it.
* systemd parses ``#`` only at the start of a line: a comment after a setting becomes part of
  its value (``Type=notify  # x`` is an unknown type). Comments here are on their own lines.

Imports only the stdlib, ``config``, ``control`` and ``sockets``; never Django.
"""

from __future__ import annotations

import grp
import ipaddress
import math
import os
import posixpath
import pwd
import re
import socket
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django_wsgiserve import control
from django_wsgiserve.config import OPTIONS

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from django_wsgiserve.config import ServerConfig
    from django_wsgiserve.sockets import BindAddress

__all__ = [
    "DEFAULT_WATCHDOG_S",
    "UNIT_DIRECTORY",
    "UnitFacts",
    "check_unit_name",
    "command_line_arguments",
    "gather_facts",
    "render_service",
    "render_socket",
    "render_units",
    "unit_name",
    "unit_warnings",
    "units_for_this_process",
    "writable_paths",
]

UNIT_DIRECTORY = "/etc/systemd/system"
# The account a service runs as when the command is run as root and USER is not set: Debian's
# and Ubuntu's web server account (nginx and Apache run as it), so nginx can reach a unix socket.
_FALLBACK_ACCOUNT = "www-data"
# The master pings every WatchdogSec/2 from its loop, which wakes at least once a second; 30 s
# leaves room for a loaded machine and still restarts a hung master within a minute.
DEFAULT_WATCHDOG_S = 30
# Seconds between the end of GRACEFUL_TIMEOUT and systemd's SIGKILL (master's own exit work).
_STOP_MARGIN_S = 10
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+")
_HOME_DIRECTORIES = ("/home", "/root", "/run/user")
_PRIVATE_TMP_DIRECTORIES = ("/tmp", "/var/tmp")


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitFacts:
    """What the units say about one project; every field is plain data, nothing is looked up."""

    name: str  # unit name without suffix: "mysite" -> mysite.service, mysite.socket
    description: str
    working_directory: str
    python: str  # the interpreter of the virtualenv, as the command runs it (sys.executable)
    manage_py: str | None  # absolute path; None runs "python -m django"
    serve_args: tuple[str, ...] = ()  # options given on the command line, passed on
    environment: tuple[tuple[str, str], ...] = ()
    user: str
    group: str
    addresses: tuple[BindAddress, ...]
    backlog: int
    graceful_timeout_s: float
    read_write_paths: tuple[str, ...] = ()
    # Paths the service reads (code, interpreter) besides the above: they decide ProtectHome.
    read_paths: tuple[str, ...] = ()
    with_socket: bool = False
    watchdog_s: int = 0  # WatchdogSec=; 0 emits none
    # "main": only the master notifies. Under --reload the autoreloader's child (another pid)
    # serves and notifies, so "all".
    notify_access: str = "main"
    # CONTROL_SOCKET: "" (automatic: $RUNTIME_DIRECTORY, so RuntimeDirectory=NAME), "off", or
    # a path whose directory must be writable.
    control_socket: str = ""
    notes: tuple[str, ...] = field(default=(), compare=False)  # for unit_warnings()


def unit_name(settings_module: str) -> str:
    """The unit name for a settings module: its top package (``mysite.settings`` -> mysite)."""
    name = settings_module.split(".")[0]
    return check_unit_name(name)


def check_unit_name(name: str) -> str:
    """``name`` without a ``.service`` suffix; ValueError if systemd would not accept it."""
    name = name.removesuffix(".service").removesuffix(".socket")
    if not _UNIT_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid unit name (letters, digits, :_.\\-)")
    return name


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def render_units(facts: UnitFacts) -> str:
    """The .service, and with ``facts.with_socket`` the .socket, each under a path comment."""
    parts = [(f"{facts.name}.service", render_service(facts))]
    if facts.with_socket:
        parts.append((f"{facts.name}.socket", render_socket(facts)))
    return "\n".join(f"# {UNIT_DIRECTORY}/{file_name}\n{text}" for file_name, text in parts)


def render_service(facts: UnitFacts) -> str:
    """The .service unit text."""
    after = ["network-online.target"]
    unit = [("Description", facts.description), ("Wants", "network-online.target")]
    if facts.with_socket:
        unit.append(("Requires", f"{facts.name}.socket"))
        after.append(f"{facts.name}.socket")
    unit.append(("After", " ".join(after)))
    return _sections(
        ("Unit", unit),
        ("Service", [*_process_lines(facts), *_file_system_lines(facts), *_sandbox_lines(facts)]),
        ("Install", [("WantedBy", "multi-user.target")]),
    )


def render_socket(facts: UnitFacts) -> str:
    """The .socket unit text: one ``ListenStream=`` per BIND address."""
    lines: list[tuple[str, str]] = [("ListenStream", _listen_stream(a)) for a in facts.addresses]
    if any(a.family == socket.AF_INET6 for a in facts.addresses):
        # The server's own "[::]:8000" is IPv6 only (IPV6_V6ONLY); keep that meaning.
        lines.append(("BindIPv6Only", "ipv6-only"))
    if any(a.family == socket.AF_UNIX for a in facts.addresses):
        # Read and write for the group: nginx joins the service's group to connect.
        lines += [("SocketUser", facts.user), ("SocketGroup", facts.group)]
        lines.append(("SocketMode", "0660"))
    lines += [("Backlog", str(facts.backlog)), ("FileDescriptorName", "http")]
    return _sections(
        ("Unit", [("Description", f"{facts.name}: listening sockets of {facts.name}.service")]),
        ("Socket", lines),
        ("Install", [("WantedBy", "sockets.target")]),
    )


def _sections(*sections: tuple[str, list[tuple[str, str]]]) -> str:
    blocks = []
    for title, lines in sections:
        for key, value in lines:
            if "\n" in value or "\r" in value:
                raise ValueError(f"{key}= cannot contain a line break: {value!r}")
        blocks.append("\n".join([f"[{title}]", *(f"{key}={value}" for key, value in lines)]))
    return "\n\n".join(blocks) + "\n"


def _process_lines(facts: UnitFacts) -> list[tuple[str, str]]:
    if facts.manage_py is None:
        command = [facts.python, "-m", "django", "serve", *facts.serve_args]
    else:
        command = [facts.python, facts.manage_py, "serve", *facts.serve_args]
    lines = [
        ("Type", "notify"),
        ("NotifyAccess", facts.notify_access),
        ("User", facts.user),
        ("Group", facts.group),
        ("WorkingDirectory", _quote_path(facts.working_directory)),
    ]
    lines += [("Environment", _quote(f"{key}={value}")) for key, value in facts.environment]
    lines += [
        ("ExecStart", " ".join(_quote(word, is_command=True) for word in command)),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillMode", "mixed"),
        ("TimeoutStopSec", str(math.ceil(facts.graceful_timeout_s) + _STOP_MARGIN_S)),
        ("Restart", "on-failure"),
        ("RestartSec", "1"),
    ]
    if facts.watchdog_s > 0:
        lines.append(("WatchdogSec", str(facts.watchdog_s)))
    return lines


def _file_system_lines(facts: UnitFacts) -> list[tuple[str, str]]:
    own_unix = [] if facts.with_socket else _unix_paths(facts.addresses)
    parents = [posixpath.dirname(path) for path in own_unix]
    # The control socket's directory: the automatic path is $RUNTIME_DIRECTORY/control.sock.
    if facts.control_socket == "":
        parents.append(f"/run/{facts.name}")
    elif facts.control_socket != "off":
        parents.append(posixpath.dirname(facts.control_socket))
    # /run/NAME is created for the service and owned by User=; removed when it stops, with the
    # socket. /var/lib/NAME likewise, but kept: StateDirectory= is the systemd way to say it.
    runtime = [p.removeprefix("/run/") for p in parents if p.startswith("/run/")]
    writable = [*facts.read_write_paths, *(p for p in parents if not p.startswith("/run/"))]
    writable = _outermost(writable)
    state = [p.removeprefix("/var/lib/") for p in writable if p.startswith("/var/lib/")]
    writable = [p for p in writable if not p.startswith("/var/lib/")]
    # 0007 when the service creates its unix socket itself: the group (nginx) must write to it.
    lines = [("UMask", "0007" if own_unix else "0027")]
    if runtime:
        lines.append(("RuntimeDirectory", " ".join(sorted(set(runtime)))))
        # The .socket unit's own files in one of them must survive the service's stop and
        # restart: without this systemd removes the directory, and them, when it stops.
        unit_paths = _unix_paths(facts.addresses) if facts.with_socket else []
        if any(posixpath.dirname(path).removeprefix("/run/") in runtime for path in unit_paths):
            lines.append(("RuntimeDirectoryPreserve", "yes"))
    if state:
        lines.append(("StateDirectory", " ".join(sorted(set(state)))))
    if writable:
        lines.append(("ReadWritePaths", " ".join(_quote_path(p) for p in writable)))
    return lines


def _sandbox_lines(facts: UnitFacts) -> list[tuple[str, str]]:
    needs_home = any(
        _is_under(path, _HOME_DIRECTORIES)
        for path in (
            facts.working_directory,
            facts.python,
            *facts.read_paths,
            *facts.read_write_paths,
        )
    )
    low_ports = not facts.with_socket and any(
        a.family != socket.AF_UNIX and 0 < a.port < 1024 for a in facts.addresses
    )
    capabilities = "CAP_NET_BIND_SERVICE" if low_ports else ""
    lines = [
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", capabilities),
    ]
    if low_ports:
        # User= is not root: the capability must be granted, not merely allowed.
        lines.append(("AmbientCapabilities", capabilities))
    lines += [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only" if needs_home else "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("PrivateMounts", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("ProtectProc", "invisible"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("RemoveIPC", "yes"),
        ("LockPersonality", "yes"),
        # CPython never maps memory writable and executable (no JIT unless built with one).
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("SystemCallArchitectures", "native"),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallFilter", "~@privileged"),
        # A filtered call fails with EPERM (a Python OSError) instead of killing the server.
        ("SystemCallErrorNumber", "EPERM"),
    ]
    return lines


def _listen_stream(address: BindAddress) -> str:
    if address.family == socket.AF_UNIX:
        return _quote_path(address.path)
    try:
        ipaddress.ip_address(address.host)
    except ValueError:
        raise ValueError(
            f"BIND entry {address}: a .socket unit needs an IP address, not a host name"
        ) from None
    return str(address)


def _unix_paths(addresses: Iterable[BindAddress]) -> list[str]:
    return [a.path for a in addresses if a.family == socket.AF_UNIX]


def _is_under(path: str, directories: Iterable[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in directories)


def _outermost(paths: Iterable[str]) -> list[str]:
    """Sorted, without duplicates and without paths inside another one of the list."""
    result: list[str] = []
    for path in sorted({posixpath.normpath(p) for p in paths}):
        if not any(_is_under(path, [outer]) for outer in result):
            result.append(path)
    return result


def _quote(word: str, *, is_command: bool = False) -> str:
    """Quote one word for a unit file: ``%`` is a specifier, ``$`` expands in commands."""
    word = word.replace("%", "%%")
    if is_command:
        word = word.replace("$", "$$")
    if word and not re.search(r"[\s\"'\\;]", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_path(path: str) -> str:
    if re.search(r"[\s\"'\\%]", path):
        # Path settings take C-style escapes but no quotes: \x20 for a space.
        path = "".join(f"\\x{ord(c):02x}" if c in " \t\"'\\" else c for c in path)
        return path.replace("%", "%%")
    return path


# ---------------------------------------------------------------------------------------------
# Gathering the facts
# ---------------------------------------------------------------------------------------------


def units_for_this_process(
    config: ServerConfig,
    settings: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    name: str | None = None,
    with_socket: bool = False,
) -> tuple[str, list[str]]:
    """The unit text and the warnings for the project this process runs (``manage.py serve
    --systemd-unit``): its interpreter, its ``manage.py`` (when started by one) and its working
    directory. ``settings`` as for ``gather_facts``; raises ValueError as it does."""
    script = os.path.abspath(sys.argv[0]) if sys.argv else ""
    facts = gather_facts(
        config,
        settings,
        environ,
        python=sys.executable,
        python_paths=(os.path.realpath(sys.executable), sys.prefix, sys.base_prefix),
        manage_py=script if os.path.basename(script) == "manage.py" else None,
        cwd=os.getcwd(),
        name=name,
        with_socket=with_socket,
    )
    return render_units(facts), unit_warnings(facts)


def gather_facts(
    config: ServerConfig,
    settings: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    python: str,
    python_paths: tuple[str, ...],
    manage_py: str | None,
    cwd: str,
    name: str | None = None,
    with_socket: bool = False,
    watchdog_s: int = DEFAULT_WATCHDOG_S,
) -> UnitFacts:
    """The facts for this project.

    ``settings`` holds ``SETTINGS_MODULE``, ``BASE_DIR``, ``MEDIA_ROOT`` and ``DATABASES`` (any
    may be missing); ``python_paths`` the interpreter's real path and prefixes (they decide
    ProtectHome). Options whose value came from the command line are passed on in ExecStart,
    ``WSGISERVE_*`` variables as ``Environment=``. Raises ValueError for what a unit cannot say.
    """
    module = str(settings.get("SETTINGS_MODULE") or environ.get("DJANGO_SETTINGS_MODULE") or "")
    name = check_unit_name(name) if name else unit_name(module or "django")
    base_dir = settings.get("BASE_DIR")
    directories = [os.fspath(base_dir)] if base_dir else []
    if not manage_py:
        # Run as "django-admin serve" or "python -m django serve": look where manage.py lives.
        found = [d for d in (*directories, cwd) if os.path.isfile(os.path.join(d, "manage.py"))]
        manage_py = os.path.join(found[0], "manage.py") if found else None
    working_directory = posixpath.dirname(manage_py) if manage_py else (directories or [cwd])[0]
    user, group, notes = _account(config)
    environment = [("DJANGO_SETTINGS_MODULE", module)] if module else []
    environment += [(key, environ[key]) for key in _environment_options(config, with_socket)]
    environment.append(("PYTHONUNBUFFERED", "1"))
    read_write = writable_paths(settings)
    return UnitFacts(
        name=name,
        description=f"{name}: Django site served by django-wsgiserve",
        working_directory=working_directory,
        python=posixpath.normpath(python),
        manage_py=manage_py,
        serve_args=command_line_arguments(config, with_socket=with_socket),
        environment=tuple(environment),
        user=user,
        group=group,
        addresses=config.addresses,
        backlog=config.backlog,
        graceful_timeout_s=config.graceful_timeout,
        read_write_paths=read_write,
        read_paths=tuple(p for p in (*python_paths, manage_py) if p),
        with_socket=with_socket,
        # Under --reload one worker serves in the reloader's child, without the master's pings.
        watchdog_s=0 if config.reload else watchdog_s,
        notify_access="all" if config.reload else "main",
        control_socket=config.control_socket,
        notes=(*notes, *_control_socket_notes(config, name, module)),
    )


def writable_paths(settings: Mapping[str, Any]) -> tuple[str, ...]:
    """MEDIA_ROOT and the directory of every sqlite database (for its journal), absolute."""
    paths = []
    media_root = settings.get("MEDIA_ROOT")
    if media_root:
        paths.append(os.path.abspath(os.fspath(media_root)))
    databases = settings.get("DATABASES") or {}
    for database in databases.values():
        engine = str(database.get("ENGINE", ""))
        db_name = os.fspath(database.get("NAME") or "")
        if not engine.endswith("sqlite3") or not db_name or db_name == ":memory:":
            continue
        if db_name.startswith("file:"):
            continue  # a URI: in memory, or a path we would have to parse
        paths.append(os.path.dirname(os.path.abspath(db_name)))
    return tuple(paths)


def command_line_arguments(config: ServerConfig, *, with_socket: bool) -> tuple[str, ...]:
    """The options the user gave on the command line, as ``serve`` arguments again."""
    arguments: list[str] = []
    for declared in OPTIONS:
        if not config.source_of(declared.name).startswith("command line"):
            continue
        if with_socket and declared.name == "bind":
            continue  # the .socket unit listens; the server ignores BIND
        arguments += declared.codec.arguments(declared, getattr(config, declared.name))
    return tuple(arguments)


def _environment_options(config: ServerConfig, with_socket: bool) -> list[str]:
    return [
        declared.env
        for declared in OPTIONS
        if config.source_of(declared.name) == f"environment {declared.env}"
        and not (with_socket and declared.name == "bind")
    ]


def _control_socket_notes(config: ServerConfig, name: str, module: str) -> list[str]:
    """Where ``servectl`` would not find the service's control socket."""
    project = control.project_name(module)
    if config.control_socket or name == project:
        return []
    path = f"/run/{name}/control.sock"
    return [
        f"the control socket will be {path} (RuntimeDirectory={name}), and servectl looks "
        f'in /run/{project}/: set WSGISERVE["CONTROL_SOCKET"] = {path!r} in the settings'
    ]


def _account(config: ServerConfig) -> tuple[str, str, list[str]]:
    """User= and Group=: USER/GROUP, else the current user unless it is root."""
    notes = []
    user = config.user
    if not user:
        if os.geteuid() != 0:
            user = pwd.getpwuid(os.geteuid()).pw_name
        else:
            user = _FALLBACK_ACCOUNT
            notes.append(
                f"running as root: the unit runs the server as {user!r}; set "
                'WSGISERVE["USER"] (and "GROUP") to choose the account'
            )
    group = config.group or _primary_group(user)
    return user, group, notes


def _primary_group(user: str) -> str:
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        return grp.getgrgid(entry.pw_gid).gr_name
    except (KeyError, ValueError):
        return user  # unknown here: most systems give each user a group of the same name


def unit_warnings(facts: UnitFacts) -> list[str]:
    """Things the operator should know about the units (the command prints them on stderr)."""
    warnings = list(facts.notes)
    if not facts.with_socket:
        warnings += [
            f"unix socket {path} is inside the service's private /tmp (PrivateTmp=yes): "
            "nginx will not see it; use a path under /run, or --socket"
            for path in _unix_paths(facts.addresses)
            if _is_under(path, _PRIVATE_TMP_DIRECTORIES)
        ]
    if _is_under(facts.control_socket, _PRIVATE_TMP_DIRECTORIES):
        warnings.append(
            f"CONTROL_SOCKET {facts.control_socket} is inside the service's private /tmp "
            "(PrivateTmp=yes): servectl will not see it; leave CONTROL_SOCKET empty"
        )
    if any(_is_under(p, _HOME_DIRECTORIES) for p in (facts.working_directory, *facts.read_paths)):
        warnings.append(
            "the project or its interpreter lives under /home, /root or /run/user: "
            "ProtectHome=read-only instead of yes; /srv or /opt is better"
        )
    return warnings
