"""Scale-out run by real ``lvsbus router`` processes (issue 17; docs/scaleout.md): three routers in
network namespaces, every one active at once with the VIP on its loopback device, each announcing
it by BGP through the BIRD its router started, to an upstream namespace running BIRD with ECMP
(multipath, layer-4 hashing) into its kernel. The client on the upstream reaches the VIP through
all three (a UDP echo on each router says which one answered). A router whose processes crash
and start again, its BIRD running on, never leaves the upstream's set (the new run's bgp core keeps
the adopted BIRD's routes until it knows what to announce). A router lost whole (its processes
and its BIRD SIGKILLed) leaves the upstream's set when its BGP session closes, and the others do not
move; a router stopped by SIGTERM drains (GRACEFUL_SHUTDOWN: out of the ECMP set while still
announced and still serving), then withdraws and only then releases its VIP. Every log replays.
(This kernel has no IPVS: what the routers' IPVS tables do is the kernel tier's.)"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvsbus.demo.netns import NAT, write_key
from tests.helpers.bgp import UPSTREAM, VIP, nexthops, start_upstream, upstream_conf
from tests.helpers.routers import RESPONDER, Cluster

pytestmark = [pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed (apt-get install bird2)")]

DRAIN = 1.5


def scaleout_toml(topo, key: Path) -> str:
    lines = ['service = "lvs"', ""]
    for i in (1, 2, 3):
        lines += [f"[router.r{i}]", f'address = "{topo.router_address(i)}"', f"priority = {100 - i}", 'device = "eth0"', ""]
    lines += [
        "[heartbeat]", "port = 5390", "keepalive = 0.1", "deadtime = 0.5", f'key_file = "{key}"', "",
        "[virtual.echo]", f'address = "{VIP}"', "port = 7", 'protocol = "udp"', 'scheduler = "mh"',
        'forwarding = "direct"', "",
        "[virtual.echo.check]", 'kind = "udp"', "interval = 0.2", "timeout = 0.2", "rise = 1", "fall = 2", "",
        "[virtual.echo.server.s1]", f'address = "{NAT}.101"', "",
        "[scaleout]", "local_as = 65001", "peer_as = 65000", f'peers = ["{UPSTREAM}"]',
        'control_socket = "bird.ctl"',  # in each router's state directory: three routers on one host
        f"drain_time = {DRAIN}", "",
    ]
    return "\n".join(lines)


def who_answers(topo, n: int = 30) -> dict[str, int]:
    """``n`` probes of the VIP from the upstream, each from its own source port (a new flow for the
    upstream's layer-4 ECMP hash): how many each router answered."""
    got: dict[str, int] = {}
    for i in range(n):
        s = topo.socket("c")
        try:
            s.bind((UPSTREAM, 0))
            s.settimeout(0.3)
            s.sendto(b"q%d" % i, (VIP, 7))
            try:
                data, _ = s.recvfrom(2048)
            except (socket.timeout, OSError):
                got["none"] = got.get("none", 0) + 1
                continue
            name = data.split(b" ", 1)[0].decode()
            got[name] = got.get(name, 0) + 1
        finally:
            s.close()
    return got


def test_three_routers_all_active_behind_ecmp_lose_one_and_drain_one(netns, tmp_path):
    topo = netns(routers=3, servers=1)  # (the private link unused: heartbeats on the public one)
    addrs = {f"r{i}": topo.router_address(i) for i in (1, 2, 3)}
    topo.run("c", "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1")  # layer-4 hashing
    start_upstream(topo, tmp_path, upstream_conf(addrs))
    for h in ("r1", "r2", "r3", "s1"):  # the routers' echo answers for the VIP on their lo; s1's for the check
        topo.popen(h, [sys.executable, "-c", RESPONDER, h], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c = Cluster(topo, tmp_path)
    c.config.write_text(scaleout_toml(topo, write_key(tmp_path / "hb.key")))
    try:
        c.start()
        all3 = set(addrs.values())
        c.wait(lambda: c.roles() == dict.fromkeys(addrs, "ACTIVE"), 30.0, "three active routers")
        for r in addrs:
            c.wait(lambda r=r: f"{VIP}/32" in topo.run(r, "ip", "-o", "addr", "show", "dev", "lo").stdout, 5.0,
                   f"the VIP on {r}'s lo")
            assert [e.payload["reason"] for e in c.events(r, ("router.role_changed",))] == ["started", "scale_out"]
            assert not c.events(r, ("pulse.send_garp", "pulse.send_fence", "pulse.split_brain_resolved"))
        c.wait(lambda: nexthops(topo) == all3, 30.0, "the upstream's route to the VIP through all three")
        spread = who_answers(topo)
        assert set(spread) == set(addrs), spread  # new flows spread over the three (ECMP, L4 hash)

        # r1's router crashes and is started again; its BIRD runs on: the restart moves no traffic --
        mark1 = len(c.events("r1"))
        os.killpg(c.procs["r1"].pid, signal.SIGKILL)
        c.procs["r1"].wait(5)
        c.start("r1")
        absent = 0
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:  # sampled every ~20 ms until the new run has sent its route set
            absent += addrs["r1"] not in nexthops(topo)
            sets = [e for e in c.events("r1")[mark1:] if e.type == "bgp.set_routes"]
            if sets:
                break
            time.sleep(0.02)
        # the new run's first route set announces (no empty set withdrawing the adopted BIRD's route:
        # it waits until the run knows what to announce, "settled: ...", unless role and health were
        # known before the speaker was adopted)
        assert sets and [r["state"] for r in sets[0].payload["routes"]] == ["announce"], sets
        assert absent == 0  # never out of the upstream's set
        adopted = [e for e in c.events("r1")[mark1:] if e.type == "bgp.speaker_started"]
        assert adopted and adopted[0].payload["adopted"] is True
        c.wait(lambda: c.role("r1") == "ACTIVE", 10.0, "r1 active again")
        c.wait(lambda: {e.payload["peer"] for e in c.events("r1")[mark1:] if e.type == "pulse.peer_alive"} == {"r2", "r3"},
               5.0, "r1 hears its peers again")

        # r2 lost whole: its router's processes and its BIRD (a host that died) -------------------
        marks = {r: len(c.events(r)) for r in ("r1", "r3")}
        bird2 = int((c.state("r2") / "bgp" / "bird.pid").read_text().split()[0])
        t0 = time.monotonic()
        os.killpg(c.procs["r2"].pid, signal.SIGKILL)
        os.kill(bird2, signal.SIGKILL)
        c.procs["r2"].wait(5)
        c.wait(lambda: nexthops(topo) == {addrs["r1"], addrs["r3"]}, 10.0, "r2 out of the upstream's set")
        lost_s = time.monotonic() - t0
        assert set(who_answers(topo)) == {"r1", "r3"}
        for r in ("r1", "r3"):  # nothing moves on the others: no role change, no VIP change, no lvsd order
            c.wait(lambda r=r: [e for e in c.events(r, ("pulse.peer_dead",)) if e.payload["peer"] == "r2"], 5.0,
                   f"{r} sees r2 dead")
            moved = [e.type for e in c.events(r)[marks[r]:] if e.type in (
                "router.role_changed", "pulse.take_vips", "pulse.release_vips", "pulse.start_lvsd", "pulse.stop_lvsd")]
            assert moved == [], (r, moved)

        # r3 stopped by SIGTERM: drained first (out of the ECMP set, still serving), then withdrawn --
        t0 = time.monotonic()
        c.procs["r3"].send_signal(signal.SIGTERM)
        c.wait(lambda: nexthops(topo) == {addrs["r1"]}, DRAIN, "r3 drained out of the ECMP set")
        drained_s = time.monotonic() - t0
        assert drained_s < DRAIN - 0.3 and c.procs["r3"].poll() is None
        assert topo.has_address("r3", VIP)  # still serving the flows the upstream still sends it
        c.procs["r3"].wait(DRAIN + 10)
        assert not topo.has_address("r3", VIP)
        ev3 = c.events("r3")
        stop = next(e for e in ev3 if e.type == "router.shutdown_requested")
        withdrawn = next(e for e in ev3 if e.type == "bgp.vip_changed" and e.payload["new"] == "withdraw")
        released = next(e for e in ev3 if e.type == "pulse.release_vips")
        assert [e.payload["new"] for e in ev3 if e.type == "bgp.vip_changed"][-2:] == ["drain", "withdraw"]
        assert withdrawn.mono_ns - stop.mono_ns >= DRAIN * 1e9 * 0.95
        assert released.mono_ns - withdrawn.mono_ns >= 0.9e9  # the VIP goes a second after the withdrawal
        assert [e.payload["new"] for e in ev3 if e.type == "router.role_changed"][-1] == "STOPPED"
        assert set(who_answers(topo, 10)) == {"r1"}
        print(f"\nscale-out: r2 lost -> out of the upstream's set in {lost_s * 1000:.0f} ms; r3 SIGTERM -> "
              f"drained out in {drained_s * 1000:.0f} ms, VIP released {(released.mono_ns - stop.mono_ns) / 1e9:.2f} s after")
    finally:
        c.stop()
    from lvsbus_tools.replay import verify

    for r in addrs:
        rep = verify(str(c.state(r) / "log"))
        assert rep.ok, rep.format()
