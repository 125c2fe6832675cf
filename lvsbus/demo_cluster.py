"""``lvsbus demo cluster``: a real LVS cluster on this machine, out of network namespaces.

    client 10.99.1.100 ── public bridge ── r1 (primary) / r2 (backup)   VIP 10.99.1.50:80
                          private bridge ── r1 / r2                      (heartbeats on both)
                          nat bridge ──── r1 / r2 ── s1 s2 s3 (HTTP)     gateway 10.99.3.1 (moves with the VIP)

Both routers run ``lvsbus router`` (broker, pulse, nanny, and lvsd + the IPVS applier while
active). The demo shows the election, the health checks, a real server leaving the table, the
active router SIGKILLed and the backup taking over, then replays both routers' logs and writes
the incident timeline as HTML.

The datapath (the client's requests spread over the real servers) needs a kernel with IPVS. Where
this kernel has none (no /proc/net/ip_vs after ``modprobe ip_vs``), the demo says so, and shows
the VIP moving (the client's ARP entry and pings) and the table lvsd desires instead of the
kernel's; the applier reports ``ipvs.unavailable`` and retries, as keepalived's checker does.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .netns import NAT, NAT_VIP, VIP, Topology, netns_available, router_mac, write_key

SERVER_PY = r"""
import http.server, socketserver, sys
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"served by {name}\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
socketserver.TCPServer.allow_reuse_address = True
with socketserver.ThreadingTCPServer(("0.0.0.0", 80), H) as s:
    s.serve_forever()
"""

CLIENT_PY = r"""
import sys, urllib.request, collections
n = int(sys.argv[1]); seen = collections.Counter(); errors = 0
for _ in range(n):
    try:
        seen[urllib.request.urlopen("http://%s/" % sys.argv[2], timeout=1).read().decode().split()[-1]] += 1
    except Exception:
        errors += 1
