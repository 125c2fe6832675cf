"""Scale-out in the simulator (tools/simulate_scaleout.py): N active routers running the product's
bgp core, their speakers, the upstream's ECMP table; a seed sweep whose logs replay, the scenarios
the issue names (a router's death, a drain, a planned stop, a VIP losing quorum on one router), and
each invariant failing when the bgp core is made to misbehave.

The full sweep is ``lvsbus simulate --scaleout --seeds 0-999`` (docs/scaleout.md gives its figures).
"""
from __future__ import annotations

import os

import pytest

from lvsbus.cli import main as cli
from lvsbus_services.bgp.core import BgpCore
from lvsbus_tools.simulate import MS, S, Fault
from lvsbus_tools.simulate_scaleout import (
    BFD_DETECT_NS, SCALEOUT_FAULT_KINDS, ScaleoutCluster, generate_scaleout_faults, run_scaleout_seed,
)

WEB, API = "10.0.0.100", "10.0.0.101"
ALL = ["lvs1", "lvs2", "lvs3"]


def at(t: int, faults: list[Fault], seed: int = 1) -> ScaleoutCluster:
    """The cluster as it is at ``t`` (the run stops there; the settled checks do not apply)."""
    c = ScaleoutCluster(seed, faults=faults, duration=t)
    c.run()
    return c


def test_sweep_holds_every_invariant_and_every_log_replays():
    failed = [r.summary() for r in (run_scaleout_seed(s, verify=True) for s in range(40)) if not r.ok]
    assert not failed, "\n".join(failed)


def test_same_seed_same_logs(tmp_path):
    a = ScaleoutCluster(5, log_root=str(tmp_path / "a")).run()
    b = ScaleoutCluster(5, log_root=str(tmp_path / "b")).run()
    assert a.events == b.events > 1000
    for name in ALL:
        seg = os.path.join(name, "log", "00000000000000000001.seg")
        assert (tmp_path / "a" / seg).read_bytes() == (tmp_path / "b" / seg).read_bytes()


def test_schedules_cover_every_scaleout_fault_kind():
    kinds = {f.kind for s in range(300) for f in generate_scaleout_faults(s)}
    assert kinds == set(SCALEOUT_FAULT_KINDS)
    bgp_crashes = [f for s in range(300) for f in generate_scaleout_faults(s) if f.target.endswith("/bgp")]
    assert bgp_crashes and all(f.kind == "service_crash" for f in bgp_crashes)


def test_every_router_announces_and_the_upstream_spreads_over_all():
    c = at(8 * S, [])
    assert c.ecmp(WEB) == c.ecmp(API) == ALL
    assert all(set(r.vips) == {WEB, API} for r in c.routers.values())
    assert not c.violations


def test_a_dead_router_leaves_the_ecmp_set_after_bfd_detection():
    crash = [Fault(8 * S, "router_crash", "lvs2", 20 * S)]
    assert at(8 * S + BFD_DETECT_NS - 10 * MS, crash).ecmp(WEB) == ALL  # not seen yet
    c = at(8 * S + BFD_DETECT_NS + 10 * MS, crash)
    assert c.ecmp(WEB) == c.ecmp(API) == ["lvs1", "lvs3"] and not c.violations


def test_a_router_whose_service_loses_quorum_withdraws_that_vip_alone():
    """lvs2 loses its path to two of three real servers: web (quorum 2) is below quorum there and
    withdrawn by lvs2 alone; api (quorum 1) is still announced by all three."""
    cut = [Fault(8 * S, "path_down", "lvs2/rs1", 20 * S), Fault(8 * S, "path_down", "lvs2/rs2", 20 * S)]
    c = at(14 * S, cut)
    assert c.ecmp(WEB) == ["lvs1", "lvs3"]
    assert c.ecmp(API) == ALL
    assert not c.violations
    assert at(30 * S, cut).ecmp(WEB) == ALL  # its paths back: announced again


def test_a_drain_moves_new_flows_away_while_the_route_stays():
    drain = [Fault(8 * S, "bgp_drain", "lvs3", 5 * S)]
    c = at(9 * S, drain)
    assert c.adj["lvs3"] == {WEB: "drain", API: "drain"}  # still announced (GRACEFUL_SHUTDOWN)
    assert c.ecmp(WEB) == ["lvs1", "lvs2"]
    assert at(15 * S, drain).ecmp(WEB) == ALL  # resumed


