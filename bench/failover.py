"""Failover times of lvsbus (and keepalived's VRRP, when installed) in a namespace topology.

    sudo python bench/failover.py [--runs 5] [--keepalive 0.1] [--deadtime 0.25] [--saturate 15]

Topology: lvsbus/demo/netns.py (client, two routers on a public and a private bridge, VIP 10.99.1.50).
A UDP responder on each router answers with its name; the client probes the VIP every
``--probe-ms`` ms and we time, from the fault, the first answer from the backup:

  sigkill   SIGKILL of the active router's whole process tree (and its VIP removed: a dead host)
  linkcut   the active's public cable cut (heartbeats on the public link only, as VRRP)
  graceful  SIGTERM of the active router (it hands over with a leaving heartbeat / priority 0)
  takeback  the higher-priority router comes back (preempt): the longest answer gap seen
  activeactive  two failover groups (keepalived: two VRRP instances), web on r1 and mail (VIP
            10.99.1.51) on r2; SIGKILL r1: web's failover time, and the probes mail's clients
            lost meanwhile (probed every --probe-ms throughout: must be 0)

Then false failovers: both routers steady while two busy loops saturate both cores, for each
(keepalive, deadtime) pair in ``--saturate-pairs``; any role change is a false failover.

Output: ``name=value unit`` lines (medians over ``--runs``).
"""
from __future__ import annotations

import argparse
import os
import select
import threading
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lvsbus.wire import catalog  # noqa: E402,F401
from lvsbus.wire.events import decode  # noqa: E402
from lvsbus.log import LogReader  # noqa: E402
from tests.helpers.routers import start_responders  # noqa: E402
from lvsbus.demo.netns import CLIENT, VIP, Topology, netns_available, router_toml, write_key  # noqa: E402


KEEPALIVED_CONF = """
global_defs {{
    router_id {name}
    vrrp_version 3
    vrrp_garp_master_delay 0
    vrrp_garp_master_repeat 3
    enable_script_security
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int {advert}
    virtual_ipaddress {{
        {vip}/32 dev eth0
    }}
}}
"""
#: the active/active pair's second instance (mail: the other router ranks first)
KEEPALIVED_MAIL = """
vrrp_instance VI_2 {{
    state BACKUP
    interface eth0
    virtual_router_id 52
    priority {priority}
    advert_int {advert}
    virtual_ipaddress {{
        {vip}/32 dev eth0
    }}
}}
"""
MAIL_VIP = "10.99.1.51"
#: lvsbus's active/active config: the echo service in group web, a second one in group mail
GROUPS_TOML = f"""
[group.web]
priority = {{r1 = 200, r2 = 100}}

[group.mail]
priority = {{r1 = 100, r2 = 200}}

[virtual.mail]
address = "{MAIL_VIP}"
device = "eth0"
port = 7
protocol = "udp"
scheduler = "rr"
forwarding = "direct"
group = "mail"

[virtual.mail.check]
kind = "udp"

[virtual.mail.server.s1]
address = "10.99.3.101"
"""


def out(name: str, value, unit: str = "") -> None:
    print(f"{name}={value} {unit}".rstrip(), flush=True)


