from __future__ import annotations

import os
import threading

from django.apps import AppConfig
from django.core.signals import request_finished


class CatalogConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "catalog"
    verbose_name = "Catalog"

    def ready(self) -> None:
        # For django-wsgiserve's tests: one line per request_finished signal, appended to the
        # file named by TESTPROJECT_REQUEST_FINISHED_LOG (when it is set).
        if os.environ.get("TESTPROJECT_REQUEST_FINISHED_LOG"):
            request_finished.connect(_log_request_finished, dispatch_uid="catalog-finished-log")


def _log_request_finished(sender: object, **kwargs: object) -> None:
    path = os.environ["TESTPROJECT_REQUEST_FINISHED_LOG"]
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"finished {threading.current_thread().name}\n")
