"""pulse's pure core: the role FSM, election, failover, fencing, split brain, preemption.

Two kinds of driver (tests/helpers/pulse_cluster.py): ``Node``, one core fed hand-built events
checked against the catalog, and ``Cluster``, cores wired over an in-memory network with a fake
clock (links cut per pair and link, nodes crashed).
"""
from __future__ import annotations

import dataclasses
import itertools
import os

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

import lvsbus.wire.catalog  # noqa: F401  (fills the registry)
from lvsbus.config import VirtualService, to_dict
from lvsbus.runtime.core import run_core
from lvsbus_services.pulse.core import (
    ACTIVE, BACKUP, FAULT, INIT, MACHINE, ROLE_STATES, ROLE_TRANSITIONS, STOPPED, PulseCore,
    _settings_from_config, role_fsm_dot,
)
from tests.helpers.pulse_cluster import (
    DEADTIME, KEEPALIVE, LATENCY, MS, S, Cluster, Node, config_payload, make_config, make_model, of, steady_pair,
    v8_snapshot,
)


def types(effects, only=None) -> list[str]:
    return [e.type for e in effects if only is None or e.type in only]


ROLE_EFFECTS = {
    "router.role_changed", "pulse.take_vips", "pulse.release_vips", "pulse.send_garp", "pulse.send_fence",
    "pulse.start_lvsd", "pulse.stop_lvsd", "pulse.run_notify",
}


# ---------------------------------------------------------------------------------------------
# the table, the Machine and the diagram


def test_transition_table_is_the_machine():
    assert tuple(MACHINE.states) == ROLE_STATES
    got = {(t, s, tr.dest) for t, ev in MACHINE.events.items() for s, trs in ev.transitions.items() for tr in trs}
    want = {(t, s, d) for t, srcs, d, _c, _doc in ROLE_TRANSITIONS for s in srcs}
    assert got == want
    assert MACHINE.models == []  # one shared Machine; states are not registered in it (no leak)


def test_dot_diagram_comes_from_the_table():
    dot = role_fsm_dot()
    assert dot.startswith("digraph pulse_role {") and dot.rstrip().endswith("}")
    for trigger, sources, dest, conds, _doc in ROLE_TRANSITIONS:
        for s in sources:
            line = [ln for ln in dot.splitlines() if ln.strip().startswith(f"{s} -> {dest} ") and trigger in ln]
            assert line, (s, dest, trigger)
            for c in conds:
                assert c in line[0]
    for s in ROLE_STATES:
        assert f"  {s} [" in dot


def test_settings_adapter_reads_the_model():
    s = _settings_from_config(config_payload("lvs2", make_model()))
    assert s.local == "lvs2" and s.me.priority == 100
    assert s.keepalive_ns == S and s.deadtime_ns == 3 * S and s.garp_repeat == 3
    vips = {v.address: v for v in s.vips}
    # two services on one VIP give one address; an inactive service none; the NAT router moves too
    assert set(vips) == {"10.0.0.100", "2001:db8::100", "192.168.100.254"}
    assert vips["10.0.0.100"].owner == "web,web-tls" and vips["10.0.0.100"].label == "eth0:1"
    assert vips["2001:db8::100"].family == "ipv6" and vips["2001:db8::100"].prefixlen == 128
    assert vips["2001:db8::100"].device == "eth0"  # the router's device when the VIP names none
    assert vips["192.168.100.254"].owner == "nat_router" and vips["192.168.100.254"].device == "eth1"
    assert s.local_links() == ("public", "private")
    with pytest.raises(ValueError):
        _settings_from_config(config_payload("nobody", make_model()))
    with pytest.raises(ValueError):
        _settings_from_config(config_payload("lvs1", make_model(keepalive=5.0, deadtime=1.0)))


def test_bad_config_is_rejected_and_counted_and_the_old_one_stays():
    n = Node("lvs1")
    n.configure(make_model())
    eff = n.feed("config.loaded", config_payload("ghost", make_model()), 1, source="config")
    assert types(eff) == ["pulse.config_rejected"] and eff[0].payload["count"] == 1
    assert n.state.settings.local == "lvs1"
    n.start(2)
    assert n.role == BACKUP


# ---------------------------------------------------------------------------------------------
# single core


def test_start_needs_config_and_started_in_either_order():
    a = Node("lvs1")
    assert a.configure(make_model()) == [] and a.role == INIT
    assert a.core.next_deadline(a.state) is None
    eff = a.start(5)
    assert a.role == BACKUP
    assert types(eff)[:2] == ["pulse.release_vips", "router.role_changed"]
    assert of(eff, "router.role_changed")[0] | {} == {
        "node": "lvs1", "old": INIT, "new": BACKUP, "reason": "started", "priority": 200, "epoch": 1, "peer": None,
        "group": "default",
    }
    hb = of(eff, "pulse.send_heartbeat")
    assert len(hb) == 1 and hb[0]["role"] == BACKUP and hb[0]["seq"] == 1
    assert {(d["peer"], d["link"], d["address"], d["local_address"]) for d in hb[0]["destinations"]} == {
        ("lvs2", "public", "10.0.0.2", "10.0.0.1"), ("lvs2", "private", "192.168.0.2", "192.168.0.1"),
    }
    b = Node("lvs2")
    b.start(0)
    assert b.role == INIT
    b.configure(make_model(), 1)
    assert b.role == BACKUP


def test_alone_becomes_active_after_listening_for_deadtime_not_before():
    n = Node("lvs1")
    n.configure(make_model())
    n.start(0)
    assert n.core.next_deadline(n.state) == KEEPALIVE  # the first heartbeat went out with the start
    for t in range(1, 3):
        n.timer(t * S)
        assert n.role == BACKUP
    n.timer(DEADTIME - 1)
    assert n.role == BACKUP
    eff = n.timer(DEADTIME)
    assert n.role == ACTIVE
    assert of(eff, "router.role_changed")[0]["reason"] == "no_active"
    assert "pulse.send_fence" not in types(eff)  # nobody was active before


def test_takeover_effects_in_order_with_complete_payloads():
    n = Node("lvs2")
    n.configure(make_model())
    n.start(0)
    n.hb("lvs1", 1 * S, 1, ACTIVE)
    n.hb("lvs1", 1 * S + 1, 1, ACTIVE, link="private")
    eff = n.timer(1 * S + DEADTIME)
    assert n.role == BACKUP and types(eff) == ["pulse.send_heartbeat"]  # silent on public only: not dead
    eff = n.timer(1 * S + 1 + DEADTIME)  # lvs1 silent on both links for deadtime
    assert types(eff)[:1] == ["pulse.peer_dead"]  # and no link_degraded before it
    assert types(eff, ROLE_EFFECTS) == [
        "router.role_changed", "pulse.take_vips", "pulse.send_garp", "pulse.send_fence",
        "pulse.start_lvsd", "pulse.run_notify", "pulse.run_notify",
    ]
    rc = of(eff, "router.role_changed")[0]
    assert (rc["old"], rc["new"], rc["reason"], rc["peer"]) == (BACKUP, ACTIVE, "peer_dead", "lvs1")
    vips = of(eff, "pulse.take_vips")[0]["vips"]
    assert {v["address"] for v in vips} == {"10.0.0.100", "2001:db8::100", "192.168.100.254"}
    garp = of(eff, "pulse.send_garp")[0]
    assert garp["repeat"] == 3 and garp["reason"] == "takeover" and garp["vips"] == vips
    fence = of(eff, "pulse.send_fence")[0]
    assert fence["target"] == "lvs1" and fence["port"] == 539 and fence["node"] == "lvs2"
    assert {(d["link"], d["address"]) for d in fence["destinations"]} == {("public", "10.0.0.1"), ("private", "192.168.0.1")}
    notes = of(eff, "pulse.run_notify")
    assert [(x["kind"], x["command"], x["args"]) for x in notes] == [
        ("active_cmd", "/usr/local/bin/up", []),
        ("notify", "/usr/local/bin/notify", ["INSTANCE", "lvs2", "MASTER", "100"]),
    ]
    # the new role is announced at once
    assert of(eff, "pulse.send_heartbeat")[-1]["role"] == ACTIVE
    # heartbeat and fence share one sequence
    assert fence["seq"] < of(eff, "pulse.send_heartbeat")[-1]["seq"]


