"""Scale-out on the real datapath (issue 17; docs/scaleout.md "On the real datapath"), for a kernel
that has IPVS (the kernel tier's VM): shared by tests/kernel/test_scaleout_datapath.py and
bench/scaleout.py.

    client k (10.98.0.2) ── upstream c (BIRD 2, ECMP with layer-4 hashing, BFD to each router)
                              │ pub 10.99.1.100                         │ nat 10.99.3.1
                 r1 / r2 / r3 (lvsbus routers, all active,              │
                 the VIP on lo, IPVS mh + mh-port, direct routing)      │
                              │ nat 10.99.3.11-13                       │
                 s1 / s2 / s3 (10.99.3.101-103, the VIP on lo, ARP silenced; replies go
                               straight back through the upstream, their default gateway)

A second VIP (``VIP2``) needs all three real servers (quorum 3), reached at other addresses:
``lose_quorum_of_one_vip`` makes one router unable to reach one of them, and that router withdraws
that VIP alone. The client opens long-lived TCP connections (each asks its real server its name every
``every`` s) and, all the time, new ones (one every ``new_every`` s). ``Rig.lose(r)`` kills a
router as a host dies: its public cable cut, then every process in its namespace SIGKILLed (its
BIRD too), so the upstream learns of it by BFD. ``Rig.measure`` gives the figures:

* ``reroute_ms``: from the loss until new connections stop failing: the later of the upstream's
  route change (until then a new flow hashed to the lost router fails) and the start of the last
  new connection that failed or lost its first SYN (answered only after TCP's retransmission, a
  second later). The client only samples that window (under TCG it makes few attempts while the
  VM tears the lost router down, so it may see no failure at all): the route change bounds it;
* ``survivor_flows_kept``: the share of the established connections through the other routers
  that still work afterwards (their real server still answering on them);
* ``moved_flows_kept``: the share of the lost router's connections that continue through another
  router (IPVS mh maps them to the same real server, sloppy TCP takes them mid-flow).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lvsbus.demo.netns import NAT, Topology, write_key
from tests.helpers.bgp import UPSTREAM, nexthops, start_upstream, upstream_conf
from tests.helpers.routers import Cluster

VIP = "10.200.0.1"
#: a second VIP, its virtual service needing all three real servers (quorum 3), through other
#: addresses of the same servers (10.99.3.201-203): one router that cannot reach one of them loses
#: that VIP's quorum alone
VIP2 = "10.200.0.2"
CLIENT_NET = "10.98.0"
CLIENT_ADDR = f"{CLIENT_NET}.2"
DRAIN = 2.0

#: a real server: every line received is answered with the server's name
SERVER = r"""
import asyncio, sys
name = (sys.argv[1] + "\n").encode()
async def serve(r, w):
    try:
        while await r.readline():
            w.write(name)
            await w.drain()
    except OSError:
        pass
    finally:
        w.close()
async def main():
    s = await asyncio.start_server(serve, "0.0.0.0", 80, backlog=512)
    async with s:
        await s.serve_forever()
asyncio.run(main())
"""

#: the client: ``VIP LONG EVERY NEW_EVERY``. Opens LONG connections, prints ``ready {port: server}``,
#: then keeps asking on each every EVERY s and opens a new connection every NEW_EVERY s, until a line
#: on stdin; then prints the summary as one JSON line. Times are CLOCK_MONOTONIC (the test's clock).
CLIENT = r"""
import asyncio, json, sys, time
vip, n_long, every, new_every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
long, new, stop = {}, [], asyncio.Event()
async def ask(r, w, timeout):
    w.write(b"q\n")
    await w.drain()
    line = await asyncio.wait_for(r.readline(), timeout)
    if not line:
        raise ConnectionResetError("closed")
    return line.decode().strip()
async def keep(port, r, w):
    c = long[port]
    while not stop.is_set():
        await asyncio.sleep(every)
        try:
            got = await ask(r, w, 15.0)
        except (OSError, asyncio.TimeoutError) as e:
            c["error"], c["at"] = type(e).__name__, time.monotonic()
            return
        if got != c["server"]:
            c["error"], c["at"] = "answered by " + got, time.monotonic()
            return
        c["asks"] += 1
async def one_new():
    t = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(vip, 80), 3.0)
        try:
            got = await ask(r, w, 3.0)
        finally:
            w.close()
        new.append([t, got, time.monotonic() - t])
    except (OSError, asyncio.TimeoutError) as e:
        new.append([t, None, time.monotonic() - t])
