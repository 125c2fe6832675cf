"""Tracking, pure: what each tracked item ([track.NAME], docs/config.md "Tracking") does to this
router's priority, and whether it holds the router in FAULT (keepalived's track_interface,
track_script, track_file).

pulse's core calls ``assess`` on every change of what it knows of its items: an interface's or a
file's value (``pulse.track_observed``, from pulse's shell), a script's health state
(``health.track_changed``, from nanny), or whether a virtual service has quorum on this router
(``service_seen``, from nanny's verdicts on its real servers). No I/O, no clock: the simulator
runs this same code.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from lvsbus.config.quorum import quorum_up, weight_in_service

INTERFACE, SCRIPT, FILE, SERVICE = "interface", "script", "file", "service"

#: keepalived's range for a priority moved by tracking
LOWEST, HIGHEST = 1, 254
#: a file's value times its weight at or under this is a fault (keepalived's track_file)
FILE_FAULT_AT = -254
#: a script's health states that count as failed: DOWN, and RISING (failed, not yet risen back)
SCRIPT_FAILED = frozenset({"DOWN", "RISING"})


class TrackSpec(NamedTuple):
    """What pulse needs of one tracked item of this router."""

    name: str
    kind: str  # INTERFACE, SCRIPT, FILE or SERVICE
    weight: int
    reverse: bool
    #: SERVICE: the virtual service, its quorum and hysteresis, its active real servers (health
    #: id ``VIRTUAL/SERVER``, configured weight)
    virtual: str | None = None
    quorum: int = 1
    hysteresis: int = 0
    servers: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_plain(cls, t: list) -> TrackSpec:
        """From ``list(spec)`` after a trip through msgpack or JSON (4 fields before SERVICE)."""
        head = cls(*t[:4])
        if len(t) == 4:
            return head
        return head._replace(virtual=t[4], quorum=t[5], hysteresis=t[6],
                             servers=tuple((str(i), int(w)) for i, w in t[7]))

class ItemEffect(NamedTuple):
    track: str
    failed: bool  # interface down, script failed, file value not 0 (after reverse)
    effect: int  # what it adds to the priority now
    fault: bool  # it holds the router in FAULT


class Assessment(NamedTuple):
    priority: int  # the effective priority
    fault: str | None  # the first item (config order) holding the router in FAULT
    items: tuple[ItemEffect, ...]


def specs(tracks: Iterable, local: str, virtuals: Mapping[str, Any] | None = None) -> tuple[TrackSpec, ...]:
    """This router's tracked items, from the config's ``tracks`` (``lvsbus.config.Track``);
    ``virtuals``: the virtual services by name (``lvsbus.config.VirtualService``), for SERVICE."""
    out = []
    for t in tracks:
        if not t.applies_to(local):
            continue
        spec = TrackSpec(t.name, t.kind.value, int(t.weight), bool(t.reverse))
        vs = (virtuals or {}).get(t.virtual) if spec.kind == SERVICE else None
        if vs is not None:
            spec = spec._replace(virtual=vs.name, quorum=int(vs.quorum), hysteresis=int(vs.hysteresis),
                                 servers=tuple((f"{vs.name}/{rs.name}", int(rs.weight))
                                               for rs in vs.servers if rs.active))
        out.append(spec)
    return tuple(out)


#: the health states that are nanny's verdict on a real server (RISING and FALLING only after one)
VERDICTS = frozenset({"UP", "DOWN"})


def service_seen(spec: TrackSpec, health: Mapping[str, str], was: int | str | None) -> int | None:
    """What is seen of a SERVICE item: 1 while its virtual service has quorum on this router, 0 once
    lost (quorum and hysteresis as lvsd applies them, to nanny's verdicts; operator drains are not
    health and do not count here); None, taken as fine, until nanny has given a verdict on every
    real server (a router that just started does not give up a group on servers not yet checked).
    ``health``: health id -> state, holding only servers that have had a verdict."""
    if any(id_ not in health for id_, _w in spec.servers):
        return None
    was_up = None if was is None else bool(was)
    return int(quorum_up(weight_in_service(spec.servers, health), spec.quorum, spec.hysteresis, was_up))


def item_effect(spec: TrackSpec, seen: int | str | None) -> ItemEffect:
    """One item, from what is known of it: an interface's value (1 up, 0 down), a file's integer,
    a script's health state; None when nothing was heard yet (fine: an interface is taken as up
    until the shell's first poll, a script as passing until nanny's first verdict, a file as 0)."""
    if spec.kind == FILE:
        value = seen if isinstance(seen, int) else 0
        if spec.reverse:
            value = -value
        if spec.weight == 0:
            return ItemEffect(spec.name, value != 0, 0, value != 0)
        effect = value * spec.weight
        return ItemEffect(spec.name, value != 0, effect, effect <= FILE_FAULT_AT)
    if spec.kind == SCRIPT:
        fine = seen not in SCRIPT_FAILED
    else:
        fine = seen != 0
    if spec.reverse:
        fine = not fine
    if spec.weight == 0:
        return ItemEffect(spec.name, not fine, 0, not fine)
    if spec.weight > 0:
        return ItemEffect(spec.name, not fine, spec.weight if fine else 0, False)
    return ItemEffect(spec.name, not fine, 0 if fine else spec.weight, False)


def assess(base: int, specs: Iterable[TrackSpec], seen: Mapping[str, int | str]) -> Assessment:
    """The effective priority: ``base`` plus every item's effect, clamped to 1..254 once any effect
    is not 0 (a router with no effect keeps its own priority, 255 included); and the item holding
    the router in FAULT, if any."""
    items = tuple(item_effect(s, seen.get(s.name)) for s in specs)
    fault = next((i.track for i in items if i.fault), None)
    if any(i.effect for i in items):
        priority = min(HIGHEST, max(LOWEST, base + sum(i.effect for i in items)))
    else:
        priority = base
    return Assessment(priority, fault, items)