def test_fence_while_active_steps_down_and_a_fence_for_another_is_ignored():
    n = Node("lvs1")
    n.configure(make_model())
    n.start(0)
    n.timer(DEADTIME)
    assert n.role == ACTIVE
    eff = n.fence("lvs2", DEADTIME + 10, seq=5, target="lvs3")
    assert n.role == ACTIVE and of(eff, "pulse.heartbeat_ignored")[0]["reason"] == "not_for_us"
    eff = n.fence("lvs2", DEADTIME + 20, seq=6)
    assert n.role == BACKUP
    assert types(eff, ROLE_EFFECTS) == [
        "pulse.stop_lvsd", "pulse.release_vips", "router.role_changed", "pulse.run_notify", "pulse.run_notify",
    ]
    assert of(eff, "router.role_changed")[0]["reason"] == "fenced"
    kinds = [x["kind"] for x in of(eff, "pulse.run_notify")]
    assert kinds == ["inactive_cmd", "notify"]
    assert of(eff, "pulse.run_notify")[1]["args"][2] == "BACKUP"
    # the same fence again (replayed) is stale, and a fence to a backup changes nothing
    eff = n.fence("lvs2", DEADTIME + 30, seq=6)
    assert of(eff, "pulse.heartbeat_ignored")[0]["reason"] == "stale_seq"
    eff = n.fence("lvs2", DEADTIME + 40, seq=7)
    assert n.role == BACKUP and "router.role_changed" not in types(eff)


def test_stale_sequence_is_ignored_counted_and_changes_nothing():
    n = Node("lvs2")
    n.configure(make_model())
    n.start(0)
    n.hb("lvs1", 100 * MS, 5, BACKUP)
    n.hb("lvs1", 101 * MS, 5, BACKUP, link="private")  # same datagram on the other link: fine
    before = n.core.snapshot(n.state)
    for i, seq in enumerate((5, 4, 0)):
        eff = n.hb("lvs1", 200 * MS, seq, ACTIVE, priority=255)  # a replayed/forged-looking old one
        ign = of(eff, "pulse.heartbeat_ignored")
        assert len(ign) == 1 and ign[0]["reason"] == "stale_seq" and ign[0]["last_seq"] == 5
        assert ign[0]["count"] == i + 1
    after = n.core.snapshot(n.state)
    assert after.pop("ignored") == 3 and before.pop("ignored") == 0
    after["now"] = before["now"]
    assert after == before  # nothing but the counter moved
    eff = n.hb("lvs1", 300 * MS, 6, BACKUP)
    assert "pulse.heartbeat_ignored" not in types(eff)


def test_new_epoch_is_a_restart_old_epoch_is_stale():
    n = Node("lvs2")
    n.configure(make_model())
    n.start(0)
    n.hb("lvs1", 1 * S, 100, epoch=10)
    eff = n.hb("lvs1", 2 * S, 1, ACTIVE, epoch=11)
    assert of(eff, "pulse.peer_restarted") == [{"peer": "lvs1", "old_epoch": 10, "new_epoch": 11}]
    assert n.state.peers["lvs1"].role == ACTIVE  # what a new run says counts, though its seq is low
    assert "pulse.heartbeat_ignored" not in types(eff)
    eff = n.hb("lvs1", 2 * S + 1, 1, epoch=11, link="private")  # seq restarted on every link
    assert "pulse.heartbeat_ignored" not in types(eff)
    eff = n.hb("lvs1", 3 * S, 101, epoch=10)
    assert of(eff, "pulse.heartbeat_ignored")[0]["reason"] == "stale_epoch"


@pytest.mark.parametrize("who, reason", [("lvs1", "self"), ("lvs3", "unknown_peer")])
def test_heartbeats_from_self_or_strangers_are_ignored(who, reason):
    n = Node("lvs1")
    n.configure(make_model())
    n.start(0)
    eff = n.hb(who, 1, 1, ACTIVE)
    assert of(eff, "pulse.heartbeat_ignored")[0]["reason"] == reason and n.role == BACKUP


def test_heartbeat_before_config_is_ignored():
    n = Node("lvs1")
    eff = n.hb("lvs2", 1, 1)
    assert of(eff, "pulse.heartbeat_ignored")[0]["reason"] == "not_configured"


def test_timers_late_early_or_twice_do_only_what_is_due():
    n = Node("lvs1")
    n.configure(make_model())
    n.start(0)
    assert n.core.next_deadline(n.state) == KEEPALIVE
    assert n.timer(KEEPALIVE - 1) == []  # early: nothing due
    eff = n.timer(KEEPALIVE)
    assert types(eff) == ["pulse.send_heartbeat"]
    assert n.timer(KEEPALIVE) == []  # twice: nothing more
    eff = n.timer(KEEPALIVE + 2 * S + 500 * MS)  # late by several ticks: listen ended, one heartbeat
    assert n.role == ACTIVE
    assert len(of(eff, "pulse.send_heartbeat")) == 1
    assert n.core.next_deadline(n.state) == KEEPALIVE + 2 * S + 500 * MS + KEEPALIVE


def test_a_group_s_fault_cmd_runs_on_entering_fault_only():
    """keepalived's notify_fault (a group's ``fault_cmd``): run once on entering FAULT, after the
    inactive_cmd of leaving ACTIVE; not again while in FAULT, not on leaving it; snapshots keep it."""
    from lvsbus.config.model import Group
    from tests.helpers.pulse_cluster import make_config

    cfg = make_config()
    cfg = dataclasses.replace(cfg, groups=(Group("default", priority=tuple((r.name, r.priority) for r in cfg.routers),
                                                 inactive_cmd="down", fault_cmd="/usr/local/bin/fault"),))
    n = Node("lvs1")
    n.configure(to_dict(cfg))
    n.start(0)
    n.timer(DEADTIME)
    assert n.role == ACTIVE
    n.link("private", False, 3 * S)
    eff = n.link("public", False, 4 * S)
    assert n.role == FAULT
    assert [(p["kind"], p["command"]) for p in of(eff, "pulse.run_notify") if p["kind"] != "notify"] == [
        ("inactive_cmd", "down"), ("fault_cmd", "/usr/local/bin/fault")]
    restored = n.core.restore(msgpack.unpackb(msgpack.packb(n.core.snapshot(n.state)), strict_map_key=False))
    assert restored.units["default"].cfg.fault_cmd == "/usr/local/bin/fault"
    eff = n.link("public", True, 20 * S)
    assert n.role == BACKUP and "fault_cmd" not in [p["kind"] for p in of(eff, "pulse.run_notify")]


def test_garp_refresh_while_active():
    n = Node("lvs1")
    n.configure(make_model(garp_refresh=10.0))
    n.start(0)
    n.timer(DEADTIME)
    assert n.role == ACTIVE
    garps = []
    for t in range(DEADTIME, DEADTIME + 31 * S, S):
        garps += [(t, g) for g in of(n.timer(t), "pulse.send_garp")]
    assert [t for t, _ in garps] == [DEADTIME + 10 * S, DEADTIME + 20 * S, DEADTIME + 30 * S]
    assert all(g["reason"] == "refresh" and g["repeat"] == 1 and len(g["vips"]) == 3 for _, g in garps)


def test_fault_when_every_link_is_down_and_back():
    n = Node("lvs1")
    n.configure(make_model())
    n.start(0)
    n.timer(DEADTIME)
    assert n.role == ACTIVE
    assert n.link("private", False, 3 * S + 500 * MS) == [] and n.role == ACTIVE  # one link down: still fine
    eff = n.link("public", False, 4 * S + 500 * MS)
    assert n.role == FAULT
    assert types(eff)[:3] == ["pulse.stop_lvsd", "pulse.release_vips", "router.role_changed"]
    assert of(eff, "router.role_changed")[0]["reason"] == "all_links_down"
    assert of(eff, "pulse.run_notify")[-1]["args"][2] == "FAULT"
    assert "pulse.send_heartbeat" not in types(n.timer(10 * S))
    assert n.link("private", True, 15 * S) == [] and n.role == FAULT  # the VIPs' link is still down
    eff = n.link("public", True, 20 * S)
    assert n.role == BACKUP and of(eff, "router.role_changed")[0]["reason"] == "link_up"
    n.timer(20 * S + DEADTIME - 1)
    assert n.role == BACKUP  # listens again before taking over
    n.timer(20 * S + DEADTIME)
    assert n.role == ACTIVE


