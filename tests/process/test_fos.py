"""service = fos (Piranha's failover services), in the pure cores: nanny checks each failover
service, pulse runs start_cmd/stop_cmd on the active router only and gives up the active role when a
failover service fails there; lvsd and the applier keep no IPVS table. See docs/config.md and
docs/pulse.md."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

from lvsbus.config import Config, FailoverService, RealServer, ServiceType, VirtualService, to_dict
from lvsbus.wire.events import Event
from lvsbus_services.ipvs.core import desired_from_config, managed_keys
from lvsbus_services.lvsd.core import LvsdCore
from lvsbus_services.nanny.core import FOS, NannyCore, plan
from lvsbus_services.pulse.core import ACTIVE, BACKUP, PulseCore, _settings_from_config

from tests.helpers.pulse_cluster import S, Cluster, config_payload, make_config, v8_snapshot

TIMEOUT, REENTRY = 4.0, 20.0


def fos_config(**heartbeat) -> Config:
    base = make_config(**heartbeat)
    return dataclasses.replace(
        base, service=ServiceType.FOS,
        failover_services=(
            FailoverService("web1", "10.0.0.150", device="eth0", port=80, timeout=TIMEOUT, reentry=REENTRY,
                            start_cmd="/etc/init.d/httpd start", stop_cmd="/etc/init.d/httpd stop"),
            FailoverService("ftp", "10.0.0.151", active=False, port=21, start_cmd="x", stop_cmd="y"),
        ),
    )


def health(c: Cluster, name: str, new: str, service: str = "web1") -> None:
    """nanny's verdict on ``name`` (as its core would publish it), at c.now."""
    node = c.nodes[name]
    payload = {"service": service, "address": "10.0.0.150", "port": 80, "old": None, "new": new,
               "reason": "checks_failed" if new == "DOWN" else "checks_passed", "detail": "refused", "count": 1}
    effects = node.feed("health.failover_changed", payload, c.now, source="nanny")
    for e in effects:
        c.trace.append((c.now, name, e.type, e.payload))
    # send the heartbeats/fences these effects asked for, as Cluster._deliver does the heartbeats/fences these effects asked for, as Cluster._deliver does
    for e in effects:
        if e.type in ("pulse.send_heartbeat", "pulse.send_fence"):
            for d in e.payload["destinations"]:
                p = e.payload
                if e.type == "pulse.send_heartbeat":
                    c._push(c.now + 1_000_000, d["peer"], "pulse.heartbeat_received", {
                        "link": d["link"], "peer": name, "address": d["local_address"], "role": p["role"],
                        "priority": p["priority"], "epoch": p["epoch"], "seq": p["seq"], "leaving": p["leaving"]})
                else:
                    c._push(c.now + 1_000_000, d["peer"], "pulse.fence_received", {
                        "link": d["link"], "peer": name, "address": d["local_address"], "target": p["target"],
                        "epoch": p["epoch"], "seq": p["seq"], "reason": p["reason"]})


def fos_pair(**heartbeat) -> Cluster:
    c = Cluster(model=to_dict(fos_config(**heartbeat)))
    c.start("lvs1")
    c.start("lvs2")
    c.run_until(10 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}
    return c


def cmds(c: Cluster, name: str) -> list[tuple[str, str, str]]:
    return [(p["service"], p["action"], p["reason"]) for _t, p in c.outputs_of(name, "pulse.run_failover")]


def test_settings_fos_mode_moves_only_the_failover_vips_and_knows_the_commands():
    s = _settings_from_config(config_payload("lvs1", to_dict(fos_config())))
    assert [v.address for v in s.vips] == ["10.0.0.150"]  # no virtual service VIP, no nat_router, no inactive one
    assert s.units[0].failover == (("web1", "/etc/init.d/httpd start", "/etc/init.d/httpd stop", 4 * S, 20 * S),)
    lvs = _settings_from_config(config_payload("lvs1", to_dict(dataclasses.replace(fos_config(),
                                                                                    service=ServiceType.LVS))))
    assert "10.0.0.150" not in [v.address for v in lvs.vips] and lvs.units[0].failover == ()


