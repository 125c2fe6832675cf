"""pulse's pure core driven in memory, for the core's tests and the tests built on it (fos, snapshots).

* ``Node``: one core fed hand-built events (seq and mono_ns stamped by the helper); every input and
  every output is validated against the event catalog, so the payloads are the declared contract;
* ``Cluster``: two or three cores wired over an in-memory network (h11's ConnectionPair idea): a
  ``pulse.send_heartbeat`` / ``pulse.send_fence`` effect becomes the receivers'
  ``pulse.heartbeat_received`` / ``pulse.fence_received`` 1 ms later, a fake clock advances, and a
  node gets ``timer.fired`` when its ``next_deadline`` passes. Links can be cut per pair and link,
  nodes can crash.
"""
from __future__ import annotations

import heapq
import itertools
from typing import Any

import lvsbus.wire.catalog  # noqa: F401  (fills the registry)
from lvsbus.config import (
    Config, Forwarding, Heartbeat, NatRouter, Notify, RealServer, Router, VirtualService, to_dict,
)
from lvsbus.runtime.core import Effect
from lvsbus.wire.events import REGISTRY, Event
from lvsbus_services.pulse import wire
from lvsbus_services.pulse.core import ACTIVE, BACKUP, RULES, PulseCore

S = 1_000_000_000
MS = 1_000_000
KEEPALIVE = 1 * S
DEADTIME = 3 * S
LATENCY = 1 * MS
KEY = wire.key_from_secret(b"the in-memory cluster's secret")

ROUTERS = {
    "lvs1": ("10.0.0.1", "192.168.0.1", 200),
    "lvs2": ("10.0.0.2", "192.168.0.2", 100),
    "lvs3": ("10.0.0.3", "192.168.0.3", 50),
}


def make_config(names=("lvs1", "lvs2"), priorities=None, private=True, **heartbeat) -> Config:
    priorities = priorities or {}
    hb: dict[str, Any] = {"keepalive": 1.0, "deadtime": 3.0, "monitor_links": True, "garp_repeat": 3}
    hb.update(heartbeat)
    rs = (RealServer("a", "192.168.100.10"),)
    return Config(
        routers=tuple(
            Router(n, ROUTERS[n][0], ROUTERS[n][1] if private else None, priority=priorities.get(n, ROUTERS[n][2]),
                   device="eth0", private_device="eth1" if private else None)
            for n in names
        ),
        heartbeat=Heartbeat(**hb),
        notify=Notify(active_cmd="/usr/local/bin/up", inactive_cmd="/usr/local/bin/down", notify="/usr/local/bin/notify"),
        nat_router=NatRouter("192.168.100.254", device="eth1", label="eth1:1", prefixlen=24),
        virtual_services=(
            VirtualService("web", "10.0.0.100", device="eth0", label="eth0:1", vip_prefixlen=24, port=80, servers=rs),
            VirtualService("web-tls", "10.0.0.100", device="eth0", label="eth0:1", vip_prefixlen=24, port=443,
                           servers=rs),
            VirtualService("web6", "2001:db8::100", port=80, forwarding=Forwarding.DIRECT,
                           servers=(RealServer("a", "2001:db8::10"),)),
            VirtualService("off", "10.0.0.200", active=False, port=80),
        ),
    )


def make_model(names=("lvs1", "lvs2"), priorities=None, private=True, **heartbeat) -> dict:
    """A config model as the config.loaded event carries it (lvsbus.config.to_dict)."""
    return to_dict(make_config(names, priorities, private, **heartbeat))


def config_payload(local: str, model: dict, reload: bool = False) -> dict:
    return {
        "path": "/etc/lvsbus/lvs.toml", "format": "toml", "digest": "0" * 64, "model": model, "warnings": [],
        "local_router": local, "reload": reload, "diff": {},
    }


def check(type_: str, payload: dict) -> None:
    REGISTRY.validate(type_, REGISTRY.latest(type_).version, payload)


def of(effects, type_) -> list[dict]:
    return [e.payload for e in effects if e.type == type_]


