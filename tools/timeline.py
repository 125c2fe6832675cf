"""Incident timelines: several routers' logs merged by wall clock, as text, JSON or one HTML page.

    lvsbus replay LOG... --timeline [--html FILE] [--json]

Each row is one event that matters in an incident (role changes, heartbeats lost and found, fences,
VIP moves, real-server health, desired-table and IPVS changes, restarts, config), shown with the
router that recorded it and that router's own seq; heartbeat and check chatter is left out. The HTML
page is self-contained: inline CSS and SVG (one lane per router, its role as coloured bands, one
mark per event with a tooltip), no script, no network. ``read_events`` and ``Filters`` are the
filtered reading shared with ``tools/replay.py``.
"""
from __future__ import annotations

if __name__ == "__main__":  # run as a script by mistake: say so rather than exit 0 having done nothing
    import sys

    sys.exit("lvsbus_tools.timeline is a library; its command line is: lvsbus replay LOG... --timeline [--html FILE] [--json]")

import datetime as _dt
import html
import os
import sys
from dataclasses import dataclass
from typing import Iterator

import lvsbus.wire.catalog  # noqa: F401  (fills the registry)
from lvsbus.wire.events import DecodeError, Event, decode, matches
from lvsbus.log import LogReader, SeqUnavailable, open_log_dir

NS = 1_000_000_000

def log_dir(path: str) -> str:
    """A log directory, given either it or the state directory holding ``log/``."""
    sub = os.path.join(path, "log")
    if os.path.isdir(sub) and not any(n.endswith(".seg") for n in os.listdir(path)):
        return sub
    return path


# ---------------------------------------------------------------------------------------------
# reading with filters


@dataclass
class Filters:
    from_seq: int | None = None
    to_seq: int | None = None
    since_ns: int | None = None  # wall clock
    until_ns: int | None = None
    types: tuple[str, ...] = ()  # type prefixes (lvsbus.wire.events.matches)
    services: tuple[str, ...] = ()  # sources

    def keep(self, ev: Event) -> bool:
        if self.from_seq is not None and ev.seq < self.from_seq:
            return False
        if self.to_seq is not None and ev.seq > self.to_seq:
            return False
        if self.since_ns is not None and ev.wall_ns < self.since_ns:
            return False
        if self.until_ns is not None and ev.wall_ns > self.until_ns:
            return False
        if self.types and not matches(ev.type, self.types):
            return False
        if self.services and ev.source not in self.services:
            return False
        return True


def read_events(directory: str, filters: Filters | None = None, problems: list[str] | None = None) -> Iterator[Event]:
    """Decoded (validated, upcast) events of one log, filtered. A record that cannot be read or
    decoded is skipped and said (one line each, appended to ``problems``; to stderr when None);
    the reading goes on past it. Raises OSError or lvsbus.log.NotALog when ``directory`` is not a
    readable log."""
    f = filters or Filters()
    d = log_dir(directory)
    open_log_dir(d)

    def say(msg: str) -> None:
        if problems is None:
            sys.stderr.write(f"lvsbus replay: {msg}\n")
        else:
            problems.append(msg)

    reader = LogReader(d, skip_corrupt=True, on_problem=lambda exc: say(f"{d}: unreadable: {exc}"))
    first = reader.first_seq()
    if first is None:
        return
    start = max(first, f.from_seq or 1)
    try:
        batches = reader.read_batches(start, f.to_seq)
    except SeqUnavailable:
        return
    for batch in batches:
        for seq, body in batch:
            try:
                ev = decode(body, seq)
            except DecodeError as exc:
                say(f"{d}: seq {seq}: undecodable: {exc}")
                continue
            if f.keep(ev):
                yield ev
    if reader.torn_tail is not None:
        path, off, n = reader.torn_tail
        say(f"{d}: {n} bytes at {os.path.basename(path)}@{off} are an incomplete record (torn tail): not read")


def event_json(ev: Event) -> dict:
    return ev._asdict()


# ---------------------------------------------------------------------------------------------
# timeline

