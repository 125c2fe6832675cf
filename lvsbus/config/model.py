"""The settings model: one immutable tree that both readers (lvs.cf and TOML) produce.

Pure: this module imports nothing that does I/O. pulse, lvsd and nanny cores import it.

Units: every duration is a ``float`` in seconds (``keepalive = 0.1`` is 100 ms). Addresses are
``str`` in their normalised ``ipaddress`` form (``2001:db8::1``, never ``2001:DB8:0::1``).
Netmasks are prefix lengths (``int``). Optional values are ``None`` when unset, and every field that
may be ``None`` has ``None`` as its default, so "absent" and "default" are the same thing in every
serialised form (TOML cannot say ``null``).

``to_dict(cfg)`` gives plain msgpack-able data (the payload of the config-loaded event);
``lvsbus.config.native.from_dict(d)`` rebuilds and re-validates it: ``from_dict(to_dict(c)) == c``
(it lives with the reader that validates, so this module imports no other module of the package).
"""
from __future__ import annotations

import dataclasses
import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = [
    "SCHEDULERS",
    "SCHEDULER_FLAGS",
    "PERSISTENCE_ENGINES",
    "ServiceType",
    "Protocol",
    "Forwarding",
    "CheckKind",
    "Severity",
    "Issue",
    "ConfigError",
    "shown",
    "size_issue",
    "MAX_CONFIG_BYTES",
    "MAX_NESTING",
    "MAX_KEY_PARTS",
    "MAX_NUMBER_CHARS",
    "Check",
    "RealServer",
    "VirtualService",
    "FailoverService",
    "TrackKind",
    "Track",
    "Group",
    "DEFAULT_GROUP",
    "Router",
    "Heartbeat",
    "IpvsTimeouts",
    "SyncDaemon",
    "Notify",
    "NatRouter",
    "Scaleout",
    "Alerts",
    "ALERT_KINDS",
    "Config",
    "LoadedConfig",
    "to_dict",
    "effective_check",
    "server_port",
    "check_port",
    "identify_local_router",
    "ip_family",
]

#: schedulers whose mapping depends on the order the real servers were added (IPVS fills mh's
#: lookup table walking them in that order): lvsd keeps their order (scale-out), check-config
#: compares it across routers
ORDERED_SCHEDULERS: tuple[str, ...] = ("mh",)


