"""lvsd's pure core: folds the config and nanny's health events into the desired IPVS table.

Inputs (recorded events): ``config.loaded``, ``health.real_server_up``, ``health.real_server_down``,
``health.state_changed``, ``lvsd.started`` (its shell started), ``pulse.start_lvsd``,
``pulse.stop_lvsd`` and ``operator.server_action`` (drain, disable, enable). Outputs: ``lvsd.table_desired`` (the whole table: on start, on config change,
on start_lvsd), ``lvsd.table_delta`` (the ops from the previous table to the next, one per health
event or operator action that changes the table; the envelope's cause is that event's seq) and
``lvsd.server_action_taken`` (the answer to each operator action, live or not).

Live or not: the core always folds config and health, but it outputs only while *live*: from
``lvsd.started`` or ``pulse.start_lvsd`` to ``pulse.stop_lvsd``. The runtime answers, on start,
inputs recorded while the service was down; while this router was the backup (lvsd stopped), those
are hours of health events, and a replay of them as deltas would walk the kernel through history.
Not live, they only update the state, and the start answers with one full table: a warm start.

Failover groups (issue 14): ``pulse.start_lvsd`` (v2) names the groups this router now holds, and
pulse sends it again whenever that set changes while it holds one. The desired table (full tables
and deltas alike) has only the virtual services of the groups held (a service naming no group is
in ``default``); ``groups`` null (a v1 record, or lvsd started without an order) holds every one.
Each start_lvsd answers with the whole table, so a changed set adds and removes whole services at
once; a health event or operator action on a service not held is folded and publishes nothing.

Policy (keepalived's ipwrapper layer; the applier only translates to netlink):

* a virtual service is in the table when it is active; its real servers are the active ones;
* a real server is *in service* when nanny says UP or FALLING (not yet fall failures in a row);
  one that is not is removed, or kept with weight 0: with ``inhibit_on_failure`` (keepalived's)
  always, also before it ever passed a check (and in scale-out with scheduler mh, docs/scaleout.md);
  with ``quiesce`` (lvs.cf ``quiesce_server``,
  Piranha's nanny -q) once it has been in service since lvsd's core last saw its health start
  over (a server never in the table is not added at weight 0, as Piranha's nanny did not);
* quorum: the service is *up* while the total configured weight of its in-service servers is at
  least ``quorum`` (default 1); with ``hysteresis`` h it goes down below ``quorum - h`` and comes
  back up at ``quorum + h``;
* sorry server: while the service is down (with the default quorum 1: no real server in service)
  and a sorry server is configured, the sorry server is the one destination (the real servers
  are removed, or weight 0 as above) and it is removed again as soon as quorum is back.
  Without a sorry server, a service below quorum keeps whatever servers are in service;
* operator actions (``operator.server_action``): a *drained* real server stays in the table with
  weight 0 while the policy above would keep it (its connections finish, it gets no new ones); a
  *disabled* one is out of the table; *enable* ends either. Neither counts toward quorum. The state
  is per (virtual service, real server), kept across reloads while the server stays configured.

Sans-IO, deterministic; the state is mutated in place and returned (snapshot/restore copy it).
"""
from __future__ import annotations

import dataclasses

from typing import Any

from lvsbus.config import Config, ConfigError, from_dict
from lvsbus.config.model import DEFAULT_GROUP, ORDERED_SCHEDULERS, VirtualService, ip_family
from lvsbus.config.quorum import IN_SERVICE, quorum_up, weight_in_service
from lvsbus.runtime.core import Core, Effect
from lvsbus.wire.events import Event
from lvsbus.ipvs.table import (  # noqa: F401  (apply_ops re-exported for lvsd's tests)
    Dest, Entry, Service, ServiceKey, Table, apply_ops, entry_ops, service_attrs,
)
from lvsbus_services.nanny.core import plan



def service_key(vs: VirtualService) -> ServiceKey:
    family = "inet6" if ip_family(vs.address) == 6 else "inet"
    if vs.fwmark:
        return ServiceKey.mark(vs.fwmark, family)
    return ServiceKey.tcp(vs.address, vs.port, vs.protocol.value)


