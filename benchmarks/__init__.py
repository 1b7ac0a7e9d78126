"""Benchmarks of django-wsgiserve against its peers (see benchmarks/README.md)."""

from __future__ import annotations