class Node:
    """One core, fed hand-built events; inputs and outputs are checked against the catalog."""

    def __init__(self, name: str = "lvs1", core: PulseCore | None = None, state=None):
        self.name = name
        self.core = core or PulseCore()
        self.state = state if state is not None else self.core.initial()
        self.seq = itertools.count(1)
        self.inputs: list[Event] = []
        self.outputs: list[tuple[int, list[Effect]]] = []

    @property
    def role(self) -> str:
        return self.state.role

    def feed(self, type_: str, payload: dict, now: int, source: str = "pulse") -> list[Effect]:
        if type_ in ("pulse.heartbeat_received", "pulse.fence_received") and "groups" not in payload:
            # a hand-built payload of before failover groups: as a recorded v1 event reads
            REGISTRY.validate(type_, 1, payload)
            payload = REGISTRY.upcast(type_, 1, payload)[1]
        check(type_, payload)
        ev = Event(next(self.seq), self.name, source, type_, 1, now, now, None, payload)
        assert self.core.accepts(ev), ev.short()
        self.inputs.append(ev)
        self.state, effects = self.core.decide(self.state, ev)
        for e in effects:
            assert e.type in self.core.outputs, e.type
            check(e.type, e.payload)
        self.outputs.append((now, effects))
        return effects

    # shorthands
    def configure(self, model: dict, now: int = 0) -> list[Effect]:
        return self.feed("config.loaded", config_payload(self.name, model), now, source="config")

    def start(self, now: int = 0, epoch: int = 1, rules: int = RULES) -> list[Effect]:
        return self.feed("pulse.started", {"epoch": epoch, "hostname": self.name, "addresses": [], "key_loaded": True, "listen": True, "rules": rules}, now)

    def timer(self, now: int) -> list[Effect]:
        return self.feed("timer.fired", {"service": "pulse", "deadline_ns": now}, now, source="pulse")

    def hb(self, peer: str, now: int, seq: int, role: str = BACKUP, link: str = "public", epoch: int = 1,
           priority: int | None = None, leaving: bool = False) -> list[Effect]:
        return self.feed("pulse.heartbeat_received", {
            "link": link, "peer": peer, "address": ROUTERS[peer][0 if link == "public" else 1], "role": role,
            "priority": ROUTERS[peer][2] if priority is None else priority, "epoch": epoch, "seq": seq,
            "leaving": leaving,
        }, now)

    def fence(self, peer: str, now: int, seq: int, target: str | None = None, link: str = "public",
              epoch: int = 1) -> list[Effect]:
        return self.feed("pulse.fence_received", {
            "link": link, "peer": peer, "address": ROUTERS[peer][0], "target": target or self.name,
            "epoch": epoch, "seq": seq, "reason": "peer_dead",
        }, now)

    def link(self, link: str, up: bool, now: int) -> list[Effect]:
        return self.feed("pulse.link_changed", {"link": link, "up": up, "device": None}, now)

    def shutdown(self, now: int, graceful: bool = True) -> list[Effect]:
        return self.feed("router.shutdown_requested", {"reason": "SIGTERM", "graceful": graceful}, now, source="supervisor")

    def all_effects(self) -> list[Effect]:
        return [e for _, effs in self.outputs for e in effs]

    def role_changes(self) -> list[tuple[str, str, str]]:
        return [(p["old"], p["new"], p["reason"]) for p in of(self.all_effects(), "router.role_changed")]