async def main():
    conns = []
    for _ in range(n_long):
        r, w = await asyncio.open_connection(vip, 80)
        port = w.get_extra_info("sockname")[1]
        long[port] = {"server": await ask(r, w, 5.0), "error": None, "at": None, "asks": 0}
        conns.append((port, r, w))
    print("ready " + json.dumps({p: c["server"] for p, c in long.items()}), flush=True)
    tasks = [asyncio.create_task(keep(p, r, w)) for p, r, w in conns]
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    news = []
    while not stop.is_set():
        news.append(asyncio.create_task(one_new()))
        try:
            await asyncio.wait_for(stop.wait(), new_every)
        except asyncio.TimeoutError:
            pass
    await asyncio.gather(*news)
    for t in tasks:
        t.cancel()
    print(json.dumps({"long": long, "new": new}), flush=True)
asyncio.run(main())
"""


#: the upstream's route changes to a VIP: one CLOCK_MONOTONIC stamp a line for every rtnetlink
#: message about it (the kernel's IPv4 route group), so the test need not poll
ROUTE_WATCH = r"""
import socket, sys, time
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
s.bind((0, 0x40))
vip = socket.inet_aton(sys.argv[1])
while True:
    data = s.recv(65536)
    if vip in data:
        print("%.6f" % time.monotonic(), flush=True)