def test_a_planned_stop_drains_then_withdraws_then_releases_the_vips():
    stop = [Fault(8 * S, "planned_stop", "lvs3", 10 * S)]
    c = at(9 * S, stop)  # draining: out of the ECMP set, route and VIPs still there
    assert c.ecmp(WEB) == ["lvs1", "lvs2"] and c.adj["lvs3"][WEB] == "drain" and WEB in c.routers["lvs3"].vips
    c = at(10 * S, stop)  # drain_time (1.5 s) over: withdrawn, VIPs still held (pulse's stop_at is 1 s later)
    assert c.adj["lvs3"] == {} and WEB in c.routers["lvs3"].vips
    c = at(11 * S, stop)  # stopped: VIPs released, no session
    assert "lvs3" not in c.adj and not c.routers["lvs3"].vips and not c.routers["lvs3"].up
    assert at(24 * S, stop).ecmp(WEB) == ALL  # started again


def test_the_last_router_left_draining_still_carries_the_flows():
    """GRACEFUL_SHUTDOWN lowers preference: with every router drained the upstream still uses them."""
    c = at(10 * S, [Fault(8 * S, "bgp_drain", n, 5 * S) for n in ALL])
    assert c.ecmp(WEB) == ALL and all(c.adj[n][WEB] == "drain" for n in ALL)


def test_a_restarted_bgp_service_adopts_its_speaker_and_moves_nothing():
    crash = [Fault(8 * S, "service_crash", "lvs2/bgp", 2 * S)]
    c = ScaleoutCluster(1, faults=crash, duration=12 * S)
    seen = []
    real = c.check_vips

    def watch():
        real()
        if c.t >= 8 * S:
            seen.append(c.ecmp(WEB))

    c.check_vips = watch  # type: ignore[method-assign]
    res = c.run()
    assert res.ok, res.summary()
    assert seen and all(hops == ALL for hops in seen)
    assert c.routers["lvs2"].services["bgp"].up


# -- the invariants bite ------------------------------------------------------------------------

def test_announcing_without_quorum_breaks_the_safety_invariant(monkeypatch):
    real = BgpCore.wanted

    def deaf(self, st):  # the core forgets quorum: a router that reaches no server announces
        return {a: (("announce", "serving", n) if why == "quorum_lost" else (s, why, n))
                for a, (s, why, n) in real(self, st).items()}

    monkeypatch.setattr(BgpCore, "wanted", deaf)
    cut = [Fault(8 * S, "path_down", f"lvs2/rs{i}", 12 * S) for i in (1, 2, 3)]
    res = ScaleoutCluster(1, faults=cut).run()
    assert any("sends 10.0.0.100 to lvs2, which cannot serve it" in v for v in res.violations), res.summary()


def test_never_announcing_again_breaks_the_liveness_invariant(monkeypatch):
    real = BgpCore.wanted
    lost: set[str] = set()

    def sulky(self, st):  # once a VIP lost its quorum, it is never announced again
        out = real(self, st)
        for a, (s, why, n) in out.items():
            if why == "quorum_lost":
                lost.add(a)
        return {a: (("withdraw", "quorum_lost", n) if a in lost else (s, why, n)) for a, (s, why, n) in out.items()}

    monkeypatch.setattr(BgpCore, "wanted", sulky)
    down = [Fault(8 * S, "server_fail", f"rs{i}", 5 * S) for i in (1, 2, 3)]
    res = ScaleoutCluster(1, faults=down).run()
    assert any("no router announces" in v for v in res.violations), res.summary()


def test_a_drain_that_never_ends_breaks_the_settled_invariant(monkeypatch):
    real = BgpCore.decide

    def stuck(self, st, ev):  # resume is taken, the drain stays
        if ev.type == "operator.bgp_drain" and ev.payload["action"] == "resume":
            return st, []
        return real(self, st, ev)

    monkeypatch.setattr(BgpCore, "decide", stuck)
    res = ScaleoutCluster(1, faults=[Fault(8 * S, "bgp_drain", "lvs3", 3 * S)]).run()
    assert any("the routers that can serve it are ['lvs1', 'lvs2', 'lvs3']" in v for v in res.violations), res.summary()


# -- the command line ----------------------------------------------------------------------------

def test_the_command_line_sweeps_scaleout(capsys):
    assert cli(["simulate", "--scaleout", "--seeds", "0-2"]) == 0
    assert "3 seeds, 0 failed" in capsys.readouterr().out
    assert cli(["simulate", "--scaleout", "--fos"]) == 2
    assert "--scaleout runs its own cluster" in capsys.readouterr().err


@pytest.mark.parametrize("routers", [2, 4])
def test_other_router_counts(routers):
    for seed in range(3):
        res = run_scaleout_seed(seed, routers=routers, verify=True)
        assert res.ok, res.summary()
