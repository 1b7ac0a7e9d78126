"""Tiny WSGI applications and settings used only by the benchmarks."""

from __future__ import annotations
