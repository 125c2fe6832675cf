"""What the console shows, folded from the bus: pure (no I/O, no clock), fed events in log order.

``View.apply(event)`` folds one event and returns the patches it makes to what a browser shows
(JSON-able dicts), so the server pushes exactly what changed: ``{"kind": "router", ...}`` (role,
peers and their heartbeat links, VIPs, local links), ``{"kind": "server", "id": ..., ...}`` (one real server's row), ``{"kind": "service",
...}`` (a virtual service's figures) or ``{"kind": "reset"}`` (a new config: fetch the whole view
again). ``View.state()`` is the whole view (the page's first paint and a reset).
"""
from __future__ import annotations

from typing import Any

from lvsbus.config import ConfigError, from_dict
from lvsbus.config.model import DEFAULT_GROUP
from lvsbus.wire.events import Event
from lvsbus.ipvs.stats import FIELDS, Figures, fold
from lvsbus.router.peerlinks import PeerLinks
from lvsbus_services.lvsd.core import service_key

HISTORY = 8  # health changes kept per real server
HEARD_EVERY_NS = 1_000_000_000  # while no link changes state, heartbeats refresh the page's ages at most this often


def summary_role(roles: Any, default: str | None) -> str | None:
    """A router's role over its failover groups (as `lvsbus status` says it): ACTIVE when it is
    active for one, else BACKUP, else FAULT; ``default`` with none of these."""
    roles = list(roles)
    return next((r for r in ("ACTIVE", "BACKUP", "FAULT") if r in roles), default)