def host_port(address: str, port: int) -> str:
    """``ADDRESS:PORT``, an IPv6 address in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


#: IPVS schedulers the kernel ships (``twos`` since Linux 5.5, ``mh`` since 4.18).
SCHEDULERS: tuple[str, ...] = (
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
)

#: IPVS scheduler flags by scheduler (include/uapi/linux/ip_vs.h: IP_VS_SVC_F_SCHED_{SH,MH}_*)
SCHEDULER_FLAGS: dict[str, tuple[str, ...]] = {"sh": ("sh-fallback", "sh-port"), "mh": ("mh-fallback", "mh-port")}
#: IPVS persistence engines the kernel ships (ip_vs_pe_sip)
PERSISTENCE_ENGINES: tuple[str, ...] = ("sip",)


class ServiceType(str, enum.Enum):
    """lvs.cf ``service``: which set of services the routers run."""

    LVS = "lvs"
    FOS = "fos"


class Protocol(str, enum.Enum):
    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"


class Forwarding(str, enum.Enum):
    """IPVS forwarding method (lvs.cf ``network``): direct routing, IP-IP tunnel, masquerading."""

    DIRECT = "direct"
    TUNNEL = "tunnel"
    NAT = "nat"


class CheckKind(str, enum.Enum):
    TCP_CONNECT = "tcp_connect"
    TCP_SEND_EXPECT = "tcp_send_expect"
    HTTP = "http"
    HTTPS = "https"
    UDP = "udp"
    PROGRAM = "program"
    #: keepalived's SMTP_CHECK: the 220 banner, HELO ``helo_name`` answered 250, QUIT
    SMTP = "smtp"
    #: keepalived's DNS_CHECK: one query (``dns_type`` ``dns_name``) over UDP, answered NOERROR
    DNS = "dns"
    #: keepalived's PING_CHECK: an ICMP (v4) or ICMPv6 echo answered
    PING = "ping"
    #: keepalived's FILE_CHECK: a number read from ``path``; 0 passes (keepalived's weight 0)
    FILE = "file"


class TrackKind(str, enum.Enum):
    """What a ``[track.NAME]`` item watches (keepalived's track_interface, track_script, track_file)."""

    INTERFACE = "interface"
    SCRIPT = "script"
    FILE = "file"
    #: a virtual service's quorum on this router (lvsbus's own: keepalived cannot)
    SERVICE = "service"


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


#: the largest config text a reader takes (bytes, UTF-8): a real one is a few KiB
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: TOML: arrays and inline tables nested deeper than this, or dotted keys of more parts, are refused
#: (the model's deepest key has 6 parts: virtual.NAME.server.NAME.check.KEY)
MAX_NESTING = 32
MAX_KEY_PARTS = 32
#: a number literal (or any bare word starting with a digit) longer than this is refused: every
#: range in the model fits in 20 digits
MAX_NUMBER_CHARS = 64

#: an Issue's key and message are cut to these lengths (characters)
MAX_KEY_SHOWN = 120
MAX_MESSAGE = 400


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters. Safe for any value: an
    integer too long for ``str`` (over 4300 digits) is described, not converted."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        digits = int(value.bit_length() * 0.30103) + 1
        return f"{'-' if value < 0 else ''}<a number of about {digits} digits>"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"<a {type(value).__name__}>"
    if len(text) > limit:
        text = text[: limit - 5] + "..." + text[-2:]
    return text


def _one_line(text: str, limit: int) -> str:
    if "\n" in text or "\r" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    if len(text) > limit:
        head = limit * 2 // 5
        text = text[:head] + "..." + text[-(limit - head - 3):]
    return text


@dataclass(frozen=True, slots=True)
class Issue:
    """One error or warning: where (file, line, dotted key path), what is wrong and what is allowed."""

    key: str
    message: str
    file: str | None = None
    line: int | None = None
    suggestion: str | None = None
    severity: Severity = Severity.ERROR

    def __post_init__(self) -> None:
        # one short line whatever the input: a value taken from a damaged file may be megabytes
        # long; keep its start and the explanation at the end. (The key is a path the readers
        # look lines up by: it is cut only when shown.)
        object.__setattr__(self, "message", _one_line(self.message, MAX_MESSAGE))

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        key = _one_line(self.key, MAX_KEY_SHOWN)
        text = f"{where}: {key}: {self.message}" if key else f"{where}: {self.message}"
        if self.suggestion:
            text += f" (did you mean '{self.suggestion}'?)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "message": self.message, "file": self.file, "line": self.line,
            "suggestion": self.suggestion, "severity": self.severity.value,
        }


def size_issue(text: str, filename: str | None) -> "Issue | None":
    """An error when ``text`` is over MAX_CONFIG_BYTES (UTF-8), at the line where it crosses it."""
    if len(text) * 4 <= MAX_CONFIG_BYTES:  # cannot be over, whatever the characters
        return None
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_CONFIG_BYTES:
        return None
    return too_big_issue(data[:MAX_CONFIG_BYTES].count(b"\n") + 1, filename)


def too_big_issue(line: int, filename: str | None) -> "Issue":
    return Issue(key="", message=f"the file is over {MAX_CONFIG_BYTES // (1024 * 1024)} MiB, the "
                                 "largest config lvsbus reads (a real one is a few KiB)",
                 file=filename, line=line)


class ConfigError(ValueError):
    """A configuration that cannot be used; ``issues`` lists every error found (not only the first)."""

    def __init__(self, issues: list[Issue] | tuple[Issue, ...]):
        self.issues: tuple[Issue, ...] = tuple(issues)
        count = len(self.issues)
        head = f"{count} configuration error{'s' if count != 1 else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  {i}" for i in self.issues))


@dataclass(frozen=True, slots=True)
class HttpUrl:
    """One URL an http(s) check fetches (keepalived's ``url`` block): all must pass."""

    path: str = "/"
    status: tuple[int, ...] = (200,)
    #: MD5 of the body, lower-case hex (as keepalived's ``genhash`` prints it); None = not compared
    digest: str | None = None
    body_regex: str | None = None


#: the DNS query types a dns check may ask (keepalived's DNS_CHECK ``type``)
DNS_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33}


