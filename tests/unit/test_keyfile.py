"""lvsbus.host.keyfile.load_key: the one reader of the heartbeat key file (pulse, the router's start
and reload checks, check-config). Every problem is one line that starts with the file's path and
says what to do; ``certain`` is False only when this user may not look (check-config as non-root)."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from lvsbus.config.keyrules import MIN_SECRET
from lvsbus.host.keyfile import KeyFile, load_key


@contextlib.contextmanager
def another_user():
    """Run the body as a user the test's files deny: as root, effective uid/gid nobody (in this
    process, restored after); otherwise this user already is one (the files have mode 0000)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_a_good_key_file_gives_its_whole_content(tmp_path):
    key = tmp_path / "hb.key"
    key.write_bytes(b"  " + b"k" * MIN_SECRET + b"\n")
    key.chmod(0o600)
    assert load_key(str(key)) == KeyFile(b"  " + b"k" * MIN_SECRET + b"\n", None, True)
    key.chmod(0o400)
    assert load_key(str(key)).secret is not None


def test_a_missing_file_is_named_with_the_command_that_makes_one(tmp_path):
    gone = tmp_path / "gone.key"
    assert load_key(str(gone)) == KeyFile(None, (
        f"{gone}: heartbeat key file: No such file or directory; create one with: lvsbus keys heartbeat "
        f"--out {gone} (then copy that same file to every router)"), True)


def test_a_file_group_or_others_may_access_is_refused_with_the_chmod(tmp_path):
    key = tmp_path / "hb.key"
    key.write_bytes(b"k" * 64)
    for mode in (0o640, 0o604, 0o660, 0o700 | 0o001):
        key.chmod(mode)
        assert load_key(str(key)) == KeyFile(None, (
            f"{key}: heartbeat key file has mode {mode:04o}: it must be 0600 or stricter (chmod 600 {key})"), True)


def test_a_short_secret_is_refused_with_the_command_that_replaces_it(tmp_path):
    key = tmp_path / "hb.key"
    key.write_bytes(b"\n  " + b"k" * (MIN_SECRET - 1) + b"  \n")  # whitespace around does not count
    key.chmod(0o600)
    assert load_key(str(key)) == KeyFile(None, (
        f"{key}: heartbeat key file holds {MIN_SECRET - 1} bytes: at least {MIN_SECRET} bytes are needed; "
        f"replace it with: lvsbus keys heartbeat --force --out {key} (then copy that same file to every router)"),
        True)


def test_a_directory_is_refused_with_the_reason(tmp_path):
    d = tmp_path / "hb.key"
    d.mkdir(mode=0o700)
    assert load_key(str(d)) == KeyFile(None, f"{d}: heartbeat key file: Is a directory", True)


def test_a_file_this_user_may_not_read_or_reach_is_not_judged():
    """check-config as a non-root user: not an error (root may well read it), and no 'create one'
    hint for a file that may exist (a stat refused for a directory's mode said so before)."""
    top = tempfile.mkdtemp(prefix="keyfile-")  # not under pytest's tmp_path: that one is root's only
    os.chmod(top, 0o755)
    unreadable = os.path.join(top, "hb.key")
    shut = os.path.join(top, "shut")
    try:
        with open(unreadable, "wb") as fh:
            fh.write(b"k" * 64)
        os.chmod(unreadable, 0o000)
        os.mkdir(shut)
        with open(os.path.join(shut, "hb.key"), "wb") as fh:
            fh.write(b"k" * 64)
        os.chmod(shut, 0o000)
        with another_user():
            got = load_key(unreadable), load_key(os.path.join(shut, "hb.key"))
    finally:
        if os.path.isdir(shut):
            os.chmod(shut, 0o700)
        shutil.rmtree(top)
    assert got[0] == KeyFile(None, (f"{unreadable}: heartbeat key file: not readable by this user, its content "
                                    "was not checked (run as root)"), False)
    assert got[1] == KeyFile(None, (f"{shut}/hb.key: heartbeat key file: not reachable by this user (Permission "
                                    "denied), its mode and content were not checked (run as root)"), False)


def test_a_fifo_is_refused_at_once_instead_of_blocking_the_read(tmp_path):
    """A FIFO would block ``open``/``read`` forever: router start, pulse and check-config would hang."""
    path = tmp_path / "hb.key"
    os.mkfifo(path, 0o600)
    k = load_key(str(path))
    assert k.secret is None and k.problem == (
        f"{path}: heartbeat key file: not a regular file (a FIFO); replace it with: lvsbus keys heartbeat "
        f"--force --out {path} (then copy that same file to every router)")