def test_config_reload_while_active_moves_only_the_changed_vips():
    n = Node("lvs1")
    n.configure(make_model())
    n.start(0)
    n.timer(DEADTIME)
    cfg = make_config()
    model = to_dict(dataclasses.replace(cfg, virtual_services=(
        *(vs for vs in cfg.virtual_services if vs.name != "web6"),
        VirtualService("api", "10.0.0.101", device="eth0", vip_prefixlen=24, servers=cfg.virtual_services[0].servers),
    )))
    eff = n.feed("config.loaded", config_payload("lvs1", model, reload=True), 4 * S, source="config")
    assert n.role == ACTIVE
    assert [v["address"] for v in of(eff, "pulse.release_vips")[0]["vips"]] == ["2001:db8::100"]
    assert [v["address"] for v in of(eff, "pulse.take_vips")[0]["vips"]] == ["10.0.0.101"]
    assert of(eff, "pulse.send_garp")[0]["reason"] == "config"


# ---------------------------------------------------------------------------------------------
# a table over (state, input) pairs

def _in_role(role: str) -> Node:
    """lvs1 in ``role``, with lvs2 (lower priority) heard recently (seq 10 or 11 so far)."""
    n = Node("lvs1")
    if role == INIT:
        return n
    n.configure(make_model())
    n.start(0)
    n.hb("lvs2", 2 * S, 10, BACKUP)
    if role in (ACTIVE, FAULT, BACKUP):
        n.timer(DEADTIME)
    if role == FAULT:
        n.link("public", False, DEADTIME + 1)
        n.link("private", False, DEADTIME + 1)
    if role == STOPPED:
        n.shutdown(DEADTIME)
    if role == BACKUP:
        n.fence("lvs2", DEADTIME + 1, seq=11)  # lvs2 took over: lvs1 is a backup, out of listening
    assert n.role == role
    return n


T = 4 * S + 500 * MS  # lvs2 is still alive (heard at 2 s or later, deadtime 3 s)
INPUTS = {
    "hb_backup_lower": lambda n: n.hb("lvs2", T, 50, BACKUP),
    "hb_active_lower": lambda n: n.hb("lvs2", T, 50, ACTIVE),
    "hb_active_higher": lambda n: n.hb("lvs2", T, 50, ACTIVE, priority=250),
    "hb_leaving": lambda n: n.hb("lvs2", T, 50, STOPPED, leaving=True),
    "fence": lambda n: n.fence("lvs2", T, seq=50),
    "fence_stale": lambda n: n.fence("lvs2", T, seq=5),
    "links_down": lambda n: (n.link("public", False, T), n.link("private", False, T))[-1],
    "link_up": lambda n: n.link("public", True, T),
    "shutdown": lambda n: n.shutdown(T),
    "timer": lambda n: n.timer(T),
}

# role after (state, input)
EXPECTED = {
    INIT: dict.fromkeys(INPUTS, INIT) | {"shutdown": STOPPED},
    BACKUP: {
        # lvs1 outranks lvs2 (200 > 100) but was just fenced by it: no preemption for deadtime
        "hb_backup_lower": ACTIVE, "hb_active_lower": BACKUP, "hb_active_higher": BACKUP, "hb_leaving": ACTIVE,
        "fence": BACKUP, "fence_stale": BACKUP, "links_down": FAULT, "link_up": BACKUP, "shutdown": STOPPED,
        "timer": BACKUP,
    },
    ACTIVE: {
        "hb_backup_lower": ACTIVE, "hb_active_lower": ACTIVE, "hb_active_higher": BACKUP, "hb_leaving": ACTIVE,
        "fence": BACKUP, "fence_stale": ACTIVE, "links_down": FAULT, "link_up": ACTIVE, "shutdown": STOPPED,
        "timer": ACTIVE,
    },
    FAULT: dict.fromkeys(INPUTS, FAULT) | {"link_up": BACKUP, "shutdown": STOPPED},
    STOPPED: dict.fromkeys(INPUTS, STOPPED),
}


@pytest.mark.parametrize("role", ROLE_STATES)
@pytest.mark.parametrize("name", list(INPUTS))
def test_state_input_table(role, name):
    n = _in_role(role)
    INPUTS[name](n)
    assert n.role == EXPECTED[role][name], (role, name)
    if role == STOPPED:
        assert n.outputs[-1][1] == []  # a stopped core says nothing more
    if name == "fence_stale" and role != INIT and role != STOPPED:
        assert of(n.outputs[-1][1], "pulse.heartbeat_ignored")[0]["reason"] == "stale_seq"


# ---------------------------------------------------------------------------------------------
# cores wired together


@pytest.mark.parametrize("rules", [4, 5])
def test_two_routers_starting_together_elect_exactly_one_the_higher(rules):
    """Both listen; under rules 4 for the whole deadtime, under rules 5 until each has heard the
    other's heartbeat (the first is sent at the start): then the higher takes over at once."""
    c = Cluster(rules=rules)
    c.start("lvs1")
    c.start("lvs2")
    if rules == 5:
        c.run_until(DEADTIME // 2)
        assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}  # heard each other: no need to wait
        assert c.nodes["lvs1"].role_changes()[-1] == (BACKUP, ACTIVE, "no_active")
    c.run_until(DEADTIME - 1)
    if rules == 4:
        assert c.roles() == {"lvs1": BACKUP, "lvs2": BACKUP}  # both still listening
    c.run_until(60 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}
    assert c.nodes["lvs2"].role_changes() == [(INIT, BACKUP, "started")]  # never active, not even briefly
    assert c.nodes["lvs1"].role_changes() == [(INIT, BACKUP, "started"), (BACKUP, ACTIVE, "no_active")]


@pytest.mark.parametrize("reported, becomes", [(100, ACTIVE), (101, BACKUP), (99, ACTIVE)])
def test_equal_priorities_are_broken_by_the_higher_address(reported, becomes):
    # the config refuses equal priorities, but a peer reports its own (a reload in progress)
    n = Node("lvs2")  # priority 100, 10.0.0.2
    n.configure(make_model())
    n.start(0)
    for i, t in enumerate(range(0, DEADTIME + 1, 500 * MS)):
        n.hb("lvs1", t, i + 1, BACKUP, priority=reported)  # 10.0.0.1
    assert n.role == becomes


@pytest.mark.parametrize("rules", [4, 5])
def test_routers_starting_apart_the_first_takes_over_the_second_preempts(rules):
    """The higher one starts second: it listens (rules 4: for deadtime; rules 5: until it has heard
    the active's heartbeat, a keepalive at most), then preempts."""
    c = Cluster(rules=rules)
    c.start("lvs2")  # the lower one first
    c.run_until(10 * S)
    assert c.roles()["lvs2"] == ACTIVE and c.roles()["lvs1"] == INIT
    c.start("lvs1")
    c.run_until(10 * S + LATENCY // 2)
    assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}  # listening first
    listen = DEADTIME if rules == 4 else KEEPALIVE + LATENCY
    c.run_until(10 * S + listen - 1)
    if rules == 4:
        assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}  # still listening
    c.run_until(10 * S + listen + 10 * MS)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}
    assert c.nodes["lvs2"].role_changes()[-1] == (ACTIVE, BACKUP, "fenced")
    assert c.nodes["lvs1"].role_changes()[-1] == (BACKUP, ACTIVE, "preempt")
    # both hold the VIPs only for the fence's trip over the network
    (took, _), = [(t, p) for t, p in c.outputs_of("lvs1", "pulse.take_vips") if p["reason"] == "preempt"]
    (released, _), = [(t, p) for t, p in c.outputs_of("lvs2", "pulse.release_vips") if p["reason"] == "fenced"]
    assert released - took == LATENCY
    c.run_until(60 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}  # and it stays so


def test_nopreempt_keeps_the_running_active():
    c = Cluster(preempt=False)
    c.start("lvs2")
    c.run_until(10 * S)
    c.start("lvs1")
    c.run_until(120 * S)
    assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}
    assert c.nodes["lvs1"].role_changes() == [(INIT, BACKUP, "started")]


@pytest.mark.parametrize("rules", [4, 5])
def test_preempt_delay_is_waited_out(rules):
    """preempt_delay counts from the end of the listen (rules 5: the active's first heartbeat heard)."""
    c = Cluster(preempt_delay=20.0, rules=rules)
    c.start("lvs2")
    c.run_until(10 * S)
    c.start("lvs1")
    listen_end = 10 * S + (DEADTIME if rules == 4 else 0)
    c.run_until(listen_end + 20 * S - 1)
    assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}
    c.run_until(listen_end + (0 if rules == 4 else KEEPALIVE + LATENCY) + 20 * S + 10 * MS)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}


