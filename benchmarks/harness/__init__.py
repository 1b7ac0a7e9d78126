"""Stdlib-only benchmark harness: starts servers, drives wrk, writes CSV and Markdown.

Nothing here imports Django or any third-party package: the servers and the in-process
measurement run in their own interpreters (the project's and benchmarks/.venv-peers).
"""

from __future__ import annotations
