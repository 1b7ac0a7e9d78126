"""testproject's settings with WhiteNoiseMiddleware kept in MIDDLEWARE, and an optional extra
static directory (TEST_EXTRA_STATIC_DIR), for tests/integration/test_static.py.

The one variant not based on tests.settings: the static-file tests need the realistic project
(its collected static files and templates), so the server runs from testproject/.
"""

from __future__ import annotations

import os

from testproject.settings import *  # noqa: F403
from testproject.settings import MIDDLEWARE, STATICFILES_DIRS

MIDDLEWARE = [MIDDLEWARE[0], "whitenoise.middleware.WhiteNoiseMiddleware", *MIDDLEWARE[1:]]
if os.environ.get("TEST_EXTRA_STATIC_DIR"):
    STATICFILES_DIRS = [*STATICFILES_DIRS, os.environ["TEST_EXTRA_STATIC_DIR"]]
