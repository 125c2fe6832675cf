"""Subcommands ``router`` (the supervisor), ``status`` (role, peers, links, VIPs from the log) and
``fsm`` (the role state machine as a table or Graphviz dot)."""
from __future__ import annotations

import argparse
import importlib
import json
import sys

from lvsbus.host.paths import DEFAULT_STATE_DIR
from lvsbus.router.status import read_status


def add_commands(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "router",
        help="run this router (broker, pulse, nanny, lvsd, applier) in the foreground",
        description="Run one LVS router: validate the config, find which router this host is, start the "
        "broker and the services as supervised child processes. SIGTERM hands over and stops; SIGHUP "
        "reloads the config. Under systemd (Type=notify) it reports READY=1.",
    )
    r.add_argument("--config", required=True, help="lvs.cf or native TOML file")
    r.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="state directory (default %(default)s)")
    r.add_argument("--keep-privileges", action="store_true",
                   help="run every service with this process's privileges (debugging). By default, as root, "
                   "each service keeps only the capabilities it needs (pulse: CAP_NET_ADMIN, CAP_NET_RAW, "
                   "CAP_NET_BIND_SERVICE; the IPVS applier: CAP_NET_ADMIN; nanny: CAP_NET_RAW when a check "
                   "runs a program; broker, lvsd, metrics: none), stays uid 0, and sets no_new_privs")
    r.add_argument("--max-restarts", type=int, default=5, metavar="N",
                   help="restarts of one service within --restart-window before the router steps down "
                   "(default %(default)s; a warm spare taking over counts as a restart)")
    r.add_argument("--restart-window", type=float, default=60.0, metavar="SECONDS",
                   help="the window of --max-restarts and of the restart backoff (default %(default)s)")
    r.add_argument("--no-spares", action="store_true",
                   help="no warm spare for the broker and pulse: a dead one is started anew (0.3-0.5 s)")
    r.add_argument("--spawn", choices=("zygote", "exec"), default="zygote",
                   help="how services start: zygote (default): forked from one pre-loaded parent that "
                   "imported everything once (a start takes ms, pages are shared; ps still shows each "
                   "service's command line); exec: each a python -m of its own (0.3-0.5 s of imports "
                   "each). docs/router.md")
    r.set_defaults(func=cmd_router)

    s = sub.add_parser(
        "status",
        help="this router's role, peers, heartbeat links and VIPs",
        description="Read the tail of the event log (no daemon needed) and print the role, each peer "
        "with the age of its last heartbeat on each link, and the VIPs held.",
    )
    s.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    f = sub.add_parser("fsm", help="print a state machine").add_subparsers(dest="fsm_cmd", metavar="MACHINE")
    fr = f.add_parser("router", help="pulse's role FSM (INIT, BACKUP, ACTIVE, FAULT, STOPPED)")
    fr.add_argument("--dot", action="store_true", help="Graphviz dot instead of a table")
    fr.set_defaults(func=cmd_fsm_router)


def cmd_router(args) -> int:
    if args.max_restarts < 0 or not args.restart_window > 0:
        print("lvsbus router: --max-restarts must be 0 or more and --restart-window above 0", file=sys.stderr)
        return 2
    launcher = None
    if args.spawn == "zygote":  # first: it imports while this process imports and reads its config
        from lvsbus.router import zygote

        launcher = zygote.start_early()
    from lvsbus.router.supervisor import main

    from lvsbus.router.supervision import RestartLimits

    return main(args.config, args.state_dir, keep_privileges=args.keep_privileges,
                limits=RestartLimits(max_restarts=args.max_restarts, window_s=args.restart_window),
                spares=not args.no_spares, spawn=args.spawn, launcher=launcher)


def cmd_fsm_router(args) -> int:
    core = importlib.import_module("lvsbus_services.pulse.core")
    if args.dot:
        sys.stdout.write(core.role_fsm_dot())
        return 0
    rows = [("trigger", "from", "to", "conditions", "fired when")]
    for trigger, sources, dest, conds, doc in core.ROLE_TRANSITIONS:
        rows.append((trigger, ", ".join(sources), dest, " and ".join(conds) or "-", doc))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    return 0


# ---------------------------------------------------------------------------------------------
# status


