"""Range checks and cross-checks on a built model. Pure.

``validate(cfg)`` returns every problem as an ``Issue`` whose ``key`` is a dotted path in the native
(TOML) naming (``virtual.web.server.r1.weight``); the readers turn paths into file lines.
"""
from __future__ import annotations

import difflib
import ipaddress
import re

from lvsbus.config.model import shown as _shown
from lvsbus.config.model import (
    DEFAULT_GROUP,
    MAX_GROUP_NAME,
    MAX_GROUPS,
    PERSISTENCE_ENGINES,
    SCHEDULER_FLAGS,
    SCHEDULERS,
    Check,
    CheckKind,
    DNS_TYPES,
    Config,
    Heartbeat,
    Forwarding,
    Issue,
    Protocol,
    Scaleout,
    ServiceType,
    Severity,
    Track,
    TrackKind,
    VirtualService,
)

__all__ = ["validate", "NAME_RE", "DEVICE_RE", "LIMITS", "FIELD_LIMITS", "range_text"]

#: names of routers, virtual services, real servers, failover services
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
#: Linux interface names (IFNAMSIZ 16 incl. NUL), with an optional ``:label`` alias
DEVICE_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
LABEL_RE = re.compile(r"^[A-Za-z0-9_.@:-]{1,15}$")
#: ports and other counts: ASCII digits only (str.isdigit also takes '²' and '١')
_ASCII_DIGITS = re.compile(r"[0-9]{1,10}")

#: (low, high) inclusive ranges, documented in docs/config.md
LIMITS: dict[str, tuple[float, float]] = {
    "port": (1, 65535),
    "weight": (0, 65535),
    "priority": (1, 255),
    "keepalive": (0.01, 3600),
    "deadtime": (0.02, 86400),
    "preempt_delay": (0, 3600),
    "garp_repeat": (1, 100),
    "garp_refresh": (0, 86400),
    "ipvs_timeout": (0, 2147483),
    "sync_id": (0, 255),
    "fwmark": (1, 4294967295),
    "persistence": (0, 2147483),
    "threshold": (0, 4294967295),
    "interval": (0.01, 3600),
    "timeout": (0.01, 3600),
    "rise_fall": (1, 10000),
    "quorum": (0, 4294967295),
    "exit_code": (0, 255),
    "serial_no": (0, 2**63 - 1),
    "fos_time": (0.01, 86400),
    # lvs.cf virtual timeout / reentry, turned into fall / rise (at most 8,640,000 checks)
    "vs_timeout": (0.01, 86400),
    "vs_reentry": (0, 86400),
    "as_number": (1, 4294967295),
    "hold_time": (0, 65535),
    "drain_time": (0, 3600),
    "track_weight": (-254, 254),
    "smtp_timeout": (0.1, 3600),
    "alert_queue": (1, 100000),
}


#: (model class, field) -> its LIMITS entry, for the readers' own range messages
FIELD_LIMITS: dict[tuple[str, str], str] = {
    ("Config", "serial_no"): "serial_no",
    ("Router", "priority"): "priority",
    ("Heartbeat", "port"): "port",
    ("Heartbeat", "keepalive"): "keepalive",
    ("Heartbeat", "deadtime"): "deadtime",
    ("Heartbeat", "preempt_delay"): "preempt_delay",
    ("Heartbeat", "garp_repeat"): "garp_repeat",
    ("Heartbeat", "garp_refresh"): "garp_refresh",
    ("IpvsTimeouts", "tcp"): "ipvs_timeout",
    ("IpvsTimeouts", "tcpfin"): "ipvs_timeout",
    ("IpvsTimeouts", "udp"): "ipvs_timeout",
    ("SyncDaemon", "sync_id"): "sync_id",
    ("VirtualService", "port"): "port",
    ("VirtualService", "fwmark"): "fwmark",
    ("VirtualService", "persistence"): "persistence",
    ("VirtualService", "sorry_server_port"): "port",
    ("VirtualService", "quorum"): "quorum",
    ("Check", "interval"): "interval",
    ("Check", "retry_delay"): "interval",
    ("Check", "timeout"): "timeout",
    ("Check", "rise"): "rise_fall",
    ("Check", "fall"): "rise_fall",
    ("Check", "port"): "port",
    ("Check", "exit_code"): "exit_code",
    ("RealServer", "port"): "port",
    ("RealServer", "weight"): "weight",
    ("RealServer", "upper_threshold"): "threshold",
    ("RealServer", "lower_threshold"): "threshold",
    ("FailoverService", "port"): "port",
    ("Track", "weight"): "track_weight",
    ("Group", "preempt_delay"): "preempt_delay",
    ("Track", "interval"): "interval",
    ("Track", "timeout"): "timeout",
    ("Track", "rise"): "rise_fall",
    ("Track", "fall"): "rise_fall",
    ("FailoverService", "timeout"): "fos_time",
    ("FailoverService", "reentry"): "fos_time",
    ("Scaleout", "local_as"): "as_number",
    ("Scaleout", "peer_as"): "as_number",
    ("Scaleout", "hold_time"): "hold_time",
    ("Scaleout", "drain_time"): "drain_time",
    ("Alerts", "smtp_port"): "port",
    ("Alerts", "smtp_timeout"): "smtp_timeout",
    ("Alerts", "queue_size"): "alert_queue",
}


def range_text(limit: str) -> str:
    """``LIMITS[limit]`` as the messages write it: ``0.01..3600``."""
    lo, hi = LIMITS[limit]
    return f"{_fmt(lo)}..{_fmt(hi)}"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


