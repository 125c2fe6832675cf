"""The bgp core: which VIPs this router announces by BGP, and how (docs/scaleout.md).

Inputs (recorded events): ``config.loaded`` (``[scaleout]`` and the virtual services), nanny's
health verdicts (``health.real_server_up``/``_down``/``state_changed``) and the operator's server
actions (``operator.server_action``), folded into each virtual service's quorum with lvsd's own
policy (``lvsbus_services.lvsd.core.Layout``); pulse's ``router.role_changed`` (the router's
health); ``router.shutdown_requested``; and what the speaker reports: ``bgp.speaker_started``,
``bgp.routes_applied``.

A VIP is *announced* while

* the config has ``[scaleout]``, and the VIP is the address of an active virtual service;
* pulse has reported a role and it is not FAULT or STOPPED (the router can serve);
* every active virtual service on that address has quorum here (a VIP carrying port 80 and 443
  is withdrawn when either is below quorum: the upstream would otherwise send this router flows
  it cannot serve; the other routers keep announcing it);
* the router is not stopping (a graceful stop drains a VIP announced then for ``drain_time``,
  unless it loses quorum meanwhile).

An operator's drain (``operator.bgp_drain``, ``lvsbus bgp drain``) announces every VIP that would
be announced with GRACEFUL_SHUTDOWN instead, until ``resume`` (or the router restarts); the core
answers it with ``bgp.drain_taken``.

A graceful stop (``router.shutdown_requested`` with ``graceful``) first *drains*: every announced
VIP is re-announced with the GRACEFUL_SHUTDOWN community (RFC 8326: the upstream lowers its
preference, so its ECMP set loses this router while the route is still there), for the config's
``drain_time``; a ``timer.fired`` then withdraws them all. A stop that is not graceful withdraws
at once.

Outputs: ``bgp.vip_changed`` for each VIP whose state changed, then one ``bgp.set_routes`` with
the whole route set (idempotent: the shell hands the speaker exactly that set). The route set is
sent again when the speaker (re)starts (``bgp.speaker_started``), and after the shell reports that
the speaker did not take it (``bgp.routes_applied`` not ok): 1 s later, then 2, 4... at most 30 s
while it keeps refusing. Session changes (``bgp.session_changed``) are not an input: they
change no announcement (a route is announced to every peer whose session is up, by the
speaker); status and metrics read them from the log.

Sans-IO, deterministic: "now" is the event's ``mono_ns``.
"""
from __future__ import annotations

from typing import Any

from lvsbus.config import ConfigError, from_dict
from lvsbus.config.model import Config, ip_family
from lvsbus.runtime.core import Core, Effect
from lvsbus.wire.events import Event
from lvsbus_services.lvsd.core import IN_SERVICE, Layout

SERVING_ROLES = frozenset({"ACTIVE", "BACKUP"})
RETRY_NS = 1_000_000_000  # the first retry of a refused route set; doubling to RETRY_MAX_NS
RETRY_MAX_NS = 30_000_000_000
#: a speaker adopted from an earlier run keeps its routes at most this long while this run's
#: decision is not known yet (a router restart must not take it out of the upstream's set)
SETTLE_NS = 10_000_000_000
__all__ = ["BgpCore", "BgpState", "IN_SERVICE"]


def _host_prefix(address: str) -> int:
    """A VIP is announced as a host route: /32, /128."""
    return 32 if ip_family(address) == 4 else 128


class BgpState:
    __slots__ = ("enabled", "drain_ns", "vips", "layouts", "health", "admin", "quorum", "role", "stopping",
                 "drain_until", "routes", "version", "retry_at", "bad_config", "digest", "model",
                 "drained", "failures", "settle_until")

    def __init__(self) -> None:
        self.enabled = False  # [scaleout] in the config in force
        self.drain_ns = 0
        self.vips: dict[str, list[str]] = {}  # address -> the active virtual services on it
        self.layouts: dict[str, Layout] = {}
        self.health: dict[str, str] = {}  # "virtual/server" -> nanny's state
        self.admin: dict[str, str] = {}  # "virtual/server" -> drained | disabled
        self.quorum: dict[str, bool] = {}  # virtual name -> quorum up
        self.role: str | None = None  # pulse's last role (None: not reported yet)
        self.stopping: str | None = None  # None, "drain" (graceful, until drain_until), "stop"
        self.drain_until: int | None = None
        self.routes: dict[str, str] = {}  # address -> announce | drain (absent: withdrawn)
        self.version = 0
        self.retry_at: int | None = None
        self.failures = 0  # route sets refused in a row (the retry delay doubles with each)
        self.bad_config = 0
        self.digest = ""
        self.model: dict | None = None
        self.drained = False  # an operator's drain (operator.bgp_drain), until resume or a router restart
        # an adopted speaker's routes are left as they are until this run's decision is known (the
        # role and every VIP's quorum) or until this time: no route set is sent meanwhile
        self.settle_until: int | None = None


