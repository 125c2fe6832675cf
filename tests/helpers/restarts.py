"""SIGKILL the active router's pulse and broker again and again; count the backup's takeovers and
measure the heartbeat gaps it saw. Shared by tests/netns/test_restarts_netns.py (10 + 10 kills) and
bench/restarts.py (100 + 100).

Each kill waits until the service's warm spare is ready (its ``spare_waiting`` line, by PID) and
until the restart window of the previous kill of that service has passed, so the policy's backoff
and step-down rule (lvsbus/router/supervision.py, here ``--max-restarts 1000 --restart-window W``) stay
out of the way: what is measured is whether a restart, with a spare ready, is seen by the peer.
"""
from __future__ import annotations

import bisect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.wire.events import decode
from lvsbus.log import LogReader
from lvsbus.demo.netns import VIP, Topology, router_toml, write_key
from tests.helpers.procs import alive

ROOT = Path(__file__).resolve().parents[2]
PORT = 5391
#: at least this long between two kills (of either service): each kill's gap is its own
SETTLE_S = 0.5


class ErrLog:
    """The JSON lines of a router's stderr file, read as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""
        self.lines: list[dict] = []
        self.bad: list[bytes] = []  # lines that start like JSON and do not parse (merged lines)

    def poll(self) -> list[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return self.lines
        self.offset += len(data)
        *whole, self.rest = (self.rest + data).split(b"\n")
        for raw in whole:
            if raw.startswith(b"{"):
                try:
                    self.lines.append(json.loads(raw))
                except ValueError:
                    self.bad.append(raw)
        return self.lines

    def last(self, event: str, service: str) -> dict | None:
        for line in reversed(self.poll()):
            if line.get("event") == event and line.get("service") == service:
                return line
        return None

    def count(self, event: str, service: str) -> int:
        return sum(1 for l in self.poll() if l.get("event") == event and l.get("service") == service)

    def has(self, event: str, service: str, pid: int) -> bool:
        return any(l.get("event") == event and l.get("service") == service and l.get("pid") == pid
                   for l in self.poll())


_READ: dict[str, tuple[int, list]] = {}  # per log: the next seq to read, the events read (not the prefill)


def events(state: Path, types: tuple[str, ...]) -> list:
    """The events of these types in a router's log, read on from where the last call ended."""
    key = str(state / "log")
    nxt, evs = _READ.get(key, (1, []))
    try:
        for seq, body in LogReader(key).read(nxt):
            nxt = seq + 1
            ev = decode(body, seq)
            if ev.source != PREFILL:
                evs.append(ev)
    except FileNotFoundError:
        pass
    _READ[key] = (nxt, evs)
    return [e for e in evs if e.type in types]


#: the source of the records ``prefill`` writes (an earlier run's, which no service reads)
PREFILL = "prefill"


def prefill(state: Path, node: str, mib: float) -> int:
    """Write ``mib`` MiB of an earlier run's records into a router's log before it starts (one
    segment: the broker's recovery of its last segment is what a restart pays for). Returns how
    many. Timers of a service that does not exist: every core and replay pass over them."""
    import msgpack

    from lvsbus.log import Durability, EventLog

    wall = time.time_ns() - 86_400 * 10**9
    n = 0
    with EventLog(str(state / "log"), durability=Durability("none")) as log:
        size = 0
        while size < mib * 2**20:
            batch = []
            for _ in range(1000):
                n += 1
                body = msgpack.packb([1, n, node, PREFILL, "timer.fired", 1, 1000 + n, wall + n * 10**8, None,
                                      {"service": PREFILL, "deadline_ns": 1000 + n}])
                batch.append((n, body))
                size += len(body) + 16
            log.append_batch(batch)
    return n


class _Recorded:
    """router.service_restarted events of a router's log, read on from where the last look ended."""

    def __init__(self, state: Path) -> None:
        self.log = str(state / "log")
        self.next = 1
        self.seen: set[tuple[str, int]] = set()

    def recorded(self, service: str, attempt: int) -> bool:
        for seq, body in LogReader(self.log).read(self.next):
            self.next = seq + 1
            ev = decode(body, seq)
            if ev.type == "router.service_restarted":
                self.seen.add((ev.payload["service"], ev.payload["attempt"]))
        return (service, attempt) in self.seen


