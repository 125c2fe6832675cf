"""Tracking ([track.NAME]): the pure rules (services/pulse/tracking.py) and what pulse's core does
with them, on cores wired over an in-memory network (tests/helpers/pulse_cluster.py)."""
from __future__ import annotations

import dataclasses

import pytest

import lvsbus.wire.catalog  # noqa: F401  (fills the registry)
from lvsbus.config import Track, TrackKind, to_dict
from lvsbus_services.pulse.core import ACTIVE, BACKUP, FAULT, PulseCore
from lvsbus_services.pulse.tracking import TrackSpec, assess, item_effect
from tests.helpers.pulse_cluster import S, Cluster, make_config, v8_snapshot

# ---------------------------------------------------------------------------------------------
# the rules


@pytest.mark.parametrize("kind,weight,reverse,seen,failed,effect,fault", [
    # interfaces: 1 up, 0 down, None not polled yet (taken as up)
    ("interface", 0, False, 0, True, 0, True),
    ("interface", 0, False, 1, False, 0, False),
    ("interface", 0, False, None, False, 0, False),
    ("interface", -20, False, 0, True, -20, False),
    ("interface", -20, False, 1, False, 0, False),
    ("interface", 10, False, 1, False, 10, False),
    ("interface", 10, False, 0, True, 0, False),
    ("interface", 0, True, 1, True, 0, True),  # reverse: up is the failure
    # scripts: nanny's health states; failed while DOWN or RISING
    ("script", -30, False, "DOWN", True, -30, False),
    ("script", -30, False, "RISING", True, -30, False),
    ("script", -30, False, "FALLING", False, 0, False),
    ("script", -30, False, "UP", False, 0, False),
    ("script", -30, False, "INIT", False, 0, False),
    ("script", 0, False, "DOWN", True, 0, True),
    ("script", 5, True, "DOWN", False, 5, False),
    # files: value times weight; weight 0: any value but 0 is FAULT; -254 or less is FAULT
    ("file", 1, False, 30, True, 30, False),
    ("file", 2, False, -100, True, -200, False),
    ("file", 1, False, -254, True, -254, True),
    ("file", 0, False, 3, True, 0, True),
    ("file", 0, False, 0, False, 0, False),
    ("file", 1, False, None, False, 0, False),
    ("file", 3, True, 10, True, -30, False),
])
def test_item_effect(kind, weight, reverse, seen, failed, effect, fault):
    got = item_effect(TrackSpec("t", kind, weight, reverse), seen)
    assert (got.failed, got.effect, got.fault) == (failed, effect, fault)


def test_assess_clamps_only_once_an_effect_applies():
    up = TrackSpec("up", "interface", 50, False)
    down = TrackSpec("down", "interface", -80, False)
    assert assess(255, [up], {"up": 0}).priority == 255  # no effect: its own, 255 kept
    assert assess(255, [up], {"up": 1}).priority == 254  # clamped to keepalived's 1..254
    assert assess(50, [down], {"down": 0}).priority == 1
    assert assess(100, [up, down], {"up": 1, "down": 0}).priority == 70
    a = assess(100, [TrackSpec("f", "interface", 0, False), down], {"f": 0, "down": 0})
    assert a.fault == "f" and a.priority == 20 and [i.track for i in a.items] == ["f", "down"]


# ---------------------------------------------------------------------------------------------
# the core, two routers: lvs1 (priority 200) active, lvs2 (100) backup


def tracked_cluster(*tracks: Track, **heartbeat) -> Cluster:
    cfg = dataclasses.replace(make_config(**heartbeat), tracks=tracks)
    c = Cluster(model=to_dict(cfg))
    c.start("lvs1")
    c.start("lvs2")
    c.run_until(10 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}
    return c


def changes(c: Cluster, name: str) -> list[tuple[str, str, str]]:
    return [(p["old"], p["new"], p["reason"]) for _t, p in c.outputs_of(name, "router.role_changed")]


