"""``lvsbus ipvs save`` and ``lvsbus ipvs show``.

* ``lvsbus ipvs save --config FILE``: the table that config asks for, every active real server
  in, in ``ipvsadm --save -n`` format (``ipvsadm --restore`` reads it). No running router needed.
* ``lvsbus ipvs save [--state-dir DIR]``: the desired table lvsd last published on this router.
* ``lvsbus ipvs show [--state-dir DIR]``: desired (from the log) beside actual (a netlink dump),
  like ``ipvsadm -Ln``, with each real server's health (nanny) and weights desired/actual.
* ``lvsbus ipvs show --stats`` / ``--rate`` [``--exact``]: the traffic figures as ``ipvsadm -L -n
  --stats`` / ``--rate`` print them, from the kernel by netlink; where IPVS cannot be read (not
  the router host, no permission), the last figures the applier recorded in the log
  (``ipvs.stats``), said so on a first ``#`` line.
* ``lvsbus ipvs zero [SERVICE]``: zero the counters of every service, or of one (``ipvsadm -Z``).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from lvsbus.host.paths import DEFAULT_STATE_DIR


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
    fig = sh.add_mutually_exclusive_group()
    fig.add_argument("--stats", action="store_true", help="counters, as ipvsadm -L -n --stats")
    fig.add_argument("--rate", action="store_true", help="rates, as ipvsadm -L -n --rate")
    sh.add_argument("--exact", action="store_true", help="with --stats/--rate: every digit (no K, M, G)")
    sh.set_defaults(func=cmd_show)
    z = s.add_parser("zero", help="zero the IPVS counters of every service or of one (ipvsadm -Z)")
    z.add_argument("service", nargs="?", help="a service key: tcp:10.0.0.1:80, udp:[2001:db8::1]:53, fwm:inet:5")
    z.set_defaults(func=cmd_zero)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def desired_from_log(state_dir: str):
    """(latest desired Table or None, its version, health {(address, port, service key?) -> state})."""
    table, version, health, _age = desired_with_age(state_dir)
    return table, version, health


@dataclass
class TableAge:
    """Where the desired table shown comes from: the event that last set it, and what came after."""

    seq: int = 0  # the lvsd.table_desired / lvsd.table_delta that made it
    wall_ns: int = 0
    stopped_seq: int = 0  # a pulse.stop_lvsd after it: lvsd no longer active, the table not in force
    stopped_wall_ns: int = 0
    role: str | None = None  # this router's last role (router.role_changed), and since when
    role_wall_ns: int = 0

    def lines(self, version: int, now_ns: int) -> list[str]:
        out = [f"# desired: lvsd table version {version}, recorded at seq {self.seq}, {_when(self.wall_ns)} "
               f"({_ago(now_ns - self.wall_ns)} ago)"]
        if self.stopped_seq:
            out.append(f"# desired: lvsd was stopped after it (seq {self.stopped_seq}, {_ago(now_ns - self.stopped_wall_ns)} "
                       "ago): this is the table of an earlier active period, not one in force")
        if self.role is not None:
            out.append(f"# role: {self.role} since {_when(self.role_wall_ns)} ({_ago(now_ns - self.role_wall_ns)} ago)")
        return out


def _when(wall_ns: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(wall_ns / 1e9, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _ago(ns: int) -> str:
    s = max(0, ns) / 1e9
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def desired_with_age(state_dir: str):
    """desired_from_log's three, and the TableAge of that table."""
    from lvsbus.wire import catalog  # noqa: F401
    from lvsbus.wire.events import decodable
    from lvsbus.ipvs.table import Table
    from lvsbus.log import LogReader
    from lvsbus.host.paths import StateDirs
    from lvsbus.ipvs.table import apply_ops

    table, version = None, 0
    age = TableAge()
    health: dict[tuple[str, str, int], str] = {}
    for ev in decodable(LogReader(StateDirs(state_dir).log).read(1), []):  # past undecodable records (docs/bus.md)
        t = ev.type
        if t == "lvsd.table_desired":
            table, version = Table.from_dict(ev.payload["table"]), ev.payload["version"]
            age.seq, age.wall_ns, age.stopped_seq, age.stopped_wall_ns = ev.seq, ev.wall_ns, 0, 0
        elif t == "lvsd.table_delta":
            if table is not None and ev.payload["base_version"] == version:
                table, version = apply_ops(table, ev.payload["ops"], strict=False), ev.payload["version"]
                age.seq, age.wall_ns, age.stopped_seq, age.stopped_wall_ns = ev.seq, ev.wall_ns, 0, 0
        elif t == "pulse.stop_lvsd":
            if table is not None and not age.stopped_seq:
                age.stopped_seq, age.stopped_wall_ns = ev.seq, ev.wall_ns
        elif t == "router.role_changed":
            age.role, age.role_wall_ns = ev.payload["new"], ev.wall_ns
        elif t in ("health.real_server_up", "health.real_server_down", "health.state_changed"):
            p = ev.payload
            state = {"health.real_server_up": "UP", "health.real_server_down": "DOWN"}.get(t) or p["new"]
            health[(p["virtual"], p["address"], p["port"])] = state
    return table, version, health, age


