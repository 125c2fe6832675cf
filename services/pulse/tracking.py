"""Tracking, pure: what each tracked item ([track.NAME], docs/config.md "Tracking") does to this
router's priority, and whether it holds the router in FAULT (keepalived's track_interface,
track_script, track_file).

pulse's core calls ``assess`` on every change of what it knows of its items: an interface's or a
file's value (``pulse.track_observed``, from pulse's shell) or a script's health state
(``health.track_changed``, from nanny). No I/O, no clock: the simulator runs this same code.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

INTERFACE, SCRIPT, FILE = "interface", "script", "file"

#: keepalived's range for a priority moved by tracking
LOWEST, HIGHEST = 1, 254
#: a file's value times its weight at or under this is a fault (keepalived's track_file)
FILE_FAULT_AT = -254
#: a script's health states that count as failed: DOWN, and RISING (failed, not yet risen back)
SCRIPT_FAILED = frozenset({"DOWN", "RISING"})


class TrackSpec(NamedTuple):
    """What pulse needs of one tracked item of this router."""

    name: str
    kind: str  # INTERFACE, SCRIPT or FILE
    weight: int
    reverse: bool


class ItemEffect(NamedTuple):
    track: str
    failed: bool  # interface down, script failed, file value not 0 (after reverse)
    effect: int  # what it adds to the priority now
    fault: bool  # it holds the router in FAULT


class Assessment(NamedTuple):
    priority: int  # the effective priority
    fault: str | None  # the first item (config order) holding the router in FAULT
    items: tuple[ItemEffect, ...]


def specs(tracks: Iterable, local: str) -> tuple[TrackSpec, ...]:
    """This router's tracked items, from the config's ``tracks`` (``lvsbus.config.Track``)."""
    return tuple(TrackSpec(t.name, t.kind.value, int(t.weight), bool(t.reverse))
                 for t in tracks if t.applies_to(local))


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