def test_a_negative_weight_moves_the_role_and_back():
    c = tracked_cluster(Track("uplink", TrackKind.INTERFACE, weight=-150, device="eth2"))
    c.observe("lvs1", "uplink", 0)
    c.run_until(20 * S)
    # lvs1 now 50 < lvs2's 100: lvs2 preempts (preempt on, no delay), lvs1 steps down (split brain)
    assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}
    prio = [p for _t, p in c.outputs_of("lvs1", "pulse.priority_changed")]
    assert prio[-1]["old"] == 200 and prio[-1]["new"] == 50 and prio[-1]["base"] == 200
    assert prio[-1]["items"] == [{"track": "uplink", "failed": True, "effect": -150}] and prio[-1]["fault"] is None
    hb = [p for _t, p in c.outputs_of("lvs1", "pulse.send_heartbeat")]
    assert hb[-1]["priority"] == 50
    assert ("BACKUP", "ACTIVE", "preempt") in changes(c, "lvs2")
    c.observe("lvs1", "uplink", 1)
    c.run_until(30 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}
    assert c.outputs_of("lvs1", "pulse.priority_changed")[-1][1]["new"] == 200


def test_a_weight_that_keeps_the_order_moves_nothing():
    c = tracked_cluster(Track("uplink", TrackKind.INTERFACE, weight=-50, device="eth2"))
    c.observe("lvs1", "uplink", 0)
    c.run_until(20 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}  # 150 still beats 100
    assert c.outputs_of("lvs1", "pulse.priority_changed")[-1][1]["new"] == 150


def test_weight_zero_is_fault_at_once_and_the_peer_takes_over_without_waiting_for_deadtime():
    c = tracked_cluster(Track("uplink", TrackKind.INTERFACE, device="eth2"))
    t0 = c.now
    c.observe("lvs1", "uplink", 0)
    c.run_until(t0 + S // 2)  # well under deadtime (3 s)
    assert c.roles() == {"lvs1": FAULT, "lvs2": ACTIVE}
    assert changes(c, "lvs1")[-1] == ("ACTIVE", "FAULT", "track_failed")
    assert [p["reason"] for _t, p in c.outputs_of("lvs1", "pulse.release_vips")][-1] == "track_failed"
    c.observe("lvs1", "uplink", 1)
    c.run_until(t0 + 20 * S)
    assert ("FAULT", "BACKUP", "track_recovered") in changes(c, "lvs1")
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}  # back, by preemption


def test_a_link_fault_and_a_track_fault_recover_with_the_reason_of_what_held_last():
    c = tracked_cluster(Track("uplink", TrackKind.INTERFACE, device="eth2"), preempt=False)
    c.observe("lvs1", "uplink", 0)
    c.run_until(12 * S)
    c._push(c.now, "lvs1", "pulse.link_changed", {"link": "public", "up": False, "device": "eth0"})
    c.run_until(13 * S)
    c.observe("lvs1", "uplink", 1)  # the link still holds it in FAULT
    c.run_until(14 * S)
    assert c.roles()["lvs1"] == FAULT
    c._push(c.now, "lvs1", "pulse.link_changed", {"link": "public", "up": True, "device": "eth0"})
    c.run_until(15 * S)
    assert changes(c, "lvs1")[-1] == ("FAULT", "BACKUP", "link_up")
    assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}  # preempt off: lvs2 keeps it


def test_a_script_moves_with_its_health_states():
    c = tracked_cluster(Track("haproxy", TrackKind.SCRIPT, weight=-150, command="pidof haproxy"))
    c.script("lvs1", "haproxy", "DOWN")
    c.run_until(20 * S)
    assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}
    c.script("lvs1", "haproxy", "RISING", old="DOWN")  # one pass of rise 2: still failed
    c.run_until(25 * S)
    assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}
    c.script("lvs1", "haproxy", "UP", old="RISING")
    c.run_until(35 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}


