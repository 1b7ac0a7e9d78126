"""checks.py: configuration problems surface as wsgiserve.E00x / W00x system checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.checks import registry, run_checks
from django.test import override_settings

from django_wsgiserve import checks

WHITENOISE = "whitenoise.middleware.WhiteNoiseMiddleware"


def _ids(*, deploy: bool = False) -> list[str]:
    messages = run_checks(tags=["wsgiserve"], include_deployment_checks=deploy)
    return [str(message.id) for message in messages]


def test_checks_are_registered_by_the_app():
    registered = registry.registry.get_checks(include_deployment_checks=True)
    assert {checks.check_config, checks.check_static, checks.check_deploy} <= set(registered)


def test_clean_configuration():
    assert _ids(deploy=True) == []


@pytest.mark.parametrize(
    ("wsgiserve", "expected"),
    [
        pytest.param({"THREAD": 4}, ["wsgiserve.E001"], id="unknown-key"),
        pytest.param({"THREADS": "4"}, ["wsgiserve.E002"], id="wrong-type"),
        pytest.param({"BIND": ["nope:"]}, ["wsgiserve.E002"], id="bad-bind"),
        pytest.param({"MAX_REQUESTS_JITTER": 10}, ["wsgiserve.E003"], id="combination"),
        pytest.param(
            {"THREAD": 4, "TIMEOUT": "x"}, ["wsgiserve.E001", "wsgiserve.E002"], id="several"
        ),
        pytest.param(["BIND"], ["wsgiserve.E004"], id="not-a-dict"),
    ],
)
def test_configuration_errors(wsgiserve, expected):
    with override_settings(WSGISERVE=wsgiserve):
        assert _ids() == expected


def test_error_names_option_source_and_suggestion():
    with override_settings(WSGISERVE={"THREAD": 4}):
        (message,) = run_checks(tags=["wsgiserve"])
    assert message.msg == (
        "THREAD (settings.WSGISERVE['THREAD']): unknown option; did you mean 'THREADS'?"
    )
    assert "docs/settings.md" in str(message.hint)
    assert message.is_serious()


def test_environment_is_checked(monkeypatch):
    monkeypatch.setenv("WSGISERVE_THREADS", "lots")
    (message,) = run_checks(tags=["wsgiserve"])
    assert message.id == "wsgiserve.E002"
    assert "(environment WSGISERVE_THREADS)" in message.msg


def test_unknown_environment_variable(monkeypatch):
    monkeypatch.setenv("WSGISERVE_THREAD", "4")
    assert _ids() == ["wsgiserve.E001"]


def test_test_suite_variables_are_not_options(monkeypatch):
    monkeypatch.setenv("WSGISERVE_TEST_FILES_DIR", "/tmp")
    assert _ids() == []


@pytest.mark.parametrize(
    ("wsgiserve", "middleware", "expected"),
    [
        pytest.param({}, [WHITENOISE], ["wsgiserve.W001"], id="static-on-with-whitenoise"),
        pytest.param({"STATIC": False}, [WHITENOISE], [], id="static-off"),
        pytest.param({}, [], [], id="no-whitenoise"),
        pytest.param({"THREADS": "x"}, [WHITENOISE], ["wsgiserve.E002"], id="errors-first"),
    ],
)
def test_whitenoise_middleware_warning(wsgiserve, middleware, expected):
    with override_settings(WSGISERVE=wsgiserve, MIDDLEWARE=middleware):
        assert _ids() == expected


def test_reload_is_a_deploy_warning():
    with override_settings(WSGISERVE={"RELOAD": True}):
        assert _ids() == []
        assert _ids(deploy=True) == ["wsgiserve.W002"]
        (message,) = run_checks(tags=["wsgiserve"], include_deployment_checks=True)
    assert "settings.WSGISERVE['RELOAD']" in message.msg
    assert not message.is_serious()


def test_check_ids_are_unique_and_in_the_settings_page():
    ids = [check.id for check in checks.CHECKS]
    assert ids == sorted(set(ids))
    page = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text("utf-8")
    for check in checks.CHECKS:
        assert f"| `{check.id}` | {check.problem} |" in page
