"""[scaleout] (docs/scaleout.md): the BGP settings and the setups check-config refuses."""
from __future__ import annotations

import pytest

from lvsbus.config import ConfigError, from_dict, loads_toml, render_toml, to_dict
from tests.helpers.lvs_config import lvs_toml, scaleout_toml


def load(text: str):
    return loads_toml(text, "t.toml")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load(text)
    return [f"{i.key}: {i.message}" for i in exc.value.issues]


def test_scaleout_loads_with_defaults_and_round_trips():
    loaded = load(lvs_toml(scheduler="mh") + scaleout_toml())
    so = loaded.config.scaleout
    assert so is not None
    assert (so.local_as, so.peer_as, so.peers) == (65001, 65000, ("10.99.1.100",))
    assert (so.speaker, so.hold_time, so.bfd, so.drain_time) == ("bird", 9, False, 5.0)
    assert from_dict(to_dict(loaded.config)) == loaded.config
    assert loads_toml(render_toml(loaded.config)).config == loaded.config
    assert not loaded.warnings  # the router runs the mode: nothing to warn about


def test_without_scaleout_nothing_changes():
    assert load(lvs_toml(scheduler="wlc")).config.scaleout is None


def test_a_non_consistent_scheduler_is_refused():
    errs = errors(lvs_toml(scheduler="wlc") + scaleout_toml())
    assert any(e.startswith("virtual.web.scheduler") and "mh" in e for e in errs), errs


def test_connection_sync_allows_another_scheduler():
    cfg = load(lvs_toml(scheduler="wlc") + scaleout_toml() + "\n[sync_daemon]\nenabled = true\n").config
    assert cfg.scaleout is not None


@pytest.mark.parametrize("extra, key, words", [
    ("", "scaleout.local_as", "required"),
    ('local_as = 0\n', "scaleout.local_as", "out of range"),
    ('local_as = 65001\nspeaker = "gobgp"\n', "scaleout.speaker", "not supported"),
    ('local_as = 65001\nhold_time = 2\n', "scaleout.hold_time", "3 s"),
    ('local_as = 65001\ncontrol_socket = "run/"\n', "scaleout.control_socket", "a socket's path"),
    ('local_as = 65001\nspeaker = "bird-running"\n', "scaleout.routes_file", "needs routes_file"),
    ('local_as = 65001\nspeaker = "bird-running"\nroutes_file = "routes.conf"\n', "scaleout.routes_file", "absolute"),
    ('local_as = 65001\nroutes_file = "/etc/bird/lvsbus.conf"\n', "scaleout.routes_file", "only with speaker"),
])
def test_bad_settings(extra, key, words):
    text = lvs_toml(scheduler="mh") + scaleout_toml(local_as=None) + extra
    errs = errors(text)
    assert any(e.startswith(key) and words in e for e in errs), errs


def test_peers_must_be_upstream_of_the_vips_family():
    errs = errors(lvs_toml(scheduler="mh") + scaleout_toml(peers=["10.99.1.11"]))
    assert any("is a router of this config" in e for e in errs), errs
    errs = errors(lvs_toml(scheduler="mh") + scaleout_toml(peers=["2001:db8::1"]))
    assert any(e.startswith("virtual.web.address") and "family" in e for e in errs), errs
    errs = errors(lvs_toml(scheduler="mh") + scaleout_toml(peers=[]))
    assert any(e.startswith("scaleout.peers") for e in errs), errs


def test_a_peer_listed_twice_is_refused_however_it_is_spelt():
    errs = errors(lvs_toml(scheduler="mh") + scaleout_toml(
        peers=["10.99.1.100", "2001:db8::1", "2001:DB8:0::1"]))
    assert any(e.startswith("scaleout.peers[2]") and "listed twice" in e for e in errs), errs
    assert not any(e.startswith("scaleout.peers[1]") and "listed twice" in e for e in errs), errs


def test_nat_is_a_warning():
    loaded = load(lvs_toml(scheduler="mh").replace('"direct"', '"nat"') + scaleout_toml())
    assert any(w.key == "virtual.web.forwarding" for w in loaded.warnings)


NOT_AN_IP = ("is not an IP address: give an IPv4 (192.0.2.10) or IPv6 (2001:db8::10) address; host names "
             "are not resolved")


@pytest.mark.parametrize("old, new, issues", [
    ('address = "10.99.1.12"', 'address = "2001:db8::12"',
     ["router.r2.address: 2001:db8::12: scale-out uses a router's address as its BGP router ID, which is an "
      "IPv4 address"]),
    ('service = "lvs"', 'service = "fos"',
     ["scaleout: service = fos has no virtual services to announce: scale-out needs service = lvs"]),
    ('address = "10.99.1.12"', 'address = "10.99.1"', [f"router.r2.address: '10.99.1' {NOT_AN_IP}"]),
    ('address = "10.200.0.1"', 'address = "10.200.0"', [f"virtual.web.address: '10.200.0' {NOT_AN_IP}"]),
    ('peers = ["10.99.1.100"]', 'peers = ["not-an-ip", "10.99.1.100"]',
     [f"scaleout.peers[0]: 'not-an-ip' {NOT_AN_IP}"]),
])
def test_each_mistake_is_said_once(old, new, issues):
    """A router ID that is not IPv4, fos, and an address that is not one: said once (by the
    check of the address itself), not again by the scale-out checks that read it."""
    assert errors((lvs_toml(scheduler="mh") + scaleout_toml()).replace(old, new, 1)) == issues


def test_an_inactive_service_is_not_held_to_scaleout():
    loaded = load(lvs_toml(scheduler="wlc").replace('"direct"', '"nat"\nactive = false') + scaleout_toml())
    assert not loaded.warnings  # its nat forwarding is not warned about: it does not run


def test_the_operators_running_bird():
    so = load(lvs_toml(scheduler="mh") + scaleout_toml(speaker="bird-running", routes_file="/etc/bird/lvsbus.conf")
              ).config.scaleout
    assert so is not None and (so.speaker, so.routes_file) == ("bird-running", "/etc/bird/lvsbus.conf")