def test_an_item_tracked_on_another_router_changes_nothing_here():
    c = tracked_cluster(Track("uplink", TrackKind.INTERFACE, device="eth2", on_routers=("lvs2",)))
    c.observe("lvs1", "uplink", 0)
    c.run_until(20 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}
    assert c.outputs_of("lvs1", "pulse.priority_changed") == []
    c.observe("lvs2", "uplink", 0)
    c.run_until(25 * S)
    assert c.roles()["lvs2"] == FAULT


def test_a_reload_that_removes_the_tracking_restores_the_configured_priority():
    c = tracked_cluster(Track("uplink", TrackKind.INTERFACE, weight=-150, device="eth2"))
    c.observe("lvs1", "uplink", 0)
    c.run_until(20 * S)
    assert c.roles()["lvs2"] == ACTIVE
    from tests.helpers.pulse_cluster import config_payload
    c._push(c.now, "lvs1", "config.loaded", config_payload("lvs1", to_dict(make_config()), reload=True))
    c.run_until(30 * S)
    last = c.outputs_of("lvs1", "pulse.priority_changed")[-1][1]
    assert last["new"] == 200 and last["items"] == []
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}


def test_snapshot_keeps_the_tracking_state_and_an_old_snapshot_upcasts():
    c = tracked_cluster(Track("uplink", TrackKind.INTERFACE, weight=-150, device="eth2"))
    c.observe("lvs1", "uplink", 0)
    c.run_until(20 * S)
    core = PulseCore()
    st = c.nodes["lvs1"].state
    back = core.restore(core.snapshot(st))
    assert back.track_seen == {"uplink": 0} and back.unit().eff_priority == 50
    assert core.snapshot(back) == core.snapshot(st)
    old = v8_snapshot(core.snapshot(st))
    for k in ("track_seen", "eff_priority", "track_fault", "fault_cause"):
        del old[k]
    for version in range(7, core.snapshot_version):  # upcast as the snapshot store does
        old = core.snapshot_upcasters[version](old)
    up = core.restore(old)
    assert up.track_seen == {} and up.unit().eff_priority is None and up.unit().role == st.unit().role


def test_a_split_brain_is_resolved_again_when_a_rank_changes_during_it():
    """The simulator's find (seed 1407 of --tracking): lvs1 took over while lvs2 was frozen, its
    first ACTIVE heartbeat still carrying 80 (a tracked uplink down), then the uplink came back
    (200). lvs2, back, resolved the split brain on 80 (it stays), lvs1 on lvs2's 150 (it stays):
    both active for good. Rules 4: a changed rank resolves it again."""
    c = tracked_cluster(Track("uplink", TrackKind.INTERFACE, weight=-120, device="eth2"))
    c.observe("lvs1", "uplink", 0)
    c.run_until(12 * S)
    assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}
    c.crash("lvs2")  # frozen: lvs1 declares it dead and takes over with priority 80
    c.run_until(16 * S)
    assert c.nodes["lvs1"].role == ACTIVE
    c.observe("lvs1", "uplink", 1)
    c.run_until(17 * S)
    # lvs2 resumes: it first hears lvs1's old ACTIVE heartbeat (80), then the new ones (200)
    c.crashed.discard("lvs2")
    n2 = c.nodes["lvs2"]
    base = c.now
    for i, prio in enumerate((80, 200, 200)):
        c._push(base + i * S // 10, "lvs2", "pulse.heartbeat_received", {
            "link": "public", "peer": "lvs1", "address": "10.0.0.1", "role": ACTIVE, "priority": prio,
            "epoch": 1, "seq": 10_000 + i, "leaving": False})
    c.run_until(25 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}
    assert [p["winner"] for _t, p in c.outputs_of("lvs2", "pulse.split_brain_resolved")][-2:] == ["lvs2", "lvs1"]
    del n2
