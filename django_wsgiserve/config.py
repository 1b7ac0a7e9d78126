"""Server configuration: one frozen ``ServerConfig`` and the one function that builds it.

Design note:

* Every option is a field of ``ServerConfig`` declared **once** with ``option(...)``. That
  declaration is the single source of the settings key (``WSGISERVE["MAX_HEADER_BYTES"]``), the
  environment variable (``WSGISERVE_MAX_HEADER_BYTES``), the command-line flag
  (``--max-header-bytes``), the ``--print-config`` table and ``docs/settings.md``
  (``scripts/gen_settings_doc.py``). There are no aliases. How a value of each kind is parsed,
  checked and shown is the kind's codec, in ``options.py``.
* ``resolve_config(settings, environ, cli)`` is the only place values are merged, lowest to
  highest precedence: defaults < ``settings.WSGISERVE`` < ``WSGISERVE_*`` environment variables <
  command line. It is pure: the caller (the management command) reads ``django.conf.settings``
  (through ``wsgiserve_setting()``), ``os.environ`` and argv and passes them in.
* ``WORKERS = 0`` means one worker per CPU: ``ServerConfig`` counts them (``os.cpu_count()``)
  when it is built, so ``config.workers`` is always the number of worker processes.
* Validation is strict: unknown keys and variables, wrong types, out-of-range values and
  impossible combinations raise a ``ConfigError`` subclass naming the option and the source of
  the value (``source_of()``). ``config_errors()`` collects all of them for the system checks.
* The object is frozen and built once by the master; workers inherit it through ``fork()``.
  Derived variants use ``dataclasses.replace``, which validates again.

Imports only the stdlib, ``errors``, ``options``, ``sockets``, ``proxy`` and ``control``; never
Django.
"""

from __future__ import annotations

import difflib
import os
import socket
import types
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from django_wsgiserve.control import check_socket_path
from django_wsgiserve.errors import ConfigError
from django_wsgiserve.options import ENV_PREFIX, METADATA_KEY, Kind, Option, option
from django_wsgiserve.proxy import DEFAULT_TRUSTED_PROXIES, parse_trusted_proxies
from django_wsgiserve.sockets import BindAddress, parse_bind

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator, Mapping

__all__ = [
    "OPTIONS",
    "OPTIONS_BY_NAME",
    "ConflictingOptionsError",
    "InvalidOptionValueError",
    "ServerConfig",
    "SettingNotADictError",
    "UnknownOptionError",
    "add_arguments",
    "config_errors",
    "config_table",
    "describe_config",
    "error_message",
    "given_cli_options",
    "resolve_config",
    "wsgiserve_setting",
]

# Variables the test suite uses for itself (e.g. WSGISERVE_TEST_FILES_DIR) are not options.
_ENV_IGNORED_PREFIX = "WSGISERVE_TEST_"


# checks.py reports each of these errors as a system check of its own.


class SettingNotADictError(ConfigError):
    """``settings.WSGISERVE`` is not a dict (so no option is read from it)."""


class UnknownOptionError(ConfigError):
    """A ``WSGISERVE`` key or ``WSGISERVE_*`` variable that is not an option."""


class InvalidOptionValueError(ConfigError):
    """A value of the wrong type or out of range."""


class ConflictingOptionsError(ConfigError):
    """Values that are valid alone but impossible together."""


# ---------------------------------------------------------------------------------------------
# Checks of single values beyond their type (each raises ValueError with an operator message)
# ---------------------------------------------------------------------------------------------


