"""Tests of lvsbus.runtime.snapshot.SnapshotStore."""
from __future__ import annotations

import os

import pytest
from structlog.testing import capture_logs

from lvsbus.runtime.snapshot import SnapshotCorrupt, SnapshotStore


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


class _Recorder:
    """A logger that keeps what it is told (structlog's capture_logs misses a logger another test
    has cached)."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __getattr__(self, level):
        return lambda event, **kw: self.events.append({"event": event, "log_level": level, **kw})


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "magic"])
def test_corrupt_newest_is_reported_and_skipped(tmp_path, damage):
    rec = _Recorder()
    store = SnapshotStore(tmp_path, logger=rec)
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
    assert store.latest("pulse") == (1, b"one" * 100)
    logs = rec.events
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


# -- versioned core snapshots (lvsbus.runtime.snapshot.encode_state / decode_state) -------------------

def _pulse_with_state():
    """pulse's core after an election between two routers (peers, settings, timers all set)."""
    from tests.helpers.pulse_cluster import Cluster

    c = Cluster()
    c.start("lvs1")
    c.start("lvs2")
    c.run_until(3_000_000_000)
    node = c.nodes["lvs1"]
    return node.core, node.state


def test_a_snapshot_round_trips_with_its_core_and_version(tmp_path):
    import msgpack

    from lvsbus.runtime.snapshot import decode_state, encode_state

    core, state = _pulse_with_state()
    body = encode_state(core, state)
    env = msgpack.unpackb(body, raw=False, strict_map_key=False)
    assert env["core"] == "pulse" and env["v"] == core.snapshot_version == 12
    assert core.snapshot(decode_state(core, body)) == core.snapshot(state)


def test_a_snapshot_of_the_release_before_versioning_is_upcast(tmp_path):
    """File format 1 held the core's data alone; pulse wrote {"v": 1, "state": ...}, before
    reannounce_after existed without it: read as pulse's version 1 and upcast, never guessed."""
    import msgpack

    from lvsbus.runtime.snapshot import SnapshotStore, decode_state

    from tests.helpers.pulse_cluster import v8_snapshot

    core, state = _pulse_with_state()
    d = core.snapshot(state)
    old = {k: v for k, v in v8_snapshot(d).items() if k != "reannounce_after"}
    store = SnapshotStore(tmp_path)
    store.save("pulse", 9, msgpack.packb({"v": 1, "state": old}, use_bin_type=True), file_format=1)
    seq, fmt, body = next(store.valid("pulse"))
    assert (seq, fmt) == (9, 1)
    restored = decode_state(core, body, fmt)
    # (v5 added own_clock, v7 the rules: an old snapshot is of a run under rules 2; v12 when a
    # listen began and when each peer last told its roles, unknown in an old one)
    units = {"default": {**d["units"]["default"], "reannounce_after": {}, "listen_since": None}}
    peers = {n: [*p[:9], None] for n, p in d["peers"].items()}
    assert core.snapshot(restored) == {**d, "units": units, "peers": peers, "own_clock": False, "rules": 2}


@pytest.mark.parametrize("env, why", [
    ({"core": "pulse", "v": 13, "state": {}}, "version 13"),
    ({"core": "pulse", "v": 0, "state": {}}, "version 0"),
    ({"core": "pulse", "v": True, "state": {}}, "not an integer"),
    ({"core": "nanny", "v": 1, "state": {}}, "not of 'pulse'"),
    ({"v": 2, "state": {}}, "not a versioned snapshot"),
])
def test_an_unknown_or_foreign_snapshot_is_refused(env, why):
    import msgpack

    from lvsbus.runtime.snapshot import SnapshotVersionError, decode_state
    from lvsbus_services.pulse.core import PulseCore

    with pytest.raises(SnapshotVersionError, match=why):
        decode_state(PulseCore(), msgpack.packb(env, use_bin_type=True))
