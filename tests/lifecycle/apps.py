"""Connects the recording receivers (``receivers.py``) the way a project would: in ready()."""

from __future__ import annotations

import os

from django.apps import AppConfig


class LifecycleConfig(AppConfig):
    name = "tests.lifecycle"
    label = "lifecycle"

    def ready(self) -> None:
        from . import receivers

        receivers.connect_all()
        if os.environ.get("WSGISERVE_TEST_READY_THREAD"):
            # The mistake the docs warn about: ready() runs in the master, before fork.
            receivers.start_ticking_thread("ready-thread")