class Prober:
    def __init__(self, topo: Topology) -> None:
        self.sock = topo.socket("c")
        self.sock.bind((CLIENT, 0))
        self.sock.setblocking(False)
        self.n = 0

    def _drain(self) -> list[str]:
        names = []
        while True:
            try:
                data, _ = self.sock.recvfrom(2048)
            except BlockingIOError:
                return names
            names.append(data.split(b" ", 1)[0].decode())

    def first_from(self, who: str, t0: float, timeout: float, every: float) -> float | None:
        """Probe every ``every`` s until ``who`` answers; seconds since ``t0`` (None: timeout)."""
        self._drain()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.n += 1
            try:
                self.sock.sendto(b"%d" % self.n, (VIP, 7))
            except OSError:
                pass
            select.select([self.sock], [], [], every)
            if who in self._drain():
                return time.monotonic() - t0
        return None

    def gaps(self, duration: float, every: float, stop_when=None) -> tuple[float, list[str]]:
        """Probe for ``duration`` s; the longest time between two answers, and who answered."""
        self._drain()
        last = time.monotonic()
        worst = 0.0
        self.worst_at = time.time_ns()  # wall clock when the longest gap began (to compare with logs)
        seen: list[str] = []
        end = last + duration
        while time.monotonic() < end:
            self.n += 1
            try:
                self.sock.sendto(b"%d" % self.n, (VIP, 7))
            except OSError:
                pass
            select.select([self.sock], [], [], every)
            names = self._drain()
            now = time.monotonic()
            if names:
                if now - last > worst:
                    worst = now - last
                    self.worst_at = time.time_ns() - int(worst * 1e9)
                last = now
                seen.extend(names)
                if stop_when and stop_when(names):
                    break
        return max(worst, time.monotonic() - last), seen