#: what an incident timeline shows, by category; heartbeat chatter (send/receive/timer) is left out
CATEGORY = {
    "router.role_changed": "role",
    "pulse.peer_dead": "heartbeat", "pulse.peer_alive": "heartbeat", "pulse.peer_restarted": "heartbeat",
    "pulse.link_degraded": "heartbeat", "pulse.link_restored": "heartbeat", "pulse.split_brain_resolved": "role",
    "pulse.send_fence": "fence", "pulse.fence_received": "fence",
    "pulse.take_vips": "vip", "pulse.release_vips": "vip",
    "pulse.link_changed": "link", "pulse.config_rejected": "config",
    # tracking ([track.NAME]): what was seen of each item, and what pulse made of it
    "pulse.track_observed": "track", "health.track_changed": "track", "pulse.priority_changed": "track",
    "pulse.start_lvsd": "lvsd", "pulse.stop_lvsd": "lvsd",
    "bus.broker_started": "router", "pulse.started": "router", "router.service_restarted": "router", "router.service_abandoned": "router",
    "router.shutdown_requested": "router", "bus.client_joined": "bus",
    "config.loaded": "config", "config.reload_refused": "config",
    "health.real_server_up": "health", "health.real_server_down": "health", "health.state_changed": "health",
    "health.config_rejected": "config", "lvsd.config_rejected": "config",
    "health.failover_changed": "fos", "pulse.run_failover": "fos", "pulse.failover_cmd_finished": "fos",
    "lvsd.table_desired": "ipvs", "lvsd.table_delta": "ipvs", "ipvs.apply": "ipvs", "ipvs.op_failed": "ipvs",
    "ipvs.unavailable": "ipvs", "lvsd.started": "router", "ipvs.started": "router",
    "bus.frame_rejected": "bus", "bus.subscriber_lagged": "bus", "log.write_failed": "bus",
    "log.write_recovered": "bus",
    "operator.server_action": "operator", "operator.handover_requested": "operator",
    "lvsd.server_action_taken": "operator", "pulse.handover_refused": "operator",
    # scale-out (docs/scaleout.md): announcements, sessions, the speaker's (re)starts
    "bgp.vip_changed": "bgp", "bgp.session_changed": "bgp", "bgp.speaker_started": "bgp",
    "bgp.config_rejected": "config", "operator.bgp_drain": "operator", "bgp.drain_taken": "operator",
}
#: shown when a newer event type appears (other health/lvsd/ipvs events are chatter: check
#: batches, per-op acknowledgements, table dumps)
CATEGORY_PREFIX: tuple[tuple[str, str], ...] = ()


def category(ev: Event) -> str | None:
    c = CATEGORY.get(ev.type)
    if c is not None:
        return c
    for prefix, cat in CATEGORY_PREFIX:
        if ev.type.startswith(prefix):
            return cat
    return None


