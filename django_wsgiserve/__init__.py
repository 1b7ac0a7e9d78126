"""django-wsgiserve: a production WSGI server for Django, started by ``manage.py serve``.

Importing this package must not import Django.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
