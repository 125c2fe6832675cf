"""Operator actions as recorded inputs (issue 16): ``operator.server_action`` (drain, disable,
enable) through lvsd's core and ``operator.handover_requested`` through pulse's core; each answer is
an output, so replay checks it like any decision."""
from __future__ import annotations

import msgpack
import pytest

import lvsbus.wire.catalog  # noqa: F401  (fills the registry)
from lvsbus.config import RealServer
from lvsbus.wire.events import REGISTRY
from lvsbus.runtime.snapshot import decode_state, encode_state
from lvsbus_services.lvsd.core import LvsdCore
from lvsbus_services.pulse.core import ACTIVE, BACKUP
from tests.helpers.lvsd_driver import Lvsd, config, vs
from tests.helpers.pulse_cluster import LATENCY, MS, S, Cluster, Node, make_model, of, steady_pair

# ---------------------------------------------------------------------------------------------
# lvsd: drain, disable, enable


def act(l: Lvsd, action: str, server: str, virtual: str = "web", by: str = "alice"):
    payload = {"virtual": virtual, "server": server, "action": action, "by": by, "via": "cli", "reason": ""}
    REGISTRY.validate("operator.server_action", 1, payload)
    out = l.feed("operator.server_action", payload)
    for e in out:
        REGISTRY.validate(e.type, REGISTRY.latest(e.type).version, e.payload)
    return out


def answer(out) -> tuple[str, str]:
    (a,) = [e.payload for e in out if e.type == "lvsd.server_action_taken"]
    return a["outcome"], a["state"]


def test_drain_keeps_the_server_at_weight_0_and_enable_gives_its_weight_back():
    l = Lvsd(config(vs(2, weights=[3, 5])))
    l.up("s0"), l.up("s1")
    assert l.dests() == {"10.0.0.1:80": 3, "10.0.0.2:80": 5}
    out = act(l, "drain", "s0")
    assert answer(out) == ("applied", "drained")
    (delta,) = [e.payload for e in out if e.type == "lvsd.table_delta"]
    assert [(o["op"], o["dest"], o["attrs"]["weight"]) for o in delta["ops"]] == [("edit_dest", "10.0.0.1:80", 0)]
    assert delta["reason"] == "web/s0 drained by alice (cli)" and (delta["virtual"], delta["server"]) == ("web", "s0")
    assert l.dests() == {"10.0.0.1:80": 0, "10.0.0.2:80": 5}
    assert answer(act(l, "drain", "s0")) == ("unchanged", "drained")  # again: nothing to do, no delta
    l.down("s0")  # a drained server that fails leaves as any failed server would
    assert l.dests() == {"10.0.0.2:80": 5}
    l.up("s0")  # and comes back still drained
    assert l.dests() == {"10.0.0.1:80": 0, "10.0.0.2:80": 5}
    out = act(l, "enable", "s0")
    assert answer(out) == ("applied", "enabled")
    assert l.dests() == {"10.0.0.1:80": 3, "10.0.0.2:80": 5}
    assert answer(act(l, "enable", "s0")) == ("unchanged", "enabled")


def test_disable_takes_the_server_out_whatever_its_health_until_enabled():
    l = Lvsd(config(vs(2)))
    l.up("s0")
    assert answer(act(l, "disable", "s0")) == ("applied", "disabled")
    assert l.dests() == {}
    l.up("s1"), l.down("s0"), l.up("s0")
    assert l.dests() == {"10.0.0.2:80": 1}
    act(l, "drain", "s0")  # disabled -> drained: back at weight 0
    assert l.dests() == {"10.0.0.1:80": 0, "10.0.0.2:80": 1}
    act(l, "enable", "s0")
    assert l.dests() == {"10.0.0.1:80": 1, "10.0.0.2:80": 1}


def test_disable_beats_quiesce_and_inhibit_weight_0_entries():
    l = Lvsd(config(vs(1, inhibit_on_failure=True)))
    assert l.dests() == {"10.0.0.1:80": 0}  # inhibit: kept at weight 0 before any check
    act(l, "disable", "s0")
    assert l.dests() == {}


def test_unknown_server_or_service_changes_nothing():
    l = Lvsd(config(vs(1)))
    l.up("s0")
    for virtual, server in (("web", "nope"), ("nope", "s0")):
        out = act(l, "drain", server, virtual=virtual)
        assert answer(out) == ("unknown_server", "enabled")
        assert [e.type for e in out] == ["lvsd.server_action_taken"]
    assert l.dests() == {"10.0.0.1:80": 1}


def test_drained_or_disabled_servers_do_not_count_toward_quorum_so_the_sorry_server_comes_in():
    l = Lvsd(config(vs(1, sorry_server="10.0.0.99")))
    l.up("s0")
    assert l.dests() == {"10.0.0.1:80": 1}
    act(l, "disable", "s0")
    assert l.dests() == {"10.0.0.99:80": 1}
    act(l, "enable", "s0")
    assert l.dests() == {"10.0.0.1:80": 1}


