"""Scale-out ([scaleout], docs/scaleout.md) in pulse's core: every router active for every group at
once, the VIPs on the loopback device, no ARP, no fence, no split brain; a router that dies changes
nothing on the others; a graceful stop keeps serving while the bgp core drains; a FAULT steps down
(the bgp core withdraws); a handover is refused. Three cores over the in-memory network."""
from __future__ import annotations

import dataclasses

import lvsbus.wire.catalog  # noqa: F401  (fills the registry)
from lvsbus.config import to_dict
from lvsbus.config.model import Group, Scaleout
from lvsbus_services.pulse.core import ACTIVE, BACKUP, FAULT, STOPPED, PulseCore
from tests.helpers.pulse_cluster import S, Cluster, make_config, of

NAMES = ("lvs1", "lvs2", "lvs3")


def scaleout(groups: bool = False, **kw):
    base = make_config(NAMES)
    cfg = dataclasses.replace(base, scaleout=Scaleout(local_as=65001, peer_as=65000, peers=("10.0.0.254", "2001:db8::fe"), **kw),
                              virtual_services=tuple(dataclasses.replace(v, scheduler="mh")
                                                     for v in base.virtual_services))
    if groups:
        web, tls, web6, off = cfg.virtual_services
        cfg = dataclasses.replace(cfg, groups=(Group("web"), Group("v6")), nat_router=dataclasses.replace(cfg.nat_router, group="web"), virtual_services=(
            dataclasses.replace(web, group="web"), dataclasses.replace(tls, group="web"),
            dataclasses.replace(web6, group="v6"), dataclasses.replace(off, group="web")))
    return cfg


def cluster(cfg) -> Cluster:
    c = Cluster(NAMES, model=to_dict(cfg))
    for n in NAMES:
        c.start(n)
    c.run_until(10 * S)
    return c


def test_every_router_is_active_at_once_with_the_vips_on_lo_and_no_arp_fence_or_election():
    c = cluster(scaleout())
    assert c.roles() == dict.fromkeys(NAMES, ACTIVE)
    for n in NAMES:
        # straight from BACKUP: no listening for an active peer (nothing is elected)
        assert c.nodes[n].role_changes() == [("INIT", "BACKUP", "started"), ("BACKUP", "ACTIVE", "scale_out")]
        (take,) = c.outputs_of(n, "pulse.take_vips")
        assert take[0] == 0  # at the start, not a deadtime later
        assert {(v["address"], v["prefixlen"], v["device"], v["label"]) for v in take[1]["vips"]} == {
            ("10.0.0.100", 32, "lo", None), ("2001:db8::100", 128, "lo", None)}  # no nat_router
        assert take[1]["reason"] == "scale_out"
        for kind in ("pulse.send_garp", "pulse.send_fence", "pulse.split_brain_resolved"):
            assert not c.outputs_of(n, kind), kind
        # a fresh start keeps what a crashed run left on lo: no release before the take
        assert not c.outputs_of(n, "pulse.release_vips")
        assert [p["reason"] for _t, p in c.outputs_of(n, "pulse.start_lvsd")] == ["scale_out"]
        assert c.outputs_of(n, "pulse.send_heartbeat")  # peers still known
    hb = c.outputs_of("lvs1", "pulse.send_heartbeat")[-1][1]
    assert hb["role"] == ACTIVE


def test_a_router_lost_or_back_changes_nothing_on_the_others():
    c = cluster(scaleout())
    before = {n: len(c.trace) for n in NAMES}
    c.crash("lvs2")
    c.run_until(20 * S)
    assert c.roles()["lvs1"] == ACTIVE and c.roles()["lvs3"] == ACTIVE
    for n in ("lvs1", "lvs3"):
        assert [p["peer"] for _t, p in c.outputs_of(n, "pulse.peer_dead")] == ["lvs2"]
        moved = [ty for t, nn, ty, p in c.trace[before[n]:] if nn == n and ty in (
            "router.role_changed", "pulse.take_vips", "pulse.release_vips", "pulse.start_lvsd", "pulse.stop_lvsd",
            "pulse.send_garp", "pulse.send_fence")]
        assert moved == [], (n, moved)
    c.nodes["lvs2"].state = PulseCore().initial()  # back, a new run
    c.crashed.discard("lvs2")
    c.start("lvs2", epoch=2)
    c.run_until(30 * S)
    assert c.roles() == dict.fromkeys(NAMES, ACTIVE)
    assert not [1 for n in NAMES for t, nn, ty, p in c.trace if nn == n and ty == "pulse.split_brain_resolved"]