class Layout:
    """What the config says about one active virtual service, precomputed once a config (the
    Dest values are built here, so a health event costs dict work, not validation)."""

    __slots__ = ("name", "group", "key", "service", "servers", "sorry", "quiesce", "inhibit", "quorum", "hysteresis")

    def __init__(self, vs: VirtualService, scaleout: bool = False) -> None:
        self.name = vs.name
        self.group = vs.group or DEFAULT_GROUP
        self.key = service_key(vs)
        netmask = vs.persistence_prefixlen
        if netmask is None:
            netmask = 128 if self.key.family == "inet6" else 32
        flags = vs.scheduler_flags + (("onepacket",) if vs.ops else ())
        self.service = Service(self.key, vs.scheduler, vs.persistence, netmask, flags, vs.persistence_engine or "")
        fwd = vs.forwarding.value
        #: (health id, weight, dest when in service, dest when quiesced)
        self.servers: list[tuple[str, int, Dest, Dest]] = []
        for rs in vs.servers:
            if not rs.active:
                continue
            port = vs.port if rs.port is None else rs.port
            up = Dest(rs.address, port, fwd, rs.weight, rs.upper_threshold, rs.lower_threshold)
            zero = Dest(rs.address, port, fwd, 0, rs.upper_threshold, rs.lower_threshold)
            self.servers.append((f"{vs.name}/{rs.name}", rs.weight, up, zero))
        self.sorry: Dest | None = None
        if vs.sorry_server:
            port = vs.sorry_server_port if vs.sorry_server_port is not None else vs.port
            self.sorry = Dest(vs.sorry_server, port, fwd, 1)
        # scale-out with mh: a failed real server keeps its place at weight 0 (as inhibit_on_failure).
        # IPVS mh fills its lookup table walking the real servers in the order they were added, so
        # one removed and added again on one router alone would map flows differently there than on
        # the others: every router keeps every configured server, in the config's order
        self.quiesce = vs.quiesce
        self.inhibit = vs.inhibit_on_failure or (scaleout and vs.scheduler in ORDERED_SCHEDULERS)
        self.quorum, self.hysteresis = vs.quorum, vs.hysteresis

    def quorum_up(self, health: dict[str, str], was_up: bool | None, admin: dict[str, str]) -> bool:
        """Whether the service is up: the weight in service (drained and disabled servers left out)
        against its quorum, with hysteresis around ``was_up``."""
        total = weight_in_service(((id_, w) for id_, w, _u, _z in self.servers), health, admin)
        return quorum_up(total, self.quorum, self.hysteresis, was_up)

    def dests(self, health: dict[str, str], up: bool, been_in: set[str], admin: dict[str, str],
              weights: dict[str, int] | None = None) -> dict[str, Dest]:
        """The service's real servers as IPVS destinations (``weights``: the dynamic weights
        nanny's programs gave, in place of the configured ones)."""
        use_sorry = not up and self.sorry is not None
        out: dict[str, Dest] = {}
        for id_, _w, d_up, d_zero in self.servers:
            held = admin.get(id_)
            if held == "disabled":
                continue
            if not use_sorry and health.get(id_) in IN_SERVICE:
                if weights and id_ in weights and held != "drained":
                    d_up = dataclasses.replace(d_up, weight=weights[id_])
                out[d_up.key] = d_zero if held == "drained" else d_up
            elif self.inhibit or (self.quiesce and id_ in been_in):
                out[d_zero.key] = d_zero
        if use_sorry and self.sorry is not None:
            out.setdefault(self.sorry.key, self.sorry)
        return out


def table_ops(old: Table, new: Table) -> list[dict]:
    """Ops taking table ``old`` to ``new``: deleted services first, then each service in key order."""
    ops = [op for k in sorted(old.keys()) if k not in new for op in entry_ops(k, old[k], None)]
    for k in sorted(new.keys()):
        ops += entry_ops(k, old.get(k), new[k])
    return ops


class LvsdState:
    __slots__ = ("digest", "model", "layouts", "checks", "health", "quorum", "table", "version", "bad_config",
                 "live", "been_in", "admin", "groups", "weights")

    def __init__(self) -> None:
        self.digest = ""
        self.model: dict | None = None
        self.layouts: dict[str, Layout] = {}  # active virtual services, config order
        self.checks: dict[str, tuple] = {}  # health id -> (address, probed port, Check): a change resets health
        self.health: dict[str, str] = {}  # health id -> nanny's state (absent = INIT)
        self.quorum: dict[str, bool] = {}  # virtual name -> quorum up
        self.table = Table()
        self.version = 0
        self.bad_config = 0
        self.live = False  # lvsd.started / pulse.start_lvsd seen, pulse.stop_lvsd not since
        self.been_in: set[str] = set()  # health ids in service at least once since their health (re)started
        self.admin: dict[str, str] = {}  # health id -> "drained" | "disabled" (operator.server_action)
        self.weights: dict[str, int] = {}  # health id -> the weight its program gave (health.weight_changed)
        #: the failover groups held (the latest pulse.start_lvsd's): only their services are desired;
        #: None: every virtual service (a v1 start_lvsd, or none yet)
        self.groups: frozenset[str] | None = None

    def holds(self, lay: "Layout") -> bool:
        return self.groups is None or lay.group in self.groups

    def __repr__(self) -> str:
        return f"LvsdState(v{self.version} {self.table!r})"


