"""Tracking a virtual service ([track.NAME] kind = "service", lvsbus's own: keepalived cannot): a
group gives up active when one of its virtual services has lost quorum on this router while the
peer still has it. The pure rule (services/pulse/tracking.service_seen) and what pulse's core does
with nanny's verdicts, on cores wired over an in-memory network (tests/helpers/pulse_cluster.py)."""
from __future__ import annotations

import dataclasses

import lvsbus.wire.catalog  # noqa: F401  (fills the registry)
from lvsbus.config import Track, TrackKind, to_dict
from lvsbus.config.model import Group, RealServer
from lvsbus_services.pulse.core import ACTIVE, BACKUP, PulseCore
from lvsbus_services.pulse.tracking import TrackSpec, service_seen, specs
from tests.helpers.pulse_cluster import S, Cluster, make_config

SPEC = TrackSpec("websvc", "service", -150, False, "web", 2, 1, (("web/a", 1), ("web/b", 1), ("web/c", 1)))


def test_the_rule_waits_for_every_verdict_then_applies_quorum_with_hysteresis():
    assert service_seen(SPEC, {"web/a": "UP", "web/b": "UP"}, None) is None  # c not checked yet
    every = {"web/a": "UP", "web/b": "UP", "web/c": "DOWN"}
    assert service_seen(SPEC, every, None) == 1  # 2 >= quorum 2
    # hysteresis 1: an up service goes down below quorum - 1, a down one comes back at quorum + 1
    assert service_seen(SPEC, {**every, "web/b": "DOWN"}, 1) == 1  # 1 >= 1
    assert service_seen(SPEC, {**every, "web/a": "DOWN", "web/b": "DOWN"}, 1) == 0
    assert service_seen(SPEC, every, 0) == 0  # 2 < 3: still down
    assert service_seen(SPEC, {**every, "web/c": "FALLING"}, 0) == 1  # FALLING is in service


def test_specs_take_the_virtual_services_active_servers_and_quorum():
    cfg = make_config()
    vs = dataclasses.replace(cfg.virtual("web"), quorum=2, hysteresis=1, servers=(
        RealServer("a", "192.168.100.10", weight=3), RealServer("b", "192.168.100.11", active=False)))
    (spec,) = specs([Track("websvc", TrackKind.SERVICE, weight=-150, virtual="web")], "lvs1", {"web": vs})
    assert spec == TrackSpec("websvc", "service", -150, False, "web", 2, 1, (("web/a", 3),))
    assert TrackSpec.from_plain([list(x) if isinstance(x, tuple) else x for x in spec]) == spec
    assert TrackSpec.from_plain(["old", "interface", -5, False]) == TrackSpec("old", "interface", -5, False)


def service_cluster(model=None) -> Cluster:
    cfg = dataclasses.replace(make_config(), tracks=(Track("websvc", TrackKind.SERVICE, weight=-150, virtual="web"),))
    c = Cluster(model=model or to_dict(cfg))
    c.start("lvs1")
    c.start("lvs2")
    c.run_until(10 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}
    return c


def later(c: Cluster, name: str) -> list[dict]:
    """pulse.priority_changed after the start's (which states the tracked priority once)."""
    return [p for t, p in c.outputs_of(name, "pulse.priority_changed") if t > 0]


def changes(c: Cluster, name: str) -> list[tuple[str, str, str]]:
    return [(p["old"], p["new"], p["reason"]) for _t, p in c.outputs_of(name, "router.role_changed")]


def test_quorum_lost_here_but_not_on_the_peer_moves_the_group_and_back():
    c = service_cluster()
    for r in ("lvs1", "lvs2"):
        c.server(r, "web", "a", True)
    c.run_until(12 * S)
    assert not later(c, "lvs1")  # fine: no change since the start's
    c.server("lvs1", "web", "a", False)  # lvs1's nanny: the only server is DOWN (lvs2 still sees it UP)
    c.run_until(20 * S)
    assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}
    (prio,) = later(c, "lvs1")
    assert (prio["old"], prio["new"]) == (200, 50)
    assert prio["items"] == [{"track": "websvc", "failed": True, "effect": -150}]
    assert ("BACKUP", "ACTIVE", "preempt") in changes(c, "lvs2")
    c.server("lvs1", "web", "a", True)
    c.run_until(30 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}
    assert c.outputs_of("lvs1", "pulse.priority_changed")[-1][1]["new"] == 200


def test_quorum_lost_everywhere_moves_nothing():
    c = service_cluster()
    for r in ("lvs1", "lvs2"):
        c.server(r, "web", "a", False)
    c.run_until(20 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}  # 50 against 1 (100 - 150, clamped)
    assert not [ch for ch in changes(c, "lvs1") if ch[1] != ACTIVE and ch[0] == ACTIVE]


def test_no_verdict_yet_counts_as_fine_and_other_servers_change_nothing():
    c = service_cluster()
    c.server("lvs2", "web-tls", "a", False)  # a service nobody tracks: not even the clock moves
    node = c.nodes["lvs2"]
    before = node.core.snapshot(node.state)
    c.run_until(c.now + 1)
    c.server("lvs1", "web6", "a", False)
    c.run_until(12 * S)
    assert node.core.snapshot(node.state)["server_health"] == {"web-tls/a": "DOWN"}
    assert before["server_health"] == {}
    assert not later(c, "lvs1") and c.roles()["lvs1"] == ACTIVE


def test_a_service_track_moves_only_its_virtual_services_group():
    cfg = make_config()
    vss = tuple(dataclasses.replace(vs, group="web") if vs.name in ("web", "web-tls") else vs
                for vs in cfg.virtual_services)
    cfg = dataclasses.replace(cfg, virtual_services=vss, groups=(Group("web"),),
                              tracks=(Track("websvc", TrackKind.SERVICE, weight=-150, virtual="web"),))
    c = service_cluster(to_dict(cfg))
    c.server("lvs1", "web", "a", False)
    c.run_until(20 * S)
    prios = [p for _t, p in c.outputs_of("lvs1", "pulse.priority_changed")]
    assert {p["group"] for p in prios} == {"web"}
    lvs2 = [(p["group"], p["new"]) for _t, p in c.outputs_of("lvs2", "router.role_changed")]
    assert ("web", ACTIVE) in lvs2 and ("default", ACTIVE) not in lvs2


def test_a_version_9_snapshot_reads_with_no_verdicts():
    c = service_cluster()
    node = c.nodes["lvs1"]
    snap = node.core.snapshot(node.state)
    old = {k: v for k, v in snap.items() if k != "server_health"}
    assert PulseCore.snapshot_upcasters[9](old)["server_health"] == {}
