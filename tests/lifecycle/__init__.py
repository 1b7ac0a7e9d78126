"""A tiny Django app whose receivers record every lifecycle signal (tests/settings_lifecycle.py)."""