print(" ".join(f"{k}={v}" for k, v in sorted(seen.items())) + f" errors={errors}")
"""


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def config_toml(key: Path, keepalive: float, deadtime: float) -> str:
    lines = ['service = "lvs"', ""]
    for i, prio in ((1, 200), (2, 100)):
        lines += [
            f"[router.r{i}]", f'address = "10.99.1.{10 + i}"', f'private_address = "10.99.2.{10 + i}"',
            f"priority = {prio}", "",
        ]
    lines += [
        "[heartbeat]", "port = 5390", f"keepalive = {keepalive}", f"deadtime = {deadtime}", f'key_file = "{key}"',
        "preempt = true", "garp_repeat = 3", "",
        "[nat_router]", f'address = "{NAT_VIP}"', 'device = "eth2"', "prefixlen = 24", "",
        "[virtual.web]", f'address = "{VIP}"', 'device = "eth0"', "port = 80", 'protocol = "tcp"',
        'scheduler = "rr"', 'forwarding = "nat"', "",
        "[virtual.web.check]", 'kind = "http"', "interval = 0.5", "timeout = 0.4", "rise = 2", "fall = 2",
        'path = "/"', "status = [200]", "",
    ]
    for j in (1, 2, 3):
        lines += [f"[virtual.web.server.s{j}]", f'address = "{NAT}.{100 + j}"', ""]
    return "\n".join(lines)


class Demo:
    def __init__(self, args) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="lvsbus-demo-"))
        self.topo = Topology(routers=2, servers=3)
        self.routers: dict[str, subprocess.Popen] = {}
        self.servers: dict[str, subprocess.Popen] = {}
        self.ipvs = False

    # -- helpers -----------------------------------------------------------------------------

    def state(self, r: str) -> str:
        return str(self.work / r)

    def events(self, r: str, prefix: str = "") -> list:
        from . import catalog  # noqa: F401
        from .events import decode
        from .log import LogReader

        log_dir = os.path.join(self.state(r), "log")
        if not os.path.isdir(log_dir):
            return []
        out = []
        try:
            for seq, body in LogReader(log_dir).read(1):
                ev = decode(body, seq)
                if ev.type.startswith(prefix):
                    out.append(ev)
        except Exception:  # the log is being written as we read: the next poll sees the rest
            pass
        return out

    def role(self, r: str) -> str | None:
        roles = [e.payload["new"] for e in self.events(r, "router.role_changed")]
        return roles[-1] if roles else None

    def wait(self, what: str, cond, timeout: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if cond():
                return time.monotonic() - t0
            time.sleep(0.05)
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")

    def start_router(self, r: str) -> None:
        os.makedirs(self.state(r), exist_ok=True)
        logf = open(self.work / f"{r}.stderr", "ab")
        self.routers[r] = self.topo.popen(
            r,
            [sys.executable, "-m", "lvsbus.cli", "router", "--config", str(self.work / "lvsbus.toml"), "--state-dir", self.state(r)],
            stdout=logf, stderr=logf, env={**os.environ, "LVSBUS_LOG_FORMAT": "json"},
        )

    def client(self, n: int) -> str:
        r = self.topo.run("c", sys.executable, "-c", CLIENT_PY, str(n), VIP, check=False)
        return r.stdout.strip() or r.stderr.strip()[-200:]

    def ping(self) -> bool:
        return self.topo.run("c", "ping", "-c", "1", "-W", "1", VIP, check=False).returncode == 0

    def client_arp(self) -> str:
        mac = self.topo.neigh_mac("c", VIP)
        names = {router_mac(1, 1): "r1", router_mac(2, 1): "r2"}
        return f"{mac} ({names.get(mac or '', '?')})"

    def show_table(self, r: str) -> None:
        r_ = subprocess.run(
            [sys.executable, "-m", "lvsbus.cli", "ipvs", "show", "--state-dir", self.state(r)],
            capture_output=True, text=True,
        )
        for line in (r_.stdout or r_.stderr).splitlines():
            print("     " + line)

    # -- the story ---------------------------------------------------------------------------

    def run(self) -> int:
        keepalive, deadtime = (0.2, 1.0)
        say(f"work directory {self.work}")
        say("building the namespaces: client, two routers (public + private + NAT links), three real servers")
        self.topo.build()
        for r in ("r1", "r2"):
            self.topo.run(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.ipvs = self._probe_ipvs()
        if self.ipvs:
            say("this kernel has IPVS: the client's requests go through the real datapath")
        else:
            say("this kernel has no IPVS (CONFIG_IP_VS not set): the routers run in full, the applier "
                "reports ipvs.unavailable, and the demo shows the table lvsd desires instead of the kernel's. "
                "The IPVS datapath itself is shown by the kernel test tier (tests/kernel, under qemu).")
        key = write_key(self.work / "heartbeat.key")
        (self.work / "lvsbus.toml").write_text(config_toml(key, keepalive, deadtime))
        for j in (1, 2, 3):
            s = f"s{j}"
            self.servers[s] = self.topo.popen(s, [sys.executable, "-c", SERVER_PY, s],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        say(f"real servers s1 s2 s3 serve HTTP on {NAT}.101-103:80")
        say(f"starting both routers with `lvsbus router` (keepalive {keepalive}s, deadtime {deadtime}s)")
        for r in ("r1", "r2"):
            self.start_router(r)
        t = self.wait("r1 to become active", lambda: self.role("r1") == "ACTIVE", 30)
        say(f"r1 (priority 200) is ACTIVE after {t:.1f}s; r2 is {self.role('r2')}")
        self.wait("the client to reach the VIP", self.ping, 15)
        say(f"the client pings the VIP {VIP}; its ARP entry: {self.client_arp()}")
        self.wait("nanny to see all three servers up",
                  lambda: len({e.payload["server"] for e in self.events("r1", "health.real_server_up")}) >= 3, 30)
        self.wait("r1's lvsd to publish its table", lambda: any(True for _ in self.events("r1", "lvsd.table_")), 15)
        say("nanny on r1 reports s1, s2, s3 UP; the table lvsd desires on r1:")
        self.show_table("r1")
        if self.ipvs:
            say(f"12 client requests to http://{VIP}/: {self.client(12)}")

        say("stopping real server s2 (SIGKILL of its HTTP server)")
        p = self.servers.pop("s2")
        os.killpg(p.pid, signal.SIGKILL)
        t = self.wait("s2 to go DOWN", lambda: any(e.payload["server"] == "s2" for e in self.events("r1", "health.real_server_down")), 30)
        say(f"s2 is DOWN after {t:.1f}s (fall 2 x interval 0.5s) and out of the table:")
        self.show_table("r1")
        if self.ipvs:
            say(f"12 client requests: {self.client(12)}")

        say("SIGKILL of every process of router r1 (the active one)")
        t_kill = time.monotonic()
        os.killpg(self.routers["r1"].pid, signal.SIGKILL)
        self.routers["r1"].wait()
        self.wait("r2 to take over", lambda: self.role("r2") == "ACTIVE", 30)
        takeover = time.monotonic() - t_kill
        self.wait("the VIP to answer again", self.ping, 15)
        answered = time.monotonic() - t_kill
        say(f"r2 took over {takeover:.2f}s after the kill; the VIP answered again after {answered:.2f}s")
        try:  # the gratuitous ARP moved it already, or the client's next ARP resolution will
            self.wait("the client's ARP entry to name r2", lambda: self.topo.neigh_mac("c", VIP) == router_mac(2, 1), 5)
        except RuntimeError:
            pass  # said below as it is
        say(f"the client's ARP entry for the VIP now: {self.client_arp()}")
        if self.ipvs:
            say(f"12 client requests through r2: {self.client(12)}")
        self.wait("r2's lvsd to publish its table",
                  lambda: any(True for _ in self.events("r2", "lvsd.table_desired")), 15)
        say("r2's desired table (health was already known: nanny ran on the backup too):")
        self.show_table("r2")

        say("stopping r2 gracefully (SIGTERM)")
        self.routers["r2"].send_signal(signal.SIGTERM)
        try:
            self.routers["r2"].wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.routers["r2"].pid, signal.SIGKILL)
        self.replay()
        return 0

    def _probe_ipvs(self) -> bool:
        subprocess.run(["modprobe", "ip_vs"], capture_output=True)
        return os.path.exists("/proc/net/ip_vs")

    def replay(self) -> None:
        logs = [os.path.join(self.state(r), "log") for r in ("r1", "r2")]
        say("replaying both routers' logs through the same cores (lvsbus replay --verify):")
        for r, log in zip(("r1", "r2"), logs):
            res = subprocess.run([sys.executable, "-m", "lvsbus.cli", "replay", log, "--verify"], capture_output=True, text=True)
            last = (res.stdout.strip().splitlines() or res.stderr.strip().splitlines() or ["(no output)"])[-1]
            say(f"  {r}: exit {res.returncode}: {last}")
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        html = out / "timeline.html"
        res = subprocess.run(
            [sys.executable, "-m", "lvsbus.cli", "replay", *logs, "--timeline", "--html", str(html)],
            capture_output=True, text=True,
        )
        text = res.stdout.splitlines()
        key = [l for l in text if any(w in l for w in ("role", "ACTIVE", "DOWN", "fence", "dead"))]
        say("the incident timeline (the key rows):")
        for line in key[:25]:
            print("     " + line)
        say(f"timeline HTML: {html.resolve()} (self-contained; open it in a browser)")

    def cleanup(self) -> None:
        self.topo.destroy()
        if getattr(self.args, "keep", False):
            say(f"logs kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def demo_cluster(args) -> int:
    if os.geteuid() != 0:
        print("lvsbus demo: needs root: it builds network namespaces, moves IP addresses and sends ARP. "
              "Run: sudo bash scripts/demo.sh", file=sys.stderr)
        return 1
    reason = netns_available()
    if reason:
        print(f"lvsbus demo: cannot build network namespaces here: {reason}", file=sys.stderr)
        return 1
    demo = Demo(args)
    old = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return demo.run()
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return 130
    except RuntimeError as exc:
        say(f"FAILED: {exc}")
        for r in ("r1", "r2"):
            p = demo.work / f"{r}.stderr"
            if p.exists():
                tail = p.read_text(errors="replace").splitlines()[-8:]
                say(f"last lines of {r}'s log:")
                for line in tail:
                    print("     " + line)
        return 1
    finally:
        signal.signal(signal.SIGTERM, old)
        demo.cleanup()