def test_not_live_the_action_is_answered_and_folded_into_the_next_full_table():
    l = Lvsd(config(vs(2)), start=False)
    l.up("s0"), l.up("s1")
    out = act(l, "drain", "s1")
    assert [e.type for e in out] == ["lvsd.server_action_taken"]  # no delta from a standby
    l.feed("pulse.start_lvsd", {"reason": "peer_dead"})
    assert l.dests() == {"10.0.0.1:80": 1, "10.0.0.2:80": 0}


def test_a_reload_keeps_the_state_of_servers_still_configured_and_forgets_removed_ones():
    l = Lvsd(config(vs(2)))
    l.up("s0"), l.up("s1")
    act(l, "drain", "s0"), act(l, "disable", "s1")
    l.config(config(vs(2, weights=[4, 4])), digest="d2")
    assert l.dests() == {"10.0.0.1:80": 0}
    assert l.st.admin == {"web/s0": "drained", "web/s1": "disabled"}
    only_s0 = vs(1)
    l.config(config(only_s0), digest="d3")
    assert l.st.admin == {"web/s0": "drained"}
    servers = (*only_s0.servers, RealServer(name="s1", address="10.0.0.2"))
    l.config(config(vs(1, servers=servers)), digest="d4")  # s1 is back: enabled, health starts over
    assert l.st.admin == {"web/s0": "drained"}


def test_snapshot_keeps_the_operator_state_and_a_version_1_snapshot_reads_as_none():
    l = Lvsd(config(vs(2)))
    l.up("s0"), l.up("s1")
    act(l, "drain", "s0")
    core = LvsdCore()
    back = decode_state(core, encode_state(core, l.st))
    assert back.admin == {"web/s0": "drained"} and back.table == l.st.table
    v1 = core.snapshot(l.st)
    del v1["admin"]
    body = msgpack.packb({"core": "lvsd", "v": 1, "state": v1}, use_bin_type=True)
    assert decode_state(core, body).admin == {}


# ---------------------------------------------------------------------------------------------
# pulse: handover


def handover(c: Cluster, node: str, at: int, hold_s: int = 60) -> None:
    payload = {"by": "alice", "via": "cli", "reason": "maintenance", "hold_s": hold_s}
    REGISTRY.validate("operator.handover_requested", 1, payload)
    c._push(at, node, "operator.handover_requested", payload)


def test_handover_steps_down_the_peer_takes_over_at_once_and_it_is_not_preempted_back():
    c = steady_pair()  # lvs1 (priority 200) active, lvs2 (100) backup, preempt on
    t0 = c.now + 300 * MS
    handover(c, "lvs1", t0, hold_s=60)
    c.run_until(t0 + 10 * MS)
    assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}
    out = [ty for t, n, ty, _ in c.trace if n == "lvs1" and t == t0]
    assert out[:3] == ["pulse.stop_lvsd", "pulse.release_vips", "router.role_changed"]
    assert c.nodes["lvs1"].role_changes()[-1] == (ACTIVE, BACKUP, "handover")
    took = [t for t, p in c.outputs_of("lvs2", "router.role_changed") if p["new"] == ACTIVE]
    assert took == [t0 + LATENCY]  # one network hop: lvs1 told lvs2 at once
    assert c.nodes["lvs2"].role_changes()[-1] == (BACKUP, ACTIVE, "peer_stepped_down")
    c.run_until(t0 + 59 * S)
    assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}  # the hold: priority 0, no preemption
    c.run_until(t0 + 70 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}  # then lvs1 outranks lvs2 again (preempt on)


def test_handover_is_refused_on_a_backup_and_without_a_live_peer():
    c = steady_pair()
    t0 = c.now + 300 * MS
    handover(c, "lvs2", t0)
    c.run_until(t0 + 10 * MS)
    assert [p["reason"] for _, p in c.outputs_of("lvs2", "pulse.handover_refused")] == ["not_active"]
    c.crash("lvs2")
    c.run_until(c.now + 5 * S)  # lvs2 dead for lvs1
    handover(c, "lvs1", c.now + 1)
    c.run_until(c.now + 10 * MS)
    assert [p["reason"] for _, p in c.outputs_of("lvs1", "pulse.handover_refused")] == ["no_peer"]
    assert c.roles()["lvs1"] == ACTIVE


@pytest.mark.parametrize("role", ["INIT", "STOPPED"])
def test_handover_before_start_or_after_stop_changes_nothing(role):
    n = Node("lvs1")
    if role == "STOPPED":
        n.configure(make_model())
        n.start(0)
        n.shutdown(1)
    out = n.feed("operator.handover_requested", {"by": "bob", "via": "web", "reason": "", "hold_s": 5}, 2, source="operator")
    assert n.role == role
    assert of(out, "pulse.handover_refused") == ([] if role == "STOPPED" else [{"by": "bob", "role": role, "reason": "not_active"}])
