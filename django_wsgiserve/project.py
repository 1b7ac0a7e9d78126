"""The Django project's own code, imported afresh by each new worker so that SIGHUP reloads it.

Design note: the master imports Django's settings and runs the system checks, which import the
URLconf and the views; a worker forked from it would inherit those modules as they were at
start. ``fresh_loader()`` notes what is imported when it is called (just after Django's setup),
and the loader it returns, called in each new worker, first drops from ``sys.modules`` the
project's modules imported since, then loads the application: importing it reads their current
code. Library code (the standard library, site-packages, Django, django_wsgiserve) stays.

Runs in the command's process (``fresh_loader``) and in a freshly forked worker (the loader).
Imports Django (the URL resolver caches): a Django-facing module, like ``static``.
"""

from __future__ import annotations

import os
import site
import sys
from typing import TYPE_CHECKING, TypeVar

from django.urls import clear_url_caches

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["forget_project_modules", "fresh_loader"]

_T = TypeVar("_T")


def fresh_loader(load: Callable[[], _T]) -> Callable[[], _T]:
    """``load`` (which imports the application), preceded in each call by forgetting the
    project modules imported after this call; see the module notes."""
    keep = frozenset(sys.modules)

    def load_fresh() -> _T:
        forget_project_modules(keep)
        return load()

    return load_fresh


def forget_project_modules(keep: frozenset[str]) -> None:
    """Drop from ``sys.modules`` the modules not in ``keep`` whose file lives outside
    ``sys.prefix``/``sys.base_prefix`` and site-packages (nor Django's or ours), and Django's
    URL resolver caches that hold on to them."""
    library_dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()}
    library_prefixes = tuple(os.path.join(os.path.realpath(path), "") for path in library_dirs)
    for name, module in list(sys.modules.items()):
        if name in keep or name.partition(".")[0] in ("django", "django_wsgiserve"):
            continue
        path = getattr(module, "__file__", None)
        if path and not os.path.realpath(path).startswith(library_prefixes):
            del sys.modules[name]
    clear_url_caches()