def test_start_cmd_on_the_active_only_and_stop_cmd_on_shutdown():
    c = fos_pair()
    assert cmds(c, "lvs1") == [("web1", "start", "no_active")]
    assert cmds(c, "lvs2") == []
    c._push(c.now, "lvs1", "router.shutdown_requested", {"reason": "SIGTERM", "graceful": True})
    c.run_until(c.now + 2 * S)
    assert cmds(c, "lvs1")[-1] == ("web1", "stop", "shutdown")
    assert cmds(c, "lvs2") == [("web1", "start", "peer_left")]
    # the stop comes before the VIPs go
    kinds = [ty for _t, n, ty, _p in c.trace if n == "lvs1" and ty in ("pulse.run_failover", "pulse.release_vips")]
    assert kinds[-2:] == ["pulse.run_failover", "pulse.release_vips"]


def test_a_failed_failover_service_makes_the_active_give_up_and_the_backup_take_over():
    c = fos_pair()
    health(c, "lvs1", "UP")
    c.run_until(20 * S)
    health(c, "lvs1", "DOWN")  # timeout seconds of failed checks on the active
    c.run_until(c.now + 100_000_000)
    assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}
    assert ("ACTIVE", "BACKUP", "failover_service_failed") in c.nodes["lvs1"].role_changes()
    assert ("BACKUP", "ACTIVE", "peer_stepped_down") in c.nodes["lvs2"].role_changes()
    assert cmds(c, "lvs1")[-1] == ("web1", "stop", "failover_service_failed")
    assert cmds(c, "lvs2") == [("web1", "start", "peer_stepped_down")]
    # lvs1 (priority 200, preempt on) advertises priority 0 for reentry seconds: no ping-pong
    gave_up = c.now
    c.run_until(gave_up + int(REENTRY * S) - S)
    assert c.roles() == {"lvs1": BACKUP, "lvs2": ACTIVE}
    # then its priority is back, and preemption works as configured
    c.run_until(gave_up + int(REENTRY * S) + 3 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}


def test_a_router_that_gave_up_still_takes_over_when_no_peer_is_active():
    c = fos_pair()
    health(c, "lvs1", "DOWN")
    c.run_until(20 * S)
    assert c.roles()["lvs2"] == ACTIVE
    c.crash("lvs2")
    c.run_until(c.now + 5 * S)  # deadtime is 3 s
    assert c.roles()["lvs1"] == ACTIVE


def test_a_service_down_at_takeover_gets_timeout_seconds_to_come_up():
    c = fos_pair()
    health(c, "lvs2", "DOWN")  # the backup saw it fail through the VIP
    health(c, "lvs1", "DOWN")
    t0 = c.now
    c.run_until(t0 + 1 * S)
    assert c.roles()["lvs2"] == ACTIVE  # lvs1 had been active for > timeout: gave up at once
    health(c, "lvs2", "UP")  # its start_cmd brought it up within timeout
    c.run_until(t0 + 30 * S)
    assert ("ACTIVE", "BACKUP", "failover_service_failed") not in c.nodes["lvs2"].role_changes()


def test_a_service_that_never_comes_up_after_takeover_fails_after_timeout():
    c = fos_pair()
    health(c, "lvs2", "DOWN")
    health(c, "lvs1", "DOWN")
    c.run_until(c.now + 1 * S)
    took = [t for t, p in c.outputs_of("lvs2", "router.role_changed") if p["new"] == ACTIVE][-1]
    c.run_until(took + int(TIMEOUT * S) - 100_000_000)
    assert c.roles()["lvs2"] == ACTIVE  # still within its timeout
    c.run_until(took + int(TIMEOUT * S) + 100_000_000)
    assert ("ACTIVE", "BACKUP", "failover_service_failed") in c.nodes["lvs2"].role_changes()


def test_snapshot_keeps_the_failover_state():
    c = fos_pair()
    health(c, "lvs1", "DOWN")
    core = PulseCore()
    st = c.nodes["lvs1"].state
    again = core.restore(core.snapshot(st))
    assert again.fos_health == {"web1": "DOWN"} and again.unit().gave_up_until == st.unit().gave_up_until > 0
    assert again.settings == st.settings
    old = v8_snapshot(core.snapshot(st))
    for k in ("fos_health", "active_since", "gave_up_until"):
        del old[k]
    for version in range(2, core.snapshot_version):  # upcast as the snapshot store does
        old = core.snapshot_upcasters[version](old)
    v2 = core.restore(old)
    assert v2.fos_health == {} and v2.unit().gave_up_until == 0


