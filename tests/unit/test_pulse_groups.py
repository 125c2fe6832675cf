"""Failover groups ([group.NAME], keepalived's VRRP instances): one role machine a group in pulse's
core, the active/active pair, fences and lvsd naming the groups, sync groups elected as one,
tracking per group, reloads that add or remove a group; on cores wired over an in-memory network
whose heartbeats go through the wire format (version 2: every group's role and priority)."""
from __future__ import annotations

import dataclasses

import lvsbus.wire.catalog  # noqa: F401  (fills the registry)
from lvsbus.config import Track, TrackKind, to_dict
from lvsbus.config.model import Group
from lvsbus_services.pulse import wire
from lvsbus_services.pulse.core import ACTIVE, BACKUP, FAULT, PulseCore
from tests.helpers.pulse_cluster import KEY, S, Cluster, config_payload, make_config


def grouped(sync: bool = False, tracks: tuple = (), **heartbeat):
    """lvs1 and lvs2: web ranks lvs1 first (200/100), mail lvs2 first (200/100); web-tls joins web's VIP."""
    base = make_config(**heartbeat)
    vs = base.virtual_services
    web, tls, web6, off = vs
    mail = dataclasses.replace(web6, name="mail", group="mail")
    return dataclasses.replace(
        base,
        groups=(Group("web", priority=(("lvs1", 200), ("lvs2", 100)), sync_group="both" if sync else None),
                Group("mail", priority=(("lvs1", 100), ("lvs2", 200)), sync_group="both" if sync else None)),
        virtual_services=(dataclasses.replace(web, group="web"), dataclasses.replace(tls, group="web"), mail,
                          dataclasses.replace(off, group="web")),
        nat_router=dataclasses.replace(base.nat_router, group="web"),
        tracks=tracks,
    )


def cluster(cfg) -> Cluster:
    c = Cluster(model=to_dict(cfg))
    c.start("lvs1")
    c.start("lvs2")
    c.run_until(10 * S)
    return c


def unit_roles(c: Cluster) -> dict[str, dict[str, str]]:
    return {n: {u.name: u.role for u in node.state.units.values()} for n, node in c.nodes.items()}


def changes(c: Cluster, name: str, group: str) -> list[tuple[str, str, str]]:
    return [(p["old"], p["new"], p["reason"]) for _t, p in c.outputs_of(name, "router.role_changed")
            if p["group"] == group]


def test_the_active_active_pair_each_router_active_for_its_group():
    c = cluster(grouped())
    assert unit_roles(c) == {"lvs1": {"web": ACTIVE, "mail": BACKUP}, "lvs2": {"web": BACKUP, "mail": ACTIVE}}
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": ACTIVE}  # each router, as a whole, is active for something
    took1 = [p["vips"] for _t, p in c.outputs_of("lvs1", "pulse.take_vips")]
    took2 = [p["vips"] for _t, p in c.outputs_of("lvs2", "pulse.take_vips")]
    assert {v["address"] for vips in took1 for v in vips} == {"10.0.0.100", "192.168.100.254"}
    assert {v["address"] for vips in took2 for v in vips} == {"2001:db8::100"}
    # lvsd programs the groups held; heartbeats carry both groups (wire version 2)
    assert [p["groups"] for _t, p in c.outputs_of("lvs1", "pulse.start_lvsd")] == [["web"]]
    assert [p["groups"] for _t, p in c.outputs_of("lvs2", "pulse.start_lvsd")] == [["mail"]]
    hb = c.outputs_of("lvs1", "pulse.send_heartbeat")[-1][1]
    assert hb["groups"] == [{"group": "web", "role": ACTIVE, "priority": 200},
                            {"group": "mail", "role": BACKUP, "priority": 100}]
    assert wire.datagram_of(KEY, "pulse.send_heartbeat", hb)[4] == 2


def test_a_router_lost_the_other_holds_both_and_gives_back_only_its_group():
    c = cluster(grouped())
    c.crash("lvs1")
    c.run_until(20 * S)
    assert unit_roles(c)["lvs2"] == {"web": ACTIVE, "mail": ACTIVE}
    assert [p["groups"] for _t, p in c.outputs_of("lvs2", "pulse.start_lvsd")][-1] == ["web", "mail"]
    mail_before = changes(c, "lvs2", "mail")
    # lvs1 comes back (a new epoch): it takes web back by preemption, mail is not disturbed
    c.nodes["lvs1"].state = PulseCore().initial()
    c.crashed.discard("lvs1")
    c.start("lvs1", epoch=2)
    c.run_until(40 * S)
    assert unit_roles(c) == {"lvs1": {"web": ACTIVE, "mail": BACKUP}, "lvs2": {"web": BACKUP, "mail": ACTIVE}}
    assert changes(c, "lvs2", "mail") == mail_before  # no role change of mail on lvs2
    assert changes(c, "lvs2", "web")[-1][:2] == (ACTIVE, BACKUP)
    fences = [p for _t, p in c.outputs_of("lvs1", "pulse.send_fence")]
    assert fences and all(p["groups"] == ["web"] for p in fences)  # a fence names the group taken
    assert [p["groups"] for _t, p in c.outputs_of("lvs2", "pulse.start_lvsd")][-1] == ["mail"]
    assert not [p for _t, p in c.outputs_of("lvs2", "pulse.stop_lvsd")]  # lvsd kept running for mail


