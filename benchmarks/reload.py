"""Requests lost while workers are replaced: our server beside gunicorn gthread, behind nginx.

    .venv/bin/python benchmarks/reload.py                  # 20 cycles, ours and gunicorn-gthread
    .venv/bin/python benchmarks/reload.py --cycles 5 --servers ours
    .venv/bin/python benchmarks/reload.py --repeat 2 --output reload.md

Each server (2 workers x 4 threads) listens on a unix socket behind a real nginx
(``tests/nginx.py``: HTTP/1.1 upstream with ``keepalive 32``, the setup docs/deployment.md
recommends), while 16 keep-alive clients (``tests/keepalive.py``) POST 2 KB to testproject's
``/echo/`` and retry nothing. One *cycle* sends the master ``HUP``, ``TTIN``, ``HUP``, ``TTOU``,
each once the previous one has finished (``HUP``: none of the previous workers is left and the
count is back; ``TTIN``/``TTOU``: one worker more/less), with at least ``--between``
successful requests after each. A lost request is one that got no complete 200 with the echoed
body length: nginx turns a connection the upstream closed or reset under a forwarded POST into
a 502, and does not retry it (POST is not idempotent).

* ours: ``manage.py serve unix:PATH --workers 2 --threads 4 --noreload --no-access-log``.
* gunicorn-gthread: ``gunicorn -k gthread -w 2 --threads 4 -b unix:PATH`` from
  benchmarks/.venv-peers (created and filled here as benchmarks/run.py does when missing).
  Its ``HUP`` re-reads the configuration, which resets the count that ``TTIN`` raised to
  ``-w 2``; so its ``TTOU`` takes it from 2 workers to 1, where ours goes from 3 to 2.

testproject is migrated into a temporary database first, so nothing is written into
testproject/. Every process (servers, nginx) runs in its own session and is stopped by pid
or process group (SIGTERM, then SIGKILL), also on Ctrl-C; every wait is bounded. Loopback
and unix sockets only; standard library only. Prints a Markdown table of the losses.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from harness.peers_venv import installed_versions, peers_bin, prepare_peers  # noqa: E402
from harness.procs import ChildProcess, child_env, run_bounded, stop_all  # noqa: E402
from harness.servers import SERVERS  # noqa: E402

from tests.keepalive import KeepAliveLoad  # noqa: E402
from tests.live import read_response, wait_until  # noqa: E402
from tests.nginx import NGINX, NginxProxy, nginx_missing_reason  # noqa: E402

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["main"]

TESTPROJECT = REPO / "testproject"
PYTHON = REPO / ".venv" / "bin" / "python"
WORKERS = 2
THREADS = 4
BODY_BYTES = 2048
SIGNALS = (signal.SIGHUP, signal.SIGTTIN, signal.SIGHUP, signal.SIGTTOU)
SIGNAL_NAMES = ("HUP", "TTIN", "TTOU")
# What nginx writes when an upstream connection dies under a request it forwarded.
UPSTREAM_ERRORS = ("upstream prematurely closed", "reset by peer", "Broken pipe")
READY_TIMEOUT_S = 60.0
SIGNAL_TIMEOUT_S = 30.0
PROGRESS_TIMEOUT_S = 30.0
SERVER_NAMES = ("ours", "gunicorn-gthread")
DEFAULTS = {"cycles": 20, "clients": 16, "between": 100, "repeat": 1}


class CycleError(Exception):
    """A bounded wait ran out: the server's remaining cycles are skipped (and reported)."""


@dataclass
class ServerResult:
    name: str
    ok: int = 0
    lost_per_cycle: list[int] = field(default_factory=list)
    lost_by_signal: collections.Counter[str] = field(default_factory=collections.Counter)
    failure_kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    upstream_errors: int = 0
    refused: int = 0
    notes: list[str] = field(default_factory=list)


def project_python() -> str:
    return str(PYTHON) if PYTHON.exists() else sys.executable