@dataclass(frozen=True, slots=True)
class Check:
    """How nanny probes a real server.

    Passing ``rise`` probes in a row bring a server up, failing ``fall`` probes in a row take it down;
    a probe starts every ``interval`` seconds and gives up after ``timeout`` seconds. A server with
    no health history (first start, a router restart, which starts a new run, a new server, a changed
    check) needs ``initial_rise`` passes instead: Piranha's nanny put a server in after one passed
    check and asked for ``reentry`` only after it had failed.
    """

    kind: CheckKind = CheckKind.TCP_CONNECT
    interval: float = 2.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3
    #: passes in a row that bring in a server with no health history (no failure seen yet)
    initial_rise: int = 1
    #: after a failed probe, the next one starts this many seconds later instead of at the next
    #: interval (keepalived's ``delay_before_retry``: the ``fall`` failures come faster); None: at
    #: the interval
    retry_delay: float | None = None
    #: probe this port instead of the real server's port
    port: int | None = None
    #: tcp_send_expect: bytes sent (a str, encoded UTF-8); program: unused
    send: str = ""
    #: tcp_send_expect / udp / program: reply (or program output) must contain this ("" = any)
    expect: str = ""
    #: ``expect`` is a regular expression (lvs.cf ``use_regex``)
    regex: bool = False
    #: http/https
    path: str = "/"
    status: tuple[int, ...] = (200,)
    body_regex: str | None = None
    host: str | None = None
    #: udp: the datagram sent
    payload: str = ""
    #: program: command line, ``%h`` = real server address, ``%p`` = port
    command: str = ""
    #: program: required exit status; None = 0 when ``expect`` is empty, not checked otherwise
    exit_code: int | None = None
    #: program: keepalived's ``misc_dynamic``: exit status 0 passes (the weight as it is), 1 fails,
    #: 2..255 passes and sets the real server's weight to the status minus 2 (lvsd programs it)
    dynamic_weight: bool = False
    #: how ``send``, ``expect`` and ``payload`` become bytes: "utf-8", or "latin-1" (each character
    #: U+0000..U+00FF is one byte: binary protocols; lvs.cf's \xHH / octal escapes that are not
    #: UTF-8 give this)
    encoding: str = "utf-8"
    #: probe this address instead of the real server's (keepalived ``connect_ip``)
    connect_ip: str | None = None
    #: the probe's source address (keepalived ``bindto``); None = the kernel's choice
    bind: str | None = None
    #: http(s): MD5 of the body for ``path`` (lower-case hex, keepalived ``digest``)
    digest: str | None = None
    #: http(s): several URLs, each fetched and all must pass (replaces path/status/digest/body_regex)
    urls: tuple[HttpUrl, ...] = ()
    #: http(s): "1.0" or "1.1" (with Host and Connection: close)
    http_version: str = "1.0"
    #: https: verify the certificate chain and name (against ``host``, else the address)
    tls_verify: bool = False
    #: https: CA bundle file for ``tls_verify`` (None = the system's)
    tls_ca: str | None = None
    #: https: a client certificate (PEM) and its key file, presented when the server asks
    tls_cert: str | None = None
    tls_key: str | None = None
    #: https: send ``host`` (else nothing) as the TLS server name (SNI)
    tls_sni: bool = True
    #: smtp: the name said in HELO
    helo_name: str = "smtpchecker.keepalived.org"
    #: dns: the query type and name ("" = the root)
    dns_type: str = "SOA"
    dns_name: str = ""
    #: udp: false = a datagram answered by silence passes, only an ICMP error fails (keepalived's
    #: UDP_CHECK without require_reply); true = a reply must come (and contain ``expect``)
    reply_required: bool = True
    #: file: the file whose number is read (0 passes, any other number or no number fails)
    file: str = ""
    #: file: keepalived's FILE_CHECK ``weight`` (negative: ``reverse``). 0: the number must be 0;
    #: otherwise any number passes and the real server's weight is its configured one plus the
    #: number times this, within 0..65535 (lvsd programs it)
    file_weight: int = 0


@dataclass(frozen=True, slots=True)
class RealServer:
    name: str
    address: str
    #: None = the virtual service's port. 0 (a fwmark service only) = keep the client's destination
    #: port: one mark groups several ports (80 and 443) and each connection keeps its own (IPVS dest
    #: port 0, ipvsadm's ``-r ADDRESS`` with no port); nanny then probes ``check.port``, else the
    #: virtual service's port
    port: int | None = None
    weight: int = 1
    active: bool = True
    #: IPVS connection thresholds, 0 = no limit
    upper_threshold: int = 0
    lower_threshold: int = 0
    #: None = the virtual service's check
    check: Check | None = None
    #: shell commands run (by the alerts service, on every router) when nanny's verdict on this
    #: server turns UP / DOWN (keepalived's ``notify_up`` / ``notify_down``; docs/alerts.md)
    notify_up: str | None = None
    notify_down: str | None = None


