"""Exec shim for real-server tests: behave like systemd socket activation.

Usage: python exec_shim.py FD PROGRAM-ARGS...  Moves the listening socket FD to fd 3, sets
LISTEN_FDS=1 and LISTEN_PID to its own pid, then execs Python with PROGRAM-ARGS; exec keeps the
pid, so the server sees LISTEN_PID == getpid() as it would under systemd.
"""

from __future__ import annotations

import os
import sys

fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