def children(pid: int) -> set[int]:
    """The pids of ``pid``'s children (its workers; ours also forks a short reload check)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return set()
    return {int(child) for child in text.split()}


def answers_get(path: str) -> bool:
    """True once ``GET /json`` on the unix socket ``path`` gets a 200 (no static files needed)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(b"GET /json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return read_response(sock).status == 200
    except (OSError, ConnectionError, AssertionError, ValueError):
        return False


def gunicorn_has(option: str) -> bool:
    """Whether the peers' gunicorn lists ``option`` in its --help."""
    return option in run_bounded([str(peers_bin() / "gunicorn"), "--help"], timeout_s=60).output


def start_server(name: str, work: Path, env: dict[str, str], run: int) -> tuple[ChildProcess, str]:
    """Start ``name`` on a unix socket in ``work``; return it once it serves with its workers."""
    path = str(work / f"{name}-{run}.sock")
    log = work / f"{name}-{run}.log"
    if name == "ours":
        argv = [project_python(), "manage.py", "serve", f"unix:{path}", "--noreload"]
        argv += ["--workers", str(WORKERS), "--threads", str(THREADS), "--no-access-log"]
    else:
        argv = [str(peers_bin() / "gunicorn"), "-k", "gthread", "-b", f"unix:{path}"]
        argv += ["-w", str(WORKERS), "--threads", str(THREADS), "--chdir", str(TESTPROJECT)]
        argv += ["testproject.wsgi:application"]
        if gunicorn_has(
            "--no-control-socket"
        ):  # else recent gunicorn binds a control socket in $HOME
            argv.append("--no-control-socket")
        # django_wsgiserve is in testproject's INSTALLED_APPS: importable from the checkout.
        env = {**env, "PYTHONPATH": str(REPO)}
    child = ChildProcess(argv, cwd=TESTPROJECT, env=env, log_path=log)
    ready = wait_until(
        lambda: (
            not child.is_running() or (answers_get(path) and len(children(child.pid)) == WORKERS)
        ),
        READY_TIMEOUT_S,
    )
    if not ready or not child.is_running():
        print(f"{name} did not start; its log ends with: {child.log_tail(10)}", file=sys.stderr)
        child.stop()
        raise CycleError(f"did not start within {READY_TIMEOUT_S:.0f} s")
    return child, path


def wait_for_ok(load: KeepAliveLoad, count: int) -> None:
    """Wait until ``count`` more requests succeeded, whatever fails meanwhile (bounded)."""
    target = load.result.ok + count
    if not wait_until(lambda: load.result.ok >= target, PROGRESS_TIMEOUT_S):
        raise CycleError(f"fewer than {count} requests succeeded in {PROGRESS_TIMEOUT_S:.0f} s")


def send_and_wait(name: str, master: int, signum: int) -> None:
    """Send ``signum`` to ``master`` and wait until the workers show it has been carried out."""
    before = children(master)
    os.kill(master, signum)
    if signum == signal.SIGHUP:
        # gunicorn's HUP re-reads -w; ours keeps the count TTIN/TTOU set (docs/signals.md).
        expected = len(before) if name == "ours" else WORKERS
        done = wait_until(
            lambda: not before & children(master) and len(children(master)) == expected,
            SIGNAL_TIMEOUT_S,
        )
    else:
        expected = len(before) + (1 if signum == signal.SIGTTIN else -1)
        done = wait_until(lambda: len(children(master)) == expected, SIGNAL_TIMEOUT_S)
    if not done:
        raise CycleError(
            f"SIG{signal.Signals(signum).name[3:]} not carried out in {SIGNAL_TIMEOUT_S:.0f} s "
            f"(workers before {sorted(before)}, now {sorted(children(master))})"
        )


def failure_kind(failure: str) -> str:
    """``AssertionError: status 502: b'<html>...'`` -> ``AssertionError: status 502``."""
    return failure.split(": b'", 1)[0].split(': b"', 1)[0][:80]


def run_cycles(
    name: str, master: int, load: KeepAliveLoad, args: argparse.Namespace, result: ServerResult
) -> None:
    """``args.cycles`` cycles of HUP, TTIN, HUP, TTOU; losses recorded even if one times out."""
    failures = load.result.failures
    for cycle in range(args.cycles):
        ok_before, lost_before = load.result.ok, len(failures)
        try:
            for signum in SIGNALS:
                phase_before = len(failures)
                try:
                    send_and_wait(name, master, signum)
                    wait_for_ok(load, args.between)
                finally:
                    signame = signal.Signals(signum).name.removeprefix("SIG")
                    result.lost_by_signal[signame] += len(failures) - phase_before
        finally:
            lost = len(failures) - lost_before
            result.lost_per_cycle.append(lost)
            done = load.result.ok - ok_before
            result.ok += done
            print(
                f"  {name} cycle {cycle + 1}/{args.cycles}: {done} ok, {lost} lost", file=sys.stderr
            )


def run_server(
    name: str,
    work: Path,
    env: dict[str, str],
    args: argparse.Namespace,
    run: int,
    result: ServerResult,
) -> None:
    """One server: start it, put nginx and the load in front, run the cycles, stop everything."""
    server = None
    try:
        server, path = start_server(name, work, env, run)
        with NginxProxy(work / f"nginx-{name}-{run}", path) as nginx:
            load = KeepAliveLoad(
                nginx.address,
                clients=args.clients,
                path="/echo/",
                body_bytes=BODY_BYTES,
                # A bound far above what the cycles take, in case every wait ran to its limit.
                max_seconds=args.cycles * len(SIGNALS) * (SIGNAL_TIMEOUT_S + PROGRESS_TIMEOUT_S),
            )
            try:
                with load:
                    wait_for_ok(load, args.between)  # every client has its connection
                    warmup_failures = len(load.result.failures)
                    if warmup_failures:
                        result.notes.append(f"{warmup_failures} failure(s) before the 1st signal")
                    run_cycles(name, server.pid, load, args, result)
            finally:
                result.failure_kinds.update(map(failure_kind, load.result.failures))
                result.refused += load.result.refused
                result.upstream_errors += sum(
                    any(error in line for error in UPSTREAM_ERRORS)
                    for line in nginx.error_log().splitlines()
                )
    except CycleError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        result.notes.append(f"run {run + 1}: {exc}")
    finally:
        if server is not None:
            server.stop()


def versions() -> str:
    """nginx's and gunicorn's versions, for the report's heading."""
    nginx = run_bounded([NGINX, "-v"], timeout_s=10).output.strip().rpartition("/")[2]
    found = [f"nginx {nginx}"]
    gunicorn = installed_versions(peers_bin() / "python").get("gunicorn")
    if gunicorn:
        found.append(f"gunicorn {gunicorn}")
    return ", ".join(found)


def render(results: list[ServerResult], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"Requests lost over reload cycles (HUP, TTIN, HUP, TTOU), {WORKERS} workers x "
        f"{THREADS} threads, behind nginx (HTTP/1.1, upstream keepalive 32), {args.clients} "
        f"keep-alive clients POSTing {BODY_BYTES} B to /echo/, at least {args.between} "
        f"requests answered after each signal; {versions()}; "
        f"{datetime.date.today().isoformat()}.",
        "",
        f"`{command}`",
        "",
        "| server | cycles | requests ok | lost (total) | cycles with a loss "
        "| lost per cycle | nginx upstream errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        per_cycle = " ".join(map(str, result.lost_per_cycle)) or "-"
        lines.append(
            f"| {result.name} | {len(result.lost_per_cycle)} | {result.ok:,} "
            f"| {sum(result.lost_per_cycle)} | {sum(1 for n in result.lost_per_cycle if n)} "
            f"| {per_cycle} | {result.upstream_errors} |"
        )
    lines += [
        "",
        "| server | lost after HUP | after TTIN | after TTOU | failures | notes |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        kinds = "; ".join(f"{kind} x{n}" for kind, n in result.failure_kinds.most_common())
        notes = list(result.notes)
        if result.refused:
            notes.append(f"{result.refused} refused connect(s) to nginx")
        by_signal = [result.lost_by_signal[name] for name in SIGNAL_NAMES]
        lines.append(
            f"| {result.name} | {' | '.join(map(str, by_signal))} | {kinds or '-'} "
            f"| {'; '.join(notes) or '-'} |"
        )
    return "\n".join(lines) + "\n"


def shown_command(args: argparse.Namespace) -> str:
    """The command line for the report: the options that change what is measured, no paths."""
    command = ["python benchmarks/reload.py"]
    command += [
        f"--{option} {getattr(args, option)}"
        for option, default in DEFAULTS.items()
        if getattr(args, option) != default
    ]
    if args.servers != list(SERVER_NAMES):
        command.append("--servers " + " ".join(args.servers))
    return " ".join(command)


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=DEFAULTS["cycles"])
    parser.add_argument("--servers", nargs="+", choices=SERVER_NAMES, default=list(SERVER_NAMES))
    parser.add_argument(
        "--clients", type=int, default=DEFAULTS["clients"], help="keep-alive client threads"
    )
    parser.add_argument(
        "--between",
        type=int,
        default=DEFAULTS["between"],
        help="requests answered after a signal before the next",
    )
    parser.add_argument(
        "--repeat", type=int, default=DEFAULTS["repeat"], help="runs, the order alternating"
    )
    parser.add_argument("--output", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the tmp dir (logs)")
    args = parser.parse_args(argv)
    reason = nginx_missing_reason()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    servers = list(dict.fromkeys(args.servers))
    results = {name: ServerResult(name) for name in servers}
    work = Path(tempfile.mkdtemp(prefix="wsgiserve-reload-"))
    try:
        if "gunicorn-gthread" in servers:
            logs = REPO / "benchmarks" / "results" / "logs" / "reload"
            unusable = prepare_peers(project_python(), [SERVERS["gunicorn-gthread"]], logs)
            if unusable:
                print(f"gunicorn-gthread skipped: {unusable['gunicorn-gthread']}", file=sys.stderr)
                results["gunicorn-gthread"].notes.append("not installed")
                servers.remove("gunicorn-gthread")
        env = child_env(
            TESTPROJECT_DB=str(work / "db.sqlite3"),
            TESTPROJECT_STATIC_ROOT=str(work / "static"),
            TESTPROJECT_MEDIA_ROOT=str(work / "media"),
            PYTHONUNBUFFERED="1",
        )
        (work / "static").mkdir()  # empty: /echo/ needs no static file, and ours then says nothing
        migrate = [project_python(), "manage.py", "migrate", "--noinput", "-v0"]
        migrated = run_bounded(migrate, timeout_s=300, cwd=TESTPROJECT, env=env)
        if not migrated.ok:
            print(f"manage.py migrate failed:\n{migrated.output[-2000:]}", file=sys.stderr)
            return 1
        for run in range(args.repeat):
            for name in servers if run % 2 == 0 else servers[::-1]:
                heading = f"[run {run + 1}/{args.repeat}] {name}: {args.cycles} cycles"
                print(heading, file=sys.stderr, flush=True)
                run_server(name, work, env, args, run, results[name])
    except KeyboardInterrupt:
        print("interrupted: the report covers the cycles run so far", file=sys.stderr)
        for result in results.values():
            result.notes.append("interrupted")
    finally:
        stop_all()
        if args.keep:
            print(f"logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report = render(list(results.values()), args, shown_command(args))
    print(report)
    if args.output:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
