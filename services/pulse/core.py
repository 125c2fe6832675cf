"""pulse's pure core: the role FSM (INIT, BACKUP, ACTIVE, FAULT, STOPPED) of each failover group,
peer tracking per (peer, link), the election among N routers, fencing, split-brain resolution and
preemption.

Failover groups (``[group.NAME]``, keepalived's VRRP instances): each election UNIT (a group, or the
groups of one sync group, elected as one) has its own role machine (``Unit``), priorities,
preemption, tracking, VIPs and failover services, so two routers can each be active for a
different group. What is about the peer itself (is it alive, on which links, its epoch and
sequence numbers) is shared by the units; one heartbeat carries every group's role and priority. A
config without groups has one unit, ``default``, holding every VIP: the router of before groups.

Sans-IO: no socket, no clock, no randomness, no logging. "Now" is ``event.mono_ns``; the core asks
for a ``timer.fired`` with ``next_deadline``. Inputs (recorded events): ``config.loaded``,
``pulse.started``, ``pulse.heartbeat_received``, ``pulse.fence_received``, ``pulse.link_changed``,
``router.shutdown_requested``, ``operator.handover_requested``, ``timer.fired``. Outputs: decisions (``router.role_changed``,
``pulse.peer_dead``...) and effects for the shell (``pulse.send_heartbeat``, ``pulse.take_vips``...),
declared in ``lvsbus/wire/catalog/pulse.py``. The rules are written down in docs/pulse.md.

The role table is data (``ROLE_STATES``, ``ROLE_TRANSITIONS``) driving one shared ``transitions``
Machine built at import; a trigger is fired only when the role changes (heartbeats that change
nothing never touch the Machine). ``role_fsm_dot()`` renders the same data as Graphviz dot.

The state is mutated in place and returned (the core loop owns it); ``snapshot``/``restore`` copy it.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from transitions import Machine, MachineError

from lvsbus.config import Config, from_dict
from lvsbus.config.model import DEFAULT_GROUP, Track, TrackKind, VirtualService
from lvsbus.config.derive import config_vips
from lvsbus.runtime.core import Core, Effect
from lvsbus.wire.events import Event
from lvsbus_services.pulse import tracking
from lvsbus_services.pulse.tracking import TrackSpec

# ---------------------------------------------------------------------------------------------
# the role FSM, as data: the one place the transition table lives

INIT, BACKUP, ACTIVE, FAULT, STOPPED = "INIT", "BACKUP", "ACTIVE", "FAULT", "STOPPED"
ROLE_STATES: tuple[str, ...] = (INIT, BACKUP, ACTIVE, FAULT, STOPPED)
#: the decision rules this code runs, recorded in ``pulse.started`` (v3) so that a log replays under
#: the rules it was decided by: 2, every record before the field; 3, a router leaving ACTIVE for
#: FAULT tells its peers at once with a FAULT heartbeat (``_step_down``); 4, a split brain is
#: resolved again when a router's rank changes during it (tracking moves priorities at run time:
#: two routers that resolved it with different views of each other's priority both stayed active)
#: 5, a listen ends early once every peer has been heard since it began (each peer's role and
#: priority in the unit are known then: waiting the rest of deadtime learns nothing more)
RULES = 5
#: the unit of a config without failover groups, and the group of every VIP naming none
DEFAULT = DEFAULT_GROUP
#: scale-out's graceful stop: after the bgp core's drain_time it withdraws the VIPs; pulse keeps
#: them (and lvsd) this much longer, for the withdrawal to reach the upstream and its last packets
SCALEOUT_WITHDRAW_S = 1.0

#: (trigger, sources, dest, conditions (model method names, all must hold), what fires it)
ROLE_TRANSITIONS: tuple[tuple[str, tuple[str, ...], str, tuple[str, ...], str], ...] = (
    ("start", (INIT,), BACKUP, ("has_config", "has_started"),
     "config.loaded and pulse.started both seen; listen for deadtime"),
    ("take_over", (BACKUP,), ACTIVE, ("done_listening", "can_serve"),
     "best live candidate and no live active peer (peer dead, left or stepped down), "
     "or outranks the active peer with preempt on for preempt_delay"),
    ("step_down", (ACTIVE,), BACKUP, (),
     "valid fence received, split brain lost to a higher (priority, address), "
     "or a failover service failed here (service = fos)"),
    ("fault", (BACKUP, ACTIVE), FAULT, ("faulty",),
     "the public link (where the VIPs live) is down, or every heartbeat link is, or a tracked item "
     "with weight 0 failed"),
    ("recover", (FAULT,), BACKUP, ("can_serve",),
     "the links are up and every weight-0 tracked item is fine again; listen for deadtime again"),
    ("stop", (INIT, BACKUP, ACTIVE, FAULT), STOPPED, (),
     "router.shutdown_requested (a final leaving heartbeat hands over at once)"),
    ("restart", (BACKUP, ACTIVE, FAULT, STOPPED), INIT, (),
     "pulse.started after STOPPED, or with a monotonic clock that went back (a reboot): start over"),
)

MACHINE = Machine(
    model=[],
    states=list(ROLE_STATES),
    transitions=[
        {"trigger": t, "source": list(src), "dest": dst, "conditions": list(cond)}
        for t, src, dst, cond, _doc in ROLE_TRANSITIONS
    ],
    initial=INIT,
    auto_transitions=False,
    model_attribute="role",
)


def role_fsm_dot() -> str:
    """The role table as Graphviz dot text (``lvsbus fsm router --dot``), from ROLE_TRANSITIONS."""
    out = [
        "digraph pulse_role {",
        "  rankdir=LR;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
        "  __start [shape=point];",
        f"  __start -> {INIT};",
    ]
    for s in ROLE_STATES:
        extra = ", peripheries=2" if s == STOPPED else ""
        out.append(f'  {s} [label="{s}"{extra}];')
    for trigger, sources, dest, conds, _doc in ROLE_TRANSITIONS:
        label = trigger + (f"\\n[{' and '.join(conds)}]" if conds else "")
        for src in sources:
            out.append(f'  {src} -> {dest} [label="{label}"];')
    out.append("}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# settings: what pulse needs from the config model

LINKS = ("public", "private")
_NS = 1_000_000_000
_NOTIFY_STATE = {ACTIVE: "MASTER", BACKUP: "BACKUP", FAULT: "FAULT", STOPPED: "STOP"}


def _addr_key(address: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(address)
    return (ip.version, int(ip))


@dataclass(frozen=True, slots=True)
class RouterInfo:
    name: str
    address: str
    private_address: str | None
    priority: int

    def address_on(self, link: str) -> str | None:
        return self.address if link == "public" else self.private_address


@dataclass(frozen=True, slots=True)
class Vip:
    address: str
    prefixlen: int
    family: str
    device: str | None
    label: str | None
    owner: str

    def payload(self) -> dict:
        return {
            "address": self.address, "prefixlen": self.prefixlen, "family": self.family,
            "device": self.device, "label": self.label, "owner": self.owner,
        }


@dataclass(frozen=True, slots=True)
class UnitSettings:
    """One election unit: a failover group, or the groups of one sync group (elected as one). Its
    name is its first group's."""

    name: str
    groups: tuple[str, ...]
    vips: tuple[Vip, ...]
    #: the unit's configured priority on each router (a sync group's: its lowest member's)
    priorities: tuple[tuple[str, int], ...]
    preempt: bool = True
    preempt_delay_ns: int = 0
    active_cmd: str | None = None
    inactive_cmd: str | None = None
    notify_cmd: str | None = None
    #: service = fos: its active failover services, (name, start_cmd, stop_cmd, timeout_ns, reentry_ns)
    failover: tuple[tuple[str, str, str, int, int], ...] = ()
    #: this router's tracked items that move this unit ([track.NAME]): services/pulse/tracking.py
    tracks: tuple[TrackSpec, ...] = ()
    #: run on entering FAULT (keepalived's notify_fault)
    fault_cmd: str | None = None

    def priority_of(self, router: str) -> int:
        for name, prio in self.priorities:
            if name == router:
                return prio
        raise KeyError(router)

    def to_plain(self) -> list:
        return [self.name, list(self.groups), [[v.address, v.prefixlen, v.family, v.device, v.label, v.owner]
                                               for v in self.vips],
                [list(p) for p in self.priorities], self.preempt, self.preempt_delay_ns, self.active_cmd,
                self.inactive_cmd, self.notify_cmd, [list(f) for f in self.failover], [list(t) for t in self.tracks],
                self.fault_cmd]

    @classmethod
    def from_plain(cls, d: list) -> UnitSettings:
        return cls(d[0], tuple(d[1]), tuple(Vip(*v) for v in d[2]), tuple((p[0], p[1]) for p in d[3]), d[4], d[5],
                   d[6], d[7], d[8], tuple(tuple(f) for f in d[9]), tuple(TrackSpec.from_plain(t) for t in d[10]),  # type: ignore[misc]
                   d[11] if len(d) > 11 else None)  # settings from before fault_cmd have none