class Cluster:
    """Cores wired over an in-memory network with a fake clock."""

    def __init__(self, names=("lvs1", "lvs2"), model: dict | None = None, rules: int = RULES, **heartbeat):
        self.model = model or make_model(names, **heartbeat)
        self.rules = rules  # the decision rules each pulse.started says (RULES: this code's)
        self.nodes = {n: Node(n) for n in names}
        self.now = 0
        self.queue: list = []
        self.counter = itertools.count()
        self.cut: set[tuple[frozenset, str]] = set()
        self.crashed: set[str] = set()
        self.trace: list[tuple[int, str, str, dict]] = []  # (time, node, type, payload) of outputs

    def roles(self) -> dict[str, str]:
        return {n: node.role for n, node in self.nodes.items()}

    def active(self) -> list[str]:
        return sorted(n for n, node in self.nodes.items() if node.role == ACTIVE and n not in self.crashed)

    def start(self, name: str, at: int | None = None, epoch: int = 1) -> None:
        at = self.now if at is None else at
        self._push(at, name, "config.loaded", config_payload(name, self.model))
        self._push(at, name, "pulse.started", {"epoch": epoch, "hostname": name, "addresses": [], "key_loaded": True, "listen": True, "rules": self.rules})

    def observe(self, name: str, track: str, value: int, at: int | None = None) -> None:
        """pulse's shell on ``name`` sees a tracked interface or file at ``value``."""
        self._push(self.now if at is None else at, name, "pulse.track_observed",
                   {"track": track, "kind": "interface", "value": value, "detail": "test"})

    def script(self, name: str, track: str, new: str, old: str = "UP", at: int | None = None) -> None:
        """nanny on ``name`` moves a tracked script's machine to ``new``."""
        self._push(self.now if at is None else at, name, "health.track_changed",
                   {"track": track, "old": old, "new": new, "reason": "checks_failed" if new == "DOWN" else "checks_passed",
                    "detail": "ok" if new == "UP" else "exit_code", "count": 1})

    def server(self, name: str, virtual: str, server: str, up: bool, at: int | None = None) -> None:
        """nanny on ``name`` gives its verdict on a real server (UP or DOWN)."""
        self._push(self.now if at is None else at, name, "health.real_server_up" if up else "health.real_server_down",
                   {"virtual": virtual, "server": server, "address": "192.168.100.10", "port": 80,
                    "reason": "checks_passed" if up else "checks_failed", "previous": "DOWN" if up else "UP",
                    **({"passes": 1} if up else {"failures": 1}), "detail": "ok" if up else "refused"})

    def cut_link(self, a: str, b: str, link: str) -> None:
        self.cut.add((frozenset((a, b)), link))

    def heal(self) -> None:
        self.cut.clear()

    def crash(self, name: str) -> None:
        self.crashed.add(name)

    def _push(self, at: int, node: str, type_: str, payload: dict) -> None:
        heapq.heappush(self.queue, (at, next(self.counter), node, type_, payload))

    def _deliver(self, node: Node, type_: str, payload: dict) -> None:
        source = {"config.loaded": "config", "router.shutdown_requested": "supervisor",
                  "health.track_changed": "nanny", "health.real_server_up": "nanny",
                  "health.real_server_down": "nanny", "health.state_changed": "nanny"}.get(type_, "pulse")
        effects = node.feed(type_, payload, self.now, source=source)
        for e in effects:
            self.trace.append((self.now, node.name, e.type, e.payload))
            if e.type in ("pulse.send_heartbeat", "pulse.send_fence"):  # through pulse's wire format
                msg = wire.decode_datagram(KEY, wire.datagram_of(KEY, e.type, e.payload))
                for d in e.payload["destinations"]:
                    if (frozenset((node.name, d["peer"])), d["link"]) not in self.cut:
                        self._push(self.now + LATENCY, d["peer"], *wire.received(msg, d["link"], d["local_address"]))

    def run_until(self, t: int) -> None:
        same_time = 0
        while True:
            deadlines = []
            for name, node in self.nodes.items():
                if name in self.crashed:
                    continue
                d = node.core.next_deadline(node.state)
                if d is not None:
                    deadlines.append((max(d, self.now), name))
            candidates = [q[0] for q in self.queue] + [d for d, _ in deadlines]
            if not candidates:
                self.now = t
                return
            nxt = min(candidates)
            if nxt > t:
                self.now = t
                return
            same_time = same_time + 1 if nxt == self.now else 0
            assert same_time < 1000, "a core keeps asking for a deadline it does not consume"
            self.now = nxt
            while self.queue and self.queue[0][0] == nxt:
                _, _, name, type_, payload = heapq.heappop(self.queue)
                if name not in self.crashed:
                    self._deliver(self.nodes[name], type_, payload)
            for d, name in sorted(deadlines):
                node = self.nodes[name]
                nd = node.core.next_deadline(node.state)
                if d == nxt and nd is not None and nd <= self.now and name not in self.crashed:
                    self._deliver(node, "timer.fired", {"service": "pulse", "deadline_ns": nd})

    def outputs_of(self, name: str, type_: str) -> list[tuple[int, dict]]:
        return [(t, p) for t, n, ty, p in self.trace if n == name and ty == type_]

    def last_heard(self, receiver: str, sender: str) -> int:
        return max(e.mono_ns for e in self.nodes[receiver].inputs
                   if e.type == "pulse.heartbeat_received" and e.payload["peer"] == sender)


def steady_pair(**heartbeat) -> Cluster:
    """lvs1 and lvs2 started together and run 10 s: lvs1 ACTIVE, lvs2 BACKUP."""
    c = Cluster(**heartbeat)
    c.start("lvs1")
    c.start("lvs2")
    c.run_until(10 * S)
    assert c.roles() == {"lvs1": ACTIVE, "lvs2": BACKUP}
    return c


def v8_snapshot(snap: dict) -> dict:
    """A pulse snapshot (version 9 and later) as version 8 wrote it, before failover groups: the
    default unit's fields at the top, each peer's role, priority and split flag in its list, the
    settings with one set of VIPs (for tests of the older versions' upcasters). Fields of versions
    10-12 stay where they are (their upcasters overwrite them) but version 12's unit field and
    peer element, which the version-9 upcaster would misplace."""
    d = dict(snap)
    (unit,) = d.pop("units").values()
    unit = dict(unit)
    unit.pop("listen_since")
    views = unit.pop("views")
    d.update(unit)
    d["peers"] = {n: p[:8] + [views[n][2], p[8]] for n, p in d["peers"].items()}
    for n, p in d["peers"].items():
        p[0], p[1] = views[n][0], views[n][1]
    if d["settings"] is not None:
        s = dict(d["settings"])
        (u,) = s.pop("units")
        s.update({"vips": u[2], "preempt": u[4], "preempt_delay_ns": u[5], "active_cmd": u[6],
                  "inactive_cmd": u[7], "notify_cmd": u[8], "failover": u[9], "tracks": u[10]})
        d["settings"] = s
    return d
