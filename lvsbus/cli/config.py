"""``lvsbus check-config``, ``lvsbus config convert`` and ``lvsbus config diff``."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import TextIO

from lvsbus.host.configfiles import load_config as load
from lvsbus.config.consistency import compare_routers
from lvsbus.config.diff import diff
from lvsbus.config.model import (
    Check,
    CheckKind,
    HttpUrl,
    Config,
    ConfigError,
    FailoverService,
    Heartbeat,
    Issue,
    LoadedConfig,
    Router,
    VirtualService,
    host_port,
    server_port,
)
from lvsbus.config.native import render_toml

__all__ = ["add_commands", "describe"]

_FORMATS = ("auto", "lvscf", "toml", "keepalived")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    fmt_help = "file format: lvscf (Piranha lvs.cf), toml (native), keepalived (keepalived.conf; " \
               "@ID lines use $LVSBUS_CONFIG_ID, else the host name), or auto (default: .toml or " \
               "TOML content means native, a keepalived block (vrrp_instance, virtual_server, " \
               "global_defs...) keepalived.conf, anything else lvs.cf)"

    p = subparsers.add_parser(
        "check-config",
        help="validate a config file (or a scale-out group's, one per router) and print what would run",
        description="Read FILE (Piranha lvs.cf, native TOML or keepalived.conf), validate it, and print the routers, "
                    "heartbeat, virtual services, real servers and health checks it would run, then "
                    "any warnings (obsolete lvs.cf keywords, what lvsbus does not run of a "
                    "keepalived.conf or runs differently, advice). Exits 0 when the file is "
                    "valid, 1 with every error listed as FILE:LINE: KEY: MESSAGE when it is not "
                    "(like keepalived -t). With several FILEs, one per router of a scale-out group "
                    "([scaleout]), each is checked so, then they are compared: every router must have "
                    "the same virtual services (by protocol, address and port, or fwmark), with the same "
                    "scheduler and flags, forwarding method, real servers and weights (for mh in the same "
                    "order) and the same VIPs, or mh would map a flow to another real server on another "
                    "router; each difference is an error naming both files and lines, and the exit is 1. "
                    "A file with [scaleout] beside one without is an error too; files without [scaleout] "
                    "are not compared. See docs/scaleout.md.",
    )
    p.add_argument("file", metavar="FILE", nargs="+",
                   help="the config file, e.g. /etc/sysconfig/ha/lvs.cf; several: one per router of a "
                        "scale-out group, compared")
    p.add_argument("--format", choices=_FORMATS, default="auto", help=fmt_help)
    p.add_argument("--json", action="store_true",
                   help="print the validated model as JSON (the config-loaded event payload) "
                        "instead of the summary; with several FILEs, a JSON array of them, in order")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and warnings")
    p.set_defaults(func=_cmd_check)

    cfg = subparsers.add_parser(
        "config", help="convert lvs.cf to TOML, diff two configs",
        description="Configuration tools. See 'lvsbus config COMMAND --help'.",
    )
    sub = cfg.add_subparsers(dest="config_command", metavar="COMMAND")
    cfg.set_defaults(func=lambda args: (cfg.print_help(), 2)[1])

    c = sub.add_parser(
        "convert", help="print the native TOML equivalent of a config file",
        description="Read FILE (usually a Piranha lvs.cf), validate it, and print the equivalent "
                    "native TOML on standard output. Loading the printed TOML gives exactly the "
                    "same settings. Warnings go to standard error.",
    )
    c.add_argument("file", metavar="FILE", help="the config file to convert")
    c.add_argument("--format", choices=_FORMATS, default="auto", help=fmt_help)
    c.set_defaults(func=_cmd_convert)

    d = sub.add_parser(
        "diff", help="show what reloading NEW over OLD would change",
        description="Validate OLD and NEW and print the reload diff: virtual services and real "
                    "servers added (+), removed (-), changed (~, with the fields) and unchanged "
                    "(=, they keep their health state and kernel entries), heartbeat and global "
                    "changes, and VIPs to add or remove. Exits 0 when both files are valid.",
    )
    d.add_argument("old", metavar="OLD", help="the running config file")
    d.add_argument("new", metavar="NEW", help="the new config file")
    d.add_argument("--format", choices=_FORMATS, default="auto", help=fmt_help)
    d.add_argument("--json", action="store_true", help="print the diff as JSON (the event payload)")
    d.set_defaults(func=_cmd_diff)


def _load(path: str, fmt: str, err: TextIO, locations: bool = False) -> LoadedConfig | None:
    try:
        return load(path, None if fmt == "auto" else fmt, locations=locations)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {_issue(issue)}", file=err)
        n = len(exc.issues)
        if n > 1:  # one error is its own one line
            print(f"{path}: invalid, {n} errors", file=err)
        return None


def _issue(i: Issue) -> str:
    return str(i)


def _print_warnings(loaded: LoadedConfig, out: TextIO) -> None:
    for w in loaded.warnings:
        print(f"warning: {_issue(w)}", file=out)


def _router_host_problems(loaded: LoadedConfig) -> tuple[list[str], list[str]]:
    """(errors, notes) about this host as a router of ``loaded``: on a host that is one of the
    config's routers, what ``lvsbus router`` would refuse at start (the heartbeat key file)."""
    from lvsbus.host import netutil
    from lvsbus.host.keyfile import load_key
    from lvsbus.config.model import identify_local_router

    cfg = loaded.config
    try:
        me = identify_local_router(cfg, netutil.local_addresses())
    except ConfigError:
        return [], []  # not a router host (a workstation checking a file): nothing local to check
    notes: list[str] = []
    if cfg.scaleout is not None and cfg.scaleout.speaker == "bird" and shutil.which("bird") is None:
        notes.append(f"{loaded.source}: scaleout.speaker: BIRD 2 is not installed on this router (apt-get install "
                     f"bird2): the bgp service could not start (this host is router {me.name})")
    if not cfg.heartbeat.enabled:
        return [], notes
    _, problem, certain = load_key(cfg.heartbeat.key_file)
    if problem is None:
        return [], notes
    text = f"{loaded.source}: heartbeat.key_file: {problem} (this host is router {me.name}: 'lvsbus router' would refuse to start)"
    return ([text], notes) if certain else ([], [text, *notes])