@dataclass(frozen=True, slots=True)
class PulseSettings:
    local: str
    routers: tuple[RouterInfo, ...]
    units: tuple[UnitSettings, ...]
    port: int = 539
    heartbeat_enabled: bool = True
    keepalive_ns: int = 2 * _NS
    deadtime_ns: int = 5 * _NS
    garp_repeat: int = 5
    garp_refresh_ns: int = 0
    garp_interval_ms: int = 200
    notify_timeout_ms: int = 30_000
    #: scale-out ([scaleout], docs/scaleout.md): every router active for every unit, no election,
    #: no fence, no ARP; a graceful stop keeps the VIPs and lvsd this long (the bgp core's
    #: drain_time and a second for the withdrawal to reach the upstream) before it releases them
    scaleout: bool = False
    scaleout_stop_ns: int = 0
    # derived once (settings are immutable): asked for on every event and every heartbeat
    _me: RouterInfo | None = field(default=None, init=False, repr=False, compare=False)
    _dests: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_me", next((r for r in self.routers if r.name == self.local), None))
        if self._me is not None:
            object.__setattr__(self, "_dests", tuple(self._destinations(None)))

    @property
    def me(self) -> RouterInfo:
        if self._me is None:  # pragma: no cover - the adapter guarantees it
            raise KeyError(self.local)
        return self._me

    @property
    def vips(self) -> tuple[Vip, ...]:
        """Every VIP of every unit (a restarted shell's reconciliation, tests)."""
        return tuple(v for u in self.units for v in u.vips)

    @property
    def grouped(self) -> bool:
        """More than the default group: heartbeats and fences name the groups (wire version 2)."""
        return not (len(self.units) == 1 and self.units[0].groups == (DEFAULT,))

    def unit(self, name: str) -> UnitSettings | None:
        for u in self.units:
            if u.name == name:
                return u
        return None

    def router(self, name: str) -> RouterInfo | None:
        for r in self.routers:
            if r.name == name:
                return r
        return None

    def local_links(self) -> tuple[str, ...]:
        return ("public", "private") if self.me.private_address else ("public",)

    def pair_links(self, peer: RouterInfo) -> tuple[str, ...]:
        """The links a heartbeat to/from ``peer`` travels: public, and private when both have one."""
        if self.me.private_address and peer.private_address:
            return ("public", "private")
        return ("public",)

    def destinations(self, only: str | None = None) -> list[dict]:
        """Where a heartbeat (or, with ``only``, a fence) goes: one entry per peer and link.
        The dicts are shared between calls: treat them as read-only."""
        if only is None:
            return list(self._dests)
        return self._destinations(only)

    def _destinations(self, only: str | None) -> list[dict]:
        me = self.me
        out = []
        for r in self.routers:
            if r.name == self.local or (only is not None and r.name != only):
                continue
            for link in self.pair_links(r):
                out.append({
                    "peer": r.name, "link": link, "address": r.address_on(link),
                    "local_address": me.address_on(link),
                })
        return out

    def to_plain(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        d["routers"] = [[r.name, r.address, r.private_address, r.priority] for r in self.routers]
        d["units"] = [u.to_plain() for u in self.units]
        return d

    @classmethod
    def from_plain(cls, d: dict) -> PulseSettings:
        d = dict(d)
        d["routers"] = tuple(RouterInfo(*r) for r in d["routers"])
        d["units"] = tuple(UnitSettings.from_plain(u) for u in d["units"])
        return cls(**d)


def _upcast_settings_8(d: dict) -> dict:
    """A snapshot's settings from before failover groups (one set of VIPs, failover services and
    tracked items, the heartbeat's preemption and notify commands): one ``default`` unit."""
    d = dict(d)
    unit = [DEFAULT, [DEFAULT], d.pop("vips"), [[r[0], r[3]] for r in d["routers"]], d.pop("preempt"),
            d.pop("preempt_delay_ns"), d.pop("active_cmd"), d.pop("inactive_cmd"), d.pop("notify_cmd"),
            d.pop("failover", []), d.pop("tracks", [])]
    d["units"] = [unit]
    return d


def _ns(seconds: Any, what: str, minimum: float = 0.0) -> int:
    if type(seconds) not in (int, float) or seconds != seconds or seconds < minimum:
        raise ValueError(f"{what} must be a number of seconds >= {minimum}, got {seconds!r}")
    return int(round(seconds * _NS))


def _settings_from_config(payload: dict) -> PulseSettings:
    """pulse's settings from a ``config.loaded`` payload: ``model`` is ``lvsbus.config.to_dict(cfg)``,
    rebuilt (and re-validated) with ``lvsbus.config.from_dict``; ``local_router`` names this router.
    Raises ValueError (ConfigError is one) or KeyError/TypeError for something unusable."""
    return _settings_from_model(from_dict(payload["model"]), payload["local_router"])


def _in_group(group: str | None, name: str) -> bool:
    return (group or DEFAULT) == name


def _unit_vips(cfg: Config, groups: tuple[str, ...], device: str | None) -> tuple[Vip, ...]:
    """The VIPs of the services (and nat_router) of ``groups``, as ``config_vips`` derives them."""
    part = dataclasses.replace(
        cfg,
        virtual_services=tuple(v for v in cfg.virtual_services if (v.group or DEFAULT) in groups),
        failover_services=tuple(f for f in cfg.failover_services if (f.group or DEFAULT) in groups),
        nat_router=cfg.nat_router if cfg.nat_router is not None and (cfg.nat_router.group or DEFAULT) in groups
        else None,
    )
    return tuple(Vip(v.address, v.prefixlen, v.family, v.device, v.label, ",".join(v.owners)[:256])
                 for v in config_vips(part, device))


def _moves(t: Track, groups: list[str], virtuals: dict[str, VirtualService]) -> bool:
    """Whether tracked item ``t`` moves a unit of ``groups``: those it names; without, every group,
    but a service's only its virtual service's group."""
    if t.groups:
        return bool(set(t.groups) & set(groups))
    if t.kind is TrackKind.SERVICE:
        vs = virtuals.get(t.virtual or "")
        return vs is not None and (vs.group or DEFAULT) in groups
    return True


def _units(cfg: Config, local: str, device: str | None) -> tuple[UnitSettings, ...]:
    """The election units, in the order of the groups (``Config.group_names``): a group alone, or
    the groups of one sync group together (at its first member's place)."""
    hb, nt = cfg.heartbeat, cfg.notify
    members: dict[str, list[str]] = {}  # unit name -> its groups
    by_sync: dict[str, str] = {}
    for name in cfg.group_names():
        sync = cfg.group(name).sync_group
        if sync is not None and sync in by_sync:
            members[by_sync[sync]].append(name)
            continue
        if sync is not None:
            by_sync[sync] = name
        members[name] = [name]
    units = []
    virtuals = {vs.name: vs for vs in cfg.lvs_services()}
    for name, groups in members.items():
        gs = [cfg.group(g) for g in groups]
        first = gs[0]
        prios = tuple((r.name, min(g.priority_on(r) for g in gs)) for r in cfg.routers)
        fos = tuple(
            (fs.name, fs.start_cmd or "", fs.stop_cmd or "", _ns(fs.timeout, f"failover.{fs.name}.timeout"),
             _ns(fs.reentry, f"failover.{fs.name}.reentry"))
            for fs in cfg.fos_services() if fs.active and (fs.group or DEFAULT) in groups
        )
        tracks = tracking.specs([t for t in cfg.tracks if _moves(t, groups, virtuals)], local, virtuals)
        preempt = first.preempt if first.preempt is not None else hb.preempt
        delay = first.preempt_delay if first.preempt_delay is not None else hb.preempt_delay
        units.append(UnitSettings(
            name=name, groups=tuple(groups), vips=_unit_vips(cfg, tuple(groups), device), priorities=prios,
            preempt=bool(preempt), preempt_delay_ns=_ns(delay, f"group.{name}.preempt_delay"),
            active_cmd=next((g.active_cmd for g in gs if g.active_cmd), None) or nt.active_cmd or None,
            inactive_cmd=next((g.inactive_cmd for g in gs if g.inactive_cmd), None) or nt.inactive_cmd or None,
            notify_cmd=next((g.notify for g in gs if g.notify), None) or nt.notify or None,
            failover=fos, tracks=tracks, fault_cmd=next((g.fault_cmd for g in gs if g.fault_cmd), None),
        ))
    return tuple(units)


def _settings_from_model(cfg: Config, local: str) -> PulseSettings:
    """What pulse reads of the model: ``routers[].{name, address, private_address, priority,
    device}``, ``heartbeat.{enabled, port, keepalive, deadtime, preempt, preempt_delay, garp_repeat,
    garp_refresh}``, ``notify.{active_cmd, inactive_cmd, notify}``, the active
    ``virtual_services[]`` and ``failover_services[]`` ``.{name, address, device, label,
    vip_prefixlen, group}``, ``nat_router.{address, device, label, prefixlen, group}``, ``groups[]``
    and ``tracks[]``."""
    me = cfg.router(local)
    if me is None:
        raise ValueError(f"local router {local!r} is not among the configured routers "
                         f"{[r.name for r in cfg.routers]}")
    routers = tuple(
        RouterInfo(r.name, str(ipaddress.ip_address(r.address)),
                   str(ipaddress.ip_address(r.private_address)) if r.private_address else None, int(r.priority))
        for r in cfg.routers
    )
    if len({r.name for r in routers}) != len(routers):
        raise ValueError("a router is listed twice")
    hb, nt = cfg.heartbeat, cfg.notify
    keepalive = _ns(hb.keepalive, "heartbeat.keepalive", 0.001)
    deadtime = _ns(hb.deadtime, "heartbeat.deadtime", 0.001)
    if deadtime < keepalive:
        raise ValueError("heartbeat.deadtime must be at least heartbeat.keepalive")
    return PulseSettings(
        local=local,
        routers=routers,
        # service = lvs: the virtual services' VIPs and nat_router's; service = fos: the failover services'
        units=_units(cfg, local, me.device),
        port=int(hb.port),
        heartbeat_enabled=bool(hb.enabled),
        keepalive_ns=keepalive,
        deadtime_ns=deadtime,
        garp_repeat=max(1, int(hb.garp_repeat)),
        garp_refresh_ns=_ns(hb.garp_refresh or 0.0, "heartbeat.garp_refresh"),
        # not in the model (yet): the pause between repeated ARPs and the notify timeout
        garp_interval_ms=_ns(getattr(hb, "garp_interval", 0.2), "heartbeat.garp_interval") // 1_000_000,
        notify_timeout_ms=_ns(getattr(nt, "timeout", 30.0), "notify.timeout") // 1_000_000,
        scaleout=cfg.scaleout is not None,
        scaleout_stop_ns=_ns(cfg.scaleout.drain_time + SCALEOUT_WITHDRAW_S, "scaleout.drain_time")
        if cfg.scaleout is not None else 0,
    )


# -- the shell's decisions, pure: the real shell and the simulator (tools/simulate.py) call these

TAKE, RELEASE = "take", "release"


def grow_epoch(last: int, wall_s: float) -> int:
    """pulse's boot epoch for a new start (``pulse.started``), from the last one stored and the
    wall clock (seconds): ``max(last + 1, wall seconds)``. It always grows, even when the wall clock
    went back; and it starts above every epoch the peers heard when the stored one was lost."""
    return max(last + 1, int(wall_s))


def started_payload(epoch: int, hostname: str, addresses: Iterable[str], key_loaded: bool) -> dict:
    """``pulse.started``, as the shell publishes it once its sockets are bound (the real shell and
    the simulator): its boot epoch, the host's name and addresses (sorted, as many as the event
    holds), whether the heartbeat key was read; ``listen``: it heard nothing while it was down;
    ``rules``: the decision rules this code runs (``RULES``)."""
    return {"epoch": epoch, "hostname": hostname[:256], "addresses": sorted(addresses)[:1024],
            "key_loaded": key_loaded, "listen": True, "rules": RULES}


def reconcile_vips(st: PulseState) -> list[tuple[str, tuple[Vip, ...]]]:
    """What a restarted pulse does with the VIPs once the answers it owed are recorded and run
    (``on_caught_up``), unit by unit: ACTIVE, make sure its VIPs are there and announce them once
    (a takeover recorded whose effects did not all run has not told the clients); any other role
    but INIT, make sure they are not; INIT (a fresh run: its first decision releases them) or no
    settings, nothing."""
    if st.settings is None:
        return []
    out = []
    for u in st.units.values():
        if u.role == ACTIVE:
            out.append((TAKE, u.cfg.vips))
        elif u.role != INIT:
            out.append((RELEASE, u.cfg.vips))
    return out


#: the link watch polls no more often than this, whatever the keepalive
LINK_POLL_MIN_NS = 20_000_000


def link_poll_interval(keepalive_ns: int) -> int:
    """How often (ns) the shell's link watch polls the links: every keepalive, at least 20 ms apart."""
    return max(LINK_POLL_MIN_NS, keepalive_ns)


def configured_devices(model: dict, local: str) -> dict[str, str | None]:
    """This router's heartbeat links (public; private when it has a private address) and the
    device the config names for each (``routers[].device``, ``private_device``; None: the shell
    uses the device holding the link's address). ``model``: a ``config.loaded`` model."""
    for r in model["routers"]:
        if r["name"] == local:
            out = {"public": r.get("device")}
            if r.get("private_address"):
                out["private"] = r.get("private_device")
            return out
    return {}


def link_devices(model: dict, local: str) -> dict[str, str | None]:
    """The links the shell's link watch polls, with their configured devices
    (``configured_devices``): none unless ``heartbeat.monitor_links``."""
    if not model["heartbeat"].get("monitor_links"):
        return {}
    return configured_devices(model, local)


def link_changes(known: dict[str, bool], observed: dict[str, bool]) -> list[tuple[str, bool]]:
    """The ``pulse.link_changed`` to publish for a poll of the links: each link whose state differs
    from what is known (a link never reported counts as up); ``known`` is updated. The shell's
    watch starts from what the core believes, so a change while pulse was down is reported."""
    out = []
    for link, up in observed.items():
        if known.get(link, True) != up:
            known[link] = up
            out.append((link, up))
    return out


# ---------------------------------------------------------------------------------------------
# state


class PeerLink:
    __slots__ = ("last_heard", "last_seq", "degraded")

    def __init__(self, last_heard: int | None = None, last_seq: int | None = None, degraded: bool = False):
        self.last_heard = last_heard
        self.last_seq = last_seq
        self.degraded = degraded


class Peer:
    """What this router knows about one peer itself (its role in each unit: ``Unit.views``)."""

    __slots__ = ("role", "priority", "epoch", "newest", "alive", "left", "alive_since", "last_heard", "links",
                 "told_at")

    def __init__(self, priority: int, links: tuple[str, ...]):
        self.role: str = INIT  # as last reported (its first group's: the heartbeat's own role)
        self.priority = priority  # as last reported (config until heard)
        self.epoch: int | None = None
        self.newest: int | None = None  # the highest seq accepted in this epoch, over every link
        self.alive = False  # heard on some link within deadtime, and not left
        self.left = False  # sent a leaving heartbeat (graceful shutdown)
        self.alive_since = 0
        self.last_heard: int | None = None
        self.links: dict[str, PeerLink] = {link: PeerLink() for link in links}
        self.told_at: int | None = None  # when its newest heartbeat said its role and priority per unit

    @property
    def heard_ns(self) -> int:
        """When an alive peer was last heard (alive means heard: never None then)."""
        if self.last_heard is None:
            raise RuntimeError("pulse: a peer alive but never heard")
        return self.last_heard

    def to_plain(self) -> list:
        return [
            self.role, self.priority, self.epoch, self.newest, self.alive, self.left, self.alive_since,
            self.last_heard, {k: [v.last_heard, v.last_seq, v.degraded] for k, v in self.links.items()},
            self.told_at,
        ]

    @classmethod
    def from_plain(cls, d: list) -> Peer:
        p = cls(d[1], ())
        p.role, p.priority, p.epoch, p.newest, p.alive, p.left, p.alive_since, p.last_heard = d[:8]
        p.links = {k: PeerLink(*v) for k, v in d[8].items()}
        p.told_at = d[9]
        return p


class View:
    """A peer's role and priority in one unit, as its heartbeats say (config until heard), and
    whether a split brain with it is being resolved (seen ACTIVE while this unit was ACTIVE)."""

    __slots__ = ("role", "priority", "split")

    def __init__(self, role: str, priority: int, split: bool = False) -> None:
        self.role, self.priority, self.split = role, priority, split


class Unit:
    """One election unit's role machine (the model of the shared Machine: ``role``) and what it
    alone decides by: listening, preemption, announcements, failover services, tracking, and each
    peer's role and priority in it (``views``). ``st``: the router's state (links, clock, peers)."""

    _PLAIN = ("role", "listen_since", "listen_until", "preempt_since", "preempt_hold_until", "garp_next", "last_active",
              "active_since", "gave_up_until", "eff_priority", "track_fault", "fault_cause")

    def __init__(self, st: PulseState, cfg: UnitSettings | None, name: str = DEFAULT) -> None:
        self.st = st
        self.cfg_ = cfg
        self.name = cfg.name if cfg is not None else name
        self.role = INIT
        self.listen_since: int | None = None  # when the listen began (rules 5: heard from since)
        self.listen_until: int | None = None
        self.preempt_since: int | None = None
        self.preempt_hold_until = 0
        self.garp_next: int | None = None
        self.last_active: str | None = None  # the peer last known to be active
        self.reannounce_after: dict[str, int] = {}  # peer -> no re-announcement for its late news before
        # service = fos (see _check_failover): when this unit last became ACTIVE, and until when a
        # unit that gave up (a failover service failed here) advertises priority 0
        self.active_since: int | None = None
        self.gave_up_until = 0
        # tracking (services/pulse/tracking.py): the effective priority (None: no tracked item, the
        # configured one), the weight-0 item holding the unit in FAULT, and why it is in FAULT
        # ("link" or "track": the reason it gives when it recovers)
        self.eff_priority: int | None = None
        self.track_fault: str | None = None
        self.fault_cause: str | None = None
        self.views: dict[str, View] = {}

    @property
    def cfg(self) -> UnitSettings:
        if self.cfg_ is None:
            raise RuntimeError("pulse: unit settings used before any config.loaded")
        return self.cfg_

    # FSM conditions (named in ROLE_TRANSITIONS)
    def has_config(self) -> bool:
        return self.st.settings is not None

    def has_started(self) -> bool:
        return self.st.epoch is not None

    def listen(self, now: int, deadtime_ns: int | None) -> None:
        """Listen before this unit may take over: for deadtime, or (None) not at all (scale-out)."""
        self.listen_since = None if deadtime_ns is None else now
        self.listen_until = None if deadtime_ns is None else now + deadtime_ns

    def done_listening(self) -> bool:
        """Deadtime has passed since the listen began, or (rules 5) every peer has been heard since:
        a heartbeat says the peer's role and priority in every unit, so this unit knows all it would
        know at the end (a peer not heard keeps it listening for the whole deadtime)."""
        if self.listen_until is None or self.st.now >= self.listen_until:
            return True
        if self.st.rules < 5 or self.listen_since is None or not self.views:
            return False
        since = self.listen_since
        return all((p := self.st.peers.get(name)) is not None and p.told_at is not None and p.told_at >= since
                   for name in self.views)

    def faulty(self) -> bool:
        """This unit must not serve: a link fault, or a tracked item with weight 0 failed."""
        return self.st.link_fault() or self.track_fault is not None

    def can_serve(self) -> bool:
        return not self.faulty()

    def to_plain(self) -> dict:
        d: dict[str, Any] = {k: getattr(self, k) for k in self._PLAIN}
        d["reannounce_after"] = dict(self.reannounce_after)
        d["views"] = {n: [v.role, v.priority, v.split] for n, v in self.views.items()}
        return d

    def load(self, d: dict) -> None:
        for k in self._PLAIN:
            setattr(self, k, d[k])
        self.reannounce_after = dict(d["reannounce_after"])
        self.views = {n: View(*v) for n, v in d["views"].items()}

    def __repr__(self) -> str:
        return f"<Unit {self.name} {self.role}>"


#: a summary of the units' roles, for the router as a whole: the first present of these
_SUMMARY = (ACTIVE, BACKUP, FAULT)


class PulseState:
    """What pulse knows: the router's own (links, clock, epoch, peers) and its units' role machines."""

    _PLAIN = (
        "epoch", "hostname", "seq", "now", "next_hb", "links_up", "ignored", "rejected_configs",
        "own_clock", "heard_from", "rules", "stop_at",
    )

    def __init__(self) -> None:
        self.settings: PulseSettings | None = None
        self.units: dict[str, Unit] = {DEFAULT: Unit(self, None)}  # a config's units (default until one)
        self.epoch: int | None = None  # ours, from pulse.started
        self.hostname = ""
        self.seq = 0  # our datagram sequence (heartbeats and fences)
        self.now = 0  # mono_ns of the event being decided
        self.next_hb: int | None = None
        self.links_up: dict[str, bool] = {}
        self.peers: dict[str, Peer] = {}
        self.ignored = 0
        self.rejected_configs = 0
        # service = fos: each failover service's health as nanny last said (health.failover_changed)
        self.fos_health: dict[str, str] = {}
        # tracking: what is known of each tracked item (an interface's or a file's value, a script's
        # health state)
        self.track_seen: dict[str, int | str] = {}
        # nanny's verdicts on real servers (health id VIRTUAL/SERVER -> state), for the tracked
        # services' quorum: a server is here once it has been UP or DOWN
        self.server_health: dict[str, str] = {}
        # peers' deaths are judged on pulse's own inputs only (OWN_CLOCK): an input another service
        # recorded while pulse was down is no evidence that pulse listened meanwhile. Set by a
        # pulse.started v2 (listen); a v1 run judged them on any input, and replays so
        self.own_clock = False
        # a peer's silence counts from here at the earliest: a shell that restarted listening
        # (pulse.started v2) heard nothing while it was down, so what it last heard of its peers
        # before then is no verdict on them (0: from the peer's last heartbeat, as a v1 run did)
        self.heard_from = 0
        # the decision rules of the shell that started this run (pulse.started v3; 2 before it)
        self.rules = 2
        # scale-out's graceful stop: when the VIPs are released and the router stops (None: not stopping)
        self.stop_at: int | None = None

    @property
    def cfg(self) -> PulseSettings:
        """The settings, where the role machines only go once configured (INIT leaves only on a
        config): None there is a bug, said as one."""
        if self.settings is None:
            raise RuntimeError("pulse: settings used before any config.loaded")
        return self.settings

    @property
    def role(self) -> str:
        """The router's role as a whole: ACTIVE when it is active for some group, else BACKUP, else
        FAULT; INIT or STOPPED when every unit is (with one unit, that unit's role)."""
        roles = [u.role for u in self.units.values()]
        for r in _SUMMARY:
            if r in roles:
                return r
        return roles[0]

    def unit(self, name: str = DEFAULT) -> Unit:
        return self.units[name]

    def all_links_down(self) -> bool:
        links = self.settings.local_links() if self.settings else LINKS
        return not any(self.links_up.get(link, True) for link in links)

    def link_fault(self) -> bool:
        """This router cannot serve any VIP: its public link (where they live and clients are)
        is down, or no heartbeat link is up. Losing only the private link is a degraded link,
        not a fault (keepalived's FAULT on a tracked interface)."""
        return not self.links_up.get("public", True) or self.all_links_down()

    def held(self) -> list[str]:
        """The groups this router is active for, in config order."""
        return [g for u in self.units.values() if u.role == ACTIVE for g in u.cfg.groups]

    def __repr__(self) -> str:
        return f"<PulseState {[(u.name, u.role) for u in self.units.values()]} peers={list(self.peers)}>"


def _fire(unit: Unit, trigger: str) -> bool:
    """Fire one trigger of the shared Machine on ``unit``; False when not allowed (guards or source)."""
    try:
        return MACHINE.events[trigger].trigger(unit)
    except MachineError:
        return False


# ---------------------------------------------------------------------------------------------
# the core

OUTPUTS = frozenset({
    "router.role_changed", "pulse.peer_alive", "pulse.peer_dead", "pulse.peer_restarted",
    "pulse.link_degraded", "pulse.link_restored", "pulse.split_brain_resolved", "pulse.heartbeat_ignored",
    "pulse.config_rejected", "pulse.handover_refused", "pulse.priority_changed",
    "pulse.send_heartbeat", "pulse.send_fence", "pulse.take_vips", "pulse.release_vips", "pulse.send_garp",
    "pulse.start_lvsd", "pulse.stop_lvsd", "pulse.run_notify", "pulse.run_failover",
})


#: pulse's own inputs: its shell's observations and its timer. Peers' deaths are judged on these
#: only (``PulseState.own_clock``): while the shell runs, its timer fires at every deadline, so
#: leaving them out of other services' inputs delays a verdict by the timer's latency at most, and
#: an input recorded while pulse was down cannot judge a peer by a silence nobody listened to
#: nanny's verdicts on real servers: pulse reads them for the tracked services ([track.NAME] kind
#: service)
SERVER_HEALTH = frozenset({"health.real_server_up", "health.real_server_down", "health.state_changed"})

OWN_CLOCK = frozenset({"pulse.started", "pulse.heartbeat_received", "pulse.fence_received",
                       "pulse.link_changed", "pulse.track_observed", "timer.fired"})


#: a unit's fields in snapshot version 9 (listen_since came in 12): what _upcast_9 moves into it
_UNIT_PLAIN_V9 = ("role", "listen_until", "preempt_since", "preempt_hold_until", "garp_next", "last_active",
                  "active_since", "gave_up_until", "eff_priority", "track_fault", "fault_cause")


def _upcast_9(data: dict) -> dict:
    """A snapshot from before failover groups: its role machine's fields and each peer's role,
    priority and split flag become the ``default`` unit's; its settings one unit's."""
    d = dict(data)
    unit = {k: d.pop(k) for k in _UNIT_PLAIN_V9}
    unit["reannounce_after"] = d.pop("reannounce_after")
    peers = {}
    views = {}
    for name, p in d["peers"].items():
        views[name] = [p[0], p[1], p[8]]
        peers[name] = p[:8] + [p[9]]
    unit["views"] = views
    d["peers"] = peers
    d["units"] = {DEFAULT: unit}
    if d["settings"] is not None:
        d["settings"] = _upcast_settings_8(d["settings"])
    return d


class PulseCore(Core[PulseState]):
    name: ClassVar[str] = "pulse"
    inputs: ClassVar[tuple[str, ...]] = (
        "config.loaded", "pulse.started", "pulse.heartbeat_received", "pulse.fence_received",
        "pulse.link_changed", "router.shutdown_requested", "timer.fired", "health.failover_changed",
        "operator.handover_requested", "pulse.track_observed", "health.track_changed",
        "health.real_server_up", "health.real_server_down", "health.state_changed",
    )
    outputs: ClassVar[frozenset[str]] = OUTPUTS
    #: a heartbeat changes nothing in the world: a tick's heartbeats go out at once, their records
    #: in the same batch, so a slow or full disk never silences a healthy router (docs/router.md)
    unheld: ClassVar[frozenset[str]] = frozenset({"pulse.send_heartbeat"})

    def initial(self) -> PulseState:
        return PulseState()

    # -- snapshots -------------------------------------------------------------------------
    # version 1: {"v": 1, "state": {...}}, reannounce_after absent before it existed; version 2:
    # the state's fields alone, every one present
    # version 3: fos_health, active_since, gave_up_until (service = fos); version 4:
    # reannounce_after per peer (one bound for every peer before); version 5: own_clock; version 6:
    # heard_from; version 7: rules; version 8: tracking (track_seen, eff_priority, track_fault,
    # fault_cause); version 9: failover groups (each unit's role machine under "units", each
    # peer's role and priority in it under the unit's "views"; the settings' units); version 10:
    # server_health (tracked services); version 11: stop_at (scale-out's graceful stop); version
    # 12: each unit's listen_since and each peer's told_at (rules 5)
    snapshot_version = 12
    snapshot_upcasters = {
        1: lambda data: {"reannounce_after": 0, **data["state"]},
        2: lambda data: {"fos_health": {}, "active_since": None, "gave_up_until": 0, **data},
        3: lambda data: {**data, "reannounce_after": ({n: data["reannounce_after"] for n in data["peers"]}
                                                      if data["reannounce_after"] else {})},
        4: lambda data: {**data, "own_clock": False},
        5: lambda data: {**data, "heard_from": 0},
        6: lambda data: {**data, "rules": 2},
        7: lambda data: {**data, "track_seen": {}, "eff_priority": None, "track_fault": None, "fault_cause": None},
        8: _upcast_9,
        9: lambda data: {**data, "server_health": {}},
        10: lambda data: {**data, "stop_at": None},
        11: lambda data: {**data, "units": {n: {**u, "listen_since": None} for n, u in data["units"].items()},
                          "peers": {n: [*p, None] for n, p in data["peers"].items()}},
    }

    def snapshot(self, state: PulseState) -> dict:
        d: dict[str, Any] = {k: getattr(state, k) for k in PulseState._PLAIN}
        d["links_up"] = dict(state.links_up)
        d["fos_health"] = dict(state.fos_health)
        d["track_seen"] = dict(state.track_seen)
        d["server_health"] = dict(state.server_health)
        d["settings"] = state.settings.to_plain() if state.settings else None
        d["peers"] = {name: p.to_plain() for name, p in state.peers.items()}
        d["units"] = {name: u.to_plain() for name, u in state.units.items()}
        return d

    def restore(self, d: dict) -> PulseState:
        st = PulseState()
        for k in PulseState._PLAIN:
            setattr(st, k, d[k])
        st.links_up = dict(d["links_up"])
        st.fos_health = dict(d["fos_health"])
        st.track_seen = dict(d["track_seen"])
        st.server_health = dict(d["server_health"])
        st.settings = PulseSettings.from_plain(d["settings"]) if d["settings"] else None
        st.peers = {name: Peer.from_plain(p) for name, p in d["peers"].items()}
        st.units = {}
        for name, plain in d["units"].items():
            u = Unit(st, st.settings.unit(name) if st.settings else None, name)
            u.load(plain)
            st.units[name] = u
        return st

    # -- deadlines -------------------------------------------------------------------------
    def next_deadline(self, st: PulseState) -> int | None:
        s = st.settings
        role = st.role
        if s is None or role in (INIT, STOPPED):
            return None
        due: list[int] = []
        if st.stop_at is not None:
            due.append(st.stop_at)
        if role in (BACKUP, ACTIVE) and s.heartbeat_enabled and st.next_hb is not None:
            due.append(st.next_hb)
        for u in st.units.values():
            if u.role == BACKUP:
                if u.listen_until is not None and u.listen_until > st.now:
                    due.append(u.listen_until)
                if u.preempt_since is not None:
                    due.append(u.preempt_since + u.cfg.preempt_delay_ns)
                if u.preempt_hold_until > st.now:
                    due.append(u.preempt_hold_until)
            if u.role == ACTIVE and u.garp_next is not None:
                due.append(u.garp_next)
            due.extend(self._failover_deadlines(st, u))
        dt, ka = s.deadtime_ns, s.keepalive_ns
        for p in st.peers.values():
            if not p.alive:
                continue
            due.append(max(p.heard_ns, st.heard_from) + dt)
            for pl in p.links.values():
                since = max(pl.last_heard or 0, p.alive_since, st.heard_from)
                if not pl.degraded and p.heard_ns - since >= ka:
                    due.append(since + dt)  # (otherwise a heartbeat on another link comes first)
        return min(due) if due else None

    # -- decide ----------------------------------------------------------------------------
    def decide(self, st: PulseState, event: Event) -> tuple[PulseState, list]:
        if event.type == "pulse.started" and (st.role == STOPPED or event.mono_ns < st.now):
            return self._restart(st, event)
        if st.role == STOPPED:
            return st, []
        if event.type in SERVER_HEALTH and not self._server_health(st, event):
            return st, []  # no tracked service moved: not even the clock (old logs replay as they were)
        if event.mono_ns > st.now:
            st.now = event.mono_ns
        out: list[Effect] = []
        t = event.type
        p = event.payload
        if t == "pulse.heartbeat_received":
            self._on_heartbeat(st, p, out)
        elif t == "timer.fired":
            pass
        elif t == "pulse.fence_received":
            self._on_fence(st, p, out)
        elif t == "pulse.link_changed":
            st.links_up[p["link"]] = p["up"]
            self._check_links(st, out)
        elif t == "config.loaded":
            self._on_config(st, p, out)
        elif t == "pulse.started":
            self._on_started(st, p, out)
        elif t == "router.shutdown_requested":
            self._shutdown(st, p, out)
            if st.stop_at is None:
                return st, out
        elif t == "health.failover_changed":
            st.fos_health[p["service"]] = p["new"]
        elif t == "pulse.track_observed" or t == "health.track_changed":
            st.track_seen[p["track"]] = p["value"] if t == "pulse.track_observed" else p["new"]
            if st.settings is not None and st.role != INIT:
                self._retrack(st, out)
        elif t in SERVER_HEALTH:  # a tracked service's quorum changed (_server_health)
            if st.role != INIT:
                self._retrack(st, out)
        elif t == "operator.handover_requested":
            self._handover(st, p, out)
        else:
            return st, []
        if st.stop_at is not None and st.now >= st.stop_at:
            self._stop(st, out)  # scale-out's graceful stop: the drain is over
            return st, out
        if st.settings is not None and st.role not in (INIT, STOPPED):
            if t in OWN_CLOCK or not st.own_clock:
                self._advance(st, out)
            for u in list(st.units.values()):
                self._check_failover(st, u, out)
                self._elect(st, u, out)
            self._tick(st, out)
        return st, out

    def _on_started(self, st: PulseState, p: dict, out: list) -> None:
        # a restarted shell (the core restored from a snapshot) brings a new epoch: adopt it
        st.epoch = p["epoch"]
        st.own_clock = p["listen"]
        st.rules = p["rules"]
        if p["listen"]:
            st.heard_from = st.now
        st.hostname = p["hostname"]
        if st.role == INIT:
            self._try_start(st, out)
            return
        s = st.settings
        for u in st.units.values():
            if u.role == BACKUP and p["listen"] and s is not None and not s.scaleout:
                # pulse was down a while and heard nothing meanwhile: what it last heard of its
                # peers is old news. Listen for deadtime, as at a start, before it may take over: a
                # restart alone must never fail over (a v1 record, listen false, took over at once
                # when that news was more than deadtime old; replay keeps that decision)
                u.listen(st.now, s.deadtime_ns)
            elif u.role == ACTIVE and s is not None and u.cfg.vips:
                # pulse was down a while (its shell keeps the VIPs): a peer may have taken over and
                # moved the clients meanwhile, fences and heartbeats unheard: announce ours again
                self._announce(out, s, [v.payload() for v in u.cfg.vips], s.garp_repeat, "restarted")

    def _restart(self, st: PulseState, event: Event) -> tuple[PulseState, list]:
        """A new run of the router: after a shutdown, or after a reboot (mono_ns went back, so every
        time this state holds is meaningless). Keep the settings and the counters, forget the rest."""
        out: list[Effect] = []
        for u in st.units.values():
            old = u.role
            if old != INIT and _fire(u, "restart"):
                self._role_changed(st, u, old, INIT, "started", None, out)
        fresh = PulseState()
        fresh.settings, fresh.ignored, fresh.rejected_configs = st.settings, st.ignored, st.rejected_configs
        fresh.seq = st.seq  # peers compare seqs per epoch; keeping ours growing costs nothing
        fresh.fos_health = dict(st.fos_health)  # nanny's verdicts stand until it says otherwise
        fresh.track_seen = dict(st.track_seen)  # as what was seen of the tracked items
        if fresh.settings is not None:
            fresh.peers = {r.name: Peer(r.priority, fresh.settings.pair_links(r))
                           for r in fresh.settings.routers if r.name != fresh.settings.local}
            fresh.units = {}
            for us in fresh.settings.units:
                u = fresh.units[us.name] = self._new_unit(fresh, us)
                was = st.units.get(us.name)
                if was is not None:
                    u.eff_priority, u.track_fault = was.eff_priority, was.track_fault
        fresh.now = event.mono_ns
        fresh.epoch = event.payload["epoch"]
        fresh.hostname = event.payload["hostname"]
        fresh.own_clock = event.payload["listen"]
        fresh.rules = event.payload["rules"]
        fresh.heard_from = event.mono_ns if event.payload["listen"] else 0
        self._try_start(fresh, out)
        if fresh.role != INIT:
            self._advance(fresh, out)
            for u in list(fresh.units.values()):
                self._elect(fresh, u, out)
            self._tick(fresh, out)
        return fresh, out

    @staticmethod
    def _new_unit(st: PulseState, us: UnitSettings) -> Unit:
        u = Unit(st, us)
        s = st.cfg
        u.views = {r.name: View(INIT, us.priority_of(r.name)) for r in s.routers if r.name != s.local}
        return u

    # -- inputs ----------------------------------------------------------------------------
    def _ignore(self, st: PulseState, kind: str, p: dict, reason: str, last_seq: int | None, out: list) -> None:
        st.ignored += 1
        out.append(Effect("pulse.heartbeat_ignored", {
            "datagram": kind, "peer": p["peer"], "link": p["link"], "reason": reason, "seq": p["seq"],
            "last_seq": last_seq, "epoch": p["epoch"], "count": st.ignored,
        }))

    def _accept(self, st: PulseState, kind: str, p: dict, out: list) -> tuple[Peer | None, bool]:
        """Sequence, epoch and identity checks shared by heartbeats and fences; records the datagram
        as proof of life on its link. Returns (None, False) when ignored (and counted), else the peer
        and whether the datagram is the newest this peer has sent (seq above every seq seen on any
        link): only the newest may change what we believe of the peer (its role, priority, leaving).
        An older one (the other link's copy of the same datagram, or a slower link) proves life only."""
        s = st.settings
        name, link = p["peer"], p["link"]
        if s is None:
            self._ignore(st, kind, p, "not_configured", None, out)
            return None, False
        if name == s.local:
            self._ignore(st, kind, p, "self", None, out)
            return None, False
        peer = st.peers.get(name)
        if peer is None or link not in peer.links:
            self._ignore(st, kind, p, "unknown_peer", None, out)
            return None, False
        if kind == "fence" and p["target"] != s.local:
            self._ignore(st, kind, p, "not_for_us", None, out)
            return None, False
        pl = peer.links[link]
        epoch = p["epoch"]
        if peer.epoch is not None and epoch < peer.epoch:
            self._ignore(st, kind, p, "stale_epoch", pl.last_seq, out)
            return None, False
        if peer.epoch is None or epoch > peer.epoch:
            if peer.epoch is not None:
                out.append(Effect("pulse.peer_restarted", {"peer": name, "old_epoch": peer.epoch, "new_epoch": epoch}))
            peer.epoch = epoch
            peer.newest = None
            peer.left = False
            for other in peer.links.values():
                other.last_seq = None
        elif pl.last_seq is not None and p["seq"] <= pl.last_seq:
            self._ignore(st, kind, p, "stale_seq", pl.last_seq, out)
            self._late_news(st, kind, p, out)
            return None, False
        now = st.now
        pl.last_seq = p["seq"]
        pl.last_heard = now
        peer.last_heard = now
        if pl.degraded:
            pl.degraded = False
            out.append(Effect("pulse.link_restored", {"peer": name, "link": link}))
        fresh = peer.newest is None or p["seq"] > peer.newest
        if fresh:
            peer.newest = p["seq"]
        return peer, fresh

    def _late_news(self, st: PulseState, kind: str, p: dict, out: list) -> None:
        """A late datagram changes nothing we believe, but one saying the peer was active (a fence,
        or an ACTIVE heartbeat: reordered behind its next ones, e.g. after it stepped down again)
        means clients may have been sent its MAC while we hold the VIPs: announce ours again, at
        most once a deadtime per peer (a replayed old datagram can cost us no more than that). Per
        peer: with three routers or more, two peers may each have been active within a deadtime,
        and the second one's late news is news of its own (simulator seed 12442 of --routers 3).
        Per unit: the news is about the groups the datagram names."""
        s = st.settings
        name = p["peer"]
        if s is None:
            return
        for u in st.units.values():
            if u.role != ACTIVE or not u.cfg.vips or st.now < u.reannounce_after.get(name, 0):
                continue
            if kind == "fence":
                was_active = bool(set(p["groups"]) & set(u.cfg.groups))
            else:
                was_active = any(g["role"] == ACTIVE for g in p["groups"] if g["group"] in u.cfg.groups)
            if was_active:
                u.reannounce_after[name] = st.now + s.deadtime_ns
                self._announce(out, s, [v.payload() for v in u.cfg.vips], s.garp_repeat, "peer_was_active")

    def _mark_alive(self, st: PulseState, name: str, peer: Peer, link: str, out: list) -> None:
        if not peer.alive:
            peer.alive = True
            peer.left = False
            peer.alive_since = st.now
            out.append(Effect("pulse.peer_alive", {
                "peer": name, "link": link, "role": peer.role, "priority": peer.priority, "epoch": peer.epoch,
            }))
            s = st.settings
            for u in st.units.values():
                if u.role == ACTIVE and u.views[name].role != ACTIVE and s is not None and u.cfg.vips:
                    # a peer back while we are active may have held our VIPs meanwhile (a partition
                    # that healed, its active spell ended before we heard it: no split brain to see)
                    # and left clients with its MAC: announce ours again. An active peer is the split
                    # brain's business (_on_heartbeat), which re-announces when we stay.
                    self._announce(out, s, [v.payload() for v in u.cfg.vips], s.garp_repeat, "peer_returned")

    def _spell_ended(self, st: PulseState, u: Unit, out: list) -> None:
        """A peer we knew as ACTIVE in this unit says it is not any more (its fresh heartbeat says
        BACKUP, or it is leaving): its active spell is over, and while it lasted the peer may have
        announced the VIPs at any time, after our own last announcement too (a split brain we won:
        the loser heard a third router come back and re-announced before it heard us). Only now can
        our announcement be the last one: make it."""
        s = st.settings
        if u.role == ACTIVE and s is not None and u.cfg.vips:
            self._announce(out, s, [v.payload() for v in u.cfg.vips], s.garp_repeat, "peer_stepped_down")

    @staticmethod
    def _unit_news(u: Unit, groups: list[dict]) -> tuple[str, int] | None:
        """What a heartbeat's groups say of unit ``u``: the role of its first group there and the
        lowest priority of its groups (a sync group is elected as one); None: the peer runs none of
        them (a config being reloaded): no candidate for it."""
        mine = [g for g in groups if g["group"] in u.cfg.groups]
        if not mine:
            return None
        return mine[0]["role"], min(g["priority"] for g in mine)

    def _on_heartbeat(self, st: PulseState, p: dict, out: list) -> None:
        peer, fresh = self._accept(st, "heartbeat", p, out)
        if peer is None:
            return
        name = p["peer"]
        if not fresh:
            if not peer.left:  # a peer that said goodbye stays gone for the rest of its epoch
                self._mark_alive(st, name, peer, p["link"], out)
            return
        was_alive = peer.alive
        peer.priority = p["priority"]
        peer.role = p["role"]
        before: dict[str, tuple[str, int]] = {}
        for u in st.units.values():
            v = u.views[name]
            before[u.name] = (v.role, v.priority)
            news = self._unit_news(u, p["groups"])
            v.role, v.priority = news if news is not None else (INIT, 0)
        peer.told_at = st.now
        if p["leaving"]:
            if not peer.left:
                peer.left = True
                peer.alive = False
                out.append(Effect("pulse.peer_dead", {
                    "peer": name, "cause": "left", "role": peer.role, "last_heard_ns": st.now,
                }))
                for u in st.units.values():
                    if before[u.name][0] == ACTIVE or not was_alive:
                        self._spell_ended(st, u, out)
            for u in st.units.values():
                u.views[name].split = False
            return
        self._mark_alive(st, name, peer, p["link"], out)
        for u in list(st.units.values()):
            v = u.views[name]
            was, was_priority = before[u.name]
            if v.role != ACTIVE:
                v.split = False
                if was == ACTIVE and was_alive:  # (a peer back from the dead: _mark_alive announced)
                    self._spell_ended(st, u, out)
                continue
            if u.role != ACTIVE:
                u.last_active = name
                continue
            if st.cfg.scaleout:
                continue  # both active is scale-out's normal state
            # both active: resolve once per episode, and again when the peer's rank changed (rules 4)
            if not v.split or (st.rules >= 4 and v.priority != was_priority):
                v.split = True
                self._split_brain(st, u, name, v, out)

    def _on_fence(self, st: PulseState, p: dict, out: list) -> None:
        peer, fresh = self._accept(st, "fence", p, out)
        if peer is None:
            return
        name = p["peer"]
        if not fresh:  # the other link's copy, or older than what the peer has said since
            if not peer.left:
                self._mark_alive(st, name, peer, p["link"], out)
            return
        if st.cfg.scaleout:  # nobody takes a VIP from a scale-out router (a peer not in scale-out: a config rollout)
            self._mark_alive(st, name, peer, p["link"], out)
            return
        # a valid fence is proof that its sender is alive and has taken over the groups it names
        fenced = [u for u in st.units.values() if set(p["groups"]) & set(u.cfg.groups)]
        peer.role = ACTIVE
        for u in fenced:
            u.views[name].role = ACTIVE
        peer.left = False
        self._mark_alive(st, name, peer, p["link"], out)
        for u in fenced:
            u.last_active = name
            if u.role == ACTIVE:
                self._step_down(st, u, "step_down", BACKUP, "fenced", name, out)
            # damping: after a valid fence, no preemption for deadtime, so that a one-way partition
            # cannot make two routers fence each other at heartbeat speed
            u.preempt_hold_until = st.now + st.cfg.deadtime_ns

    def _on_config(self, st: PulseState, p: dict, out: list) -> None:
        try:
            new = _settings_from_config(p)
        except Exception as exc:  # the model is input: anything wrong in it is counted, never fatal
            st.rejected_configs += 1
            out.append(Effect("pulse.config_rejected", {
                "error": f"{type(exc).__name__}: {exc}"[:1024], "count": st.rejected_configs,
            }))
            return
        old = st.settings
        st.settings = new
        peers: dict[str, Peer] = {}
        for r in new.routers:
            if r.name == new.local:
                continue
            links = new.pair_links(r)
            peer = st.peers.get(r.name)
            if peer is None:
                peer = Peer(r.priority, links)
            else:
                peer.links = {link: peer.links.get(link) or PeerLink() for link in links}
            peers[r.name] = peer
        st.peers = peers
        st.fos_health = {k: v for k, v in st.fos_health.items()
                         if any(f[0] == k for us in new.units for f in us.failover)}
        st.track_seen = {k: v for k, v in st.track_seen.items()
                         if any(t.name == k for us in new.units for t in us.tracks)}
        names = {vs["name"] for vs in p["model"].get("virtual_services", ())}
        st.server_health = {k: v for k, v in st.server_health.items() if k.split("/", 1)[0] in names}
        self._services_seen(st, set())
        running = st.role != INIT
        units: dict[str, Unit] = {}
        added: list[Unit] = []
        for us in new.units:
            u = st.units.get(us.name)
            if u is None or u.cfg_ is None:
                fresh_unit = self._new_unit(st, us)
                if u is not None:  # the placeholder before any config (INIT): its role stays
                    fresh_unit.role = u.role
                u = fresh_unit
                if running:
                    added.append(u)
            else:
                old_us, u.cfg_ = u.cfg_, us
                u.views = {n: u.views.get(n) or View(INIT, us.priority_of(n)) for n in peers}
                if u.last_active not in peers:
                    u.last_active = None
                if u.role == ACTIVE and old_us.failover != us.failover:
                    self._failover_reload(u, old_us, us, out)
                if u.role == ACTIVE and old_us.vips != us.vips:
                    old_set = {v.address: v for v in old_us.vips}
                    new_set = {v.address: v for v in us.vips}
                    gone = [v.payload() for a, v in old_set.items() if new_set.get(a) != v]
                    more = [v.payload() for a, v in new_set.items() if old_set.get(a) != v]
                    if gone:
                        out.append(Effect("pulse.release_vips", {"vips": gone, "reason": "config"}))
                    if more:
                        out.append(Effect("pulse.take_vips", {"vips": more, "reason": "config"}))
                        self._announce(out, new, more, new.garp_repeat, "config")
            units[us.name] = u
        removed = [u for name, u in st.units.items() if name not in units and u.cfg_ is not None]
        st.units = units
        for u in removed:  # a group the reload took away: what it held goes
            if u.role == ACTIVE:
                for f in u.cfg.failover:
                    self._run_failover(new, f, "stop", "config", out)
                if u.cfg.vips:
                    out.append(Effect("pulse.release_vips", {"vips": [v.payload() for v in u.cfg.vips],
                                                             "reason": "config"}))
                self._lvsd_follows(st, "config", out)
        for u in added:  # a group the reload brought: it starts as the router did, listening first
            if _fire(u, "start"):
                u.listen(st.now, new.deadtime_ns)
                if u.cfg.vips:
                    out.append(Effect("pulse.release_vips", {"vips": [v.payload() for v in u.cfg.vips],
                                                             "reason": "started"}))
                self._role_changed(st, u, INIT, BACKUP, "started", None, out)
        if old is None or not running:
            self._try_start(st, out)
        else:
            self._retrack(st, out)

    def _try_start(self, st: PulseState, out: list) -> None:
        if st.settings is None or st.epoch is None:
            return
        s = st.settings
        started = False
        for u in st.units.values():
            if not _fire(u, "start"):
                continue
            started = True
            # scale-out: nothing to listen for (no election), and the VIPs a crashed run left on the
            # loopback stay (every router holds them; traffic comes only while the bgp core announces)
            u.listen(st.now, None if s.scaleout else s.deadtime_ns)
            # a fresh start holds no VIP: remove any a crashed run left behind (idempotent)
            if u.cfg.vips and not s.scaleout:
                out.append(Effect("pulse.release_vips", {"vips": [v.payload() for v in u.cfg.vips],
                                                         "reason": "started"}))
            self._role_changed(st, u, INIT, BACKUP, "started", None, out)
        if started:
            st.next_hb = st.now
            self._retrack(st, out)

    def _check_links(self, st: PulseState, out: list) -> None:
        """Per unit: FAULT when it must not serve (``faulty``: a link fault, or a failed weight-0
        tracked item), back to BACKUP when it may again."""
        for u in list(st.units.values()):
            self._check_unit(st, u, out)

    def _check_unit(self, st: PulseState, u: Unit, out: list) -> None:
        if u.role in (BACKUP, ACTIVE) and u.faulty():
            old = u.role
            if st.link_fault():
                reason = "all_links_down" if st.all_links_down() else "public_link_down"
                u.fault_cause = "link"
            else:
                reason = "track_failed"
                u.fault_cause = "track"
            if old == ACTIVE:
                self._step_down(st, u, "fault", FAULT, reason, None, out)
            elif _fire(u, "fault"):
                self._role_changed(st, u, old, FAULT, reason, None, out)
            u.preempt_since = None
        elif u.role == FAULT and u.faulty():
            u.fault_cause = "link" if st.link_fault() else "track"  # what holds it there now
        elif u.role == FAULT and _fire(u, "recover"):
            u.listen(st.now, None if st.cfg.scaleout else st.cfg.deadtime_ns)
            st.next_hb = st.now
            reason = "track_recovered" if u.fault_cause == "track" else "link_up"
            u.fault_cause = None
            self._role_changed(st, u, FAULT, BACKUP, reason, None, out)

    def _server_health(self, st: PulseState, ev: Event) -> bool:
        """Record nanny's verdict on a real server; whether a tracked service's quorum changed."""
        p = ev.payload
        id_ = f"{p['virtual']}/{p['server']}"
        if ev.type == "health.state_changed":
            new = p["new"]
            if new == "INIT":  # a new machine (a reload changed the check): no verdict yet
                st.server_health.pop(id_, None)
            elif new == "DISABLED" or id_ in st.server_health:  # RISING, FALLING: after a verdict only
                st.server_health[id_] = new
        else:
            st.server_health[id_] = "UP" if ev.type == "health.real_server_up" else "DOWN"
        if st.settings is None:
            return False
        before = dict(st.track_seen)
        self._services_seen(st, {p["virtual"]})
        return st.track_seen != before

    def _services_seen(self, st: PulseState, virtuals: set[str]) -> None:
        """What is seen of the tracked services (of ``virtuals``; empty: all) from the verdicts."""
        if st.settings is None:
            return
        done: set[str] = set()  # an item moving several units is one item
        for us in st.settings.units:
            for spec in us.tracks:
                if spec.kind == tracking.SERVICE and spec.name not in done and (not virtuals or spec.virtual in virtuals):
                    done.add(spec.name)
                    seen = tracking.service_seen(spec, st.server_health, st.track_seen.get(spec.name))
                    if seen is None:
                        st.track_seen.pop(spec.name, None)
                    else:
                        st.track_seen[spec.name] = seen

    def _retrack(self, st: PulseState, out: list) -> None:
        """Assess each unit's tracked items (services/pulse/tracking.py): a change of the effective
        priority or of the item holding the unit in FAULT is a decision (``pulse.priority_changed``;
        the heartbeats carry the new priority from now on); then FAULT or recovery as it says."""
        s = st.cfg
        for u in list(st.units.values()):
            us = u.cfg
            if us.tracks or u.eff_priority is not None or u.track_fault is not None:
                base = us.priority_of(s.local)
                a = tracking.assess(base, us.tracks, st.track_seen)
                new_eff = a.priority if us.tracks else None
                if (new_eff, a.fault) != (u.eff_priority, u.track_fault):
                    out.append(Effect("pulse.priority_changed", {
                        "group": u.name, "old": self._tracked_priority(st, u), "new": a.priority, "base": base,
                        "items": [{"track": i.track, "failed": i.failed, "effect": i.effect} for i in a.items],
                        "fault": a.fault,
                    }))
                    u.eff_priority, u.track_fault = new_eff, a.fault
                    if u.role == ACTIVE and st.rules >= 4:  # our rank changed during a split brain: again
                        for name, v in u.views.items():
                            if u.role == ACTIVE and st.peers[name].alive and v.role == ACTIVE and v.split:
                                self._split_brain(st, u, name, v, out)
            self._check_unit(st, u, out)

    def _shutdown(self, st: PulseState, p: dict, out: list) -> None:
        s = st.settings
        if s is not None and s.scaleout and p["graceful"] and st.role == ACTIVE:
            # scale-out: the bgp core drains the VIPs (GRACEFUL_SHUTDOWN) for drain_time, then
            # withdraws them; meanwhile the upstream still sends flows here: keep serving them
            if st.stop_at is None:
                st.stop_at = st.now + s.scaleout_stop_ns
            return
        self._stop(st, out)

    def _stop(self, st: PulseState, out: list) -> None:
        old = st.role
        s = st.settings
        st.stop_at = None
        for u in st.units.values():
            was = u.role
            if was == ACTIVE:
                self._step_down(st, u, "stop", STOPPED, "shutdown", None, out, heartbeat=False)
            elif _fire(u, "stop"):
                self._role_changed(st, u, was, STOPPED, "shutdown", None, out)
        if s is not None and old in (BACKUP, ACTIVE) and s.heartbeat_enabled:
            # the final heartbeat: peers take over at once instead of waiting for deadtime
            out.append(self._heartbeat(st, leaving=True))
        st.next_hb = None
        for u in st.units.values():
            u.listen_since = u.listen_until = u.preempt_since = u.garp_next = None

    def _handover(self, st: PulseState, p: dict, out: list) -> None:
        """An operator's handover: every group this router is active for steps down as a failed
        failover service makes it (stop lvsd, release the VIPs, tell the peers at once with a BACKUP
        heartbeat, so the best live backup takes over as ``peer_stepped_down``) and advertises
        priority 0 for ``hold_s`` so as not to preempt the role back. Refused unless ACTIVE with a
        live BACKUP peer (for some group it holds)."""
        active = [u for u in st.units.values() if u.role == ACTIVE]
        if st.settings is not None and st.settings.scaleout:
            out.append(Effect("pulse.handover_refused", {"by": p["by"], "role": st.role, "reason": "scale_out"}))
            return
        if not active or st.settings is None:
            out.append(Effect("pulse.handover_refused", {"by": p["by"], "role": st.role, "reason": "not_active"}))
            return
        movable = [u for u in active if any(st.peers[n].alive and v.role == BACKUP for n, v in u.views.items())]
        if not movable:
            out.append(Effect("pulse.handover_refused", {"by": p["by"], "role": st.role, "reason": "no_peer"}))
            return
        for u in movable:
            u.gave_up_until = st.now + p["hold_s"] * _NS
            self._step_down(st, u, "step_down", BACKUP, "handover", None, out)

    # -- time ------------------------------------------------------------------------------
    def _advance(self, st: PulseState, out: list) -> None:
        """Everything about peers that is due at st.now: deaths and degraded links."""
        now = st.now
        dt = st.cfg.deadtime_ns
        ka = st.cfg.keepalive_ns
        for name, peer in st.peers.items():
            if not peer.alive:
                continue
            if now - max(peer.heard_ns, st.heard_from) >= dt:
                peer.alive = False
                for u in st.units.values():
                    u.views[name].split = False
                out.append(Effect("pulse.peer_dead", {
                    "peer": name, "cause": "silent", "role": peer.role, "last_heard_ns": peer.last_heard,
                }))
                continue
            for link, pl in peer.links.items():
                if pl.degraded:
                    continue
                since = max(pl.last_heard or 0, peer.alive_since, st.heard_from)
                # silent for deadtime while another link carried newer heartbeats (a keepalive's
                # worth newer: the copies of one heartbeat arrive a few ms apart, and a peer that
                # just died must give peer_dead, not a degraded link first)
                if now - since >= dt and peer.heard_ns - since >= ka:
                    pl.degraded = True
                    out.append(Effect("pulse.link_degraded", {"peer": name, "link": link, "silent_ns": now - since}))

    def _tick(self, st: PulseState, out: list) -> None:
        s = st.cfg
        now = st.now
        if st.role in (BACKUP, ACTIVE) and s.heartbeat_enabled and st.next_hb is not None and now >= st.next_hb:
            out.append(self._heartbeat(st))
            nxt = st.next_hb + s.keepalive_ns
            st.next_hb = nxt if nxt > now else now + s.keepalive_ns
        for u in st.units.values():
            if u.role == ACTIVE and u.garp_next is not None and now >= u.garp_next:
                self._announce(out, s, [v.payload() for v in u.cfg.vips], 1, "refresh")
                nxt = u.garp_next + s.garp_refresh_ns
                u.garp_next = nxt if nxt > now else now + s.garp_refresh_ns

    # -- the election ----------------------------------------------------------------------
    @staticmethod
    def rank(priority: int, address: str) -> tuple[int, tuple[int, int]]:
        """Who wins: the higher priority, then the higher address (as VRRP)."""
        return (priority, _addr_key(address))

    def _peer_rank(self, st: PulseState, name: str, view: View) -> tuple:
        r = st.cfg.router(name)
        if r is None:  # peers are the config's routers: a heartbeat from another is refused first
            raise RuntimeError(f"pulse: peer {name!r} is not in the config")
        return self.rank(view.priority, r.address)

    def _my_rank(self, st: PulseState, u: Unit) -> tuple:
        return self.rank(self._my_priority(st, u), st.cfg.me.address)

    @staticmethod
    def _tracked_priority(st: PulseState, u: Unit) -> int:
        """This router's priority in unit ``u``, tracking applied: its configured one when it tracks
        nothing (0 before any config)."""
        if u.eff_priority is not None:
            return u.eff_priority
        return u.cfg.priority_of(st.cfg.local) if u.cfg_ is not None and st.settings is not None else 0

    @classmethod
    def _my_priority(cls, st: PulseState, u: Unit) -> int:
        """The priority this router advertises and elects with in unit ``u``: its own moved by
        tracking, or 0 for reentry seconds after it gave up the active role because a failover
        service failed here (so that the peer takes over and this router does not preempt it back at
        once; with no other candidate it still takes over, see docs/pulse.md)."""
        return 0 if st.now < u.gave_up_until else cls._tracked_priority(st, u)

    def _elect(self, st: PulseState, u: Unit, out: list) -> None:
        """A BACKUP unit takes over when this router is its best live candidate and no live peer is
        active for it, or (preempt) when it outranks every live peer, an active one included, for
        preempt_delay."""
        if u.role != BACKUP or not u.done_listening():
            u.preempt_since = None
            return
        if st.cfg.scaleout:  # every router serves: none is elected, none fenced
            if st.stop_at is None:  # (not while a graceful stop drains: it is leaving)
                self._take_over(st, u, "scale_out", None, [], out)
            return
        us = u.cfg
        mine = self._my_rank(st, u)
        actives = []
        for name, v in u.views.items():
            if not st.peers[name].alive or v.role not in (BACKUP, ACTIVE):
                continue
            if self._peer_rank(st, name, v) > mine:
                u.preempt_since = None
                return  # a better live router: it is the one to be active
            if v.role == ACTIVE:
                actives.append(name)
        if actives:
            if not us.preempt or st.now < u.preempt_hold_until:
                u.preempt_since = None
                return
            if u.preempt_since is None:
                u.preempt_since = st.now
            if st.now - u.preempt_since < us.preempt_delay_ns:
                return
            self._take_over(st, u, "preempt", actives[0], actives, out)
            return
        u.preempt_since = None
        old = u.last_active
        old_peer = st.peers.get(old) if old else None
        if old_peer is None:
            reason, target = "no_active", None
        elif old_peer.left:
            reason, target = "peer_left", old
        elif not old_peer.alive:
            reason, target = "peer_dead", old
        else:
            reason, target = "peer_stepped_down", old
        self._take_over(st, u, reason, target, [target] if target else [], out)

    def _split_brain(self, st: PulseState, u: Unit, name: str, v: View, out: list) -> None:
        s = st.cfg
        me = s.me
        lost = self._peer_rank(st, name, v) > self._my_rank(st, u)
        winner, loser = (name, me.name) if lost else (me.name, name)
        mine = self._tracked_priority(st, u)
        wp, lp = (v.priority, mine) if lost else (mine, v.priority)
        out.append(Effect("pulse.split_brain_resolved", {
            "winner": winner, "loser": loser, "winner_priority": wp, "loser_priority": lp,
            "this_router_stays": not lost, "group": u.name,
        }))
        if lost:
            u.last_active = name
            self._step_down(st, u, "step_down", BACKUP, "split_brain", name, out)
        else:  # re-announce at once so no client keeps the loser's MAC
            self._announce(out, s, [x.payload() for x in u.cfg.vips], s.garp_repeat, "split_brain")

    # -- role changes and their effects ----------------------------------------------------
    def _take_over(self, st: PulseState, u: Unit, reason: str, peer: str | None, fence: list, out: list) -> None:
        if not _fire(u, "take_over"):
            return
        s = st.cfg
        us = u.cfg
        vips = [v.payload() for v in us.vips]
        self._role_changed(st, u, BACKUP, ACTIVE, reason, peer, out, notify=False)
        out.append(Effect("pulse.take_vips", {"vips": vips, "reason": reason}))
        self._announce(out, s, vips, s.garp_repeat, "takeover")
        for target in dict.fromkeys(fence):
            if target and target != s.local and s.router(target) is not None:
                st.seq += 1
                out.append(Effect("pulse.send_fence", {
                    "node": s.local, "target": target, "epoch": st.epoch, "seq": st.seq, "reason": reason,
                    "port": s.port, "destinations": s.destinations(only=target), "groups": list(us.groups),
                }))
        out.append(Effect("pulse.start_lvsd", {"reason": reason, "groups": self._lvsd_groups(st)}))
        u.active_since = st.now
        for f in us.failover:
            self._run_failover(s, f, "start", reason, out)
        self._notify(st, u, BACKUP, ACTIVE, out)
        u.last_active = None
        u.preempt_since = None
        u.garp_next = st.now + s.garp_refresh_ns if s.garp_refresh_ns and not s.scaleout else None
        for v in u.views.values():
            v.split = False
        self._heartbeat_now(st, out)

    @staticmethod
    def _lvsd_groups(st: PulseState) -> list[str] | None:
        """The groups lvsd programs (``pulse.start_lvsd`` v2): those held; None, every virtual
        service, when the config has no groups (as before them)."""
        return st.held() if st.cfg.grouped else None

    def _lvsd_follows(self, st: PulseState, reason: str, out: list) -> None:
        """A unit left ACTIVE: lvsd stops when no group is held any more, else programs those left."""
        if st.held():
            out.append(Effect("pulse.start_lvsd", {"reason": reason, "groups": self._lvsd_groups(st)}))
        else:
            out.append(Effect("pulse.stop_lvsd", {"reason": reason}))

    def _step_down(
        self, st: PulseState, u: Unit, trigger: str, dest: str, reason: str, peer: str | None, out: list,
        heartbeat: bool = True,
    ) -> None:
        if not _fire(u, trigger):
            return
        s = st.settings
        self._lvsd_follows(st, reason, out)
        u.active_since = None
        if s is not None:
            for f in u.cfg.failover:
                self._run_failover(s, f, "stop", reason, out)
            out.append(Effect("pulse.release_vips", {"vips": [v.payload() for v in u.cfg.vips], "reason": reason}))
        self._role_changed(st, u, ACTIVE, dest, reason, peer, out)
        u.garp_next = None
        u.preempt_since = None
        if heartbeat and (dest == BACKUP or (dest == FAULT and st.rules >= 3)):
            # tell the peers at once (over the links still up): a backup hears the role it left
            # ACTIVE for and takes over as peer_stepped_down, without waiting for deadtime
            self._heartbeat_now(st, out)

    def _role_changed(
        self, st: PulseState, u: Unit, old: str, new: str, reason: str, peer: str | None, out: list,
        notify: bool = True,
    ) -> None:
        s = st.settings
        out.append(Effect("router.role_changed", {
            "node": s.local if s else (st.hostname or "unknown")[:64],
            "old": old, "new": new, "reason": reason,
            "priority": self._tracked_priority(st, u), "epoch": st.epoch or 0, "peer": peer, "group": u.name,
        }))
        if notify:
            self._notify(st, u, old, new, out)

    def _notify(self, st: PulseState, u: Unit, old: str, new: str, out: list) -> None:
        s = st.settings
        if s is None or u.cfg_ is None:
            return
        us = u.cfg
        common = {"role": new, "old_role": old, "timeout_ms": s.notify_timeout_ms}
        if new == ACTIVE and us.active_cmd:
            out.append(Effect("pulse.run_notify", {"kind": "active_cmd", "command": us.active_cmd, "args": [], **common}))
        if old == ACTIVE and new != ACTIVE and us.inactive_cmd:
            out.append(Effect("pulse.run_notify", {"kind": "inactive_cmd", "command": us.inactive_cmd, "args": [], **common}))
        if new == FAULT and old != FAULT and us.fault_cmd:
            out.append(Effect("pulse.run_notify", {"kind": "fault_cmd", "command": us.fault_cmd, "args": [], **common}))
        if us.notify_cmd and new in _NOTIFY_STATE:
            # keepalived's "INSTANCE NAME STATE PRIORITY": the group's name (the router's without groups)
            args = ["INSTANCE", u.name if s.grouped else s.local, _NOTIFY_STATE[new], str(self._tracked_priority(st, u))]
            out.append(Effect("pulse.run_notify", {"kind": "notify", "command": us.notify_cmd, "args": args, **common}))

    # -- failover services (service = fos) --------------------------------------------------
    @staticmethod
    def _run_failover(s: PulseSettings, f: tuple, action: str, reason: str, out: list) -> None:
        name, start_cmd, stop_cmd, _timeout, _reentry = f
        command = start_cmd if action == "start" else stop_cmd
        if command:
            out.append(Effect("pulse.run_failover", {
                "service": name, "action": action, "command": command, "reason": reason,
                "timeout_ms": s.notify_timeout_ms,
            }))

    def _failed_services(self, st: PulseState, u: Unit) -> list[tuple]:
        """The failover services that failed on this ACTIVE unit: nanny says DOWN (timeout seconds
        of failed checks in a row) and it has been active for at least that service's timeout (a
        service that was DOWN when this router took over, e.g. seen through the VIP while the old
        active's copy was dying, gets timeout seconds to come up after its start_cmd)."""
        if u.role != ACTIVE or u.cfg_ is None or u.active_since is None:
            return []
        since = u.active_since
        return [f for f in u.cfg.failover if st.fos_health.get(f[0]) == "DOWN" and st.now - since >= f[3]]

    def _check_failover(self, st: PulseState, u: Unit, out: list) -> None:
        """Piranha's fos: a failed failover service on the active router makes it give up, so the
        backup takes over (VIPs, start_cmd). This router advertises priority 0 for the longest
        reentry of the failed services, so it does not preempt back at once (docs/pulse.md)."""
        failed = self._failed_services(st, u)
        if not failed:
            return
        u.gave_up_until = st.now + max(f[4] for f in failed)
        self._step_down(st, u, "step_down", BACKUP, "failover_service_failed", None, out)

    def _failover_deadlines(self, st: PulseState, u: Unit) -> list[int]:
        due: list[int] = []
        if u.role == ACTIVE and u.cfg_ is not None and u.active_since is not None:
            since = u.active_since
            due.extend(since + f[3] for f in u.cfg.failover
                       if st.fos_health.get(f[0]) == "DOWN" and st.now < since + f[3])
        if u.role == BACKUP and u.gave_up_until > st.now:
            due.append(u.gave_up_until)
        return due

    def _failover_reload(self, u: Unit, old: UnitSettings, new: UnitSettings, out: list) -> None:
        """A reload while ACTIVE: stop what is gone or changed (its old stop_cmd), start what is new."""
        s = u.st.cfg
        before = {f[0]: f for f in old.failover}
        after = {f[0]: f for f in new.failover}
        for name, f in before.items():
            if after.get(name, (None,) * 5)[:3] != f[:3]:
                self._run_failover(s, f, "stop", "config", out)
        for name, f in after.items():
            if before.get(name, (None,) * 5)[:3] != f[:3]:
                self._run_failover(s, f, "start", "config", out)

    def _heartbeat(self, st: PulseState, leaving: bool = False) -> Effect:
        s = st.cfg
        st.seq += 1
        units = list(st.units.values())
        first = units[0]
        return Effect("pulse.send_heartbeat", {
            "node": s.local, "role": first.role, "priority": self._my_priority(st, first), "epoch": st.epoch,
            "seq": st.seq, "leaving": leaving, "port": s.port, "destinations": s.destinations(),
            "groups": [{"group": g, "role": u.role, "priority": self._my_priority(st, u)}
                       for u in units for g in u.cfg.groups],
        })

    def _heartbeat_now(self, st: PulseState, out: list) -> None:
        s = st.settings
        if s is not None and s.heartbeat_enabled:
            out.append(self._heartbeat(st))
            st.next_hb = st.now + s.keepalive_ns

    @staticmethod
    def _announce(out: list, s: PulseSettings, vips: list, repeat: int, reason: str) -> None:
        """Gratuitous ARP for ``vips``; none in scale-out (the VIPs are on every router's loopback
        device, reached by routing, never by ARP)."""
        if s.scaleout:
            return
        out.append(Effect("pulse.send_garp", {
            "vips": vips, "repeat": max(1, repeat), "interval_ms": s.garp_interval_ms, "reason": reason,
        }))