class Pair:
    """Two routers of one kind (lvsbus or keepalived) in the topology."""

    def __init__(self, topo: Topology, tmp: Path, kind: str, keepalive: float, deadtime: float, private_link: bool,
                 groups: bool = False) -> None:
        self.topo, self.tmp, self.kind, self.groups = topo, tmp, kind, groups
        self.keepalive, self.deadtime = keepalive, deadtime
        self.procs: dict[str, subprocess.Popen] = {}
        self.run = 0
        self.mail_probes = (0, 0)  # activeactive: (sent, lost) to the undisturbed group in the last run
        self.kill_wall_ns = 0
        key = write_key(tmp / "hb.key")
        self.config = tmp / "lvs.toml"
        self.config.write_text(router_toml(topo, key, keepalive=keepalive, deadtime=deadtime, port=5391,
                                           private_link=private_link, garp_repeat=3))
        if groups:
            text = self.config.read_text().replace("[virtual.echo]\n", '[virtual.echo]\ngroup = "web"\n')
            self.config.write_text(text + GROUPS_TOML)
        for r, prio in (("r1", 200), ("r2", 100)):
            conf = KEEPALIVED_CONF.format(name=r, priority=prio, advert=keepalive, vip=VIP)
            if groups:
                conf += KEEPALIVED_MAIL.format(priority=300 - prio, advert=keepalive, vip=MAIL_VIP)
            (tmp / f"ka-{r}.conf").write_text(conf)

    def state(self, r: str) -> Path:
        return self.tmp / f"{self.kind}-{r}-{self.run}"

    def start(self, r: str) -> None:
        if self.kind == "lvsbus":
            argv = [sys.executable, "-m", "lvsbus.cli", "router", "--config", str(self.config), "--state-dir", str(self.state(r))]
        else:
            d = self.state(r)
            d.mkdir(parents=True, exist_ok=True)
            argv = ["keepalived", "--vrrp", "--dont-fork", "--log-console", "--no-syslog",
                    "-f", str(self.tmp / f"ka-{r}.conf"), "-p", str(d / "ka.pid"), "-r", str(d / "vrrp.pid")]
        self.procs[r] = self.topo.popen(r, argv, stdout=subprocess.DEVNULL, stderr=open(self.tmp / f"{self.kind}-{r}.err", "ab"),
                                        cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT), "LVSBUS_LOG_FORMAT": "json"})

    def has_vip(self, r: str) -> bool:
        return self.topo.has_address(r, VIP)

    def lvsbus_role(self, r: str) -> str | None:
        role = None
        try:
            for seq, body in LogReader(self.state(r) / "log").read(1):
                ev = decode(body, seq)
                if ev.type == "router.role_changed":
                    role = ev.payload["new"]
        except FileNotFoundError:
            return None
        return role

    def steady(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.groups:
                if self.has_vip("r1") and self.topo.has_address("r2", MAIL_VIP) and not self.has_vip("r2") \
                        and not self.topo.has_address("r1", MAIL_VIP):
                    time.sleep(max(self.deadtime, 3.5 * self.keepalive) + 0.2)
                    return
            elif self.has_vip("r1") and not self.has_vip("r2"):
                if self.kind != "lvsbus" or (self.lvsbus_role("r1") == "ACTIVE" and self.lvsbus_role("r2") == "BACKUP"):
                    time.sleep(self.deadtime)  # settle: the backup has heard the active for a while
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind}: r1 did not become active")

    def fresh(self) -> None:
        self.stop_all()
        self.run += 1
        for r in ("r1", "r2"):
            self.topo.run(r, "ip", "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)
            self.topo.run(r, "ip", "addr", "del", f"{MAIL_VIP}/32", "dev", "eth0", check=False)
            for link in ("public", "private"):
                self.topo.heal(r, link)
        self.topo.run("c", "ip", "neigh", "flush", "all", check=False)
        self.start("r1")
        self.start("r2")
        self.steady()

    def kill(self, r: str, sig: int) -> None:
        p = self.procs[r]
        if sig == signal.SIGKILL:
            os.killpg(p.pid, signal.SIGKILL)
        else:
            p.send_signal(sig)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        self.procs.clear()


class Undisturbed(threading.Thread):
    """Probes the mail VIP every ``every`` s while the web group fails over: probes unanswered
    within 50 ms are lost."""

    def __init__(self, topo: Topology, every: float) -> None:
        super().__init__(daemon=True)
        self.sock = topo.socket("c")
        self.sock.bind((CLIENT, 0))
        self.sock.setblocking(False)
        self.every, self.sent, self.lost, self.halt = every, 0, 0, threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.sent += 1
            tag = b"m%d" % self.sent
            try:
                self.sock.sendto(tag, (MAIL_VIP, 7))
            except OSError:
                pass
            end, ok = time.monotonic() + 0.05, False
            while not ok and time.monotonic() < end:
                select.select([self.sock], [], [], 0.01)
                try:
                    ok = self.sock.recvfrom(2048)[0].endswith(b" " + tag)
                except BlockingIOError:
                    pass
            self.lost += not ok
            time.sleep(self.every)

    def stop(self) -> tuple[int, int]:
        self.halt.set()
        self.join(5)
        self.sock.close()
        return self.sent, self.lost


def scenario(pair: Pair, prober: Prober, name: str, every: float) -> float | None:
    topo = pair.topo
    pair.fresh()
    if prober.first_from("r1", time.monotonic(), 3.0, every) is None:
        raise RuntimeError(f"{pair.kind}: the VIP does not answer from r1")
    t0 = time.monotonic()
    if name == "sigkill":
        pair.kill("r1", signal.SIGKILL)
        pair.procs["r1"].wait(5)
        topo.run("r1", "ip", "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)  # a dead host holds nothing
        return prober.first_from("r2", t0, 10.0, every)
    if name == "linkcut":
        topo.cut("r1", "public")
        return prober.first_from("r2", t0, 10.0, every)
    if name == "graceful":
        pair.kill_wall_ns = time.time_ns()
        pair.kill("r1", signal.SIGTERM)
        return prober.first_from("r2", t0, 10.0, every)
    if name == "activeactive":
        mail = Undisturbed(topo, every)
        mail.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        pair.kill("r1", signal.SIGKILL)
        pair.procs["r1"].wait(5)
        topo.run("r1", "ip", "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)
        took = prober.first_from("r2", t0, 10.0, every)
        time.sleep(0.5)
        pair.mail_probes = mail.stop()
        return took
    if name == "takeback":
        pair.kill("r1", signal.SIGTERM)
        pair.procs["r1"].wait(10)
        if prober.first_from("r2", time.monotonic(), 10.0, every) is None:
            return None
        pair.start("r1")
        gap, seen = prober.gaps(15.0, every, stop_when=lambda names: "r1" in names)
        if os.environ.get("LVSBUS_BENCH_DEBUG"):
            print(f"# takeback gap {gap * 1000:.1f} ms began at wall {prober.worst_at}", file=sys.stderr)
        return gap if "r1" in seen else None
    raise ValueError(name)


#: where a graceful handover's time goes: (label, router, predicate on its logged events)
GRACEFUL_STAGES = (
    ("shutdown_recorded", "r1", lambda e: e.type == "router.shutdown_requested"),
    ("leaving_decided", "r1", lambda e: e.type == "pulse.send_heartbeat" and e.payload["leaving"]),
    ("leaving_heard", "r2", lambda e: e.type == "pulse.heartbeat_received" and e.payload["leaving"]),
    ("takeover_decided", "r2", lambda e: e.type == "pulse.take_vips"),
)


def table_after_takeover(pair: Pair) -> float | None:
    """ms from the backup's takeover (pulse.start_lvsd recorded) to lvsd's desired table on it (the
    applier programs the kernel from that): how long a new active router's IPVS table lags its VIP."""
    start = None
    try:
        for seq, body in LogReader(pair.state("r2") / "log").read(1):
            ev = decode(body, seq)
            if ev.type == "pulse.start_lvsd":
                start = ev.wall_ns
            elif ev.type == "lvsd.table_desired" and start is not None:
                return (ev.wall_ns - start) / 1e6
    except FileNotFoundError:
        pass
    return None


def graceful_stages(pair: Pair) -> dict[str, float]:
    """ms from the SIGTERM to each stage, from the two routers' logs (one clock: same host)."""
    out: dict[str, float] = {}
    for label, r, pred in GRACEFUL_STAGES:
        try:
            for seq, body in LogReader(pair.state(r) / "log").read(1):
                ev = decode(body, seq)
                if ev.wall_ns >= pair.kill_wall_ns and pred(ev):
                    out[label] = (ev.wall_ns - pair.kill_wall_ns) / 1e6
                    break
        except FileNotFoundError:
            pass
    return out


def saturated(topo: Topology, tmp: Path, keepalive: float, deadtime: float, seconds: float, loops: int = 2) -> int:
    """Role changes of a steady lvsbus pair while both cores are saturated (each one is a false
    failover: nothing failed)."""
    pair = Pair(topo, tmp, "lvsbus", keepalive, deadtime, private_link=True)
    pair.run = 1000 + int(keepalive * 1000) + int(deadtime * 10)
    pair.fresh()
    since = time.time_ns()  # count only what happens under load (not a start-up race)
    busy = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(loops)]
    try:
        time.sleep(seconds)
    finally:
        for b in busy:
            b.kill()  # by PID: only the loops this bench started
            b.wait()
    changes = 0
    for r in ("r1", "r2"):
        for seq, body in LogReader(pair.state(r) / "log").read(1):
            ev = decode(body, seq)
            if ev.type == "router.role_changed" and ev.wall_ns >= since and ev.payload["old"] != "INIT":
                changes += 1
                print(f"# {r}: {ev.payload['old']} -> {ev.payload['new']} ({ev.payload['reason']})", file=sys.stderr)
    pair.stop_all()
    return changes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keepalive", type=float, default=0.1)
    ap.add_argument("--deadtime", type=float, default=0.25,
                    help="lvsbus's deadtime (default %(default)s s: 2.5 intervals, no false failover under full CPU "
                    "load here); VRRP's master-down at 0.1 s is 3 intervals + skew, ~0.36 s")
    ap.add_argument("--probe-ms", type=float, default=5.0)
    ap.add_argument("--scenarios", default="sigkill,linkcut,graceful,takeback,activeactive")
    ap.add_argument("--saturate", type=float, default=15.0, help="seconds per pair under CPU load (0: skip)")
    ap.add_argument("--busy", type=int, default=2, help="busy loops started for the saturation runs")
    ap.add_argument("--saturate-pairs", default="0.1:0.35,0.1:0.5,0.2:1.0", help="keepalive:deadtime,...")
    ap.add_argument("--no-keepalived", action="store_true")
    ap.add_argument("--kinds", default="lvsbus,keepalived", help="which implementations to measure")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) and print it")
    args = ap.parse_args()
    reason = netns_available()
    if reason:
        print(f"skipped: {reason}", file=sys.stderr)
        return 2
    every = args.probe_ms / 1000
    tmp = Path(tempfile.mkdtemp(prefix="lvsb-bench-"))
    topo = Topology(routers=2).build()
    try:
        start_responders(topo, topo.routers)
        prober = Prober(topo)
        out("keepalive", args.keepalive, "s")
        out("deadtime", args.deadtime, "s")
        out("probe_interval", args.probe_ms, "ms")
        out("runs", args.runs)
        kinds = ["lvsbus"] if "lvsbus" in args.kinds.split(",") else []
        if args.no_keepalived or "keepalived" not in args.kinds.split(","):
            out("keepalived", "skipped")
        elif shutil.which("keepalived"):
            ver = subprocess.run(["keepalived", "--version"], capture_output=True, text=True)
            out("keepalived_version", (ver.stderr or ver.stdout).split()[1])
            kinds.append("keepalived")
        else:
            out("keepalived", "not_installed")
        medians: dict[tuple[str, str], float] = {}
        for name in args.scenarios.split(","):
            for kind in kinds:
                # link cut: heartbeats on the public link only (as VRRP): see docs/router.md
                pair = Pair(topo, tmp, kind, args.keepalive, args.deadtime, private_link=(name != "linkcut"),
                            groups=(name == "activeactive"))
                times = []
                mail_sent = mail_lost = 0
                stages: dict[str, list[float]] = {}
                for _ in range(args.runs):
                    t = scenario(pair, prober, name, every)
                    if t is not None:
                        times.append(t)
                    if name == "activeactive":
                        mail_sent += pair.mail_probes[0]
                        mail_lost += pair.mail_probes[1]
                    if kind == "lvsbus" and name == "graceful":
                        for k, v in graceful_stages(pair).items():
                            stages.setdefault(k, []).append(v)
                    if kind == "lvsbus" and name in ("sigkill", "graceful"):
                        lag = table_after_takeover(pair)
                        if lag is not None:
                            stages.setdefault("table_after_takeover", []).append(lag)
                pair.stop_all()
                for label in [lb for lb, _r, _p in GRACEFUL_STAGES] + ["table_after_takeover"]:
                    if stages.get(label):  # where the time goes (medians, ms)
                        out(f"{kind}_{name}_stage_{label}_median", f"{statistics.median(stages[label]):.1f}", "ms")
                if times:
                    medians[(kind, name)] = statistics.median(times)
                    out(f"{kind}_{name}_median", f"{medians[(kind, name)] * 1000:.1f}", "ms")
                    out(f"{kind}_{name}_max", f"{max(times) * 1000:.1f}", "ms")
                out(f"{kind}_{name}_failed_runs", args.runs - len(times))
                if name == "activeactive":  # the other group's clients, over every run
                    out(f"{kind}_activeactive_undisturbed_probes", mail_sent)
                    out(f"{kind}_activeactive_undisturbed_lost_probes", mail_lost)
            if ("lvsbus", name) in medians and ("keepalived", name) in medians and medians[("keepalived", name)] > 0:
                out(f"ratio_{name}_lvsbus_over_keepalived", f"{medians[('lvsbus', name)] / medians[('keepalived', name)]:.2f}")
        if args.saturate > 0:
            for pair_s in args.saturate_pairs.split(","):
                ka, dt = (float(x) for x in pair_s.split(":"))
                n = saturated(topo, tmp, ka, dt, args.saturate, args.busy)
                out(f"false_failovers_cpu_saturated_ka{ka}_dt{dt}_busy{args.busy}", n, f"in {args.saturate:g} s")
    finally:
        topo.destroy()
        if args.keep:
            print(f"# logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