class _Out:
    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def err(self, key: str, msg: str, suggestion: str | None = None) -> None:
        self.issues.append(Issue(key=key, message=msg, suggestion=suggestion))

    def warn(self, key: str, msg: str) -> None:
        self.issues.append(Issue(key=key, message=msg, severity=Severity.WARNING))

    def range(self, key: str, value: float | None, limit: str, note: str = "") -> bool:
        if value is None:
            return True
        lo, hi = LIMITS[limit]
        if not lo <= value <= hi:  # NaN too
            self.err(key, f"{_shown(value)} is out of range: must be {_fmt(lo)}..{_fmt(hi)}"
                          + (f" ({note})" if note else ""))
            return False
        return True

    def address(self, key: str, value: str | None, *, unicast: bool = True) -> ipaddress._BaseAddress | None:
        if value is None:
            return None
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            self.err(key, f"{_shown(value)} is not an IP address: give an IPv4 (192.0.2.10) or IPv6 "
                          "(2001:db8::10) address; host names are not resolved")
            return None
        if unicast and (ip.is_unspecified or ip.is_multicast or (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255"))):
            self.err(key, f"{value} cannot be used here: give a unicast address")
            return None
        return ip

    def name(self, key: str, value: str) -> None:
        if not NAME_RE.match(value or ""):
            self.err(key, f"{_shown(value)} is not a valid name: use 1-64 letters, digits, '_' or '-', "
                          "not starting with '-'")

    def named(self, key: str, name: str, seen: set[str], what: str, where: str = "") -> None:
        """``name`` of a ``what`` (router, virtual service...): its form, and not one of ``seen``,
        the names before it (it is added to them)."""
        self.name(key, name)
        if name in seen:
            self.err(key, f"{what} {_shown(name)} is defined twice{where}")
        seen.add(name)

    def device(self, key: str, device: str | None, label: str | None) -> None:
        if device is not None and not DEVICE_RE.match(device):
            self.err(key.rsplit(".", 1)[0] + ".device" if key.endswith(".label") else key,
                     f"{_shown(device)} is not an interface name (1-15 characters, no spaces, '/' or ':')")
        if label is not None:
            lkey = key.rsplit(".", 1)[0] + ".label"
            if device is None:
                self.err(lkey, "a label needs its device (label 'eth0:1' belongs to device 'eth0')")
            elif not label.startswith(device + ":") or not LABEL_RE.match(label):
                self.err(lkey, f"{_shown(label)} must be the device name, ':' and a suffix, like "
                               f"'{device}:1', at most 15 characters")

    def prefix(self, key: str, value: int | None, family: int | None) -> None:
        if value is None or family is None:
            return
        top = 32 if family == 4 else 128
        if not 0 <= value <= top:
            self.err(key, f"{_shown(value)} is not a prefix length for IPv{family}: must be 0..{top}")


def _check(o: _Out, path: str, chk: Check) -> None:
    o.range(f"{path}.interval", chk.interval, "interval")
    o.range(f"{path}.timeout", chk.timeout, "timeout")
    if chk.timeout > chk.interval:
        o.err(f"{path}.timeout", f"{chk.timeout:g} s is longer than the check interval "
                                 f"({chk.interval:g} s): a probe must end before the next starts")
    o.range(f"{path}.rise", chk.rise, "rise_fall")
    o.range(f"{path}.fall", chk.fall, "rise_fall")
    o.range(f"{path}.initial_rise", chk.initial_rise, "rise_fall")
    if chk.file_weight and chk.kind is not CheckKind.FILE:
        o.err(f"{path}.file_weight", "weights a file's number: only with kind = \"file\"")
    elif chk.file_weight and not -65535 <= chk.file_weight <= 65535:
        o.err(f"{path}.file_weight", f"{chk.file_weight}: -65535..65535")
    if chk.dynamic_weight and chk.kind is not CheckKind.PROGRAM:
        o.err(f"{path}.dynamic_weight", "sets the weight from a program's exit status: only with kind = \"program\"")
    if chk.retry_delay is not None:
        o.range(f"{path}.retry_delay", chk.retry_delay, "interval")
        if chk.retry_delay >= chk.interval:
            o.warn(f"{path}.retry_delay", f"{chk.retry_delay:g} s is not shorter than the interval "
                                          f"({chk.interval:g} s): a failed probe is retried at the interval")
    if chk.encoding not in ("utf-8", "latin-1"):
        o.err(f"{path}.encoding", f"{chk.encoding!r} must be \"utf-8\" or \"latin-1\" (one character a byte)")
    elif chk.encoding == "latin-1":
        for key in ("send", "expect", "payload"):
            if any(ord(ch) > 0xFF for ch in getattr(chk, key)):
                o.err(f"{path}.{key}", "has a character above U+00FF: with encoding \"latin-1\" each character "
                                       "is one byte (write bytes as \\u0000..\\u00ff)")
    if chk.port is not None:
        o.range(f"{path}.port", chk.port, "port")
    for key, pattern in (("expect", chk.expect if chk.regex else None), ("body_regex", chk.body_regex)):
        if pattern:
            try:
                re.compile(pattern)
            except re.error as exc:
                o.err(f"{path}.{key}", f"{_shown(pattern)} is not a valid regular expression: {exc}")
    kind = chk.kind
    if kind is CheckKind.TCP_SEND_EXPECT and not (chk.send or chk.expect):
        o.err(f"{path}.kind", "tcp_send_expect needs 'send' or 'expect' (or both); use "
                              "tcp_connect for a plain connect check")
    if kind in (CheckKind.HTTP, CheckKind.HTTPS):
        if not chk.path.startswith("/"):
            o.err(f"{path}.path", f"{_shown(chk.path)} must be an absolute URL path starting with '/'")
        if not chk.status:
            o.err(f"{path}.status", "give at least one expected HTTP status code (100..599)")
        for code in chk.status:
            if not 100 <= code <= 599:
                o.err(f"{path}.status", f"{_shown(code)} is not an HTTP status code: must be 100..599")
    if kind is CheckKind.PROGRAM:
        if not chk.command.strip():
            o.err(f"{path}.command", "a program check needs a command (%h = address, %p = port)")
        if chk.exit_code is not None:
            o.range(f"{path}.exit_code", chk.exit_code, "exit_code")
    if chk.host is not None and (not chk.host or any(c.isspace() for c in chk.host)):
        o.err(f"{path}.host", f"{_shown(chk.host)} is not a valid Host header value")
    _check_more(o, path, chk)


_MD5_HEX = re.compile(r"[0-9a-fA-F]{32}")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _check_more(o: _Out, path: str, chk: Check) -> None:
    """The keys of the keepalived check kinds: addresses, URLs and digests, smtp/dns/file."""
    for key in ("connect_ip", "bind"):
        v = getattr(chk, key)
        if v is not None:
            try:
                ipaddress.ip_address(v)
            except ValueError:
                o.err(f"{path}.{key}", f"{_shown(v)} is not an IP address")
    if chk.digest is not None and not _MD5_HEX.fullmatch(chk.digest):
        o.err(f"{path}.digest", f"{_shown(chk.digest)} is not an MD5 digest: 32 hex digits, as genhash prints")
    for i, u in enumerate(chk.urls, 1):
        up = f"{path}.urls"
        if not u.path.startswith("/"):
            o.err(up, f"URL {i}: {_shown(u.path)} must be an absolute URL path starting with '/'")
        if not u.status or any(not 100 <= c <= 599 for c in u.status):
            o.err(up, f"URL {i}: status must list HTTP status codes (100..599)")
        if u.digest is not None and not _MD5_HEX.fullmatch(u.digest):
            o.err(up, f"URL {i}: digest {_shown(u.digest)} is not an MD5 digest: 32 hex digits")
        if u.body_regex:
            try:
                re.compile(u.body_regex)
            except re.error as exc:
                o.err(up, f"URL {i}: body_regex {_shown(u.body_regex)} is not a valid regular expression: {exc}")
    if chk.urls and chk.kind not in (CheckKind.HTTP, CheckKind.HTTPS):
        o.warn(f"{path}.urls", f"only http and https checks fetch URLs: a {chk.kind.value} check ignores them")
    if chk.http_version not in ("1.0", "1.1"):
        o.err(f"{path}.http_version", f"{_shown(chk.http_version)} must be \"1.0\" or \"1.1\"")
    if chk.kind is not CheckKind.HTTPS and (chk.tls_verify or chk.tls_ca or chk.tls_cert or chk.tls_key):
        o.warn(f"{path}.kind", f"tls_* settings apply to https checks only: a {chk.kind.value} check ignores them")
    if chk.tls_key and not chk.tls_cert:
        o.err(f"{path}.tls_key", "a client key needs its certificate: set tls_cert too")
    if chk.kind is CheckKind.SMTP and (not chk.helo_name or any(c.isspace() for c in chk.helo_name)):
        o.err(f"{path}.helo_name", f"{_shown(chk.helo_name)} must be a host name (no spaces)")
    if chk.kind is CheckKind.DNS:
        if chk.dns_type.upper() not in DNS_TYPES:
            o.err(f"{path}.dns_type", f"{_shown(chk.dns_type)} is not allowed: one of {', '.join(DNS_TYPES)}")
        name = chk.dns_name.rstrip(".")
        if name and (len(name) > 253 or not all(_DNS_LABEL.fullmatch(x) for x in name.split("."))):
            o.err(f"{path}.dns_name", f"{_shown(chk.dns_name)} is not a DNS name (labels of letters, digits, "
                                      "- and _, at most 63 each)")
    if chk.kind is CheckKind.FILE and not chk.file.startswith("/"):
        o.err(f"{path}.file", f"{_shown(chk.file)}: a file check needs the file's absolute path")


def validate(cfg: Config, dialect: str = "toml") -> list[Issue]:
    """Every error and warning in ``cfg`` (errors have ``severity == ERROR``). ``dialect`` is the
    form the file was written in ("toml" or "lvscf"): a message that tells the operator which key
    to set names that form's keys (lvs.cf has no ``check.port``). Section by section, in this
    order (the order of the issues)."""
    o = _Out()
    o.range("serial_no", cfg.serial_no, "serial_no")
    router_devices = _routers(o, cfg)
    _heartbeat(o, cfg.heartbeat)
    _globals(o, cfg, router_devices)
    any_nat = _virtual_services(o, cfg, router_devices, dialect)
    _service_mode(o, cfg, any_nat)
    _failover_services(o, cfg)
    _tracks(o, cfg)
    _groups(o, cfg)
    if cfg.alerts is not None:
        _alerts(o, cfg)
    return o.issues


def _routers(o: _Out, cfg: Config) -> set[str]:
    """The routers: names, distinct addresses and priorities. Returns the devices they declare."""
    router_devices: set[str] = set()
    seen_router_names: set[str] = set()
    seen_router_addr: dict[str, str] = {}
    if not cfg.routers:
        o.err("router", "no router is configured: give at least one (lvs.cf: 'primary = IP')")
    for r in cfg.routers:
        p = f"router.{r.name}"
        o.named(p, r.name, seen_router_names, "router")
        for fname in ("address", "private_address", "shared_address"):
            value = getattr(r, fname)
            ip = o.address(f"{p}.{fname}", value)
            if ip is not None:
                other = seen_router_addr.get(str(ip))
                if other is not None:
                    o.err(f"{p}.{fname}", f"{ip} is already the address of {other}: every router "
                                          "address must be distinct")
                seen_router_addr[str(ip)] = f"router {r.name}"
        o.range(f"{p}.priority", r.priority, "priority")
        for fname in ("device", "private_device"):
            dev = getattr(r, fname)
            if dev is not None:
                o.device(f"{p}.{fname}", dev, None)
                router_devices.add(dev)
    prios: dict[int, str] = {}
    for r in cfg.routers:
        if r.priority in prios:
            o.err(f"router.{r.name}.priority", f"priority {r.priority} is also {prios[r.priority]}'s:"
                                               " router priorities must differ")
        prios.setdefault(r.priority, r.name)
    return router_devices


def _heartbeat(o: _Out, hb: Heartbeat) -> None:
    """Port, timing (deadtime against keepalive), key file, preemption and announcements."""
    o.range("heartbeat.port", hb.port, "port")
    ok = o.range("heartbeat.keepalive", hb.keepalive, "keepalive")
    ok = o.range("heartbeat.deadtime", hb.deadtime, "deadtime") and ok
    if ok:
        if hb.deadtime < 2 * hb.keepalive:
            o.err("heartbeat.deadtime", f"{hb.deadtime:g} s must be at least twice keepalive "
                                        f"({hb.keepalive:g} s), so one lost heartbeat does not "
                                        f"fail over; 3x or more ({3 * hb.keepalive:g} s) is advised")
        elif hb.deadtime < 3 * hb.keepalive:
            o.warn("heartbeat.deadtime", f"{hb.deadtime:g} s is under 3x keepalive "
                                         f"({3 * hb.keepalive:g} s): two lost heartbeats cause a "
                                         "failover")
    if not hb.key_file.startswith("/"):
        o.err("heartbeat.key_file", f"{_shown(hb.key_file)} must be an absolute path")
    o.range("heartbeat.preempt_delay", hb.preempt_delay, "preempt_delay")
    o.range("heartbeat.garp_repeat", hb.garp_repeat, "garp_repeat")
    o.range("heartbeat.garp_refresh", hb.garp_refresh, "garp_refresh")


def _globals(o: _Out, cfg: Config, router_devices: set[str]) -> None:
    """IPVS timeouts, the sync daemon, notify commands, metrics, the console, scale-out, nat_router."""
    for fname in ("tcp", "tcpfin", "udp"):
        o.range(f"ipvs_timeouts.{fname}", getattr(cfg.ipvs_timeouts, fname), "ipvs_timeout",
                "0 = the kernel's default")
    o.device("sync_daemon.interface", cfg.sync_daemon.interface, None)
    o.range("sync_daemon.sync_id", cfg.sync_daemon.sync_id, "sync_id")
    for fname in ("active_cmd", "inactive_cmd", "notify"):
        cmd = getattr(cfg.notify, fname)
        if cmd is not None and not cmd.strip():
            o.err(f"notify.{fname}", "is empty: give a command or leave the key out")
    if cfg.metrics_address is not None:
        _metrics(o, cfg.metrics_address)
    if cfg.web is not None:
        _web(o, cfg.web)
    if cfg.scaleout is not None:
        _scaleout(o, cfg)
    if cfg.reservation_conflict_action not in (None, "nothing", "preempt"):
        o.err("reservation_conflict_action", f"{_shown(cfg.reservation_conflict_action)}: must be "
                                             "'nothing' or 'preempt'")
    elif cfg.reservation_conflict_action is not None:
        o.warn("reservation_conflict_action", "kept but not acted on: lvsbus does no SCSI reservation; "
                                              "fencing is by the authenticated stop command over both "
                                              "heartbeat links")
    if cfg.debug_level is not None and cfg.debug_level.strip().upper() not in ("", "NONE", "0"):
        o.warn("debug_level", f"{_shown(cfg.debug_level)}: kept but not acted on: lvsbus's log level is "
                              "LVSBUS_LOG_LEVEL in the router's environment (debug, info, warning, "
                              "error; info by default)")
    if cfg.nat_router is not None:
        nr = cfg.nat_router
        ip = o.address("nat_router.address", nr.address)
        o.device("nat_router.device", nr.device, nr.label)
        o.prefix("nat_router.prefixlen", nr.prefixlen, ip.version if ip else None)
        if router_devices and nr.device is not None and nr.device not in router_devices:
            o.err("nat_router.device", f"{_shown(nr.device)} is not a device of any router "
                                       f"({', '.join(sorted(router_devices))})")


def _virtual_services(o: _Out, cfg: Config, router_devices: set[str], dialect: str) -> bool:
    """Every virtual service and its real servers. Returns whether an active one uses NAT."""
    names: set[str] = set()
    keys: dict[tuple, str] = {}
    any_nat = False
    for vs in cfg.virtual_services:
        any_nat = _virtual(o, vs, router_devices, names, keys, dialect) or any_nat
    return any_nat


def _virtual(o: _Out, vs: VirtualService, router_devices: set[str], names: set[str], keys: dict[tuple, str], dialect: str) -> bool:
    """One virtual service (``names`` and ``keys``: the services seen before it, to find
    duplicates). Returns whether it is active and uses NAT."""
    p = f"virtual.{vs.name}"
    o.named(p, vs.name, names, "virtual service")
    vip = _vip(o, p, vs, router_devices)
    fam = vip.version if vip else None
    _port_and_fwmark(o, p, vs)
    for fname in ("quorum_up", "quorum_down"):
        _command(o, f"{p}.{fname}", getattr(vs, fname))
    if vs.scheduler not in SCHEDULERS:
        close = difflib.get_close_matches(vs.scheduler, SCHEDULERS, n=1, cutoff=0.6)
        o.err(f"{p}.scheduler", f"{_shown(vs.scheduler)} is not an IPVS scheduler: one of "
                                f"{', '.join(SCHEDULERS)}", close[0] if close else None)
    _ipvs_options(o, p, vs)
    _persistence(o, p, vs, fam)
    _sorry_server(o, p, vs, fam)
    o.range(f"{p}.quorum", vs.quorum, "quorum")
    if vs.hysteresis < 0 or (vs.quorum > 0 and vs.hysteresis >= vs.quorum):
        o.err(f"{p}.hysteresis", f"{_shown(vs.hysteresis)} must be 0..quorum-1 "
                                 f"({_shown(max(vs.quorum - 1, 0))})")
    if vip is not None:
        _unique_service(o, p, vs, vip, keys)
    _check(o, f"{p}.check", vs.check)
    if vs.protocol is Protocol.UDP and vs.check.kind in (
            CheckKind.TCP_CONNECT, CheckKind.TCP_SEND_EXPECT, CheckKind.HTTP, CheckKind.HTTPS):
        o.warn(f"{p}.check.kind", f"a {vs.check.kind.value} check on a UDP service probes the "
                                  "TCP port of the same number")
    _servers(o, p, vs, fam, dialect)
    return vs.forwarding is Forwarding.NAT and vs.active


def _vip(o: _Out, p: str, vs: VirtualService, router_devices: set[str]) -> ipaddress._BaseAddress | None:
    """The VIP, its device (one of the routers' when they declare theirs) and prefix length.
    Returns the address (None: not one)."""
    vip = o.address(f"{p}.address", vs.address)
    o.device(f"{p}.device", vs.device, vs.label)
    if vs.device is not None and router_devices and vs.device not in router_devices:
        o.err(f"{p}.device", f"{_shown(vs.device)} is not a device of any router "
                             f"(declared: {', '.join(sorted(router_devices))})")
    if vs.vip_prefixlen is not None:
        o.prefix(f"{p}.vip_prefixlen", vs.vip_prefixlen, vip.version if vip else None)
    return vip


def _port_and_fwmark(o: _Out, p: str, vs: VirtualService) -> None:
    """A port 1..65535, or 0 (all ports) for a persistent or fwmark service; the fwmark's range."""
    all_ports_ok = vs.fwmark is not None or vs.persistence > 0
    if vs.port == 0 and not all_ports_ok:
        o.err(f"{p}.port", "0 (all ports) is only allowed for a persistent or fwmark service: "
                           "give a port 1..65535")
    elif vs.port != 0:
        o.range(f"{p}.port", vs.port, "port", "0 = all ports, for persistent or fwmark services")
    if vs.fwmark is not None:
        o.range(f"{p}.fwmark", vs.fwmark, "fwmark")


def _persistence(o: _Out, p: str, vs: VirtualService, fam: int | None) -> None:
    o.range(f"{p}.persistence", vs.persistence, "persistence", "seconds, 0 = not persistent")
    if vs.persistence_prefixlen is not None:
        o.prefix(f"{p}.persistence_prefixlen", vs.persistence_prefixlen, fam)
        if vs.persistence == 0:
            o.warn(f"{p}.persistence_prefixlen", "has no effect: the service is not persistent")


def _sorry_server(o: _Out, p: str, vs: VirtualService, fam: int | None) -> None:
    """The sorry server: an address of the VIP's family (unless tunnelled), its port only with it."""
    if vs.sorry_server is not None:
        sorry = o.address(f"{p}.sorry_server", vs.sorry_server)
        if sorry is not None and fam is not None and sorry.version != fam \
                and vs.forwarding is not Forwarding.TUNNEL:
            o.err(f"{p}.sorry_server", f"{sorry} is IPv{sorry.version} but the VIP is IPv{fam}: "
                                       "mixed families need forwarding = 'tunnel'")
    if vs.sorry_server_port is not None:
        o.range(f"{p}.sorry_server_port", vs.sorry_server_port, "port")
        if vs.sorry_server is None:
            o.err(f"{p}.sorry_server_port", "is set without sorry_server")


def _unique_service(o: _Out, p: str, vs: VirtualService, vip: ipaddress._BaseAddress,
                    keys: dict[tuple, str]) -> None:
    """No other virtual service has the same IPVS identity (VIP, protocol, port; or fwmark and
    family); this one's is added to ``keys``."""
    if vs.fwmark is not None:
        key: tuple = ("fwmark", vip.version, vs.fwmark)
        what = f"fwmark {vs.fwmark} (IPv{vip.version})"
    else:
        key = ("vip", str(vip), vs.protocol, vs.port)
        what = f"{vip} port {vs.port}/{vs.protocol.value}"
    if key in keys:
        o.err(p, f"duplicate virtual service: {what} is already virtual {_shown(keys[key])}")
    else:
        keys[key] = vs.name


def _service_mode(o: _Out, cfg: Config, any_nat: bool) -> None:
    """What ``service`` (lvs or fos) leaves unused, and a NAT setup without its gateway."""
    if any_nat and cfg.nat_router is None and cfg.service is ServiceType.LVS:
        o.warn("nat_router", "NAT services are configured but no nat_router: the real servers need "
                             "a gateway address that moves with the active router")
    if cfg.service is ServiceType.FOS and not cfg.failover_services:
        o.warn("service", "service = fos but no failover service is defined")
    if cfg.service is ServiceType.FOS:
        for vs in cfg.virtual_services:
            o.warn(f"virtual.{vs.name}", f"service = fos: virtual service {vs.name!r} is ignored "
                                         "(no IPVS table, no VIP, no checks in fos mode)")
        if cfg.nat_router is not None:
            o.warn("nat_router", "service = fos: nat_router is ignored (it serves LVS NAT only)")
        # the applier stays idle in fos mode: nothing sets the IPVS globals either
        if cfg.sync_daemon.enabled:
            o.warn("sync_daemon.enabled", "service = fos: the IPVS connection sync daemon is not started "
                                          "(no IPVS in fos mode)")
        for fname in ("tcp", "tcpfin", "udp"):
            if getattr(cfg.ipvs_timeouts, fname):
                o.warn(f"ipvs_timeouts.{fname}", "service = fos: IPVS timeouts are not set (no IPVS in "
                                                 "fos mode)")
    else:
        for fs in cfg.failover_services:
            o.warn(f"failover.{fs.name}", f"service = lvs: failover service {fs.name!r} is ignored "
                                          "(set service = fos to run it)")


def _failover_services(o: _Out, cfg: Config) -> None:
    """Every failover service (``service = fos``): names, addresses, timing, its commands."""
    fnames: set[str] = set()
    for fs in cfg.failover_services:
        p = f"failover.{fs.name}"
        o.named(p, fs.name, fnames, "failover service")
        ip = o.address(f"{p}.address", fs.address)
        o.device(f"{p}.device", fs.device, fs.label)
        if fs.vip_prefixlen is not None:
            o.prefix(f"{p}.vip_prefixlen", fs.vip_prefixlen, ip.version if ip else None)
        o.range(f"{p}.port", fs.port, "port")
        o.range(f"{p}.timeout", fs.timeout, "fos_time")
        o.range(f"{p}.reentry", fs.reentry, "fos_time")
        if cfg.service is ServiceType.FOS and fs.active:
            for fname in ("start_cmd", "stop_cmd"):
                if not (getattr(fs, fname) or "").strip():
                    o.err(f"{p}.{fname}", "an active failover service needs start_cmd and stop_cmd")
        for fname in ("start_cmd", "stop_cmd"):
            if len(getattr(fs, fname) or "") > 4096:  # pulse.run_failover carries at most 4096 characters
                o.err(f"{p}.{fname}", "is longer than 4096 characters: put it in a script")


#: the keys each kind of tracked item uses (besides weight, reverse and on_routers)
_TRACK_KEYS: dict[TrackKind, tuple[str, ...]] = {
    TrackKind.INTERFACE: ("device",),
    TrackKind.SCRIPT: ("command", "interval", "timeout", "rise", "fall"),
    TrackKind.FILE: ("path",),
    TrackKind.SERVICE: ("virtual",),
}
_TRACK_DEFAULTS = Track(name="x", kind=TrackKind.FILE)


def _tracks(o: _Out, cfg: Config) -> None:
    """Tracked items: what each kind needs, a key that another kind uses (an error: it would be
    ignored), the routers named, and weights in keepalived's range."""
    names: set[str] = set()
    routers = {r.name for r in cfg.routers}
    track_servers = {rs.name for vs in cfg.lvs_services() if vs.name == "track" for rs in vs.servers}
    for t in cfg.tracks:
        p = f"track.{t.name}"
        o.named(p, t.name, names, "tracked item")
        o.range(f"{p}.weight", t.weight, "track_weight")
        used = _TRACK_KEYS.get(t.kind, ())
        for fname in ("device", "command", "path", "interval", "timeout", "rise", "fall", "virtual"):
            if fname not in used and getattr(t, fname) != getattr(_TRACK_DEFAULTS, fname):
                o.err(f"{p}.{fname}", f"is not used by kind = {t.kind.value!r} (it uses "
                                      f"{', '.join(used)}): remove it, or change the kind")
        if t.kind is TrackKind.INTERFACE:
            if not t.device:
                o.err(f"{p}.device", "kind = 'interface' needs the device to watch, e.g. device = \"eth1\"")
            else:
                o.device(f"{p}.device", t.device, None)
        elif t.kind is TrackKind.SCRIPT:
            if not (t.command or "").strip():
                o.err(f"{p}.command", "kind = 'script' needs the command to run")
            elif len(t.command or "") > 4096:
                o.err(f"{p}.command", "is longer than 4096 characters: put it in a script")
            if t.name in track_servers:  # nanny's machine ids: "track/NAME" for both
                o.err(p, f"virtual service 'track' has a real server named {_shown(t.name)}: nanny's "
                         f"check ids would collide (track/{t.name}); rename the script or the server")
            o.range(f"{p}.interval", t.interval, "interval")
            o.range(f"{p}.timeout", t.timeout, "timeout")
            o.range(f"{p}.rise", t.rise, "rise_fall")
            o.range(f"{p}.fall", t.fall, "rise_fall")
        elif t.kind is TrackKind.FILE:
            if not t.path:
                o.err(f"{p}.path", "kind = 'file' needs the path of the file to read")
            elif not t.path.startswith("/") or "\0" in t.path or len(t.path) > 4096:
                o.err(f"{p}.path", f"{_shown(t.path)} must be an absolute path")
        elif t.kind is TrackKind.SERVICE:
            _service_track(o, cfg, p, t)
        for r in t.on_routers:
            if r not in routers:
                o.err(f"{p}.on_routers", f"{_shown(r)} is not a configured router "
                                      f"({', '.join(sorted(routers)) or 'none'})")


def _service_track(o: _Out, cfg: Config, p: str, t: Track) -> None:
    """A tracked service: an active virtual service, and a negative weight (its quorum lost here
    lowers this router's priority, so a peer that still has quorum outranks it; FAULT would give
    the VIPs up even when every router has lost the service)."""
    virtuals = {vs.name: vs for vs in cfg.lvs_services()}
    if not t.virtual:
        o.err(f"{p}.virtual", "kind = 'service' needs the virtual service to watch, e.g. virtual = \"web\"")
    elif t.virtual not in virtuals:
        close = difflib.get_close_matches(t.virtual, list(virtuals), n=1, cutoff=0.6)
        o.err(f"{p}.virtual", f"{_shown(t.virtual)} is not a virtual service the routers run"
                              + (" (service = fos runs none)" if cfg.service is ServiceType.FOS else ""),
              close[0] if close else None)
    elif not virtuals[t.virtual].active:
        o.err(f"{p}.virtual", f"virtual service {t.virtual!r} is not active: it has no quorum to watch")
    if t.weight >= 0:
        o.err(f"{p}.weight", f"{t.weight} for kind = 'service': give a negative weight, subtracted while "
                             "the service has lost quorum on this router (a peer that still has it then "
                             "outranks this router), larger than the priority gap between the routers")
    if t.reverse:
        o.err(f"{p}.reverse", "is not used by kind = 'service' (the item fails when the service loses quorum)")


def _ipvs_options(o: _Out, p: str, vs) -> None:
    """Scheduler flags, one-packet scheduling and the persistence engine: each where IPVS has it."""
    every = sorted({f for flags in SCHEDULER_FLAGS.values() for f in flags})
    seen: set[str] = set()
    for flag in vs.scheduler_flags:
        if flag in seen:
            o.err(f"{p}.scheduler_flags", f"{_shown(flag)} is given twice")
        seen.add(flag)
        owner = next((s for s, flags in SCHEDULER_FLAGS.items() if flag in flags), None)
        if owner is None:
            close = difflib.get_close_matches(flag, every, n=1, cutoff=0.6)
            o.err(f"{p}.scheduler_flags", f"{_shown(flag)} is not an IPVS scheduler flag: one of "
                                          f"{', '.join(every)}", close[0] if close else None)
        elif owner != vs.scheduler:
            o.err(f"{p}.scheduler_flags", f"{flag} is a flag of the {owner} scheduler, and this "
                                          f"service's scheduler is {vs.scheduler}: set "
                                          f"scheduler = \"{owner}\" or drop the flag")
    if vs.ops and vs.protocol is not Protocol.UDP:
        o.err(f"{p}.ops", "one-packet scheduling is for UDP services only: set protocol = \"udp\" "
                          "(for a fwmark service, the protocol of the marked packets) or drop ops")
    pe = vs.persistence_engine
    if pe is not None:
        if pe not in PERSISTENCE_ENGINES:
            o.err(f"{p}.persistence_engine", f"{_shown(pe)} is not an IPVS persistence engine: one "
                                             f"of {', '.join(PERSISTENCE_ENGINES)}")
        else:
            if vs.persistence == 0:
                o.err(f"{p}.persistence_engine", f"the {pe} persistence engine needs a persistent "
                                                 "service: set persistence (seconds)")
            if vs.protocol is not Protocol.UDP:
                o.err(f"{p}.persistence_engine", f"the {pe} persistence engine reads SIP over UDP "
                                                 "only: set protocol = \"udp\"")


def _command(o: _Out, key: str, cmd: str | None) -> None:
    """A shell command a service runs (notify_up, quorum_down...): not empty, not huge."""
    if cmd is not None and not cmd.strip():
        o.err(key, "is empty: give a command, or leave the key out")
    elif cmd is not None and len(cmd) > 4096:
        o.err(key, "is longer than 4096 characters: put it in a script")


def _servers(o: _Out, p: str, vs, fam: int | None, dialect: str = "toml") -> None:
    seen: set[str] = set()
    endpoints: dict[tuple, str] = {}
    if vs.active and not vs.servers and vs.sorry_server is None:
        o.warn(p, "has no real servers and no sorry server: it will reject every connection")
    for rs in vs.servers:
        rp = f"{p}.server.{rs.name}"
        o.named(rp, rs.name, seen, "real server", f" in virtual {_shown(vs.name)}")
        ip = o.address(f"{rp}.address", rs.address)
        if ip is not None and fam is not None and ip.version != fam \
                and vs.forwarding is not Forwarding.TUNNEL:
            o.err(f"{rp}.address", f"{ip} is IPv{ip.version} but the VIP is IPv{fam}: mixed "
                                   "families need forwarding = 'tunnel'")
        if rs.port is not None:
            _server_port(o, rp, rs, vs)
        o.range(f"{rp}.weight", rs.weight, "weight")
        o.range(f"{rp}.upper_threshold", rs.upper_threshold, "threshold")
        o.range(f"{rp}.lower_threshold", rs.lower_threshold, "threshold")
        if rs.upper_threshold and rs.lower_threshold > rs.upper_threshold:
            o.err(f"{rp}.lower_threshold", f"{rs.lower_threshold} must not exceed upper_threshold "
                                           f"({rs.upper_threshold})")
        if rs.check is not None:
            _check(o, f"{rp}.check", rs.check)
        for fname in ("notify_up", "notify_down"):
            _command(o, f"{rp}.{fname}", getattr(rs, fname))
        _port_to_check(o, rp, rs, vs, dialect)
        if ip is not None:
            ep = (str(ip), rs.port if rs.port is not None else vs.port)
            if ep in endpoints:
                o.err(f"{rp}.address", f"{ip} port {ep[1]} is already real server "
                                       f"{_shown(endpoints[ep])} of this virtual service")
            endpoints[ep] = rs.name


def _server_port(o: _Out, rp: str, rs, vs) -> None:
    """A real server's own port: 1..65535, or 0 (the client's port) for a fwmark service; one that
    differs from the service's only where NAT can rewrite it."""
    if rs.port == 0 and vs.fwmark is None and vs.port != 0:
        o.err(f"{rp}.port", "0 (keep the client's port) is only for a fwmark service, whose "
                            "mark groups several ports: must be 1..65535 (leave it out to "
                            "use the virtual service's port)")
    elif rs.port != 0:
        o.range(f"{rp}.port", rs.port, "port")
    if vs.forwarding is not Forwarding.NAT and rs.port != vs.port and 0 not in (vs.port, rs.port):
        o.warn(f"{rp}.port", f"{rs.port} differs from the service port {vs.port}: only NAT "
                             "can rewrite ports; direct/tunnel forward to the service port")


def _port_to_check(o: _Out, rp: str, rs, vs, dialect: str) -> None:
    """nanny needs a port to probe (but for a program check): the check's, the server's or the
    service's, not all of them 0."""
    chk = rs.check or vs.check
    port = rs.port if rs.port is not None else vs.port
    if chk.kind is not CheckKind.PROGRAM and chk.port is None and port == 0 and vs.port == 0:
        if dialect == "lvscf":
            o.err(f"{rp}.port", "nanny has no port to check: the virtual service's port is 0 "
                                "and so is this server's. Give the virtual's 'port' (the port "
                                "nanny checks); 'port = 0' in a server block of a fwmark "
                                "service keeps the client's port")
        else:
            o.err(f"{rp}.port", "nanny has no port to check: the service listens on all ports "
                                "(port 0) and so does this server: set check.port (the port "
                                "nanny probes) or the server's port")


#: schedulers that map a flow to the same real server on every router with the same real servers
CONSISTENT_SCHEDULERS = ("mh",)
SPEAKERS = ("bird", "bird-running")


def _scaleout(o: _Out, cfg: Config) -> None:
    """``[scaleout]`` (docs/scaleout.md): the BGP settings, and the setups in which N active
    routers would not map a flow to the same real server."""
    so = cfg.scaleout
    assert so is not None
    _scaleout_settings(o, so)
    families = _scaleout_peers(o, cfg, so)
    for r in cfg.routers:
        try:
            v4 = ipaddress.ip_address(r.address).version == 4
        except ValueError:
            continue  # reported with the router
        if not v4:
            o.err(f"router.{r.name}.address", f"{r.address}: scale-out uses a router's address as its BGP "
                                              "router ID, which is an IPv4 address")
    if cfg.service is ServiceType.FOS:
        o.err("scaleout", "service = fos has no virtual services to announce: scale-out needs service = lvs")
    for vs in cfg.lvs_services():
        if vs.active:
            _scaleout_service(o, vs, families, cfg.sync_daemon.enabled)
    if cfg.nat_router is not None:
        o.warn("nat_router", "nat_router with [scaleout]: not held (a gateway address cannot live on every "
                             "router); scale-out routers hold only the virtual services' VIPs, on lo")


def _scaleout_settings(o: _Out, so: Scaleout) -> None:
    """The speaker, the AS numbers, the timers and the speaker's control socket."""
    if so.speaker not in SPEAKERS:
        close = difflib.get_close_matches(so.speaker, SPEAKERS, n=1, cutoff=0.6)
        o.err("scaleout.speaker", f"{_shown(so.speaker)} is not supported: one of {', '.join(SPEAKERS)} "
                                  "(docs/scaleout.md says why BIRD, and what another speaker needs)",
              close[0] if close else None)
    o.range("scaleout.local_as", so.local_as, "as_number")
    o.range("scaleout.peer_as", so.peer_as, "as_number")
    if o.range("scaleout.hold_time", so.hold_time, "hold_time") and 0 < so.hold_time < 3:
        o.err("scaleout.hold_time", f"{so.hold_time} s: BGP allows 0 (no hold timer) or 3 s and more (RFC 4271)")
    o.range("scaleout.drain_time", so.drain_time, "drain_time")
    if so.speaker == "bird-running" and not (so.routes_file or "").startswith("/"):
        o.err("scaleout.routes_file", "speaker = \"bird-running\" needs routes_file: the absolute path of the file "
                                      "lvsbus writes the VIPs' routes to, which your bird.conf includes")
    elif so.speaker != "bird-running" and so.routes_file is not None:
        o.err("scaleout.routes_file", "only with speaker = \"bird-running\" (lvsbus's own BIRD keeps its routes "
                                      "in its state directory)")
    if not so.control_socket or so.control_socket.endswith("/") or len(so.control_socket) > 100:
        o.err("scaleout.control_socket", f"{_shown(so.control_socket)}: a socket's path (absolute, or relative "
                                         "to the router's state directory), at most 100 characters")


def _scaleout_peers(o: _Out, cfg: Config, so: Scaleout) -> set[int]:
    """The BGP peers: at least one, each an address of no router here, each once. Returns the
    address families they carry."""
    families: set[int] = set()
    seen: set[str] = set()
    own = {a for r in cfg.routers for a in (r.address, r.private_address, r.shared_address) if a}
    if not so.peers:
        o.err("scaleout.peers", "no BGP peer: give the upstream router(s) the VIPs are announced to")
    for i, peer in enumerate(so.peers):
        ip = o.address(f"scaleout.peers[{i}]", peer)
        if ip is None:
            continue
        families.add(ip.version)
        if str(ip) in own:
            o.err(f"scaleout.peers[{i}]", f"{ip} is a router of this config: peers are the upstream routers")
        if str(ip) in seen:
            o.err(f"scaleout.peers[{i}]", f"{ip} is listed twice")
        seen.add(str(ip))
    return families


def _scaleout_service(o: _Out, vs: VirtualService, families: set[int], sync: bool) -> None:
    """An active virtual service under scale-out: a consistent scheduler (or connection sync), a
    peer of its VIP's family, no NAT."""
    p = f"virtual.{vs.name}"
    if vs.scheduler not in CONSISTENT_SCHEDULERS and not sync:
        o.err(f"{p}.scheduler", f"{_shown(vs.scheduler)} is not consistent across routers: with "
                                "[scaleout] every router must send a flow to the same real server, so use "
                                "scheduler = \"mh\" (Maglev hashing), or turn on [sync_daemon] (connection "
                                "sync) and accept its limits (docs/scaleout.md)", "mh")
    try:
        fam = ipaddress.ip_address(vs.address).version
    except ValueError:
        return
    if families and fam not in families:
        o.err(f"{p}.address", f"{vs.address}: no BGP peer of its address family in scaleout.peers "
                              "would carry it (an IPv4 VIP goes over an IPv4 session, IPv6 over IPv6)")
    if vs.forwarding is Forwarding.NAT:
        o.warn(f"{p}.forwarding", "nat with [scaleout]: the real servers' replies go back through one "
                                  "gateway, not the router that took the flow; use direct or tunnel")


def _web(o: _Out, web) -> None:
    host = _metrics(o, web.address, "web.address", 9540)
    if (web.tls_cert is None) != (web.tls_key is None):
        o.err("web.tls_cert" if web.tls_cert is None else "web.tls_key",
              "TLS needs both tls_cert and tls_key (or neither: plain HTTP)")
    for key in ("tls_cert", "tls_key", "password_file"):
        value = getattr(web, key)
        if value is not None and not value.startswith("/"):
            o.err(f"web.{key}", f"{_shown(value)} must be an absolute path")
    if host is not None and not host.is_loopback and web.tls_cert is None:
        o.warn("web.address", f"{web.address} is not a loopback address and the console has no TLS "
                              "(tls_cert, tls_key): passwords and session cookies cross the network in clear")


def _metrics(o: _Out, value: str, key: str = "metrics_address", example: int = 9539) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    ok = bool(sep) and _ASCII_DIGITS.fullmatch(port) is not None and 1 <= int(port) <= 65535
    ip = None
    if ok:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ok = False
    if not ok:
        o.err(key, f"{_shown(value)} must be ADDRESS:PORT, like '127.0.0.1:{example}' or "
                   f"'[::1]:{example}'")
    return ip


def _groups(o: _Out, cfg: Config) -> None:
    """Failover groups: names (short enough for the heartbeat), the routers and priorities each
    names, preemption, commands; every group a service, nat_router or tracked item names exists;
    one VIP address belongs to one group (one router at a time holds it)."""
    routers = {r.name: r for r in cfg.routers}
    names: set[str] = set()
    for g in cfg.groups:
        p = f"group.{g.name}"
        o.named(p, g.name, names, "failover group")
        if len(g.name) > MAX_GROUP_NAME:
            o.err(p, f"the name is {len(g.name)} characters: a failover group's name is at most "
                     f"{MAX_GROUP_NAME} (every heartbeat carries it)")
        seen: set[str] = set()
        for rname, prio in g.priority:
            k = f"{p}.priority.{rname}"
            if rname in seen:
                o.err(k, f"router {_shown(rname)} is given two priorities")
            seen.add(rname)
            if rname not in routers:
                close = difflib.get_close_matches(rname, list(routers), n=1, cutoff=0.6)
                o.err(k, f"{_shown(rname)} is not a configured router (routers: "
                         f"{', '.join(routers) or 'none'})", close[0] if close else None)
            o.range(k, prio, "priority")
        effective: dict[int, str] = {}
        for r in cfg.routers:
            prio = g.priority_on(r)
            if prio in effective:
                o.err(f"{p}.priority", f"{r.name} and {effective[prio]} both have priority {prio} in "
                                       f"this group: a group's router priorities must differ (give "
                                       f"each router its own in priority = {{...}})")
            effective.setdefault(prio, r.name)
        if g.preempt_delay is not None:
            o.range(f"{p}.preempt_delay", g.preempt_delay, "preempt_delay")
        if g.sync_group is not None:
            o.name(f"{p}.sync_group", g.sync_group)
        for fname in ("active_cmd", "inactive_cmd", "notify", "fault_cmd"):
            cmd = getattr(g, fname)
            if cmd is not None and not cmd.strip():
                o.err(f"{p}.{fname}", "is empty: give a command, or leave the key out")
            elif cmd is not None and len(cmd) > 4096:
                o.err(f"{p}.{fname}", "is longer than 4096 characters: put it in a script")
    in_force = cfg.group_names()
    if len(in_force) > MAX_GROUPS:
        o.err("group", f"{len(in_force)} failover groups: at most {MAX_GROUPS} (every heartbeat "
                       "carries each group's state)")
    known = set(names) | {DEFAULT_GROUP}

    def exists(key: str, group: str | None) -> None:
        if group is None or group in known:
            return
        close = difflib.get_close_matches(group, sorted(names), n=1, cutoff=0.6)
        o.err(key, f"failover group {_shown(group)} is not declared: add [group.{group}], or name "
                   f"one of: {', '.join(sorted(known))}", close[0] if close else None)

    # one VIP address, one group: the group decides which router holds the address
    owner: dict[str, tuple[str, str]] = {}

    def vip(key: str, what: str, address: str, group: str | None) -> None:
        try:
            addr = str(ipaddress.ip_address(address))
        except ValueError:
            return  # reported with the service
        grp = group or DEFAULT_GROUP
        first = owner.setdefault(addr, (grp, what))
        if first[0] != grp:
            o.err(key, f"VIP {addr} is in failover group {first[0]!r} ({first[1]}) and in {grp!r} "
                       f"({what}): one router at a time holds an address, so all its services "
                       "must be in one group")

    for vs in cfg.lvs_services():
        exists(f"virtual.{vs.name}.group", vs.group)
        if vs.active:
            vip(f"virtual.{vs.name}.group", f"virtual {vs.name}", vs.address, vs.group)
    for fs in cfg.fos_services():
        exists(f"failover.{fs.name}.group", fs.group)
        if fs.active:
            vip(f"failover.{fs.name}.group", f"failover {fs.name}", fs.address, fs.group)
    if cfg.nat_router is not None and cfg.service is ServiceType.LVS:
        exists("nat_router.group", cfg.nat_router.group)
        vip("nat_router.group", "nat_router", cfg.nat_router.address, cfg.nat_router.group)
    for t in cfg.tracks:
        for gname in t.groups:
            exists(f"track.{t.name}.groups", gname)
    # declared, but holding nothing; a sync group of one
    used = {v.group or DEFAULT_GROUP for v in cfg.lvs_services()} | {
        f.group or DEFAULT_GROUP for f in cfg.fos_services()}
    if cfg.nat_router is not None and cfg.service is ServiceType.LVS:
        used.add(cfg.nat_router.group or DEFAULT_GROUP)
    syncs: dict[str, list[str]] = {}
    for g in cfg.groups:
        if g.name not in used:
            o.warn(f"group.{g.name}", "no virtual service, failover service or nat_router names this "
                                      "group: it is elected, but holds no VIP")
        if g.sync_group is not None:
            syncs.setdefault(g.sync_group, []).append(g.name)
    for sync, members in syncs.items():
        if len(members) == 1:
            o.warn(f"group.{members[0]}.sync_group", f"{_shown(sync)} has no other member: the group "
                                                     "moves alone (name the same sync_group in the "
                                                     "groups that must move together)")


#: an address as a mail relay takes it in RCPT TO / MAIL FROM: local@domain, no spaces, quotes or
#: angle brackets (no display names: ``"Ops" <ops@example.org>`` is refused)
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
#: a host name (smtp_server, smtp_helo_name): DNS labels
_HOST = re.compile(r"(?=.{1,253}$)(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")
_ALERT_TARGETS = ("group", "virtual", "server")


def _alerts(o: _Out, cfg: Config) -> None:
    """``[alerts]`` (docs/alerts.md): addresses, the relay, the FIFOs, and the names ``mail`` and
    ``no_mail`` give (each must exist in the config)."""
    from lvsbus.config.model import ALERT_KINDS

    al = cfg.alerts
    assert al is not None
    for i, addr in enumerate(al.email):
        if not _EMAIL.fullmatch(addr):
            o.err("alerts.email", f"{_shown(addr)} (item {i + 1}) is not a mail address like ops@example.org")
    if len(set(al.email)) != len(al.email):
        o.warn("alerts.email", "an address is listed twice: it gets each mail once")
    if al.email_from is not None and not _EMAIL.fullmatch(al.email_from):
        o.err("alerts.email_from", f"{_shown(al.email_from)} is not a mail address like lvsbus@router1.example.org")
    if al.smtp_server is not None:
        try:
            ipaddress.ip_address(al.smtp_server)
        except ValueError:
            if not _HOST.fullmatch(al.smtp_server):
                o.err("alerts.smtp_server", f"{_shown(al.smtp_server)} is not an IP address or a host name")
    if al.smtp_helo_name is not None and not _HOST.fullmatch(al.smtp_helo_name):
        o.err("alerts.smtp_helo_name", f"{_shown(al.smtp_helo_name)} is not a host name")
    o.range("alerts.smtp_port", al.smtp_port, "port")
    o.range("alerts.smtp_timeout", al.smtp_timeout, "smtp_timeout")
    o.range("alerts.queue_size", al.queue_size, "alert_queue")
    if al.router_id is not None and (not al.router_id.strip() or len(al.router_id) > 64
                                     or any(ord(c) < 0x20 or ord(c) == 0x7F for c in al.router_id)):
        o.err("alerts.router_id", f"{_shown(al.router_id)}: 1..64 printable characters")
    if al.email and al.smtp_server is None:
        o.err("alerts.smtp_server", "alerts.email needs a mail relay to send through: set smtp_server")
    elif al.smtp_server is not None and not al.email:
        o.warn("alerts.email", "no recipient: smtp_server is set but nothing is mailed (give email = [...])")
    for kind in al.on:
        if kind not in ALERT_KINDS:
            o.err("alerts.on", f"{_shown(kind)} is not allowed: any of {', '.join(ALERT_KINDS)}",
                  _suggest(kind, ALERT_KINDS))
    groups = set(cfg.group_names()) | {g.sync_group for g in cfg.groups if g.sync_group}
    virtuals = {vs.name: {rs.name for rs in vs.servers} for vs in cfg.virtual_services}
    seen: dict[str, str] = {}
    for key in ("mail", "no_mail"):
        for entry in getattr(al, key):
            what, _, name = entry.partition(":")
            if what not in _ALERT_TARGETS or not name:
                o.err(f"alerts.{key}", f"{_shown(entry)}: give group:NAME, virtual:NAME or server:VIRTUAL/NAME")
                continue
            if what == "group" and name not in groups:
                o.err(f"alerts.{key}", f"{_shown(entry)}: no failover group or sync group {name} "
                                       f"(groups: {', '.join(sorted(groups))})")
            elif what == "virtual" and name not in virtuals:
                o.err(f"alerts.{key}", f"{_shown(entry)}: no virtual service {name}")
            elif what == "server":
                vname, _, sname = name.partition("/")
                if sname not in virtuals.get(vname, ()):
                    o.err(f"alerts.{key}", f"{_shown(entry)}: no real server {sname or '?'} in a virtual service "
                                           f"{vname} (server:VIRTUAL/NAME)")
            if seen.get(entry, key) != key:
                o.err(f"alerts.{key}", f"{_shown(entry)} is in both mail and no_mail")
            seen[entry] = key
    fifos: dict[str, str] = {}
    for key in ("notify_fifo", "role_notify_fifo", "lvs_notify_fifo"):
        path = getattr(al, key)
        if path is None:
            continue
        if not path.startswith("/") or path.endswith("/") or "\0" in path:
            o.err(f"alerts.{key}", f"{_shown(path)} must be the absolute path of a FIFO")
        elif path in fifos:
            o.err(f"alerts.{key}", f"{_shown(path)} is also {fifos[path]}: each line would be written twice")
        fifos.setdefault(path, key)


def _suggest(word: str, choices) -> str | None:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None
