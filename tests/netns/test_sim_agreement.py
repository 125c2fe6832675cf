"""Sim-to-real agreement (issue 13): one fault schedule played on two real ``lvsbus router``
processes in network namespaces and in the simulator (tools/simulate.py, with the real run's
config); each router's decisions (role changes, VIP takes and releases, fences, lvsd started and
stopped, links degraded and restored, real servers up and down, the desired tables) must be the
same, timings aside (``lvsbus_tools.agreement``). A divergence names the first differing decision.

The schedule: a real server's service stops and comes back, r1's private cable is cut and
mended, r2's pulse (the backup's) and r1's nanny (the active's) are SIGKILLed and come back (the
pulse spare, a nanny restart), then r1 (the active router) is SIGKILLed as a host crash would (its
VIP gone with it).
"""
from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time

import pytest

from lvsbus.config import load
from lvsbus_tools.agreement import decisions, first_divergence
from lvsbus_tools.simulate import S, Cluster as SimCluster, Fault
from lvsbus.demo.netns import VIP
from tests.helpers.routers import RESPONDER, Cluster, start_responders

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def test_the_simulator_decides_as_real_routers_do(netns, tmp_path):  # noqa: F811  (the fixture)
    t = netns(routers=2, servers=1)
    start_responders(t, t.routers)
    c = Cluster(t, tmp_path)
    c.config.write_text(c.config.read_text().replace(
        '[virtual.echo.check]\nkind = "udp"', '[virtual.echo.check]\nkind = "udp"\ninterval = 0.2\ntimeout = 0.2\nrise = 2\nfall = 2'))

    def serve() -> subprocess.Popen:
        return t.popen("s1", [sys.executable, "-c", RESPONDER, "s1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def health(r: str) -> list[str]:
        return [e.type.rsplit("_", 1)[1] for e in c.events(r, ("health.real_server_up", "health.real_server_down"))]

    marks: dict[str, float] = {}  # what happened when (wall clock, s)
    server = serve()
    try:
        # r1 first, active alone, then r2: no start-up race between them (which of r1's fence and
        # ACTIVE heartbeat reaches a preempted r2 first is timing, and the step-down's reason with it)
        c.start("r1")
        c.wait(lambda: c.role("r1") == "ACTIVE", 20.0, "r1 active")
        c.start("r2")
        c.wait_steady("r1")
        c.wait(lambda: health("r1")[-1:] == ["up"] and health("r2")[-1:] == ["up"], 5.0, "s1 UP on both")
        time.sleep(0.5)
        marks["server_stop"] = time.time()
        server.kill()  # by PID: the responder this test started
        server.wait(5)
        c.wait(lambda: health("r1")[-1:] == ["down"] and health("r2")[-1:] == ["down"], 5.0, "s1 DOWN on both")
        time.sleep(0.5)
        marks["server_back"] = time.time()
        server = serve()
        c.wait(lambda: health("r1")[-1:] == ["up"] and health("r2")[-1:] == ["up"], 5.0, "s1 UP again on both")
        time.sleep(0.5)
        marks["cut"] = time.time()
        t.cut("r1", "private")
        c.wait(lambda: c.events("r2", ("pulse.link_degraded",)), 5.0, "r2 sees the private link degraded")
        time.sleep(0.5)
        marks["mend"] = time.time()
        t.heal("r1", "private")
        c.wait(lambda: c.events("r2", ("pulse.link_restored",)), 5.0, "r2 sees the private link restored")
        time.sleep(1.0)
        # a service killed: the backup's pulse (its warm spare takes over), then the active's nanny
        for mark, r, service in (("pulse_kill", "r2", "pulse"), ("nanny_kill", "r1", "nanny"),
                                 ("broker_kill", "r1", "broker")):
            def ready(r=r, service=service) -> list[dict]:  # the service's "started" log lines
                return [ln for ln in c.err_lines(r) if ln.get("event") == f"{service}_started"]
            before = len(ready())
            marks[mark] = time.time()
            os.kill(c.pid_of(r, service), signal.SIGKILL)  # by PID: a process of the router this test started
            c.wait(lambda ready=ready, before=before: len(ready()) > before, 10.0, f"{r}'s {service} back")
            marks[mark + "_back"] = datetime.datetime.fromisoformat(ready()[-1]["ts"].replace("Z", "+00:00")).timestamp()
            time.sleep(1.0)
        marks["kill"] = time.time()
        os.killpg(c.procs["r1"].pid, signal.SIGKILL)  # the whole router: its children die with it
        c.procs["r1"].wait(5)
        t.run("r1", "ip", "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)  # the host is gone: its VIP too
        c.wait(lambda: c.role("r2") == "ACTIVE" and c.events("r2", ("lvsd.table_desired",)), 5.0,
               "r2 active with a desired table")
        time.sleep(1.0)
        real = {r: decisions(str(c.state(r) / "log")) for r in t.routers}
        restarted = {(r, e.payload["service"]) for r in t.routers for e in c.events(r, ("router.service_restarted",))}
        assert restarted == {("r2", "pulse"), ("r1", "nanny"), ("r1", "broker")}, restarted  # the kills happened, nothing else died
        started = {r: c.events(r, ("pulse.started",))[0].wall_ns / 1e9 for r in t.routers}
    finally:
        c.stop()
        if server.poll() is None:
            server.kill()
            server.wait(5)

    # the simulator: the same config, each router booting when its pulse started, the same faults
    # at the same times after r1's pulse started
    origin = started["r1"]
    boot = 1 * S

    def at(mark: str) -> int:
        return boot + int((marks[mark] - origin) * S)

    faults = [
        Fault(at("server_stop"), "server_fail", "s1", at("server_back") - at("server_stop")),
        Fault(at("cut"), "nic_down", "r1/private", at("mend") - at("cut")),
        Fault(at("pulse_kill"), "service_crash", "r2/pulse", max(1, at("pulse_kill_back") - at("pulse_kill"))),
        Fault(at("nanny_kill"), "service_crash", "r1/nanny", max(1, at("nanny_kill_back") - at("nanny_kill"))),
        # the broker dies before the next message it receives, unwritten (its clients send it again)
        Fault(at("broker_kill"), "broker_crash", "r1", max(1, at("broker_kill_back") - at("broker_kill")), value=2),
        Fault(at("kill"), "router_crash", "r1", 3600 * S),
    ]
    sim = SimCluster(1, config=load(str(c.config)).config, faults=faults, log_root=str(tmp_path / "sim"),
                     boot_at={r: boot + int((started[r] - origin) * S) for r in t.routers},
                     duration=at("kill") + 3 * S, check_invariants=False).run()
    simulated = {r: decisions(path) for r, path in sim.logs.items()}
    assert real["r2"]["pulse"][-3:] == [("take_vips", (VIP,)), ("fence", "r1"), ("start_lvsd",)], real
    divergence = first_divergence(real, simulated)
    assert divergence is None, f"{divergence}\nreal: {real}\nsimulated: {simulated}\nfaults: {faults}"


def test_a_divergence_names_the_first_differing_decision():
    a = {"r1": {"pulse": [("role", "INIT", "BACKUP", "started"), ("take_vips", ("10.0.0.1",))], "health": [],
                "table": []}}
    b = {"r1": {"pulse": [("role", "INIT", "BACKUP", "started"), ("release_vips", ("10.0.0.1",))], "health": [],
                "table": []}}
    assert first_divergence(a, a) is None
    assert first_divergence(a, b) == ("r1 pulse decision #2: real ('take_vips', ('10.0.0.1',)), "
                                      "simulated ('release_vips', ('10.0.0.1',))")
    b["r1"]["pulse"] = a["r1"]["pulse"][:1]
    assert "only the real run has ('take_vips'" in first_divergence(a, b)


def test_tables_without_a_real_server_before_the_first_with_one_are_timing():
    """lvsd started before nanny's first verdict (a table with no real server, then one with it) or
    after it (only the second): the same decisions. Later empty tables (a server went down) count."""
    from pathlib import Path

    logs = Path(__file__).resolve().parents[1] / "fixtures" / "logs"
    assert decisions(str(logs / "real_partition_heals" / "r1" / "log"))["table"] == []  # one table, empty
    flapping = decisions(str(logs / "real_flapping_server" / "r1" / "log"))["table"]
    assert [len(t) for t in flapping] == [1, 0, 1, 0, 1]
