"""Run the demo project's own checks and Django test suite (testproject/).

testproject has its own settings module, so its tests cannot run inside this
pytest process (configured with tests.settings): they run in subprocesses of
``manage.py`` from the testproject directory, with the database, static root
and media root in pytest's tmp_path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTPROJECT_DIR = REPO_ROOT / "testproject"

pytestmark = pytest.mark.slow


def manage(
    env: dict[str, str], *args: str, timeout: float = 100
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=TESTPROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"manage.py {' '.join(args)} exited with {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
    return result


@pytest.fixture
def testproject_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    # pytest-django exported DJANGO_SETTINGS_MODULE=tests.settings; manage.py must
    # pick its own settings.
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("TESTPROJECT_DEBUG", None)
    env.update(
        {
            "TESTPROJECT_DB": str(tmp_path / "db.sqlite3"),
            "TESTPROJECT_STATIC_ROOT": str(tmp_path / "staticfiles"),
            "TESTPROJECT_MEDIA_ROOT": str(tmp_path / "media"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


def test_testproject_checks_and_tests(testproject_env: dict[str, str], tmp_path: Path) -> None:
    source_db_existed = (TESTPROJECT_DIR / "db.sqlite3").exists()
    manage(testproject_env, "migrate", "--noinput")
    assert (tmp_path / "db.sqlite3").is_file()

    manage(testproject_env, "collectstatic", "--noinput")
    manifest = tmp_path / "staticfiles" / "staticfiles.json"
    assert manifest.is_file()
    assert "css/site.css" in manifest.read_text()
    # whitenoise's storage pre-compresses the files.
    assert list((tmp_path / "staticfiles" / "bench").glob("large.*.js.gz"))

    manage(testproject_env, "check")
    deploy = manage(testproject_env, "check", "--deploy")
    assert "ERRORS" not in deploy.stderr + deploy.stdout

    manage(testproject_env, "createdemouser")
    manage(testproject_env, "createdemouser", "--password", "other")

    result = manage(testproject_env, "test", "catalog", "--noinput", "-v", "2")
    assert "OK" in result.stderr
    # The environment variables were honoured: no database appeared in the source tree.
    assert (TESTPROJECT_DIR / "db.sqlite3").exists() == source_db_existed
