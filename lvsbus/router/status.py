"""What ``lvsbus status`` and the console know of a router: its current run folded out of the log.

The log is the truth: the run's events (from its last ``config.loaded`` that is not a reload) fold
into one status (``_FOLD``, one handler an event type); only what the log cannot say is read from
the host (whether each VIP is on this host, whether the supervisor is still there).
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Callable

from lvsbus.host.paths import StateDirs

if TYPE_CHECKING:
    from lvsbus.wire.events import Event


def read_status(state_dir: str, now_mono_ns: int | None = None) -> dict:
    """Fold the current run (from the last ``config.loaded`` with reload false) out of the log:
    the run's events fold into a status (``_FOLD``, one handler an event type), then what the log
    cannot say is added: whether each VIP is on this host, whether the supervisor is still there."""
    now = now_mono_ns if now_mono_ns is not None else time.monotonic_ns()
    events, supervisor_pid = current_run(state_dir)
    st = _fold_run(events, now)
    st["vips"] = _vips_present(st["vips"])
    if st["running"] is None:  # no shutdown recorded: is the supervisor of this run still there?
        st["running"] = supervisor_pid is not None and os.path.exists(f"/proc/{supervisor_pid}")
    st["supervisor_pid"] = supervisor_pid
    return st


def current_run(state_dir: str) -> tuple[list[Event], int | None]:
    """The events of the current run (from its ``config.loaded`` with reload false; all of the log
    read when there is none), and the pid of the supervisor's last hello in the segments read. The
    log only: no clock, no netlink, no /proc (``read_status`` adds those)."""
    from lvsbus.wire import catalog  # noqa: F401
    from lvsbus.wire.events import decodable
    from lvsbus.log import LogReader

    reader = LogReader(StateDirs(state_dir).log, skip_corrupt=True)  # past corrupt records, as every reader
    skipped: list = []  # records that do not decode: left out, as every reader does (docs/bus.md)
    segs = reader.segments()
    if not segs:
        raise FileNotFoundError(f"no event log under {StateDirs(state_dir).log}")
    events: list[Event] = []
    found_start = False
    for i in range(len(segs) - 1, -1, -1):  # walk back segment by segment to the run's start
        first = segs[i][0]
        chunk = list(decodable(reader.read(first, segs[i + 1][0] - 1 if i + 1 < len(segs) else None), skipped))
        events = chunk + events
        if found_start:
            break
        if any(_starts_run(e) for e in chunk):
            # the supervisor says hello just before it publishes config.loaded: when the run's
            # events hold no hello, it is at the end of the segment before (one more read)
            if _supervisor_pid(events) is not None:
                break
            found_start = True
    start = max((k for k, e in enumerate(events) if _starts_run(e)), default=0)
    return events[start:], _supervisor_pid(events)


def _supervisor_pid(events: list[Event]) -> int | None:
    """The pid of the supervisor's last hello (at start, and again after a broker restart)."""
    pid = None
    for e in events:
        if e.type == "bus.client_joined" and e.payload["client"] == "router" and e.payload.get("pid"):
            pid = e.payload["pid"]
    return pid


def _starts_run(e: Event) -> bool:
    return e.type == "config.loaded" and not e.payload["reload"]