def describe(ev: Event) -> str:
    p, t = ev.payload, ev.type
    vips = lambda: ", ".join(v["address"] for v in p.get("vips", []))  # noqa: E731
    if t == "bgp.vip_changed":
        return f"BGP {p['address']}/{p['prefixlen']}: {p['old']} -> {p['new']} ({p['reason']})"
    if t == "bgp.session_changed":
        return f"BGP session to {p['peer']} {p['state']} ({p['info']})"
    if t == "bgp.speaker_started":
        return f"BGP speaker started ({p['speaker']} {p['version']}, pid {p['pid']})"
    if t == "operator.bgp_drain":
        return f"{p['by']} asked to {p['action']} the BGP announcements ({p['via']}{': ' + p['reason'] if p['reason'] else ''})"
    if t == "bgp.drain_taken":
        return f"BGP {p['action']} by {p['by']}: {p['outcome']}"
    if t == "router.role_changed":
        group = "" if p.get("group", "default") == "default" else f"[{p['group']}] "
        return f"{group}{p['old']} -> {p['new']} ({p['reason']}{', peer ' + p['peer'] if p.get('peer') else ''})"
    if t == "pulse.peer_dead":
        return f"peer {p['peer']} dead ({p['cause']}, was {p['role']})"
    if t == "pulse.peer_alive":
        return f"peer {p['peer']} alive on {p['link']} ({p['role']}, epoch {p['epoch']})"
    if t == "pulse.peer_restarted":
        return f"peer {p['peer']} restarted (epoch {p['old_epoch']} -> {p['new_epoch']})"
    if t == "pulse.link_degraded":
        return f"{p['link']} link to {p['peer']} silent for {p['silent_ns'] / NS:.3f}s (degraded)"
    if t == "pulse.link_restored":
        return f"{p['link']} link to {p['peer']} restored"
    if t == "pulse.split_brain_resolved":
        group = "" if p.get("group", "default") == "default" else f"[{p['group']}] "
        return f"{group}split brain: {p['winner']} stays active, {p['loser']} steps down"
    if t == "pulse.send_fence":
        return f"fence {p['target']} ({p['reason']}) over {len(p['destinations'])} link(s)"
    if t == "pulse.fence_received":
        return f"fenced by {p['peer']} on {p['link']} ({p['reason']})"
    if t == "pulse.take_vips":
        return f"take VIPs {vips()} ({p['reason']})"
    if t == "pulse.release_vips":
        return f"release VIPs {vips()} ({p['reason']})"
    if t == "pulse.link_changed":
        return f"{p['link']} link {'up' if p['up'] else 'DOWN'}"
    if t == "pulse.track_observed":
        return f"tracked {p['kind']} {p['track']}: {p['detail']}" + (f" ({p['value']})" if p["kind"] == "file" else "")
    if t == "health.track_changed":
        return f"tracked script {p['track']} {p['old']} -> {p['new']} ({p['reason']}: {p['detail']})"
    if t == "pulse.priority_changed" and p["group"] != "default":
        return f"[{p['group']}] " + describe(ev._replace(payload={**p, "group": "default"}))
    if t == "pulse.priority_changed":
        why = ", ".join(f"{i['track']} {i['effect']:+d}" for i in p["items"] if i["effect"])
        moved = f"{p['old']} -> {p['new']}" if p["old"] != p["new"] else f"{p['new']} (configured {p['base']})"
        return (f"priority {moved}" + (f" ({why})" if why else "")
                + (f", FAULT held by {p['fault']}" if p["fault"] else ""))
    if t in ("pulse.start_lvsd", "pulse.stop_lvsd"):
        return f"{t.split('_')[0].split('.')[1]} lvsd ({p['reason']})"
    if t == "bus.broker_started":
        return f"broker started (resumed after seq {p['resumed_from']}{', ' + p['recovery'] if p['recovery'] else ''})"
    if t == "pulse.started":
        return f"pulse started (epoch {p['epoch']})"
    if t == "router.service_restarted":
        return f"{p['service']} restarted (attempt {p['attempt']}: {p['exit']})"
    if t == "router.service_abandoned":
        return f"{p['service']} abandoned after {p['restarts']} restarts ({p['exit']}): hard_shutdown is off, manual action needed"
    if t == "router.shutdown_requested":
        return f"shutdown requested ({p['reason']})"
    if t == "bus.client_joined":
        subs = p["subscriptions"]
        return f"{p['client']} joined the bus ({len(subs)} subscriptions: {', '.join(subs[:3])}{', ...' if len(subs) > 3 else ''})"
    if t == "config.loaded":
        return f"config {'reloaded' if p['reload'] else 'loaded'} ({p['path']}, {p['digest'][:12]})"
    if t == "health.real_server_up":
        return f"real server {p['virtual']}/{p['server']} UP ({p['reason']}, was {p['previous']})"
    if t == "health.real_server_down":
        return f"real server {p['virtual']}/{p['server']} DOWN ({p['reason']}: {p['detail']}, was {p['previous']})"
    if t == "health.state_changed":
        return f"real server {p['virtual']}/{p['server']} {p['old']} -> {p['new']} ({p['reason']})"
    if t == "health.failover_changed":
        return f"failover service {p['service']} {p['old']} -> {p['new']} ({p['reason']}: {p['detail']})"
    if t == "pulse.run_failover":
        return f"run {p['action']}_cmd of {p['service']} ({p['reason']}): {p['command'][:80]}"
    if t == "pulse.failover_cmd_finished":
        how = p["error"] or f"exit {p['exit_code']}"
        tail = p["stderr_tail"].strip().splitlines()[-1:] if p["stderr_tail"].strip() else []
        return (f"{p['action']}_cmd of {p['service']} finished: {how} in {p['duration_ms']} ms"
                + (f"; stderr: {tail[0][:120]}" if tail else ""))
    if t == "lvsd.table_desired":
        return f"desired table v{p['version']} ({p['reason']}): {p['services']} service(s), {p['dests']} real server(s)"
    if t == "lvsd.table_delta":
        return f"desired table v{p['version']}: {p['reason']} [{_ops(p['ops'])}]"
    if t == "ipvs.apply":
        return f"IPVS batch {p['batch']} ({p['reason']}, table v{p['version']}): {_ops(p['ops'])}"
    if t == "ipvs.op_failed":
        return f"IPVS op refused (errno {p['errno']}): {_ops([p['op']])}: {p['error']}"
    if t == "ipvs.unavailable":
        return f"IPVS unavailable (errno {p['errno']}): {p['error']}"
    if t == "lvsd.started":
        return "lvsd started"
    if t == "ipvs.started":
        return f"IPVS applier started (kernel {p['kernel']})"
    if t == "config.reload_refused":
        return f"config reload refused: {len(p['errors'])} error(s)"
    if t == "operator.server_action":
        return (f"operator {p['by']} ({p['via']}) asks: {p['action']} {p['virtual']}/{p['server']}"
                + (f" ({p['reason']})" if p["reason"] else ""))
    if t == "operator.handover_requested":
        return (f"operator {p['by']} ({p['via']}) asks for a handover, hold {p['hold_s']} s"
                + (f" ({p['reason']})" if p["reason"] else ""))
    if t == "lvsd.server_action_taken":
        return f"lvsd: {p['action']} {p['virtual']}/{p['server']}: {p['outcome']} (now {p['state']})"
    if t == "pulse.handover_refused":
        return f"handover asked by {p['by']} refused: {p['reason']} (role {p['role']})"
    if t == "pulse.config_rejected":
        return f"pulse rejected the config: {p['error']}"
    return f"{t} " + ", ".join(f"{k}={v}" for k, v in p.items() if not isinstance(v, (dict, list)))[:200]