def _cmd_check(args: argparse.Namespace) -> int:
    """Each FILE checked on its own; several are then compared (lvsbus/config/consistency.py)."""
    files: list[str] = args.file
    several = len(files) > 1
    checked = [_check_one(path, args, several) for path in files]
    valid = [loaded for _, loaded in checked if loaded is not None]
    models = [loaded for ok, loaded in checked if ok and loaded is not None]
    code = 0 if len(models) == len(files) else 1
    if several:
        code = max(code, _compare(valid, files, json_out=args.json))
        if args.json and code == 0:
            from lvsbus.config.model import to_dict

            print(json.dumps([to_dict(m.config) for m in models], indent=2))
    return code


def _check_one(path: str, args: argparse.Namespace, several: bool) -> tuple[bool, LoadedConfig | None]:
    """One file checked as check-config always has: (passed, the loaded file if it is valid: it
    can be compared even when this host could not run it). With several files the JSON is printed
    once, after the comparison."""
    loaded = _load(path, args.format, sys.stderr, locations=several)
    if loaded is None:
        return False, None
    errors, notes = _router_host_problems(loaded)
    if errors:
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        print(f"{loaded.source}: the file is valid, but this router cannot start with it", file=sys.stderr)
        return False, loaded
    for n in notes:
        print(f"warning: {n}", file=sys.stderr)
    if args.json:
        if not several:
            from lvsbus.config.model import to_dict

            print(json.dumps(to_dict(loaded.config), indent=2))
    elif not args.quiet:
        print(describe(loaded))
    _print_warnings(loaded, sys.stdout if not args.json else sys.stderr)
    if not args.json:
        count = len(loaded.warnings)
        print(f"{loaded.source}: valid ({count} warning{'s' if count != 1 else ''})")
    return True, loaded