# -- nanny ---------------------------------------------------------------------------------------

def test_nanny_plans_failover_services_in_fos_mode_only():
    cfg = fos_config()
    rows = plan(cfg)
    assert [r.id for r in rows] == ["fos/web1", "fos/ftp"]  # the virtual services are ignored
    r = rows[0]
    assert (r.virtual, r.server, r.address, r.port, r.probe, r.enabled) == (FOS, "web1", "10.0.0.150", 80, 80, True)
    chk = r.check
    assert chk.interval == 1.0 and chk.fall == 5 and chk.rise == 1 and chk.kind.value == "tcp_connect"
    assert rows[1].enabled is False
    lvs = plan(dataclasses.replace(cfg, service=ServiceType.LVS))
    assert lvs and not any(r.id.startswith("fos/") for r in lvs)


def test_nanny_publishes_failover_health_as_its_own_event():
    core = NannyCore()
    st = core.initial()
    model = to_dict(fos_config())
    ev = Event(1, "n", "config", "config.loaded", 2, 1, 0, None, {
        "path": "x", "format": "toml", "digest": "d", "model": model, "warnings": [], "local_router": "lvs1",
        "reload": False, "diff": {}})
    st, _ = core.decide(st, ev)

    def results(ok: bool, seq: int):
        return core.decide(st, Event(seq, "n", "nanny", "health.check_results", 1, seq, 0, None, {
            "digest": "d", "ids": ["fos/web1"], "ok": [ok], "latency_us": [1], "detail": ["ok" if ok else "refused"],
            "late_us": 0}))[1]

    out = results(True, 2)
    assert [(e.type, e.payload["new"]) for e in out] == [("health.failover_changed", "UP")]
    seen = [e.payload["new"] for i in range(5) for e in results(False, 3 + i)]
    assert seen == ["FALLING", "DOWN"]  # fall = floor(timeout 4 / keepalive 1) + 1 = 5 failures: 4 s apart


# -- lvsd, applier, ipvs save --------------------------------------------------------------------

def test_fos_mode_has_no_ipvs_table():
    cfg = fos_config()
    assert len(desired_from_config(cfg)) == 0 and managed_keys(cfg) == set()
    core = LvsdCore()
    st = core.initial()
    p = {"model": to_dict(cfg), "digest": "d", "path": "x", "format": "toml", "warnings": [],
         "local_router": "lvs1", "reload": False, "diff": {}}
    st, _ = core.decide(st, Event(1, "n", "config", "config.loaded", 2, 1, 0, None, p))
    st, out = core.decide(st, Event(2, "n", "lvsd", "lvsd.started", 1, 2, 0, None, {"pid": 1, "epoch": 1}))
    st, out2 = core.decide(st, Event(3, "n", "pulse", "pulse.start_lvsd", 1, 3, 0, None, {"reason": "no_active"}))
    tables = [e.payload for e in out + out2 if e.type == "lvsd.table_desired"]
    assert tables and all(t["services"] == 0 and t["dests"] == 0 for t in tables)


