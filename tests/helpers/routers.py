"""Real ``lvsbus router`` processes in a lvsbus/demo/netns.py topology, and the UDP responders that show
which router holds the VIP. Shared by the netns tests (router, write-ahead, fos, privileges).

    from tests.helpers.routers import Cluster, start_responders
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.wire.events import decode
from lvsbus.log import LogReader
from lvsbus_services.pulse import wire
from lvsbus.demo.netns import CLIENT, VIP, router_toml, write_key
from tests.helpers.procs import json_lines

ROOT = Path(__file__).resolve().parents[2]
#: short timers for speed
KEEPALIVE, DEADTIME = 0.1, 0.5
PORT = 5390
#: a UDP echo on port 7 that answers with its first argument (the host's name) before the data
RESPONDER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7))
name = sys.argv[1].encode()
while True:
    data, addr = s.recvfrom(2048)
    s.sendto(name + b" " + data, addr)
"""


def start_responders(t, hosts) -> None:
    """A UDP echo (port 7, answers with the host's name) on each of ``hosts``; the topology
    stops them with its namespaces."""
    for h in hosts:
        t.popen(h, [sys.executable, "-c", RESPONDER, h], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Cluster:
    """Both routers as real processes, with helpers to read their logs and probe the VIP."""

    def __init__(self, topo, tmp: Path, env: dict[str, dict] | None = None, **cfg) -> None:
        """``cfg``: router_toml's keywords (keepalive and deadtime default to KEEPALIVE, DEADTIME);
        ``env``: extra environment variables per router name (a fault point, say)."""
        self.topo = topo
        self.tmp = tmp
        self.env = env or {}
        key = write_key(tmp / "hb.key")
        self.key = wire.key_from_secret(key.read_bytes())
        cfg.setdefault("keepalive", KEEPALIVE)
        cfg.setdefault("deadtime", DEADTIME)
        self.cfg = cfg
        self.config = tmp / "lvs.toml"
        self.config.write_text(router_toml(topo, key, port=PORT, **cfg))
        self.procs: dict[str, subprocess.Popen] = {}
        self.client = topo.socket("c")
        self.client.bind((CLIENT, 0))
        self.nonce = 0
        # a clean slate from the test before: no VIP, links up, no stale neighbour entry
        for r in topo.routers:
            topo.run(r, "ip", "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)
            for link in ("public", "private"):
                topo.heal(r, link)
        topo.run("c", "ip", "neigh", "flush", "all", check=False)

    def state(self, r: str) -> Path:
        return self.tmp / r

    def start(self, *routers: str) -> None:
        for r in routers or self.topo.routers:
            self.procs[r] = self.topo.popen(
                r, [sys.executable, "-m", "lvsbus.cli", "router", "--config", str(self.config), "--state-dir", str(self.state(r))],
                stdout=subprocess.DEVNULL, stderr=open(self.tmp / f"{r}.err", "ab"), cwd=str(ROOT),
                env={**os.environ, "LVSBUS_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT), **self.env.get(r, {})},
            )

    def events(self, r: str, types: tuple[str, ...] | None = None) -> list:
        out = []
        try:
            for seq, body in LogReader(self.state(r) / "log").read(1):
                ev = decode(body, seq)
                if types is None or ev.type in types:
                    out.append(ev)
        except FileNotFoundError:
            pass
        return out

    def role(self, r: str) -> str | None:
        evs = self.events(r, ("router.role_changed",))
        return evs[-1].payload["new"] if evs else None

    def wait(self, cond, timeout: float, what: str, step: float = 0.02):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = cond()
            if v:
                return v
            time.sleep(step)
        self.dump_stacks()
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; roles {self.roles()}")

    def dump_stacks(self) -> None:
        """Diagnostics for a failed wait: every pulse prints its threads' stacks to its stderr file."""
        for r in self.procs:
            try:
                os.kill(self.pid_of(r, "pulse"), signal.SIGUSR1)
            except (IndexError, ProcessLookupError, OSError):
                pass
        time.sleep(0.3)

    def roles(self) -> dict:
        return {r: self.role(r) for r in self.topo.routers}

    def wait_steady(self, active: str = "r1", timeout: float = 20.0) -> None:
        """``active`` is ACTIVE with the VIP, the others BACKUP, and they have heard it as ACTIVE
        (a fault injected a few ms after the takeover would hit before its first ACTIVE heartbeat)."""
        self.wait(lambda: self.roles() == {r: ("ACTIVE" if r == active else "BACKUP") for r in self.topo.routers}
                  and self.topo.has_address(active, VIP), timeout, f"{active} active")
        for r in self.topo.routers:
            if r != active:
                self.wait(lambda: [e for e in self.events(r, ("pulse.heartbeat_received",))
                                   if e.payload["peer"] == active and e.payload["role"] == "ACTIVE"],
                          3.0, f"{r} hears {active} as ACTIVE")
                # and has done its start-up listening (deadtime: no takeover of any kind before)
                since = self.events(r, ("router.role_changed",))[-1].wall_ns / 1e9
                time.sleep(max(0.0, since + self.cfg["deadtime"] + 0.05 - time.time()))

    def probe(self, timeout: float = 0.2, vip: str = VIP) -> str | None:
        """Ask the VIP (``vip``) who answers; the router's name or None."""
        self.nonce += 1
        msg = f"p{self.nonce}".encode()
        self.client.settimeout(timeout)
        try:
            self.client.sendto(msg, (vip, 7))
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                data, _ = self.client.recvfrom(2048)
                name, _, body = data.partition(b" ")
                if body == msg:
                    return name.decode()
        except (socket.timeout, OSError):
            return None
        return None

    def wait_answer(self, r: str, timeout: float = 5.0) -> float:
        t0 = time.monotonic()
        self.wait(lambda: self.probe(0.05) == r, timeout, f"the VIP answered by {r}", step=0.0)
        return time.monotonic() - t0

    def err_lines(self, r: str) -> list[dict]:
        return json_lines(self.tmp / f"{r}.err")

    def wait_lvsd_standby(self, r: str, timeout: float = 5.0) -> None:
        """Until router ``r``'s lvsd is a standby waiting for "go" (a router that was active a moment
        at the start, before its peer came up, has just had its active lvsd replaced by one)."""
        def standby() -> bool:
            said = [l["event"] for l in self.err_lines(r) if l.get("service") == "lvsd"
                    and l.get("event") in ("standby", "standby_go", "lvsd_started")]
            return bool(said) and said[-1] == "standby"
        self.wait(standby, timeout, f"{r}'s lvsd a standby")

    def started(self, r: str, service: str) -> int:
        return sum(1 for l in self.err_lines(r) if l.get("event") == "service_started" and l.get("service") == service)

    def pid_of(self, r: str, service: str) -> int:
        pids = [l["pid"] for l in self.err_lines(r) if l.get("event") == "service_started" and l.get("service") == service]
        return pids[-1]

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for r, p in self.procs.items():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        self.client.close()


@contextlib.contextmanager
def clusters(topo, tmp: Path):
    """``make(**kw) -> Cluster`` (Cluster's keywords) for a test; every cluster it made is stopped
    at the end, also on failure."""
    made: list[Cluster] = []

    def make(**kw) -> Cluster:
        c = Cluster(topo, tmp, **kw)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.stop()


def capture_frames(sock, want, timeout: float = 3.0, enough=None) -> list[bytes]:
    """The frames ``want`` takes, read for ``timeout`` s (or until ``enough(frames)``)."""
    sock.settimeout(0.2)
    got, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            frame = sock.recv(2048)
        except socket.timeout:
            continue
        if want(frame):
            got.append(frame)
            if enough is not None and enough(got):
                break
    return got