"""


def scaleout_toml(key: Path, *, bfd: bool = True) -> str:
    lines = ['service = "lvs"', ""]
    for i in (1, 2, 3):
        lines += [f"[router.r{i}]", f'address = "10.99.1.{10 + i}"', f"priority = {100 - i}", 'device = "eth0"', ""]
    # timers for a slow machine (the VM emulates its CPU): the datapath, not the timers, is shown
    lines += [
        "[heartbeat]", "port = 5390", "keepalive = 0.5", "deadtime = 3.0", f'key_file = "{key}"', "",
        "[virtual.web]", f'address = "{VIP}"', "port = 80", 'scheduler = "mh"', 'scheduler_flags = ["mh-port"]',
        'forwarding = "direct"', "",
        "[virtual.web.check]", 'kind = "tcp_connect"', "interval = 1.0", "timeout = 1.0", "rise = 1", "fall = 3", "",
        *[line for j in (1, 2, 3) for line in (f"[virtual.web.server.s{j}]", f'address = "{NAT}.{100 + j}"', "")],
        "[virtual.web2]", f'address = "{VIP2}"', "port = 80", 'scheduler = "mh"', 'scheduler_flags = ["mh-port"]',
        'forwarding = "direct"', "quorum = 3", "",
        "[virtual.web2.check]", 'kind = "tcp_connect"', "interval = 1.0", "timeout = 1.0", "rise = 1", "fall = 2", "",
        *[line for j in (1, 2, 3) for line in (f"[virtual.web2.server.t{j}]", f'address = "{NAT}.{200 + j}"', "")],
        "[scaleout]", "local_as = 65001", "peer_as = 65000", f'peers = ["{UPSTREAM}"]',
        'control_socket = "bird.ctl"', f"drain_time = {DRAIN}", f"bfd = {'true' if bfd else 'false'}", "",
    ]
    return "\n".join(lines)


#: a new connection that took this long lost its first SYN (TCP sends the second 1 s later)
SYN_LOST = 0.9


@dataclass
class Flows:
    """The client's summary: ``long`` {port: {server, error, at, asks}}, ``new`` [[t, server|None,
    seconds]]."""

    long: dict[int, dict]
    new: list[list]

    def failed_new_after(self, t: float) -> list[float]:
        """Starts of the new connections from ``t`` on that got no answer within 3 s."""
        return [s for s, got, _took in self.new if s >= t and got is None]

    def hit_new_after(self, t: float) -> list[float]:
        """... that failed or lost their first SYN (answered a second or more late)."""
        return [s for s, got, took in self.new if s >= t and (got is None or took >= SYN_LOST)]


@dataclass
class Figures:
    reroute_ms: float
    survivor_flows_kept: float
    moved_flows_kept: float
    survivors: int
    moved: int
    out_of_ecmp_ms: float
    new_total: int
    new_failed: int
    new_exposed: int = 0
    extra: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [f"reroute_ms={self.reroute_ms:.0f} ms (loss -> new connections stop failing; "
                f"{self.new_failed} of {self.new_total} new connections failed or lost their first SYN, "
                f"{self.new_exposed} started before the route change)",
                f"survivor_flows_kept={self.survivor_flows_kept:.3f} (of {self.survivors} established through the other routers)",
                f"moved_flows_kept={self.moved_flows_kept:.3f} (of {self.moved} established through the lost router)",
                f"out_of_ecmp_ms={self.out_of_ecmp_ms:.0f} ms (loss -> the upstream's route without it: BFD)"]


class Rig:
    """The topology above, three lvsbus routers, the upstream's BIRD, servers and the client."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.topo = Topology(routers=3, servers=3)
        self.cluster: Cluster | None = None
        self.client: subprocess.Popen | None = None
        self.addrs = {f"r{i}": f"10.99.1.{10 + i}" for i in (1, 2, 3)}
        self.by_addr = {a: r for r, a in self.addrs.items()}

    # -- set-up ---------------------------------------------------------------------------------

    def build(self) -> "Rig":
        t = self.topo.build()
        sh = t._sh
        # the upstream c: on the servers' network too (their replies come back through it), and the
        # client k behind it; it forwards, hashes flows on layer 4 over the ECMP nexthops, and takes
        # the VIP's replies on another interface than its route to the VIP (no reverse-path filter)
        t._veth("cnat", "c", "eth1", "nat", f"{NAT}.1/24", "02:99:03:00:01:00")
        k = t.ns("k")
        sh("ip", "netns", "add", k)
        t.created.append(k)
        sh("ip", "-n", k, "link", "set", "lo", "up")
        sh("ip", "-n", t.ns("c"), "link", "add", "eth2", "type", "veth", "peer", "name", "eth0", "netns", k)
        sh("ip", "-n", t.ns("c"), "addr", "add", f"{CLIENT_NET}.1/24", "dev", "eth2")
        sh("ip", "-n", t.ns("c"), "link", "set", "eth2", "up")
        sh("ip", "-n", k, "addr", "add", f"{CLIENT_ADDR}/24", "dev", "eth0")
        sh("ip", "-n", k, "link", "set", "eth0", "up")
        sh("ip", "-n", k, "route", "add", "default", "via", f"{CLIENT_NET}.1")
        for key, value in (("net.ipv4.ip_forward", "1"), ("net.ipv4.fib_multipath_hash_policy", "1"),
                           ("net.ipv4.conf.all.rp_filter", "0"), ("net.ipv4.conf.default.rp_filter", "0"),
                           ("net.ipv4.conf.eth0.rp_filter", "0"), ("net.ipv4.conf.eth1.rp_filter", "0")):
            t.run("c", "sysctl", "-qw", f"{key}={value}")
        for r in t.routers:  # the way back to clients (none needed for direct routing; no martians)
            t.run(r, "ip", "route", "add", "default", "via", UPSTREAM)
        for j in (1, 2, 3):
            s = f"s{j}"
            t.run(s, "ip", "addr", "add", f"{VIP}/32", "dev", "lo")
            t.run(s, "ip", "addr", "add", f"{VIP2}/32", "dev", "lo")
            t.run(s, "ip", "addr", "add", f"{NAT}.{200 + j}/24", "dev", "eth0")
            for key, value in (("arp_ignore", "1"), ("arp_announce", "2")):
                t.run(s, "sysctl", "-qw", f"net.ipv4.conf.all.{key}={value}")
            t.popen(s, [sys.executable, "-c", SERVER, s], stdout=subprocess.DEVNULL,
                    stderr=open(self.tmp / f"{s}.err", "w"))
        start_upstream(t, self.tmp, upstream_conf(self.addrs, bfd=set(self.addrs)))
        self.cluster = Cluster(t, self.tmp)
        self.cluster.config.write_text(scaleout_toml(write_key(self.tmp / "hb.key")))
        return self

    def start(self, timeout: float = 300.0) -> float:
        """Start the three routers; wait until the upstream's route to the VIP has all three and every
        router's kernel has the three real servers. Seconds it took."""
        c = self.cluster
        assert c is not None
        t0 = time.monotonic()
        c.start()
        c.wait(lambda: c.roles() == dict.fromkeys(self.addrs, "ACTIVE"), timeout, "three active routers", step=0.5)
        for vip in (VIP, VIP2):
            c.wait(lambda vip=vip: nexthops(self.topo, vip) == set(self.addrs.values()), timeout,
                   f"the upstream's route to {vip} through all three", step=0.5)
        for r in self.addrs:
            c.wait(lambda r=r: len(self.ipvs_dests(r)) == 3, timeout, f"three real servers in {r}'s IPVS table", step=0.5)
        return time.monotonic() - t0

    def close(self) -> None:
        try:
            if self.client is not None and self.client.poll() is None:
                self.client.kill()
                self.client.wait(10)
            if self.cluster is not None:
                self.cluster.stop()
        finally:
            self.topo.destroy()

    # -- inspection -----------------------------------------------------------------------------

    def ipvsadm(self, r: str, *args: str) -> str:
        return self.topo.run(r, "ipvsadm", *args).stdout

    def ipvs_dests(self, r: str) -> list[str]:
        out = self.ipvsadm(r, "-Ln", "-t", f"{VIP}:80") if self._has_service(r) else ""
        return re.findall(r"->\s+(\d+\.\d+\.\d+\.\d+:\d+)\s+Route", out)

    def _has_service(self, r: str) -> bool:
        return f"{VIP}:80" in self.ipvsadm(r, "-Ln")

    def sysctl(self, r: str, name: str) -> str:
        return self.topo.run(r, "cat", f"/proc/sys/net/ipv4/vs/{name}").stdout.strip()

    def conn_routers(self) -> dict[int, str]:
        """The client port of each established connection in each router's IPVS connection table ->
        the router (a connection seen by two routers maps to the last: call it before a fault)."""
        out: dict[int, str] = {}
        for r in self.addrs:
            for line in self.ipvsadm(r, "-Lnc").splitlines():
                m = re.match(rf"\s*TCP\s+\S+\s+ESTABLISHED\s+{re.escape(CLIENT_ADDR)}:(\d+)\s+{re.escape(VIP)}:80\s", line)
                if m:
                    out[int(m.group(1))] = r
        return out

    def nexthops(self, vip: str = VIP) -> set[str]:
        return {self.by_addr.get(a, a) for a in nexthops(self.topo, vip)}

    # -- the client -----------------------------------------------------------------------------

    def start_client(self, n_long: int, every: float = 0.5, new_every: float = 0.05) -> dict[int, str]:
        """Start the client; when its long-lived connections are up, {client port: real server}."""
        self.client = self.topo.popen("k", [sys.executable, "-c", CLIENT, VIP, str(n_long), str(every), str(new_every)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.tmp / "client.err", "w"),
                                      text=True)
        assert self.client.stdout is not None
        line = self.client.stdout.readline()
        assert line.startswith("ready "), (line, (self.tmp / "client.err").read_text()[-3000:])
        return {int(p): s for p, s in json.loads(line[6:]).items()}

    def stop_client(self) -> Flows:
        assert self.client is not None and self.client.stdin is not None and self.client.stdout is not None
        self.client.stdin.write("stop\n")
        self.client.stdin.flush()
        line = self.client.stdout.readline()
        self.client.wait(60)
        assert line.strip(), (self.tmp / "client.err").read_text()[-3000:]
        d = json.loads(line)
        return Flows({int(p): c for p, c in d["long"].items()}, d["new"])

    def watch_routes(self, vip: str = VIP) -> Path:
        """Start stamping the upstream's route changes to ``vip`` (``route_changes``); the file."""
        out = self.tmp / f"routes-{vip}.txt"
        self.topo.popen("c", [sys.executable, "-c", ROUTE_WATCH, vip], stdout=open(out, "w"), stderr=subprocess.DEVNULL)
        return out

    @staticmethod
    def route_changes(path: Path) -> list[float]:
        return [float(x) for x in path.read_text().split()]

    # -- faults ---------------------------------------------------------------------------------

    def lose(self, r: str) -> float:
        """Router ``r`` dies as a host does: its public cable cut, every process in its namespace
        SIGKILLed (by PID). The instant (CLOCK_MONOTONIC)."""
        t0 = time.monotonic()
        self.topo.cut(r, "public")
        for pid in self.topo._sh("ip", "netns", "pids", self.topo.ns(r), check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        return t0


def lose_quorum_of_one_vip(rig: Rig, r: str = "r1") -> dict[str, set[str]]:
    """Router ``r`` can no longer reach one of VIP2's real servers (a prohibit route to it): VIP2's
    quorum (3) is lost there alone. Until the upstream's route to VIP2 no longer has ``r``; then the
    route goes again and ``r`` is back. The upstream's nexthops to both VIPs while ``r`` was out."""
    c = rig.cluster
    assert c is not None
    rig.topo.run(r, "ip", "route", "add", "prohibit", f"{NAT}.201/32")
    try:
        c.wait(lambda: rig.nexthops(VIP2) == set(rig.addrs) - {r}, 60.0, f"{r} out of {VIP2}'s route", step=0.25)
        during = {VIP: rig.nexthops(VIP), VIP2: rig.nexthops(VIP2)}
    finally:
        rig.topo.run(r, "ip", "route", "del", "prohibit", f"{NAT}.201/32")
    c.wait(lambda: rig.nexthops(VIP2) == set(rig.addrs), 60.0, f"{r} back in {VIP2}'s route", step=0.25)
    return during


def measure(flows: Flows, t_loss: float, lost: str, via: dict[int, str], t_out: float) -> Figures:
    """The figures for a loss at ``t_loss`` of router ``lost``; ``via``: client port -> router
    before the loss; ``t_out``: when the upstream's route no longer had it."""
    failed = flows.hit_new_after(t_loss)
    after = sorted(s for s, _got, _took in flows.new if s >= t_loss)
    reroute = max([t_out, *failed]) - t_loss
    survivors = [p for p, r in via.items() if r != lost and p in flows.long]
    moved = [p for p, r in via.items() if r == lost and p in flows.long]

    def kept(ports: list[int]) -> float:
        return sum(1 for p in ports if flows.long[p]["error"] is None) / len(ports) if ports else float("nan")

    return Figures(reroute_ms=reroute * 1000, survivor_flows_kept=kept(survivors), moved_flows_kept=kept(moved),
                   survivors=len(survivors), moved=len(moved), out_of_ecmp_ms=(t_out - t_loss) * 1000,
                   new_total=len(after), new_failed=len(failed),
                   new_exposed=sum(1 for s in after if s < t_out))


@dataclass
class Run:
    """What ``lose_one_drain_one`` saw: client ports -> real server and -> router before the loss,
    the client's summary, the instants (CLOCK_MONOTONIC), the figures and the routers' tables."""

    servers: dict[int, str]
    via: dict[int, str]
    flows: Flows
    t_loss: float
    t_out: float
    t_drain: float
    t_drained: float
    still_serving_while_drained: bool
    tables: dict[str, str]
    sloppy: dict[str, str]
    figures: Figures


def lose_one_drain_one(rig: Rig, n_long: int = 30, settle: float = 6.0, new_every: float = 0.02) -> Run:
    """With the routers started: the client's connections up, r2 lost whole, ``settle`` s, then r3
    stopped by SIGTERM (drained, withdrawn, exited), then the client's summary."""
    c = rig.cluster
    assert c is not None
    tables = {r: rig.ipvsadm(r, "-Ln") for r in rig.addrs}
    sloppy = {r: rig.sysctl(r, "sloppy_tcp") for r in rig.addrs}
    routes = rig.watch_routes()
    servers = rig.start_client(n_long, new_every=new_every)
    via = {p: r for p, r in rig.conn_routers().items() if p in servers}
    time.sleep(1.0)
    t_loss = rig.lose("r2")
    c.wait(lambda: rig.nexthops() == {"r1", "r3"}, 30.0, "r2 out of the upstream's route", step=0.05)
    time.sleep(settle)  # the moved connections' retransmissions back off: give them time
    t_drain = time.monotonic()
    c.procs["r3"].send_signal(signal.SIGTERM)
    c.wait(lambda: rig.nexthops() == {"r1"}, DRAIN * 4, "r3 drained out of the ECMP set", step=0.05)
    serving = c.procs["r3"].poll() is None and rig.topo.has_address("r3", VIP)
    c.procs["r3"].wait(DRAIN + 60)
    time.sleep(3.0)
    flows = rig.stop_client()
    # the upstream kernel's first route change to the VIP after the loss, and after the SIGTERM
    stamps = rig.route_changes(routes)
    t_out = min(t for t in stamps if t > t_loss)
    t_drained = min(t for t in stamps if t > t_drain)
    return Run(servers, via, flows, t_loss, t_out, t_drain, t_drained, serving, tables, sloppy,
               measure(flows, t_loss, "r2", via, t_out))