class LvsdCore(Core[LvsdState]):
    name = "lvsd"
    inputs = ("config.loaded", "health.real_server_up", "health.real_server_down", "health.state_changed",
              "health.weight_changed", "lvsd.started", "pulse.start_lvsd", "pulse.stop_lvsd", "operator.server_action")
    outputs = frozenset({"lvsd.table_desired", "lvsd.table_delta", "lvsd.config_rejected", "lvsd.server_action_taken"})

    def initial(self) -> LvsdState:
        return LvsdState()

    def decide(self, state: LvsdState, event: Event) -> tuple[LvsdState, list[Effect]]:
        out: list[Effect] = []
        t = event.type
        p = event.payload
        if t == "health.real_server_up":
            self._health(state, p, "UP", f"{p['virtual']}/{p['server']} up ({p['reason']})", out)
        elif t == "health.real_server_down":
            self._health(state, p, "DOWN", f"{p['virtual']}/{p['server']} down ({p['reason']}: {p['detail']})", out)
        elif t == "health.state_changed":
            self._health(state, p, p["new"], f"{p['virtual']}/{p['server']} {p['new']} ({p['reason']})", out)
        elif t == "health.weight_changed":
            self._weight(state, p, out)
        elif t == "config.loaded":
            self._config(state, p, out)
        elif t == "lvsd.started":
            state.live = True
            self._full(state, "started", out)
        elif t == "pulse.start_lvsd":
            state.live = True
            groups = p.get("groups")
            state.groups = None if groups is None else frozenset(groups)
            self._full(state, "start_lvsd", out)
        elif t == "pulse.stop_lvsd":
            state.live = False
        elif t == "operator.server_action":
            self._action(state, p, out)
        return state, out

    # -- health ------------------------------------------------------------------------------

    def _health(self, st: LvsdState, p: dict, new: str, reason: str, out: list) -> None:
        id_ = f"{p['virtual']}/{p['server']}"
        if id_ not in st.checks:
            return  # not (or no longer) in the config
        st.health[id_] = new
        if new in IN_SERVICE:
            st.been_in.add(id_)
        elif new == "INIT" or new == "DISABLED":
            st.been_in.discard(id_)  # its health starts over (a changed check, disabled): no history
        lay = st.layouts.get(p["virtual"])
        if lay is None:
            return  # an inactive virtual service
        self._update(st, lay, p, reason, out)

    def _weight(self, st: LvsdState, p: dict, out: list) -> None:
        """A dynamic_weight program set a server's weight (None: back to the configured one); the
        quorum still counts the configured weights (docs/nanny-lvsd.md)."""
        id_ = f"{p['virtual']}/{p['server']}"
        if id_ not in st.checks:
            return
        if p["weight"] is None:
            st.weights.pop(id_, None)
        else:
            st.weights[id_] = p["weight"]
        lay = st.layouts.get(p["virtual"])
        if lay is not None:
            shown = "the configured one" if p["weight"] is None else str(p["weight"])
            self._update(st, lay, p, f"{id_} weight {shown} (its check program)", out)

    def _update(self, st: LvsdState, lay: Layout, p: dict, reason: str, out: list) -> None:
        """The service ``lay`` after a change of one of its servers (health or operator): quorum
        folded; while live, the delta of its table entry."""
        was = st.quorum.get(lay.name)
        up = lay.quorum_up(st.health, was, st.admin)
        st.quorum[lay.name] = up
        if not st.live or not st.holds(lay):
            return  # folded (health, quorum); the next start (or the next start_lvsd holding its group) publishes it
        old = st.table.get(lay.key)
        entry = Entry(lay.service, lay.dests(st.health, up, st.been_in, st.admin, st.weights))
        ops = entry_ops(lay.key, old, entry)
        if not ops:
            return
        st.table = st.table.with_service(entry.service, entry.dests.values())
        if was is not None and was != up:
            reason += "; quorum " + ("back: real servers in" if up else "lost") + (
                ", sorry server " + ("out" if up else "in") if lay.sorry is not None else "")
        st.version += 1
        out.append(Effect("lvsd.table_delta", {
            "version": st.version, "base_version": st.version - 1, "ops": ops, "reason": reason[:512],
            "virtual": p["virtual"], "server": p["server"],
        }))

    # -- operator actions ---------------------------------------------------------------------

    _ADMIN = {"drain": "drained", "disable": "disabled", "enable": "enabled"}

    def _action(self, st: LvsdState, p: dict, out: list) -> None:
        id_ = f"{p['virtual']}/{p['server']}"
        want = self._ADMIN[p["action"]]
        answer = {"virtual": p["virtual"], "server": p["server"], "action": p["action"], "by": p["by"]}
        lay = st.layouts.get(p["virtual"])
        if lay is None or id_ not in {s[0] for s in lay.servers}:
            out.append(Effect("lvsd.server_action_taken", {**answer, "outcome": "unknown_server", "state": "enabled"}))
            return
        now = st.admin.get(id_, "enabled")
        if now == want:
            out.append(Effect("lvsd.server_action_taken", {**answer, "outcome": "unchanged", "state": now}))
            return
        if want == "enabled":
            del st.admin[id_]
        else:
            st.admin[id_] = want
        out.append(Effect("lvsd.server_action_taken", {**answer, "outcome": "applied", "state": want}))
        self._update(st, lay, p, f"{id_} {want} by {p['by']} ({p['via']})", out)

    # -- config and full tables ---------------------------------------------------------------

    def _config(self, st: LvsdState, p: dict, out: list) -> None:
        try:
            cfg = from_dict(p["model"])
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            st.bad_config += 1
            out.append(Effect("lvsd.config_rejected", {"error": str(exc)[:1024], "count": st.bad_config}))
            return
        self._apply_config(st, cfg, p["model"], p["digest"])
        self._full(st, "config", out)

    @staticmethod
    def _apply_config(st: LvsdState, cfg: Config, model: dict, digest: str) -> None:
        checks = {}
        for pc in plan(cfg):
            checks[pc.id] = (pc.address, pc.probe, pc.check)
        # a pair whose check changed starts over in nanny (INIT): forget its health here too
        health = {i: s for i, s in st.health.items() if i in checks and st.checks.get(i) == checks[i]}
        st.checks, st.health = checks, health
        st.weights = {i: w for i, w in st.weights.items() if i in health}  # nanny drops it with the old check
        st.been_in = {i for i in st.been_in if i in health}
        # an operator's drain or disable outlives a reload while the server is still configured
        st.admin = {i: a for i, a in st.admin.items() if i in checks}
        # service = fos: no virtual service is used, the desired table is empty (no IPVS at all)
        st.layouts = {vs.name: Layout(vs, cfg.scaleout is not None) for vs in cfg.lvs_services() if vs.active}
        st.quorum = {n: q for n, q in st.quorum.items() if n in st.layouts}
        st.model, st.digest = model, digest

    def build(self, st: LvsdState) -> Table:
        entries = {}
        for lay in st.layouts.values():
            up = lay.quorum_up(st.health, st.quorum.get(lay.name), st.admin)
            st.quorum[lay.name] = up
            if st.holds(lay):
                entries[lay.key] = Entry(lay.service, lay.dests(st.health, up, st.been_in, st.admin, st.weights))
        return Table(entries)

    def _full(self, st: LvsdState, reason: str, out: list) -> None:
        if st.model is None:
            return  # no config yet: nothing to desire (the applier leaves the kernel alone)
        st.table = self.build(st)
        if not st.live:
            return
        st.version += 1
        out.append(Effect("lvsd.table_desired", {
            "version": st.version, "table": st.table.to_dict(), "reason": reason, "digest": st.digest,
            "services": len(st.table), "dests": sum(len(e.dests) for _k, e in st.table.items()),
        }))

    # -- snapshots --------------------------------------------------------------------------------
    # version 2: "admin" (operator drains and disables); a version-1 snapshot had none
    # version 3: "groups" (the failover groups held); an older snapshot held every one (None)
    # version 4: "weights" (dynamic weights from nanny's programs); an older snapshot had none

    snapshot_version = 4
    snapshot_upcasters = {1: lambda data: {**data, "admin": {}}, 2: lambda data: {**data, "groups": None},
                          3: lambda data: {**data, "weights": {}}}

    def snapshot(self, st: LvsdState) -> Any:
        return {"digest": st.digest, "model": st.model, "health": dict(st.health), "quorum": dict(st.quorum),
                "table": st.table.to_dict(), "version": st.version, "bad_config": st.bad_config, "live": st.live,
                "been_in": sorted(st.been_in), "admin": dict(st.admin),
                "groups": None if st.groups is None else sorted(st.groups), "weights": dict(st.weights)}

    def restore(self, data: Any) -> LvsdState:
        st = LvsdState()
        if data["model"] is not None:
            self._apply_config(st, from_dict(data["model"]), data["model"], data["digest"])
        st.health = dict(data["health"])
        st.quorum = dict(data["quorum"])
        st.table = Table.from_dict(data["table"])
        st.version, st.bad_config, st.live = data["version"], data["bad_config"], data["live"]
        # a snapshot from before been_in was kept: a server in service now has been in
        st.been_in = set(data.get("been_in", (i for i, s in st.health.items() if s in IN_SERVICE)))
        st.admin = {i: a for i, a in data["admin"].items() if i in st.checks}
        st.groups = None if data["groups"] is None else frozenset(data["groups"])
        st.weights = {i: w for i, w in data["weights"].items() if i in st.checks}
        return st