def cmd_save(args) -> int:
    from lvsbus.config import ConfigError
    from lvsbus.host.configfiles import load_config as load

    from lvsbus_services.ipvs.core import desired_from_config, save_lines

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
        if cfg.service.value == "fos":
            print(f"lvsbus ipvs save: {args.config}: service = fos: failover services use no IPVS table "
                  "(the applier manages nothing); nothing to print", file=sys.stderr)
            return 0
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


def _from_kernel(read):
    """(read(Ipvs()), None), or (None, why not): the one way the commands ask the kernel."""
    try:
        from lvsbus_services.ipvs.netlink import Ipvs, IpvsError
    except ImportError as exc:
        return None, f"pyroute2 missing: {exc}"
    try:
        with Ipvs() as ipvs:
            return read(ipvs), None
    except IpvsError as exc:
        import errno

        if exc.errno == errno.EPERM:
            return None, "no permission to read IPVS (root or CAP_NET_ADMIN)"
        return None, f"IPVS not available in this kernel ({exc})"
    except OSError as exc:
        return None, f"IPVS not available: {exc}"


def actual_table():
    """(Table, None) from the kernel, or (None, why not)."""
    return _from_kernel(lambda ipvs: ipvs.dump())


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
        if s.pe:
            line += f" pe {s.pe}"
        if s.ops:
            line += " ops"
        if s.scheduler_flags:
            line += f" ({','.join(s.scheduler_flags)})"
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


def kernel_stats():
    """(Sample, None) from the kernel, or (None, why not)."""
    return _from_kernel(lambda ipvs: ipvs.stats())


def stats_from_log(state_dir: str):
    """(Figures folded from every ipvs.stats of the log, seq of the last one or 0)."""
    from lvsbus.wire import catalog  # noqa: F401
    from lvsbus.wire.events import decodable
    from lvsbus.ipvs.stats import Figures, fold
    from lvsbus.log import LogReader
    from lvsbus.host.paths import StateDirs

    fig, last = Figures(), 0
    for ev in decodable(LogReader(StateDirs(state_dir).log).read(1), []):  # past undecodable records (docs/bus.md)
        if ev.type == "ipvs.stats":
            fold(fig, ev.payload)
            last = ev.seq
    return fig, last


def cmd_show_stats(args) -> int:
    from lvsbus.ipvs.stats import figures_from_sample, listing

    sample, why = kernel_stats()
    if sample is not None:
        fig = figures_from_sample(sample)
    else:
        try:
            fig, last = stats_from_log(args.state_dir)
        except OSError as exc:
            print(f"lvsbus ipvs show: {why}; and cannot read the log in {args.state_dir}: {exc}", file=sys.stderr)
            return 1
        if not last:
            print(f"lvsbus ipvs show: {why}; and no ipvs.stats in the log of {args.state_dir}", file=sys.stderr)
            return 1
        print(f"# {why}: the figures the applier recorded, as of seq {last}"
              + ("" if fig.complete else " (no full sample in the log: rows unchanged since then show 0)"))
    for line in listing(fig, rate=args.rate, exact=args.exact):
        print(line)
    return 0


def cmd_zero(args) -> int:
    from lvsbus.ipvs.table import ServiceKey

    key = None
    if args.service:
        try:
            key = ServiceKey.parse(args.service)
        except (ValueError, KeyError) as exc:
            print(f"lvsbus ipvs zero: {args.service!r} is not a service key like tcp:10.0.0.1:80, "
                  f"udp:[2001:db8::1]:53 or fwm:inet:5 ({exc})", file=sys.stderr)
            return 2
    try:
        from lvsbus_services.ipvs.netlink import Ipvs, IpvsError
    except ImportError as exc:
        print(f"lvsbus ipvs zero: pyroute2 missing: {exc}", file=sys.stderr)
        return 1
    try:
        with Ipvs() as ipvs:
            ipvs.zero(key)
    except IpvsError as exc:
        import errno

        what = f"no service {key} in the kernel" if exc.errno == errno.ESRCH else str(exc)
        print(f"lvsbus ipvs zero: {what}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"lvsbus ipvs zero: IPVS not available: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_show(args) -> int:
    if _bad_state_dir("show", args):
        return 1
    if args.stats or args.rate:
        return cmd_show_stats(args)
    if args.exact:
        print("lvsbus ipvs show: --exact goes with --stats or --rate", file=sys.stderr)
        return 2
    import time

    try:
        desired, version, health, age = desired_with_age(args.state_dir)
    except OSError as exc:
        print(f"# desired: cannot read the log in {args.state_dir}: {exc}")
        desired, version, health, age = None, 0, {}, TableAge()
    actual, why = actual_table()
    if desired is None:
        print(f"# desired: no table from lvsd in {args.state_dir}")
    else:
        for line in age.lines(version, time.time_ns()):
            print(line)
    for line in show_lines(desired, actual, health, why):
        print(line)
    return 0