class View:
    def __init__(self) -> None:
        self.seq = 0
        self.router: str | None = None
        self.role = "UNKNOWN"
        self.role_reason: str | None = None
        self.role_since_ns: int | None = None
        self.peers: dict[str, dict] = {}  # name -> {"role", "groups": {group: role}}: configured or heard of
        #: failover groups in force, in config order: group -> {role, reason, since_ns} on this router
        self.groups: dict[str, dict] = {}
        self.vip_group: dict[str, str] = {}  # every VIP of the config -> its failover group
        self.peer_links = PeerLinks()  # their heartbeat links: state and last heard (shared with `lvsbus status`)
        self.now_mono_ns: int | None = None  # the latest event's time: what the ages are counted to
        self.heard_pushed_ns = 0  # the event time of the last router patch (it carries the ages)
        self.deadtime_ns: int | None = None
        self.monitor_links = False
        self.vips: dict[str, str] = {}  # address -> owner
        self.config_vips: list[str] = []  # every VIP of the config in force
        self.links: dict[str, dict] = {}  # this router's heartbeat links: {up, device, since_ns} (monitor_links)
        self.services: list[dict] = []
        self.rows: dict[str, dict] = {}  # health id -> server row (in self.services)
        self.by_dest: dict[tuple[str, str], str] = {}  # (service key, dest key) -> health id
        self.by_key: dict[str, dict] = {}  # service key -> service dict
        self.figures = Figures()
        self.weights: dict[str, dict[str, int]] = {}  # desired table: service key -> {dest key: weight}
        self.config: dict | None = None  # the config in force: {path, format, digest, model, seq}
        #: scale-out ([scaleout]): {"sessions": {peer: {state, info}}, "vips": {address: {state,
        #: reason}}, "drained": bool}; None without it
        self.bgp: dict | None = None
        self.router_pid: int | None = None  # the router's supervisor (it says hello on the bus)

    # -- the whole view ---------------------------------------------------------------------

    def router_state(self) -> dict:
        """This router, its peers (role, alive, and each heartbeat link: state, the age of its last
        heartbeat as of the latest event, which the page counts on from), VIPs and local links."""
        return {"kind": "router", "router": self.router, "role": self.role, "reason": self.role_reason,
                "since_ns": self.role_since_ns, "peers": self.peer_state(), "vips": sorted(self.vips),
                "holders": self.holders(), "links": self.links, "monitor_links": self.monitor_links,
                "deadtime_s": None if self.deadtime_ns is None else self.deadtime_ns / 1e9,
                "groups": self.group_state(), "bgp": self.bgp}

    def group_state(self) -> dict[str, dict]:
        """Each failover group (config order): its role here, why and since when, its VIPs, and
        each peer's role in it as its heartbeats last said (None: not heard, or dead)."""
        alive = self.peer_links.alive
        return {g: {**st, "vips": sorted(v for v, vg in self.vip_group.items() if vg == g),
                    "peers": {n: (p.get("groups", {}).get(g) if alive.get(n) else None)
                              for n, p in sorted(self.peers.items())}}
                for g, st in self.groups.items()}

    def peer_state(self) -> dict[str, dict]:
        pl = self.peer_links
        return {name: {"alive": bool(pl.alive.get(name)), "role": summary_role(p.get("groups", {}).values(), p["role"]),
                       "links": {ln: {k: d[k] for k in ("state", "age_s", "heard_ns")}
                                 for ln, d in pl.describe(name, self.now_mono_ns, self.deadtime_ns).items()}}
                for name, p in sorted(self.peers.items())}

    def holders(self) -> dict[str, str | None]:
        """Each configured VIP -> who holds it as this router sees it: itself when it added the
        address, else a live peer heard ACTIVE for the VIP's failover group (None: nobody known)."""
        def holder(v: str) -> str | None:
            if v in self.vips:
                return self.router or "this router"
            g = self.vip_group.get(v, DEFAULT_GROUP)
            return next((n for n, p in sorted(self.peers.items()) if self.peer_links.alive.get(n)
                         and p.get("groups", {}).get(g, p["role"]) == "ACTIVE"), None)
        return {v: holder(v) for v in self.config_vips}

    def state(self) -> dict:
        return {"seq": self.seq, "fields": FIELDS, "router": self.router_state(), "services": self.services}

    # -- folding ----------------------------------------------------------------------------

    def apply(self, ev: Event) -> list[dict]:
        self.seq = max(self.seq, ev.seq)
        self.now_mono_ns = ev.mono_ns if self.now_mono_ns is None else max(self.now_mono_ns, ev.mono_ns)
        links_changed = self.peer_links.apply(ev)
        out = self._apply(ev, links_changed)
        if any(x["kind"] == "router" for x in out):  # the peers' ages go with every router patch
            self.heard_pushed_ns = self.now_mono_ns
        return out

    def _apply(self, ev: Event, links_changed: bool) -> list[dict]:
        t, p = ev.type, ev.payload
        if t == "config.loaded":
            self.config = {"path": p["path"], "format": p["format"], "digest": p["digest"], "model": p["model"],
                           "seq": ev.seq}
            self._config(p)
            return [{"kind": "reset"}]
        if t == "bus.client_joined":
            if p["client"] == "router" and p.get("pid"):
                self.router_pid = p["pid"]
            return []
        if t == "router.role_changed":
            group = p.get("group", DEFAULT_GROUP)
            self.groups[group] = {"role": p["new"], "reason": p["reason"], "since_ns": ev.wall_ns}
            # the router's role: ACTIVE when active for a group, else BACKUP, else FAULT (as `lvsbus status`)
            summary = summary_role([g["role"] for g in self.groups.values()], p["new"])
            if summary != self.role or group == DEFAULT_GROUP:
                self.role_since_ns = ev.wall_ns
            self.role, self.role_reason = summary, p["reason"]
            return [self.router_state()]
        if t in ("pulse.peer_alive", "pulse.peer_dead"):
            self.peers.setdefault(p["peer"], {})["role"] = p["role"]
            return [self.router_state()]
        if t in ("pulse.link_degraded", "pulse.link_restored"):
            self.peers.setdefault(p["peer"], {"role": None})
            return [self.router_state()]
        if t == "pulse.link_changed":
            self.links[p["link"]] = {"up": p["up"], "device": p["device"], "since_ns": ev.wall_ns}
            return [self.router_state()]
        if t == "pulse.heartbeat_received":
            peer = self.peers.get(p["peer"])
            if peer is None:
                return []
            groups = {g["group"]: g["role"] for g in p["groups"]}
            role_changed = self.peer_links.alive.get(p["peer"], False) and \
                (peer["role"] != p["role"] or peer.get("groups") != groups)
            if role_changed or "groups" not in peer:
                peer["role"], peer["groups"] = p["role"], groups
            # chatter (every keepalive, on every link of every peer): a role or link state change
            # shows at once; otherwise the last-heard ages at most once a HEARD_EVERY_NS, and the
            # page counts them on in between
            if not (role_changed or links_changed or ev.mono_ns - self.heard_pushed_ns >= HEARD_EVERY_NS):
                return []
            return [self.router_state()]
        if t == "pulse.take_vips":
            self.vips.update({v["address"]: v["owner"] for v in p["vips"]})
            return [self.router_state()]
        if t == "pulse.release_vips":
            for v in p["vips"]:
                self.vips.pop(v["address"], None)
            return [self.router_state()]
        if t in ("health.real_server_up", "health.real_server_down", "health.state_changed"):
            new = {"health.real_server_up": "UP", "health.real_server_down": "DOWN"}.get(t) or p["new"]
            return self._health(f"{p['virtual']}/{p['server']}", new, p["reason"], p.get("detail"), ev.wall_ns)
        if t == "health.check_results":
            return self._checks(p, ev.wall_ns)
        if t == "lvsd.table_desired":
            self.weights = {svc: {d: a["weight"] for d, a in e["dests"].items()} for svc, e in p["table"].items()}
            return self._weights_changed(None)
        if t == "lvsd.table_delta":
            touched = set()
            for op in p["ops"]:
                svc, dest = op["service"], op["dest"]
                if op["op"] == "del_service":
                    self.weights.pop(svc, None)
                elif op["op"] in ("add_service", "edit_service"):
                    self.weights.setdefault(svc, {})
                elif op["op"] == "del_dest":
                    self.weights.get(svc, {}).pop(dest, None)
                else:
                    self.weights.setdefault(svc, {})[dest] = op["attrs"]["weight"]
                touched.add(svc)
            return self._weights_changed(touched)
        if t == "lvsd.server_action_taken":
            row = self.rows.get(f"{p['virtual']}/{p['server']}")
            if row is None or p["outcome"] == "unknown_server":
                return []
            row["admin"] = p["state"]
            return [self._row_patch(row)]
        if t == "ipvs.stats":
            fold(self.figures, p)
            return self._stats(p)
        if self.bgp is not None and t.startswith("bgp."):
            if t == "bgp.session_changed":
                self.bgp["sessions"][p["peer"]] = {"state": p["state"], "info": p["info"]}
            elif t == "bgp.vip_changed":
                self.bgp["vips"][p["address"]] = {"state": p["new"], "reason": p["reason"]}
            elif t == "bgp.drain_taken" and p["outcome"] == "applied":
                self.bgp["drained"] = p["action"] == "drain"
            else:
                return []
            return [self.router_state()]
        return []

    def _config(self, p: dict) -> None:
        try:
            cfg = from_dict(p["model"])
        except (ConfigError, KeyError, TypeError, ValueError):
            return
        self.router = p["local_router"]
        if cfg.scaleout is None:
            self.bgp = None
        elif self.bgp is None:  # (kept across a reload that keeps [scaleout]: the speaker's state goes on)
            self.bgp = {"sessions": {peer: {"state": "down", "info": "not heard"} for peer in cfg.scaleout.peers},
                        "vips": {}, "drained": False}
        self.deadtime_ns = int(cfg.heartbeat.deadtime * 1e9)
        self.monitor_links = cfg.heartbeat.monitor_links
        for r in cfg.routers:
            if r.name != self.router:
                self.peers.setdefault(r.name, {"role": None})
        me = next((r for r in cfg.routers if r.name == self.router), None)
        local = {"public": me.device, "private": me.private_device} if me is not None and me.private_address else \
            {"public": me.device if me is not None else None}
        # a link pulse never reported is up (pulse.link_changed comes on a change, with monitor_links)
        self.links = {ln: self.links.get(ln, {"up": True, "device": dev, "since_ns": None}) for ln, dev in local.items()}
        self.config_vips = sorted({vs.address for vs in cfg.lvs_services() if vs.active and not vs.fwmark}
                                  | ({cfg.nat_router.address} if cfg.nat_router else set()))
        self.vip_group = {vs.address: vs.group or DEFAULT_GROUP for vs in cfg.lvs_services()
                          if vs.active and not vs.fwmark}
        if cfg.nat_router is not None:
            self.vip_group[cfg.nat_router.address] = cfg.nat_router.group or DEFAULT_GROUP
        # a group not yet reported is INIT here (pulse's role before its first role_changed)
        self.groups = {g: self.groups.get(g, {"role": "INIT", "reason": None, "since_ns": None})
                       for g in cfg.group_names()}
        old = self.rows
        self.services, self.rows, self.by_dest, self.by_key = [], {}, {}, {}
        for vs in cfg.lvs_services():
            key = str(service_key(vs))
            svc: dict[str, Any] = {
                "name": vs.name, "key": key, "active": vs.active, "address": vs.address, "port": vs.port,
                "group": vs.group or DEFAULT_GROUP,
                "protocol": vs.protocol.value, "scheduler": vs.scheduler, "forwarding": vs.forwarding.value,
                "stats": None, "servers": [],
            }
            for rs in vs.servers:
                id_ = f"{vs.name}/{rs.name}"
                port = vs.port if rs.port is None else rs.port
                dest = f"[{rs.address}]:{port}" if ":" in rs.address else f"{rs.address}:{port}"
                prev = old.get(id_, {})
                row = {
                    "id": id_, "service": vs.name, "name": rs.name, "address": rs.address, "port": port,
                    "dest": dest, "active": rs.active, "weight": rs.weight, "effective": None,
                    "health": prev.get("health", "INIT"), "since_ns": prev.get("since_ns"),
                    "history": prev.get("history", []), "last": prev.get("last"),
                    "admin": prev.get("admin", "enabled"), "stats": None,
                }
                svc["servers"].append(row)
                self.rows[id_] = row
                self.by_dest[(key, dest)] = id_
            self.services.append(svc)
            self.by_key[key] = svc
        self._weights_changed(None)
        for key in self.by_key:
            self._fill_stats(key)

    def _row_patch(self, row: dict) -> dict:
        return {"kind": "server", **row}

    def _health(self, id_: str, new: str, reason: str, detail: str | None, wall_ns: int) -> list[dict]:
        row = self.rows.get(id_)
        if row is None:
            return []
        row["health"], row["since_ns"] = new, wall_ns
        row["history"] = ([{"state": new, "reason": reason, "detail": detail, "wall_ns": wall_ns}] + row["history"])[:HISTORY]
        return [self._row_patch(row)]

    def _checks(self, p: dict, wall_ns: int) -> list[dict]:
        changed: dict[str, dict] = {}
        for id_, ok, lat, detail in zip(p["ids"], p["ok"], p["latency_us"], p["detail"]):
            row = self.rows.get(id_)
            if row is not None:
                row["last"] = {"ok": ok, "latency_us": lat, "detail": detail, "wall_ns": wall_ns}
                changed[id_] = row
        return [self._row_patch(r) for r in changed.values()]

    def _weights_changed(self, keys: set[str] | None) -> list[dict]:
        out = []
        for key, svc in self.by_key.items():
            if keys is not None and key not in keys:
                continue
            table = self.weights.get(key, {})
            for row in svc["servers"]:
                eff = table.get(row["dest"])
                if eff != row["effective"]:
                    row["effective"] = eff
                    out.append(self._row_patch(row))
        return out

    def _fill_stats(self, key: str) -> None:
        svc = self.by_key[key]
        svc["stats"] = list(self.figures.services[key]) if key in self.figures.services else None
        dests = self.figures.dests.get(key, {})
        for row in svc["servers"]:
            row["stats"] = list(dests[row["dest"]]) if row["dest"] in dests else None

    def _stats(self, p: dict) -> list[dict]:
        out: list[dict] = []
        keys = self.by_key if p["full"] else [k for k in p["services"] if k in self.by_key]
        for key in keys:
            svc = self.by_key[key]
            before = [r["stats"] for r in svc["servers"]]
            self._fill_stats(key)
            out.append({"kind": "service", "key": key, "name": svc["name"], "stats": svc["stats"]})
            out += [self._row_patch(r) for r, b in zip(svc["servers"], before) if r["stats"] != b]
        return out