def cmd_status(args) -> int:
    try:
        st = read_status(args.state_dir)
    except (FileNotFoundError, OSError) as exc:
        print(f"lvsbus status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return 0
    print("\n".join(_status_lines(st)))
    return 0


def _status_lines(st: dict) -> list[str]:
    """``lvsbus status`` for people: this router and its role, what it runs (lvsd or the failover
    services), VIPs, peers and their links, scale-out, counters and services given up on."""
    out = [f"router   {st['router']}  ({'running' if st['running'] else 'stopped'}), run from seq {st['run_start_seq']}, last seq {st['last_seq']}",
           f"role     {st['role']}" + (f" ({st['role_reason']})" if st["role_reason"] else "")]
    if set(st.get("groups", {})) - {"default"}:  # failover groups: each one's role here
        out += [f"group    {name}: {g['role']} ({g['reason']})" for name, g in st["groups"].items()]
    out += _priority_lines(st)
    if st["service"] == "fos":
        out.append("lvsd     none (service = fos: no IPVS table)")
        out += [_failover_line(name, f) for name, f in sorted(st["failover"].items())]
    else:
        out.append(f"lvsd     {'started' if st['lvsd'] else 'stopped'}")
    out += _vip_lines(st["vips"])
    out += _peer_lines(st["peers"])
    if st["bgp"] is not None:
        out += _bgp_lines(st["bgp"])
    out.append(f"counts   datagrams rejected {st['datagrams_rejected']}, heartbeats ignored {st['heartbeats_ignored']}, "
               f"reloads refused {st['reload_refused']}, restarts {st['service_restarts'] or 0}")
    out += [f"  {name} NOT RUNNING: it died in a restart loop and hard_shutdown is 0; manual action needed "
            "(fix it, then reload)" for name in st["abandoned"]]
    return out


def _priority_lines(st: dict) -> list[str]:
    """The priority this router elects with, and each tracked item with what it does to it."""
    if st.get("priority") is None:
        return []
    moved = "" if st["priority"] == st["base_priority"] else f" (configured {st['base_priority']})"
    out = [f"priority {st['priority']}{moved}"]
    for name, t in sorted(st["tracking"].items()):
        what = ("FAULT" if st["track_fault"] == name else f"{t['effect']:+d}" if t["effect"] else "no effect")
        out.append(f"track    {name}: {'FAILED' if t['failed'] else 'ok'}, {what}")
    return out


def _failover_line(name: str, f: dict) -> str:
    last = f["last_command"]
    how = "" if last is None else (
        f"; last {last['action']}_cmd: " + (last["error"] or f"exit {last['exit_code']}")
        + f" in {last['duration_ms']} ms")
    state = "inactive" if not f["active"] else (
        f"health {f['health']}" + (f" ({f['detail']})" if f["detail"] and f["detail"] != "ok" else ""))
    return (f"failover {name} {f['address']}:{f['port']}: {state}, "
            f"{'started here' if f['running'] else 'not started here'}{how}")


def _vip_lines(vips: list[dict]) -> list[str]:
    if not vips:
        return ["vip      none held"]
    return [f"vip      {v['address']} on {v['device']}"
            + ("" if v["present"] in (True, None) else "  (NOT on the interface!)") for v in vips]


def _peer_lines(peers: dict) -> list[str]:
    out = []
    for name, peer in sorted(peers.items()):
        out.append(f"peer     {name} {peer['address']} priority {peer['priority']}: "
                   f"{'alive' if peer['alive'] else 'dead'}, role {peer['role'] or '?'}")
        for lname, link in sorted(peer["links"].items()):
            age = "never" if link["age_s"] is None else f"{link['age_s']:.3f} s ago"
            health = {"up": "ok", "degraded": "DEGRADED"}.get(link["state"], "silent")
            out.append(f"  link   {lname:<8} last heartbeat {age}: {health}")
    return out


def _bgp_lines(b: dict) -> list[str]:
    out = ["bgp      scale-out" + (", DRAINED by an operator (lvsbus bgp resume)" if b["drained"] else "")]
    out += [f"  peer   {peer}: {sess['state']} ({sess['info']})" for peer, sess in sorted(b["sessions"].items())]
    out += [f"  vip    {vip}: {'announced' if a['state'] == 'announce' else 'announced, draining'} ({a['reason']})"
            for vip, a in sorted(b["announced"].items())]
    if not b["announced"]:
        out.append("  vip    none announced")
    return out
