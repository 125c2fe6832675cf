"""nanny runs this router's tracked scripts ([track.NAME], kind = script; docs/config.md "Tracking"):
each is a machine ``track/NAME`` planned only on the routers it applies to, run as a program check,
and its moves are ``health.track_changed`` (never real_server_up/down). Interfaces and files are
pulse's: nanny plans none."""
from __future__ import annotations

import dataclasses

import msgpack

from lvsbus.config import Check, Config, RealServer, Router, VirtualService, to_dict
from lvsbus.config.model import CheckKind, Track, TrackKind
from lvsbus.config.validate import validate
from lvsbus.wire.catalog import REGISTRY
from lvsbus.wire.events import Event
from lvsbus_services.nanny.core import DOWN, RISING, TRACK, UP, NannyCore, plan, states
from lvsbus_services.nanny.schedule import checks_for

ROUTERS = (Router(name="lvs1", address="192.0.2.1"), Router(name="lvs2", address="192.0.2.2", priority=50))


def make_config(*tracks: Track) -> Config:
    vs = VirtualService(name="web", address="192.0.2.80", port=80, check=Check(rise=1, fall=1),
                        servers=(RealServer(name="s0", address="10.0.0.1", port=8080),))
    return Config(routers=ROUTERS, virtual_services=(vs,), tracks=tracks)


def script(name: str, **kw) -> Track:
    return Track(name=name, kind=TrackKind.SCRIPT, command=kw.pop("command", f"/usr/local/bin/{name}"), **kw)


TRACKS = (
    script("haproxy", rise=2, fall=2, interval=0.5, timeout=0.25, weight=-30),
    script("only2", on_routers=("lvs2",)),
    Track(name="uplink", kind=TrackKind.INTERFACE, device="eth2", weight=-60),
    Track(name="adjust", kind=TrackKind.FILE, path="/etc/lvsbus/adjust", weight=1),
)


class Feed:
    def __init__(self, cfg: Config, local: str = "lvs1") -> None:
        self.core = NannyCore()
        self.st = self.core.initial()
        self.seq = 0
        self.local = local
        self.config(cfg)

    def ev(self, type_: str, payload: dict) -> Event:
        self.seq += 1
        return Event(self.seq, "n1", "x", type_, 1, self.seq * 1000, 0, None, payload)

    def config(self, cfg: Config) -> list:
        self.digest = f"d{self.seq}"
        payload = {"path": "x", "format": "toml", "digest": self.digest, "model": to_dict(cfg), "warnings": [],
                   "local_router": self.local, "reload": self.seq > 0, "diff": {}}
        self.st, out = self.core.decide(self.st, self.ev("config.loaded", payload))
        return out

    def results(self, *rows: tuple[str, bool]) -> list:
        payload = {"digest": self.digest, "ids": [r[0] for r in rows], "ok": [r[1] for r in rows],
                   "latency_us": [10] * len(rows), "detail": ["ok" if r[1] else "exit_code" for r in rows],
                   "late_us": 0}
        self.st, out = self.core.decide(self.st, self.ev("health.check_results", payload))
        return out


def test_a_script_is_planned_as_a_program_check_only_on_the_routers_it_applies_to():
    cfg = make_config(*TRACKS)
    on1 = [pc for pc in plan(cfg, "lvs1") if pc.virtual == TRACK]
    on2 = [pc for pc in plan(cfg, "lvs2") if pc.virtual == TRACK]
    assert [pc.id for pc in on1] == ["track/haproxy"]  # not only2 (lvs2's), no interface, no file
    assert [pc.id for pc in on2] == ["track/haproxy", "track/only2"]
    pc = on1[0]
    assert (pc.server, pc.address, pc.port, pc.probe, pc.enabled) == ("haproxy", "", 0, 0, True)
    c = pc.check
    assert (c.kind, c.command, c.interval, c.timeout, c.rise, c.fall, c.initial_rise, c.exit_code) == (
        CheckKind.PROGRAM, "/usr/local/bin/haproxy", 0.5, 0.25, 2, 2, 1, 0)
    # without the local router (lvsd's plan) there is no tracked script at all
    assert [pc.id for pc in plan(cfg)] == ["web/s0"]
    # the core and the shell's schedule take the router from config.loaded
    assert sorted(states(Feed(cfg, "lvs2").st)) == ["track/haproxy", "track/only2", "web/s0"]
    f = Feed(cfg, "lvs1")
    assert sorted(states(f.st)) == ["track/haproxy", "web/s0"]
    assert [pc.id for pc in checks_for(f.st, "")] == ["web/s0", "track/haproxy"]


