"""The master process (``Arbiter``), split by job. Start at ``master.py``.

Design note. The management command builds one ``Arbiter`` and calls ``run()``; everything
else here serves it and none of it is used by a worker (which enters through
``worker.run_child`` and never returns into this package). The master is single-threaded
and must not import Django.
"""

from __future__ import annotations

from django_wsgiserve.arbiter.master import Arbiter, ArbiterState
from django_wsgiserve.arbiter.workers import WorkerState, describe_exit

__all__ = ["Arbiter", "ArbiterState", "WorkerState", "describe_exit"]
