"""``lvsbus ipvs save`` and ``lvsbus ipvs show``.

* ``lvsbus ipvs save --config FILE``: the table that config asks for, every active real server
  in, in ``ipvsadm --save -n`` format (``ipvsadm --restore`` reads it). No running router needed.
* ``lvsbus ipvs save [--state-dir DIR]``: the desired table lvsd last published on this router.
* ``lvsbus ipvs show [--state-dir DIR]``: desired (from the log) beside actual (a netlink dump),
  like ``ipvsadm -Ln``, with each real server's health (nanny) and weights desired/actual.
"""
from __future__ import annotations

import argparse
import sys

from lvsbus.paths import DEFAULT_STATE_DIR


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ipvs", help="the IPVS table: desired (lvsd) and actual (kernel)")
    s = p.add_subparsers(dest="ipvs_cmd", metavar="ACTION")
    sv = s.add_parser("save", help="print the desired table in ipvsadm --save format")
    sv.add_argument("--config", help="the table this config asks for (every active real server in)")
    sv.add_argument("--state-dir",
                    help=f"without --config: the router's log (default {DEFAULT_STATE_DIR})")
    sv.set_defaults(func=cmd_save)
    sh = s.add_parser("show", help="desired beside actual, like ipvsadm -Ln, with health and weights")
    sh.add_argument("--state-dir",
                    help=f"the router's state directory (default {DEFAULT_STATE_DIR})")
    sh.set_defaults(func=cmd_show)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def desired_from_log(state_dir: str):
    """(latest desired Table or None, its version, health {(address, port, service key?) -> state})."""
    from lvsbus import catalog  # noqa: F401
    from lvsbus.events import decode
    from lvsbus.ipvs_table import Table
    from lvsbus.log import LogReader
    from lvsbus.paths import StateDirs
    from lvsbus.ipvs_table import apply_ops

    table, version = None, 0
    health: dict[tuple[str, str, int], str] = {}
    for seq, body in LogReader(StateDirs(state_dir).log).read(1):
        ev = decode(body, seq)
        t = ev.type
        if t == "lvsd.table_desired":
            table, version = Table.from_dict(ev.payload["table"]), ev.payload["version"]
        elif t == "lvsd.table_delta":
            if table is not None and ev.payload["base_version"] == version:
                table, version = apply_ops(table, ev.payload["ops"], strict=False), ev.payload["version"]
        elif t in ("health.real_server_up", "health.real_server_down", "health.state_changed"):
            p = ev.payload
            state = {"health.real_server_up": "UP", "health.real_server_down": "DOWN"}.get(t) or p["new"]
            health[(p["virtual"], p["address"], p["port"])] = state
    return table, version, health


def cmd_save(args) -> int:
    from lvsbus.config import ConfigError, load

    from .core import desired_from_config, save_lines

    if args.config:
        if args.state_dir is not None:
            print("lvsbus ipvs save: give --config or --state-dir, not both", file=sys.stderr)
            return 2
        try:
            cfg = load(args.config).config
        except ConfigError as exc:
            for issue in exc.issues:
                print(f"lvsbus ipvs save: {issue}", file=sys.stderr)
            return 1
        table = desired_from_config(cfg)
    else:
        if _bad_state_dir("save", args):
            return 1
        try:
            table, _v, _h = desired_from_log(args.state_dir)
        except OSError as exc:
            print(f"lvsbus ipvs save: cannot read the log in {args.state_dir}: {exc}", file=sys.stderr)
            return 1
        if table is None:
            print(f"lvsbus ipvs save: no desired table in the log of {args.state_dir} (lvsd not run yet); "
                  "--config FILE prints a config's table", file=sys.stderr)
            return 1
    for line in save_lines(table):
        print(line)
    return 0


def actual_table():
    """(Table, None) from the kernel, or (None, why not)."""
    try:
        from .netlink import Ipvs, IpvsError
    except ImportError as exc:
        return None, f"pyroute2 missing: {exc}"
    try:
        with Ipvs() as ipvs:
            return ipvs.dump(), None
    except IpvsError as exc:
        return None, f"IPVS not available in this kernel ({exc})"
    except OSError as exc:
        return None, f"IPVS not available: {exc}"


def show_lines(desired, actual, health: dict, why: str | None = None) -> list[str]:
    fwd = {"nat": "Masq", "direct": "Route", "tunnel": "Tunnel"}
    out = ["Prot LocalAddress:Port Scheduler Flags                 [desired | actual]",
           "  -> RemoteAddress:Port           Forward Weight  Health   (desired weight / actual weight)"]
    if why:
        out.append(f"# actual: {why}")
    keys = sorted(set(desired.keys() if desired is not None else ()) | set(actual.keys() if actual is not None else ()))
    by_addr: dict[tuple[str, int], str] = {(a, p): s for (_v, a, p), s in health.items()}
    for k in keys:
        d = desired.get(k) if desired is not None else None
        a = actual.get(k) if actual is not None else None
        e = d or a
        s = e.service
        if k.fwmark:
            head = f"FWM  {k.fwmark}" + (" IPv6" if k.family == "inet6" else "")
        else:
            host = f"[{k.address}]" if k.family == "inet6" else k.address
            head = f"{k.protocol.upper():4} {host}:{k.port}"
        line = f"{head} {s.scheduler}"
        if s.persistence:
            line += f" persistent {s.persistence}"
        mark = "" if (d is not None and a is not None and d.service == a.service) else (
            "   [desired only]" if a is None and actual is not None else "   [kernel only: not managed or stale]" if d is None
            else "   [differs]" if a is not None else "")
        out.append(line + mark)
        dks = sorted(set(d.dests if d else ()) | set(a.dests if a else ()))
        for dk in dks:
            dd = d.dests.get(dk) if d else None
            ad = a.dests.get(dk) if a else None
            x = dd or ad
            hs = by_addr.get((x.address, x.port), "-")
            dw = str(dd.weight) if dd else "-"
            aw = str(ad.weight) if ad else ("?" if actual is None else "-")
            flag = "" if (dd == ad or actual is None) else "  <- differs"
            out.append(f"  -> {dk:28} {fwd[x.forwarding]:7} {dw:>4}/{aw:<4} {hs:8}{flag}")
    return out


def _bad_state_dir(cmd: str, args) -> bool:
    """A --state-dir given that is not a directory: one line, and True. Unset: the default (which
    may not exist on a machine that never ran a router; the commands say so)."""
    if args.state_dir is None:
        args.state_dir = DEFAULT_STATE_DIR
        return False
    import os

    if not args.state_dir or not os.path.isdir(args.state_dir):
        why = "no such directory" if not os.path.exists(args.state_dir or "") else "not a directory"
        print(f"lvsbus ipvs {cmd}: --state-dir {args.state_dir!r}: {why}", file=sys.stderr)
        return True
    return False


def cmd_show(args) -> int:
    if _bad_state_dir("show", args):
        return 1
    try:
        desired, version, health = desired_from_log(args.state_dir)
    except OSError as exc:
        print(f"# desired: cannot read the log in {args.state_dir}: {exc}")
        desired, version, health = None, 0, {}
    actual, why = actual_table()
    if desired is None:
        print(f"# desired: no table from lvsd in {args.state_dir}")
    else:
        print(f"# desired: lvsd table version {version}")
    for line in show_lines(desired, actual, health, why):
        print(line)
    return 0
