"""``lvsbus demo cluster``: a real LVS cluster on this machine, out of network namespaces.

    client 10.99.1.100 ── public bridge ── r1 (primary) / r2 (backup)   VIP 10.99.1.50:80
                          private bridge ── r1 / r2                      (heartbeats on both)
                          nat bridge ──── r1 / r2 ── s1 s2 s3 (HTTP)     gateway 10.99.3.1 (moves with the VIP)

Both routers run ``lvsbus router`` (broker, pulse, nanny, the IPVS applier, and lvsd while
active). The demo shows the election, the health checks, the client's requests spread over the
real servers by IPVS (NAT), a real server leaving the kernel's table, the active router SIGKILLed
and the backup taking over while a client keeps sending requests, then replays both routers' logs
and writes the incident timeline as HTML.

Where it runs (``demo_cluster`` decides, and says which):

* this kernel has IPVS (``modprobe ip_vs`` gives ``/proc/net/ip_vs``): here, on this machine;
* it has none: inside the qemu VM the kernel test tier uses (``lvsbus/demo/qemu.py``: Debian's kernel,
  IPVS as modules), the whole cluster in it; ``lvsbus/demo/vm.py`` boots it and streams this
  demo's output. Under emulation everything is ~12x slower, so the timers are slower too (``VM``);
* with ``--no-vm``, or when the VM cannot run (not root, no qemu, no kit and no way to build it):
  here without a datapath. The routers run in full, the applier reports ``ipvs.unavailable`` and
  retries, as keepalived's checker does, and the demo shows the VIP moving (the client's ARP entry
  and pings) and the table lvsd desires instead of the kernel's.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lvsbus.demo.netns import NAT, NAT_VIP, VIP, Topology, netns_available, router_mac, write_key

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
import collections, socket, sys, time
def get(vip, timeout):
    s = socket.create_connection((vip, 80), timeout=timeout)
    try:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return data.decode().split()[-1]
mode, vip = sys.argv[1], sys.argv[2]
if mode == "count":  # N requests one after the other (TIMEOUT s each): how many each real server answered
    seen = collections.Counter(); errors = 0
    for _ in range(int(sys.argv[3])):
        try:
            seen[get(vip, float(sys.argv[4]))] += 1
        except Exception:
            errors += 1
    print(" ".join(f"{k}={v}" for k, v in sorted(seen.items())) + f" errors={errors}")
else:  # loop: one request every EVERY s until killed, each a line "<CLOCK_MONOTONIC> <server|ERR:why>"
    out, every = open(sys.argv[3], "a", buffering=1), float(sys.argv[4])
    while True:
        t = time.monotonic()
        try:
            who = get(vip, 0.5)
        except Exception as exc:
            who = "ERR:" + type(exc).__name__
        out.write(f"{t:.3f} {who}\n")
        time.sleep(max(0.0, every - (time.monotonic() - t)))
"""


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


@dataclass(frozen=True)
class Pace:
    """The demo's timers. Under emulation (the VM) a Python process starts in ~1.5 s instead of
    ~50 ms and everything runs ~12x slower: heartbeats, checks and waits are stretched to match."""
    keepalive: float
    deadtime: float
    interval: float  # health check interval
    timeout: float  # health check timeout
    waits: float  # multiplier for how long the demo waits for each step
    poll: float  # how often the demo looks at the logs, the client, the kernel table
    every: float  # the client's request loop through the failover: one request every ``every`` s


HOST = Pace(keepalive=0.2, deadtime=1.0, interval=0.5, timeout=0.4, waits=1.0, poll=0.05, every=0.1)
VM = Pace(keepalive=0.5, deadtime=2.5, interval=1.0, timeout=1.0, waits=6.0, poll=0.5, every=0.2)


def in_vm() -> bool:
    return os.environ.get("LVSBUS_IN_VM") == "1"


def host_has_ipvs() -> bool:
    subprocess.run(["modprobe", "ip_vs"], capture_output=True)
    return os.path.exists("/proc/net/ip_vs")