@dataclass(frozen=True, slots=True)
class VirtualService:
    name: str
    address: str
    #: VIP device (``eth0``) and label (``eth0:1``); None = not declared
    device: str | None = None
    label: str | None = None
    vip_prefixlen: int | None = None
    active: bool = True
    #: service port; for fwmark services the port nanny checks (IPVS has no port for them)
    port: int = 80
    protocol: Protocol = Protocol.TCP
    fwmark: int | None = None
    scheduler: str = "wlc"
    #: IPVS scheduler flags (ipvsadm ``-b``): "sh-port", "sh-fallback" with scheduler sh,
    #: "mh-port", "mh-fallback" with scheduler mh
    scheduler_flags: tuple[str, ...] = ()
    #: one-packet scheduling (ipvsadm ``-o``, keepalived ``ops``): every UDP datagram scheduled on
    #: its own, no connection entry kept (UDP services only)
    ops: bool = False
    forwarding: Forwarding = Forwarding.NAT
    #: persistence timeout in seconds, 0 = not persistent
    persistence: int = 0
    persistence_prefixlen: int | None = None
    #: IPVS persistence engine (ipvsadm ``--pe``, keepalived ``persistence_engine``): "sip" keeps a
    #: SIP Call-ID on one real server (persistent UDP services only); None = by client address
    persistence_engine: str | None = None
    sorry_server: str | None = None
    sorry_server_port: int | None = None
    #: lvs.cf ``quiesce_server`` (Piranha's nanny -q): a server that was in the table and fails
    #: gets weight 0 (existing connections drain) instead of removal, and its weight back when it
    #: recovers; a server never in the table is not added at weight 0
    quiesce: bool = False
    #: keepalived's ``inhibit_on_failure``: every real server not in service is in the table with
    #: weight 0, from the start (also one that never passed a check)
    inhibit_on_failure: bool = False
    #: minimum total weight of healthy servers for the service to be up (keepalived's quorum)
    quorum: int = 1
    hysteresis: int = 0
    #: shell commands run (by the alerts service, on every router) when the service gains / loses
    #: its quorum (keepalived's ``quorum_up`` / ``quorum_down``; docs/alerts.md)
    quorum_up: str | None = None
    quorum_down: str | None = None
    #: keepalived's ``alpha``: for alerts and commands, a real server is down until its first
    #: verdict (its first UP is an alert); without it, up until then (its first DOWN is). The table
    #: is the same either way: a server enters it once a check has passed (docs/nanny-lvsd.md)
    alpha: bool = False
    #: keepalived's ``omega``: when this router stops, the notify_down of every server still up
    #: and the quorum_down of a service still up are run (and alerted)
    omega: bool = False
    #: the failover group whose VIPs include this one (None: the default group)
    group: str | None = None
    check: Check = field(default_factory=Check)
    servers: tuple[RealServer, ...] = ()

    @property
    def family(self) -> int:
        return ip_family(self.address)

    def server(self, name: str) -> RealServer | None:
        for rs in self.servers:
            if rs.name == name:
                return rs
        return None


