"""pulse's track watch, pure: what the shell watches of ``[track.NAME]`` (kind interface and file,
this router's), what a tracked file's bytes mean, and which ``pulse.track_observed`` a poll
publishes (docs/config.md "Tracking", docs/pulse.md "Inputs").

No I/O: the shell (services/pulse/shell.py ``_watch_tracks``) reads the links (netlink) and the
files (at most ``FILE_READ_MAX`` bytes) and hands what it saw to these functions; the simulator can
call them too. Tracked scripts are nanny's (health.track_changed), not pulse's.
"""
from __future__ import annotations

import re
from typing import NamedTuple

#: the kinds pulse's shell watches (a script is run by nanny)
WATCHED_KINDS = ("interface", "file")
#: the most a tracked file's read takes (bytes): more is not a number
FILE_READ_MAX = 64
#: pulse.track_observed's value range (the schema's int32) and its detail's length
VALUE_MIN = -(2**31)
VALUE_MAX = 2**31 - 1
DETAIL_MAX = 128

_NUMBER = re.compile(r"[+-]?[0-9]+")


class Watched(NamedTuple):
    """One watched item: its name, kind (interface or file) and what is watched (device or path).
    A reload that changes the kind or the target makes it a new item (published again)."""

    name: str
    kind: str
    target: str


#: what a poll saw of one item: (value, detail), pulse.track_observed's
Observation = tuple[int, str]


def watched_items(model: dict, local: str) -> tuple[Watched, ...]:
    """The items of kind interface and file that router ``local`` tracks (``on_routers`` empty or
    naming it), in config order. ``model``: a ``config.loaded`` model (one written before tracking
    existed has no ``tracks``: nothing to watch). An item without its device or path (the
    validator refuses it) is left out."""
    out = []
    for t in model.get("tracks") or ():
        kind = t.get("kind")
        if kind not in WATCHED_KINDS:
            continue
        on = t.get("on_routers") or ()
        if on and local not in on:
            continue
        target = t.get("device") if kind == "interface" else t.get("path")
        if target:
            out.append(Watched(t["name"], kind, target))
    return tuple(out)


def interface_observation(exists: bool, up: bool) -> Observation:
    """A tracked interface: 1 up (``netutil.link_up``: carrier and operstate UP), 0 down; a
    device that does not exist is down."""
    if not exists:
        return 0, "no such device"
    return (1, "up") if up else (0, "down")


def file_observation(data: bytes | None, error: str | None = None) -> Observation:
    """A tracked file, keepalived's way: its content, whitespace stripped, is an optional sign and
    decimal digits -> that integer (clamped to the int32 range, detail says so); anything else
    reads 0. ``data`` None: the file does not exist (``error`` None) or could not be read
    (``error``: why). ``data`` longer than ``FILE_READ_MAX`` bytes is not a number."""
    if data is None:
        if error is None:
            return 0, "missing"
        return 0, _cut(f"unreadable: {error}")
    if len(data) > FILE_READ_MAX:
        return 0, f"not a number (over {FILE_READ_MAX} bytes)"
    text = data.strip()
    if not text:
        return 0, "empty"
    try:
        s = text.decode("ascii")
    except UnicodeDecodeError:
        return 0, "not a number"
    if not _NUMBER.fullmatch(s):
        return 0, "not a number"
    n = int(s)
    if n > VALUE_MAX or n < VALUE_MIN:
        n = VALUE_MAX if n > 0 else VALUE_MIN
        return n, _cut(f"{s} (clamped to {n})")
    return n, str(n)


def track_changes(known: dict[Watched, Observation], watched: tuple[Watched, ...],
                  observed: dict[Watched, Observation]) -> list[dict]:
    """The ``pulse.track_observed`` payloads to publish for a poll: each watched item whose
    observation differs (value or detail) from what is known, and each one never reported (so a
    (re)started shell, or a reload that adds an item, publishes it once at its first poll: the core
    learns every item's state). An item not in ``observed`` (its read failed this time) is skipped.
    ``known`` is updated, and forgets the items no longer watched."""
    keep = set(watched)
    for w in [w for w in known if w not in keep]:
        del known[w]
    out = []
    for w in watched:
        obs = observed.get(w)
        if obs is None or known.get(w) == obs:
            continue
        known[w] = obs
        out.append({"track": w.name, "kind": w.kind, "value": obs[0], "detail": obs[1]})
    return out


def _cut(text: str) -> str:
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 3] + "..."