def config_toml(key: Path, keepalive: float, deadtime: float, interval: float = 0.5, timeout: float = 0.4) -> str:
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
        "[virtual.web.check]", 'kind = "http"', f"interval = {interval}", f"timeout = {timeout}", "rise = 2", "fall = 2",
        'path = "/"', "status = [200]", "",
    ]
    for j in (1, 2, 3):
        lines += [f"[virtual.web.server.s{j}]", f'address = "{NAT}.{100 + j}"', ""]
    return "\n".join(lines)


class Demo:
    def __init__(self, args, ipvs: bool, pace: Pace = HOST, why_no_vm: str = "") -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="lvsbus-demo-"))
        self.topo = Topology(routers=2, servers=3)
        self.routers: dict[str, subprocess.Popen] = {}
        self.servers: dict[str, subprocess.Popen] = {}
        self.ipvs = ipvs
        self.pace = pace
        self.why_no_vm = why_no_vm
        self._events: dict[str, list] = {}
        self.quick = getattr(args, "quick", False)

    # -- helpers -----------------------------------------------------------------------------

    def state(self, r: str) -> str:
        return str(self.work / r)

    def events(self, r: str, prefix: str = "") -> list:
        """Router r's events so far (read incrementally: under emulation, decoding the whole log at
        every poll would take the CPU from the routers)."""
        from lvsbus.wire import catalog  # noqa: F401
        from lvsbus.wire.events import decode
        from lvsbus.log import LogReader

        log_dir = os.path.join(self.state(r), "log")
        seen = self._events.setdefault(r, [])
        if os.path.isdir(log_dir):
            try:
                for seq, body in LogReader(log_dir).read(seen[-1].seq + 1 if seen else 1):
                    seen.append(decode(body, seq))
            except Exception:  # the log is being written as we read: the next poll sees the rest
                pass
        return [e for e in seen if e.type.startswith(prefix)]

    def role(self, r: str) -> str | None:
        roles = [e.payload["new"] for e in self.events(r, "router.role_changed")]
        return roles[-1] if roles else None

    def health(self, r: str) -> dict[str, str]:
        """nanny's last verdict per real server on router r."""
        out = {}
        for e in self.events(r, "health.real_server_"):
            out[e.payload["server"]] = "UP" if e.type == "health.real_server_up" else "DOWN"
        return out

    def wait(self, what: str, cond, timeout: float) -> float:
        timeout *= self.pace.waits
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if cond():
                return time.monotonic() - t0
            time.sleep(self.pace.poll)
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
        r = self.topo.run("c", sys.executable, "-c", CLIENT_PY, "count", VIP, str(n), str(self.pace.waits), check=False)
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

    # -- the kernel's table (datapath mode) --------------------------------------------------

    SERVER_OF = {f"{NAT}.{100 + j}:80": f"s{j}" for j in (1, 2, 3)}

    def kernel(self, r: str, stats: bool = False) -> str:
        """``ipvsadm -Ln`` in router r's namespace: the IPVS table its kernel really has."""
        res = self.topo.run(r, "ipvsadm", "-Ln", *(["--stats"] if stats else []), check=False)
        return res.stdout if res.returncode == 0 else f"ipvsadm failed: {res.stderr.strip()}"

    def kernel_dests(self, r: str) -> dict[str, int]:
        """Real servers in router r's kernel table for the VIP, with the connections it forwarded."""
        out, in_vip = {}, False
        for line in self.kernel(r, stats=True).splitlines():
            parts = line.split()
            if parts[:1] == ["TCP"]:
                in_vip = parts[1] == f"{VIP}:80"
            elif in_vip and parts[:1] == ["->"] and parts[1] in self.SERVER_OF:
                out[self.SERVER_OF[parts[1]]] = int(parts[2])
        return out

    def show_kernel(self, r: str, stats: bool = False) -> None:
        for line in self.kernel(r, stats).splitlines():
            print("     " + line)

    def loop_results(self) -> list[tuple[float, str]]:
        out = []
        try:
            for line in (self.work / "loop.txt").read_text().splitlines():
                t, who = line.split()
                out.append((float(t), who))
        except (OSError, ValueError):  # a line being written
            pass
        return out

    def say_loop(self, t_kill: float) -> None:
        """What the client's request loop saw since the kill, as runs of answers and failures."""
        runs: list[list] = []  # [ok?, first t, last t, {who: n}]
        for t, who in self.loop_results():
            if t < t_kill:
                continue
            ok = not who.startswith("ERR")
            if not runs or runs[-1][0] != ok:
                runs.append([ok, t, t, {}])
            runs[-1][2] = t
            key = who if ok else {"ConnectionRefusedError": "refused", "TimeoutError": "timed out"}.get(who[4:], who[4:])
            runs[-1][3][key] = runs[-1][3].get(key, 0) + 1
        n = sum(sum(r[3].values()) for r in runs)
        say(f"the client's requests since the kill (one every {self.pace.every} s): {n} sent")
        for ok, a, b, by in runs[:8]:
            what = ", ".join(f"{k} {v}" for k, v in sorted(by.items()))
            say(f"  {a - t_kill:5.1f}s to {b - t_kill:5.1f}s: {'answered' if ok else 'failed'} ({what})")
        oks = [t for t, w in self.loop_results() if t >= t_kill and not w.startswith("ERR")]
        if oks:
            gap = max(b - a for a, b in zip([t_kill, *oks], oks))
            say(f"  longest wait for an answer: {gap:.2f}s. Until r2 took over, r1's kernel answered: its VIP and "
                "its IPVS table outlive the killed processes. Once r2 holds the VIP (its gratuitous ARP moved the "
                "client), requests reaching it before lvsd has started and the applier has filled its table are "
                "refused; then r2's IPVS answers")

    # -- the story ---------------------------------------------------------------------------

    def run(self) -> int:
        self.build()
        self.start_servers()
        self.start_routers()
        self.show_balancing()
        self.stop_server()
        if self.ipvs:
            loop = self.start_loop()
            self.show_takeover_kernel(self.kill_active(), loop)
        else:
            self.kill_active()
            self.show_takeover_table()
        self.stop_backup()
        self.replay()
        return 0

    def build(self) -> None:
        """The namespaces, and what this kernel's datapath lets the demo show."""
        vm = self.pace is VM
        say(f"work directory {self.work}" + (" (inside the VM; the routers' logs are copied out at the end)" if vm else ""))
        say("building the namespaces: client, two routers (public + private + NAT links), three real servers")
        self.topo.build()
        for r in ("r1", "r2"):
            self.topo.run(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        if self.ipvs:
            where = f"this VM's kernel ({os.uname().release})" if vm else "this kernel"
            say(f"{where} has IPVS: the client's requests go through the real datapath (each router's "
                "namespace has its own IPVS table; the applier fills the active router's)")
            if shutil.which("ipvsadm") is None:
                raise RuntimeError("ipvsadm is needed to show the kernel's table: apt-get install ipvsadm "
                                   "(scripts/setup.sh does)")
        else:
            say("this kernel has no IPVS (CONFIG_IP_VS not set)" + (f" and {self.why_no_vm}" if self.why_no_vm else "")
                + ": the routers run in full, the applier reports ipvs.unavailable, and the demo shows the "
                "table lvsd desires instead of the kernel's; the client's requests are not load-balanced. "
                "The IPVS datapath itself is shown by `lvsbus demo --vm` (this demo in a qemu kernel) and by "
                "the kernel test tier (tests/kernel).")

    def start_servers(self) -> None:
        """The routers' config and key, and the three real servers' HTTP servers."""
        pace = self.pace
        key = write_key(self.work / "heartbeat.key")
        (self.work / "lvsbus.toml").write_text(config_toml(key, pace.keepalive, pace.deadtime, pace.interval, pace.timeout))
        for j in (1, 2, 3):
            s = f"s{j}"
            self.servers[s] = self.topo.popen(s, [sys.executable, "-c", SERVER_PY, s],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        say(f"real servers s1 s2 s3 serve HTTP on {NAT}.101-103:80")

    def start_routers(self) -> None:
        """Both routers, until r1 (the higher priority) is ACTIVE and the client reaches the VIP."""
        pace = self.pace
        timers = f"keepalive {pace.keepalive}s, deadtime {pace.deadtime}s"
        if pace is VM:  # one after the other: both at once would fight for the emulated CPU at startup
            say(f"starting r1, then r2, with `lvsbus router` ({timers}; slower than the defaults under emulation)")
            t0 = time.monotonic()
            self.start_router("r1")
            self.wait("r1's pulse to start", lambda: self.role("r1") is not None, 30)
            self.start_router("r2")  # it hears r1 from its first heartbeat: no contest
            self.wait("r1 to become active", lambda: self.role("r1") == "ACTIVE", 30)
            t = time.monotonic() - t0
            self.wait("r2 to start as backup", lambda: self.role("r2") == "BACKUP", 30)
        else:
            say(f"starting both routers with `lvsbus router` ({timers})")
            for r in ("r1", "r2"):
                self.start_router(r)
            t = self.wait("r1 to become active", lambda: self.role("r1") == "ACTIVE", 30)
        say(f"r1 (priority 200) is ACTIVE after {t:.1f}s; r2 is {self.role('r2')}")
        self.wait("the client to reach the VIP", self.ping, 15)
        say(f"the client pings the VIP {VIP}; its ARP entry: {self.client_arp()}")

    def show_balancing(self) -> None:
        """Every server UP on r1, its table (the kernel's, or lvsd's), and requests spread over them."""
        self.wait("nanny to see all three servers up",
                  lambda: len({e.payload["server"] for e in self.events("r1", "health.real_server_up")}) >= 3, 30)
        self.wait("r1's lvsd to publish its table", lambda: any(True for _ in self.events("r1", "lvsd.table_")), 15)
        if self.ipvs:
            self.wait("the applier to put s1, s2, s3 in r1's kernel", lambda: len(self.kernel_dests("r1")) == 3, 15)
            say("nanny on r1 reports s1, s2, s3 UP; lvsd's table is in r1's kernel (ipvsadm -Ln in r1's namespace):")
            self.show_kernel("r1")
            say(f"12 client requests to http://{VIP}/ answered by: {self.client(12)}  (rr through r1's IPVS, NAT)")
        else:
            say("nanny on r1 reports s1, s2, s3 UP; the table lvsd desires on r1:")
            self.show_table("r1")

    def stop_server(self) -> None:
        """s2 killed: DOWN on r1, out of its table, and DOWN on r2 too (a warm failover)."""
        say("stopping real server s2 (SIGKILL of its HTTP server)")
        t_stop = time.monotonic()
        p = self.servers.pop("s2")
        os.killpg(p.pid, signal.SIGKILL)
        t = self.wait("s2 to go DOWN", lambda: self.health("r1").get("s2") == "DOWN", 30)
        fall = f"fall 2 x interval {self.pace.interval}s"
        if self.ipvs:
            self.wait("the applier to take s2 out of r1's kernel", lambda: "s2" not in self.kernel_dests("r1"), 15)
            gone = time.monotonic() - t_stop
            say(f"s2 is DOWN after {t:.1f}s ({fall}); the applier took it out of r1's kernel "
                f"{gone:.1f}s after it stopped:")
            self.show_kernel("r1")
            say(f"12 client requests: {self.client(12)}")
        else:
            say(f"s2 is DOWN after {t:.1f}s ({fall}) and out of the table:")
            self.show_table("r1")
        # a warm failover: r2's nanny has been checking too
        self.wait("r2's nanny to see s1, s3 UP and s2 DOWN",
                  lambda: self.health("r2") == {"s1": "UP", "s2": "DOWN", "s3": "UP"}, 30)

    def start_loop(self) -> subprocess.Popen:
        """The client's request loop that runs through the failover (datapath mode)."""
        every = self.pace.every
        loop = self.topo.popen("c", [sys.executable, "-c", CLIENT_PY, "loop", VIP, str(self.work / "loop.txt"), str(every)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait("the client's request loop to get answers",
                  lambda: sum(1 for _t, w in self.loop_results() if not w.startswith("ERR")) >= 3, 20)
        say(f"a client now sends one request every {every} s, through the failover")
        return loop

    def kill_active(self) -> float:
        """SIGKILL of r1 until r2 holds the VIP and it answers; the time of the kill."""
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
        return t_kill

    def show_takeover_kernel(self, t_kill: float, loop: subprocess.Popen) -> None:
        """r2's kernel table filled, what the request loop saw, and r2's IPVS forwarding."""
        self.wait("the applier to fill r2's kernel table", lambda: set(self.kernel_dests("r2")) == {"s1", "s3"}, 30)
        filled = time.monotonic() - t_kill
        t_filled = time.monotonic()
        self.wait("the client's loop to be answered through r2",
                  lambda: any(t > t_filled and not w.startswith("ERR") for t, w in self.loop_results()), 15)
        os.killpg(loop.pid, signal.SIGTERM)
        loop.wait()
        say(f"r2's lvsd and applier filled r2's kernel table {filled:.2f}s after the kill")
        self.say_loop(t_kill)
        before = sum(self.kernel_dests("r2").values())
        say(f"12 client requests through r2: {self.client(12)}")
        try:  # IPVS folds its per-CPU counters into what ipvsadm shows every 2 s
            self.wait("r2's IPVS counters", lambda: sum(self.kernel_dests("r2").values()) >= before + 12, 1)
        except RuntimeError:
            pass
        say("r2's kernel table, with the connections it forwarded (ipvsadm -Ln --stats in r2's namespace):")
        self.show_kernel("r2", stats=True)

    def show_takeover_table(self) -> None:
        """Without a datapath: the table r2's lvsd desires once it is active."""
        self.wait("r2's lvsd to publish its table",
                  lambda: any(True for _ in self.events("r2", "lvsd.table_desired")), 15)
        say("r2's desired table (health was already known: nanny ran on the backup too):")
        self.show_table("r2")

    def stop_backup(self) -> None:
        say("stopping r2 gracefully (SIGTERM)")
        self.routers["r2"].send_signal(signal.SIGTERM)
        try:
            self.routers["r2"].wait(15 * self.pace.waits)
        except subprocess.TimeoutExpired:
            os.killpg(self.routers["r2"].pid, signal.SIGKILL)

    def replay(self) -> None:
        logs = [os.path.join(self.state(r), "log") for r in ("r1", "r2")]
        if self.quick:
            say("--quick: not replaying the logs with --verify")
        else:
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

    def save_logs(self) -> None:
        """Inside the VM the work directory dies with it: copy the routers' logs to the shared --out."""
        dest = Path(self.args.out) / "logs"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for r in ("r1", "r2"):
            src = Path(self.state(r)) / "log"
            if src.is_dir():
                shutil.copytree(src, dest / r / "log")
            if (self.work / f"{r}.stderr").exists():
                shutil.copy(self.work / f"{r}.stderr", dest / f"{r}.stderr")
        shutil.copy(self.work / "lvsbus.toml", dest / "lvsbus.toml")
        say(f"both routers' logs copied to {dest.resolve()} (lvsbus replay {dest.resolve()}/r1/log --verify)")

    def cleanup(self) -> None:
        self.topo.destroy()
        if self.pace is VM:
            try:
                self.save_logs()
            except OSError as exc:
                say(f"could not copy the logs out: {exc}")
        if getattr(self.args, "keep", False):
            say(f"logs kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def demo_cluster(args) -> int:
    if os.geteuid() != 0:
        print("lvsbus demo: needs root: it builds network namespaces, moves IP addresses and sends ARP. "
              "Run: sudo bash scripts/demo.sh", file=sys.stderr)
        return 1
    want_vm, no_vm = getattr(args, "vm", False), getattr(args, "no_vm", False)
    ipvs = host_has_ipvs()
    why_no_vm = "--no-vm was given" if no_vm else ""
    if (want_vm or not ipvs) and not no_vm and not in_vm():
        from lvsbus.demo.vm import run_in_vm

        rc, why_no_vm = run_in_vm(args, host_ipvs=ipvs)
        if rc is not None:
            return rc
        if want_vm:
            return 1
        why_no_vm = f"the qemu VM cannot run here ({why_no_vm})"
    reason = netns_available()
    if reason:
        print(f"lvsbus demo: cannot build network namespaces here: {reason}", file=sys.stderr)
        return 1
    demo = Demo(args, ipvs=ipvs, pace=VM if in_vm() else HOST, why_no_vm=why_no_vm)
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