def _fold_run(events: list[Event], now: int) -> dict:
    """The status the run's events say, each peer's links (``lvsbus.router.peerlinks``) aged at ``now``;
    ``vips`` is address -> VIP held (a list once read_status has asked the host)."""
    st: dict = {
        "router": None, "role": "UNKNOWN", "role_reason": None, "role_since_wall_ns": None, "run_start_seq": None,
        "last_seq": events[-1].seq if events else 0, "running": None, "peers": {}, "vips": {},
        "lvsd": False, "deadtime_s": None, "keepalive_s": None, "datagrams_rejected": 0,
        "heartbeats_ignored": 0, "service_restarts": {}, "abandoned": [], "config_digest": None, "reload_refused": 0,
        "service": "lvs", "failover": {},
        # this router's configured and effective priority, and each tracked item ([track.NAME]):
        # {failed, effect} as pulse last assessed it; the weight-0 item holding it in FAULT
        "priority": None, "base_priority": None, "tracking": {}, "track_fault": None,
        # failover groups ([group.NAME]): each group's role here (the router's "role": ACTIVE when it
        # is active for one, else BACKUP, else FAULT)
        "groups": {},
        "bgp": None,  # scale-out ([scaleout]): {"sessions", "announced", "drained"} (docs/scaleout.md)
    }
    from lvsbus.router.peerlinks import UP, PeerLinks

    links = PeerLinks()  # each peer's heartbeat links, as the console's view folds them too
    for e in events:
        links.apply(e)
        fold = _FOLD.get(e.type)
        if fold is not None:
            fold(st, e.payload, e)
    dt = st["deadtime_s"]
    for name, peer in st["peers"].items():  # each link's state, and its age at ``now``
        peer["links"] = links.describe(name, now, None if dt is None else int(dt * 1e9))
        for link in peer["links"].values():
            link["healthy"] = link["state"] == UP
    return st


def _vips_present(held: dict[str, dict]) -> list[dict]:
    """The VIPs held, by address, each with whether it is on this host (None: cannot tell)."""
    try:
        from lvsbus.host import netutil

        local = netutil.local_addresses()
    except Exception:
        local = None
    return [
        {"address": a, "device": v["device"], "present": (a in local) if local is not None else None}
        for a, v in sorted(held.items())
    ]


# what each event type changes in the status: fold(st, payload, event)

def _config_loaded(st: dict, p: dict, e: Event) -> None:
    model = p["model"]
    if not p["reload"]:
        st["run_start_seq"] = e.seq
    st["router"] = p["local_router"]
    st["config_digest"] = p["digest"]
    st["deadtime_s"] = model["heartbeat"]["deadtime"]
    st["keepalive_s"] = model["heartbeat"]["keepalive"]
    st["service"] = model.get("service", "lvs")
    if model.get("scaleout") is not None and st["bgp"] is None:
        st["bgp"] = {"sessions": {}, "announced": {}, "drained": False}
    elif model.get("scaleout") is None:
        st["bgp"] = None
    if st["service"] == "fos":  # service = fos: each failover service's health and commands
        st["failover"] = {
            f["name"]: {**st["failover"].get(f["name"], {"health": "UNKNOWN", "detail": None,
                                                        "running": False, "last_command": None}),
                        "address": f["address"], "port": f["port"], "active": f["active"]}
            for f in model.get("failover_services", [])}
    for r in model["routers"]:
        if r["name"] == p["local_router"]:
            if st["base_priority"] != r["priority"] or st["priority"] is None:
                st["priority"] = r["priority"]  # until pulse assesses its tracked items
            st["base_priority"] = r["priority"]
        if r["name"] != p["local_router"]:
            st["peers"].setdefault(r["name"], {
                "address": r["address"], "private_address": r.get("private_address"),
                "priority": r["priority"], "alive": False, "role": None, "links": {},
            })


_SUMMARY = ("ACTIVE", "BACKUP", "FAULT")


def _role_changed(st: dict, p: dict, e: Event) -> None:
    group = p.get("group", "default")
    st["groups"][group] = {"role": p["new"], "reason": p["reason"], "since_wall_ns": e.wall_ns}
    roles = [g["role"] for g in st["groups"].values()]
    summary = next((r for r in _SUMMARY if r in roles), p["new"])
    if summary != st["role"] or group == "default":
        st["role_since_wall_ns"] = e.wall_ns
    st["role"], st["role_reason"] = summary, p["reason"]


def _heartbeat_received(st: dict, p: dict, e: Event) -> None:
    peer = st["peers"].get(p["peer"])
    if peer is not None:
        peer["role"], peer["priority"] = p["role"], p["priority"]


def _priority_changed(st: dict, p: dict, e: Event) -> None:
    st["priority"], st["base_priority"], st["track_fault"] = p["new"], p["base"], p["fault"]
    st["tracking"] = {i["track"]: {"failed": i["failed"], "effect": i["effect"]} for i in p["items"]}


