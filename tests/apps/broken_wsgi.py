"""A WSGI module whose import fails, as a project with a typo would (boot-failure tests).

Never listed in the router: only ``tests.settings_broken_wsgi`` points WSGI_APPLICATION here.
"""

from __future__ import annotations

import tests.apps.no_such_module_for_wsgiserve_tests  # noqa: F401  # ModuleNotFoundError

application = None