def _wait(cond, timeout: float, what: str, step: float = 0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def campaign(topo: Topology, tmp: Path, pulse_kills: int, broker_kills: int, keepalive: float = 0.1,
             deadtime: float = 0.3, window: float = 1.0, spares: bool = True, idle_s: float = 0.0,
             say=lambda *_: None, prefill_mib: float = 0.0) -> dict:
    """Start two routers in ``topo`` (r1 preferred), kill r1's pulse and broker (alternately) the
    given number of times, stop both routers. Returns the counts, the takeovers by r2, r1's role
    changes, and the longest gap between heartbeats of r1 recorded by r2 (any link, and per link)."""
    tmp.mkdir(parents=True, exist_ok=True)
    key = write_key(tmp / "hb.key")
    config = tmp / "lvs.toml"
    config.write_text(router_toml(topo, key, keepalive=keepalive, deadtime=deadtime, port=PORT))
    procs, errs = {}, {}
    out: dict = {"pulse_kills": 0, "broker_kills": 0}
    if prefill_mib > 0:
        out["prefilled_records"] = prefill(tmp / "r1", "r1", prefill_mib)
    for r in ("r1", "r2"):
        topo.run(r, "ip", "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)
        errs[r] = ErrLog(tmp / f"{r}.err")
        procs[r] = topo.popen(
            r, [sys.executable, "-m", "lvsbus.cli", "router", "--config", str(config), "--state-dir", str(tmp / r),
                "--max-restarts", "1000", "--restart-window", str(window), *([] if spares else ["--no-spares"])],
            stdout=subprocess.DEVNULL, stderr=open(tmp / f"{r}.err", "ab"), cwd=str(ROOT),
            env={**os.environ, "LVSBUS_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
        )
    try:
        def role(r: str) -> str | None:
            evs = events(tmp / r, ("router.role_changed",))
            return evs[-1].payload["new"] if evs else None

        _wait(lambda: role("r1") == "ACTIVE" and role("r2") == "BACKUP" and topo.has_address("r1", VIP),
              60.0, "r1 ACTIVE, r2 BACKUP", step=0.05)
        _wait(lambda: [e for e in events(tmp / "r2", ("pulse.heartbeat_received",))
                       if e.payload["peer"] == "r1" and e.payload["role"] == "ACTIVE"], 10.0, "r2 hears r1 ACTIVE")
        time.sleep(deadtime + 0.1)
        start_ns = time.time_ns()
        last_kill = {"pulse": 0.0, "broker": 0.0}
        restarts = _Recorded(tmp / "r1")
        kills: list[tuple[str, int]] = []
        plan = []  # alternately
        for n in range(max(pulse_kills, broker_kills)):
            plan += (["pulse"] if n < pulse_kills else []) + (["broker"] if n < broker_kills else [])
        for i, service in enumerate(plan):
            err = errs["r1"]

            def spare_ready() -> bool:
                """The spare started after the live process took over (not the one that just did),
                waiting on the lock, alive."""
                lines = err.poll()
                live = max(i for i, l in enumerate(lines) if l.get("event") == "service_started" and l.get("service") == service)
                sp = [l for l in lines[live:] if l.get("event") == "spare_started" and l.get("service") == service]
                return bool(sp) and alive(sp[-1]["pid"]) and err.has("spare_waiting", service, sp[-1]["pid"])

            if spares:
                _wait(spare_ready, 30.0, f"a {service} spare waiting on r1 (kill {i + 1})")
            time.sleep(max(0.0, last_kill[service] + window + 0.05 - time.monotonic(),
                           max(last_kill.values()) + SETTLE_S - time.monotonic()))
            live = err.last("service_started", service)["pid"]
            deaths = err.count("service_died", service)
            os.kill(live, signal.SIGKILL)
            last_kill[service] = time.monotonic()
            kills.append((service, time.time_ns()))
            out[f"{service}_kills"] += 1
            _wait(lambda: err.last("service_started", service)["pid"] != live, 10.0, f"{service} back on r1")
            # and its restart recorded (a kill of the broker an instant later could lose the record:
            # the supervisor publishes it without waiting for an ack)
            _wait(lambda: err.count("service_died", service) > deaths, 10.0, f"{service}'s death seen on r1")
            attempt = err.last("service_died", service)["attempt"]
            _wait(lambda: restarts.recorded(service, attempt), 10.0, f"{service} restart {attempt} recorded")
            if (i + 1) % 20 == 0:
                say(f"# {i + 1}/{len(plan)} kills")
        time.sleep(idle_s)  # a baseline: the same pair, no kill
        time.sleep(deadtime + 0.5)
        out["measured_s"] = round((time.time_ns() - start_ns) / 1e9, 1)
        changes = [e for e in events(tmp / "r2", ("router.role_changed",)) if e.wall_ns > start_ns]
        out["takeovers"] = sum(1 for e in changes if e.payload["new"] == "ACTIVE")
        out["r1_role_changes"] = sum(1 for e in events(tmp / "r1", ("router.role_changed",)) if e.wall_ns > start_ns)
        beats = [e for e in events(tmp / "r2", ("pulse.heartbeat_received",))
                 if e.payload["peer"] == "r1" and e.wall_ns > start_ns]
        gaps = [(b.mono_ns - a.mono_ns) / 1e6 for a, b in zip(beats, beats[1:])]
        out["max_heartbeat_gap_ms"] = round(max(gaps), 1) if gaps else None
        per_link = {}
        for link in sorted({b.payload["link"] for b in beats}):
            lb = [b for b in beats if b.payload["link"] == link]
            lg = [(b.mono_ns - a.mono_ns) / 1e6 for a, b in zip(lb, lb[1:])]
            per_link[link] = round(max(lg), 1) if lg else None
        out["max_heartbeat_gap_ms_per_link"] = per_link
        out["gaps_over_deadtime"] = sum(1 for g in gaps if g > deadtime * 1000)
        # the interval between r1's heartbeats (recorded by r2) across each kill, by what was killed
        walls = [b.wall_ns for b in beats]
        for service in ("pulse", "broker"):
            across = []
            for s_, at in kills:
                if s_ != service:
                    continue
                i = max(1, bisect.bisect_left(walls, at - 50_000_000))
                j = bisect.bisect_left(walls, at + int(SETTLE_S * 1e9))
                if i < j <= len(beats):
                    across.append(max((beats[k].mono_ns - beats[k - 1].mono_ns) / 1e6 for k in range(i, j)))
            across.sort()
            out[f"{service}_kill_gap_ms_median"] = round(across[len(across) // 2], 1) if across else None
            out[f"{service}_kill_gap_ms_max"] = round(across[-1], 1) if across else None
        restarts = events(tmp / "r1", ("router.service_restarted",))
        out["restart_events"] = {s: sum(1 for e in restarts if e.payload["service"] == s) for s in ("pulse", "broker")}
        out["last_attempt"] = {s: max([e.payload["attempt"] for e in restarts if e.payload["service"] == s], default=0)
                               for s in ("pulse", "broker")}
        st = subprocess.run([sys.executable, "-m", "lvsbus.cli", "status", "--state-dir", str(tmp / "r1"), "--json"],
                            capture_output=True, text=True, cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)})
        out["status_restarts"] = json.loads(st.stdout).get("service_restarts") if st.returncode == 0 else st.stderr
        for r in ("r1", "r2"):
            rv = subprocess.run([sys.executable, "-m", "lvsbus.cli", "replay", str(tmp / r / "log"), "--verify"],
                                capture_output=True, text=True, cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)})
            out[f"replay_{r}"] = "identical" if rv.returncode == 0 and "identical" in rv.stdout else (rv.stdout + rv.stderr)[-1500:]
        out["merged_log_lines"] = len(errs["r1"].bad) + len(errs["r2"].poll() and errs["r2"].bad)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
    return out
