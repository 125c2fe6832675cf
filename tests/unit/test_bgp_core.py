"""BgpCore, pure (docs/scaleout.md): announce / drain / withdraw per VIP from router health,
the quorum of the VIP's virtual services, operator actions and shutdown; the route set resent
when the speaker restarts or refuses; snapshots; every output valid against its schema."""
from __future__ import annotations

import dataclasses

import msgpack

from lvsbus.wire.catalog import REGISTRY
from lvsbus.config import Config, Forwarding, RealServer, Router, VirtualService, to_dict
from lvsbus.config.model import Scaleout
from lvsbus.wire.events import Event
from lvsbus_services.bgp.core import BgpCore

SO = Scaleout(local_as=65001, peer_as=65000, peers=("10.99.1.100",), drain_time=2.0)


def vs(name, address, port=80, n=2, quorum=1) -> VirtualService:
    servers = tuple(RealServer(name=f"s{i}", address=f"10.0.0.{i + 1}") for i in range(n))
    return VirtualService(name=name, address=address, port=port, scheduler="mh", forwarding=Forwarding.DIRECT,
                          servers=servers, quorum=quorum)


def config(*vss, scaleout=SO) -> Config:
    return Config(routers=(Router(name="r1", address="10.99.1.11"),), virtual_services=vss, scaleout=scaleout)


class Bgp:
    def __init__(self, cfg: Config):
        self.core = BgpCore()
        self.st = self.core.initial()
        self.seq = 0
        self.now = 1_000_000_000
        self.routes: dict[str, str] = {}
        self.config(cfg)

    def feed(self, type_, payload, version=1):
        self.seq += 1
        REGISTRY.validate(type_, version, payload)
        ev = Event(self.seq, "r1", "x", type_, version, self.now, 0, None, payload)
        assert self.core.accepts(ev)
        self.st, out = self.core.decide(self.st, ev)
        for e in out:
            REGISTRY.validate(e.type, 1, e.payload)
            if e.type == "bgp.set_routes":
                self.routes = {r["address"]: r["state"] for r in e.payload["routes"]}
        # snapshot -> restore gives a core that decides the same
        data = msgpack.unpackb(msgpack.packb(self.core.snapshot(self.st)), strict_map_key=False)
        assert self.core.snapshot(self.core.restore(data)) == self.core.snapshot(self.st)
        return out

    def config(self, cfg):
        return self.feed("config.loaded", {"model": to_dict(cfg), "digest": "d", "path": "x", "format": "toml",
                                           "warnings": [], "local_router": "r1", "reload": False, "diff": {}}, 2)

    def role(self, new, reason="started"):
        return self.feed("router.role_changed", {"node": "r1", "old": "INIT", "new": new, "reason": reason,
                                                 "priority": 100, "epoch": 1, "peer": None}, 2)

    def health(self, virtual, server, up=True):
        if up:
            return self.feed("health.real_server_up", {"virtual": virtual, "server": server, "address": "10.0.0.1", "port": 80,
                                                       "reason": "checks_passed", "previous": "RISING", "passes": 2,
                                                       "detail": "ok"})
        return self.feed("health.real_server_down", {"virtual": virtual, "server": server, "address": "10.0.0.1", "port": 80,
                                                     "reason": "checks_failed", "previous": "FALLING", "failures": 3,
                                                     "detail": "refused"})

    def timer(self):
        return self.feed("timer.fired", {"service": "bgp", "deadline_ns": self.now})


def types(out):
    return [e.type for e in out]


def changes(out):
    return [(e.payload["address"], e.payload["new"], e.payload["reason"]) for e in out if e.type == "bgp.vip_changed"]


def serving(*vss) -> Bgp:
    b = Bgp(config(*vss))
    b.role("BACKUP")
    for v in vss:
        for rs in v.servers:
            b.health(v.name, rs.name)
    return b


