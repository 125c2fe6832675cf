"""Scale-out on the real datapath, in the VM (issue 17; docs/scaleout.md "On the real datapath"):
an upstream router namespace running BIRD 2 with ECMP (layer-4 hashing) and BFD, three ``lvsbus
router`` processes all active (the VIP on lo, IPVS ``mh`` with ``mh-port``, direct routing, sloppy
TCP set by the applier), three real servers, a client behind the upstream with long-lived TCP
connections and new ones all the time (tests/helpers/scaleout_datapath.py).

* The upstream's route to the VIP has three nexthops; connections spread over the three routers
  and, through mh, over the three real servers; every router's IPVS table is the same.
* A router that cannot reach one of a second VIP's real servers (that virtual service needs all
  three: quorum 3) withdraws that VIP alone; the others keep announcing it, and it keeps the first.
* A router lost as a host dies (cable cut, every process SIGKILLed): BFD takes it out of the
  upstream's route, new connections succeed again, every established connection through the other
  routers carries on, and the lost router's connections continue through the others (mh maps them
  to the same real server; sloppy TCP takes them mid-flow).
* A router stopped by SIGTERM drains first: out of the ECMP set while still announcing and
  serving, no new connection fails, its established connections carry on through the last router;
  then it withdraws.
Every router's log replays (the lost one's too: its log is what it was at the SIGKILL).
The figures are bench/scaleout.py's."""
from __future__ import annotations

import math
from tests.helpers.scaleout_datapath import DRAIN, VIP, VIP2, Rig, lose_one_drain_one, lose_quorum_of_one_vip


def test_three_active_routers_lose_one_and_drain_one_flows_survive(tmp_path):
    rig = Rig(tmp_path).build()
    try:
        took = rig.start()
        quorum = lose_quorum_of_one_vip(rig, "r1")
        run = lose_one_drain_one(rig)
    finally:
        rig.close()
    c = rig.cluster
    assert c is not None
    fig, flows = run.figures, run.flows
    print(f"\nscale-out datapath (routers up in {took:.1f} s): " + "; ".join(fig.lines()))
    # r1's VIP2 lost its quorum there alone: r1 withdrew VIP2 and still announced the VIP
    assert quorum == {VIP: {"r1", "r2", "r3"}, VIP2: {"r2", "r3"}}, quorum
    r1_changes = [(e.payload["address"], e.payload["new"], e.payload["reason"]) for e in c.events("r1") if e.type == "bgp.vip_changed"]
    assert (VIP2, "withdraw", "quorum_lost") in r1_changes, r1_changes
    assert not [ch for ch in r1_changes if ch[0] == VIP and ch[2] == "quorum_lost"], r1_changes
    assert len(set(run.tables.values())) == 1, run.tables  # the same table on every router, dests in one order
    assert "mh-port" in run.tables["r1"], run.tables["r1"]
    assert run.sloppy == dict.fromkeys(rig.addrs, "1")
    assert set(run.via) == set(run.servers), (run.via, run.servers)
    assert set(run.via.values()) == set(rig.addrs), run.via  # ECMP: flows over the three routers
    assert set(run.servers.values()) == {"s1", "s2", "s3"}, run.servers  # mh with the port: over the three servers

    broken = {p: (run.via[p], f["error"]) for p, f in flows.long.items() if f["error"]}
    assert fig.survivors > 0 and fig.moved > 0, run.via
    assert fig.survivor_flows_kept == 1.0, broken
    assert fig.moved_flows_kept >= 0.95, broken
    assert not math.isnan(fig.reroute_ms) and fig.reroute_ms < 10_000, fig
    assert fig.new_failed < fig.new_total / 2, fig
    # the drain: out of the ECMP set while still serving, no new connection failed from the SIGTERM
    # on, and only then the withdrawal
    assert run.still_serving_while_drained
    assert run.t_drained - run.t_drain < DRAIN, run.t_drained - run.t_drain
    assert flows.failed_new_after(run.t_drain) == [], flows.failed_new_after(run.t_drain)[:5]
    changes = [e.payload["new"] for e in c.events("r3") if e.type == "bgp.vip_changed" and e.payload["address"] == VIP]
    assert changes[-2:] == ["drain", "withdraw"], changes
    asks = [f["asks"] for f in flows.long.values()]
    assert min(asks) > 0, asks

    from lvsbus_tools.replay import verify

    for r in rig.addrs:
        rep = verify(str(c.state(r) / "log"))
        assert rep.ok, (r, rep.format())
