"""Tests of lvsbus.snapshot.SnapshotStore."""
from __future__ import annotations

import os

import pytest
from structlog.testing import capture_logs

from lvsbus.snapshot import SnapshotCorrupt, SnapshotStore


def test_save_and_latest(tmp_path):
    store = SnapshotStore(tmp_path)
    assert store.latest("pulse") is None
    path = store.save("pulse", 10, b"state at 10")
    assert path == os.path.join(tmp_path, "pulse", f"{10:020d}.snap")
    store.save("pulse", 25, b"state at 25")
    store.save("nanny", 7, b"")
    assert store.latest("pulse") == (25, b"state at 25")
    assert store.latest("nanny") == (7, b"")
    assert store.load("pulse", 10) == b"state at 10"
    # no temporary files left behind
    assert sorted(os.listdir(tmp_path / "pulse")) == [f"{10:020d}.snap", f"{25:020d}.snap"]


def test_keeps_newest_k(tmp_path):
    store = SnapshotStore(tmp_path, keep=3)
    for seq in (5, 1, 9, 3, 12):
        store.save("lvsd", seq, b"s%d" % seq)
    assert store.seqs("lvsd") == [5, 9, 12]
    assert store.latest("lvsd") == (12, b"s12")


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "magic"])
def test_corrupt_newest_is_reported_and_skipped(tmp_path, damage):
    store = SnapshotStore(tmp_path)
    store.save("pulse", 1, b"one" * 100)
    newest = store.save("pulse", 2, b"two" * 100)
    data = bytearray(open(newest, "rb").read())
    if damage == "flip":
        data[-10] ^= 0xFF
    elif damage == "truncate":
        data = data[:-1]
    elif damage == "empty":
        data = bytearray()
    else:
        data[0:8] = b"XXXXXXXX"
    with open(newest, "wb") as f:
        f.write(data)
    with capture_logs() as logs:
        assert store.latest("pulse") == (1, b"one" * 100)
    assert [e["event"] for e in logs] == ["snapshot.corrupt_skipped"]
    assert logs[0]["log_level"] == "error" and logs[0]["seq"] == 2
    with pytest.raises(SnapshotCorrupt):
        store.load("pulse", 2)


def test_seq_must_match_file_name(tmp_path):
    store = SnapshotStore(tmp_path)
    p = store.save("pulse", 3, b"x")
    os.rename(p, os.path.join(tmp_path, "pulse", f"{4:020d}.snap"))
    with capture_logs():
        assert store.latest("pulse") is None


def test_stale_temporary_files_are_cleaned(tmp_path):
    store = SnapshotStore(tmp_path)
    store.save("pulse", 1, b"x")
    stale = tmp_path / "pulse" / f".{2:020d}.snap.tmp.999999"
    stale.write_bytes(b"partial")
    assert store.latest("pulse") == (1, b"x")
    store.save("pulse", 3, b"y")
    assert not stale.exists()


def test_bad_names(tmp_path):
    store = SnapshotStore(tmp_path)
    for name in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            store.save(name, 1, b"x")