class BgpCore(Core[BgpState]):
    name = "bgp"
    inputs = ("config.loaded", "health.real_server_up", "health.real_server_down", "health.state_changed",
              "operator.server_action", "router.role_changed", "router.shutdown_requested",
              "bgp.speaker_started", "bgp.routes_applied", "operator.bgp_drain")
    outputs = frozenset({"bgp.vip_changed", "bgp.set_routes", "bgp.config_rejected", "bgp.drain_taken"})

    def initial(self) -> BgpState:
        return BgpState()

    def next_deadline(self, state: BgpState) -> int | None:
        times = [t for t in (state.drain_until, state.retry_at, state.settle_until) if t is not None]
        return min(times) if times else None

    def decide(self, state: BgpState, event: Event) -> tuple[BgpState, list[Effect]]:
        st, p, t = state, event.payload, event.type
        out: list[Effect] = []
        why = ""
        resend = False
        if t == "config.loaded":
            if not self._config(st, p, out):
                return st, out
            why = "config"
        elif t in ("health.real_server_up", "health.real_server_down", "health.state_changed"):
            new = {"health.real_server_up": "UP", "health.real_server_down": "DOWN"}.get(t) or p["new"]
            id_ = f"{p['virtual']}/{p['server']}"
            if p["virtual"] not in st.layouts:
                return st, out
            st.health[id_] = new
            why = f"{id_} {new}"
        elif t == "operator.server_action":
            id_ = f"{p['virtual']}/{p['server']}"
            lay = st.layouts.get(p["virtual"])
            if lay is None or id_ not in {s[0] for s in lay.servers}:
                return st, out
            if p["action"] == "enable":
                st.admin.pop(id_, None)
            else:
                st.admin[id_] = {"drain": "drained", "disable": "disabled"}[p["action"]]
            why = f"{id_} {p['action']} by {p['by']}"
        elif t == "router.role_changed":
            st.role = p["new"]
            why = f"role {p['new']} ({p['reason']})"
        elif t == "router.shutdown_requested":
            if st.stopping == "stop" or (st.stopping == "drain" and p["graceful"]):
                return st, out
            if p["graceful"] and st.drain_ns > 0 and st.routes:
                st.stopping = "drain"
                st.drain_until = event.mono_ns + st.drain_ns
                why = "shutdown: drain"
            else:
                st.stopping, st.drain_until = "stop", None
                why = "shutdown"
        elif t == "timer.fired":
            now = event.mono_ns
            if st.settle_until is not None and now >= st.settle_until:
                why = "adopted speaker: settling time over"
            if st.drain_until is not None and now >= st.drain_until:
                st.stopping, st.drain_until = "stop", None
                why = "shutdown: drained"
            if st.retry_at is not None and now >= st.retry_at:
                st.retry_at = None
                resend = True
                why = why or "retry"
        elif t == "bgp.speaker_started":
            st.retry_at, st.failures = None, 0
            why = f"speaker started ({p['speaker']} {p['version']})"
            if p.get("adopted", False) and st.version == 0:  # (a v1 record: not adopted)
                # a new run found the speaker an earlier run left announcing: keep its routes until
                # this run knows what to announce (_settled), not an empty set at once
                st.settle_until = event.mono_ns + SETTLE_NS
                why = f"speaker adopted ({p['speaker']} {p['version']})"
            else:
                resend = True
        elif t == "operator.bgp_drain":
            want = p["action"] == "drain"
            outcome = "not_scaleout" if not st.enabled else ("unchanged" if st.drained == want else "applied")
            if outcome == "applied":
                st.drained = want
            out.append(Effect("bgp.drain_taken", {"action": p["action"], "by": p["by"], "outcome": outcome,
                                                  "vips": len(st.routes)}))
            if outcome != "applied":
                return st, out
            why = f"{p['action']} by {p['by']} ({p['via']})"
        elif t == "bgp.routes_applied":
            if p["ok"]:
                st.failures = 0
            elif p["version"] == st.version and st.retry_at is None:
                st.retry_at = event.mono_ns + min(RETRY_NS << min(st.failures, 5), RETRY_MAX_NS)
                st.failures += 1
            return st, out
        self._decide(st, why, resend, out, event.mono_ns)
        return st, out

    # -- the decision ------------------------------------------------------------------------

    def _quorum(self, st: BgpState, name: str) -> bool:
        lay = st.layouts[name]
        up = lay.quorum_up(st.health, st.quorum.get(name), st.admin)
        st.quorum[name] = up
        return up

    def wanted(self, st: BgpState) -> dict[str, tuple[str, str, list[str]]]:
        """address -> (state, reason, virtuals) for every VIP of the config (and every VIP still
        announced: one a reload removed is withdrawn with the reason config)."""
        out: dict[str, tuple[str, str, list[str]]] = {}
        for addr, names in st.vips.items():
            down = [n for n in names if not self._quorum(st, n)]
            if st.stopping == "stop" or (st.stopping == "drain" and addr not in st.routes):
                out[addr] = ("withdraw", "shutdown", names)
            elif st.stopping == "drain":  # pulse is STOPPED by now: only quorum still counts
                out[addr] = ("withdraw", "quorum_lost", down) if down else ("drain", "shutdown_drain", names)
            elif st.role not in SERVING_ROLES:
                out[addr] = ("withdraw", "router_unhealthy", names)
            elif down:
                out[addr] = ("withdraw", "quorum_lost", down)
            elif st.drained:
                out[addr] = ("drain", "operator_drain", names)
            else:
                out[addr] = ("announce", "serving", names)
        for addr in st.routes:
            if addr not in out:
                out[addr] = ("withdraw", "config", [])
        return out

    def _settled(self, st: BgpState, now: int) -> bool:
        """Whether this run knows what to announce: pulse's role is known and every VIP's quorum
        is (up, or every real server of its services has a verdict); or it is stopping; or the
        settling time is over."""
        if st.stopping is not None or st.settle_until is None or now >= st.settle_until:
            return True
        if st.role is None:
            return False
        for names in st.vips.values():
            for name in names:
                lay = st.layouts[name]
                if not self._quorum(st, name) and any(s[0] not in st.health for s in lay.servers):
                    return False
        return True

    def _decide(self, st: BgpState, why: str, resend: bool, out: list[Effect], now: int = 0) -> None:
        changed = False
        for addr, (new, reason, names) in self.wanted(st).items():
            old = st.routes.get(addr, "withdraw")
            if new == old:
                continue
            out.append(Effect("bgp.vip_changed", {"address": addr, "prefixlen": _host_prefix(addr), "old": old, "new": new,
                                                  "reason": reason, "virtuals": names}))
            if new == "withdraw":
                del st.routes[addr]
            else:
                st.routes[addr] = new
            changed = True
        if st.settle_until is not None:
            if not self._settled(st, now):
                return  # the adopted speaker keeps its routes meanwhile
            st.settle_until = None
            resend = True
            why = f"settled: {why}"
        if not (changed or (resend and (st.enabled or st.version))):
            return
        st.version += 1
        st.retry_at = None
        routes = [{"address": a, "prefixlen": _host_prefix(a), "state": s} for a, s in sorted(st.routes.items())]
        out.append(Effect("bgp.set_routes", {"version": st.version, "routes": routes, "reason": why[:256]}))

    # -- config ------------------------------------------------------------------------------

    def _config(self, st: BgpState, p: dict, out: list[Effect]) -> bool:
        try:
            cfg = from_dict(p["model"])
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            st.bad_config += 1
            out.append(Effect("bgp.config_rejected", {"error": str(exc)[:1024], "count": st.bad_config}))
            return False
        self._apply(st, cfg, p["model"], p["digest"])
        return True

    @staticmethod
    def _apply(st: BgpState, cfg: Config, model: dict, digest: str) -> None:
        so = cfg.scaleout
        st.enabled = so is not None
        st.drain_ns = int(so.drain_time * 1e9) if so is not None else 0
        st.layouts, st.vips = {}, {}
        if so is not None:
            for vs in cfg.lvs_services():
                if not vs.active:
                    continue
                st.layouts[vs.name] = Layout(vs)
                st.vips.setdefault(vs.address, []).append(vs.name)
        ids = {s[0] for lay in st.layouts.values() for s in lay.servers}
        st.health = {i: s for i, s in st.health.items() if i in ids}
        st.admin = {i: a for i, a in st.admin.items() if i in ids}
        st.quorum = {n: q for n, q in st.quorum.items() if n in st.layouts}
        st.model, st.digest = model, digest

    # -- snapshots ---------------------------------------------------------------------------

    snapshot_version = 3
    snapshot_upcasters = {1: lambda data: {k: v for k, v in data.items() if k != "sessions"},  # was dead state
                          2: lambda data: {**data, "settle_until": None}}

    def snapshot(self, st: BgpState) -> Any:
        return {"model": st.model, "digest": st.digest, "health": dict(st.health), "admin": dict(st.admin),
                "quorum": dict(st.quorum), "role": st.role, "stopping": st.stopping,
                "drain_until": st.drain_until, "routes": dict(st.routes), "version": st.version,
                "retry_at": st.retry_at, "bad_config": st.bad_config,
                "drained": st.drained, "failures": st.failures, "settle_until": st.settle_until}

    def restore(self, data: Any) -> BgpState:
        st = BgpState()
        if data["model"] is not None:
            self._apply(st, from_dict(data["model"]), data["model"], data["digest"])
        st.health, st.admin, st.quorum = dict(data["health"]), dict(data["admin"]), dict(data["quorum"])
        st.role, st.stopping, st.drain_until = data["role"], data["stopping"], data["drain_until"]
        st.routes, st.version = dict(data["routes"]), data["version"]
        st.retry_at, st.bad_config, st.drained = data["retry_at"], data["bad_config"], data["drained"]
        st.failures, st.settle_until = data["failures"], data["settle_until"]
        return st
