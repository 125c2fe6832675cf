"""NannyCore, pure: the health table over every (state, input), rise/fall, reloads that keep state,
stale and unknown results, snapshots, determinism."""
from __future__ import annotations

import dataclasses

import msgpack
import pytest
from transitions import MachineError

from lvsbus.config import Check, Config, RealServer, Router, VirtualService, diff, to_dict
from lvsbus.config.model import CheckKind
from lvsbus.wire.events import Event
from lvsbus_services.nanny.core import (
    DISABLED, DOWN, FALLING, HEALTH_STATES, HEALTH_TRANSITIONS, INIT, RISING, UP, Health, NannyCore, fire,
    health_fsm_dot, states,
)


def make_config(n: int = 3, rise: int = 2, fall: int = 3, initial_rise: int | None = None, **vs_kw) -> Config:
    """initial_rise None: the same as rise (these tests are about rise); the model's default (1) is
    tested on its own below."""
    servers = tuple(RealServer(name=f"s{i}", address=f"10.0.0.{i + 1}", port=8080) for i in range(n))
    chk = Check(rise=rise, fall=fall, initial_rise=rise if initial_rise is None else initial_rise)
    vs = VirtualService(name="web", address="192.0.2.80", port=80, check=chk, servers=servers, **vs_kw)
    return Config(routers=(Router(name="lvs1", address="192.0.2.1"),), virtual_services=(vs,))


class Feed:
    def __init__(self, cfg: Config, core: NannyCore | None = None):
        self.core = core or NannyCore()
        self.st = self.core.initial()
        self.seq = 0
        self.cfg = cfg
        self.config(cfg)

    def ev(self, type_, payload):
        self.seq += 1
        return Event(self.seq, "n1", "x", type_, 1, self.seq * 1000, 0, None, payload)

    def config(self, cfg: Config, digest: str | None = None):
        old, self.cfg = self.cfg, cfg
        self.digest = digest or f"d{self.seq}"
        payload = {"path": "x", "format": "toml", "digest": self.digest, "model": to_dict(cfg), "warnings": [],
                   "local_router": "lvs1", "reload": self.seq > 0, "diff": diff(old, cfg).to_dict()}
        self.st, out = self.core.decide(self.st, self.ev("config.loaded", payload))
        return out

    def results(self, *rows, digest=None):
        ids = [f"web/{r[0]}" if "/" not in r[0] else r[0] for r in rows]
        payload = {"digest": digest or self.digest, "ids": ids, "ok": [r[1] for r in rows],
                   "latency_us": [10] * len(rows), "detail": ["ok" if r[1] else (r[2] if len(r) > 2 else "refused") for r in rows],
                   "late_us": 0}
        self.st, out = self.core.decide(self.st, self.ev("health.check_results", payload))
        return [(e.type.split(".")[1], e.payload.get("server"), e.payload.get("new") or e.payload.get("reason")) for e in out], out

    def state(self, server="s0"):
        return self.st.machines[f"web/{server}"].state


# -- the table: every (state, input) pair ------------------------------------------------------

# (state, passes, fails, ok, rise, fall) -> (new state, event or None)
TABLE = [
    (INIT, 0, 0, True, 2, 3, RISING, "state_changed"),
    (INIT, 0, 0, True, 1, 3, UP, "real_server_up"),
    (INIT, 0, 0, False, 2, 3, DOWN, "real_server_down"),
    (RISING, 1, 0, True, 3, 3, RISING, None),
    (RISING, 1, 0, True, 2, 3, UP, "real_server_up"),
    (RISING, 1, 0, False, 2, 3, DOWN, "real_server_down"),
    (UP, 5, 0, True, 2, 3, UP, None),
    (UP, 5, 0, False, 2, 3, FALLING, "state_changed"),
    (UP, 5, 0, False, 2, 1, DOWN, "real_server_down"),
    (FALLING, 0, 1, False, 2, 3, FALLING, None),
    (FALLING, 0, 2, False, 2, 3, DOWN, "real_server_down"),
    (FALLING, 0, 2, True, 2, 3, UP, "real_server_up"),
    (DOWN, 0, 4, False, 2, 3, DOWN, None),
    (DOWN, 0, 4, True, 2, 3, RISING, "state_changed"),
    (DOWN, 0, 4, True, 1, 3, UP, "real_server_up"),
    (DISABLED, 0, 0, True, 1, 1, DISABLED, None),
    (DISABLED, 0, 0, False, 1, 1, DISABLED, None),
]