def test_announced_only_once_pulse_says_the_router_serves_and_quorum_is_there():
    b = Bgp(config(vs("web", "10.200.0.1")))
    assert b.health("web", "s0") == []  # no role from pulse yet: nothing announced
    out = b.role("BACKUP")
    assert changes(out) == [("10.200.0.1", "announce", "serving")]
    assert types(out) == ["bgp.vip_changed", "bgp.set_routes"]
    assert b.routes == {"10.200.0.1": "announce"}
    # ACTIVE serves as well (pulse still elects one active router among the N)
    assert b.role("ACTIVE", "no_active") == []


def test_no_quorum_before_health_is_known():
    b = Bgp(config(vs("web", "10.200.0.1")))
    assert b.role("BACKUP") == []
    assert b.routes == {}


def test_router_fault_withdraws_every_vip_and_recovery_announces_again():
    b = serving(vs("web", "10.200.0.1"), vs("dns", "10.200.0.2", port=53))
    assert b.routes == {"10.200.0.1": "announce", "10.200.0.2": "announce"}
    out = b.role("FAULT", "public_link_down")
    assert sorted(changes(out)) == [("10.200.0.1", "withdraw", "router_unhealthy"),
                                    ("10.200.0.2", "withdraw", "router_unhealthy")]
    assert b.routes == {}
    b.role("BACKUP", "link_up")
    assert b.routes == {"10.200.0.1": "announce", "10.200.0.2": "announce"}


def test_quorum_lost_withdraws_that_vip_alone():
    b = serving(vs("web", "10.200.0.1"), vs("dns", "10.200.0.2", port=53))
    assert b.health("web", "s0", up=False) == []  # one of two: quorum 1 still met
    out = b.health("web", "s1", up=False)
    assert changes(out) == [("10.200.0.1", "withdraw", "quorum_lost")]
    assert b.routes == {"10.200.0.2": "announce"}
    out = b.health("web", "s1")
    assert changes(out) == [("10.200.0.1", "announce", "serving")]


def test_a_vip_with_two_services_needs_both():
    b = serving(vs("http", "10.200.0.1", 80), vs("https", "10.200.0.1", 443))
    b.health("https", "s0", up=False)
    out = b.health("https", "s1", up=False)
    assert changes(out) == [("10.200.0.1", "withdraw", "quorum_lost")]
    assert [e.payload["virtuals"] for e in out if e.type == "bgp.vip_changed"] == [["https"]]


def test_operator_disable_counts_against_quorum():
    b = serving(vs("web", "10.200.0.1", quorum=2))
    out = b.feed("operator.server_action", {"virtual": "web", "server": "s0", "action": "disable", "by": "ada",
                                            "via": "cli", "reason": ""})
    assert changes(out) == [("10.200.0.1", "withdraw", "quorum_lost")]
    out = b.feed("operator.server_action", {"virtual": "web", "server": "s0", "action": "enable", "by": "ada",
                                            "via": "cli", "reason": ""})
    assert changes(out) == [("10.200.0.1", "announce", "serving")]


def test_graceful_shutdown_drains_then_withdraws_after_drain_time():
    b = serving(vs("web", "10.200.0.1"))
    out = b.feed("router.shutdown_requested", {"reason": "SIGTERM", "graceful": True})
    assert changes(out) == [("10.200.0.1", "drain", "shutdown_drain")]
    assert b.routes == {"10.200.0.1": "drain"}
    assert b.core.next_deadline(b.st) == b.now + 2_000_000_000
    # nothing a drain meanwhile can bring back: health, role
    assert b.health("web", "s0") == []
    b.now += 1_000_000_000
    assert b.timer() == []
    b.now += 1_000_000_000
    out = b.timer()
    assert changes(out) == [("10.200.0.1", "withdraw", "shutdown")]
    assert b.routes == {} and b.core.next_deadline(b.st) is None


def test_a_vip_that_loses_quorum_while_draining_for_a_stop_is_withdrawn():
    """pulse goes STOPPED at the stop, so the drain outlives the role; quorum still counts: a VIP
    this router cannot serve is not left announced (even depreferenced) for drain_time."""
    b = serving(vs("web", "10.200.0.1"), vs("dns", "10.200.0.2", port=53))
    b.feed("router.shutdown_requested", {"reason": "SIGTERM", "graceful": True})
    assert b.role("STOPPED", "shutdown") == []  # the drain goes on
    b.health("web", "s0", up=False)
    out = b.health("web", "s1", up=False)
    assert changes(out) == [("10.200.0.1", "withdraw", "quorum_lost")]
    assert b.routes == {"10.200.0.2": "drain"}
    assert changes(b.health("web", "s1")) == []  # nothing comes back during a stop


