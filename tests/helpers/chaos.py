"""Chaos: a router pair under random faults, and a full disk under a running router. Shared by
bench/chaos.py (minutes, options) and tests/netns/test_chaos_netns.py (a bounded run, fixed seed).

The setup: lvsbus/demo/netns.py's topology with two routers (r1 preferred, preempt off) and two real
servers s1, s2 behind them (UDP echo on port 7, checked by nanny every 0.2 s). A client in its own
namespace sends a UDP request to the VIP every ``request_every`` s; the VIP holder answers
(a responder bound in each router namespace answers with the router's name: this kernel has no
ip_vs, so the data path is the VIP itself, not IPVS forwarding to s1/s2; the real servers are
in the control path: nanny checks them, lvsd changes the desired table when they flap). A
request with no answer within ``request_timeout`` s failed.

One fault at a time, drawn with a seeded ``random.Random`` from the mix, the next one
``interval`` s (x0.5..1.5) after the previous one ended, always against the router that is ACTIVE
at that moment:

  service  SIGKILL of one of the active router's services (pulse, nanny, lvsd, ipvs), by PID (its
           last ``service_started`` line, checked to be a child of that router's supervisor)
  broker   SIGKILL of the active router's broker (same way)
  router   SIGKILL of the active router's supervisor (its children follow: PDEATHSIG); its VIP is
           then removed by hand (a dead host holds no address), and after ``down_s`` s the router
           is started again on the same state directory
  link     the active router's public cable cut (its bridge port down) for ``cut_s`` s, then healed
           (heartbeats still flow on the private link)
  flap     a real server's echo stopped for ``flap_s`` s, then started again
  reload   the config rewritten (s2's weight toggled between 1 and 2) and SIGHUP to both routers

Documented windows (only there may requests fail and may a takeover happen):
  router   from the kill to the takeover by the other router + ``margin`` s
  link     from the cut to the takeover + ``margin`` s, and from the heal to heal + deadtime + ``margin`` s
Everything else (service, broker, flap, reload faults, and the router restart after a kill) must
not move the VIP nor fail a request. A takeover (``router.role_changed`` to ACTIVE in either log)
outside every window is a false failover. The time both routers hold the VIP is measured from
``ip -o monitor address`` in both router namespaces.

After the run both routers are stopped cleanly (SIGTERM), then ``lvsbus log check`` and replay
verify run on each router's log; a divergence is attributed to the fault that came last before
the diverging record.
"""
from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.wire.events import decode
from lvsbus.log import LogReader
from lvsbus.demo.netns import CLIENT, VIP, Topology, router_toml, write_key
from tests.helpers.procs import alive, children_of, ppid
from tests.helpers.routers import RESPONDER, start_responders
from tests.helpers.restarts import ErrLog

ROOT = Path(__file__).resolve().parents[2]
PORT = 5392
KINDS = ("service", "broker", "router", "link", "flap", "reload")
#: the operator's chaos day: 60 service kills, 20 broker kills, 10 router kills, 25 reloads; plus
#: link cuts and real-server flaps
DEFAULT_MIX = {"service": 60, "broker": 20, "router": 10, "link": 10, "flap": 10, "reload": 25}
SERVICES = ("pulse", "nanny", "lvsd", "ipvs")