@pytest.mark.parametrize("state,passes,fails,ok,rise,fall,new,event", TABLE)
def test_health_table(state, passes, fails, ok, rise, fall, new, event):
    f = Feed(make_config(1, rise=rise, fall=fall))
    h = f.st.machines["web/s0"]
    h.state, h.passes, h.fails = state, passes, fails
    h.fresh = state == INIT  # any other state implies history
    _, out = f.results(("s0", ok))
    assert h.state == new
    assert [e.type for e in out] == ([f"health.{event}"] if event else [])
    if event:
        p = out[0].payload
        assert (p["virtual"], p["server"], p["address"], p["port"]) == ("web", "s0", "10.0.0.1", 8080)


def test_every_state_and_result_is_covered_by_the_table():
    covered = {(row[0], row[3]) for row in TABLE}
    assert covered == {(s, ok) for s in HEALTH_STATES for ok in (True, False)}


def test_the_shared_machine_refuses_what_the_table_does_not_allow():
    h = Health("v/s", "v", "s", "10.0.0.1", 80, (), 2, 3, state=UP)
    with pytest.raises(MachineError):
        fire(h, "rise")
    assert h.state == UP
    fire(h, "fail_first")
    assert h.state == FALLING
    for trigger, sources, dest, _r, _d in HEALTH_TRANSITIONS:
        for src in sources:
            h.state = src
            fire(h, trigger)
            assert h.state == dest
    dot = health_fsm_dot()
    assert all(s in dot for s in HEALTH_STATES)


def test_rise_and_fall_sequences_and_reasons():
    f = Feed(make_config(1, rise=3, fall=2))
    assert f.results(("s0", True))[0] == [("state_changed", "s0", RISING)]
    assert f.results(("s0", True))[0] == []
    assert f.results(("s0", True))[0] == [("real_server_up", "s0", "checks_passed")]
    assert f.results(("s0", True), ("s0", True))[0] == []  # steady: no event, no trigger
    assert f.results(("s0", False, "timeout"))[0] == [("state_changed", "s0", FALLING)]
    _, out = f.results(("s0", False, "timeout"))
    assert out[0].type == "health.real_server_down"
    assert out[0].payload == {"virtual": "web", "server": "s0", "address": "10.0.0.1", "port": 8080,
                              "reason": "checks_failed", "previous": FALLING, "failures": 2, "detail": "timeout"}
    assert f.results(("s0", True), ("s0", False), ("s0", True))[0] == [
        ("state_changed", "s0", RISING), ("real_server_down", "s0", "first_check_failed"), ("state_changed", "s0", RISING)]


def test_a_failure_in_falling_then_a_pass_recovers_without_going_down():
    f = Feed(make_config(1, rise=1, fall=3))
    f.results(("s0", True))
    assert f.results(("s0", False), ("s0", False), ("s0", True))[0] == [
        ("state_changed", "s0", FALLING), ("real_server_up", "s0", "check_recovered")]
    assert f.st.machines["web/s0"].fails == 0


def test_results_of_another_config_and_unknown_servers_are_counted_not_folded():
    f = Feed(make_config(2, rise=1))
    assert f.results(("s0", True), digest="old")[0] == []
    assert f.st.stale_results == 1 and f.state() == INIT
    assert f.results(("web/nope", True), ("s0", True))[0] == [("real_server_up", "s0", "checks_passed")]
    assert f.st.unknown_results == 1


def test_reload_keeps_unchanged_pairs_and_restarts_changed_ones():
    cfg = make_config(4, rise=1, fall=1)
    f = Feed(cfg)
    f.results(*[(f"s{i}", True) for i in range(4)])
    assert set(states(f.st).values()) == {UP}
    vs = cfg.virtual_services[0]
    s = list(vs.servers)
    s[1] = dataclasses.replace(s[1], check=Check(kind=vs.check.kind, interval=3.0))  # changed check
    s[2] = dataclasses.replace(s[2], active=False)  # disabled
    s[3] = dataclasses.replace(s[3], weight=7)  # weight only: health unchanged
    s.append(RealServer(name="s9", address="10.0.0.9"))  # added
    new = dataclasses.replace(cfg, virtual_services=(dataclasses.replace(vs, servers=tuple(s)),))
    out = f.config(new)
    assert [(e.payload["server"], e.payload["old"], e.payload["new"], e.payload["reason"]) for e in out] == [
        ("s1", UP, INIT, "check_changed"), ("s2", UP, DISABLED, "disabled")]
    assert states(f.st) == {"web/s0": UP, "web/s1": INIT, "web/s2": DISABLED, "web/s3": UP, "web/s9": INIT}
    # re-enabled: INIT again; removed: gone
    out = f.config(dataclasses.replace(new, virtual_services=(dataclasses.replace(vs, servers=(s[0], s[1], vs.servers[2])),)))
    assert [(e.payload["server"], e.payload["new"], e.payload["reason"]) for e in out] == [("s2", INIT, "enabled")]
    assert set(states(f.st)) == {"web/s0", "web/s1", "web/s2"}


