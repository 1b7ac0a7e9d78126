"""The master's process setup: UMASK, PIDFILE, USER/GROUP, its title, and log reopening.

Design note. ``ProcessSetup.prepare()`` runs once, first thing in ``Arbiter.run()``, after the
command has bound the listeners (so that a port below 1024 can be bound before root is left)
and before any worker is forked (so that the workers inherit the umask and the identity).

* **PIDFILE** is written atomically (a temporary file, then ``os.replace``: a reader never sees
  a half-written file) and removed at exit only while it still holds our pid, so a newer
  server's file is never deleted. A master re-executed by a configuration reload keeps its pid:
  a file that already holds it is left alone.
* **USER/GROUP** switch the master, and so every worker, when started as root; otherwise they
  are ignored with a warning. Already being that user and group (systemd's ``User=``) is fine.
* **Re-executed** (``is_reexecuted``): the server is serving, so a PIDFILE that cannot be
  written or a USER that cannot be switched to is logged at ERROR and ignored rather than
  raised; the reload check does not look them up, and dying now would orphan the old workers.
  At a first start both raise, and the command reports them.

Threads: master's main thread only. Imports only the stdlib and ``worker``'s two process
helpers (title, log files); never Django.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd

from django_wsgiserve import worker

__all__ = ["ProcessSetup", "drop_privileges", "read_pid"]

# Every module of the master logs as ``django_wsgiserve.arbiter``, the name its lines carry.
logger = logging.getLogger(__package__)


class ProcessSetup:
    """What the master does to its own process (master's main thread); see the module notes."""

    def __init__(
        self,
        *,
        pidfile: str = "",
        user: str = "",
        group: str = "",
        umask: int | None = None,
        title: str = "",
        is_reexecuted: bool = False,
    ) -> None:
        """``title``: the process title's suffix (``[settings module]``); ``is_reexecuted``:
        this is a master re-executed by a configuration reload (a ``reexec.Handover``)."""
        self.pidfile = pidfile
        self._user = user
        self._group = group
        self._umask = umask
        self._title = title
        self._is_reexecuted = is_reexecuted

    def prepare(self) -> None:
        """UMASK, PIDFILE, USER/GROUP and the title, in that order (``Arbiter.run``)."""
        if self._umask is not None:
            os.umask(self._umask)
        self.write_pidfile()
        self.switch_user()
        worker.set_process_title(f"django-wsgiserve: master {self._title}".rstrip())

    def write_pidfile(self) -> None:
        """Write our pid to PIDFILE, atomically, unless it holds it already."""
        path = self.pidfile
        if not path or read_pid(path) == os.getpid():
            return  # e.g. re-executed (SIGHUP): the pid is the same
        temporary = f"{path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "w", encoding="ascii") as pidfile:
                pidfile.write(f"{os.getpid()}\n")
            os.replace(temporary, path)  # atomic: a reader never sees a half-written file
        except OSError as exc:
            if not self._is_reexecuted:
                raise
            # Re-executed after USER dropped root, a new PIDFILE may not be writable: that must
            # not stop a server that is serving.
            logger.error("Could not write PIDFILE %s: %s", path, exc)

    def remove_pidfile(self) -> None:
        """Remove PIDFILE if it still holds our pid (a warning if that fails)."""
        path = self.pidfile
        if not path:
            return
        try:
            if read_pid(path) == os.getpid():
                os.unlink(path)
        except OSError as exc:
            logger.warning("Could not remove PIDFILE %s: %s", path, exc)

    def switch_user(self) -> None:
        """USER/GROUP (see ``drop_privileges``); lenient when re-executed."""
        try:
            drop_privileges(self._user, self._group)
        except (LookupError, OSError) as exc:
            if not self._is_reexecuted:
                raise
            # The reload check does not look USER/GROUP up: a re-executed master that cannot
            # switch keeps the identity it had rather than die and orphan its old workers.
            logger.error("USER/GROUP %r/%r ignored: %r", self._user, self._group, exc)

    def reopen_logs(self) -> None:
        """SIGUSR1: every ``logging.FileHandler`` reopens its file at its next record."""
        worker.reopen_log_files()


def read_pid(path: str) -> int | None:
    """The pid in the file at ``path``; None if it cannot be read or holds no number."""
    try:
        with open(path, encoding="ascii") as pidfile:
            return int(pidfile.read().strip())
    except (OSError, ValueError):
        return None


def drop_privileges(user: str, group: str) -> None:
    """Switch to USER/GROUP (after binding); only root can, so otherwise warn and stay.

    Raises LookupError for a user or group that does not exist, OSError when the switch fails.
    """
    if not user and not group:
        return
    entry = (pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)) if user else None
    if group:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    else:
        gid = entry.pw_gid if entry is not None else os.getegid()
    if (entry is None or entry.pw_uid == os.geteuid()) and gid == os.getegid():
        return  # already that user and group, e.g. systemd's User=/Group= did it
    if os.geteuid() != 0:
        logger.warning(
            "USER/GROUP ignored: switching to them needs root (running as uid %d, gid %d)",
            os.geteuid(),
            os.getegid(),
        )
        return
    if entry is not None:
        os.initgroups(entry.pw_name, gid)
    else:
        os.setgroups([gid])
    os.setgid(gid)
    if entry is not None:
        os.setuid(entry.pw_uid)
    logger.info("Running as uid %d, gid %d", os.getuid(), os.getgid())
