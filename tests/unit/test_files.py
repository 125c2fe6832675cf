"""lvsbus.host.files.write_atomically: the one way lvsbus replaces a file whole (snapshots, the
heartbeat key, pulse's epoch, BIRD's config, the console's config and password files)."""
import os

import pytest

from lvsbus.host import files


def test_replaces_the_content_and_keeps_the_mode(tmp_path):
    p = tmp_path / "f"
    p.write_text("old")
    os.chmod(p, 0o640)
    files.write_atomically(str(p), "new\n")
    assert p.read_text() == "new\n" and os.stat(p).st_mode & 0o7777 == 0o640
    files.write_atomically(str(p), b"\x00bytes")
    assert p.read_bytes() == b"\x00bytes"


def test_a_new_file_is_0644_or_exactly_the_mode_given_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        files.write_atomically(str(tmp_path / "a"), "x")
        files.write_atomically(str(tmp_path / "b"), "x", 0o600)
        files.write_atomically(str(tmp_path / "c"), "x", 0o664)
    finally:
        os.umask(old)
    assert [os.stat(tmp_path / n).st_mode & 0o7777 for n in "abc"] == [0o644, 0o600, 0o664]


def test_a_failure_leaves_the_file_as_it_was_and_no_temporary_file(tmp_path, monkeypatch):
    p = tmp_path / "f"
    p.write_text("old")

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        files.write_atomically(str(p), "new")
    assert p.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["f"]


def test_the_temporary_file_is_named_for_the_target_and_the_process(tmp_path):
    assert files.tmp_path(str(tmp_path / "0001.snap")) == str(tmp_path / f".0001.snap.tmp.{os.getpid()}")
