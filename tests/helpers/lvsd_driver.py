"""lvsd's pure core driven by hand, for its tests and those built on it (operator actions, the web console)."""
from __future__ import annotations

from lvsbus.config import Config, RealServer, Router, VirtualService, to_dict
from lvsbus.wire.events import Event
from lvsbus.ipvs.table import ServiceKey, Table
from lvsbus_services.lvsd.core import LvsdCore, apply_ops

KEY = "tcp:192.0.2.80:80"


def vs(n=3, weights=None, **kw) -> VirtualService:
    """Virtual service "web" 192.0.2.80:80 with ``n`` servers s0.. at 10.0.0.1.. (``kw`` overrides)."""
    weights = weights or [1] * n
    servers = tuple(RealServer(name=f"s{i}", address=f"10.0.0.{i + 1}", weight=weights[i]) for i in range(n))
    return VirtualService(**{"name": "web", "address": "192.0.2.80", "port": 80, "servers": servers, **kw})


def config(*vss) -> Config:
    """A config with one router, lvs1, and the virtual services ``vss``."""
    return Config(routers=(Router(name="lvs1", address="192.0.2.1"),), virtual_services=vss)


class Lvsd:
    """lvsd's core fed hand-built events, with the applier's table folded from its outputs (each
    delta checked to fold to exactly the core's table)."""

    def __init__(self, cfg: Config, start=True):
        self.core = LvsdCore()
        self.st = self.core.initial()
        self.seq = 0
        self.table: Table | None = None
        self.version = 0
        self.config(cfg)
        if start:
            self.feed("lvsd.started", {"pid": 1, "epoch": 1})

    def feed(self, type_, payload):
        self.seq += 1
        self.st, out = self.core.decide(self.st, Event(self.seq, "n1", "x", type_, 1, self.seq, 0, None, payload))
        for e in out:  # what the applier does with them
            if e.type == "lvsd.table_desired":
                self.table, self.version = Table.from_dict(e.payload["table"]), e.payload["version"]
            elif e.type == "lvsd.table_delta":
                assert e.payload["base_version"] == self.version
                self.table, self.version = apply_ops(self.table, e.payload["ops"]), e.payload["version"]
        if self.table is not None and self.st.live:
            assert self.table == self.st.table  # deltas fold to exactly the core's table
        return out

    def config(self, cfg, digest="d1"):
        return self.feed("config.loaded", {"model": to_dict(cfg), "digest": digest, "path": "x", "format": "toml",
                                           "warnings": [], "local_router": "lvs1", "reload": False, "diff": {}})

    def up(self, server, virtual="web"):
        return self.feed("health.real_server_up", {"virtual": virtual, "server": server, "address": "x", "port": 1,
                                                   "reason": "checks_passed", "previous": "RISING", "passes": 2, "detail": "ok"})

    def down(self, server, virtual="web"):
        return self.feed("health.real_server_down", {"virtual": virtual, "server": server, "address": "x", "port": 1,
                                                     "reason": "checks_failed", "previous": "FALLING", "failures": 3,
                                                     "detail": "refused"})

    def changed(self, server, new, virtual="web"):
        return self.feed("health.state_changed", {"virtual": virtual, "server": server, "address": "x", "port": 1,
                                                  "old": "UP", "new": new, "reason": "check_failing", "detail": None})

    def dests(self, key=KEY):
        assert self.table is not None, "no table yet"
        return {k: d.weight for k, d in self.table[ServiceKey.parse(key)].dests.items()}