@dataclass(frozen=True, slots=True)
class FailoverService:
    """A Piranha FOS service: the active router starts it and owns its VIP; the backup watches it."""

    name: str
    address: str
    device: str | None = None
    label: str | None = None
    vip_prefixlen: int | None = None
    active: bool = True
    port: int = 80
    #: seconds the service may be unreachable before failover
    timeout: float = 10.0
    #: seconds a router that gave up this service stays out of preemption (it advertises priority
    #: 0, so the peer keeps the role); one passed check brings the service itself back (docs/config.md)
    reentry: float = 180.0
    send: str = ""
    expect: str = ""
    start_cmd: str | None = None
    stop_cmd: str | None = None
    #: the failover group that holds its VIP (None: the default group)
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Track:
    """One tracked item (``[track.NAME]``; docs/config.md "Tracking"): it moves this router's
    priority, or puts it in FAULT, as keepalived's track_interface / track_script / track_file do.

    ``weight`` 0: the item failing (interface down, script failed, file value not 0) puts the
    router in FAULT. ``weight`` > 0: added to the priority while the item is fine; < 0: added while
    it fails (``reverse`` swaps fine and failed). A file's value is multiplied by ``weight`` (a
    value of -254 or less, or any non-zero value with weight 0, is FAULT). The effective priority,
    clamped to 1..254 once any weight applies, travels in the heartbeat and drives the election.
    """

    name: str
    kind: TrackKind
    weight: int = 0
    reverse: bool = False
    #: interface: the device whose link (carrier and admin state) is watched
    device: str | None = None
    #: script: the command run (by /bin/sh) every ``interval`` s, failed if it exits non-zero or
    #: runs longer than ``timeout`` s; ``rise`` passes in a row make it fine again, ``fall``
    #: failures in a row make it failed
    command: str | None = None
    interval: float = 1.0
    timeout: float = 1.0
    rise: int = 1
    fall: int = 1
    #: file: read every heartbeat keepalive; an integer (missing, empty or unreadable: 0)
    path: str | None = None
    #: service: the virtual service whose quorum on this router is watched (failed while lost)
    virtual: str | None = None
    #: the routers that track this item (empty: every router)
    on_routers: tuple[str, ...] = ()
    #: the failover groups whose priority (or FAULT) it moves (empty: every group; a service's:
    #: its virtual service's group)
    groups: tuple[str, ...] = ()

    def applies_to(self, router: str) -> bool:
        return not self.on_routers or router in self.on_routers


#: the group of every VIP whose service names none (``[group.NAME]``): with no group declared, the
#: one group of the cluster, as before groups existed
DEFAULT_GROUP = "default"
#: the most failover groups a config may have, and the longest group name: a heartbeat naming every
#: group fits one datagram under an Ethernet MTU (services/pulse/wire.py)
MAX_GROUPS = 32
MAX_GROUP_NAME = 24


@dataclass(frozen=True, slots=True)
class Group:
    """A failover group (``[group.NAME]``; keepalived's VRRP instance): a set of VIPs (those of the
    virtual services, failover services and nat_router that name it) that one router at a time
    holds, elected on its own, so two routers can each be active for a different group (the
    active/active pair). Groups with the same ``sync_group`` are elected as one (keepalived's
    vrrp_sync_group). docs/config.md "Failover groups"."""

    name: str
    #: this group's priority on each router (``priority = {r1 = 200, r2 = 100}``); a router not
    #: named has its own (``[router.NAME] priority``)
    priority: tuple[tuple[str, int], ...] = ()
    #: None: ``[heartbeat]``'s
    preempt: bool | None = None
    preempt_delay: float | None = None
    #: groups with the same name here are elected as one: they move together
    sync_group: str | None = None
    #: commands on this group's role changes (as ``[notify]``'s, which apply when these are unset)
    active_cmd: str | None = None
    inactive_cmd: str | None = None
    notify: str | None = None
    #: run when this group enters FAULT on this router (keepalived's ``notify_fault``)
    fault_cmd: str | None = None

    def priority_on(self, router: "Router") -> int:
        for name, prio in self.priority:
            if name == router.name:
                return prio
        return router.priority


@dataclass(frozen=True, slots=True)
class Router:
    """One LVS router. The same file serves every router; ``identify_local_router`` picks ours."""

    name: str
    address: str
    private_address: str | None = None
    #: Piranha's ``primary_shared``/``backup_shared``: an address on a shared heartbeat network
    shared_address: str | None = None
    priority: int = 100
    device: str | None = None
    private_device: str | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    enabled: bool = True
    port: int = 539
    #: native defaults chosen by measurement (bench/failover.py, docs/router.md): 0.2 s / 1.0 s
    #: fails over in ~1 s, and 0.1/0.3 already had no false failover with both cores saturated.
    #: lvs.cf keeps Piranha's 2 s / 5 s.
    keepalive: float = 0.2
    deadtime: float = 1.0
    key_file: str = "/etc/lvsbus/heartbeat.key"
    preempt: bool = True
    preempt_delay: float = 0.0
    #: check the link state of the heartbeat devices (lvs.cf ``monitor_links``)
    monitor_links: bool = False
    #: gratuitous ARPs sent for each VIP on becoming active, and re-sent every ``garp_refresh`` s (0 = never)
    garp_repeat: int = 5
    garp_refresh: float = 0.0