def _compare(valid: list[LoadedConfig], files: list[str], json_out: bool) -> int:
    """The routers' files compared (the valid ones): every difference an error on stderr, 1 if any."""
    result = compare_routers(valid)
    out = sys.stderr if json_out else sys.stdout
    names = ", ".join(v.source for v in valid)
    skipped = len(files) - len(valid)
    left_out = f"; {skipped} invalid file{'s' if skipped != 1 else ''} not compared" if skipped else ""
    if result.issues:
        for issue in result.issues:
            print(f"error: {_issue(issue)}", file=sys.stderr)
        n = len(result.issues)
        print(f"{names}: the routers' configs differ, {n} error{'s' if n != 1 else ''}{left_out}", file=sys.stderr)
        return 1
    if not result.compared:
        if len(valid) > 1:
            print(f"{names}: not compared (no [scaleout]: only a scale-out group's routers must have the "
                  f"same virtual services){left_out}", file=out)
        return 0
    print(f"{names}: the same on {len(valid)} routers (virtual services, schedulers, forwarding, real servers, "
          f"weights and order, VIPs){left_out}", file=out)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    loaded = _load(args.file, args.format, sys.stderr)
    if loaded is None:
        return 1
    _print_warnings(loaded, sys.stderr)
    header = (f"lvsbus native configuration, converted from {loaded.source}\n"
              "by 'lvsbus config convert'. Times are in seconds. See docs/config.md.")
    sys.stdout.write(render_toml(loaded.config, header=header))
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    old = _load(args.old, args.format, sys.stderr)
    new = _load(args.new, args.format, sys.stderr)
    if old is None or new is None:
        return 1
    d = diff(old.config, new.config)
    if args.json:
        print(json.dumps(d.to_dict(), indent=2))
    elif d.is_empty:
        print("no changes")
    else:
        print("\n".join(d.lines()))
    return 0


# ---------------------------------------------------------------------------------------------

def _secs(x: float) -> str:
    return f"{x:g}s"


def _describe_check(chk: Check) -> str:
    parts = [chk.kind.value, f"every {_secs(chk.interval)}", f"timeout {_secs(chk.timeout)}",
             f"rise {chk.rise}" + (f" ({chk.initial_rise} at first start)" if chk.initial_rise != chk.rise else ""),
             f"fall {chk.fall}" + (f" (retried after {_secs(chk.retry_delay)})" if chk.retry_delay is not None else "")]
    if chk.port is not None:
        parts.append(f"port {chk.port}")
    if chk.dynamic_weight:
        parts.append("weight from the exit status")
    k = chk.kind
    if k is CheckKind.TCP_SEND_EXPECT:
        parts += [f"send {chk.send!r}", f"expect {chk.expect!r}" + (" (regex)" if chk.regex else "")]
    elif k in (CheckKind.HTTP, CheckKind.HTTPS):
        for u in chk.urls or (HttpUrl(chk.path, chk.status, chk.digest, chk.body_regex),):
            parts += [f"GET {u.path}", "status " + "/".join(map(str, u.status))]
            if u.body_regex:
                parts.append(f"body ~ {u.body_regex!r}")
            if u.digest:
                parts.append(f"MD5 {u.digest}")
        if chk.host:
            parts.append(f"Host {chk.host}")
        if chk.http_version != "1.0":
            parts.append(f"HTTP/{chk.http_version}")
        if k is CheckKind.HTTPS and chk.tls_verify:
            parts.append("certificate verified" + (f" against {chk.tls_ca}" if chk.tls_ca else ""))
        if k is CheckKind.HTTPS and chk.tls_cert:
            parts.append(f"client certificate {chk.tls_cert}")
    elif k is CheckKind.SMTP:
        parts.append(f"HELO {chk.helo_name}")
    elif k is CheckKind.DNS:
        parts.append(f"query {chk.dns_type} {chk.dns_name or '.'}")
    elif k is CheckKind.FILE:
        parts.append(f"file {chk.file} holds 0")
    elif k is CheckKind.UDP:
        parts += [f"payload {chk.payload!r}", f"expect {chk.expect!r}" if chk.reply_required
                  else "silence or a reply passes, an ICMP error fails"]
    elif k is CheckKind.PROGRAM:
        parts.append(f"run {chk.command!r}")
        if chk.expect:
            parts.append(f"output ~ {chk.expect!r}")
        if chk.exit_code is not None or not chk.expect:
            parts.append(f"exit {chk.exit_code or 0}")
    if chk.connect_ip:
        parts.append(f"to {chk.connect_ip}")
    if chk.bind:
        parts.append(f"from {chk.bind}")
    return ", ".join(parts)


