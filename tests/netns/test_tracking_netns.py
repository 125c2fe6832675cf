"""Tracking ([track.NAME]) on two real routers in network namespaces: a tracked interface with
weight 0 hands the VIP over at once and takes it back; a tracked script with a weight moves the
role after ``fall`` failures and back after ``rise`` passes (its hysteresis); the what-if replay of
the recorded log under another weight says whether the failover would have happened.

Topology and routers as tests/netns/test_router_netns.py (tests/helpers/routers.py): r1 priority
200, r2 100, keepalive 0.1 s, deadtime 0.5 s; a UDP responder in each router namespace tells the
client who holds the VIP.
"""
from __future__ import annotations

import time

import pytest

from lvsbus.wire import catalog  # noqa: F401
from lvsbus_tools.replay import what_if
from tests.helpers.routers import DEADTIME, clusters, start_responders

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture(scope="module")
def topo(netns_module):  # noqa: F811  (the fixture)
    t = netns_module(routers=2)
    start_responders(t, t.routers)
    return t


@pytest.fixture
def cluster(topo, tmp_path):
    with clusters(topo, tmp_path) as make:
        yield make


@pytest.fixture
def uplink(topo):
    """A veth ``upl0`` in r1's namespace (its peer ``upl0p`` there too: setting the peer down takes
    upl0's carrier away), removed after the test."""
    topo.run("r1", "ip", "link", "del", "upl0", check=False)
    topo.run("r1", "ip", "link", "add", "upl0", "type", "veth", "peer", "name", "upl0p")
    for dev in ("upl0", "upl0p"):
        topo.run("r1", "ip", "link", "set", dev, "up")
    yield "upl0"
    topo.run("r1", "ip", "link", "del", "upl0", check=False)


def changes(c, r: str) -> list[tuple[str, str, str]]:
    return [(e.payload["old"], e.payload["new"], e.payload["reason"]) for e in c.events(r, ("router.role_changed",))]


def test_a_tracked_interface_with_weight_0_hands_over_at_once_and_takes_back(topo, cluster, uplink):
    c = cluster(extra=f'\n[track.uplink]\nkind = "interface"\ndevice = "{uplink}"\non_routers = ["r1"]\n')
    c.start()
    c.wait_steady("r1")
    assert c.probe(1.0) == "r1"
    t0 = time.monotonic()
    topo.run("r1", "ip", "link", "set", "upl0p", "down")  # r1's tracked uplink loses its carrier
    took = c.wait_answer("r2", timeout=DEADTIME * 8)
    t1 = time.monotonic() - t0
    assert changes(c, "r1")[-1] == ("ACTIVE", "FAULT", "track_failed")
    assert ("BACKUP", "ACTIVE", "peer_stepped_down") in changes(c, "r2")  # told at once, no deadtime wait
    assert t1 < DEADTIME + 0.4, f"handed over in {t1:.3f} s: the FAULT heartbeat should beat deadtime"
    assert not topo.has_address("r1", "10.99.1.50")
    prio = c.events("r1", ("pulse.priority_changed",))[-1].payload
    assert prio["fault"] == "uplink" and prio["items"] == [{"track": "uplink", "failed": True, "effect": 0}]
    topo.run("r1", "ip", "link", "set", "upl0p", "up")
    c.wait_answer("r1", timeout=10.0)  # recovered, listened for deadtime, preempted back
    assert ("FAULT", "BACKUP", "track_recovered") in changes(c, "r1")
    assert changes(c, "r1")[-1] == ("BACKUP", "ACTIVE", "preempt")
    assert took < DEADTIME + 0.4


def test_a_track_script_moves_the_role_with_its_weight_and_back_with_hysteresis(topo, cluster, tmp_path):
    flag = tmp_path / "haproxy-down"
    script = tmp_path / "check.sh"
    script.write_text(f"#!/bin/sh\n[ ! -e {flag} ]\n")
    script.chmod(0o755)
    # r1 200 - 150 = 50 under r2's 100 while the script fails; rise 3, fall 2, every 0.1 s
    c = cluster(extra=f'\n[track.haproxy]\nkind = "script"\ncommand = "{script}"\ninterval = 0.1\n'
                      'timeout = 1.0\nrise = 3\nfall = 2\nweight = -150\non_routers = ["r1"]\n')
    c.start()
    c.wait_steady("r1")
    flag.write_text("")
    c.wait_answer("r2", timeout=5.0)
    states = [e.payload["new"] for e in c.events("r1", ("health.track_changed",))]
    assert states[-2:] == ["FALLING", "DOWN"], states  # fall 2: one failure is not yet a verdict
    assert c.events("r1", ("pulse.priority_changed",))[-1].payload["new"] == 50
    assert ("BACKUP", "ACTIVE", "preempt") in changes(c, "r2")
    c.wait(lambda: c.role("r1") == "BACKUP", 3.0, "r1 stepped down")
    assert changes(c, "r1")[-1][2] in ("fenced", "split_brain")  # outranked: the preempting r2 fenced it
    hb = [e for e in c.events("r2", ("pulse.heartbeat_received",)) if e.payload["peer"] == "r1"]
    assert hb[-1].payload["priority"] == 50  # what r2 elects with: the heartbeat carries it
    n_before = len(c.events("r1", ("health.check_results",)))
    flag.unlink()
    c.wait_answer("r1", timeout=5.0)
    states = [e.payload["new"] for e in c.events("r1", ("health.track_changed",))]
    assert states[-2:] == ["RISING", "UP"], states  # rise 3: back only after three passes in a row
    assert c.events("r1", ("pulse.priority_changed",))[-1].payload["new"] == 200
    assert len(c.events("r1", ("health.check_results",))) > n_before
    assert changes(c, "r1")[-1] == ("BACKUP", "ACTIVE", "preempt")

    # what if the weight had been -50 (r1 at 150, still above r2's 100)? r1's recorded inputs
    # replayed under that config: its priority would have stayed above r2's (the peer's own moves
    # are taken as recorded: a what-if replays one router)
    c.stop()
    other = tmp_path / "other.toml"
    other.write_text(c.config.read_text().replace("weight = -150", "weight = -50"))
    rep = what_if(str(c.state("r1") / "log"), str(other))
    removed = [ch["before"].text for ch in rep.changes if ch["change"] == "removed"]
    added = [ch["after"].text for ch in rep.changes if ch["change"] == "added"]
    assert "priority 200 -> 50 (haproxy -150)" in removed, rep.format()
    assert "priority 200 -> 150 (haproxy -50)" in added, rep.format()
