"""A real nginx in front of a server under test, as production runs it.

``NginxProxy`` writes a configuration into a temporary directory and runs ``nginx`` in the
foreground (``daemon off``, ``master_process off``: one process, the test's own user, pid and
logs in that directory). It listens on a unix socket in the same directory, so there is no
free-port race, and it is ready once it has written its pid file (nginx binds its listeners
before it writes the pid file). ``stop()`` sends SIGQUIT (graceful), then SIGKILL, by pid.

The upstream block is the one docs/deployment.md recommends: HTTP/1.1 with upstream
keep-alive, the ``Connection`` header cleared, and the usual forwarded headers; or, with
``protocol=``, ``uwsgi_pass`` or ``fastcgi_pass`` (optionally with ``fastcgi_keep_conn on``)
with nginx's stock params files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from string import Template
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["NGINX", "NginxProxy", "nginx_missing_reason"]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONFIG = Template(
    """\
daemon off;
master_process off;
worker_processes 1;
pid ${tmp}/nginx.pid;
error_log ${tmp}/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path ${tmp}/body;
    proxy_temp_path ${tmp}/proxy;
    fastcgi_temp_path ${tmp}/fastcgi;
    uwsgi_temp_path ${tmp}/uwsgi;
    scgi_temp_path ${tmp}/scgi;
    upstream app {
        server ${upstream};
        keepalive 32;
        ${upstream_extra}
    }
    server {
        listen unix:${tmp}/nginx.sock;
        client_max_body_size 20m;
        location / {
${location}
        }
    }
}
"""
)


# The location block per upstream protocol; uwsgi and FastCGI use nginx's stock params files
# unchanged, as a deployment would.
LOCATIONS = {
    "http": """\
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $$host;
            proxy_set_header X-Forwarded-For $$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $$scheme;""",
    "uwsgi": """\
            include /etc/nginx/uwsgi_params;
            uwsgi_pass app;""",
    "fastcgi": """\
            include /etc/nginx/fastcgi_params;
            fastcgi_pass app;""",
    # An application mounted at /myapp the old uWSGI way: SCRIPT_NAME set, PATH_INFO whole,
    # and modifier1 30 asks the server to take SCRIPT_NAME off PATH_INFO.
    "uwsgi-modifier1-30": """\
            include /etc/nginx/uwsgi_params;
            uwsgi_param SCRIPT_NAME /myapp;
            uwsgi_modifier1 30;
            uwsgi_pass app;""",
    # FCGI_KEEP_CONN: requests follow each other on the upstream keepalive connections.
    "fastcgi-keep": """\
            include /etc/nginx/fastcgi_params;
            fastcgi_keep_conn on;
            fastcgi_pass app;""",
}


def nginx_missing_reason() -> str | None:
    """Why nginx cannot run here, or None."""
    if not os.access(NGINX, os.X_OK):
        return f"nginx is not installed ({NGINX}); .ci/run installs it (apt-get install nginx)"
    return None


class NginxProxy:
    """nginx proxying to ``upstream`` (a ``host:port`` or a unix socket path)."""

    def __init__(
        self,
        directory: Path,
        upstream: tuple[str, int] | str,
        *,
        protocol: str = "http",
        **extra: str,
    ) -> None:
        """``protocol``: a key of ``LOCATIONS`` (http, uwsgi, uwsgi-modifier1-30, fastcgi,
        fastcgi-keep)."""
        self.directory = directory
        is_unix = isinstance(upstream, str)
        target = f"unix:{upstream}" if is_unix else "{}:{}".format(*upstream)
        directory.mkdir(parents=True, exist_ok=True)
        upstream_extra = "".join(f"{name} {value}; " for name, value in extra.items())
        self.config_path = directory / "nginx.conf"
        self.config_path.write_text(
            CONFIG.substitute(
                tmp=directory,
                upstream=target,
                upstream_extra=upstream_extra,
                location=Template(LOCATIONS[protocol]).substitute(),
            )
        )
        self.address = str(directory / "nginx.sock")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> NginxProxy:
        pidfile = self.directory / "nginx.pid"
        with open(self.directory / "stderr.log", "ab") as log:
            self.process = subprocess.Popen(
                [NGINX, "-c", str(self.config_path), "-e", str(self.directory / "error.log")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        end = time.monotonic() + timeout
        while not pidfile.exists():
            if self.process.poll() is not None or time.monotonic() > end:
                self.stop()
                raise AssertionError(f"nginx did not start:\n{self.error_log()}")
            time.sleep(0.02)
        return self

    def error_log(self) -> str:
        parts = []
        for name in ("stderr.log", "error.log"):
            with contextlib.suppress(FileNotFoundError):
                parts.append((self.directory / name).read_text("utf-8", "replace"))
        return "".join(parts)

    def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGQUIT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(5)

    def __enter__(self) -> NginxProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
