"""Is anything else using the CPUs while we measure? (Linux /proc accounting.)

The machine may be shared (other sessions running tests). During each measured run this
compares the CPU time the whole machine spent in user+system mode with what the server's
process group, wrk and the harness itself spent: the rest was used by other processes, and
a run where that rest is large is flagged as noisy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuSample", "group_rss_mb", "other_cpus"]

_PROC = Path("/proc")
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def _machine_busy_s() -> float:
    """User + nice + system time of all CPUs since boot (irq/softirq/steal excluded)."""
    fields = (_PROC / "stat").read_text().splitlines()[0].split()
    user, nice, system = (int(value) for value in fields[1:4])
    return (user + nice + system) * _TICK_S


def _group_cpu_s(pgid: int) -> float:
    """utime + stime of the live processes in group ``pgid`` (all their threads)."""
    total = 0
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total * _TICK_S


def _own_and_children_s() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU counters at one instant; subtract two to see who used the CPUs in between."""

    machine_s: float
    server_s: float
    harness_s: float  # the harness plus its reaped children (wrk)

    @classmethod
    def take(cls, server_pgid: int | None = None) -> CpuSample | None:
        """Sample now; ``server_pgid`` is the server's process group, if one is running."""
        try:
            server_s = _group_cpu_s(server_pgid) if server_pgid is not None else 0.0
            return cls(_machine_busy_s(), server_s, _own_and_children_s())
        except (OSError, ValueError, IndexError):
            return None  # not Linux, or /proc unreadable: no noise check


def other_cpus(before: CpuSample | None, after: CpuSample | None, elapsed_s: float) -> float | None:
    """Average number of CPUs used by processes other than ours between two samples."""
    if before is None or after is None or elapsed_s <= 0:
        return None
    ours = (after.server_s - before.server_s) + (after.harness_s - before.harness_s)
    other = (after.machine_s - before.machine_s) - ours
    return max(other, 0.0) / elapsed_s


def group_rss_mb(pgid: int) -> float | None:
    """Summed VmRSS of the processes in group ``pgid`` (a master and its workers), in MiB.

    Pages shared between processes (after fork) count once per process, so for a prefork
    server this overstates what the tree costs; for one process it is exact.
    """
    total_kb, found = 0, False
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat[stat.rfind(")") + 2 :].split()[2]) != pgid:
                continue
            status = (entry / "status").read_text()
        except (OSError, ValueError, IndexError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
                found = True
    return total_kb / 1024 if found else None