@dataclass(frozen=True, slots=True)
class IpvsTimeouts:
    """IPVS connection timeouts in seconds; 0 leaves the kernel's value."""

    tcp: int = 0
    tcpfin: int = 0
    udp: int = 0


@dataclass(frozen=True, slots=True)
class SyncDaemon:
    enabled: bool = False
    interface: str = "eth0"
    sync_id: int = 0


@dataclass(frozen=True, slots=True)
class Notify:
    """Commands run on role changes: lvs.cf's active_cmd/inactive_cmd, and a keepalived-style script
    called as ``notify INSTANCE NAME MASTER|BACKUP|FAULT PRIORITY``."""

    active_cmd: str | None = None
    inactive_cmd: str | None = None
    notify: str | None = None


@dataclass(frozen=True, slots=True)
class NatRouter:
    """The real servers' default gateway for NAT, moved with the VIPs (lvs.cf ``nat_router``)."""

    address: str
    device: str | None = None
    label: str | None = None
    prefixlen: int | None = None
    #: the failover group it moves with (None: the default group)
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Web:
    """The web console (``[web]``; docs/console.md): off without the section."""

    address: str = "127.0.0.1:9540"
    tls_cert: str | None = None
    tls_key: str | None = None
    password_file: str = "/etc/lvsbus/web.passwd"


@dataclass(frozen=True, slots=True)
class Scaleout:
    """Active/active scale-out (``[scaleout]``; docs/scaleout.md): every router announces the VIPs
    to its upstream router(s) by BGP, through an existing speaker (BIRD 2) that lvsbus starts and
    drives over its control socket; the upstream spreads flows over the routers by ECMP."""

    #: this side's AS number (every lvsbus router of the group uses the same one)
    local_as: int
    #: the upstream routers' AS number
    peer_as: int
    #: the upstream routers' addresses (one BGP session each, from every lvsbus router)
    peers: tuple[str, ...]
    #: the BGP speaker: "bird" (BIRD 2, started by lvsbus), "bird-running" (the operator's running
    #: BIRD 2: lvsbus writes ``routes_file``, which its config includes, and reconfigures it over
    #: ``control_socket``; it neither starts nor stops it); the others (GoBGP, ExaBGP, FRR) fit
    #: behind the same driver
    speaker: str = "bird"
    #: BIRD's control socket, created by the BIRD that lvsbus starts (one a router); a relative
    #: path is relative to the router's state directory
    control_socket: str = "/run/lvsbus/bird.ctl"
    #: BGP hold time, seconds (keepalives every third of it); 0 = none
    hold_time: int = 9
    #: BFD on every session (BIRD's ``protocol bfd``): a dead router is seen in ~0.3 s
    bfd: bool = False
    #: a planned stop first re-announces every VIP with the GRACEFUL_SHUTDOWN community (65535:0,
    #: RFC 8326) this many seconds, then withdraws it
    drain_time: float = 5.0
    #: with speaker = "bird-running": the file lvsbus writes the VIPs' static routes to (protocols
    #: ``lvsbus_vips4`` / ``lvsbus_vips6``), included by the operator's bird.conf
    routes_file: str | None = None


#: what ``[alerts]`` can mail about (keepalived's smtp_alert_vrrp: role; smtp_alert_checker: the two others)
ALERT_KINDS: tuple[str, ...] = ("role", "real_server", "virtual_service")


