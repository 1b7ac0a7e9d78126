"""The master process, split by job. ``Arbiter`` (master.py) is what the command runs.

Design note. The management command builds one ``Arbiter`` and calls ``run()``; a worker never
runs code from this package after ``fork()`` (it enters ``worker.run_child``, which ends with
``os._exit``). The modules, each a unit with its own tests:

* ``master.py``: ``Arbiter``, the signal loop and the RUNNING/DRAINING/STOPPED state machine;
  it owns the selector and the listeners and delegates everything else to
* ``workers.py``: ``WorkerTable``, the worker records, forking, heartbeats and deadlines, the
  replacement rule, the accept-balance slots;
* ``reload.py``: ``Reloader``, SIGHUP: the configuration check, the code reload, the re-exec
  and the adoption of the old workers, a reload undone (mechanics in ``reexec.py``);
* ``notifier.py``: ``SystemdNotifier``, what systemd is told and when;
* ``process.py``: ``ProcessSetup``, UMASK, PIDFILE, USER/GROUP, the title, log reopening;
* ``inbox.py``: ``SignalInbox``, the handlers that only record a signal and wake the loop;
* ``health.py`` and ``scrape.py``: METRICS_BIND's listener and what ``/metrics`` answers;
* ``control.py`` and ``status.py``: the control socket (``manage.py servectl``) and its
  ``status`` answer, from the worker table and the shared scoreboard (``scoreboard.py``).

Imports go one way: ``master`` -> ``reload`` -> ``workers`` -> ``inbox``, and ``workers`` ->
``scrape`` <- ``status``; ``notifier``, ``process`` and ``inbox`` import nothing from the
package. Every module logs as
``django_wsgiserve.arbiter``, the name the master's log lines have always carried. The master
is single-threaded (forking a threaded process is unsafe) and must not import Django.
"""

from __future__ import annotations

from django_wsgiserve.arbiter.master import Arbiter, ArbiterState
from django_wsgiserve.arbiter.workers import WorkerState, describe_exit

__all__ = ["Arbiter", "ArbiterState", "WorkerState", "describe_exit"]