def test_active_dies_backup_takes_over_after_deadtime_not_before():
    c = steady_pair()
    c.crash("lvs1")
    c.run_until(c.now + 50 * MS)  # heartbeats already in flight land
    last = c.last_heard("lvs2", "lvs1")
    c.run_until(last + DEADTIME - 1)
    assert c.nodes["lvs2"].role == BACKUP
    c.run_until(last + DEADTIME)
    assert c.nodes["lvs2"].role == ACTIVE
    assert c.nodes["lvs2"].role_changes()[-1] == (BACKUP, ACTIVE, "peer_dead")
    took = [t for t, p in c.outputs_of("lvs2", "router.role_changed") if p["new"] == ACTIVE]
    assert took == [last + DEADTIME]
    (t, fence), = c.outputs_of("lvs2", "pulse.send_fence")
    assert fence["target"] == "lvs1" and {d["link"] for d in fence["destinations"]} == {"public", "private"}
    assert not c.outputs_of("lvs2", "pulse.link_degraded")  # a dead peer is not a degraded link


def test_one_link_silent_degrades_but_never_fails_over():
    c = steady_pair()
    t0 = c.now
    c.cut_link("lvs1", "lvs2", "private")
    c.run_until(t0 + 5 * DEADTIME)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}
    for name, peer in (("lvs1", "lvs2"), ("lvs2", "lvs1")):
        deg = c.outputs_of(name, "pulse.link_degraded")
        assert [(p["peer"], p["link"]) for _, p in deg] == [(peer, "private")]  # once, not every tick
        assert deg[0][0] - t0 >= DEADTIME - KEEPALIVE and deg[0][0] - t0 <= DEADTIME + KEEPALIVE
        assert not c.outputs_of(name, "pulse.peer_dead")
    assert [p["reason"] for _, p in c.outputs_of("lvs2", "router.role_changed")] == ["started"]
    c.heal()
    c.run_until(c.now + 2 * KEEPALIVE)
    for name, peer in (("lvs1", "lvs2"), ("lvs2", "lvs1")):
        assert [(p["peer"], p["link"]) for _, p in c.outputs_of(name, "pulse.link_restored")] == [(peer, "private")]


def test_healed_partition_leaves_exactly_one_active_which_reannounces():
    c = Cluster()
    for link in ("public", "private"):
        c.cut_link("lvs1", "lvs2", link)
    c.start("lvs1")
    c.start("lvs2")
    c.run_until(20 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": ACTIVE}  # partitioned: both took over
    t0 = c.now
    c.heal()
    c.run_until(t0 + KEEPALIVE + 10 * MS)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}
    (t1, sb1), = c.outputs_of("lvs1", "pulse.split_brain_resolved")
    assert sb1 == {"winner": "lvs1", "loser": "lvs2", "winner_priority": 200, "loser_priority": 100,
                   "this_router_stays": True, "group": "default"}
    garps = [(t, p) for t, p in c.outputs_of("lvs1", "pulse.send_garp") if p["reason"] == "split_brain"]
    assert [t for t, _ in garps] == [t1] and garps[0][1]["repeat"] == 3  # at once, on detection
    assert c.nodes["lvs2"].role_changes()[-1] == (ACTIVE, BACKUP, "split_brain")
    released = [t for t, p in c.outputs_of("lvs2", "pulse.release_vips") if p["reason"] == "split_brain"]
    assert len(released) == 1
    c.run_until(t0 + 30 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}
    assert len(c.outputs_of("lvs1", "pulse.split_brain_resolved")) == 1


def test_graceful_leave_hands_over_at_once():
    c = steady_pair()
    t0 = c.now + 300 * MS
    c._push(t0, "lvs1", "router.shutdown_requested", {"reason": "SIGTERM", "graceful": True})
    c.run_until(t0 + 10 * MS)
    assert c.roles() == {"lvs1": STOPPED, "lvs2": ACTIVE}
    out = [ty for t, n, ty, _ in c.trace if n == "lvs1" and t == t0]
    assert [ty for ty in out if ty in ROLE_EFFECTS | {"pulse.send_heartbeat"}] == [
        "pulse.stop_lvsd", "pulse.release_vips", "router.role_changed", "pulse.run_notify", "pulse.run_notify",
        "pulse.send_heartbeat",
    ]
    (_, final), = c.outputs_of("lvs1", "pulse.send_heartbeat")[-1:]
    assert final["leaving"] is True and final["role"] == STOPPED
    took = [t for t, p in c.outputs_of("lvs2", "router.role_changed") if p["new"] == ACTIVE]
    assert took == [t0 + LATENCY]  # one network hop, not deadtime
    assert c.nodes["lvs2"].role_changes()[-1] == (BACKUP, ACTIVE, "peer_left")
    assert c.nodes["lvs1"].core.next_deadline(c.nodes["lvs1"].state) is None
    c.run_until(t0 + 60 * S)
    assert c.roles() == {"lvs1": STOPPED, "lvs2": ACTIVE}


def test_restarted_peer_with_a_new_epoch_is_accepted():
    c = steady_pair()
    c.crash("lvs2")
    c.run_until(c.now + 1 * S)
    # lvs2 comes back as a fresh process: new epoch, sequence from 1
    c.crashed.discard("lvs2")
    c.nodes["lvs2"] = Node("lvs2")
    c.start("lvs2", epoch=2)
    c.run_until(c.now + 10 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}
    assert [p["new_epoch"] for _, p in c.outputs_of("lvs1", "pulse.peer_restarted")] == [2]
    assert not [p for _, p in c.outputs_of("lvs1", "pulse.heartbeat_ignored")]


def test_three_routers_only_the_best_backup_takes_over():
    c = Cluster(names=("lvs1", "lvs2", "lvs3"))
    for n in ("lvs3", "lvs2", "lvs1"):
        c.start(n)
    c.run_until(20 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP, "lvs3": BACKUP}
    c.crash("lvs1")
    c.run_until(c.now + 10 * DEADTIME)
    assert c.active() == ["lvs2"]
    assert [r for r in c.nodes["lvs3"].role_changes() if r[1] == ACTIVE] == []  # never, not even briefly
    (_, fence), = c.outputs_of("lvs2", "pulse.send_fence")
    assert fence["target"] == "lvs1"
    # and when lvs2 dies too, lvs3 is the last candidate
    c.crash("lvs2")
    c.run_until(c.now + 2 * DEADTIME)
    assert c.active() == ["lvs3"]


def test_three_routers_fault_on_the_best_backup_lets_the_next_one_take_over():
    c = Cluster(names=("lvs1", "lvs2", "lvs3"))
    for n in ("lvs1", "lvs2", "lvs3"):
        c.start(n)
    c.run_until(20 * S)
    for link in ("public", "private"):
        c._push(c.now, "lvs2", "pulse.link_changed", {"link": link, "up": False, "device": None})
        for other in ("lvs1", "lvs3"):
            c.cut_link("lvs2", other, link)
    c.crash("lvs1")
    c.run_until(c.now + 10 * DEADTIME)
    assert c.roles()["lvs2"] == FAULT
    assert c.active() == ["lvs3"]


@pytest.mark.parametrize("rules", [4, 5])
def test_fault_in_a_pair_moves_the_vips_to_the_other(rules):
    c = steady_pair(rules=rules)
    for link in ("public", "private"):
        c._push(c.now, "lvs1", "pulse.link_changed", {"link": link, "up": False, "device": None})
        c.cut_link("lvs1", "lvs2", link)
    c.run_until(c.now + 2 * DEADTIME)
    assert c.roles() == {"lvs1": FAULT, "lvs2": ACTIVE}
    t0 = c.now
    c.heal()
    c._push(t0, "lvs1", "pulse.link_changed", {"link": "public", "up": True, "device": None})
    c.run_until(t0)  # (lvs2's heartbeat of this instant is still on the wire)
    assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}
    if rules == 4:
        c.run_until(t0 + DEADTIME - 1)
        assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}
    # listened (rules 5: until lvs2's next heartbeat), then preempts (preempt is on)
    c.run_until(t0 + (DEADTIME if rules == 4 else KEEPALIVE + LATENCY) + 10 * MS)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}



