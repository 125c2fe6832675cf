"""pulse's track watch, pure (services/pulse/watch.py): which tracked items pulse's shell watches,
what a tracked file's bytes mean, and which pulse.track_observed a poll publishes."""
from __future__ import annotations

import pytest

from lvsbus.wire import catalog  # noqa: F401  (declares the events)
from lvsbus.wire.events import REGISTRY
from lvsbus_services.pulse.shell import read_track_file
from lvsbus_services.pulse.watch import (
    FILE_READ_MAX, VALUE_MAX, VALUE_MIN, Watched, file_observation, interface_observation, track_changes,
    watched_items,
)


def _track(name, kind, **kw):
    t = {"name": name, "kind": kind, "weight": 0, "reverse": False, "device": None, "command": None,
         "interval": 1.0, "timeout": 1.0, "rise": 1, "fall": 1, "path": None, "on_routers": []}
    t.update(kw)
    return t


def test_watched_items_are_this_routers_interfaces_and_files():
    model = {"tracks": [
        _track("uplink", "interface", device="eth2"),
        _track("haproxy", "script", command="pidof haproxy"),  # nanny's
        _track("maint", "file", path="/etc/lvsbus/adjust", on_routers=["r1"]),
        _track("other", "interface", device="eth3", on_routers=["r2"]),  # not r1's
    ]}
    assert watched_items(model, "r1") == (Watched("uplink", "interface", "eth2"),
                                          Watched("maint", "file", "/etc/lvsbus/adjust"))
    assert watched_items(model, "r2") == (Watched("uplink", "interface", "eth2"),
                                          Watched("other", "interface", "eth3"))


def test_a_model_from_before_tracking_watches_nothing():
    assert watched_items({"heartbeat": {}}, "r1") == ()


def test_interface_observation():
    assert interface_observation(True, True) == (1, "up")
    assert interface_observation(True, False) == (0, "down")
    assert interface_observation(False, False) == (0, "no such device")


@pytest.mark.parametrize("data, want", [
    (b"-200\n", (-200, "-200")),
    (b"  +7 \t\n", (7, "7")),
    (b"0", (0, "0")),
    (b"", (0, "empty")),
    (b" \n\n", (0, "empty")),
    (b"12abc", (0, "not a number")),
    (b"1.5", (0, "not a number")),
    (b"1_000", (0, "not a number")),  # Python's int() would take it; keepalived would not
    (b"\xd9\xa3", (0, "not a number")),  # a non-ASCII digit
    (b"- 3", (0, "not a number")),
    (b"99999999999", (VALUE_MAX, f"99999999999 (clamped to {VALUE_MAX})")),
    (b"-99999999999", (VALUE_MIN, f"-99999999999 (clamped to {VALUE_MIN})")),
    (b"1" * (FILE_READ_MAX + 1), (0, f"not a number (over {FILE_READ_MAX} bytes)")),
])
def test_file_observation(data, want):
    assert file_observation(data) == want


def test_a_missing_or_unreadable_file_reads_0():
    assert file_observation(None) == (0, "missing")
    assert file_observation(None, "Permission denied") == (0, "unreadable: Permission denied")
    value, detail = file_observation(None, "x" * 500)
    assert value == 0 and len(detail) <= 128


def test_every_observation_fits_the_schema():
    for obs in [file_observation(b"9" * 64), file_observation(None, "y\n" * 300), interface_observation(False, False)]:
        REGISTRY.validate("pulse.track_observed", 1, {"track": "t", "kind": "file", "value": obs[0], "detail": obs[1]})


def test_the_first_poll_publishes_every_item_then_only_changes():
    up, f = Watched("uplink", "interface", "eth2"), Watched("maint", "file", "/x")
    known: dict = {}
    first = track_changes(known, (up, f), {up: (1, "up"), f: (0, "missing")})
    assert first == [{"track": "uplink", "kind": "interface", "value": 1, "detail": "up"},
                     {"track": "maint", "kind": "file", "value": 0, "detail": "missing"}]
    assert track_changes(known, (up, f), {up: (1, "up"), f: (0, "missing")}) == []
    assert track_changes(known, (up, f), {up: (0, "down"), f: (-200, "-200")}) == [
        {"track": "uplink", "kind": "interface", "value": 0, "detail": "down"},
        {"track": "maint", "kind": "file", "value": -200, "detail": "-200"}]
    # the detail alone changed: told (news for people; the core sees 0 both times)
    assert track_changes(known, (up, f), {up: (0, "no such device"), f: (-200, "-200")}) == [
        {"track": "uplink", "kind": "interface", "value": 0, "detail": "no such device"}]


def test_an_item_not_observed_this_poll_is_skipped_and_kept():
    up, f = Watched("uplink", "interface", "eth2"), Watched("maint", "file", "/x")
    known: dict = {}
    track_changes(known, (up, f), {up: (1, "up"), f: (3, "3")})
    assert track_changes(known, (up, f), {f: (3, "3")}) == []  # netlink failed this time
    assert track_changes(known, (up, f), {up: (1, "up"), f: (3, "3")}) == []


def test_a_reload_that_adds_or_retargets_an_item_publishes_it_once_and_forgets_the_gone():
    up, f = Watched("uplink", "interface", "eth2"), Watched("maint", "file", "/x")
    known: dict = {}
    track_changes(known, (up, f), {up: (1, "up"), f: (3, "3")})
    up3, new = Watched("uplink", "interface", "eth3"), Watched("extra", "file", "/y")
    got = track_changes(known, (up3, new), {up3: (1, "up"), new: (0, "missing")})
    assert [p["track"] for p in got] == ["uplink", "extra"]
    assert set(known) == {up3, new}
    # an item that comes back after a reload dropped it is published again
    assert [p["track"] for p in track_changes(known, (up3, new, f), {up3: (1, "up"), new: (0, "missing"), f: (3, "3")})] == ["maint"]


def test_read_track_file(tmp_path):
    p = tmp_path / "adjust"
    assert read_track_file(str(p)) == (None, None)
    p.write_bytes(b"-5\n" + b" " * 200)
    data, err = read_track_file(str(p))
    assert err is None and data == b"-5\n" + b" " * (FILE_READ_MAX - 2)
    assert file_observation(data, err)[1].startswith("not a number")  # too long to be only a number
    p.write_bytes(b"42\n")
    assert file_observation(*read_track_file(str(p))) == (42, "42")
    data, err = read_track_file(str(tmp_path))  # a directory
    assert data is None and err
    assert file_observation(data, err)[1].startswith("unreadable: ")
