"""arbiter/process.py: the master's PIDFILE, USER/GROUP and UMASK, on files in tmp_path."""

from __future__ import annotations

import os

import pytest

from django_wsgiserve.arbiter.process import ProcessSetup, read_pid


def test_pidfile_is_written_whole_and_removed(tmp_path):
    path = tmp_path / "server.pid"
    setup = ProcessSetup(pidfile=str(path))
    setup.write_pidfile()
    assert path.read_text() == f"{os.getpid()}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.pid"]  # no temporary left
    setup.remove_pidfile()
    assert not path.exists()


def test_a_pidfile_that_holds_our_pid_is_left_alone(tmp_path):
    """A master re-executed by a configuration reload keeps its pid and its file."""
    path = tmp_path / "server.pid"
    path.write_text(f"{os.getpid()}\n")
    inode = path.stat().st_ino
    ProcessSetup(pidfile=str(path), is_reexecuted=True).write_pidfile()
    assert path.stat().st_ino == inode  # not replaced


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("1\n", id="another-server"),
        pytest.param("garbage", id="not-a-pid"),
    ],
)
def test_a_pidfile_that_is_not_ours_is_not_removed(tmp_path, content):
    path = tmp_path / "server.pid"
    path.write_text(content)
    ProcessSetup(pidfile=str(path)).remove_pidfile()
    assert path.read_text() == content


def test_no_pidfile_writes_nothing(tmp_path):
    setup = ProcessSetup()
    setup.write_pidfile()
    setup.remove_pidfile()
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_pidfile_fails_a_first_start(tmp_path):
    with pytest.raises(FileNotFoundError):
        ProcessSetup(pidfile=str(tmp_path / "missing" / "server.pid")).write_pidfile()


def test_an_unwritable_pidfile_is_logged_by_a_re_executed_master(tmp_path, caplog):
    path = tmp_path / "missing" / "server.pid"
    ProcessSetup(pidfile=str(path), is_reexecuted=True).write_pidfile()
    assert f"Could not write PIDFILE {path}" in caplog.text


def test_read_pid(tmp_path):
    path = tmp_path / "server.pid"
    assert read_pid(str(path)) is None
    path.write_text(" 42\n")
    assert read_pid(str(path)) == 42


def test_prepare_sets_the_umask_and_writes_the_pidfile(tmp_path):
    path = tmp_path / "server.pid"
    previous = os.umask(0o022)
    try:
        ProcessSetup(pidfile=str(path), umask=0o027).prepare()
        assert os.umask(0o022) == 0o027
    finally:
        os.umask(previous)
    assert read_pid(str(path)) == os.getpid()
    assert path.stat().st_mode & 0o777 == 0o640  # written under the new umask