@pytest.mark.parametrize("rules", [3, 2])
def test_an_active_that_goes_fault_tells_the_backup_at_once(rules):
    """The active's public link goes down while the private one still works: it steps down to
    FAULT and (rules 3) sends one heartbeat saying FAULT over the links still up, and the backup
    takes over at once (peer_stepped_down). Under rules 2 (a log from before pulse.started v3) no
    heartbeat went out: the backup waited for deadtime, and replay keeps that decision."""
    c = steady_pair()
    for n in ("lvs1", "lvs2"):
        c.nodes[n].state.rules = rules
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}
    t0 = c.now
    c._push(t0, "lvs1", "pulse.link_changed", {"link": "public", "up": False, "device": None})
    c.cut_link("lvs1", "lvs2", "public")
    c.run_until(t0 + 50 * MS)
    sent = [p for (t, n, typ, p) in c.trace
            if t >= t0 and n == "lvs1" and typ == "pulse.send_heartbeat" and p["role"] == FAULT]
    if rules == 3:
        assert len(sent) == 1
        assert c.roles() == {"lvs1": FAULT, "lvs2": ACTIVE}
        took = [p for (t, n, typ, p) in c.trace if t >= t0 and n == "lvs2" and typ == "router.role_changed"]
        assert took[0]["reason"] == "peer_stepped_down"
    else:
        assert sent == [] and c.roles() == {"lvs1": FAULT, "lvs2": BACKUP}
        c.run_until(t0 + 2 * DEADTIME)
        assert c.roles() == {"lvs1": FAULT, "lvs2": ACTIVE}

# ---------------------------------------------------------------------------------------------
# snapshots, replay, determinism


def _scenario() -> Cluster:
    c = Cluster(names=("lvs1", "lvs2", "lvs3"), garp_refresh=5.0)
    c.start("lvs2")
    c.run_until(7 * S)
    c.start("lvs1")
    c.start("lvs3")
    c.cut_link("lvs1", "lvs3", "private")
    c.run_until(30 * S)
    c.crash("lvs1")
    c.run_until(45 * S)
    return c


def test_same_events_give_the_same_effects():
    a, b = _scenario(), _scenario()
    assert a.trace == b.trace
    assert len(a.trace) > 100
    # and a fresh core fed one node's recorded inputs gives exactly its recorded outputs (replay)
    for name, node in a.nodes.items():
        core = PulseCore()
        got = [step.effects for _, step in run_core(core, core.initial(), node.inputs)]
        assert got == [effs for _, effs in node.outputs], name


def test_snapshot_restore_mid_run_behaves_identically():
    c = _scenario()
    node = c.nodes["lvs2"]
    for cut in (5, len(node.inputs) // 3, len(node.inputs) // 2, len(node.inputs) - 3):
        core = PulseCore()
        state = core.initial()
        for ev in node.inputs[:cut]:
            state, _ = core.decide(state, ev)
        data = msgpack.unpackb(msgpack.packb(core.snapshot(state), use_bin_type=True), raw=False)
        restored = core.restore(data)
        assert core.snapshot(restored) == core.snapshot(state)
        assert core.next_deadline(restored) == core.next_deadline(state)
        after = []
        for ev in node.inputs[cut:]:
            restored, effs = core.decide(restored, ev)
            after.append(effs)
        assert after == [effs for _, effs in node.outputs[cut:]], cut


def test_a_snapshot_is_a_copy():
    n = Node("lvs1")
    n.configure(make_model())
    n.start(0)
    snap = n.core.snapshot(n.state)
    n.hb("lvs2", 1 * S, 1, BACKUP)
    assert snap != n.core.snapshot(n.state)
    assert n.core.restore(snap).peers["lvs2"].alive is False


def test_heartbeats_that_change_nothing_fire_no_trigger(monkeypatch):
    import lvsbus_services.pulse.core as pc

    fired = []
    real = pc._fire
    monkeypatch.setattr(pc, "_fire", lambda st, trigger: fired.append(trigger) or real(st, trigger))
    n = Node("lvs2")
    n.configure(make_model())
    n.start(0)
    assert fired == ["start"]
    seq = itertools.count(1)
    for t in range(100 * MS, 20 * S, 100 * MS):  # 10 a second on each link, for 20 s
        n.hb("lvs1", t, next(seq), ACTIVE)
        n.hb("lvs1", t + 1, next(seq), ACTIVE, link="private")
    assert fired == ["start"] and n.role == BACKUP
    n.hb("lvs1", 20 * S, next(seq), ACTIVE, leaving=True)
    assert fired == ["start", "take_over"] and n.role == ACTIVE


def test_a_fence_holds_preemption_for_deadtime_then_preempt_resumes():
    deadtime = 3 * S + 500 * MS  # not a multiple of keepalive: the hold's own deadline must wake the core
    n = Node("lvs1")
    n.configure(make_model(deadtime=3.5))
    n.start(0)
    n.timer(deadtime)
    fenced_at = deadtime + 300 * MS
    n.fence("lvs2", fenced_at, seq=1)
    assert n.role == BACKUP
    took = None
    seq = itertools.count(100)
    t = fenced_at
    while t < fenced_at + 3 * deadtime and took is None:
        d = n.core.next_deadline(n.state)
        hb_t = t + 700 * MS
        if d is not None and d <= hb_t:
            t = max(d, t)
            n.timer(t)
        else:
            t = hb_t
            k = next(seq)
            n.hb("lvs2", t, k, ACTIVE)
            n.hb("lvs2", t, k, ACTIVE, link="private")
        if n.role == ACTIVE:
            took = t
    assert took == fenced_at + deadtime
    assert n.role_changes()[-1] == (BACKUP, ACTIVE, "preempt")


def test_service_restart_keeps_the_role_and_adopts_the_new_epoch():
    n = Node("lvs1")
    n.configure(make_model())
    n.start(0)
    n.timer(DEADTIME)
    state = n.core.restore(n.core.snapshot(n.state))  # the supervisor restarts pulse from a snapshot
    n2 = Node("lvs1", state=state)
    eff = n2.start(DEADTIME + 100 * MS, epoch=2)
    assert n2.role == ACTIVE and "router.role_changed" not in types(eff)
    n2.timer(DEADTIME + KEEPALIVE)
    assert of(n2.outputs[-1][1], "pulse.send_heartbeat")[0]["epoch"] == 2


@pytest.mark.parametrize("listen", [True, False])
def test_a_backups_pulse_restarted_after_deadtime_listens_before_it_takes_over(listen):
    """pulse.started v2 (listen): a BACKUP restored from the log whose pulse was down longer than
    deadtime heard nothing meanwhile, so what it last heard of the active is old news. It listens for
    deadtime before it may take over, and the active's next heartbeat keeps it BACKUP: a restart
    alone never fails over. A v1 record (upcast to listen false) keeps v1's decision, a takeover at
    once, so that old logs replay as they were decided."""
    n = Node("lvs2")
    n.configure(make_model())
    n.start(0)
    n.hb("lvs1", 100 * MS, 1, ACTIVE)
    n.timer(DEADTIME)
    assert n.role == BACKUP
    down = 500 * MS + 3 * DEADTIME  # pulse down three deadtimes (a crash, the supervisor's backoff)
    n2 = Node("lvs2", state=n.core.restore(n.core.snapshot(n.state)))
    eff = n2.feed("pulse.started", {"epoch": 2, "hostname": "lvs2", "addresses": [], "key_loaded": True, "listen": listen, "rules": 3 if listen else 2}, down)
    if not listen:
        assert n2.role == ACTIVE and n2.role_changes()[-1] == (BACKUP, ACTIVE, "peer_dead")
        return
    # nor is the active judged dead by a silence nobody listened to (heard_from: no peer_dead
    # at the restart, and none when it is heard within deadtime)
    assert n2.role == BACKUP and not n2.role_changes() and not of(eff, "pulse.peer_dead")
    assert n2.core.next_deadline(n2.state) <= down + DEADTIME
    n2.timer(down + DEADTIME - 1)
    assert n2.role == BACKUP
    n2.hb("lvs1", down + KEEPALIVE, 40, ACTIVE)  # the active was there all along
    n2.timer(down + DEADTIME)
    n2.timer(down + DEADTIME + KEEPALIVE)
    assert n2.role == BACKUP and not n2.role_changes()
    assert not of(n2.all_effects(), "pulse.take_vips") and not of(n2.all_effects(), "pulse.send_fence")
    assert not of(n2.all_effects(), "pulse.peer_dead")
    # with the active really gone, the listen ends in its death and a takeover as at any start
    n3 = Node("lvs2", state=n.core.restore(n.core.snapshot(n.state)))
    n3.feed("pulse.started", {"epoch": 2, "hostname": "lvs2", "addresses": [], "key_loaded": True, "listen": True, "rules": 3}, down)
    eff = n3.timer(down + DEADTIME)
    assert n3.role == ACTIVE and [p["peer"] for p in of(eff, "pulse.peer_dead")] == ["lvs1"]


@pytest.mark.parametrize("listen", [True, False])
def test_an_input_recorded_while_pulse_was_down_judges_no_peer(listen):
    """The runtime decides the inputs other services recorded while pulse was down (a reload, an
    operator request, a failover service's health) before the restarted shell's pulse.started. Since
    pulse.started v2 (own_clock) peers' deaths are judged on pulse's own inputs only: such an input
    finds the active alive, as last heard, and the backup does not take over on it; pulse.started
    then makes it listen. A v1 run (listen false) took over on it, and replays so."""
    from tests.helpers.pulse_cluster import config_payload

    n = Node("lvs2")
    n.configure(make_model())
    n.feed("pulse.started", {"epoch": 1, "hostname": "lvs2", "addresses": [], "key_loaded": True, "listen": listen, "rules": 3 if listen else 2}, 0)
    n.hb("lvs1", 100 * MS, 1, ACTIVE)
    n.timer(DEADTIME)
    assert n.role == BACKUP and n.state.own_clock is listen
    down = 500 * MS + 3 * DEADTIME
    n2 = Node("lvs2", state=n.core.restore(n.core.snapshot(n.state)))  # pulse died; a reload meanwhile
    eff = n2.feed("config.loaded", config_payload("lvs2", make_model(), reload=True), down - DEADTIME, source="config")
    if not listen:
        assert n2.role == ACTIVE and [p["peer"] for p in of(eff, "pulse.peer_dead")] == ["lvs1"]
        return
    assert n2.role == BACKUP and not of(eff, "pulse.peer_dead") and not of(eff, "pulse.take_vips")
    n2.feed("pulse.started", {"epoch": 2, "hostname": "lvs2", "addresses": [], "key_loaded": True, "listen": True, "rules": 3}, down)
    n2.hb("lvs1", down + KEEPALIVE, 40, ACTIVE)
    n2.timer(down + DEADTIME)
    assert n2.role == BACKUP and not n2.role_changes()
    assert not of(n2.all_effects(), "pulse.take_vips") and not of(n2.all_effects(), "pulse.send_fence")


def test_a_version_4_snapshot_restores_with_deaths_judged_on_any_input():
    """Snapshot version 5 added own_clock; a version-4 snapshot (a v1 run's) restores with it false."""
    import msgpack

    from lvsbus.runtime.snapshot import decode_state

    n = _active_alone()
    snap = v8_snapshot(n.core.snapshot(n.state))
    assert snap.pop("own_clock") is True
    body = msgpack.packb({"core": "pulse", "v": 4, "state": snap}, use_bin_type=True)
    assert decode_state(n.core, body).own_clock is False


@pytest.mark.parametrize("how", ["after_shutdown", "after_reboot"])
def test_a_new_run_starts_over(how):
    n = Node("lvs1")
    n.configure(make_model())
    n.start(0)
    n.hb("lvs2", 1 * S, 1, BACKUP)
    n.timer(DEADTIME)
    assert n.role == ACTIVE
    if how == "after_shutdown":
        n.shutdown(100 * S)
        assert n.role == STOPPED
        eff = n.start(200 * S, epoch=2)
    else:  # rebooted without a clean stop: the monotonic clock starts again near zero
        eff = n.start(1 * S, epoch=2)
    assert n.role == BACKUP
    old = STOPPED if how == "after_shutdown" else ACTIVE
    assert n.role_changes()[-2:] == [(old, INIT, "started"), (INIT, BACKUP, "started")]
    assert "pulse.release_vips" in types(eff)
    assert not n.state.peers["lvs2"].alive  # nothing from the old run is trusted
    t0 = n.inputs[-1].mono_ns
    n.timer(t0 + DEADTIME - 1)
    assert n.role == BACKUP
    n.timer(t0 + DEADTIME)
    assert n.role == ACTIVE


def test_docs_list_every_transition():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "pulse.md").read_text()
    rows = [ln for ln in doc.splitlines() if ln.startswith("| `")]
    for trigger, sources, dest, conds, _doc in ROLE_TRANSITIONS:
        row = [r for r in rows if r.startswith(f"| `{trigger}` |")]
        assert row, trigger
        cells = [c.strip() for c in row[0].split("|")]
        assert cells[2] == ", ".join(sources) and cells[3] == dest, trigger
        assert cells[4] == ", ".join(f"`{c}`" for c in conds), trigger