@dataclass(frozen=True, slots=True)
class Alerts:
    """Alerts as keepalived sends them (``[alerts]``; docs/alerts.md): a mail per role change,
    real server up/down and virtual service quorum change, and the notify FIFO lines. Off without
    the section; mails only with ``email`` and ``smtp_server``, FIFO lines only with a FIFO."""

    #: the recipients (keepalived's notification_email)
    email: tuple[str, ...] = ()
    #: the sender (notification_email_from); None: ``lvsbus@`` and the host's name
    email_from: str | None = None
    #: the mail relay, an address or a host name (smtp_server); None: no mail
    smtp_server: str | None = None
    smtp_port: int = 25
    #: the name said in HELO (smtp_helo_name); None: the host's name
    smtp_helo_name: str | None = None
    #: seconds for the whole exchange with the relay (smtp_connect_timeout)
    smtp_timeout: float = 30.0
    #: the ``[ID]`` that starts every subject (keepalived's router_id); None: this router's name
    router_id: str | None = None
    #: the kinds of event mailed by default (ALERT_KINDS; keepalived's smtp_alert[_vrrp|_checker])
    on: tuple[str, ...] = ALERT_KINDS
    #: mailed whatever ``on`` says: ``group:NAME``, ``virtual:NAME``, ``server:VIRTUAL/NAME``
    #: (keepalived's smtp_alert in a vrrp_instance, virtual_server, real_server)
    mail: tuple[str, ...] = ()
    #: never mailed, in the same form (smtp_alert false there); the most precise entry wins
    no_mail: tuple[str, ...] = ()
    #: FIFOs that get keepalived's lines: every line (notify_fifo), role lines only
    #: (vrrp_notify_fifo), virtual service and real server lines only (lvs_notify_fifo)
    notify_fifo: str | None = None
    role_notify_fifo: str | None = None
    lvs_notify_fifo: str | None = None
    #: mails waiting at most; one more while the relay is slow or away is dropped (counted)
    queue_size: int = 100


@dataclass(frozen=True, slots=True)
class Config:
    service: ServiceType = ServiceType.LVS
    serial_no: int = 0
    routers: tuple[Router, ...] = ()
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    ipvs_timeouts: IpvsTimeouts = field(default_factory=IpvsTimeouts)
    sync_daemon: SyncDaemon = field(default_factory=SyncDaemon)
    notify: Notify = field(default_factory=Notify)
    nat_router: NatRouter | None = None
    #: lvs.cf ``hard_shutdown`` (Piranha's lvsd: a dead nanny shut LVS down): when nanny cannot be
    #: restarted (a restart loop) the router steps down (true) or stays up without health checks,
    #: the table frozen as it was, and says manual action is needed (false)
    hard_shutdown: bool = True
    #: Prometheus-style metrics listener ``HOST:PORT``; None = off
    metrics_address: str | None = None
    #: the web console; None = off
    web: Web | None = None
    #: active/active scale-out by BGP (``[scaleout]``, docs/scaleout.md); None = active/backup
    scaleout: Scaleout | None = None
    #: mail and notify FIFO alerts (``[alerts]``, docs/alerts.md); None = off
    alerts: Alerts | None = None
    #: seconds between two reads of the IPVS traffic figures by the applier (``ipvs.stats``); 0 = off.
    #: 5 s by measurement (bench/stats.py, docs/ipvs.md): 100 services x 10 real servers all busy
    #: add ~59 MB/hour to the log at 5 s, ~147 MB/hour at 2 s.
    ipvs_stats_interval: float = 5.0
    debug_level: str | None = None
    #: Piranha SCSI reservation option (``nothing``/``preempt``); kept, not acted on
    reservation_conflict_action: str | None = None
    virtual_services: tuple[VirtualService, ...] = ()
    failover_services: tuple[FailoverService, ...] = ()
    #: tracked interfaces, scripts and files (``[track.NAME]``): they move every router's priority
    tracks: tuple[Track, ...] = ()
    #: failover groups (``[group.NAME]``); none: one default group holds every VIP
    groups: tuple[Group, ...] = ()

    def group_names(self) -> tuple[str, ...]:
        """The failover groups in force, in config order: the declared ones, and ``default`` first
        when a VIP names no group (always, with none declared)."""
        declared = tuple(g.name for g in self.groups)
        used: list[str | None] = [s.group for s in self.lvs_services()] + [s.group for s in self.fos_services()]
        if self.nat_router is not None and self.service is ServiceType.LVS:
            used.append(self.nat_router.group)
        if not declared or None in used or DEFAULT_GROUP in used:
            return (DEFAULT_GROUP, *(n for n in declared if n != DEFAULT_GROUP))
        return declared

    def group(self, name: str) -> Group:
        """A group's settings (the default group's, when it is not declared: every field unset)."""
        for g in self.groups:
            if g.name == name:
                return g
        return Group(name)

    def tracks_of(self, router: str) -> tuple[Track, ...]:
        """The items ``router`` tracks."""
        return tuple(t for t in self.tracks if t.applies_to(router))

    def alerts_wanted(self) -> Any:
        """What runs the alerts service (None: nothing): ``[alerts]``, or else True when a virtual
        service has a quorum_up / quorum_down or a real server a notify_up / notify_down command."""
        if self.alerts is not None:
            return self.alerts
        for vs in self.lvs_services():
            if vs.active and (vs.quorum_up or vs.quorum_down
                              or any(rs.active and (rs.notify_up or rs.notify_down) for rs in vs.servers)):
                return True
        return None

    def lvs_services(self) -> tuple[VirtualService, ...]:
        """The virtual services the routers run: all of them with ``service = lvs``, none with
        ``service = fos`` (no IPVS table then; the validator warns that the blocks are ignored)."""
        return self.virtual_services if self.service is ServiceType.LVS else ()

    def fos_services(self) -> tuple[FailoverService, ...]:
        """The failover services the routers run: all of them with ``service = fos``, none with
        ``service = lvs`` (Piranha ran fos or lvsd, never both; the validator warns)."""
        return self.failover_services if self.service is ServiceType.FOS else ()

    def virtual(self, name: str) -> VirtualService | None:
        for vs in self.virtual_services:
            if vs.name == name:
                return vs
        return None

    def router(self, name: str) -> Router | None:
        for r in self.routers:
            if r.name == name:
                return r
        return None


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """What a reader returns: the config, the warnings (obsolete keywords, advice) and where from."""

    config: Config
    warnings: tuple[Issue, ...] = ()
    source: str = "<config>"
    #: "lvscf" or "toml"
    format: str = "toml"
    #: sha256 (hex) of the file's bytes as read (of the UTF-8 text for ``loads``)
    digest: str = ""
    #: where a model key path (``virtual.web.server.s1.weight``) is written: (file, line), the line
    #: of the key or of its nearest table or block, (None, None) when unknown; what the readers place
    #: their errors with. Kept only when asked (``load(..., locations=True)``: check-config comparing
    #: the routers' files, lvsbus/config/consistency.py): a large config's line index is not held
    #: by every process for nothing
    locate: Callable[[str], tuple[str | None, int | None]] | None = field(default=None, compare=False, repr=False)


