"""Empty URLconf for the server's own test settings (the tests serve plain WSGI apps)."""

from __future__ import annotations

from typing import Any

urlpatterns: list[Any] = []