def test_interface_and_file_items_are_not_nannys():
    f = Feed(make_config(*TRACKS[2:]))
    assert sorted(states(f.st)) == ["web/s0"]


def test_rise_and_fall_drive_health_track_changed():
    f = Feed(make_config(TRACKS[0]))
    h = "track/haproxy"
    out = f.results((h, True))  # never failed: one pass (initial_rise 1)
    assert [(e.type, e.payload) for e in out] == [("health.track_changed", {
        "track": "haproxy", "old": "INIT", "new": UP, "reason": "checks_passed", "detail": "ok", "count": 1})]
    assert f.results((h, False)) and f.st.machines[h].state == "FALLING"
    out = f.results((h, False))  # fall 2
    assert [(e.type, e.payload["new"], e.payload["reason"], e.payload["count"], e.payload["detail"]) for e in out] == [
        ("health.track_changed", DOWN, "checks_failed", 2, "exit_code")]
    out = f.results((h, True))
    assert [(e.payload["old"], e.payload["new"]) for e in out] == [(DOWN, RISING)]
    out = f.results((h, True))  # rise 2 after a failure
    assert [(e.payload["old"], e.payload["new"], e.payload["count"]) for e in out] == [(RISING, UP, 2)]
    # every move of a tracked script is health.track_changed, and it fits its schema
    every = f.results((h, False)) + f.results((h, False)) + f.results((h, True)) + f.results((h, True))
    assert {e.type for e in every} == {"health.track_changed"}
    for e in every:
        REGISTRY.validate("health.track_changed", 1, e.payload)
    assert "health.track_changed" in NannyCore.outputs


def test_a_script_that_never_passed_is_down_at_its_first_failure_and_servers_stay_apart():
    f = Feed(make_config(TRACKS[0]))
    out = f.results(("track/haproxy", False), ("web/s0", False))
    assert [(e.type, e.payload.get("track") or e.payload.get("server")) for e in out] == [
        ("health.track_changed", "haproxy"), ("health.real_server_down", "s0")]
    assert out[0].payload["old"] == "INIT" and out[0].payload["new"] == DOWN


def test_a_changed_script_starts_over_and_a_removed_one_goes():
    f = Feed(make_config(TRACKS[0]))
    f.results(("track/haproxy", True))
    out = f.config(make_config(dataclasses.replace(TRACKS[0], command="pidof haproxy")))
    assert [(e.type, e.payload["new"], e.payload["reason"]) for e in out] == [
        ("health.track_changed", "INIT", "check_changed")]
    f.config(make_config(dataclasses.replace(TRACKS[0], command="pidof haproxy", weight=-10)))
    assert f.st.machines["track/haproxy"].state == "INIT"  # the weight is pulse's: no reset
    assert f.config(make_config()) == [] and "track/haproxy" not in f.st.machines


def test_track_machines_survive_a_snapshot_and_an_old_snapshot_is_read():
    f = Feed(make_config(*TRACKS), "lvs2")
    f.results(("track/haproxy", True), ("track/only2", False))
    core = NannyCore()
    data = msgpack.unpackb(msgpack.packb(core.snapshot(f.st)), raw=False)
    st = core.restore(data)
    assert states(st) == states(f.st) and st.local == "lvs2"
    assert [pc.id for pc in checks_for(st, "")] == [pc.id for pc in checks_for(f.st, "")]
    del data["local"]  # written before tracking: no tracked script was planned then
    assert sorted(states(core.restore(data))) == ["web/s0"]


def test_the_validator_refuses_a_track_id_that_collides_with_a_real_server():
    vs = VirtualService(name="track", address="192.0.2.80", port=80,
                        servers=(RealServer(name="haproxy", address="10.0.0.1", port=8080),))
    cfg = Config(routers=ROUTERS, virtual_services=(vs,), tracks=(TRACKS[0],))
    issues = [i for i in validate(cfg) if i.key == "track.haproxy"]
    assert issues and "collide" in issues[0].message
    assert not [i for i in validate(dataclasses.replace(cfg, tracks=(script("other"),))) if "collide" in i.message]