def test_groups_are_all_active_everywhere():
    c = cluster(scaleout(groups=True))
    for n in NAMES:
        assert {u.name: u.role for u in c.nodes[n].state.units.values()} == {"web": ACTIVE, "v6": ACTIVE}
        assert c.outputs_of(n, "pulse.start_lvsd")[-1][1]["groups"] == ["web", "v6"]


def test_a_graceful_stop_serves_through_the_drain_then_releases():
    cfg = scaleout(drain_time=2.0)
    c = cluster(cfg)
    node = c.nodes["lvs1"]
    out = node.shutdown(11 * S)
    # still serving (its heartbeats go on): the bgp core drains (GRACEFUL_SHUTDOWN) meanwhile
    assert {e.type for e in out} <= {"pulse.send_heartbeat"}
    assert node.role == ACTIVE and node.core.next_deadline(node.state) <= 14 * S
    assert node.timer(12 * S) is not None and node.role == ACTIVE  # heartbeats go on, nothing released
    out = node.timer(14 * S)  # drain_time 2 s + 1 s for the withdrawal to reach the upstream
    assert node.role == STOPPED
    assert [e.type for e in out if e.type in ("pulse.stop_lvsd", "pulse.release_vips")] == \
        ["pulse.stop_lvsd", "pulse.release_vips"]
    assert of(out, "pulse.send_heartbeat")[-1]["leaving"] is True
    # a stop that is not graceful (a restart loop) releases at once
    c2 = cluster(cfg)
    out = c2.nodes["lvs2"].shutdown(11 * S, graceful=False)
    assert c2.nodes["lvs2"].role == STOPPED and of(out, "pulse.release_vips")


def test_a_unit_back_from_fault_during_the_drain_stays_out():
    c = cluster(scaleout(drain_time=5.0))
    node = c.nodes["lvs1"]
    node.shutdown(11 * S)
    node.link("public", False, 12 * S)
    assert node.role == FAULT
    out = node.link("public", True, 13 * S)  # leaving: not active again, nothing taken
    assert node.role == BACKUP and not of(out, "pulse.take_vips")
    node.timer(17 * S)  # drain_time 5 s + 1 after the request
    assert node.role == STOPPED


def test_a_stop_during_the_drain_that_is_not_graceful_stops_at_once():
    c = cluster(scaleout(drain_time=5.0))
    node = c.nodes["lvs3"]
    node.shutdown(11 * S)
    assert node.role == ACTIVE
    out = node.shutdown(12 * S, graceful=False)
    assert node.role == STOPPED and of(out, "pulse.release_vips")
    assert node.core.next_deadline(node.state) is None


def test_a_fault_steps_down_and_recovers_by_itself():
    c = cluster(scaleout())
    node = c.nodes["lvs1"]
    out = node.link("public", False, 11 * S)
    assert node.role == FAULT and of(out, "pulse.release_vips") and of(out, "pulse.stop_lvsd")
    out = node.link("public", True, 12 * S)
    assert node.role == ACTIVE  # back at once: nobody to listen for
    assert [(p["old"], p["new"], p["reason"]) for p in of(out, "router.role_changed")] == [
        (FAULT, BACKUP, "link_up"), (BACKUP, ACTIVE, "scale_out")]
    assert of(out, "pulse.take_vips") and not of(out, "pulse.send_garp")


def test_a_handover_is_refused_and_a_fence_from_a_peer_not_in_scale_out_is_ignored():
    c = cluster(scaleout())
    node = c.nodes["lvs1"]
    out = node.feed("operator.handover_requested", {"by": "ada", "via": "cli", "reason": "", "hold_s": 60}, 11 * S,
                    source="cli")
    assert of(out, "pulse.handover_refused") == [{"by": "ada", "role": ACTIVE, "reason": "scale_out"}]
    out = node.fence("lvs2", 12 * S, seq=10_000)
    assert node.role == ACTIVE and not of(out, "pulse.release_vips")


def test_a_snapshot_in_the_drain_restores_it():
    c = cluster(scaleout(drain_time=2.0))
    node = c.nodes["lvs1"]
    node.shutdown(11 * S)
    core = PulseCore()
    st = core.restore(core.snapshot(node.state))
    assert st.stop_at == node.state.stop_at == 14 * S
    assert st.settings == node.state.settings and st.settings.scaleout
    old = core.snapshot(node.state)
    del old["stop_at"]  # a version-10 snapshot
    assert core.restore(core.snapshot_upcasters[10](old)).stop_at is None
