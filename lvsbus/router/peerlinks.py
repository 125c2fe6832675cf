"""Each peer's heartbeat links as pulse's events tell them: up, degraded or silent, and when each
was last heard. Pure (event times only, no clock): ``lvsbus status`` (``lvsbus.router.status.read_status``)
and the console's view (``tools/web/view.py``) fold the same events through it.

A link is
* ``silent`` when the peer is not alive (``pulse.peer_dead``, or never ``pulse.peer_alive``);
* else ``degraded`` when pulse said so (``pulse.link_degraded``: silent for deadtime while another
  link carried heartbeats) and has not said ``pulse.link_restored`` since;
* else ``silent`` when the link has not been heard since the peer's last death (or ever), or,
  given a time and the deadtime, when its last heartbeat is a deadtime old or older;
* else ``up``.

Links come from the config (``config.loaded``: ``public``, and ``private`` when both routers have
a private address, as pulse pairs them) and from the events themselves.
"""
from __future__ import annotations

from lvsbus.wire.events import Event

UP, DEGRADED, SILENT = "up", "degraded", "silent"

TYPES = frozenset({"config.loaded", "pulse.heartbeat_received", "pulse.peer_alive", "pulse.peer_dead",
                   "pulse.link_degraded", "pulse.link_restored"})


class Link:
    __slots__ = ("heard_mono_ns", "heard_wall_ns", "seq", "degraded", "silent")

    def __init__(self) -> None:
        self.heard_mono_ns: int | None = None  # the last heartbeat on this link (event times)
        self.heard_wall_ns: int | None = None
        self.seq: int | None = None  # its heartbeat seq
        self.degraded = False  # pulse.link_degraded, not restored since
        self.silent = True  # not heard since the peer's last death (or ever)


class PeerLinks:
    def __init__(self) -> None:
        self.links: dict[str, dict[str, Link]] = {}  # peer -> link name -> Link
        self.alive: dict[str, bool] = {}

    def _link(self, peer: str, link: str) -> Link:
        return self.links.setdefault(peer, {}).setdefault(link, Link())

    def apply(self, ev: Event) -> bool:
        """Fold one event; True when it changed a link's state (as events alone say it: a
        heartbeat that only refreshes the last-heard time is False)."""
        t, p = ev.type, ev.payload
        if t not in TYPES:
            return False
        if t == "config.loaded":
            local = p["local_router"]
            routers = p["model"].get("routers", [])
            me = next((r for r in routers if r["name"] == local), None)
            for r in routers:
                if r["name"] != local:
                    self._link(r["name"], "public")
                    if me is not None and me.get("private_address") and r.get("private_address"):
                        self._link(r["name"], "private")
            return False
        peer = p["peer"]
        before = self.states(peer)
        if t == "pulse.heartbeat_received":
            link = self._link(peer, p["link"])
            link.heard_mono_ns, link.heard_wall_ns, link.seq = ev.mono_ns, ev.wall_ns, p["seq"]
            if not p["leaving"]:  # a goodbye proves the link, but the peer is gone (peer_dead follows)
                link.silent = False
        elif t == "pulse.peer_alive":
            self.alive[peer] = True
            self.links.setdefault(peer, {})
        elif t == "pulse.peer_dead":
            self.alive[peer] = False
            for link in self.links.setdefault(peer, {}).values():
                link.silent = True
        else:
            self._link(peer, p["link"]).degraded = t == "pulse.link_degraded"
        return self.states(peer) != before

    def state(self, peer: str, name: str, now_mono_ns: int | None = None, deadtime_ns: int | None = None) -> str:
        link = self.links[peer][name]
        if not self.alive.get(peer):
            return SILENT
        if link.degraded:
            return DEGRADED
        if link.silent or link.heard_mono_ns is None:
            return SILENT
        if now_mono_ns is not None and deadtime_ns is not None and now_mono_ns - link.heard_mono_ns >= deadtime_ns:
            return SILENT
        return UP

    def states(self, peer: str) -> dict[str, str]:
        return {name: self.state(peer, name) for name in self.links.get(peer, {})}

    def describe(self, peer: str, now_mono_ns: int | None, deadtime_ns: int | None = None) -> dict[str, dict]:
        """Each link of ``peer``: its state, the age of its last heartbeat at ``now_mono_ns`` (s,
        None if never heard or no time given), that heartbeat's wall time and seq, and whether
        pulse holds it degraded."""
        out = {}
        for name, link in sorted(self.links.get(peer, {}).items()):
            heard = link.heard_mono_ns
            age = None if heard is None or now_mono_ns is None else round(max(0, now_mono_ns - heard) / 1e9, 3)
            out[name] = {"state": self.state(peer, name, now_mono_ns, deadtime_ns), "age_s": age,
                         "heard_ns": link.heard_wall_ns, "last_heard_mono_ns": heard, "last_seq": link.seq,
                         "degraded": link.degraded}
        return out