# ---------------------------------------------------------------------------------------------
# seeded fault schedules: whatever happened, once the network is whole again exactly one router
# is active, and (preempt on) it is the best live one


NAMES3 = ("lvs1", "lvs2", "lvs3")
ACTION = hst.one_of(
    hst.tuples(hst.just("crash"), hst.sampled_from(NAMES3)),
    hst.tuples(hst.just("revive"), hst.sampled_from(NAMES3)),
    hst.tuples(hst.just("cut"), hst.sampled_from([("lvs1", "lvs2"), ("lvs1", "lvs3"), ("lvs2", "lvs3")]),
               hst.sampled_from(["public", "private"])),
    hst.tuples(hst.just("heal")),
    hst.tuples(hst.just("links_down"), hst.sampled_from(NAMES3)),
    hst.tuples(hst.just("links_up"), hst.sampled_from(NAMES3)),
    hst.tuples(hst.just("shutdown"), hst.sampled_from(NAMES3)),
    hst.tuples(hst.just("wait")),
)


@settings(max_examples=int(os.environ.get("PULSE_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=hst.lists(hst.tuples(ACTION, hst.integers(min_value=0, max_value=4 * S)), max_size=10),
       preempt=hst.booleans())
def test_after_any_fault_schedule_exactly_one_active(actions, preempt):
    c = Cluster(names=NAMES3, preempt=preempt)
    epochs = dict.fromkeys(NAMES3, 1)
    for n in NAMES3:
        c.start(n)
    c.run_until(5 * S)
    isolated: set[str] = set()
    for action, gap in actions:
        kind = action[0]
        if kind == "crash":
            c.crash(action[1])
        elif kind == "revive" and (action[1] in c.crashed or c.nodes[action[1]].role == STOPPED):
            n = action[1]
            c.crashed.discard(n)
            epochs[n] += 1
            c.nodes[n] = Node(n)
            c.start(n, epoch=epochs[n])
        elif kind == "cut":
            c.cut_link(*action[1], action[2])
        elif kind == "heal":
            c.heal()
        elif kind in ("links_down", "links_up"):
            n, up = action[1], kind == "links_up"
            (isolated.discard if up else isolated.add)(n)
            for link in ("public", "private"):
                c._push(c.now, n, "pulse.link_changed", {"link": link, "up": up, "device": None})
        elif kind == "shutdown":
            c._push(c.now, action[1], "router.shutdown_requested", {"reason": "test", "graceful": True})
        c.run_until(c.now + gap + 1)
    # the network is whole again
    c.heal()
    for n in isolated:
        for link in ("public", "private"):
            c._push(c.now, n, "pulse.link_changed", {"link": link, "up": True, "device": None})
    c.run_until(c.now + 4 * DEADTIME)
    live = [n for n in NAMES3 if n not in c.crashed and c.nodes[n].role != STOPPED]
    active = c.active()
    if live:
        assert len(active) == 1, (c.roles(), c.crashed)
        if preempt:
            assert active == [min(live)]  # lvs1 > lvs2 > lvs3 by priority
    else:
        assert active == []


def test_an_older_datagram_on_a_slower_link_proves_life_but_changes_no_belief():
    n = Node("lvs2")
    n.configure(make_model())
    n.start(0)
    n.timer(DEADTIME)
    assert n.role == ACTIVE  # alone
    n.hb("lvs1", 4 * S, 11, BACKUP)  # lvs1 (higher) appears, as a backup
    eff = n.hb("lvs1", 4 * S + 5 * MS, 10, ACTIVE, link="private")  # an older one, late on the other link
    assert "pulse.heartbeat_ignored" not in types(eff)  # new on its link: fine, it proves life
    assert n.state.peers["lvs1"].role == BACKUP and n.role == ACTIVE  # but no split brain from old news
    assert not n.state.peers["lvs1"].links["private"].degraded


@pytest.mark.parametrize("rules", [4, 5])
def test_a_peer_that_left_stays_gone_for_its_epoch(rules):
    """Under rules 4 the leaving peer is gone but the listen goes on for deadtime; under rules 5 the
    listen is over (the peer was heard: it left) and the backup takes over at once."""
    n = Node("lvs2")
    n.configure(make_model())
    n.start(0, rules=rules)
    n.hb("lvs1", 1 * S, 9, ACTIVE)
    n.hb("lvs1", 1 * S + 1, 9, ACTIVE, link="private")
    assert n.role == BACKUP
    eff = n.hb("lvs1", 2 * S, 11, STOPPED, leaving=True)
    assert n.role == (BACKUP if rules == 4 else ACTIVE)  # rules 4: still listening (deadtime after its start)
    assert of(eff, "pulse.peer_dead")[0]["cause"] == "left"
    n.hb("lvs1", 2 * S + 1, 11, STOPPED, leaving=True, link="private")  # the other copy
    n.hb("lvs1", 2 * S + 2, 10, ACTIVE, link="private")  # an older one, late
    assert not n.state.peers["lvs1"].alive
    n.timer(DEADTIME)
    assert n.role == ACTIVE and n.role_changes()[-1] == (BACKUP, ACTIVE, "peer_left")
    assert [p["cause"] for p in of(n.all_effects(), "pulse.peer_dead")] == ["left"]
    # it comes back as a new run
    eff = n.hb("lvs1", 10 * S, 1, BACKUP, epoch=2)
    assert n.state.peers["lvs1"].alive and types(eff)[:2] == ["pulse.peer_restarted", "pulse.peer_alive"]


def test_public_link_down_alone_is_a_fault_private_alone_is_not():
    """The VIPs live on the public link: an active that loses it steps down (FAULT) even while the
    private link still carries heartbeats, so that the backup takes over; the backup hears the
    FAULT role over the private link and takes over at once, without waiting for deadtime."""
    n = Node("lvs1")
    n.configure(make_model())
    n.start(0)
    n.timer(DEADTIME)
    assert n.role == ACTIVE
    eff = n.link("public", False, 3 * S)
    assert n.role == FAULT
    assert types(eff)[:3] == ["pulse.stop_lvsd", "pulse.release_vips", "router.role_changed"]
    assert of(eff, "router.role_changed")[0]["reason"] == "public_link_down"
    eff = n.link("public", True, 5 * S)
    assert n.role == BACKUP
    m = Node("lvs1")
    m.configure(make_model())
    m.start(0)
    m.timer(DEADTIME)
    assert m.link("private", False, 3 * S) == [] and m.role == ACTIVE


def _active_alone(name: str = "lvs1") -> Node:
    n = Node(name)
    n.configure(make_model())
    n.start(0)
    n.timer(DEADTIME)
    assert n.role == ACTIVE
    return n


def test_late_news_of_an_active_peer_re_announces_once_a_deadtime_and_changes_nothing_else():
    n = _active_alone()
    t = DEADTIME + 100 * MS
    n.hb("lvs2", t, 5, BACKUP)
    n.hb("lvs2", t + 1, 5, BACKUP, link="private")
    role, peers = n.role, n.core.snapshot(n.state)["peers"]
    eff = n.hb("lvs2", t + 2, 4, ACTIVE)  # its ACTIVE heartbeat, overtaken by the BACKUP one
    assert of(eff, "pulse.heartbeat_ignored")[0]["reason"] == "stale_seq"
    assert [g["reason"] for g in of(eff, "pulse.send_garp")] == ["peer_was_active"]
    assert n.role == role and n.core.snapshot(n.state)["peers"] == peers
    assert not of(n.fence("lvs2", t + 3, 3), "pulse.send_garp")  # within a deadtime: once
    assert not of(n.hb("lvs2", t + DEADTIME, 2, BACKUP), "pulse.send_garp")  # late but not active
    eff = n.fence("lvs2", t + 2 + DEADTIME, 3)  # a deadtime later a late fence counts again
    assert [g["reason"] for g in of(eff, "pulse.send_garp")] == ["peer_was_active"] and n.role == ACTIVE


def test_a_peer_heard_again_while_active_gets_our_vips_announced_again():
    n = _active_alone()
    eff = n.hb("lvs2", DEADTIME + 100 * MS, 1, BACKUP)
    assert of(eff, "pulse.peer_alive") and [g["reason"] for g in of(eff, "pulse.send_garp")] == ["peer_returned"]
    assert not of(n.hb("lvs2", DEADTIME + 101 * MS, 1, BACKUP, link="private"), "pulse.send_garp")  # alive already


def test_pulse_restarted_while_active_announces_its_vips_again():
    n = _active_alone()
    eff = n.start(DEADTIME + 2 * S, epoch=2)  # the shell came back under the running router
    assert n.role == ACTIVE and [g["reason"] for g in of(eff, "pulse.send_garp")] == ["restarted"]
    b = Node("lvs2")
    b.configure(make_model())
    b.start(0)
    assert not of(b.start(1 * S, epoch=2), "pulse.send_garp")  # a backup holds nothing to announce


def test_a_peer_whose_active_spell_ends_gets_our_vips_announced_again():
    """An active spell of a peer that overlapped ours (a split brain we won, a preemption in flight)
    may have ended with an announcement of its own after ours: when it says it is BACKUP again (or
    leaves), announce once more. Only then; a peer that was BACKUP all along costs nothing."""
    n = _active_alone()
    t = DEADTIME + 100 * MS
    assert [g["reason"] for g in of(n.hb("lvs2", t, 1, BACKUP), "pulse.send_garp")] == ["peer_returned"]
    assert not of(n.hb("lvs2", t + 1 * S, 2, BACKUP), "pulse.send_garp")  # BACKUP all along
    eff = n.hb("lvs2", t + 2 * S, 3, ACTIVE)  # a split brain: we win and announce at once
    assert [g["reason"] for g in of(eff, "pulse.send_garp")] == ["split_brain"] and n.role == ACTIVE
    assert not of(n.hb("lvs2", t + 2 * S + 1, 3, ACTIVE, link="private"), "pulse.send_garp")  # same datagram
    eff = n.hb("lvs2", t + 2 * S + 500 * MS, 4, BACKUP)  # it stepped down: its spell is over
    assert [g["reason"] for g in of(eff, "pulse.send_garp")] == ["peer_stepped_down"]
    assert of(eff, "pulse.send_garp")[0]["repeat"] == 3
    assert not of(n.hb("lvs2", t + 2 * S + 500 * MS + 1, 4, BACKUP, link="private"), "pulse.send_garp")
    assert not of(n.hb("lvs2", t + 3 * S, 5, BACKUP), "pulse.send_garp")  # once per spell
    n.hb("lvs2", t + 4 * S, 6, ACTIVE)
    eff = n.hb("lvs2", t + 4 * S + 10 * MS, 7, STOPPED, leaving=True)  # leaving ends a spell too
    assert [g["reason"] for g in of(eff, "pulse.send_garp")] == ["peer_stepped_down"]
    b = Node("lvs2")  # a backup holds nothing to announce
    b.configure(make_model())
    b.start(0)
    b.hb("lvs1", 1 * S, 1, ACTIVE)
    assert not of(b.hb("lvs1", 2 * S, 2, BACKUP), "pulse.send_garp")


def test_a_peer_back_from_the_dead_no_longer_active_is_announced_once():
    n = _active_alone()
    t = DEADTIME + 100 * MS
    n.hb("lvs2", t, 1, BACKUP)
    n.hb("lvs2", t + 1 * S, 2, ACTIVE)
    n.timer(t + 1 * S + DEADTIME)  # silent since: dead, believed ACTIVE
    assert not n.state.peers["lvs2"].alive
    eff = n.hb("lvs2", t + 10 * S, 3, BACKUP)
    assert [g["reason"] for g in of(eff, "pulse.send_garp")] == ["peer_returned"]


def test_three_routers_a_split_brain_loser_that_announced_last_is_followed_by_the_winner():
    """Simulator seeds 228 and 1529 (three routers) and 417 (four): lvs2, cut off, takes over; lvs1
    hears it first, wins the split brain and announces; lvs2, still active, hears lvs3 come back and
    announces (peer_returned) after lvs1 did; then it hears lvs1 and steps down. lvs1 must announce
    after that, or the clients stay on lvs2's MAC. (Rules 4, as the seeds ran: under rules 5 the
    routers' listens end at other times and the scenario does not arise from these inputs.)"""
    c = Cluster(names=("lvs1", "lvs2", "lvs3"), rules=4)
    c.start("lvs1", 0)
    c.start("lvs2", 300 * MS)
    c.start("lvs3", 600 * MS)
    c.run_until(10 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP, "lvs3": BACKUP}
    for peer in ("lvs1", "lvs3"):
        for link in ("public", "private"):
            c.cut_link("lvs2", peer, link)
    c.run_until(15 * S)
    assert c.roles()["lvs2"] == ACTIVE
    for link in ("public", "private"):  # lvs1-lvs2 heal first, then lvs2-lvs3
        c.cut.discard((frozenset(("lvs1", "lvs2")), link))
    c.run_until(15 * S + 1)
    c.heal()
    c.run_until(25 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP, "lvs3": BACKUP}
    garps = [(t, n, p["reason"]) for t, n, ty, p in c.trace if ty == "pulse.send_garp" and t > 15 * S]
    # the scenario happened: lvs1 announced, then lvs2 did, still active
    assert [g[1:] for g in garps[:2]] == [("lvs1", "split_brain"), ("lvs2", "peer_returned")]
    assert garps[-1][1:] == ("lvs1", "peer_stepped_down")  # the last word is the active's


def test_late_news_is_rate_limited_per_peer_not_for_all():
    """Simulator seed 12442 of --routers 3: lvs2's late news made lvs1 announce; 1.8 s later lvs3's
    (its ACTIVE heartbeat overtaken by its BACKUP one) was dropped by the one deadtime-long limit
    for all, and clients stayed on lvs3's MAC. Each peer's late news counts on its own."""
    n = Node("lvs1")
    n.configure(make_model(("lvs1", "lvs2", "lvs3")))
    n.start(0)
    n.timer(DEADTIME)
    assert n.role == ACTIVE
    t = DEADTIME + 100 * MS
    for peer in ("lvs2", "lvs3"):
        n.hb(peer, t, 5, BACKUP)
    assert [g["reason"] for g in of(n.hb("lvs2", t + 1, 4, ACTIVE), "pulse.send_garp")] == ["peer_was_active"]
    assert not of(n.hb("lvs2", t + 2, 3, ACTIVE), "pulse.send_garp")  # the same peer: once a deadtime
    assert [g["reason"] for g in of(n.hb("lvs3", t + 1 * S, 4, ACTIVE), "pulse.send_garp")] == ["peer_was_active"]
    # a snapshot from before the limit was kept per peer (one number) restores as that bound for each
    import msgpack

    from lvsbus.runtime.snapshot import decode_state

    snap = v8_snapshot(n.core.snapshot(n.state))
    snap["reannounce_after"] = t + 2 * S  # snapshot version 3: one number
    body = msgpack.packb({"core": "pulse", "v": 3, "state": snap}, use_bin_type=True)
    st = decode_state(n.core, body)
    assert st.unit().reannounce_after == {p: t + 2 * S for p in n.state.peers}  # one bound for every peer


def test_the_shells_vip_reconciliation_and_link_watch_decide_in_pure_code():
    """services/pulse/core.py's reconcile_vips and link_changes: the real shell and the simulator
    call them (on_caught_up after a restart; each poll of the links)."""
    from lvsbus_services.pulse.core import RELEASE, TAKE, _settings_from_model, link_changes, reconcile_vips

    s = _settings_from_model(make_config(), "lvs1")
    assert s.vips
    n = Node("lvs1")
    assert reconcile_vips(n.state) == []  # no config
    n.configure(make_model())
    assert reconcile_vips(n.state) == []  # INIT: a fresh run's first decision releases them
    for role, todo in (("ACTIVE", TAKE), ("BACKUP", RELEASE), ("FAULT", RELEASE)):
        n.state.unit().role = role
        assert reconcile_vips(n.state) == [(todo, s.vips)]
    known = {"public": False}
    assert link_changes(known, {"public": False, "private": True}) == []  # never reported: up
    assert link_changes(known, {"public": True, "private": False}) == [("public", True), ("private", False)]
    assert known == {"public": True, "private": False}


def test_the_link_watch_polls_the_configured_links_every_keepalive_only_with_monitor_links():
    """link_devices / link_poll_interval: what the real shell's link watch and the simulator's poll."""
    from lvsbus_services.pulse.core import link_devices, link_poll_interval

    model = make_model()
    model["heartbeat"]["monitor_links"] = True
    model["routers"][0].update(device="ens3", private_device=None)
    model["routers"][1]["private_address"] = None
    assert link_devices(model, "lvs1") == {"public": "ens3", "private": None}  # None: the shell finds it
    assert link_devices(model, "lvs2") == {"public": model["routers"][1]["device"]}  # no private link
    assert link_devices(model, "nobody") == {}
    model["heartbeat"]["monitor_links"] = False
    assert link_devices(model, "lvs1") == {}
    assert link_poll_interval(1 * S) == 1 * S and link_poll_interval(5 * MS) == 20 * MS


def test_pulse_started_is_built_once_for_the_shell_and_the_simulator():
    """started_payload: the real shell's and the simulator's pulse.started (a valid event, the
    addresses sorted, both cut to what the event holds)."""
    from lvsbus.wire.events import REGISTRY
    from lvsbus_services.pulse.core import started_payload

    p = started_payload(1_767_225_600, "h" * 300, {"10.0.0.2", "10.0.0.1", "::1"}, key_loaded=False)
    REGISTRY.validate("pulse.started", REGISTRY.latest("pulse.started").version, p)
    assert p == {"epoch": 1_767_225_600, "hostname": "h" * 256, "addresses": ["10.0.0.1", "10.0.0.2", "::1"],
                 "key_loaded": False, "listen": True, "rules": 5}
    assert len(started_payload(1, "h", [f"10.1.{i // 256}.{i % 256}" for i in range(2000)], True)["addresses"]) == 1024


# ---------------------------------------------------------------------------------------------
# rules 5: a listen ends once every peer has told its roles since it began


def test_rules_5_a_fence_alone_does_not_end_the_listen():
    """A fence proves the peer lives but says nothing of its role per unit: only a heartbeat heard
    since the listen began ends it early. The backup keeps listening until lvs1's heartbeat."""
    n = Node("lvs2")
    n.configure(make_model())
    n.start(0)
    n.fence("lvs1", 100 * MS, 5)
    assert n.role == BACKUP and not n.state.unit().done_listening()
    n.hb("lvs1", 200 * MS, 6, ACTIVE)
    assert n.state.unit().done_listening()
    assert n.role == BACKUP  # lvs1 (higher) is active: nothing to take over


def test_rules_5_a_restarted_pulse_does_not_end_its_listen_on_what_it_heard_before():
    """pulse restarted (a BACKUP restored from the log, listen): the peer's heartbeats heard before
    the restart end nothing, however fresh; its next one does (and lvs1 active, lvs2 stays backup)."""
    n = Node("lvs2")
    n.configure(make_model())
    n.start(0)
    for i, t in enumerate(range(0, 5 * S, KEEPALIVE)):
        n.hb("lvs1", t + LATENCY, i + 1, ACTIVE)
    assert n.role == BACKUP
    n.start(5 * S, epoch=2)  # the shell restarted: the core restored, listening again
    assert n.state.unit().listen_since == 5 * S and not n.state.unit().done_listening()
    n.timer(5 * S + 500 * MS)
    assert n.role == BACKUP and not n.state.unit().done_listening()
    n.hb("lvs1", 5 * S + 600 * MS, 99, ACTIVE)
    assert n.state.unit().done_listening() and n.role == BACKUP


def test_rules_5_with_three_routers_every_peer_must_have_told():
    """lvs1 (highest) starts with lvs2 and lvs3 configured: lvs2's heartbeat alone does not end its
    listen (what lvs3 is, maybe active, is unknown until it tells); lvs3's then does."""
    n = Node("lvs1")
    n.configure(make_model(("lvs1", "lvs2", "lvs3")))
    n.start(0)
    n.hb("lvs2", 100 * MS, 1, BACKUP)
    assert n.role == BACKUP and not n.state.unit().done_listening()
    n.hb("lvs3", 200 * MS, 1, BACKUP)
    assert n.role == ACTIVE and n.role_changes()[-1] == (BACKUP, ACTIVE, "no_active")