def _ops(ops: list[dict]) -> str:
    parts = [f"{o['op']} {o['service']}{' ' + o['dest'] if o.get('dest') else ''}" for o in ops[:6]]
    return ", ".join(parts) + (f" (+{len(ops) - 6} more)" if len(ops) > 6 else "")


@dataclass
class Row:
    wall_ns: int
    node: str
    seq: int
    mono_ns: int
    category: str
    type: str
    source: str
    text: str
    payload: dict
    #: on a broker start after earlier events: the wall clock of the last event before it (the
    #: router, or at least its broker, was down in between)
    silent_since_ns: int | None = None

    def to_json(self) -> dict:
        return {"wall_ns": self.wall_ns, "time": fmt_wall(self.wall_ns), "node": self.node, "seq": self.seq,
                "mono_ns": self.mono_ns, "category": self.category, "type": self.type, "source": self.source,
                "text": self.text, "payload": self.payload, "silent_since_ns": self.silent_since_ns}


class Timeline(list):
    """The rows, plus each router's last event (its log may end before the others')."""

    ends: dict[str, int]


def fmt_wall(ns: int) -> str:
    dt = _dt.datetime.fromtimestamp(ns // NS, _dt.timezone.utc)
    return dt.strftime("%Y-%m-%d %H:%M:%S") + f".{(ns % NS) // 1_000_000:03d}"


def timeline(logs: list[str], filters: Filters | None = None, problems: list[str] | None = None) -> Timeline:
    """The incident rows of several routers' logs, merged by wall clock (each with its own seq).
    Unreadable records are skipped and said (see ``read_events``)."""
    f = filters or Filters()
    rows = Timeline()
    rows.ends = {}
    for d in logs:
        last = None
        for ev in read_events(d, problems=problems):
            silent = last if ev.type == "bus.broker_started" and last is not None else None
            last = ev.wall_ns
            rows.ends[ev.node] = ev.wall_ns
            cat = category(ev)
            if cat is None or not f.keep(ev):
                continue
            text = describe(ev)
            if silent is not None:
                text += f"; nothing logged for {(ev.wall_ns - silent) / NS:.3f}s before: the router was down"
            rows.append(Row(ev.wall_ns, ev.node, ev.seq, ev.mono_ns, cat, ev.type, ev.source, text, ev.payload, silent))
    rows.sort(key=lambda r: (r.wall_ns, r.node, r.seq))
    return rows


def render_text(rows: list[Row]) -> str:
    if not rows:
        return "(no incident events)\n"
    t0 = rows[0].wall_ns
    wn = max(len(r.node) for r in rows)
    lines = [f"{'wall clock (UTC)':23}  {'+s':>9}  {'router':{wn}}  {'seq':>7}  {'what':9}  detail"]
    for r in rows:
        lines.append(f"{fmt_wall(r.wall_ns):23}  {(r.wall_ns - t0) / NS:9.3f}  {r.node:{wn}}  {r.seq:7d}  "
                     f"{r.category:9}  {r.text}")
    return "\n".join(lines) + "\n"


_ROLE_COLOR = {"INIT": "#d9d9d9", "BACKUP": "#9ecae1", "ACTIVE": "#31a354", "FAULT": "#e6550d",
               "STOPPED": "#636363", "DOWN": "#252525"}
_MARK = {"role": ("#000000", "diamond"), "heartbeat": ("#756bb1", "circle"), "fence": ("#de2d26", "cross"),
         "vip": ("#e6a700", "triangle"), "health": ("#3182bd", "square"), "ipvs": ("#8c564b", "square"),
         "router": ("#252525", "bar"), "link": ("#d62728", "circle"), "lvsd": ("#17becf", "circle"),
         "config": ("#7f7f7f", "bar"), "bus": ("#bdbdbd", "bar"), "fos": ("#2ca02c", "triangle"),
         "operator": ("#d62728", "diamond"), "bgp": ("#9467bd", "triangle"), "track": ("#ff7f0e", "circle")}


def render_html(rows: list[Row] | Timeline, title: str = "lvsbus incident timeline") -> str:
    """One self-contained page: inline CSS and SVG, no script, no network."""
    esc = html.escape
    nodes = sorted({r.node for r in rows})
    t0 = rows[0].wall_ns if rows else 0
    t1 = rows[-1].wall_ns if rows else 1
    span = max(t1 - t0, NS)
    width, left, lane, top = 1100, 90, 70, 30
    plot = width - left - 20
    x = lambda ns: left + (ns - t0) * plot / span  # noqa: E731
    height = top + lane * len(nodes) + 40
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline">']
    # time axis
    step = _nice_step(span / NS)
    k = 0
    while k * step * NS <= span:
        xx = x(t0 + int(k * step * NS))
        svg.append(f'<line x1="{xx:.1f}" y1="{top - 8}" x2="{xx:.1f}" y2="{height - 30}" class="grid"/>')
        svg.append(f'<text x="{xx:.1f}" y="{height - 14}" class="axis">+{k * step:g}s</text>')
        k += 1
    for li, node in enumerate(nodes):
        y = top + li * lane
        svg.append(f'<text x="6" y="{y + lane / 2:.0f}" class="lane">{esc(node)}</text>')
        # role bands
        role, since = "INIT", t0
        mine = [r for r in rows if r.node == node]
        for r in mine:
            if r.type == "router.role_changed":
                svg.append(_band(x(since), x(r.wall_ns), y, role))
                role, since = r.payload["new"], r.wall_ns
            elif r.type == "bus.broker_started":
                if r.silent_since_ns is not None and r.silent_since_ns >= since:
                    svg.append(_band(x(since), x(r.silent_since_ns), y, role))
                    svg.append(_band(x(r.silent_since_ns), x(r.wall_ns), y, "DOWN"))
                elif role != "INIT":
                    svg.append(_band(x(since), x(r.wall_ns), y, role))
                role, since = "INIT", r.wall_ns
        end = min(t1, getattr(rows, "ends", {}).get(node, t1))
        svg.append(_band(x(since), x(max(end, since)), y, role))
        for r in mine:
            if r.category in ("bus", "config") and r.type != "config.loaded":
                continue
            svg.append(_mark(x(r.wall_ns), y + 38, r))
    svg.append("</svg>")
    legend = " ".join(f'<span class="sw" style="background:{c}"></span>{esc(n)}' for n, c in _ROLE_COLOR.items())
    marks = " ".join(f'<span class="sw" style="background:{c}"></span>{esc(n)}' for n, (c, _) in _MARK.items())
    table = ["<table><tr><th>wall clock (UTC)</th><th>+s</th><th>router</th><th>seq</th><th>what</th>"
             "<th>detail</th></tr>"]
    for r in rows:
        table.append(f'<tr class="{esc(r.category)}"><td>{fmt_wall(r.wall_ns)}</td><td>{(r.wall_ns - t0) / NS:.3f}'
                     f'</td><td>{esc(r.node)}</td><td>{r.seq}</td><td>{esc(r.category)}</td><td>{esc(r.text)}</td></tr>')
    table.append("</table>")
    css = ("body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;font-size:13px}"
           "td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}"
           "tr.role td,tr.fence td{font-weight:bold}.grid{stroke:#eee}.axis{font-size:11px;fill:#666}"
           ".lane{font-size:14px;font-weight:bold}.sw{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}"
           ".band{opacity:.85}.bl{font-size:10px;fill:#fff}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + esc(title) + "</title><style>" + css
            + "</style></head><body><h1>" + esc(title) + "</h1><p>" + f"{len(rows)} events, {len(nodes)} router(s), "
            + f"{fmt_wall(t0)} .. {fmt_wall(t1)} UTC" + "</p><p>roles: " + legend + "</p><p>events: " + marks
            + "</p>" + "\n".join(svg) + "\n" + "\n".join(table) + "</body></html>\n")


def _band(x0: float, x1: float, y: int, role: str) -> str:
    w = max(x1 - x0, 0.5)
    label = f'<text x="{x0 + 3:.1f}" y="{y + 16}" class="bl">{role}</text>' if w > 50 else ""
    return (f'<rect x="{x0:.1f}" y="{y + 4}" width="{w:.1f}" height="18" fill="{_ROLE_COLOR.get(role, "#ccc")}" '
            f'class="band"><title>{role}</title></rect>{label}')


def _mark(x: float, y: int, r: Row) -> str:
    color, shape = _MARK.get(r.category, ("#000", "circle"))
    tip = html.escape(f"{fmt_wall(r.wall_ns)} {r.node} #{r.seq} {r.text}")
    if shape == "circle":
        body = f'<circle cx="{x:.1f}" cy="{y}" r="5" fill="{color}"/>'
    elif shape == "square":
        body = f'<rect x="{x - 5:.1f}" y="{y - 5}" width="10" height="10" fill="{color}"/>'
    elif shape == "triangle":
        up = "release" not in r.type
        pts = f"{x - 6:.1f},{y + 5} {x + 6:.1f},{y + 5} {x:.1f},{y - 6}" if up else \
              f"{x - 6:.1f},{y - 5} {x + 6:.1f},{y - 5} {x:.1f},{y + 6}"
        body = f'<polygon points="{pts}" fill="{color}"/>'
    elif shape == "cross":
        body = (f'<path d="M{x - 5:.1f},{y - 5} L{x + 5:.1f},{y + 5} M{x - 5:.1f},{y + 5} L{x + 5:.1f},{y - 5}" '
                f'stroke="{color}" stroke-width="3"/>')
    elif shape == "diamond":
        body = f'<polygon points="{x:.1f},{y - 6} {x + 6:.1f},{y} {x:.1f},{y + 6} {x - 6:.1f},{y}" fill="{color}"/>'
    else:
        body = f'<rect x="{x - 1:.1f}" y="{y - 9}" width="2" height="18" fill="{color}"/>'
    return f"<g><title>{tip}</title>{body}</g>"


def _nice_step(seconds: float) -> float:
    for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400):
        if seconds / s <= 12:
            return s
    return 86400 * 7