def _check_bind(value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("needs at least one address")
    entries = [(spec, parse_bind(spec)) for spec in value]
    for index, (spec, address) in enumerate(entries):
        for earlier_spec, earlier in entries[:index]:
            problem = _bind_clash(earlier_spec, earlier, spec, address)
            if problem is not None:
                raise ValueError(problem)


# What a wildcard host listens on; "[::]" only on IPv6, as sockets.py sets IPV6_V6ONLY.
_WILDCARDS = {socket.AF_INET: ("0.0.0.0", "IPv4"), socket.AF_INET6: ("::", "IPv6")}


def _bind_clash(
    first_spec: str, first: BindAddress, second_spec: str, second: BindAddress
) -> str | None:
    """Why two BIND entries cannot both be listened on, or None: they name one socket (the
    second bind would fail with "address in use", or, for a unix socket, take over its
    path), whatever their protocols, since a listening socket speaks one protocol."""
    if first.family != second.family:
        return None
    quoted = f"{first_spec!r} and {second_spec!r}"
    if first.family == socket.AF_UNIX:
        # "//" and "/./" name the same file; relative paths are compared as written.
        if os.path.normpath(first.path) != os.path.normpath(second.path):
            return None
    elif first.port != second.port or first.port == 0:  # port 0: each gets its own port
        return None
    elif first.host != second.host:
        wildcard, version = _WILDCARDS.get(first.family, ("", ""))
        if wildcard not in (first.host, second.host):
            return None  # host names are not resolved here: bind() judges those
        return (
            f"{quoted} overlap: {wildcard} listens on every {version} address, so port "
            f"{first.port} can be bound only once"
        )
    if first.protocol is not second.protocol:
        return (
            f"{quoted} are one address with two protocols ({first.protocol.value} and "
            f"{second.protocol.value}): a listening socket speaks one protocol, so give each "
            "protocol its own port or unix socket path"
        )
    if first_spec == second_spec:
        return f"{first} given more than once"
    return f"{quoted} are one address ({first}), given more than once"


def _check_metrics_bind(value: str) -> None:
    if value:
        parse_bind(value)  # raises ValueError with the operator's message


def _check_script_name(value: str) -> None:
    if value and (not value.startswith("/") or value.endswith("/")):
        raise ValueError(f"must be empty or start with '/' and not end with '/', got {value!r}")


def _check_header_value(value: str) -> None:
    # RFC 9110 §5.5: a field value is visible ASCII and spaces; CR/LF would split the header.
    if not all(" " <= char <= "~" for char in value):
        raise ValueError(f"must be printable ASCII, got {value!r}")


def _check_trusted_proxies(value: tuple[str, ...]) -> None:
    parse_trusted_proxies(value)


def _check_umask(value: int | None) -> None:
    if value is not None and not 0 <= value <= 0o777:
        raise ValueError(f"must be between 0o000 and 0o777, got {value:#o}")


# ---------------------------------------------------------------------------------------------
# The options
# ---------------------------------------------------------------------------------------------

_SOCKETS, _PROCESSES, _TIMEOUTS, _LIMITS = "Sockets", "Processes", "Timeouts", "Request limits"
_APPLICATION, _LOGGING, _DEVELOPMENT = "Application", "Logging", "Development"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Every server option, resolved and validated; see ``docs/settings.md``.

    Build it with ``resolve_config()``; ``source_of(name)`` says where each value came from.
    """

    # --- Sockets ------------------------------------------------------------------------------
    # runserver's default address: loopback only, so a fresh install is not reachable from the
    # network until someone asks for it (gunicorn's default is 127.0.0.1:8000 too).
    bind: tuple[str, ...] = option(
        ("127.0.0.1:8000",),
        doc="Addresses to listen on: HOST:PORT, [IPv6]:PORT, PORT (on 127.0.0.1) or "
        "unix:/path/to.sock, each speaking HTTP, or the uwsgi or FastCGI protocol with a "
        "uwsgi: or fastcgi: prefix (uwsgi:unix:/run/app.sock, fastcgi:127.0.0.1:9000) for "
        "nginx's uwsgi_pass and fastcgi_pass. Each address once: a socket speaks one "
        "protocol, so two protocols need two ports or paths. Ignored when systemd passes "
        "listening sockets "
        "(socket activation; FileDescriptorName=uwsgi or fastcgi chooses the protocol there).",
        group=_SOCKETS,
        check=_check_bind,
        metavar="ADDRESS",
    )
    # gunicorn 2048; nginx 511; Linux caps it at net.core.somaxconn (4096 since 5.4).
    backlog: int = option(
        2048,
        doc="Connections the kernel queues before the server accepts them (listen(2) backlog).",
        group=_SOCKETS,
        minimum=1,
    )

    trusted_proxies: tuple[str, ...] = option(
        DEFAULT_TRUSTED_PROXIES,
        doc="Peers whose X-Forwarded-For and X-Forwarded-Proto headers are believed (and who may "
        "send a PROXY protocol header): IP addresses, CIDR ranges such as 10.0.0.0/8, 'unix' for "
        "unix-socket clients, '*' for every peer. From anyone else X-Forwarded-* and Forwarded "
        "headers are removed before the application sees them.",
        group=_SOCKETS,
        check=_check_trusted_proxies,
        metavar="ADDRESS",
    )
    proxy_protocol: bool = option(
        False,
        doc="Require a PROXY protocol header (version 1 or 2, as HAProxy and AWS NLB send) at "
        "the start of every TCP connection, from a peer in TRUSTED_PROXIES; REMOTE_ADDR becomes "
        "the client address it carries. Connections without one are closed.",
        group=_SOCKETS,
    )
    certfile: str = option(
        "",
        doc="TLS certificate chain (PEM) for serving HTTPS directly, for small deployments "
        "without a proxy; set KEYFILE too. Every listener then speaks TLS 1.2 or newer (TLS "
        "1.2 with AEAD cipher suites only, Mozilla's intermediate list) and wsgi.url_scheme "
        "is https. Empty: plain HTTP.",
        group=_SOCKETS,
        metavar="PATH",
    )
    keyfile: str = option(
        "",
        doc="The private key (PEM) of CERTFILE; may be omitted when CERTFILE holds it.",
        group=_SOCKETS,
        metavar="PATH",
    )

    # --- Processes ----------------------------------------------------------------------------
    # gunicorn defaults to 1 worker and recommends 2-4 per CPU for single-threaded workers; ours
    # are threaded, so one per CPU keeps every core busy without multiplying DB connections.
    # ServerConfig.__post_init__ counts the CPUs for 0 (_one_worker_per_cpu).
    workers: int = option(
        0,
        doc="Worker processes; 0 means one per CPU (os.cpu_count()), counted when the "
        "configuration is loaded. With --reload, one worker runs in the command's own process.",
        group=_PROCESSES,
        minimum=0,
    )
    # waitress 4 threads, gunicorn gthread 1: 8 covers the I/O waits of typical Django views
    # while keeping database connections per worker (one per busy thread) modest.
    threads: int = option(
        8,
        doc="Application threads per worker: requests one worker runs at once. Each busy "
        "thread may hold a database connection.",
        group=_PROCESSES,
        minimum=1,
    )
    # Idle connections cost the loop a few KiB, not a thread: one worker is meant to hold 10,000
    # idle keep-alive connections while it keeps serving (benchmarks/connections.py measures it);
    # gunicorn worker_connections 1000, nginx worker_connections 512.
    max_connections: int = option(
        10000,
        doc="Open connections per worker, idle keep-alive ones included; at the limit the worker "
        "stops accepting until one closes. Needs a file limit (ulimit -n) above it.",
        group=_PROCESSES,
        minimum=1,
    )
    # Phusion Passenger's max_request_queue_size is 100, and it answers 503 beyond it too.
    max_queued_requests: int = option(
        100,
        doc="Requests a worker holds waiting for a free application thread; beyond it new "
        "requests get 503 Service Unavailable with Retry-After at once instead of waiting. "
        "(On a quiet worker a keep-alive connection's next request is read by a free thread "
        "itself; once every thread has run the same request for a second, the loop reads "
        "them again and this limit applies.)",
        group=_PROCESSES,
        minimum=0,
    )
    max_requests: int = option(  # gunicorn 0: off
        0,
        doc="Restart a worker after it has served this many requests (bounds slow memory "
        "leaks); 0 never restarts.",
        group=_PROCESSES,
        minimum=0,
    )
    max_requests_jitter: int = option(  # gunicorn 0
        0,
        doc="Add a random 0..N to MAX_REQUESTS for each worker, so workers do not all restart "
        "at once. Needs MAX_REQUESTS.",
        group=_PROCESSES,
        minimum=0,
    )
    # uWSGI reload-on-rss; gunicorn has none (#3581). Checked once a second by each worker.
    max_worker_memory: int = option(
        0,
        doc="Restart a worker once its resident memory (RSS) exceeds this many bytes; it "
        "finishes its requests first. 0 never restarts.",
        group=_PROCESSES,
        minimum=0,
    )
    preload: bool = option(  # gunicorn preload_app False
        False,
        doc="Import the application in the master before forking workers: faster start and "
        "shared memory, but code changes then need a full restart instead of a reload.",
        group=_PROCESSES,
    )
    # uWSGI's cpu-affinity, off by default there too. benchmarks/scaling.py (/json, wrk on the
    # same 2 CPUs): one worker +19% pinned; two workers -13%, as a pinned worker cannot move
    # off the core the load generator (in production: nginx, a database) is busy on.
    cpu_affinity: bool = option(
        False,
        doc="Pin each worker (its loop and its threads) to one CPU, spreading workers evenly "
        "over the CPUs the server may use. Keeps a worker's threads, which take turns on the "
        "GIL, on one core instead of handing the GIL across cores: a gain when the CPUs are "
        "not busy with other processes, a loss when they are. Measure with "
        "benchmarks/scaling.py. Linux only.",
        group=_PROCESSES,
    )
    # Opt-in: at 64 connections on a dedicated core +17% req/s (hello) and +5% (/json), but
    # the p99 of a normal client doubled while CPU-bound processes shared the cores
    # (benchmarks/README.md, "Measurements behind design decisions").
    batch_scheduling: bool = option(
        False,
        doc="Run each worker's loop and threads under Linux's SCHED_BATCH policy: a thread the "
        "kernel wakes no longer preempts the one holding the GIL. More requests/s when the "
        "CPUs are the server's alone; higher tail latency when other busy processes share "
        "them. Linux only.",
        group=_PROCESSES,
    )
    pidfile: str = option(
        "",
        doc="Write the master's process id to this file; empty writes none.",
        group=_PROCESSES,
        metavar="PATH",
    )
    # Automatic by default, so that `servectl status` works with no flag at all. Not in the
    # working directory (gunicorn 25's gunicorn.ctl there met read-only and shared volumes);
    # the places, and why, are in control.py.
    control_socket: str = option(
        "",
        doc="Path of the master's control socket, which `manage.py servectl` talks to "
        "(status, reload, add-worker, remove-worker, stop): a unix socket of mode 0600 that "
        "only the server's user and root may use. Empty: automatic, "
        "$RUNTIME_DIRECTORY/control.sock under systemd (the generated unit sets "
        "RuntimeDirectory=), else /run/PROJECT/control.sock when that directory exists, "
        "else $XDG_RUNTIME_DIR/django-wsgiserve/PROJECT.sock, else "
        "/tmp/django-wsgiserve-UID/PROJECT.sock (PROJECT: the settings module's package). "
        "Otherwise an absolute path; off: none.",
        group=_PROCESSES,
        check=check_socket_path,
        metavar="PATH",
    )
    user: str = option(
        "",
        doc="Switch to this user (name or number) after binding the sockets; empty stays.",
        group=_PROCESSES,
        metavar="USER",
    )
    group: str = option(
        "",
        doc="Switch to this group (name or number) after binding the sockets; empty stays.",
        group=_PROCESSES,
        metavar="GROUP",
    )
    umask: int | None = option(
        None,
        doc="File mode creation mask of the server, in octal (0o022 in settings, 022 in the "
        "environment or on the command line); None keeps the inherited umask.",
        group=_PROCESSES,
        kind=Kind.OCTAL,
        check=_check_umask,
    )

    # --- Timeouts -----------------------------------------------------------------------------
    # Behind a proxy the server's idle timeout must outlast the proxy's upstream idle timeout,
    # else the proxy may reuse a connection the server is closing and answer 502: nginx upstream
    # keepalive_timeout and AWS ALB idle timeout are both 60 s, so 75 (nginx's own client-side
    # default). Idle connections are cheap here (no thread); MAX_CONNECTIONS bounds them.
    keepalive_timeout: float = option(
        75.0,
        doc="Seconds an idle keep-alive connection waits for its next request; 0 disables "
        "keep-alive (one request per connection).",
        group=_TIMEOUTS,
        minimum=0,
    )
    # nginx client_header_timeout 60, Apache mod_reqtimeout header=20-40: a real client sends
    # its head in one packet, so 10 s is generous and sheds slowloris connections sooner.
    header_timeout: float = option(
        10.0,
        doc="Seconds a client has to send the whole request head (request line and headers).",
        group=_TIMEOUTS,
        above=0,
    )
    body_timeout: float = option(  # nginx client_body_timeout 60 (also between two reads)
        30.0,
        doc="Seconds of silence allowed between two reads of a request body.",
        group=_TIMEOUTS,
        above=0,
    )
    write_timeout: float = option(  # nginx send_timeout 60 (also between two writes)
        30.0,
        doc="Seconds a client may stop reading the response before the connection is dropped.",
        group=_TIMEOUTS,
        above=0,
    )
    # Kubernetes removes a terminating pod from its Service endpoints while it sends SIGTERM;
    # kube-proxies and ingresses learn of it a few seconds later (5-10 s is the usual advice).
    # Off by default: behind a plain nginx or under systemd nobody needs the wait.
    drain_delay: float = option(
        0.0,
        doc="Seconds between SIGTERM (or SIGINT) and the drain: /readyz on METRICS_BIND "
        "fails at once and the server keeps serving and accepting meanwhile, so load "
        "balancers stop sending first. A second signal ends the wait.",
        group=_TIMEOUTS,
        minimum=0,
    )
    # gunicorn graceful_timeout 30; systemd's TimeoutStopSec (default 90) must exceed it.
    graceful_timeout: float = option(
        30.0,
        doc="Seconds in-flight requests get to finish on shutdown or reload before they are "
        "cancelled; 0 cancels them at once.",
        group=_TIMEOUTS,
        minimum=0,
    )
    # gunicorn 27 keeps kept-alive connections open 2 s while a worker stops (its
    # STOP_KEEPALIVE_LINGER), which measured 0 lost requests behind nginx. A proxy may already
    # be sending on an idle connection when the drain starts; a proxy whose own upstream idle
    # timeout is shorter than this window never sends on one we are about to close.
    drain_keepalive_timeout: float = option(
        2.0,
        doc="Seconds a draining worker (reload, resize, recycling, shutdown) keeps an idle "
        "keep-alive connection open for a request that may already be on its way, which is "
        "answered with Connection: close; a proxy's upstream idle timeout shorter than this "
        "rules out a lost request. 0 closes idle connections as soon as the drain starts.",
        group=_TIMEOUTS,
        minimum=0,
    )
    # nginx proxy_read_timeout 60: past it the proxy has given up on the request anyway.
    timeout: float = option(
        60.0,
        doc="Seconds after which a request still running is logged as stuck, with the "
        "traceback of its thread, and its worker is replaced gracefully; 0 disables.",
        group=_TIMEOUTS,
        minimum=0,
    )

    # Workers report once a second from their I/O loop (not from application threads, so a
    # long request never counts as silence); gunicorn's worker timeout is 30 s but also kills
    # long requests. 10 s tolerates a loaded machine and still catches a wedged loop quickly.
    heartbeat_timeout: float = option(
        10.0,
        doc="Seconds a worker's I/O loop may stay silent before the master aborts it (SIGABRT, "
        "which dumps every thread's traceback, then SIGKILL) and starts another.",
        group=_TIMEOUTS,
        minimum=2,
    )

    # --- Request limits -----------------------------------------------------------------------
    # Apache LimitRequestLine 8190; gunicorn limit_request_line 4094; nginx 8 KiB buffers.
    max_request_line: int = option(
        8190,
        doc="Longest request line (method, target, version) in bytes; longer gets 414.",
        group=_LIMITS,
        minimum=1,
    )
    max_headers: int = option(  # gunicorn limit_request_fields 100; Apache LimitRequestFields 100
        100,
        doc="Most header fields in one request; more gets 431.",
        group=_LIMITS,
        minimum=1,
    )
    # nginx large_client_header_buffers 4 x 8 KiB; node --max-http-header-size 16 KiB.
    max_header_bytes: int = option(
        32768,
        doc="Most bytes of header fields in one request (request line excluded); more gets 431.",
        group=_LIMITS,
        minimum=1,
    )
    # nginx client_max_body_size is 1 MiB, too small for the uploads Django apps take; 100 MiB
    # still stops a client from filling the disk through the temporary-file spill.
    max_body_bytes: int = option(
        104857600,
        doc="Largest request body in bytes; a larger one gets 413 before the application runs.",
        group=_LIMITS,
        minimum=1,
    )
    # Django's FILE_UPLOAD_MAX_MEMORY_SIZE is 2.5 MiB; nginx client_body_buffer_size 8-16 KiB.
    body_buffer_bytes: int = option(
        1048576,
        doc="Request bodies up to this size are buffered in memory; larger ones spill to a "
        "temporary file. 0 spills every body.",
        group=_LIMITS,
        minimum=0,
    )

    # --- Application --------------------------------------------------------------------------
    script_name: str = option(
        "",
        doc="URL prefix the application is mounted at (WSGI SCRIPT_NAME), such as /app; empty "
        "for the root. Starts with / and does not end with /.",
        group=_APPLICATION,
        check=_check_script_name,
        metavar="PREFIX",
    )
    # No version number: it would only help scanners (nginx server_tokens off).
    server_header: str = option(
        "django-wsgiserve",
        doc="Value of the Server response header; empty sends none.",
        group=_APPLICATION,
        check=_check_header_value,
    )
    static: bool = option(
        True,
        doc="Serve STATIC_ROOT (filled by collectstatic) from the server itself, without an "
        "application thread. runserver's --nostatic turns it off.",
        group=_APPLICATION,
    )
    serve_media: bool = option(
        False,
        doc="Also serve MEDIA_ROOT at MEDIA_URL from the server itself, by whitenoise's rules "
        "(new uploads are found on disk; paths outside MEDIA_ROOT are never served).",
        group=_APPLICATION,
    )

    # --- Logging ------------------------------------------------------------------------------
    # Off by default: an extra listening socket is the operator's choice, and its address.
    metrics_bind: str = option(
        "",
        doc="Address of the master's own listener (host:port or unix:PATH): /healthz (the "
        "master runs and a worker serves) and /readyz (200 only while serving, 503 while "
        "starting, during DRAIN_DELAY and draining) and /metrics (Prometheus, summed over "
        "every worker). Port 0: any free port, logged at start. Empty: none.",
        group=_LOGGING,
        metavar="ADDRESS",
        check=_check_metrics_bind,
    )
    access_log: bool = option(
        True,
        doc="Log one line per response to the django_wsgiserve.access logger.",
        group=_LOGGING,
    )
    # "combined" is nginx's and Apache's usual format: every log analyser reads it.
    access_log_format: str = option(
        "combined",
        doc="combined (Apache/nginx), common, json (one object per line) or django (like "
        'runserver: "GET / HTTP/1.1" 200 1234).',
        group=_LOGGING,
        choices=("combined", "common", "json", "django"),
    )

    # --- Development --------------------------------------------------------------------------
    reload: bool = option(
        False,
        doc="Restart the server when Python code changes, with Django's autoreloader (for "
        "development). runserver's --noreload turns it off.",
        group=_DEVELOPMENT,
    )

    # --- Not options --------------------------------------------------------------------------
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    addresses: tuple[BindAddress, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", types.MappingProxyType(dict(self.sources)))
        for declared in OPTIONS:
            raw = getattr(self, declared.name)
            value = _convert(declared, raw, self.source_of(declared.name), declared.codec.coerce)
            if value is not raw:
                object.__setattr__(self, declared.name, value)
        if self.workers == 0:
            object.__setattr__(self, "workers", _one_worker_per_cpu())
        object.__setattr__(self, "addresses", tuple(parse_bind(spec) for spec in self.bind))
        self._check_combinations()

    def _check_combinations(self) -> None:
        if self.proxy_protocol and self.certfile:
            raise ConflictingOptionsError(
                "cannot be combined with CERTFILE: terminate TLS at the proxy that sends the "
                "PROXY header",
                option="PROXY_PROTOCOL",
                source=self.source_of("proxy_protocol"),
            )
        if self.keyfile and not self.certfile:
            raise ConflictingOptionsError(
                "needs CERTFILE: set the certificate as well, or remove KEYFILE",
                option="KEYFILE",
                source=self.source_of("keyfile"),
            )
        if self.max_requests_jitter and not self.max_requests:
            raise ConflictingOptionsError(
                "has no effect without MAX_REQUESTS: set MAX_REQUESTS too, or remove it",
                option="MAX_REQUESTS_JITTER",
                source=self.source_of("max_requests_jitter"),
            )

    def source_of(self, name: str) -> str:
        """Where option ``name`` (``"threads"`` or ``"THREADS"``) got its value."""
        name = name.lower()
        if name not in OPTIONS_BY_NAME:
            raise KeyError(name)
        return self.sources.get(name, "default")


def _one_worker_per_cpu() -> int:
    """What ``WORKERS = 0`` means: one worker per CPU (1 where the count is unknown)."""
    return os.cpu_count() or 1


OPTIONS: tuple[Option, ...] = tuple(
    replace(item.metadata[METADATA_KEY], name=item.name)
    for item in fields(ServerConfig)
    if METADATA_KEY in item.metadata
)
OPTIONS_BY_NAME: Mapping[str, Option] = types.MappingProxyType({o.name: o for o in OPTIONS})


# ---------------------------------------------------------------------------------------------
# Converting and validating values
# ---------------------------------------------------------------------------------------------


def _convert(
    declared: Option, raw: object, source: str, converter: Callable[[Any], object]
) -> object:
    """Convert and validate one value, turning ValueError into an error naming option+source."""
    try:
        value = converter(raw)
        declared.validate(value)
    except ValueError as exc:
        raise InvalidOptionValueError(str(exc), option=declared.setting, source=source) from exc
    return value


# ---------------------------------------------------------------------------------------------
# Resolving
# ---------------------------------------------------------------------------------------------


def resolve_config(
    settings: Mapping[str, object],
    environ: Mapping[str, str],
    cli: Mapping[str, object],
    *,
    cli_sources: Mapping[str, str] | None = None,
    cli_defaults: Mapping[str, tuple[object, str]] | None = None,
) -> ServerConfig:
    """Merge defaults < ``settings`` (the WSGISERVE dict) < ``environ`` < ``cli`` and validate.

    ``cli`` maps option names (``"threads"``) to the values the user actually gave on the
    command line; ``cli_sources`` may relabel their source (``{"bind": "command line
    addrport"}``). ``cli_defaults`` holds ``(value, source)`` for options whose *default* the
    command line changes, below the settings: runserver's ``--ipv6`` changes only the default
    address. Raises the first ``ConfigError``.
    """
    values, sources, errors = _merge(settings, environ, cli, cli_sources or {}, cli_defaults or {})
    if errors:
        raise errors[0]
    return _build(values, sources)


def wsgiserve_setting(settings: object) -> Mapping[str, object]:
    """``settings.WSGISERVE`` of a Django settings object (``{}`` when it is not set), the
    mapping ``resolve_config()`` takes; ``SettingNotADictError`` when it is not a dict."""
    wsgiserve = getattr(settings, "WSGISERVE", {})
    if not isinstance(wsgiserve, dict):
        kind = type(wsgiserve).__name__
        raise SettingNotADictError(f"settings.WSGISERVE must be a dict, not {kind}.")
    return wsgiserve


def error_message(exc: ConfigError) -> str:
    """A configuration error for the operator: ``THREADS (environment WSGISERVE_THREADS): ...``."""
    if exc.option is None:
        return str(exc)
    return f"{exc.option} ({exc.source}): {exc}"


def config_errors(
    settings: Mapping[str, object], environ: Mapping[str, str], cli: Mapping[str, object]
) -> list[ConfigError]:
    """Every problem ``resolve_config()`` would raise for, for the system checks.

    Problems with single values are all reported; a combination problem only when there are none.
    """
    values, sources, errors = _merge(settings, environ, cli, {})
    if errors:
        return errors
    try:
        _build(values, sources)
    except ConfigError as exc:
        return [exc]
    return []


def _build(values: dict[str, Any], sources: dict[str, str]) -> ServerConfig:
    return ServerConfig(**values, sources=sources)


def _merge(
    settings: Mapping[str, object],
    environ: Mapping[str, str],
    cli: Mapping[str, object],
    cli_sources: Mapping[str, str],
    cli_defaults: Mapping[str, tuple[object, str]] | None = None,
) -> tuple[dict[str, Any], dict[str, str], list[ConfigError]]:
    errors: list[ConfigError] = [*_unknown_names(settings, environ, cli)]
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    defaults = {name: value for name, (value, _) in (cli_defaults or {}).items()}
    for declared in OPTIONS:
        codec = declared.codec
        default_source = (cli_defaults or {}).get(declared.name, (None, ""))[1]
        layers: tuple[tuple[Mapping[str, Any], str, str, Callable[[Any], object]], ...] = (
            (defaults, declared.name, default_source, codec.from_cli),
            (settings, declared.setting, f"settings.WSGISERVE[{declared.setting!r}]", codec.coerce),
            (environ, declared.env, f"environment {declared.env}", codec.parse),
            (cli, declared.name, cli_sources.get(declared.name, ""), codec.from_cli),
        )
        for mapping, key, source, converter in layers:
            if key not in mapping:
                continue
            source = source or _cli_source(declared, mapping[key])
            try:
                values[declared.name] = _convert(declared, mapping[key], source, converter)
            except ConfigError as exc:
                errors.append(exc)
            else:
                sources[declared.name] = source
    return values, sources, errors


def _cli_source(declared: Option, value: object) -> str:
    flag = declared.negative_flag if value is False else declared.flag
    return f"command line {flag}"


def _unknown_names(
    settings: Mapping[str, object], environ: Mapping[str, str], cli: Mapping[str, object]
) -> Iterator[ConfigError]:
    settings_keys = sorted(o.setting for o in OPTIONS)
    for key in settings:
        if key not in settings_keys:
            hint = _suggestion(key, settings_keys)
            source = f"settings.WSGISERVE[{key!r}]"
            yield UnknownOptionError(f"unknown option{hint}", option=str(key), source=source)
    env_names = [ENV_PREFIX + key for key in settings_keys]
    for name in environ:
        if (
            name.startswith(ENV_PREFIX)
            and not name.startswith(_ENV_IGNORED_PREFIX)
            and name not in env_names
        ):
            hint = _suggestion(name, env_names)
            option_name = name.removeprefix(ENV_PREFIX)
            source = f"environment {name}"
            yield UnknownOptionError(f"unknown option{hint}", option=option_name, source=source)
    for key in cli:
        if key not in OPTIONS_BY_NAME:
            yield UnknownOptionError("unknown option", option=str(key), source="command line")


def _suggestion(key: object, known: list[str]) -> str:
    if not isinstance(key, str):
        return f" (keys are strings such as {known[0]!r})"
    if key.upper() in known:
        return f"; keys are upper-case: {key.upper()!r}"
    matches = difflib.get_close_matches(key.upper(), known, n=1)
    return f"; did you mean {matches[0]!r}?" if matches else ""


# ---------------------------------------------------------------------------------------------
# Command line and --print-config
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per option (``--name`` and ``--no-name`` for booleans), grouped as in the docs.

    Every flag defaults to None, so ``given_cli_options()`` can tell what the user gave. Values
    stay text here and are parsed by ``resolve_config()``, so a bad value gets the same error
    (naming option and source) as one from the settings or the environment.
    """
    groups = {
        name: parser.add_argument_group(f"server options: {name}")
        for name in dict.fromkeys(o.group for o in OPTIONS)
    }
    for declared in OPTIONS:
        help_text = f"{declared.doc} Default: {declared.codec.show(declared.default)}."
        declared.codec.add_argument(groups[declared.group], declared, help_text.replace("%", "%%"))


def given_cli_options(options: Mapping[str, object]) -> dict[str, object]:
    """The options the user gave, from the parsed arguments (all flags default to None)."""
    return {o.name: options[o.name] for o in OPTIONS if options.get(o.name) is not None}


def describe_config(config: ServerConfig) -> list[tuple[str, str, str]]:
    """``(SETTING, value, source)`` for every option, in declaration order (--print-config)."""
    return [
        (o.setting, o.codec.show(getattr(config, o.name)), config.source_of(o.name))
        for o in OPTIONS
    ]


def config_table(config: ServerConfig) -> list[str]:
    """``--print-config``: a header and one aligned line per option: name, value, source."""
    rows = [("OPTION", "VALUE", "SOURCE"), *describe_config(config)]
    name_width = max(len(row[0]) for row in rows)
    value_width = max(len(row[1]) for row in rows)
    return [
        f"{name:<{name_width}}  {value:<{value_width}}  {source}" for name, value, source in rows
    ]
