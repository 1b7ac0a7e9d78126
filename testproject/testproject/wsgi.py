"""WSGI config for the demo project: exposes the module-level ``application``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

# Allow ``django_wsgiserve`` to be imported from the repository checkout when the
# package is not installed (same fallback as manage.py).
try:
    import django_wsgiserve  # noqa: F401
except ImportError:
    _repo_root = str(Path(__file__).resolve().parent.parent.parent)
    if _repo_root not in sys.path:
        sys.path.insert(0, _repo_root)

application = get_wsgi_application()