def describe(loaded: LoadedConfig) -> str:
    """What would run, for people: routers, heartbeat, virtual services, real servers, checks."""
    cfg: Config = loaded.config
    fos = cfg.service.value == "fos"
    out = [f"{loaded.source}: {loaded.format} file, service {cfg.service.value}, "
           f"serial {cfg.serial_no}"]
    out.append("routers:")
    out += [_describe_router(r) for r in cfg.routers]
    out.append(_describe_heartbeat(cfg.heartbeat, cfg.scaleout is not None))
    out += _describe_options(cfg)
    out.append(f"virtual services: {len(cfg.virtual_services)}"
               + (" [ignored: service = fos, no IPVS table]" if fos and cfg.virtual_services else ""))
    for vs in cfg.virtual_services:
        out += _describe_virtual(vs)
    if cfg.failover_services:
        out.append(f"failover services: {len(cfg.failover_services)}"
                   + ("" if fos else " [ignored: service = lvs]"))
        for fs in cfg.failover_services:
            out += _describe_failover(fs, fos, cfg.heartbeat.keepalive)
    out += _describe_groups(cfg)
    if cfg.tracks:
        out.append(f"tracked: {len(cfg.tracks)}")
        out += [_describe_track(t) for t in cfg.tracks]
    return "\n".join(out)


def _describe_groups(cfg: Config) -> list[str]:
    """The failover groups (each elected on its own) with their priorities and VIPs' services."""
    if not cfg.groups:
        return []
    out = [f"failover groups: {len(cfg.group_names())}"]
    services = [*cfg.lvs_services(), *cfg.fos_services()]
    for name in cfg.group_names():
        g = cfg.group(name)
        prios = ", ".join(f"{r.name} {g.priority_on(r)}" for r in cfg.routers)
        members = [s.name for s in services if (s.group or "default") == name]
        extra = f", moves with sync group {g.sync_group}" if g.sync_group else ""
        out.append(f"  {name}: priority {prios}; services {', '.join(members) or 'none'}{extra}")
    return out


def _describe_track(t) -> str:
    what = {"interface": t.device, "script": t.command, "file": t.path}.get(t.kind.value, getattr(t, "virtual", None))
    effect = "FAULT when failed" if t.weight == 0 else (f"{t.weight:+d} while fine" if t.weight > 0
                                                        else f"{t.weight:+d} while failed")
    where = f" on {', '.join(t.on_routers)}" if t.on_routers else ""
    groups = f" for {', '.join(t.groups)}" if t.groups else ""
    return f"  {t.name}: {t.kind.value} {what}: {effect}{' (reversed)' if t.reverse else ''}{where}{groups}"


def _describe_router(r: Router) -> str:
    line = f"  {r.name}: {r.address}"
    if r.device:
        line += f" dev {r.device}"
    if r.private_address:
        line += f", private {r.private_address}" + (f" dev {r.private_device}"
                                                      if r.private_device else "")
    if r.shared_address:
        line += f", shared {r.shared_address}"
    return line + f", priority {r.priority}"


def _describe_heartbeat(hb: Heartbeat, scaleout: bool = False) -> str:
    if scaleout:  # every router active: heartbeats only to know the peers; no election, no ARP
        return (f"heartbeat: {'on' if hb.enabled else 'off'}, udp port {hb.port}, keepalive "
                f"{_secs(hb.keepalive)}, deadtime {_secs(hb.deadtime)}, peers only (scale-out: no election, "
                f"no gratuitous ARP), key {hb.key_file}")
    return (f"heartbeat: {'on' if hb.enabled else 'off'}, udp port {hb.port}, keepalive "
            f"{_secs(hb.keepalive)}, deadtime {_secs(hb.deadtime)}, "
            f"{'preempt' + (f' after {_secs(hb.preempt_delay)}' if hb.preempt_delay else '') if hb.preempt else 'no preempt'}, "
            f"gratuitous ARP x{hb.garp_repeat}"
            + (f" every {_secs(hb.garp_refresh)}" if hb.garp_refresh else "")
            + f", key {hb.key_file}")