def _peer_alive_or_dead(st: dict, p: dict, e: Event) -> None:
    peer = st["peers"].get(p["peer"])
    if peer is not None:
        peer["alive"] = e.type == "pulse.peer_alive"


def _take_vips(st: dict, p: dict, e: Event) -> None:
    for v in p["vips"]:
        st["vips"][v["address"]] = v


def _release_vips(st: dict, p: dict, e: Event) -> None:
    for v in p["vips"]:
        st["vips"].pop(v["address"], None)


def _failover_changed(st: dict, p: dict, e: Event) -> None:
    f = st["failover"].get(p["service"])
    if f is not None:
        f["health"], f["detail"] = p["new"], p["detail"]


def _run_failover(st: dict, p: dict, e: Event) -> None:
    f = st["failover"].get(p["service"])
    if f is not None:
        f["running"] = p["action"] == "start"  # as far as pulse asked


def _failover_cmd_finished(st: dict, p: dict, e: Event) -> None:
    f = st["failover"].get(p["service"])
    if f is not None:
        f["last_command"] = {k: p[k] for k in ("action", "exit_code", "duration_ms", "error", "stderr_tail")}


def _lvsd_started_or_stopped(st: dict, p: dict, e: Event) -> None:
    st["lvsd"] = e.type == "pulse.start_lvsd"


def _datagram_rejected(st: dict, p: dict, e: Event) -> None:
    st["datagrams_rejected"] += 1


def _heartbeat_ignored(st: dict, p: dict, e: Event) -> None:
    st["heartbeats_ignored"] = p["count"]


def _service_restarted(st: dict, p: dict, e: Event) -> None:
    st["service_restarts"][p["service"]] = p["attempt"]
    if p["service"] in st["abandoned"]:
        st["abandoned"].remove(p["service"])


def _service_abandoned(st: dict, p: dict, e: Event) -> None:
    if p["service"] not in st["abandoned"]:
        st["abandoned"].append(p["service"])


def _reload_refused(st: dict, p: dict, e: Event) -> None:
    st["reload_refused"] += 1


def _shutdown_requested(st: dict, p: dict, e: Event) -> None:
    st["running"] = False


def _bgp_session_changed(st: dict, p: dict, e: Event) -> None:
    if st["bgp"] is not None:
        st["bgp"]["sessions"][p["peer"]] = {"state": p["state"], "info": p["info"]}


def _bgp_vip_changed(st: dict, p: dict, e: Event) -> None:
    if st["bgp"] is None:
        return
    if p["new"] == "withdraw":
        st["bgp"]["announced"].pop(p["address"], None)
    else:
        st["bgp"]["announced"][p["address"]] = {"state": p["new"], "reason": p["reason"]}


def _bgp_drain_taken(st: dict, p: dict, e: Event) -> None:
    if st["bgp"] is not None and p["outcome"] == "applied":
        st["bgp"]["drained"] = p["action"] == "drain"


_FOLD: dict[str, Callable[[dict, dict, Event], None]] = {
    "config.loaded": _config_loaded,
    "router.role_changed": _role_changed,
    "pulse.heartbeat_received": _heartbeat_received,
    "pulse.priority_changed": _priority_changed,
    "pulse.peer_alive": _peer_alive_or_dead,
    "pulse.peer_dead": _peer_alive_or_dead,
    "pulse.take_vips": _take_vips,
    "pulse.release_vips": _release_vips,
    "health.failover_changed": _failover_changed,
    "pulse.run_failover": _run_failover,
    "pulse.failover_cmd_finished": _failover_cmd_finished,
    "pulse.start_lvsd": _lvsd_started_or_stopped,
    "pulse.stop_lvsd": _lvsd_started_or_stopped,
    "pulse.datagram_rejected": _datagram_rejected,
    "pulse.heartbeat_ignored": _heartbeat_ignored,
    "router.service_restarted": _service_restarted,
    "router.service_abandoned": _service_abandoned,
    "config.reload_refused": _reload_refused,
    "router.shutdown_requested": _shutdown_requested,
    "bgp.session_changed": _bgp_session_changed,
    "bgp.vip_changed": _bgp_vip_changed,
    "bgp.drain_taken": _bgp_drain_taken,
}


