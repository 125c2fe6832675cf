"""pulse's pure core: the router role FSM (INIT, BACKUP, ACTIVE, FAULT, STOPPED), peer tracking
per (peer, link), the election among N routers, fencing, split-brain resolution and preemption.

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
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from transitions import Machine, MachineError

from lvsbus.config import Config, from_dict
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
RULES = 4

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
class PulseSettings:
    local: str
    routers: tuple[RouterInfo, ...]
    vips: tuple[Vip, ...]
    port: int = 539
    heartbeat_enabled: bool = True
    keepalive_ns: int = 2 * _NS
    deadtime_ns: int = 5 * _NS
    preempt: bool = True
    preempt_delay_ns: int = 0
    garp_repeat: int = 5
    garp_refresh_ns: int = 0
    garp_interval_ms: int = 200
    active_cmd: str | None = None
    inactive_cmd: str | None = None
    notify_cmd: str | None = None
    notify_timeout_ms: int = 30_000
    #: service = fos: the active failover services, (name, start_cmd, stop_cmd, timeout_ns, reentry_ns)
    failover: tuple[tuple[str, str, str, int, int], ...] = ()
    #: this router's tracked items ([track.NAME]): services/pulse/tracking.py
    tracks: tuple[TrackSpec, ...] = ()
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
        d["vips"] = [[v.address, v.prefixlen, v.family, v.device, v.label, v.owner] for v in self.vips]
        return d

    @classmethod
    def from_plain(cls, d: dict) -> PulseSettings:
        d = dict(d)
        d["routers"] = tuple(RouterInfo(*r) for r in d["routers"])
        d["vips"] = tuple(Vip(*v) for v in d["vips"])
        d["failover"] = tuple(tuple(f) for f in d.get("failover", ()))
        d["tracks"] = tuple(TrackSpec(*t) for t in d.get("tracks", ()))
        return cls(**d)


def _ns(seconds: Any, what: str, minimum: float = 0.0) -> int:
    if type(seconds) not in (int, float) or seconds != seconds or seconds < minimum:
        raise ValueError(f"{what} must be a number of seconds >= {minimum}, got {seconds!r}")
    return int(round(seconds * _NS))


def _settings_from_config(payload: dict) -> PulseSettings:
    """pulse's settings from a ``config.loaded`` payload: ``model`` is ``lvsbus.config.to_dict(cfg)``,
    rebuilt (and re-validated) with ``lvsbus.config.from_dict``; ``local_router`` names this router.
    Raises ValueError (ConfigError is one) or KeyError/TypeError for something unusable."""
    return _settings_from_model(from_dict(payload["model"]), payload["local_router"])


def _settings_from_model(cfg: Config, local: str) -> PulseSettings:
    """What pulse reads of the model: ``routers[].{name, address, private_address, priority,
    device}``, ``heartbeat.{enabled, port, keepalive, deadtime, preempt, preempt_delay, garp_repeat,
    garp_refresh}``, ``notify.{active_cmd, inactive_cmd, notify}``, the active
    ``virtual_services[]`` and ``failover_services[]`` ``.{name, address, device, label,
    vip_prefixlen}`` and ``nat_router.{address, device, label, prefixlen}``."""
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
    # service = lvs: the virtual services' VIPs and nat_router's; service = fos: the failover services'
    vip_list = tuple(Vip(v.address, v.prefixlen, v.family, v.device, v.label, ",".join(v.owners)[:256])
                     for v in config_vips(cfg, me.device))
    hb, nt = cfg.heartbeat, cfg.notify
    keepalive = _ns(hb.keepalive, "heartbeat.keepalive", 0.001)
    deadtime = _ns(hb.deadtime, "heartbeat.deadtime", 0.001)
    if deadtime < keepalive:
        raise ValueError("heartbeat.deadtime must be at least heartbeat.keepalive")
    return PulseSettings(
        local=local,
        routers=routers,
        vips=vip_list,
        port=int(hb.port),
        heartbeat_enabled=bool(hb.enabled),
        keepalive_ns=keepalive,
        deadtime_ns=deadtime,
        preempt=bool(hb.preempt),
        preempt_delay_ns=_ns(hb.preempt_delay, "heartbeat.preempt_delay"),
        garp_repeat=max(1, int(hb.garp_repeat)),
        garp_refresh_ns=_ns(hb.garp_refresh or 0.0, "heartbeat.garp_refresh"),
        # not in the model (yet): the pause between repeated ARPs and the notify timeout
        garp_interval_ms=_ns(getattr(hb, "garp_interval", 0.2), "heartbeat.garp_interval") // 1_000_000,
        active_cmd=nt.active_cmd or None,
        inactive_cmd=nt.inactive_cmd or None,
        notify_cmd=nt.notify or None,
        notify_timeout_ms=_ns(getattr(nt, "timeout", 30.0), "notify.timeout") // 1_000_000,
        failover=tuple(
            (fs.name, fs.start_cmd or "", fs.stop_cmd or "", _ns(fs.timeout, f"failover.{fs.name}.timeout"),
             _ns(fs.reentry, f"failover.{fs.name}.reentry"))
            for fs in cfg.fos_services() if fs.active
        ),
        tracks=tracking.specs(cfg.tracks, local),
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


def reconcile_vips(role: str, settings: PulseSettings | None) -> tuple[str, tuple[Vip, ...]] | None:
    """What a restarted pulse does with the VIPs once the answers it owed are recorded and run
    (``on_caught_up``): ACTIVE, make sure they are there and announce them once (a takeover
    recorded whose effects did not all run has not told the clients); any other role but INIT,
    make sure they are not; INIT (a fresh run: its first decision releases them) or no settings,
    nothing."""
    if settings is None:
        return None
    if role == ACTIVE:
        return TAKE, settings.vips
    if role != INIT:
        return RELEASE, settings.vips
    return None


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
    """What this router knows about one peer."""

    __slots__ = ("role", "priority", "epoch", "newest", "alive", "left", "alive_since", "last_heard", "split", "links")

    def __init__(self, priority: int, links: tuple[str, ...]):
        self.role: str = INIT  # as last reported
        self.priority = priority  # as last reported (config until heard)
        self.epoch: int | None = None
        self.newest: int | None = None  # the highest seq accepted in this epoch, over every link
        self.alive = False  # heard on some link within deadtime, and not left
        self.left = False  # sent a leaving heartbeat (graceful shutdown)
        self.alive_since = 0
        self.last_heard: int | None = None
        self.split = False  # seen ACTIVE while we were ACTIVE (resolved once per episode)
        self.links: dict[str, PeerLink] = {link: PeerLink() for link in links}

    @property
    def heard_ns(self) -> int:
        """When an alive peer was last heard (alive means heard: never None then)."""
        if self.last_heard is None:
            raise RuntimeError("pulse: a peer alive but never heard")
        return self.last_heard

    def to_plain(self) -> list:
        return [
            self.role, self.priority, self.epoch, self.newest, self.alive, self.left, self.alive_since,
            self.last_heard, self.split, {k: [v.last_heard, v.last_seq, v.degraded] for k, v in self.links.items()},
        ]

    @classmethod
    def from_plain(cls, d: list) -> Peer:
        p = cls(d[1], ())
        p.role, p.priority, p.epoch, p.newest, p.alive, p.left, p.alive_since, p.last_heard, p.split = d[:9]
        p.links = {k: PeerLink(*v) for k, v in d[9].items()}
        return p


class PulseState:
    """The model of the role FSM (``role`` is the Machine's attribute) plus what pulse knows."""

    _PLAIN = (
        "role", "epoch", "hostname", "seq", "now", "next_hb", "listen_until", "preempt_since",
        "preempt_hold_until", "garp_next", "links_up", "last_active", "ignored", "rejected_configs",
        "own_clock", "heard_from", "rules", "eff_priority", "track_fault", "fault_cause",
    )

    def __init__(self) -> None:
        self.role = INIT
        self.settings: PulseSettings | None = None
        self.epoch: int | None = None  # ours, from pulse.started
        self.hostname = ""
        self.seq = 0  # our datagram sequence (heartbeats and fences)
        self.now = 0  # mono_ns of the event being decided
        self.next_hb: int | None = None
        self.listen_until: int | None = None
        self.preempt_since: int | None = None
        self.preempt_hold_until = 0
        self.garp_next: int | None = None
        self.links_up: dict[str, bool] = {}
        self.peers: dict[str, Peer] = {}
        self.last_active: str | None = None  # the peer last known to be active
        self.ignored = 0
        self.rejected_configs = 0
        self.reannounce_after: dict[str, int] = {}  # peer -> no re-announcement for its late news before
        # service = fos (see _check_failover): each failover service's health as nanny last said
        # (health.failover_changed), when this router last became ACTIVE, and until when a router
        # that gave up (a failover service failed here) advertises priority 0
        self.fos_health: dict[str, str] = {}
        self.active_since: int | None = None
        self.gave_up_until = 0
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
        # tracking (services/pulse/tracking.py): what is known of each tracked item (an interface's
        # or a file's value, a script's health state), the effective priority (None: no tracked
        # item, the configured priority), the weight-0 item holding the router in FAULT, and why
        # the router is in FAULT ("link" or "track": the reason it gives when it recovers)
        self.track_seen: dict[str, int | str] = {}
        self.eff_priority: int | None = None
        self.track_fault: str | None = None
        self.fault_cause: str | None = None

    @property
    def cfg(self) -> PulseSettings:
        """The settings, where the role machine only goes once configured (INIT leaves only on a
        config): None there is a bug, said as one."""
        if self.settings is None:
            raise RuntimeError("pulse: settings used before any config.loaded")
        return self.settings

    # FSM conditions (named in ROLE_TRANSITIONS)
    def has_config(self) -> bool:
        return self.settings is not None

    def has_started(self) -> bool:
        return self.epoch is not None

    def done_listening(self) -> bool:
        return self.listen_until is None or self.now >= self.listen_until

    def all_links_down(self) -> bool:
        links = self.settings.local_links() if self.settings else LINKS
        return not any(self.links_up.get(link, True) for link in links)

    def link_fault(self) -> bool:
        """This router cannot serve the VIPs: its public link (where they live and clients are)
        is down, or no heartbeat link is up. Losing only the private link is a degraded link,
        not a fault (keepalived's FAULT on a tracked interface)."""
        return not self.links_up.get("public", True) or self.all_links_down()

    def faulty(self) -> bool:
        """This router must not serve: a link fault, or a tracked item with weight 0 failed."""
        return self.link_fault() or self.track_fault is not None

    def can_serve(self) -> bool:
        return not self.faulty()

    def __repr__(self) -> str:
        return f"<PulseState {self.role} peers={list(self.peers)}>"


def _fire(state: PulseState, trigger: str) -> bool:
    """Fire one trigger of the shared Machine on ``state``; False when not allowed (guards or source)."""
    try:
        return MACHINE.events[trigger].trigger(state)
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
OWN_CLOCK = frozenset({"pulse.started", "pulse.heartbeat_received", "pulse.fence_received",
                       "pulse.link_changed", "pulse.track_observed", "timer.fired"})


class PulseCore(Core[PulseState]):
    name: ClassVar[str] = "pulse"
    inputs: ClassVar[tuple[str, ...]] = (
        "config.loaded", "pulse.started", "pulse.heartbeat_received", "pulse.fence_received",
        "pulse.link_changed", "router.shutdown_requested", "timer.fired", "health.failover_changed",
        "operator.handover_requested", "pulse.track_observed", "health.track_changed",
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
    # fault_cause)
    snapshot_version = 8
    snapshot_upcasters = {
        1: lambda data: {"reannounce_after": 0, **data["state"]},
        2: lambda data: {"fos_health": {}, "active_since": None, "gave_up_until": 0, **data},
        3: lambda data: {**data, "reannounce_after": ({n: data["reannounce_after"] for n in data["peers"]}
                                                      if data["reannounce_after"] else {})},
        4: lambda data: {**data, "own_clock": False},
        5: lambda data: {**data, "heard_from": 0},
        6: lambda data: {**data, "rules": 2},
        7: lambda data: {**data, "track_seen": {}, "eff_priority": None, "track_fault": None, "fault_cause": None},
    }

    def snapshot(self, state: PulseState) -> dict:
        d: dict[str, Any] = {k: getattr(state, k) for k in PulseState._PLAIN}
        d["links_up"] = dict(state.links_up)
        d["reannounce_after"] = dict(state.reannounce_after)
        d["fos_health"] = dict(state.fos_health)
        d["track_seen"] = dict(state.track_seen)
        d["active_since"] = state.active_since
        d["gave_up_until"] = state.gave_up_until
        d["settings"] = state.settings.to_plain() if state.settings else None
        d["peers"] = {name: p.to_plain() for name, p in state.peers.items()}
        return d

    def restore(self, d: dict) -> PulseState:
        st = PulseState()
        for k in PulseState._PLAIN:
            setattr(st, k, d[k])
        st.links_up = dict(d["links_up"])
        st.reannounce_after = dict(d["reannounce_after"])
        st.fos_health = dict(d["fos_health"])
        st.track_seen = dict(d["track_seen"])
        st.active_since = d["active_since"]
        st.gave_up_until = d["gave_up_until"]
        st.settings = PulseSettings.from_plain(d["settings"]) if d["settings"] else None
        st.peers = {name: Peer.from_plain(p) for name, p in d["peers"].items()}
        return st

    # -- deadlines -------------------------------------------------------------------------
    def next_deadline(self, st: PulseState) -> int | None:
        s = st.settings
        if s is None or st.role in (INIT, STOPPED):
            return None
        due: list[int] = []
        if st.role in (BACKUP, ACTIVE) and s.heartbeat_enabled and st.next_hb is not None:
            due.append(st.next_hb)
        if st.role == BACKUP:
            if st.listen_until is not None and st.listen_until > st.now:
                due.append(st.listen_until)
            if st.preempt_since is not None:
                due.append(st.preempt_since + s.preempt_delay_ns)
            if st.preempt_hold_until > st.now:
                due.append(st.preempt_hold_until)
        if st.role == ACTIVE and st.garp_next is not None:
            due.append(st.garp_next)
        due.extend(self._failover_deadlines(st))
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
            # a restarted shell (the core restored from a snapshot) brings a new epoch: adopt it
            st.epoch = p["epoch"]
            st.own_clock = p["listen"]
            st.rules = p["rules"]
            if p["listen"]:
                st.heard_from = st.now
            st.hostname = p["hostname"]
            if st.role == INIT:
                self._try_start(st, out)
            elif st.role == BACKUP and p["listen"] and st.settings is not None:
                # pulse was down a while and heard nothing meanwhile: what it last heard of its
                # peers is old news. Listen for deadtime, as at a start, before it may take over: a
                # restart alone must never fail over (a v1 record, listen false, took over at once
                # when that news was more than deadtime old; replay keeps that decision)
                st.listen_until = st.now + st.settings.deadtime_ns
            elif st.role == ACTIVE and st.settings is not None and st.settings.vips:
                # pulse was down a while (its shell keeps the VIPs): a peer may have taken over and
                # moved the clients meanwhile, fences and heartbeats unheard: announce ours again
                s = st.settings
                out.append(self._garp(s, [v.payload() for v in s.vips], s.garp_repeat, "restarted"))
        elif t == "router.shutdown_requested":
            self._shutdown(st, p, out)
            return st, out
        elif t == "health.failover_changed":
            st.fos_health[p["service"]] = p["new"]
        elif t == "pulse.track_observed" or t == "health.track_changed":
            st.track_seen[p["track"]] = p["value"] if t == "pulse.track_observed" else p["new"]
            if st.settings is not None and st.role != INIT:
                self._retrack(st, out)
        elif t == "operator.handover_requested":
            self._handover(st, p, out)
        else:
            return st, []
        if st.settings is not None and st.role not in (INIT, STOPPED):
            if t in OWN_CLOCK or not st.own_clock:
                self._advance(st, out)
            self._check_failover(st, out)
            self._elect(st, out)
            self._tick(st, out)
        return st, out

    def _restart(self, st: PulseState, event: Event) -> tuple[PulseState, list]:
        """A new run of the router: after a shutdown, or after a reboot (mono_ns went back, so every
        time this state holds is meaningless). Keep the settings and the counters, forget the rest."""
        old = st.role
        out: list[Effect] = []
        if old != INIT and _fire(st, "restart"):
            self._role_changed(st, old, INIT, "started", None, out)
        fresh = PulseState()
        fresh.settings, fresh.ignored, fresh.rejected_configs = st.settings, st.ignored, st.rejected_configs
        fresh.seq = st.seq  # peers compare seqs per epoch; keeping ours growing costs nothing
        fresh.fos_health = dict(st.fos_health)  # nanny's verdicts stand until it says otherwise
        fresh.track_seen = dict(st.track_seen)  # as what was seen of the tracked items
        fresh.eff_priority, fresh.track_fault = st.eff_priority, st.track_fault
        if fresh.settings is not None:
            fresh.peers = {r.name: Peer(r.priority, fresh.settings.pair_links(r))
                           for r in fresh.settings.routers if r.name != fresh.settings.local}
        fresh.now = event.mono_ns
        fresh.epoch = event.payload["epoch"]
        fresh.hostname = event.payload["hostname"]
        fresh.own_clock = event.payload["listen"]
        fresh.rules = event.payload["rules"]
        fresh.heard_from = event.mono_ns if event.payload["listen"] else 0
        self._try_start(fresh, out)
        if fresh.role != INIT:
            self._advance(fresh, out)
            self._elect(fresh, out)
            self._tick(fresh, out)
        return fresh, out

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
        and the second one's late news is news of its own (simulator seed 12442 of --routers 3)."""
        s = st.settings
        name = p["peer"]
        if st.role != ACTIVE or s is None or not s.vips or st.now < st.reannounce_after.get(name, 0):
            return
        if kind == "fence" or p.get("role") == ACTIVE:
            st.reannounce_after[name] = st.now + s.deadtime_ns
            out.append(self._garp(s, [v.payload() for v in s.vips], s.garp_repeat, "peer_was_active"))

    def _mark_alive(self, st: PulseState, name: str, peer: Peer, link: str, out: list) -> None:
        if not peer.alive:
            peer.alive = True
            peer.left = False
            peer.alive_since = st.now
            out.append(Effect("pulse.peer_alive", {
                "peer": name, "link": link, "role": peer.role, "priority": peer.priority, "epoch": peer.epoch,
            }))
            s = st.settings
            if st.role == ACTIVE and peer.role != ACTIVE and s is not None and s.vips:
                # a peer back while we are active may have held our VIPs meanwhile (a partition
                # that healed, its active spell ended before we heard it: no split brain to see)
                # and left clients with its MAC: announce ours again. An active peer is the split
                # brain's business (_on_heartbeat), which re-announces when we stay.
                out.append(self._garp(s, [v.payload() for v in s.vips], s.garp_repeat, "peer_returned"))

    def _spell_ended(self, st: PulseState, out: list) -> None:
        """A peer we knew as ACTIVE says it is not any more (its fresh heartbeat says BACKUP, or it
        is leaving): its active spell is over, and while it lasted the peer may have announced the
        VIPs at any time, after our own last announcement too (a split brain we won: the loser
        heard a third router come back and re-announced before it heard us). Only now can our
        announcement be the last one: make it."""
        s = st.settings
        if st.role == ACTIVE and s is not None and s.vips:
            out.append(self._garp(s, [v.payload() for v in s.vips], s.garp_repeat, "peer_stepped_down"))

    def _on_heartbeat(self, st: PulseState, p: dict, out: list) -> None:
        peer, fresh = self._accept(st, "heartbeat", p, out)
        if peer is None:
            return
        name = p["peer"]
        if not fresh:
            if not peer.left:  # a peer that said goodbye stays gone for the rest of its epoch
                self._mark_alive(st, name, peer, p["link"], out)
            return
        was, was_alive, was_priority = peer.role, peer.alive, peer.priority
        peer.priority = p["priority"]
        peer.role = p["role"]
        if p["leaving"]:
            if not peer.left:
                peer.left = True
                peer.alive = False
                out.append(Effect("pulse.peer_dead", {
                    "peer": name, "cause": "left", "role": peer.role, "last_heard_ns": st.now,
                }))
                if was == ACTIVE or not was_alive:
                    self._spell_ended(st, out)
            peer.split = False
            return
        self._mark_alive(st, name, peer, p["link"], out)
        if peer.role != ACTIVE:
            peer.split = False
            if was == ACTIVE and was_alive:  # (a peer back from the dead: _mark_alive announced)
                self._spell_ended(st, out)
            return
        if st.role != ACTIVE:
            st.last_active = name
            return
        # both active: resolve once per episode, and again when the peer's rank changed (rules 4)
        if not peer.split or (st.rules >= 4 and peer.priority != was_priority):
            peer.split = True
            self._split_brain(st, name, peer, out)

    def _on_fence(self, st: PulseState, p: dict, out: list) -> None:
        peer, fresh = self._accept(st, "fence", p, out)
        if peer is None:
            return
        name = p["peer"]
        if not fresh:  # the other link's copy, or older than what the peer has said since
            if not peer.left:
                self._mark_alive(st, name, peer, p["link"], out)
            return
        # a valid fence is proof that its sender is alive and has taken over
        peer.role = ACTIVE
        peer.left = False
        self._mark_alive(st, name, peer, p["link"], out)
        st.last_active = name
        if st.role == ACTIVE:
            self._step_down(st, "step_down", BACKUP, "fenced", name, out)
        # damping: after a valid fence, no preemption for deadtime, so that a one-way partition
        # cannot make two routers fence each other at heartbeat speed
        st.preempt_hold_until = st.now + st.cfg.deadtime_ns

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
        if st.last_active not in peers:
            st.last_active = None
        st.fos_health = {k: v for k, v in st.fos_health.items() if any(f[0] == k for f in new.failover)}
        st.track_seen = {k: v for k, v in st.track_seen.items() if any(t.name == k for t in new.tracks)}
        if st.role == ACTIVE and old is not None and old.failover != new.failover:
            self._failover_reload(st, old, new, out)
        if st.role == INIT:
            self._try_start(st, out)
        elif st.role == ACTIVE and old is not None and old.vips != new.vips:
            old_set = {v.address: v for v in old.vips}
            new_set = {v.address: v for v in new.vips}
            gone = [v.payload() for a, v in old_set.items() if new_set.get(a) != v]
            added = [v.payload() for a, v in new_set.items() if old_set.get(a) != v]
            if gone:
                out.append(Effect("pulse.release_vips", {"vips": gone, "reason": "config"}))
            if added:
                out.append(Effect("pulse.take_vips", {"vips": added, "reason": "config"}))
                out.append(self._garp(new, added, new.garp_repeat, "config"))
        if st.role != INIT:
            self._retrack(st, out)

    def _try_start(self, st: PulseState, out: list) -> None:
        if not (st.has_config() and st.has_started()) or not _fire(st, "start"):
            return
        s = st.settings
        assert s is not None
        st.listen_until = st.now + s.deadtime_ns
        st.next_hb = st.now
        # a fresh start holds no VIP: remove any a crashed run left behind (idempotent)
        if s.vips:
            out.append(Effect("pulse.release_vips", {"vips": [v.payload() for v in s.vips], "reason": "started"}))
        self._role_changed(st, INIT, BACKUP, "started", None, out)
        self._retrack(st, out)

    def _check_links(self, st: PulseState, out: list) -> None:
        """FAULT when this router must not serve (``faulty``: a link fault, or a failed weight-0
        tracked item), back to BACKUP when it may again."""
        if st.role in (BACKUP, ACTIVE) and st.faulty():
            old = st.role
            if st.link_fault():
                reason = "all_links_down" if st.all_links_down() else "public_link_down"
                st.fault_cause = "link"
            else:
                reason = "track_failed"
                st.fault_cause = "track"
            if old == ACTIVE:
                self._step_down(st, "fault", FAULT, reason, None, out)
            elif _fire(st, "fault"):
                self._role_changed(st, old, FAULT, reason, None, out)
            st.preempt_since = None
        elif st.role == FAULT and st.faulty():
            st.fault_cause = "link" if st.link_fault() else "track"  # what holds it there now
        elif st.role == FAULT and _fire(st, "recover"):
            st.listen_until = st.now + st.cfg.deadtime_ns
            st.next_hb = st.now
            reason = "track_recovered" if st.fault_cause == "track" else "link_up"
            st.fault_cause = None
            self._role_changed(st, FAULT, BACKUP, reason, None, out)

    def _retrack(self, st: PulseState, out: list) -> None:
        """Assess the tracked items (services/pulse/tracking.py): a change of the effective
        priority or of the item holding the router in FAULT is a decision (``pulse.priority_changed``;
        the heartbeats carry the new priority from now on); then FAULT or recovery as it says."""
        s = st.cfg
        if s.tracks or st.eff_priority is not None or st.track_fault is not None:
            a = tracking.assess(s.me.priority, s.tracks, st.track_seen)
            new_eff = a.priority if s.tracks else None
            if (new_eff, a.fault) != (st.eff_priority, st.track_fault):
                out.append(Effect("pulse.priority_changed", {
                    "old": self._tracked_priority(st), "new": a.priority, "base": s.me.priority,
                    "items": [{"track": i.track, "failed": i.failed, "effect": i.effect} for i in a.items],
                    "fault": a.fault,
                }))
                st.eff_priority, st.track_fault = new_eff, a.fault
                if st.role == ACTIVE and st.rules >= 4:  # our rank changed during a split brain: again
                    for name, peer in st.peers.items():
                        if st.role == ACTIVE and peer.alive and peer.role == ACTIVE and peer.split:
                            self._split_brain(st, name, peer, out)
        self._check_links(st, out)

    def _shutdown(self, st: PulseState, p: dict, out: list) -> None:
        old = st.role
        s = st.settings
        if old == ACTIVE:
            self._step_down(st, "stop", STOPPED, "shutdown", None, out, heartbeat=False)
        elif _fire(st, "stop"):
            self._role_changed(st, old, STOPPED, "shutdown", None, out)
        if s is not None and old in (BACKUP, ACTIVE) and s.heartbeat_enabled:
            # the final heartbeat: peers take over at once instead of waiting for deadtime
            out.append(self._heartbeat(st, leaving=True))
        st.next_hb = st.listen_until = st.preempt_since = st.garp_next = None

    def _handover(self, st: PulseState, p: dict, out: list) -> None:
        """An operator's handover: step down as a failed failover service makes this router do
        (stop lvsd, release the VIPs, tell the peers at once with a BACKUP heartbeat, so the best
        live backup takes over as ``peer_stepped_down``) and advertise priority 0 for ``hold_s``
        so as not to preempt the role back. Refused unless ACTIVE with a live BACKUP peer."""
        if st.role != ACTIVE or st.settings is None:
            out.append(Effect("pulse.handover_refused", {"by": p["by"], "role": st.role, "reason": "not_active"}))
            return
        if not any(peer.alive and peer.role == BACKUP for peer in st.peers.values()):
            out.append(Effect("pulse.handover_refused", {"by": p["by"], "role": st.role, "reason": "no_peer"}))
            return
        st.gave_up_until = st.now + p["hold_s"] * _NS
        self._step_down(st, "step_down", BACKUP, "handover", None, out)

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
                peer.split = False
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
        if st.role == ACTIVE and st.garp_next is not None and now >= st.garp_next:
            out.append(self._garp(s, [v.payload() for v in s.vips], 1, "refresh"))
            nxt = st.garp_next + s.garp_refresh_ns
            st.garp_next = nxt if nxt > now else now + s.garp_refresh_ns

    # -- the election ----------------------------------------------------------------------
    @staticmethod
    def rank(priority: int, address: str) -> tuple[int, tuple[int, int]]:
        """Who wins: the higher priority, then the higher address (as VRRP)."""
        return (priority, _addr_key(address))

    def _peer_rank(self, st: PulseState, name: str, peer: Peer) -> tuple:
        r = st.cfg.router(name)
        if r is None:  # peers are the config's routers: a heartbeat from another is refused first
            raise RuntimeError(f"pulse: peer {name!r} is not in the config")
        return self.rank(peer.priority, r.address)

    def _my_rank(self, st: PulseState) -> tuple:
        me = st.cfg.me
        return self.rank(self._my_priority(st), me.address)

    @staticmethod
    def _tracked_priority(st: PulseState) -> int:
        """This router's priority with tracking applied: its own when it tracks nothing."""
        return st.cfg.me.priority if st.eff_priority is None else st.eff_priority

    @classmethod
    def _my_priority(cls, st: PulseState) -> int:
        """The priority this router advertises and elects with: its own moved by tracking, or 0 for
        reentry seconds after it gave up the active role because a failover service failed here (so
        that the peer takes over and this router does not preempt it back at once; with no other
        candidate it still takes over, see docs/pulse.md)."""
        return 0 if st.now < st.gave_up_until else cls._tracked_priority(st)

    def _elect(self, st: PulseState, out: list) -> None:
        """A BACKUP takes over when it is the best live candidate and no live peer is active, or
        (preempt) when it outranks every live peer, an active one included, for preempt_delay."""
        if st.role != BACKUP or not st.done_listening():
            st.preempt_since = None
            return
        s = st.settings
        assert s is not None
        mine = self._my_rank(st)
        actives = []
        for name, peer in st.peers.items():
            if not peer.alive or peer.role not in (BACKUP, ACTIVE):
                continue
            if self._peer_rank(st, name, peer) > mine:
                st.preempt_since = None
                return  # a better live router: it is the one to be active
            if peer.role == ACTIVE:
                actives.append(name)
        if actives:
            if not s.preempt or st.now < st.preempt_hold_until:
                st.preempt_since = None
                return
            if st.preempt_since is None:
                st.preempt_since = st.now
            if st.now - st.preempt_since < s.preempt_delay_ns:
                return
            self._take_over(st, "preempt", actives[0], actives, out)
            return
        st.preempt_since = None
        old = st.last_active
        old_peer = st.peers.get(old) if old else None
        if old_peer is None:
            reason, target = "no_active", None
        elif old_peer.left:
            reason, target = "peer_left", old
        elif not old_peer.alive:
            reason, target = "peer_dead", old
        else:
            reason, target = "peer_stepped_down", old
        self._take_over(st, reason, target, [target] if target else [], out)

    def _split_brain(self, st: PulseState, name: str, peer: Peer, out: list) -> None:
        s = st.cfg
        me = s.me
        lost = self._peer_rank(st, name, peer) > self._my_rank(st)
        winner, loser = (name, me.name) if lost else (me.name, name)
        mine = self._tracked_priority(st)
        wp, lp = (peer.priority, mine) if lost else (mine, peer.priority)
        out.append(Effect("pulse.split_brain_resolved", {
            "winner": winner, "loser": loser, "winner_priority": wp, "loser_priority": lp,
            "this_router_stays": not lost,
        }))
        if lost:
            st.last_active = name
            self._step_down(st, "step_down", BACKUP, "split_brain", name, out)
        else:  # re-announce at once so no client keeps the loser's MAC
            out.append(self._garp(s, [v.payload() for v in s.vips], s.garp_repeat, "split_brain"))

    # -- role changes and their effects ----------------------------------------------------
    def _take_over(self, st: PulseState, reason: str, peer: str | None, fence: list, out: list) -> None:
        if not _fire(st, "take_over"):
            return
        s = st.settings
        assert s is not None
        vips = [v.payload() for v in s.vips]
        self._role_changed(st, BACKUP, ACTIVE, reason, peer, out, notify=False)
        out.append(Effect("pulse.take_vips", {"vips": vips, "reason": reason}))
        out.append(self._garp(s, vips, s.garp_repeat, "takeover"))
        for target in dict.fromkeys(fence):
            if target and target != s.local and s.router(target) is not None:
                st.seq += 1
                out.append(Effect("pulse.send_fence", {
                    "node": s.local, "target": target, "epoch": st.epoch, "seq": st.seq, "reason": reason,
                    "port": s.port, "destinations": s.destinations(only=target),
                }))
        out.append(Effect("pulse.start_lvsd", {"reason": reason}))
        st.active_since = st.now
        for f in s.failover:
            self._run_failover(s, f, "start", reason, out)
        self._notify(st, BACKUP, ACTIVE, out)
        st.last_active = None
        st.preempt_since = None
        st.garp_next = st.now + s.garp_refresh_ns if s.garp_refresh_ns else None
        for p in st.peers.values():
            p.split = False
        self._heartbeat_now(st, out)

    def _step_down(
        self, st: PulseState, trigger: str, dest: str, reason: str, peer: str | None, out: list,
        heartbeat: bool = True,
    ) -> None:
        if not _fire(st, trigger):
            return
        s = st.settings
        out.append(Effect("pulse.stop_lvsd", {"reason": reason}))
        st.active_since = None
        if s is not None:
            for f in s.failover:
                self._run_failover(s, f, "stop", reason, out)
            out.append(Effect("pulse.release_vips", {"vips": [v.payload() for v in s.vips], "reason": reason}))
        self._role_changed(st, ACTIVE, dest, reason, peer, out)
        st.garp_next = None
        st.preempt_since = None
        if heartbeat and (dest == BACKUP or (dest == FAULT and st.rules >= 3)):
            # tell the peers at once (over the links still up): a backup hears the role it left
            # ACTIVE for and takes over as peer_stepped_down, without waiting for deadtime
            self._heartbeat_now(st, out)

    def _role_changed(
        self, st: PulseState, old: str, new: str, reason: str, peer: str | None, out: list, notify: bool = True,
    ) -> None:
        s = st.settings
        out.append(Effect("router.role_changed", {
            "node": s.local if s else (st.hostname or "unknown")[:64],
            "old": old, "new": new, "reason": reason,
            "priority": self._tracked_priority(st) if s else 0, "epoch": st.epoch or 0, "peer": peer,
        }))
        if notify:
            self._notify(st, old, new, out)

    def _notify(self, st: PulseState, old: str, new: str, out: list) -> None:
        s = st.settings
        if s is None:
            return
        common = {"role": new, "old_role": old, "timeout_ms": s.notify_timeout_ms}
        if new == ACTIVE and s.active_cmd:
            out.append(Effect("pulse.run_notify", {"kind": "active_cmd", "command": s.active_cmd, "args": [], **common}))
        if old == ACTIVE and new != ACTIVE and s.inactive_cmd:
            out.append(Effect("pulse.run_notify", {"kind": "inactive_cmd", "command": s.inactive_cmd, "args": [], **common}))
        if s.notify_cmd and new in _NOTIFY_STATE:
            args = ["INSTANCE", s.local, _NOTIFY_STATE[new], str(self._tracked_priority(st))]
            out.append(Effect("pulse.run_notify", {"kind": "notify", "command": s.notify_cmd, "args": args, **common}))

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

    def _failed_services(self, st: PulseState) -> list[tuple]:
        """The failover services that failed on this ACTIVE router: nanny says DOWN (timeout seconds
        of failed checks in a row) and it has been active for at least that service's timeout (a
        service that was DOWN when this router took over, e.g. seen through the VIP while the old
        active's copy was dying, gets timeout seconds to come up after its start_cmd)."""
        s = st.settings
        if st.role != ACTIVE or s is None or st.active_since is None:
            return []
        return [f for f in s.failover
                if st.fos_health.get(f[0]) == "DOWN" and st.now - st.active_since >= f[3]]

    def _check_failover(self, st: PulseState, out: list) -> None:
        """Piranha's fos: a failed failover service on the active router makes it give up, so the
        backup takes over (VIPs, start_cmd). This router advertises priority 0 for the longest
        reentry of the failed services, so it does not preempt back at once (docs/pulse.md)."""
        failed = self._failed_services(st)
        if not failed:
            return
        st.gave_up_until = st.now + max(f[4] for f in failed)
        self._step_down(st, "step_down", BACKUP, "failover_service_failed", None, out)

    def _failover_deadlines(self, st: PulseState) -> list[int]:
        s = st.settings
        due: list[int] = []
        if st.role == ACTIVE and s is not None and st.active_since is not None:
            due.extend(st.active_since + f[3] for f in s.failover
                       if st.fos_health.get(f[0]) == "DOWN" and st.now < st.active_since + f[3])
        if st.role == BACKUP and st.gave_up_until > st.now:
            due.append(st.gave_up_until)
        return due

    def _failover_reload(self, st: PulseState, old: PulseSettings, new: PulseSettings, out: list) -> None:
        """A reload while ACTIVE: stop what is gone or changed (its old stop_cmd), start what is new."""
        before = {f[0]: f for f in old.failover}
        after = {f[0]: f for f in new.failover}
        for name, f in before.items():
            if after.get(name, (None,) * 5)[:3] != f[:3]:
                self._run_failover(new, f, "stop", "config", out)
        for name, f in after.items():
            if before.get(name, (None,) * 5)[:3] != f[:3]:
                self._run_failover(new, f, "start", "config", out)

    def _heartbeat(self, st: PulseState, leaving: bool = False) -> Effect:
        s = st.settings
        assert s is not None
        st.seq += 1
        return Effect("pulse.send_heartbeat", {
            "node": s.local, "role": st.role, "priority": self._my_priority(st), "epoch": st.epoch, "seq": st.seq,
            "leaving": leaving, "port": s.port, "destinations": s.destinations(),
        })

    def _heartbeat_now(self, st: PulseState, out: list) -> None:
        s = st.settings
        if s is not None and s.heartbeat_enabled:
            out.append(self._heartbeat(st))
            st.next_hb = st.now + s.keepalive_ns

    @staticmethod
    def _garp(s: PulseSettings, vips: list, repeat: int, reason: str) -> Effect:
        return Effect("pulse.send_garp", {
            "vips": vips, "repeat": max(1, repeat), "interval_ms": s.garp_interval_ms, "reason": reason,
        })
