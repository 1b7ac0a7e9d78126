#!/usr/bin/env python
"""Django's command-line utility for the django-wsgiserve demo/test project.

Run it from inside this directory, e.g. ``python manage.py serve``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _ensure_django_wsgiserve_importable() -> None:
    """Make the repository checkout importable before ``pip install -e .`` was run."""
    try:
        import django_wsgiserve  # noqa: F401
    except ImportError:
        repo_root = str(Path(__file__).resolve().parent.parent)
        if repo_root not in sys.path:
            sys.path.insert(0, repo_root)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    _ensure_django_wsgiserve_importable()
    try:
        from django.core.management import execute_from_command_line
    except ImportError as exc:
        raise ImportError(
            "Couldn't import Django. Are you sure it's installed and "
            "available on your PYTHONPATH environment variable? Did you "
            "forget to activate a virtual environment?"
        ) from exc
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