def _describe_options(cfg: Config) -> list[str]:
    """A line for each optional part that is on: nat router, sync daemon, metrics, web console,
    scale-out."""
    out = []
    if cfg.nat_router:
        nr = cfg.nat_router
        out.append(f"nat router: {nr.address}" + (f"/{nr.prefixlen}" if nr.prefixlen is not None else "")
                   + (f" dev {nr.label or nr.device}" if nr.device else ""))
    if cfg.sync_daemon.enabled:
        out.append(f"sync daemon: {cfg.sync_daemon.interface}, id {cfg.sync_daemon.sync_id}")
    if cfg.metrics_address:
        out.append(f"metrics: {cfg.metrics_address}")
    if cfg.web is not None:
        w = cfg.web
        out.append(f"web console: {'https' if w.tls_cert else 'http'}://{w.address}, passwords {w.password_file}")
    if cfg.scaleout is not None:
        so = cfg.scaleout
        speaker = (f"the running BIRD at {so.control_socket} (routes in {so.routes_file})" if so.speaker == "bird-running"
                   else f"a BIRD of its own (control socket {so.control_socket}), hold {so.hold_time}s"
                   + (", BFD" if so.bfd else ""))
        out.append(f"scale-out: every router active, VIPs on lo, BGP AS {so.local_as} to {', '.join(so.peers)} "
                   f"(AS {so.peer_as}) through {speaker}, drain {so.drain_time:g}s")
    if cfg.alerts is not None:
        al = cfg.alerts
        mail = (f"mail {', '.join(al.on) or 'nothing'} by default to {', '.join(al.email)} via "
                f"{al.smtp_server}:{al.smtp_port}" if al.email and al.smtp_server else "no mail")
        fifos = [f for f in (al.notify_fifo, al.role_notify_fifo, al.lvs_notify_fifo) if f]
        out.append(f"alerts: {mail}; notify FIFO {', '.join(fifos) if fifos else 'none'} (docs/alerts.md)")
    return out


def _describe_virtual(vs: VirtualService) -> list[str]:
    """The virtual service's line, its check, and each real server with its own check if any."""
    if vs.fwmark is not None:
        key = f"fwmark {vs.fwmark} (VIP {vs.address})"
    else:
        key = f"{host_port(vs.address, vs.port)}/{vs.protocol.value}"
    line = f"  {vs.name}: {key}"
    if vs.device:
        line += f" dev {vs.label or vs.device}"
    line += f", {vs.scheduler}, {vs.forwarding.value}"
    if vs.persistence:
        line += f", persistent {vs.persistence}s"
        if vs.persistence_prefixlen is not None:
            line += f" /{vs.persistence_prefixlen}"
    if vs.quiesce:
        line += ", quiesce"
    if vs.inhibit_on_failure:
        line += ", inhibit_on_failure"
    if vs.sorry_server:
        line += ", sorry server " + (host_port(vs.sorry_server, vs.sorry_server_port)
                                     if vs.sorry_server_port else vs.sorry_server)
    if vs.quorum != 1 or vs.hysteresis:
        line += f", quorum {vs.quorum}±{vs.hysteresis}"
    line += "".join(f", {flag}" for flag in ("alpha", "omega") if getattr(vs, flag))
    if not vs.active:
        line += " [inactive]"
    out = [line, f"    check: {_describe_check(vs.check)}"]
    out += [f"    {kw}: {getattr(vs, kw)}" for kw in ("quorum_up", "quorum_down") if getattr(vs, kw)]
    for rs in vs.servers:
        sl = f"    server {rs.name}: {host_port(rs.address, server_port(vs, rs))}, weight {rs.weight}"
        if rs.upper_threshold or rs.lower_threshold:
            sl += f", thresholds {rs.lower_threshold}..{rs.upper_threshold}"
        if not rs.active:
            sl += " [inactive]"
        out.append(sl)
        out += [f"      {kw}: {getattr(rs, kw)}" for kw in ("notify_up", "notify_down") if getattr(rs, kw)]
        if rs.check is not None:
            out.append(f"      check: {_describe_check(rs.check)}")
    return out


def _describe_failover(fs: FailoverService, fos: bool, keepalive: float) -> list[str]:
    """A failover service's line, and (with service = fos, when active) its check and commands."""
    out = [f"  {fs.name}: {host_port(fs.address, fs.port)}"
           + (f" dev {fs.label or fs.device}" if fs.device else "")
           + f", timeout {_secs(fs.timeout)}, reentry {_secs(fs.reentry)}"
           + ("" if fs.active else " [inactive]")]
    if fos and fs.active:
        check = "send/expect" if (fs.send or fs.expect) else "connect"
        out.append(f"    check: tcp {check} every keepalive ({_secs(keepalive)}); "
                   f"start_cmd {fs.start_cmd!r}, stop_cmd {fs.stop_cmd!r} on the active router")
    return out