def test_an_inactive_virtual_service_disables_its_servers():
    f = Feed(make_config(2, rise=1))
    f.results(("s0", True))
    out = f.config(make_config(2, rise=1, active=False))
    assert [e.payload["new"] for e in out] == [DISABLED, DISABLED]
    assert f.results(("s0", False))[0] == []


def test_a_bad_config_is_rejected_and_the_old_one_stays():
    f = Feed(make_config(1))
    d = f.digest
    f.st, out = f.core.decide(f.st, f.ev("config.loaded", {"model": {"virtual_services": "nope"}, "digest": "x"}))
    assert out[0].type == "health.config_rejected" and f.st.digest == d


def test_snapshot_restore_roundtrip_then_same_decisions():
    f = Feed(make_config(5, rise=2, fall=2))
    f.results(("s0", True), ("s0", True), ("s1", True), ("s2", False), ("s3", True), ("s3", True), ("s3", False))
    data = msgpack.unpackb(msgpack.packb(f.core.snapshot(f.st)), raw=False)
    g = Feed.__new__(Feed)
    g.core, g.seq, g.cfg, g.digest = f.core, f.seq, f.cfg, f.digest
    g.st = f.core.restore(data)
    assert states(g.st) == states(f.st)
    assert [(h.passes, h.fails, h.detail) for h in g.st.machines.values()] == [
        (h.passes, h.fails, h.detail) for h in f.st.machines.values()]
    rows = [("s1", True), ("s3", False), ("s0", False), ("s2", True), ("s2", True)]
    assert g.results(*rows)[0] == f.results(*rows)[0]


def test_same_inputs_same_outputs():
    def go():
        f = Feed(make_config(20, rise=2, fall=2))
        out = []
        for k in range(30):
            out += f.results(*[(f"s{i}", (i * 7 + k * 3) % 5 != 0) for i in range(20)])[0]
        return out
    assert go() == go()