def test_hard_shutdown_withdraws_at_once():
    b = serving(vs("web", "10.200.0.1"))
    out = b.feed("router.shutdown_requested", {"reason": "restart loop: pulse", "graceful": False})
    assert changes(out) == [("10.200.0.1", "withdraw", "shutdown")]


def test_reload_removing_a_vip_or_scaleout_withdraws():
    web, dns = vs("web", "10.200.0.1"), vs("dns", "10.200.0.2", port=53)
    b = serving(web, dns)
    out = b.config(config(web))
    assert changes(out) == [("10.200.0.2", "withdraw", "config")]
    out = b.config(config(web, scaleout=None))
    assert changes(out) == [("10.200.0.1", "withdraw", "config")]
    assert b.routes == {}


def test_speaker_restart_gets_the_whole_route_set_and_a_refusal_is_retried():
    b = serving(vs("web", "10.200.0.1"))
    out = b.feed("bgp.speaker_started", {"speaker": "bird", "version": "2.0.12", "pid": 7, "epoch": 1})
    assert types(out) == ["bgp.set_routes"]
    sr = out[0].payload
    assert sr["routes"] == [{"address": "10.200.0.1", "prefixlen": 32, "state": "announce"}]
    assert b.feed("bgp.routes_applied", {"version": sr["version"], "ok": False, "error": "no socket"}) == []
    assert b.core.next_deadline(b.st) == b.now + 1_000_000_000
    b.now += 1_000_000_000
    out = b.timer()
    assert types(out) == ["bgp.set_routes"] and out[0].payload["version"] == sr["version"] + 1
    assert b.core.next_deadline(b.st) is None
    # an old version's failure is not retried: a newer set is already on its way
    assert b.feed("bgp.routes_applied", {"version": sr["version"], "ok": False, "error": "x"}) == []
    assert b.core.next_deadline(b.st) is None
    # refused again and again: the retries back off (2 s, 4 s, ... at most 30 s); a success resets it
    delays = []
    for _ in range(7):
        v = b.st.version
        b.feed("bgp.routes_applied", {"version": v, "ok": False, "error": "no socket"})
        delays.append((b.core.next_deadline(b.st) - b.now) // 1_000_000_000)
        b.now = b.core.next_deadline(b.st)
        assert types(b.timer()) == ["bgp.set_routes"]
    assert delays == [2, 4, 8, 16, 30, 30, 30]
    b.feed("bgp.routes_applied", {"version": b.st.version, "ok": True, "error": ""})
    b.feed("bgp.routes_applied", {"version": b.st.version, "ok": False, "error": "x"})
    assert b.core.next_deadline(b.st) == b.now + 1_000_000_000


def test_a_version_1_snapshot_with_the_sessions_it_no_longer_keeps_is_upcast():
    from lvsbus.runtime.snapshot import decode_state

    b = serving(vs("web", "10.200.0.1"))
    v1 = {**b.core.snapshot(b.st), "sessions": {"10.99.1.100": "up"}}
    body = msgpack.packb({"core": "bgp", "v": 1, "state": v1}, use_bin_type=True)
    st = decode_state(b.core, body)
    assert b.core.snapshot(st) == b.core.snapshot(b.st)


def test_bad_config_is_rejected_and_the_announcements_stay():
    b = serving(vs("web", "10.200.0.1"))
    bad = to_dict(config(vs("web", "10.200.0.1")))
    bad["virtual_services"][0]["scheduler"] = "wlc"  # not consistent: refused with [scaleout]
    out = b.feed("config.loaded", {"model": bad, "digest": "e", "path": "x", "format": "toml", "warnings": [],
                                   "local_router": "r1", "reload": True, "diff": {}}, 2)
    assert types(out) == ["bgp.config_rejected"]
    assert b.routes == {"10.200.0.1": "announce"}


def test_ipv6_vip_is_a_128():
    v6 = dataclasses.replace(vs("v6", "2001:db8::80"), servers=(RealServer(name="s0", address="2001:db8::1"),))
    b = Bgp(config(v6, scaleout=dataclasses.replace(SO, peers=("2001:db8::ffff",))))
    b.role("BACKUP")
    b.health("v6", "s0")
    assert b.routes == {"2001:db8::80": "announce"}


# ---------------------------------------------------------------------------------------------
# replay: a log of the bgp core's inputs and outputs verifies; a changed decision diverges


def _log_of_a_run(path, change_reason: bool = False) -> str:
    from lvsbus.wire.events import encode
    from lvsbus.log import Durability, EventLog
    from tests.helpers.event_log import Quiet as _Quiet

    core = BgpCore()
    st = core.initial()
    recs: list[tuple[int, bytes]] = []
    now = [1_000_000_000]
    cfg = config(vs("web", "10.200.0.1"), vs("dns", "10.200.0.2", port=53))
    inputs = [
        ("router", "config.loaded", 2, {"model": to_dict(cfg), "digest": "d", "path": "x", "format": "toml",
                                        "warnings": [], "local_router": "r1", "reload": False, "diff": {}}),
        ("bgp", "bgp.speaker_started", 1, {"speaker": "bird", "version": "2.0.12", "pid": 7, "epoch": 1}),
        ("pulse", "router.role_changed", 2, {"node": "r1", "old": "INIT", "new": "BACKUP", "reason": "started",
                                             "priority": 100, "epoch": 1, "peer": None}),
    ]
    for v, n in (("web", 2), ("dns", 2)):
        for i in range(n):
            inputs.append(("nanny", "health.real_server_up", 1, {
                "virtual": v, "server": f"s{i}", "address": "10.0.0.1", "port": 80, "reason": "checks_passed",
                "previous": "RISING", "passes": 2, "detail": "ok"}))
    for i in range(2):
        inputs.append(("nanny", "health.real_server_down", 1, {
            "virtual": "web", "server": f"s{i}", "address": "10.0.0.1", "port": 80, "reason": "checks_failed",
            "previous": "FALLING", "failures": 3, "detail": "refused"}))
    inputs.append(("bgp", "bgp.session_changed", 1, {"peer": "10.99.1.100", "state": "up", "info": "Established"}))
    inputs.append(("router", "router.shutdown_requested", 1, {"reason": "SIGTERM", "graceful": True}))
    inputs.append(("bgp", "timer.fired", 1, {"service": "bgp", "deadline_ns": 0}))  # deadline filled below
    seq = 0
    for source, type_, version, payload in inputs:
        seq += 1
        now[0] += 500_000_000
        if type_ == "timer.fired":
            payload = {"service": "bgp", "deadline_ns": core.next_deadline(st)}
            now[0] = payload["deadline_ns"]
        ev = Event(seq, "r1", source, type_, version, now[0], now[0], None, payload)
        recs.append((seq, encode(ev)))
        st, out = core.decide(st, ev)
        for e in out:
            seq += 1
            p = dict(e.payload)
            if change_reason and e.type == "bgp.vip_changed" and p["reason"] == "quorum_lost":
                p["reason"] = "router_unhealthy"
            recs.append((seq, encode(Event(seq, "r1", "bgp", e.type, 1, now[0], now[0], ev.seq, p))))
    log = EventLog(str(path), durability=Durability("none"), logger=_Quiet(), first_seq=1)
    log.append_batch(recs)
    log.close()
    types_ = [msgpack.unpackb(b)[4] for _s, b in recs]
    assert types_.count("bgp.vip_changed") == 5  # 2 announced, web withdrawn, dns drained, dns withdrawn
    return str(path)


def test_replay_verifies_the_bgp_cores_decisions(tmp_path):
    from lvsbus_tools.replay import make_cores, verify

    assert "bgp" in [c.name for c in make_cores()]
    # the inputs here are made up (pulse and nanny would not verify): the bgp core alone
    rep = verify(_log_of_a_run(tmp_path / "ok"), cores=make_cores(["bgp"]))
    assert rep.ok, [d.describe() for d in rep.divergences]
    bad = verify(_log_of_a_run(tmp_path / "bad", change_reason=True), cores=make_cores(["bgp"]))
    assert not bad.ok
    d = bad.divergences[0]
    assert (d.type, d.core) == ("bgp.vip_changed", "bgp")
    assert d.expected["payload"]["reason"] == "quorum_lost"


def test_what_if_covers_the_bgp_core(tmp_path):
    """A real router's log (a real server flapping under a running pair) replayed under the same
    config with [scaleout]: the what-if shows what this router would have announced by BGP."""
    from lvsbus.config import from_dict
    from lvsbus.config.native import render_toml
    from lvsbus_tools.replay import what_if
    from lvsbus_tools.timeline import read_events
    from tests.helpers.event_log import golden_logs

    log = golden_logs("real_flapping_server")[0]
    model = next(e for e in read_events(log) if e.type == "config.loaded").payload["model"]
    cfg = from_dict(model)
    cfg = dataclasses.replace(cfg, scaleout=SO, virtual_services=tuple(
        dataclasses.replace(v, scheduler="mh") for v in cfg.virtual_services))
    alt = tmp_path / "scaleout.toml"
    alt.write_text(render_toml(cfg))
    rep = what_if(log, str(alt))
    added = [c["after"] for c in rep.changes if c["change"] == "added" and c["after"].core == "bgp"
             and c["after"].type == "bgp.vip_changed"]
    texts = [d.text for d in added]
    assert len(added) >= 3, rep.format()
    assert "announce" in texts[0] and any("quorum_lost" in t for t in texts), texts
    # and pulse runs the mode: active at once (not after listening), nothing released at the start,
    # and the graceful stop keeps the VIP and lvsd through the drain (released after the log's end)
    pulse = [(c["change"], c["before" if c["change"] == "removed" else "after"]) for c in rep.changes
             if (c.get("before") or c.get("after")).core == "pulse"]
    texts = [(ch, d.text) for ch, d in pulse]
    assert ("added", "take VIPs 10.99.1.50 (scale_out)") in texts and ("removed", "take VIPs 10.99.1.50 (no_active)") in texts
    assert ("removed", "release VIPs 10.99.1.50 (started)") in texts
    assert ("removed", "release VIPs 10.99.1.50 (shutdown)") in texts, rep.format()
    assert {c["before"].core for c in rep.changes if c["change"] == "removed"} <= {"pulse", "lvsd"}, rep.format()


def drain(b, action="drain"):
    return b.feed("operator.bgp_drain", {"action": action, "by": "ada", "via": "cli", "reason": "maintenance"})


def test_operator_drain_and_resume():
    b = serving(vs("web", "10.200.0.1"), vs("dns", "10.200.0.2", port=53))
    out = drain(b)
    assert [e.payload["outcome"] for e in out if e.type == "bgp.drain_taken"] == ["applied"]
    assert sorted(changes(out)) == [("10.200.0.1", "drain", "operator_drain"), ("10.200.0.2", "drain", "operator_drain")]
    assert b.routes == {"10.200.0.1": "drain", "10.200.0.2": "drain"}
    assert [e.payload["outcome"] for e in drain(b)] == ["unchanged"]
    # drained, a VIP that loses quorum is still withdrawn, and comes back drained
    b.health("web", "s0", up=False)
    assert changes(b.health("web", "s1", up=False)) == [("10.200.0.1", "withdraw", "quorum_lost")]
    assert changes(b.health("web", "s1")) == [("10.200.0.1", "drain", "operator_drain")]
    out = drain(b, "resume")
    assert sorted(changes(out)) == [("10.200.0.1", "announce", "serving"), ("10.200.0.2", "announce", "serving")]
    # a planned stop while drained: already drained (no change), withdrawn after drain_time
    drain(b)
    assert changes(b.feed("router.shutdown_requested", {"reason": "SIGTERM", "graceful": True})) == []
    b.now += 2_000_000_000
    assert sorted(changes(b.timer())) == [("10.200.0.1", "withdraw", "shutdown"), ("10.200.0.2", "withdraw", "shutdown")]


def test_operator_drain_without_scaleout_is_refused():
    b = Bgp(config(vs("web", "10.200.0.1"), scaleout=None))
    out = drain(b)
    assert [(e.type, e.payload["outcome"]) for e in out] == [("bgp.drain_taken", "not_scaleout")]


def test_the_timeline_shows_the_announcements_with_their_own_mark(tmp_path):
    from lvsbus_tools.timeline import _MARK, render_html, timeline

    tl = timeline([_log_of_a_run(tmp_path / "log")])
    bgp = [r.text for r in tl if r.category == "bgp"]
    assert "BGP 10.200.0.1/32: announce -> withdraw (quorum_lost)" in bgp, bgp
    assert "BGP session to 10.99.1.100 up (Established)" in bgp, bgp
    color, _shape = _MARK["bgp"]
    assert f'<span class="sw" style="background:{color}"></span>bgp' in render_html(tl)  # in the legend


def started(b, adopted, version=2):
    p = {"speaker": "bird", "version": "2.0.12", "pid": 7, "epoch": 1}
    return b.feed("bgp.speaker_started", {**p, "adopted": adopted} if version == 2 else p, version)


def test_a_new_run_leaves_an_adopted_speakers_routes_until_it_knows_what_to_announce():
    """A router restarted (its BIRD kept running, still announcing): no empty route set at the
    adoption, which would take the router out of the upstream's set until its health is known
    again; the whole set once the role and every VIP's quorum are known."""
    b = Bgp(config(vs("web", "10.200.0.1"), vs("dns", "10.200.0.2", port=53, n=1)))
    out = started(b, adopted=True)
    assert "bgp.set_routes" not in types(out) and b.core.next_deadline(b.st) == b.now + 10_000_000_000
    assert "bgp.set_routes" not in types(b.role("BACKUP"))
    assert "bgp.set_routes" not in types(b.health("web", "s0"))  # web has quorum; dns not known yet
    out = b.health("dns", "s0", up=False)  # every VIP's quorum known: the whole set, dns withdrawn
    assert types(out)[-1] == "bgp.set_routes" and out[-1].payload["reason"].startswith("settled: ")
    assert b.routes == {"10.200.0.1": "announce"} and b.core.next_deadline(b.st) is None


def test_an_adopted_speaker_gets_a_route_set_after_the_settling_time_at_the_latest():
    b = Bgp(config(vs("web", "10.200.0.1")))
    started(b, adopted=True)
    b.role("BACKUP")  # the health never comes (nanny slow to start)
    b.now += 10_000_000_000
    out = b.timer()
    assert types(out)[-1] == "bgp.set_routes" and b.routes == {}  # what it knows: no quorum, withdrawn


def test_a_fresh_speaker_or_one_adopted_mid_run_gets_the_set_at_once():
    b = Bgp(config(vs("web", "10.200.0.1")))
    assert types(started(b, adopted=False)) == ["bgp.set_routes"]  # a BIRD of its own: nothing to keep
    b = serving(vs("web", "10.200.0.1"))
    # the bgp service restarted mid-run (the core knows its decisions): the set at once
    assert types(started(b, adopted=True)) == ["bgp.set_routes"] and b.routes == {"10.200.0.1": "announce"}
    # a v1 record (before adoption was said) decides as it did: the set at once
    b = Bgp(config(vs("web", "10.200.0.1")))
    assert types(started(b, adopted=False, version=1)) == ["bgp.set_routes"]


def test_a_stop_during_the_settling_sends_the_set():
    b = Bgp(config(vs("web", "10.200.0.1")))
    started(b, adopted=True)
    out = b.feed("router.shutdown_requested", {"reason": "SIGTERM", "graceful": False})
    assert types(out)[-1] == "bgp.set_routes" and b.routes == {}