def _env() -> dict:
    return {**os.environ, "LVSBUS_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


class Tail:
    """A router's log, read on from where the last look ended (survives the router's restarts:
    the same state directory, the log goes on)."""

    def __init__(self, state: Path, router: str) -> None:
        self.dir = str(state / "log")
        self.router = router
        self.next = 1
        self.roles: list[tuple[int, str, str]] = []  # (mono_ns, old, new)
        self.hb_active: int = 0  # mono_ns of the last heartbeat heard from the peer as ACTIVE
        self.seq_mono: list[tuple[int, int]] = []  # (seq, mono_ns), every 50th record (attribution)
        self.counts: dict[str, int] = {}  # reloads applied / refused, real servers seen down (what the faults did)

    def poll(self) -> "Tail":
        try:
            for seq, body in LogReader(self.dir).read(self.next):
                self.next = seq + 1
                ev = decode(body, seq)
                if seq % 50 == 0:
                    self.seq_mono.append((seq, ev.mono_ns))
                if ev.type == "router.role_changed":
                    self.roles.append((ev.mono_ns, ev.payload.get("old"), ev.payload["new"]))
                elif ev.type == "pulse.heartbeat_received" and ev.payload.get("role") == "ACTIVE":
                    self.hb_active = ev.mono_ns
                elif ev.type in ("config.reload_refused", "health.real_server_down", "router.service_restarted") or (
                        ev.type == "config.loaded" and ev.payload.get("reload")):
                    self.counts[ev.type] = self.counts.get(ev.type, 0) + 1
        except FileNotFoundError:
            pass
        return self

    def role(self) -> str | None:
        return self.roles[-1][2] if self.roles else None

    def mono_of(self, seq: int) -> int | None:
        best = None
        for s, m in self.seq_mono:
            if s <= seq:
                best = m
        return best


class VipWatch:
    """``ip -o monitor address`` in one router namespace: when the VIP came and went."""

    def __init__(self, topo: Topology, router: str) -> None:
        self.events: list[tuple[int, bool]] = []  # (mono_ns, present)
        self.proc = topo.popen(router, ["ip", "-o", "monitor", "address"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:  # type: ignore[union-attr]
            line = raw.decode(errors="replace")
            if f" {VIP}/" in line:
                self.events.append((time.monotonic_ns(), not line.startswith("Deleted")))

    def intervals(self, end_ns: int) -> list[tuple[int, int]]:
        out, since = [], None
        for t, present in list(self.events):
            if present and since is None:
                since = t
            elif not present and since is not None:
                out.append((since, t))
                since = None
        if since is not None:
            out.append((since, end_ns))
        return out


class Client:
    """A request to the VIP every ``every`` s from the client namespace; who answered, and which failed."""

    def __init__(self, topo: Topology, every: float = 0.1, timeout: float = 1.0) -> None:
        self.sock = topo.socket("c")
        self.sock.bind((CLIENT, 0))
        self.sock.setblocking(False)
        self.every, self.timeout = every, timeout
        self.sent: list[int] = []  # mono_ns of each request
        self.failed: list[int] = []  # mono_ns (sent) of the requests never answered
        self.answers: list[tuple[int, str]] = []  # (mono_ns sent, who answered)
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Client":
        self.thread.start()
        return self

    def _run(self) -> None:
        outstanding: dict[int, int] = {}
        n = 0
        nxt = time.monotonic()
        while not self.stop_flag.is_set() or outstanding:
            now = time.monotonic()
            if not self.stop_flag.is_set() and now >= nxt:
                n += 1
                t = time.monotonic_ns()
                self.sent.append(t)
                outstanding[n] = t
                try:
                    self.sock.sendto(b"%d" % n, (VIP, 7))
                except OSError:
                    pass
                nxt += self.every
                if nxt < now:
                    nxt = now + self.every
            select.select([self.sock], [], [], max(0.0, min(nxt - time.monotonic(), 0.05)))
            while True:
                try:
                    data, _ = self.sock.recvfrom(2048)
                except (BlockingIOError, OSError):
                    break
                name, _, body = data.partition(b" ")
                try:
                    k = int(body)
                except ValueError:
                    continue
                t = outstanding.pop(k, None)
                if t is not None:
                    self.answers.append((t, name.decode()))
            limit = time.monotonic_ns() - int(self.timeout * 1e9)
            for k in [k for k, t in outstanding.items() if t < limit]:
                self.failed.append(outstanding.pop(k))

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(self.timeout + 2)
        self.sock.close()


@dataclass
class Fault:
    kind: str
    router: str  # the router it hit (for flap: the server)
    what: str
    t0: int  # mono_ns
    t1: int = 0  # end (heal, restart, start again); = t0 for instant faults
    done: bool = True  # False: skipped (nothing to hit)


@dataclass
class Pair:
    """Two routers in ``topo`` with real servers s1, s2; started, faulted and stopped by the chaos run."""

    topo: Topology
    tmp: Path
    keepalive: float = 0.2
    deadtime: float = 1.0
    procs: dict = field(default_factory=dict)
    errs: dict = field(default_factory=dict)
    tails: dict = field(default_factory=dict)
    servers: dict = field(default_factory=dict)
    weight: int = 1

    def __post_init__(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.key = write_key(self.tmp / "hb.key")
        self.config = self.tmp / "lvs.toml"
        self.write_config()
        for r in self.topo.routers:
            self.topo.run(r, "ip", "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)
            self.errs[r] = ErrLog(self.tmp / f"{r}.err")
            self.tails[r] = Tail(self.state(r), r)

    def write_config(self) -> None:
        extra = ""
        if self.topo.n_servers >= 2:
            extra = f'\n[virtual.echo.server.s2]\naddress = "{self.topo.server_address(2)}"\nweight = {self.weight}\n'
        text = router_toml(self.topo, self.key, keepalive=self.keepalive, deadtime=self.deadtime, port=PORT,
                           preempt=False, extra=extra)
        text = text.replace('[virtual.echo.check]\nkind = "udp"',
                            '[virtual.echo.check]\nkind = "udp"\ninterval = 0.2\ntimeout = 0.2\nrise = 2\nfall = 2')
        tmp = self.config.with_suffix(".new")
        tmp.write_text(text)
        os.replace(tmp, self.config)

    def state(self, r: str) -> Path:
        return self.tmp / r

    def start(self, r: str, wrap: list[str] | None = None) -> None:
        self.procs[r] = self.topo.popen(
            r, [*(wrap or []), sys.executable, "-m", "lvsbus.cli", "router", "--config", str(self.config), "--state-dir",
                str(self.state(r)), "--max-restarts", "1000", "--restart-window", "1.0"],
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / f"{r}.err", "ab"), cwd=str(ROOT), env=_env())

    def start_settled(self) -> None:
        """r1 first, ACTIVE; then r2, until the pair is steady with r1 active (60 s each at most)."""
        self.start("r1")
        if self.wait(lambda: self.roles()["r1"] == "ACTIVE", 60.0) is None:
            raise RuntimeError("r1 never became ACTIVE")
        self.start("r2")
        if self.wait(self.steady, 60.0) != "r1":
            raise RuntimeError(f"the pair never settled: roles {self.roles()}")

    def serve(self, s: str) -> None:
        self.servers[s] = self.topo.popen(s, [sys.executable, "-c", RESPONDER, s], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)

    def roles(self) -> dict:
        return {r: self.tails[r].poll().role() for r in self.topo.routers}

    def active(self) -> str | None:
        act = [r for r, role in self.roles().items() if role == "ACTIVE" and self.procs[r].poll() is None]
        return act[0] if len(act) == 1 else None

    def steady(self) -> str | None:
        """The one ACTIVE router holding the VIP while the other is BACKUP and hears it ACTIVE."""
        roles = self.roles()
        act = [r for r, role in roles.items() if role == "ACTIVE"]
        if len(act) != 1 or any(role != "BACKUP" for r, role in roles.items() if r != act[0]):
            return None
        if any(p.poll() is not None for p in self.procs.values()):
            return None
        other = [r for r in roles if r != act[0]][0]
        since = max(t for t, _, _ in self.tails[other].roles)
        if self.tails[other].hb_active <= since or time.monotonic_ns() - since < self.deadtime * 1e9:
            return None
        return act[0] if self.topo.has_address(act[0], VIP) else None

    def wait(self, cond, timeout: float, step: float = 0.05):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = cond()
            if v:
                return v
            time.sleep(step)
        return None

    def child_pid(self, r: str, service: str) -> int | None:
        """The live process of ``service`` on router ``r``: its last service_started line, alive and a
        child of that router's supervisor (which this run started)."""
        line = self.errs[r].last("service_started", service)
        if line is None:
            return None
        pid = line["pid"]
        sup = self.procs[r].pid
        return pid if alive(pid) and ppid(pid) == sup else None

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        for p in self.servers.values():
            if p.poll() is None:
                p.kill()
                p.wait(5)


def _in(t: int, windows: list[tuple[int, int]]) -> bool:
    return any(a <= t <= b for a, b in windows)


def _overlap(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for a0, a1 in a:
        for b0, b1 in b:
            lo, hi = max(a0, b0), min(a1, b1)
            if lo < hi:
                out.append((lo, hi))
    return out


def chaos(topo: Topology, tmp: Path, *, seed: int = 1, duration: float = 120.0, keepalive: float = 0.2,
          deadtime: float = 1.0, mix: dict | None = None, interval: float = 2.0, margin: float = 1.0,
          down_s: float = 3.0, cut_s: float = 3.0, flap_s: float = 2.0, request_every: float = 0.1,
          request_timeout: float = 1.0, say=lambda *_: None) -> dict:
    """Run the chaos described in the module doc in ``topo`` (2 routers, 2 servers) for ``duration``
    s of faults; returns the figures (see bench/chaos.py for their names)."""
    rng = random.Random(seed)
    mix = dict(DEFAULT_MIX if mix is None else mix)
    kinds = [k for k in KINDS if mix.get(k, 0) > 0]
    weights = [mix[k] for k in kinds]
    pair = Pair(topo, tmp, keepalive=keepalive, deadtime=deadtime)
    start_responders(topo, topo.routers)
    for j in range(1, topo.n_servers + 1):
        pair.serve(f"s{j}")
    watches = {r: VipWatch(topo, r) for r in topo.routers}
    time.sleep(0.3)  # the monitors are listening
    out: dict = {"faults": []}
    client = None
    faults: list[Fault] = []
    try:
        pair.start_settled()
        client = Client(topo, request_every, request_timeout).start()
        time.sleep(1.0)
        start_ns = time.monotonic_ns()
        end = time.monotonic() + duration
        while time.monotonic() < end:
            time.sleep(interval * rng.uniform(0.5, 1.5))
            kind = rng.choices(kinds, weights)[0]
            act = pair.wait(pair.active, 15.0) if kind not in ("flap", "reload") else None
            if kind not in ("flap", "reload") and act is None:
                faults.append(Fault(kind, "-", "no single ACTIVE router", time.monotonic_ns(), done=False))
                continue
            f = _inject(pair, rng, kind, act, down_s=down_s, cut_s=cut_s, flap_s=flap_s)
            faults.append(f)
            say(f"# {(f.t0 - start_ns) / 1e9:6.1f}s {f.kind:7} {f.router:3} {f.what}{'' if f.done else ' (skipped)'}")
            if kind in ("router", "link"):
                # the next fault once the pair is steady again (or 20 s)
                pair.wait(pair.steady, 20.0)
        settled = pair.wait(pair.steady, 30.0)
        time.sleep(2.0)
        end_ns = time.monotonic_ns()
        client.stop()
        stopped = client
        client = None
        out["settled_at_end"] = bool(settled)
    finally:
        if client is not None:
            client.stop()
        pair.stop()
        for w in watches.values():
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait(5)
    # -- figures ---------------------------------------------------------------------------------
    for t in pair.tails.values():
        t.poll()
    m = int(margin * 1e9)
    dt = int(deadtime * 1e9)
    windows: list[tuple[int, int]] = []
    takeovers = [(t, r) for r in topo.routers for t, _, new in pair.tails[r].roles if new == "ACTIVE" and t >= start_ns]
    missed = 0
    for f in faults:
        if not f.done or f.kind not in ("router", "link"):
            continue
        took = sorted(t for t, r in takeovers if r != f.router and f.t0 <= t <= f.t0 + int(20e9))
        if took:
            windows.append((f.t0, took[0] + m))
        else:
            missed += 1
            windows.append((f.t0, f.t0 + dt + m))
        if f.kind == "link":
            windows.append((f.t1, f.t1 + dt + m))
    done = [f for f in faults if f.done]
    out["faults_injected"] = len(done)
    for k in KINDS:
        out[f"faults_{k}"] = sum(1 for f in done if f.kind == k)
    out["faults_skipped"] = len(faults) - len(done)
    out["requests_sent"] = len([t for t in stopped.sent if t >= start_ns])
    failed = [t for t in stopped.failed if t >= start_ns]
    out["requests_failed"] = len(failed)
    to = int(request_timeout * 1e9)
    out["requests_failed_outside_windows"] = sum(1 for t in failed if not _in(t + to, [(a, b + to) for a, b in windows]))
    out["answered_by"] = {}
    for t, who in stopped.answers:
        if t >= start_ns:
            out["answered_by"][who] = out["answered_by"].get(who, 0) + 1
    out["takeovers"] = len(takeovers)
    false = [(t, r) for t, r in takeovers if not _in(t, windows)]
    out["false_failovers"] = len(false)
    out["missed_failovers"] = missed
    both = _overlap(watches["r1"].intervals(end_ns), watches["r2"].intervals(end_ns))
    both = [(max(a, start_ns), b) for a, b in both if b > start_ns]
    out["two_holder_ms"] = round(sum(b - a for a, b in both) / 1e6, 1)
    out["two_holder_ms_outside_windows"] = round(sum(b - a for a, b in both if not (_in(a, windows) and _in(b, windows))) / 1e6, 1)
    out["measured_s"] = round((end_ns - start_ns) / 1e9, 1)
    for r in topo.routers:
        c = pair.tails[r].counts
        out[f"reloads_applied_{r}"] = c.get("config.loaded", 0)
        out[f"reloads_refused_{r}"] = c.get("config.reload_refused", 0)
        out[f"real_server_downs_seen_{r}"] = c.get("health.real_server_down", 0)
        out[f"service_restarts_recorded_{r}"] = c.get("router.service_restarted", 0)
    out["vip_changes_seen"] = sum(1 for w in watches.values() for t, _ in w.events if t >= start_ns)

    def last_fault_before(t: int | None) -> str:
        if t is None:
            return "?"
        before = [f for f in done if f.t0 <= t]
        return f"{before[-1].kind} {before[-1].what} ({(t - before[-1].t0) / 1e9:.1f} s after it)" if before else "no fault"

    for t, r in false:
        out.setdefault("false_failover_after", []).append(f"{r} at {(t - start_ns) / 1e9:.1f}s: {last_fault_before(t)}")
    for r in topo.routers:
        d = _check_and_verify(out, r, pair.state(r) / "log")
        if d is not None:
            out[f"replay_divergence_{r}_after"] = last_fault_before(pair.tails[r].mono_of(d.seq))
    out["faults"] = [{"kind": f.kind, "router": f.router, "what": f.what, "at_s": round((f.t0 - start_ns) / 1e9, 2),
                      "done": f.done} for f in faults]
    out["merged_log_lines"] = sum(len(e.poll() and e.bad) for e in pair.errs.values())
    return out


def _check_and_verify(out: dict, r: str, logdir: Path):
    """``lvsbus log check`` and replay --verify of router ``r``'s log into ``out`` (log_check_R ok or
    failed, with its report; replay_verify_R identical or diverged, with the first divergence).
    Returns that divergence, or None."""
    from lvsbus.log import check
    from lvsbus_tools.replay import verify

    rep = check(str(logdir))
    out[f"log_check_{r}"] = "ok" if rep.ok else "failed"
    if not rep.ok:
        out[f"log_check_{r}_report"] = rep.format()
    v = verify(str(logdir))
    out[f"replay_verify_{r}"] = "identical" if v.ok else "diverged"
    if v.ok:
        return None
    d = v.divergences[0]
    out[f"replay_divergence_{r}"] = d.describe()
    return d


def _inject(pair: Pair, rng: random.Random, kind: str, act: str | None, *, down_s: float, cut_s: float,
            flap_s: float) -> Fault:
    topo = pair.topo
    now = time.monotonic_ns
    if kind in ("service", "broker"):
        service = rng.choice(SERVICES) if kind == "service" else "broker"
        pid = pair.child_pid(act, service)
        if pid is None:
            return Fault(kind, act, f"{service} (no live process)", now(), done=False)
        t = now()
        os.kill(pid, signal.SIGKILL)
        return Fault(kind, act, f"{service} pid {pid}", t, t)
    if kind == "router":
        p = pair.procs[act]
        t = now()
        os.kill(p.pid, signal.SIGKILL)  # the supervisor; PDEATHSIG takes its children
        p.wait(5)
        time.sleep(0.05)
        topo.run(act, "ip", "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)  # a dead host holds no address
        time.sleep(down_s)
        # no process of the old tree may be left (each child dies with its parent)
        pair.wait(lambda: not [pid for pid in children_of(p.pid)], 5.0)
        pair.start(act)
        return Fault(kind, act, f"supervisor pid {p.pid}, down {down_s} s", t, now())
    if kind == "link":
        t = now()
        topo.cut(act, "public")
        time.sleep(cut_s)
        topo.heal(act, "public")
        return Fault(kind, act, f"public link cut {cut_s} s", t, now())
    if kind == "flap":
        s = rng.choice(sorted(pair.servers))
        t = now()
        p = pair.servers[s]
        p.kill()  # by PID: the responder this run started
        p.wait(5)
        time.sleep(flap_s)
        pair.serve(s)
        return Fault(kind, s, f"real server down {flap_s} s", t, now())
    if kind == "reload":
        pair.weight = 3 - pair.weight
        pair.write_config()
        t = now()
        for r, p in pair.procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGHUP)
        return Fault(kind, "both", f"s2 weight {pair.weight}", t, t)
    raise ValueError(kind)


def as_lines(r: dict) -> list[str]:
    """``name=value unit`` lines of a chaos result (details go to the caller's stderr)."""
    lines = []
    for k in ("faults_injected", *[f"faults_{k}" for k in KINDS], "faults_skipped", "requests_sent",
              "requests_failed", "requests_failed_outside_windows", "takeovers", "false_failovers",
              "missed_failovers"):
        lines.append(f"{k}={r[k]}")
    lines.append(f"two_holder_ms={r['two_holder_ms']} ms")
    lines.append(f"two_holder_ms_outside_windows={r['two_holder_ms_outside_windows']} ms")
    for k in sorted(r):
        if k.startswith(("log_check_", "replay_verify_")) and not k.endswith("_report"):
            lines.append(f"{k}={r[k]}")
    lines.append(f"answered_by={json.dumps(r['answered_by'], sort_keys=True)}")
    for k in sorted(r):
        if k.startswith(("reloads_", "real_server_downs_seen_", "service_restarts_recorded_")):
            lines.append(f"{k}={r[k]}")
    lines.append(f"vip_changes_seen={r['vip_changes_seen']}")
    lines.append(f"settled_at_end={r['settled_at_end']}")
    lines.append(f"measured_s={r['measured_s']} s")
    lines.append(f"merged_log_lines={r['merged_log_lines']}")
    return lines


def disk_full(topo: Topology, tmp: Path, *, keepalive: float = 0.2, deadtime: float = 1.0, size: str = "8m",
              hold_s: float = 5.0, say=lambda *_: None) -> dict:
    """r1's log directory on a ``size`` tmpfs; the pair steady (r1 ACTIVE); the tmpfs filled for
    ``hold_s`` s, then freed. Returns what was seen: r1's role throughout, r2's takeovers, the
    broker's ``log_write_failed`` / ``log_write_recovered`` lines, the recorded ``log.write_failed``
    and ``log.write_recovered`` events, log check and replay verify of r1's log (done before the
    tmpfs goes), and ``ok`` when all hold."""
    pair = Pair(topo, tmp, keepalive=keepalive, deadtime=deadtime)
    start_responders(topo, topo.routers)
    logdir = pair.state("r1") / "log"
    logdir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(logdir)], check=True,
                   capture_output=True)
    out: dict = {}
    fill = logdir / "zz-fill"
    try:
        pair.start_settled()
        err = pair.errs["r1"]
        failed_before = _n(err, "log_write_failed")
        t_fill = time.monotonic_ns()
        with open(fill, "wb") as fh:  # the disk fills up: as much as it takes
            chunk = b"\0" * 65536
            try:
                while True:
                    fh.write(chunk)
                    fh.flush()
            except OSError:
                pass
        say(f"# {fill} filled: {fill.stat().st_size} bytes")
        out["write_failed_reported"] = pair.wait(lambda: _n(err, "log_write_failed") > failed_before, 10.0) is not None
        out["write_failed_after_ms"] = round((time.monotonic_ns() - t_fill) / 1e6) if out["write_failed_reported"] else None
        time.sleep(hold_s)
        pair.tails["r1"].poll()
        pair.tails["r2"].poll()
        out["r1_role_while_full"] = pair.roles()["r1"]
        out["r1_holds_vip_while_full"] = topo.has_address("r1", VIP)
        out["r2_heard_r1_active_while_full"] = pair.tails["r2"].hb_active > t_fill + int(hold_s * 1e9 / 2)
        fill.unlink()
        t_free = time.monotonic_ns()
        out["write_recovered_reported"] = pair.wait(lambda: _last(err, "log_write_recovered") is not None, 10.0) is not None
        out["write_recovered_after_ms"] = round((time.monotonic_ns() - t_free) / 1e6) if out["write_recovered_reported"] else None
        time.sleep(1.0)
        out["role_changes_since_fill"] = sum(1 for r in topo.routers for t, _, _ in pair.tails[r].poll().roles if t >= t_fill)
        out["r1_role_at_end"] = pair.roles()["r1"]
        line = _last(err, "log_write_recovered")
        out["backlog_records"] = line.get("records") if line else None
        pair.stop()
        # the recorded story, checked on the tmpfs before it goes
        recorded = {}
        for seq, body in LogReader(str(logdir)).read(1):
            ev = decode(body, seq)
            if ev.type in ("log.write_failed", "log.write_recovered"):
                recorded.setdefault(ev.type, []).append(ev.payload)
        out["recorded_write_failed"] = len(recorded.get("log.write_failed", []))
        out["recorded_write_recovered"] = len(recorded.get("log.write_recovered", []))
        _check_and_verify(out, "r1", logdir)
    finally:
        pair.stop()
        try:
            fill.unlink()
        except OSError:
            pass
        subprocess.run(["umount", str(logdir)], capture_output=True)
    out["ok"] = bool(out.get("write_failed_reported") and out.get("write_recovered_reported")
                     and out.get("r1_role_while_full") == "ACTIVE" and out.get("r1_holds_vip_while_full")
                     and out.get("role_changes_since_fill") == 0 and out.get("recorded_write_failed")
                     and out.get("recorded_write_recovered") and out.get("log_check_r1") == "ok"
                     and out.get("replay_verify_r1") == "identical")
    return out


def _n(err: ErrLog, event: str) -> int:
    return sum(1 for line in err.poll() if line.get("event") == event)


def _last(err: ErrLog, event: str) -> dict | None:
    return next((line for line in reversed(err.poll()) if line.get("event") == event), None)


def slow_disk(topo: Topology, tmp: Path, *, keepalive: float = 0.2, deadtime: float = 1.0, iops: int = 2,
              bps: int = 65536, hold_s: float = 12.0, say=lambda *_: None) -> dict:
    """r1's log directory on an ext4 file system on a loop device, r1's process tree in a blkio
    cgroup (v1) of its own; with the pair steady, the cgroup's writes to that device are throttled
    to ``iops`` writes/s and ``bps`` bytes/s for ``hold_s`` s (each fsync of the log then takes
    hundreds of ms), then unthrottled. Returns r1's role throughout, the takeovers, the worst commit
    latency the broker reported (``bus.log_stats``), log check and replay verify; ``ok`` when r1
    kept its role and the log is sound. Raises RuntimeError when the machine cannot do it (no
    loop device, no blkio cgroup)."""
    cg_root = Path("/sys/fs/cgroup/blkio")
    if not (cg_root / "blkio.throttle.write_iops_device").exists():
        raise RuntimeError("no cgroup v1 blkio controller at /sys/fs/cgroup/blkio")
    pair = Pair(topo, tmp, keepalive=keepalive, deadtime=deadtime)
    start_responders(topo, topo.routers)
    img = tmp / "r1-log.img"
    with open(img, "wb") as fh:
        fh.truncate(64 * 1024 * 1024)
    lo = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if lo.returncode != 0:
        raise RuntimeError(f"losetup: {lo.stderr.strip()}")
    loop = lo.stdout.strip()
    logdir = pair.state("r1") / "log"
    cg = cg_root / f"lvsbus-chaos-{os.getpid()}"
    mounted = False
    out: dict = {"loop_device": loop}
    try:
        subprocess.run(["mkfs.ext4", "-q", loop], check=True, capture_output=True)
        logdir.mkdir(parents=True)
        subprocess.run(["mount", loop, str(logdir)], check=True, capture_output=True)
        mounted = True
        devno = Path(f"/sys/block/{Path(loop).name}/dev").read_text().strip()
        cg.mkdir()
        # into the cgroup before it forks anything: the shell waits for a go file, written once its
        # PID is in the cgroup (``ip netns exec`` remounts /sys, so it cannot do that itself)
        go = tmp / "r1.go"
        pair.start("r1", wrap=["sh", "-c", f'while [ ! -e {go} ]; do sleep 0.01; done; exec "$@"', "sh"])
        (cg / "cgroup.procs").write_text(str(pair.procs["r1"].pid))
        go.touch()
        if pair.wait(lambda: pair.roles()["r1"] == "ACTIVE", 60.0) is None:
            tail = (tmp / "r1.err").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"r1 never became ACTIVE; its stderr ends:\n{tail}")
        pair.start("r2")
        if pair.wait(pair.steady, 60.0) != "r1":
            raise RuntimeError(f"the pair never settled: roles {pair.roles()}")
        t_slow = time.monotonic_ns()
        (cg / "blkio.throttle.write_iops_device").write_text(f"{devno} {iops}")
        (cg / "blkio.throttle.write_bps_device").write_text(f"{devno} {bps}")
        say(f"# {loop} ({devno}) throttled to {iops} writes/s, {bps} B/s for r1's tree")
        time.sleep(hold_s)
        pair.tails["r2"].poll()
        out["r1_role_while_slow"] = pair.roles()["r1"]
        out["r1_holds_vip_while_slow"] = topo.has_address("r1", VIP)
        out["r2_heard_r1_active_while_slow"] = pair.tails["r2"].hb_active > t_slow + int(hold_s * 1e9 / 2)
        (cg / "blkio.throttle.write_iops_device").write_text(f"{devno} 0")
        (cg / "blkio.throttle.write_bps_device").write_text(f"{devno} 0")
        t_fast = time.monotonic_ns()
        time.sleep(2.0)
        out["role_changes_since_slow"] = sum(1 for r in topo.routers for t, _, _ in pair.tails[r].poll().roles if t >= t_slow)
        out["r1_role_at_end"] = pair.roles()["r1"]
        pair.stop()
        worst, stats = 0, 0
        for seq, body in LogReader(str(logdir)).read(1):
            ev = decode(body, seq)
            if ev.type == "bus.log_stats" and t_slow <= ev.mono_ns <= t_fast + int(12e9):
                stats += 1
                worst = max(worst, ev.payload["commit_max_ns"])
        out["log_stats_while_slow"] = stats
        out["commit_max_ms_while_slow"] = round(worst / 1e6, 1)
        _check_and_verify(out, "r1", logdir)
    finally:
        pair.stop()
        if mounted:
            subprocess.run(["umount", str(logdir)], capture_output=True)
        subprocess.run(["losetup", "-d", loop], capture_output=True)
        for _ in range(20):  # empty once r1's processes are gone
            try:
                cg.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.25)
        else:
            print(f"slow_disk: could not remove the cgroup {cg}", file=sys.stderr)
    out["ok"] = bool(out.get("r1_role_while_slow") == "ACTIVE" and out.get("r1_holds_vip_while_slow")
                     and out.get("r2_heard_r1_active_while_slow") and out.get("role_changes_since_slow") == 0
                     and out.get("log_check_r1") == "ok" and out.get("replay_verify_r1") == "identical")
    return out