def test_docs_list_every_transition_and_detail_code():
    from pathlib import Path

    from lvsbus.wire.catalog.health import DETAIL

    doc = (Path(__file__).resolve().parents[2] / "docs" / "nanny-lvsd.md").read_text()
    for trigger, sources, dest, reason, _d in HEALTH_TRANSITIONS:
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{trigger}` |")), None)
        assert row is not None, trigger
        assert all(s in row for s in sources) and dest in row and reason in row, row
    for code in DETAIL.values:
        assert f"`{code}`" in doc, code


# -- reentry is for servers that failed: a server with no history enters after initial_rise ------


def test_a_server_with_no_history_enters_after_one_pass_and_after_a_failure_needs_rise():
    """Piranha's nanny (keepalive 2, reentry 180: rise 90): at first start one passed check puts a
    server in; once it has failed, it must pass rise checks in a row again."""
    f = Feed(make_config(2, rise=90, fall=1, initial_rise=1))
    assert f.st.machines["web/s0"].initial_rise == 1  # the model's default
    assert f.results(("s0", True))[0] == [("real_server_up", "s0", "checks_passed")]
    assert f.results(("s0", False))[0] == [("real_server_down", "s0", "checks_failed")]
    for _ in range(89):
        f.results(("s0", True))
    assert f.state("s0") == RISING
    assert f.results(("s0", True))[0] == [("real_server_up", "s0", "checks_passed")]
    # s1 fails its very first check: it has history from then on, so it needs the full rise
    assert f.results(("s1", False))[0] == [("real_server_down", "s1", "first_check_failed")]
    f.results(("s1", True))
    assert f.state("s1") == RISING


def test_the_model_default_is_one_pass_and_a_config_can_ask_for_more():
    assert Check().initial_rise == 1
    f = Feed(make_config(1, rise=5, fall=1, initial_rise=3))
    f.results(("s0", True))
    f.results(("s0", True))
    assert f.state() == RISING
    assert f.results(("s0", True))[0] == [("real_server_up", "s0", "checks_passed")]


def test_a_changed_check_or_enabling_again_starts_without_history():
    f = Feed(make_config(1, rise=10, fall=1, initial_rise=1))
    f.results(("s0", True))
    f.results(("s0", False))
    assert f.state() == DOWN and not f.st.machines["web/s0"].fresh
    cfg = make_config(1, rise=10, fall=1, initial_rise=1)
    vs = cfg.virtual_services[0]
    changed = dataclasses.replace(cfg, virtual_services=(dataclasses.replace(vs, check=dataclasses.replace(vs.check, port=81)),))
    f.config(changed)
    assert f.state() == INIT
    assert f.results(("s0", True))[0] == [("real_server_up", "s0", "checks_passed")]


def test_history_survives_a_snapshot_and_an_old_snapshot_without_it_is_read():
    f = Feed(make_config(1, rise=10, fall=1, initial_rise=1))
    f.results(("s0", True))
    f.results(("s0", False))
    core = NannyCore()
    data = msgpack.unpackb(msgpack.packb(core.snapshot(f.st)))
    st = core.restore(data)
    assert st.machines["web/s0"].fresh is False
    for row in data["machines"]:
        del row[5:]  # the form written before history was kept
    assert core.restore(data).machines["web/s0"].fresh is False  # DOWN: it has history


def test_the_shell_plans_the_checks_of_the_config_its_core_is_under_once_a_digest():
    from lvsbus_services.nanny.schedule import TICK, checks_for, wake_delay

    assert checks_for(NannyCore().initial(), "") is None  # no config yet: nothing to check
    cfg = make_config(3)
    f = Feed(cfg)
    planned = checks_for(f.st, "")
    assert [pc.id for pc in planned] == ["web/s0", "web/s1", "web/s2"]
    assert checks_for(f.st, f.digest) is None  # planned already under this digest
    vs = cfg.virtual_services[0]
    off = dataclasses.replace(vs.servers[1], active=False)
    f.config(dataclasses.replace(cfg, virtual_services=(dataclasses.replace(vs, servers=(vs.servers[0], off, vs.servers[2])),)),
             digest="d-new")
    assert [pc.id for pc in checks_for(f.st, "d0")] == ["web/s0", "web/s2"]  # a new digest: planned again, enabled only
    assert wake_delay(10.5, 10.0) == 0.5 and wake_delay(10.0, 10.0) == TICK and wake_delay(9.0, 10.0) == TICK
    assert wake_delay(1_000, 990, 2) == 10 and wake_delay(1_000, 999, 2) == 2  # any unit: the simulator's ns


def test_dynamic_weights_come_before_the_verdict_once_each_and_go_with_a_changed_check():
    """keepalived's misc_dynamic: a batch's ``weights`` set the servers' weights (one
    health.weight_changed per change, before the verdicts of the batch); a changed check drops it;
    the snapshot keeps it; a v1 batch without ``weights`` changes nothing."""
    from lvsbus.wire.catalog import REGISTRY

    f = Feed(make_config(n=2, rise=1, initial_rise=1))

    def batch(weights, *rows):
        payload = {"digest": f.digest, "ids": [f"web/{r[0]}" for r in rows], "ok": [r[1] for r in rows],
                   "latency_us": [10] * len(rows), "detail": ["ok"] * len(rows), "late_us": 0}
        if weights is not None:
            payload["weights"] = weights
        REGISTRY.validate("health.check_results", 1, payload)
        f.st, out = f.core.decide(f.st, f.ev("health.check_results", payload))
        for e in out:
            REGISTRY.validate(e.type, 1, e.payload)
        return out

    out = batch({"web/s0": 5}, ("s0", True), ("s1", True))
    assert [(e.type, e.payload["server"]) for e in out][:1] == [("health.weight_changed", "s0")]
    assert out[0].payload["weight"] == 5 and out[0].payload["previous"] is None
    assert [e.type for e in out].count("health.real_server_up") == 2
    assert batch({"web/s0": 5}, ("s0", True)) == []  # the same weight: nothing
    assert batch(None, ("s0", True)) == []
    data = msgpack.unpackb(msgpack.packb(f.core.snapshot(f.st)), strict_map_key=False)
    assert f.core.restore(data).machines["web/s0"].weight == 5
    cfg = make_config(n=2, rise=1, initial_rise=1)
    changed = dataclasses.replace(cfg, virtual_services=(dataclasses.replace(
        cfg.virtual_services[0], check=dataclasses.replace(cfg.virtual_services[0].check, port=81)),))
    out = f.config(changed)
    dropped = [e for e in out if e.type == "health.weight_changed"]
    assert [(e.payload["server"], e.payload["weight"], e.payload["previous"]) for e in dropped] == [("s0", None, 5)]


def test_a_file_check_s_number_is_added_to_the_configured_weight_within_0_65535():
    cfg = make_config(n=1, rise=1, initial_rise=1)
    vs = cfg.virtual_services[0]
    vs = dataclasses.replace(vs, check=Check(kind=CheckKind.FILE, file="/run/w", file_weight=3, rise=1, initial_rise=1),
                             servers=(dataclasses.replace(vs.servers[0], weight=10),))
    f = Feed(dataclasses.replace(cfg, virtual_services=(vs,)))

    def batch(offset):
        payload = {"digest": f.digest, "ids": ["web/s0"], "ok": [True], "latency_us": [10], "detail": ["ok"],
                   "late_us": 0, "weights": {"web/s0": offset}}
        f.st, out = f.core.decide(f.st, f.ev("health.check_results", payload))
        return [e.payload["weight"] for e in out if e.type == "health.weight_changed"]

    assert batch(6) == [16]  # 10 + 2 x 3
    assert batch(-30) == [0]  # clamped
    assert batch(70000) == [65535]