def test_ipvs_save_config_prints_nothing_and_says_why(tmp_path):
    from lvsbus.config.native import render_toml
    path = tmp_path / "fos.toml"
    cfg = dataclasses.replace(fos_config(), virtual_services=(
        VirtualService("web", "10.0.0.100", port=80, servers=(RealServer("a", "192.168.100.10"),)),))
    path.write_text(render_toml(cfg))
    r = subprocess.run([sys.executable, "-m", "lvsbus.cli", "ipvs", "save", "--config", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == ""
    assert "service = fos" in r.stderr and "no IPVS table" in r.stderr


def test_unused_blocks_are_warned_about_with_file_and_line(tmp_path):
    from lvsbus.config import load
    path = tmp_path / "lvs.cf"
    path.write_text("primary = 192.0.2.1\nservice = fos\nbackup_active = 1\nbackup = 192.0.2.2\n"
                    "virtual www {\n address = 192.0.2.20 eth0:1\n port = 80\n}\n"
                    "failover web1 {\n address = 192.0.2.10 eth0:1\n port = 80\n start_cmd = \"true\"\n"
                    " stop_cmd = \"true\"\n}\n")
    warnings = [str(w) for w in load(str(path)).warnings]
    assert any(f"{path}:5:" in w and "virtual service 'www' is ignored" in w for w in warnings), warnings
    path.write_text(path.read_text().replace("service = fos", "service = lvs"))
    warnings = [str(w) for w in load(str(path)).warnings]
    assert any(f"{path}:9:" in w and "failover service 'web1' is ignored" in w for w in warnings), warnings


def test_ipvs_globals_and_network_are_warned_about_in_fos_mode(tmp_path):
    """The applier is idle in fos mode: the sync daemon and the IPVS timeouts are not set, and
    `network` (the virtual services' forwarding) has nothing to apply to; each says so at its line."""
    from lvsbus.config import load
    path = tmp_path / "lvs.cf"
    path.write_text("primary = 192.0.2.1\nservice = fos\nnetwork = direct\nsyncdaemon = 1\nudp_timeout = 60\n"
                    "failover web1 {\n address = 192.0.2.10 eth0:1\n port = 80\n start_cmd = \"true\"\n"
                    " stop_cmd = \"true\"\n}\n")
    warned = {(w.line, w.key): w.message for w in load(str(path)).warnings}
    assert set(warned) >= {(3, "network"), (4, "syncdaemon"), (5, "udp_timeout")}, warned
    assert all("fos" in warned[k] for k in ((3, "network"), (4, "syncdaemon"), (5, "udp_timeout")))
    path.write_text(path.read_text().replace("service = fos", "service = lvs"))
    assert not {k for _l, k in ((w.line, w.key) for w in load(str(path)).warnings)} & {
        "network", "syncdaemon", "udp_timeout"}


def test_pulse_accepts_its_new_input():
    ev = Event(1, "n", "nanny", "health.failover_changed", 1, 1, 0, None, {})
    assert PulseCore().accepts(ev)


# -- metrics and timeline --------------------------------------------------------------------------

def test_metrics_and_timeline_show_failover_health_and_commands():
    from lvsbus_services.metrics.fold import Metrics, render
    from lvsbus_tools.timeline import category, describe

    changed = Event(1, "n", "nanny", "health.failover_changed", 1, 1, 0, None, {
        "service": "web1", "address": "10.0.0.150", "port": 80, "old": "UP", "new": "DOWN",
        "reason": "checks_failed", "detail": "refused", "count": 4})
    done = Event(2, "n", "pulse", "pulse.failover_cmd_finished", 1, 2, 0, None, {
        "service": "web1", "action": "start", "command": "x", "exit_code": 3, "duration_ms": 12,
        "stderr_tail": "warming up\nport 80 busy\n", "error": ""})
    m = Metrics()
    m.apply(changed)
    m.apply(done)
    text = render(m.samples())
    assert 'lvsbus_failover_service_up{service="web1"} 0' in text
    assert 'lvsbus_failover_commands_total{action="start",result="failed",service="web1"} 1' in text
    assert category(changed) == category(done) == "fos"
    assert describe(changed) == "failover service web1 UP -> DOWN (checks_failed: refused)"
    assert describe(done) == "start_cmd of web1 finished: exit 3 in 12 ms; stderr: port 80 busy"


# -- the simulator knows fos mode ------------------------------------------------------------------

def _sim():
    from lvsbus_tools import simulate as sim
    return sim


def test_simulated_fos_kill_makes_the_backup_take_over_and_run_start_cmd(tmp_path):
    sim = _sim()
    c = sim.Cluster(5, fos=True, faults=[sim.Fault(10 * S, sim.FOS_KILL, "lvs1")], log_root=str(tmp_path),
                    duration=18 * S, settle=0)
    res = c.run(verify=True)
    assert res.ok, res.summary()
    assert res.roles == {"lvs1": BACKUP, "lvs2": ACTIVE}  # lvs1 still holds back (reentry 6 s)
    assert c.fos_running == {"lvs1": {"web": False}, "lvs2": {"web": True}}
    # killed at 10 s, DOWN when its failed checks span timeout (3 s: 4 checks, the first up to a
    # keepalive after the kill), lvs2 serves right after
    assert 3 * S < res.outage_ns < 4.5 * S, res.summary()
    from lvsbus_tools.timeline import render_text, timeline
    text = render_text(timeline([res.logs["lvs1"], res.logs["lvs2"]]))
    assert "ACTIVE -> BACKUP (failover_service_failed" in text
    assert "start_cmd of web finished: exit 0" in text


def test_simulated_fos_sweep_holds_every_invariant():
    sim = _sim()
    results = [sim.run_seed(s, fos=True, verify=True) for s in range(0, 120)]
    failed = [r.summary() for r in results if not r.ok]
    assert not failed, "\n".join(failed)
    kills = [r for r in results if any(f.kind == sim.FOS_KILL for f in r.faults)]
    first = [r for r in kills if r.faults[0].kind == sim.FOS_KILL and r.faults[0].target == "lvs1"]
    assert first and all(r.failovers >= 1 for r in first)


def test_an_active_that_does_not_give_up_is_caught(monkeypatch):
    sim = _sim()
    monkeypatch.setattr(PulseCore, "_check_failover", lambda self, st, u, out: None)
    res = sim.Cluster(5, fos=True, faults=[sim.Fault(10 * S, sim.FOS_KILL, "lvs1")]).run()
    assert any("does not run failover service web" in v for v in res.violations), res.summary()


def test_a_start_without_stop_is_caught(monkeypatch):
    sim = _sim()
    monkeypatch.setattr(PulseCore, "_run_failover",
                        staticmethod(lambda s, f, action, reason, out: None if action == "stop" else
                                     out.append(__import__("lvsbus.runtime.core", fromlist=["Effect"]).Effect(
                                         "pulse.run_failover", {"service": f[0], "action": action, "command": f[1],
                                                                "reason": reason, "timeout_ms": 1000}))))
    res = sim.Cluster(5, fos=True, faults=[sim.Fault(10 * S, sim.FOS_KILL, "lvs1")]).run()
    assert any("has no stop_cmd" in v for v in res.violations), res.summary()


def test_the_applier_stays_idle_in_fos_mode_and_wakes_up_when_the_config_says_lvs():
    from lvsbus_services.ipvs.core import ApplierCore

    core = ApplierCore()
    st = core.initial()
    seq = iter(range(1, 100))

    def feed(type_, payload):
        nonlocal st
        n = next(seq)
        st, out = core.decide(st, Event(n, "n", "x", type_, 1, n * S, 0, None, payload))
        return [e.type for e in out]

    def config(cfg):
        return feed("config.loaded", {"model": to_dict(cfg), "digest": "d", "path": "x", "format": "toml",
                                      "warnings": [], "local_router": "lvs1", "reload": False, "diff": {}})

    assert config(fos_config()) == []
    assert feed("ipvs.started", {"pid": 1, "flush_unmanaged": False, "kernel": "x"}) == []  # no dump, no retry
    from lvsbus.ipvs.table import Table
    assert feed("lvsd.table_desired", {"version": 1, "table": Table().to_dict(), "reason": "config", "digest": "d",
                                       "services": 0, "dests": 0}) == []
    assert core.next_deadline(st) is None
    again = core.restore(core.snapshot(st))
    assert again.idle is True
    old = core.snapshot(st)
    del old["idle"]
    assert core.restore(core.snapshot_upcasters[2](old)).idle is False
    # a reload to service = lvs: look at the kernel first
    assert config(dataclasses.replace(fos_config(), service=ServiceType.LVS)) == ["ipvs.read_table"]


def test_a_command_too_long_for_the_effect_is_a_config_error():
    from lvsbus.config import validate
    cfg = fos_config()
    web = dataclasses.replace(cfg.failover_services[0], start_cmd="x" * 4097)
    issues = validate(dataclasses.replace(cfg, failover_services=(web, cfg.failover_services[1])))
    assert any(i.key == "failover.web1.start_cmd" and "longer than 4096" in i.message for i in issues)
    assert not any("longer than" in i.message for i in validate(cfg))
