"""Operator actions as recorded inputs: ``lvsbus server drain|disable|enable VIRTUAL SERVER``,
``lvsbus handover`` and ``lvsbus bgp drain|resume`` (scale-out), and the helpers the web console shares.

Each action is one event published to this router's bus (``operator.server_action``,
``operator.handover_requested``, declared in ``lvsbus/wire/catalog/operator.py``) naming who asked; the
cores decide (lvsd: the desired table; pulse: the role) and answer with an output whose cause is
the request's seq, so replay, the timeline and the what-if see the action as the input it is. The
command waits for that answer (read from the log from the request's seq, then live) and prints it.
"""
from __future__ import annotations

import argparse
import os
import pwd
import sys

from lvsbus.host.argtypes import existing_dir, float_range, int_range
from lvsbus.host.paths import DEFAULT_STATE_DIR
from lvsbus.router.operator import Answer, NoBroker, request

SERVER_ACTIONS = ("drain", "disable", "enable")


def text(lo: int, hi: int):
    """argparse type: a string of lo..hi characters."""
    def check(value: str) -> str:
        if not lo <= len(value) <= hi:
            raise argparse.ArgumentTypeError(f"must be {lo} to {hi} characters, not {len(value)}")
        return value
    check.__name__ = "text"
    return check


def cli_user() -> str:
    """Who runs the command: the Unix user, and the user behind sudo when there is one."""
    try:
        me = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        me = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    return (f"{me} (sudo by {sudo})" if sudo and sudo != me else me)[:128]


# ---------------------------------------------------------------------------------------------
# the command line


def add_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "server",
        help="drain, disable or enable a real server (recorded as an operator action)",
        description="Ask this router's lvsd to drain (weight 0: its connections finish, no new ones), disable "
        "(out of the IPVS table) or enable (back as its health and the config say) one real server of one "
        "virtual service. The request is an event in the log naming who asked (operator.server_action); "
        "lvsd answers it (lvsd.server_action_taken) and changes the desired table while it is live (on "
        "the active router). It is this router's: give it on each router that may become active.",
    ).add_subparsers(dest="server_cmd", metavar="ACTION")
    for action, what in (("drain", "weight 0: its connections finish, it gets no new ones"),
                         ("disable", "out of the IPVS table"),
                         ("enable", "back in service after a drain or a disable")):
        a = s.add_parser(action, help=what, description=f"{action}: {what}.")
        a.add_argument("virtual", type=text(1, 64), help="the virtual service's name (as in the config)")
        a.add_argument("server", type=text(1, 64), help="the real server's name")
        _common(a)
        a.set_defaults(func=cmd_server, action=action)

    h = sub.add_parser(
        "handover",
        help="hand the active role over to a live peer (graceful, recorded as an operator action)",
        description="Ask this router, if ACTIVE, to step down to BACKUP as a graceful stop would, without stopping: "
        "it stops lvsd, releases its VIPs and tells its peers at once, and the best live backup takes over. "
        "It then advertises priority 0 for --hold seconds so it does not preempt the role back. Refused "
        "(pulse.handover_refused) when this router is not ACTIVE or no peer is alive as BACKUP.",
    )
    h.add_argument("--hold", type=int_range(1, 86400), default=300, metavar="SECONDS",
                   help="priority 0 this long after stepping down, 1..86400 (default %(default)s)")
    _common(h)
    h.set_defaults(func=cmd_handover)

    b = sub.add_parser(
        "bgp",
        help="drain or resume this router's BGP announcements (scale-out, recorded as an operator action)",
        description="Scale-out (docs/scaleout.md): ask this router's bgp service to announce every VIP with the "
        "GRACEFUL_SHUTDOWN community (drain: the upstream sends new flows to the other routers, the route stays), "
        "or plainly again (resume). Recorded as operator.bgp_drain; the bgp core answers (bgp.drain_taken). "
        "A drain lasts until resume or a restart of the router.",
    ).add_subparsers(dest="bgp_cmd", metavar="ACTION")
    for action, what in (("drain", "announce every VIP with GRACEFUL_SHUTDOWN: new flows go to the other routers"),
                         ("resume", "announce the VIPs plainly again")):
        a = b.add_parser(action, help=what, description=f"{action}: {what}.")
        _common(a)
        a.set_defaults(func=cmd_bgp, action=action)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, type=existing_dir,
                   help="the router's state directory (default %(default)s)")
    p.add_argument("--reason", default="", type=text(0, 256), help="free text recorded with the request (up to 256 characters)")
    p.add_argument("--wait", type=float_range(0, 3600), default=5.0, metavar="SECONDS",
                   help="wait this long for the answer, 0..3600 (default %(default)s; 0: do not wait)")


def _send(args, type_: str, payload: dict) -> Answer | int:
    from lvsbus.bus import PublishRefused

    prog = f"lvsbus {args.command}"
    try:
        return request(args.state_dir, type_, payload, args.wait)
    except NoBroker as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except PublishRefused as exc:
        print(f"{prog}: refused by the broker: {exc}", file=sys.stderr)
        return 1


def cmd_server(args) -> int:
    ans = _send(args, "operator.server_action", {
        "virtual": args.virtual, "server": args.server, "action": args.action, "by": cli_user(), "via": "cli",
        "reason": args.reason})
    if isinstance(ans, int):
        return ans
    if ans.event is None:
        print(f"recorded as #{ans.seq}; lvsd has not answered within {args.wait:g} s (on a BACKUP router lvsd is a "
              "standby: it answers, and the table follows, when this router becomes active)")
        return 0
    p = ans.event.payload  # type: ignore[attr-defined]
    target = f"{args.virtual}/{args.server}"
    if p["outcome"] == "unknown_server":
        print(f"#{ans.seq}: no active real server {target} in the running config", file=sys.stderr)
        return 1
    done = "now" if p["outcome"] == "applied" else "already"
    print(f"#{ans.seq}: {target} {done} {p['state']}")
    return 0


def cmd_handover(args) -> int:
    ans = _send(args, "operator.handover_requested", {
        "by": cli_user(), "via": "cli", "reason": args.reason, "hold_s": args.hold})
    if isinstance(ans, int):
        return ans
    if ans.event is None:
        print(f"recorded as #{ans.seq}; pulse has not answered within {args.wait:g} s")
        return 1
    p = ans.event.payload  # type: ignore[attr-defined]
    if ans.event.type == "pulse.handover_refused":  # type: ignore[attr-defined]
        why = {"not_active": f"this router is {p['role']}, not ACTIVE",
               "no_peer": "no peer is alive as BACKUP to take over"}[p["reason"]]
        print(f"#{ans.seq}: handover refused: {why}", file=sys.stderr)
        return 1
    print(f"#{ans.seq}: {p['old']} -> {p['new']} (handover); a live backup takes over")
    return 0


def cmd_bgp(args) -> int:
    ans = _send(args, "operator.bgp_drain", {"action": args.action, "by": cli_user(), "via": "cli",
                                             "reason": args.reason})
    if isinstance(ans, int):
        return ans
    if ans.event is None:
        print(f"recorded as #{ans.seq}; the bgp service has not answered within {args.wait:g} s (is it running?)")
        return 1
    p = ans.event.payload  # type: ignore[attr-defined]
    if p["outcome"] == "not_scaleout":
        print(f"#{ans.seq}: the config in force has no [scaleout]: nothing is announced", file=sys.stderr)
        return 1
    state = "drained" if args.action == "drain" else "announced plainly"
    print(f"#{ans.seq}: {'now' if p['outcome'] == 'applied' else 'already'} {state} ({p['vips']} VIPs)")
    return 0
