"""project.py: each new worker imports the project's code afresh (SIGHUP reloads it)."""

from __future__ import annotations

import importlib
import sys

from django_wsgiserve.project import fresh_loader


def test_the_loader_reads_project_code_as_it_is_now(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "wsgiserve_probe_app.py"
    module.write_text("GREETING = 'old'\n", "utf-8")
    monkeypatch.delitem(sys.modules, "wsgiserve_probe_app", raising=False)

    def load() -> str:
        greeting: str = importlib.import_module("wsgiserve_probe_app").GREETING
        return greeting

    load_fresh = fresh_loader(load)
    assert load_fresh() == "old"
    module.write_text("GREETING = 'new, and longer'\n", "utf-8")
    assert load() == "old"  # imported once: a plain import keeps the old code
    assert load_fresh() == "new, and longer"
    monkeypatch.delitem(sys.modules, "wsgiserve_probe_app", raising=False)


def test_modules_imported_before_are_kept(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "wsgiserve_probe_settings.py").write_text("VALUE = 1\n", "utf-8")
    before = importlib.import_module("wsgiserve_probe_settings")
    load_fresh = fresh_loader(lambda: importlib.import_module("wsgiserve_probe_settings"))
    assert load_fresh() is before
    monkeypatch.delitem(sys.modules, "wsgiserve_probe_settings", raising=False)