def test_sync_groups_are_elected_as_one_and_move_together():
    # web ranks lvs1 first, mail lvs2: as one unit, each router's priority is its lowest (100 and 100),
    # so the higher address wins both; a tracked item of web alone moves the whole unit
    cfg = grouped(sync=True, tracks=(Track("uplink", TrackKind.INTERFACE, device="eth2", groups=("web",)),))
    c = cluster(cfg)
    assert list(c.nodes["lvs1"].state.units) == ["web"]  # one unit, named for its first group
    holder = "lvs2"  # 10.0.0.2 > 10.0.0.1 at equal priority
    assert {n: c.nodes[n].state.unit("web").role for n in c.nodes} == {holder: ACTIVE, "lvs1": BACKUP}
    assert {p["group"] for _t, p in c.outputs_of(holder, "router.role_changed")} == {"web"}
    took = {v["address"] for _t, p in c.outputs_of(holder, "pulse.take_vips") for v in p["vips"]}
    assert took == {"10.0.0.100", "192.168.100.254", "2001:db8::100"}  # both groups' VIPs
    hb = c.outputs_of(holder, "pulse.send_heartbeat")[-1][1]
    assert [(g["group"], g["role"]) for g in hb["groups"]] == [("web", ACTIVE), ("mail", ACTIVE)]
    c.observe(holder, "uplink", 0)  # weight 0: FAULT, for the unit: both groups leave
    c.run_until(12 * S)
    assert c.nodes[holder].state.unit("web").role == FAULT
    assert c.nodes["lvs1"].state.unit("web").role == ACTIVE


def test_tracking_moves_only_the_groups_it_names():
    cfg = grouped(tracks=(Track("uplink", TrackKind.INTERFACE, weight=-150, device="eth2", groups=("web",)),))
    c = cluster(cfg)
    c.observe("lvs1", "uplink", 0)  # web 200 -> 50 on lvs1: lvs2 (100) preempts web
    c.run_until(20 * S)
    assert unit_roles(c) == {"lvs1": {"web": BACKUP, "mail": BACKUP}, "lvs2": {"web": ACTIVE, "mail": ACTIVE}}
    prio = [p for _t, p in c.outputs_of("lvs1", "pulse.priority_changed")]
    assert {p["group"] for p in prio} == {"web"} and prio[-1]["new"] == 50
    hb = c.outputs_of("lvs1", "pulse.send_heartbeat")[-1][1]
    assert [g["priority"] for g in hb["groups"]] == [50, 100]


def test_a_reload_adds_a_group_that_starts_listening_and_removes_one_whose_vips_go():
    c = cluster(grouped())
    cfg = grouped()
    third = dataclasses.replace(cfg.virtual_services[0], name="dns", address="10.0.0.53", label="eth0:3", group="dns")
    added = dataclasses.replace(cfg, groups=(*cfg.groups, Group("dns", priority=(("lvs1", 50), ("lvs2", 150)))),
                                virtual_services=(*cfg.virtual_services, third))
    for n in c.nodes:
        c._push(c.now, n, "config.loaded", config_payload(n, to_dict(added), reload=True))
    c.run_until(20 * S)
    assert unit_roles(c)["lvs2"]["dns"] == ACTIVE and unit_roles(c)["lvs1"]["dns"] == BACKUP
    assert changes(c, "lvs2", "dns")[:2] == [("INIT", BACKUP, "started"), (BACKUP, ACTIVE, "no_active")]
    # mail taken away: lvs2 releases its VIP, lvsd keeps dns only
    gone = dataclasses.replace(added, groups=(added.groups[0], added.groups[2]),
                               virtual_services=tuple(v for v in added.virtual_services if v.group != "mail"))
    for n in c.nodes:
        c._push(c.now, n, "config.loaded", config_payload(n, to_dict(gone), reload=True))
    c.run_until(30 * S)
    released = [v["address"] for _t, p in c.outputs_of("lvs2", "pulse.release_vips") for v in p["vips"]
                if p["reason"] == "config"]
    assert "2001:db8::100" in released
    assert [p["groups"] for _t, p in c.outputs_of("lvs2", "pulse.start_lvsd")][-1] == ["dns"]
    assert list(c.nodes["lvs2"].state.units) == ["web", "dns"]


def test_a_handover_moves_every_group_held_and_a_snapshot_keeps_each_unit():
    c = cluster(grouped())
    core = PulseCore()
    st = c.nodes["lvs1"].state
    back = core.restore(core.snapshot(st))
    assert core.snapshot(back) == core.snapshot(st)
    assert {u.name: u.role for u in back.units.values()} == {"web": ACTIVE, "mail": BACKUP}
    c._push(c.now, "lvs1", "operator.handover_requested", {"by": "ops", "via": "cli", "reason": "", "hold_s": 30})
    c.run_until(12 * S)
    assert unit_roles(c)["lvs2"] == {"web": ACTIVE, "mail": ACTIVE}
    assert changes(c, "lvs1", "web")[-1] == (ACTIVE, BACKUP, "handover")