# --------------------------------------------------------------------------------------------------
# helpers the services use


def ip_family(address: str) -> int:
    """4 or 6."""
    return ipaddress.ip_address(address).version


def server_port(vs: VirtualService, rs: RealServer) -> int:
    """The port IPVS forwards to on ``rs``."""
    return vs.port if rs.port is None else rs.port


def effective_check(vs: VirtualService, rs: RealServer) -> Check:
    """The check nanny runs for ``rs``: its override, else the virtual service's."""
    return vs.check if rs.check is None else rs.check


def check_port(vs: VirtualService, rs: RealServer) -> int:
    """The port nanny probes for ``rs``: the check's port, else the server's, else (a server that
    keeps the client's port: port 0) the virtual service's; 0 when none of them says one."""
    chk = effective_check(vs, rs)
    if chk.port is not None:
        return chk.port
    return server_port(vs, rs) or vs.port


def identify_local_router(cfg: Config, local_addresses: set[str] | frozenset[str]) -> Router:
    """The router this host is, from the addresses configured on it (any of a router's public,
    private or shared addresses). Raises ConfigError when no router or several routers match."""
    local: set[str] = set()
    for a in local_addresses:
        try:
            local.add(str(ipaddress.ip_address(a.split("/")[0].split("%")[0])))
        except ValueError:
            continue
    matches = []
    for r in cfg.routers:
        own = {a for a in (r.address, r.private_address, r.shared_address) if a}
        if own & local:
            matches.append(r)
    if len(matches) == 1:
        return matches[0]
    described = ", ".join(
        f"{r.name} ({', '.join(a for a in (r.address, r.private_address, r.shared_address) if a)})"
        for r in cfg.routers
    ) or "none"
    if not matches:
        msg = (f"none of this host's addresses ({', '.join(sorted(local)) or 'none'}) belongs to a "
               f"configured router; routers: {described}")
    else:
        msg = (f"this host's addresses match several routers ({', '.join(r.name for r in matches)}); "
               "each router needs its own public/private addresses")
    raise ConfigError([Issue(key="routers", message=msg)])


# --------------------------------------------------------------------------------------------------
# plain-data form


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def to_dict(cfg: Config) -> dict[str, Any]:
    """The whole model as str/int/float/bool/None/list/dict (msgpack- and JSON-able).

    Routers, virtual services, real servers and failover services are lists (order is kept).
    """
    return _plain(cfg)

