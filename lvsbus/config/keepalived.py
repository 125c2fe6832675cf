"""keepalived.conf onto lvsbus's model (issue 15, step 2): what one router's keepalived.conf says,
as lvsbus runs it, and a warning for everything it does not run or runs differently: nothing is
dropped in silence (every statement not mapped here is named, with its file and line).

The grammar is lvsbus/config/kagrammar.py. docs/config.md ("keepalived.conf keywords") is the operator's table of what
maps to what. The mapping:

- routers: a keepalived.conf describes one router; its peers are its ``unicast_peer`` addresses
  (multicast VRRP has no lvsbus equivalent: lvsbus routers find each other by address). Every
  router is named by its address (``lvs-10-0-0-1``), so the configs converted on each router name
  them alike. This router's address is ``unicast_src_ip``. No vrrp_instance: one router alone
  (127.0.0.1, heartbeat off), as a keepalived that only runs virtual servers.
- ``vrrp_instance NAME`` -> failover group NAME: its priority is this router's; a peer's comes
  from its heartbeats (until heard: a placeholder, below ours when ``state MASTER``, above when
  BACKUP); ``nopreempt``, ``preempt_delay``, the notify commands; ``virtual_ipaddress`` (and
  ``_excluded``): the VIPs of the virtual servers on them join the group; a VIP no virtual server
  uses becomes the NAT gateway (nat_router) when the virtual servers use NAT, else is not held
  (a warning). ``advert_int`` -> keepalive, and deadtime three adverts (VRRP's master down
  interval); ``track_interface`` / ``track_script`` / ``track_file`` -> ``[track.NAME]`` items.
- ``vrrp_sync_group`` -> the members' ``sync_group``; ``vrrp_script`` -> script tracks.
- ``virtual_server IP PORT`` -> a virtual service (scheduler, forwarding, persistence, protocol,
  quorum, hysteresis, sorry server, inhibit_on_failure), its ``real_server`` blocks -> real
  servers, their first checker -> the check (TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable
from typing import Any

from lvsbus.config.kagrammar import Files, Statement, parse
from lvsbus.config.model import (
    SCHEDULERS,
    Alerts,
    Check,
    CheckKind,
    Config,
    HttpUrl,
    ConfigError,
    Forwarding,
    Group,
    Heartbeat,
    Issue,
    LoadedConfig,
    NatRouter,
    Protocol,
    RealServer,
    Router,
    Severity,
    Track,
    TrackKind,
    VirtualService,
)
from lvsbus.config.validate import validate

#: keywords whose only meaning is VRRP on the wire or keepalived's own process: one warning each
_WIRE = {
    "virtual_router_id": "VRRP on the wire: lvsbus routers speak their own authenticated heartbeat "
                         "(a keepalived and an lvsbus router cannot be peers); the group is named by the instance",
    "authentication": "lvsbus authenticates every heartbeat with HMAC-SHA256 keyed by "
                      "heartbeat.key_file (/etc/lvsbus/heartbeat.key), not a VRRP password",
    "state": "lvsbus starts every router as backup, listens for a deadtime, then elects by priority "
             "(as keepalived does after its first advert)",
    "version": "VRRP on the wire: lvsbus routers speak their own protocol",
    "garp_master_delay": "lvsbus sends its garp_repeat gratuitous ARPs at once on taking the VIPs (no delayed "
                         "second set); garp_master_repeat and garp_master_refresh are read",
    "garp_interval": "lvsbus spaces its gratuitous ARPs itself",
    "gna_interval": "lvsbus spaces its unsolicited neighbour advertisements itself",
    "garp_lower_prio_delay": "lvsbus sends no gratuitous ARPs on hearing a lower priority",
    "garp_lower_prio_repeat": "lvsbus sends no gratuitous ARPs on hearing a lower priority",
    "garp_master_refresh_repeat": "lvsbus re-sends one round every garp_refresh s",
    "dont_track_primary": "lvsbus always watches its heartbeat devices when monitor_links is on",
}
#: gratuitous ARP settings (global_defs, or without the vrrp_ prefix in a vrrp_instance) -> heartbeat
_GARP = (("vrrp_garp_master_repeat", "garp_repeat", int), ("vrrp_garp_master_refresh", "garp_refresh", float))
#: the other gratuitous ARP timings of global_defs (one warning each)
_GARP_NOT_RUN = ("vrrp_garp_master_delay", "vrrp_garp_interval", "vrrp_gna_interval", "vrrp_garp_lower_prio_delay",
                 "vrrp_garp_lower_prio_repeat", "vrrp_garp_master_refresh_repeat")
#: global_defs' script security: what lvsbus does instead (one warning each)
_SCRIPT_SECURITY = {
    "script_user": "lvsbus runs track scripts, MISC_CHECK programs and notify commands as the service "
                   "that runs them (the router's user, each service with only its capabilities: "
                   "docs/router.md), not as this user",
    "enable_script_security": "lvsbus does not refuse scripts that a non-root user could change: keep "
                              "them and their directories writable by root only",
}
_SCHEDULER_ALIASES = {"wlc": "wlc"}
_KINDS = {"NAT": Forwarding.NAT, "DR": Forwarding.DIRECT, "TUN": Forwarding.TUNNEL}


def _name_of(address: str) -> str:
    return "lvs-" + re.sub(r"[.:]", "-", address).strip("-")


class _Map:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.issues: list[Issue] = []
        self.used: set[int] = set()
        self.where: dict[str, tuple[str, int]] = {}  # model key path -> (file, line)
        #: track_file blocks: name -> (path, weight, reverse); the SSL block's files for SSL_GET
        self.track_files: dict[str, tuple[str, int, bool]] = {}
        self.tls: dict[str, str] = {}
        #: SMTP_CHECK's HELO name when its helo_name is not given (keepalived's default)
        self.helo = "smtpchecker.keepalived.org"
        #: checked virtual_servers without ``alpha`` (one warning names the first and counts the rest)
        self.no_alpha: list[Statement] = []

    # -- bookkeeping ---------------------------------------------------------------------------
    def use(self, st: Statement, key: str | None = None) -> Statement:
        self.used.add(id(st))
        if key is not None:
            self.where.setdefault(key, (st.file, st.line))
        return st

    def skip(self, st: Statement) -> None:
        """``st`` and its whole block are accounted for (a warning said what happens to them)."""
        self.used.add(id(st))
        for child in st.block or ():
            self.skip(child)

    def err(self, st: Statement, msg: str) -> None:
        self.issues.append(Issue(key="", message=msg, file=st.file, line=st.line))

    def warn(self, st: Statement, msg: str) -> None:
        self.issues.append(Issue(key="", message=msg, file=st.file, line=st.line, severity=Severity.WARNING))

    def one(self, block: Statement, keyword: str, key: str | None = None) -> Statement | None:
        found = block.by_keyword().get(keyword)
        if not found:
            return None
        for extra in found[1:]:
            self.skip(extra)
            self.warn(extra, f"'{keyword}' is given again: the first (line {found[0].line}) is used")
        return self.use(found[0], key)

    def arg(self, st: Statement, n: int = 1) -> list[str] | None:
        if len(st.args) < n:
            self.err(st, f"'{st.keyword}' needs {n} value{'s' if n > 1 else ''}")
            return None
        return st.args

    def num(self, st: Statement | None, conv: Callable[[str], Any] = int, default: Any = None) -> Any:
        if st is None:
            return default
        if not st.args:
            self.err(st, f"'{st.keyword}' needs a value")
            return default
        try:
            return conv(st.args[0])
        except ValueError:
            self.err(st, f"'{st.keyword}': {st.args[0]!r} is not a number")
            return default

    def unused(self, tree: list[Statement]) -> None:
        for st in tree:
            if id(st) not in self.used:
                self.warn(st, f"'{st.keyword}' is not run by lvsbus: ignored")
                continue
            if st.block is not None:
                self.unused(st.block)

    def locate(self, key: str) -> tuple[str | None, int | None]:
        while key:
            if key in self.where:
                return self.where[key]
            key = key.rsplit(".", 1)[0] if "." in key else ""
        return None, None


def _vip(m: _Map, st: Statement) -> tuple[str, int | None, str | None, str | None] | None:
    """``ADDRESS[/PLEN] [dev DEV] [label LABEL] ...`` of a virtual_ipaddress line."""
    words = [st.keyword, *st.args]
    addr, _, plen = words[0].partition("/")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        m.err(st, f"{words[0]!r} is not an IP address")
        return None
    opts = dict(zip(words[1::2], words[2::2]))
    for k in opts:
        if k not in ("dev", "label", "brd", "broadcast", "scope"):
            m.warn(st, f"virtual_ipaddress option '{k}' is not run by lvsbus: ignored")
    return str(ip), int(plen) if plen.isdigit() else None, opts.get("dev"), opts.get("label")


def _notify(m: _Map, inst: Statement) -> dict[str, str]:
    out: dict[str, str] = {}
    for kw, field in (("notify_master", "active_cmd"), ("notify_backup", "inactive_cmd"), ("notify", "notify")):
        st = m.one(inst, kw)
        if st is not None and st.args:
            out[field] = " ".join(st.args)
            if kw == "notify_backup":
                m.warn(st, "notify_backup: lvsbus runs it when this router leaves MASTER for the group (its "
                           "inactive_cmd), not at start in BACKUP as keepalived does")
    st = m.one(inst, "notify_fault")
    if st is not None and st.args:
        out["fault_cmd"] = " ".join(st.args)
    return out


def _command(m: _Map, st: Statement | None) -> str | None:
    """A checker notify command (``notify_up``, ``quorum_down``...): keepalived's
    ``<STRING>|<QUOTED-STRING> [username [groupname]]``, run by a shell."""
    if st is None or not m.arg(st):
        return None
    if len(st.args) > 1:
        m.warn(st, f"{st.keyword}: lvsbus runs {st.args[0]!r} as the alerts service's user, not as "
                   f"{' '.join(st.args[1:])!r} (keepalived's username and group: quote a command with arguments)")
    return st.args[0]


_HTTP_VERSIONS = {"1.0": "1.0", "1.0C": "1.0", "1.0K": "1.0", "1.1": "1.1"}
_CHECKERS = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "SMTP_CHECK", "DNS_CHECK", "PING_CHECK",
             "UDP_CHECK", "FILE_CHECK", "BFD_CHECK")


def _hex(m: _Map, st: Statement) -> str | None:
    """keepalived's hex string (``payload``, ``require_reply``): digits, spaces ignored, as bytes
    in a latin-1 str (one character a byte)."""
    text = "".join(st.args).replace(" ", "")
    if text.lower().startswith("0x"):
        text = text[2:]
    try:
        return bytes.fromhex(text).decode("latin-1")
    except ValueError:
        m.err(st, f"{st.keyword}: {' '.join(st.args)!r} is not a hex string (like 0a1b2c)")
        return None


def _url(m: _Map, u: Statement, vhost: str | None) -> HttpUrl:
    path = "/"
    p = m.one(u, "path")
    if p is not None and p.args:
        path = p.args[0]
    status: tuple[int, ...] = (200,)
    sc = m.one(u, "status_code")
    if sc is not None and sc.args:
        codes: list[int] = []
        for a in sc.args:
            lo, _, hi = a.partition("-")
            if lo.isdigit() and (not hi or hi.isdigit()):
                codes += range(int(lo), int(hi or lo) + 1)
            else:
                m.err(sc, f"status_code {a!r}: give codes or ranges (200-299)")
        status = tuple(codes) or status
    d = m.one(u, "digest")
    digest = d.args[0].lower() if d is not None and d.args else None
    rx = m.one(u, "regex")
    body_regex = " ".join(rx.args) if rx is not None and rx.args else None
    for kw in ("regex_no_match", "regex_options", "regex_min_offset", "regex_max_offset", "regex_stack",
               "tls_compliant"):
        st = m.one(u, kw)
        if st is not None:
            m.warn(st, f"{kw}: not run by lvsbus: the url's regex (if any) is searched in the whole body")
    uv = m.one(u, "virtualhost")
    if uv is not None and uv.args and uv.args[0] != vhost:
        m.warn(uv, "virtualhost of one url: lvsbus sends the checker's virtualhost (else the address) for every url")
    return HttpUrl(path=path, status=status, digest=digest, body_regex=body_regex)


def _check(m: _Map, rs: Statement, vs_interval: float, vhost: str | None = None) -> Check | None:
    checkers = [s for s in rs.block or () if s.keyword in _CHECKERS or s.keyword.endswith("_CHECK")]
    if not checkers:
        return None
    c = m.use(checkers[0])
    for extra in checkers[1:]:
        m.skip(extra)
        m.warn(extra, f"{extra.keyword}: lvsbus runs one check a real server: the first ({c.keyword}) is used")
    interval = m.num(m.one(c, "delay_loop"), float, vs_interval)
    timeout = m.num(m.one(c, "connect_timeout"), float, 5.0)
    retry = m.one(c, "retry") or m.one(c, "nb_get_retry")
    fall = m.num(retry, int, 0) + 1
    # a failure is retried delay_before_retry later (keepalived's default: 1 s), not at the next delay_loop
    retry_delay = m.num(m.one(c, "delay_before_retry"), float, 1.0 if fall > 1 else None)
    port = m.num(m.one(c, "connect_port"), int, None)
    base: dict[str, Any] = dict(interval=interval, timeout=min(timeout, interval), rise=1, fall=fall, port=port)
    if retry_delay is not None and fall > 1 and retry_delay < interval:
        base["retry_delay"] = retry_delay
    for word, field in (("connect_ip", "connect_ip"), ("bindto", "bind")):
        st = m.one(c, word)
        if st is not None and m.arg(st):
            base[field] = st.args[0]
    for word in ("bind_port", "bind_if", "fwmark", "warmup", "log_all_failures"):
        st = m.one(c, word)
        if st is not None:
            m.skip(st)
            m.warn(st, f"{word}: not run by lvsbus: ignored")
    if timeout > interval:
        m.warn(c, f"connect_timeout {timeout:g} s is longer than delay_loop {interval:g} s: lvsbus uses {interval:g} s")
    if c.keyword == "TCP_CHECK":
        return Check(kind=CheckKind.TCP_CONNECT, **base)
    if c.keyword in ("HTTP_GET", "SSL_GET"):
        host: str | None = vhost
        vh = m.one(c, "virtualhost")
        if vh is not None and vh.args:
            host = vh.args[0]
        urls = [_url(m, m.use(u), host) for u in c.find("url")]
        kw: dict[str, Any] = {}
        if len(urls) == 1:
            kw.update(path=urls[0].path, status=urls[0].status, digest=urls[0].digest, body_regex=urls[0].body_regex)
        elif urls:
            kw["urls"] = tuple(urls)
        hp = m.one(c, "http_protocol")
        if hp is not None and hp.args:
            if hp.args[0] in _HTTP_VERSIONS:
                kw["http_version"] = _HTTP_VERSIONS[hp.args[0]]
            else:
                m.err(hp, f"http_protocol {hp.args[0]!r}: 1.0, 1.0C, 1.0K or 1.1")
        if c.keyword == "SSL_GET":
            kw.update(m.tls)
            sni = m.one(c, "enable_sni")
            kw["tls_sni"] = sni is not None
            sn = m.one(c, "sni_name")
            if sn is not None:
                m.warn(sn, "sni_name: lvsbus sends the virtualhost as the server name (SNI)")
        for kwd in ("fast_recovery", "tls_compliant"):
            st = m.one(c, kwd)
            if st is not None:
                m.warn(st, f"{kwd}: not run by lvsbus: ignored")
        kind = CheckKind.HTTPS if c.keyword == "SSL_GET" else CheckKind.HTTP
        return Check(kind=kind, host=host, **kw, **base)
    if c.keyword == "MISC_CHECK":
        mp = m.one(c, "misc_path")
        mt = m.num(m.one(c, "misc_timeout"), float, None)
        dyn = m.one(c, "misc_dynamic")
        user = m.one(c, "user")
        if user is not None:
            m.warn(user, "user: lvsbus runs check programs as root with CAP_NET_RAW only (docs/router.md)")
        if mp is None or not mp.args:
            m.err(c, "MISC_CHECK needs misc_path")
            return None
        return Check(kind=CheckKind.PROGRAM, command=" ".join(mp.args), exit_code=0, dynamic_weight=dyn is not None,
                     **{**base, "timeout": min(mt or base["timeout"], interval)})
    if c.keyword == "SMTP_CHECK":
        helo = m.one(c, "helo_name")
        hosts = c.find("host")  # keepalived's older form: one checker per host block
        if hosts:
            first = m.use(hosts[0])
            for word, field in (("connect_ip", "connect_ip"), ("bindto", "bind")):
                st = m.one(first, word)
                if st is not None and m.arg(st):
                    base[field] = st.args[0]
            cp = m.one(first, "connect_port")
            if cp is not None:
                port = m.num(cp, int, None)
            for extra in hosts[1:]:
                m.skip(extra)
                m.warn(extra, f"host: lvsbus runs one check a real server: the first host block (line {first.line}) "
                              "is checked, this one is not")
        return Check(kind=CheckKind.SMTP, helo_name=helo.args[0] if helo is not None and helo.args else m.helo,
                     **{**base, "port": port if port is not None else 25})
    if c.keyword == "DNS_CHECK":
        t = m.one(c, "type")
        n = m.one(c, "name")
        return Check(kind=CheckKind.DNS, dns_type=t.args[0].upper() if t is not None and t.args else "SOA",
                     dns_name=n.args[0] if n is not None and n.args else "", **base)
    if c.keyword == "PING_CHECK":
        return Check(kind=CheckKind.PING, **base)
    if c.keyword == "UDP_CHECK":
        kw = {}
        pl = m.one(c, "payload")
        if pl is not None and m.arg(pl):
            kw["payload"] = _hex(m, pl) or ""
        rr = m.one(c, "require_reply")
        kw["reply_required"] = rr is not None
        if rr is not None and rr.args:
            want = _hex(m, rr)
            if want:
                kw.update(expect="\\A" + re.escape(want), regex=True)  # keepalived: the reply starts with it
        for kwd in ("min_reply_length", "max_reply_length"):
            st = m.one(c, kwd)
            if st is not None:
                m.warn(st, f"{kwd}: not run by lvsbus: ignored")
        return Check(kind=CheckKind.UDP, encoding="latin-1", **kw, **base)
    if c.keyword == "FILE_CHECK":
        tf = m.one(c, "track_file")
        if tf is None or not tf.args:
            m.err(c, "FILE_CHECK needs track_file NAME (a track_file block at the top)")
            return None
        found = m.track_files.get(tf.args[0])
        if found is None:
            m.err(tf, f"track_file {tf.args[0]!r}: no track_file block of that name")
            return None
        w = m.one(c, "weight")  # the FILE_CHECK's own weight, else its track_file block's
        weight, reverse = (m.num(w, int, 0), len(w.args) > 1 and w.args[1] == "reverse") if w is not None \
            else (found[1], found[2])
        if weight:
            m.warn(w if w is not None else c, "FILE_CHECK weight: a number that takes the real server's weight "
                   "below 0 leaves it in the table at weight 0 (keepalived takes it out below its fault bound)")
        return Check(kind=CheckKind.FILE, file=found[0], file_weight=-weight if reverse else weight, **base)
    m.warn(c, f"{c.keyword}: lvsbus has no such check: the real server is checked by a TCP connect")
    return Check(kind=CheckKind.TCP_CONNECT, **base)


def _ssl_block(m: _Map, top: Statement) -> dict[str, str]:
    """The top-level ``SSL { ca; certificate; key; password }`` of SSL_GET: the client certificate
    presented and the CA (keepalived loads it but does not verify the server: nor does lvsbus,
    unless the native ``tls_verify`` is set)."""
    ssl_st = m.one(top, "SSL")
    out: dict[str, str] = {}
    if ssl_st is None:
        return out
    for kw, field in (("ca", "tls_ca"), ("certificate", "tls_cert"), ("key", "tls_key")):
        st = m.one(ssl_st, kw)
        if st is not None and m.arg(st):
            out[field] = st.args[0]
    pw = m.one(ssl_st, "password")
    if pw is not None:
        m.err(pw, "password: lvsbus reads only unencrypted client keys (openssl pkey -in KEY -out PLAIN)")
    if "tls_key" in out and "tls_cert" not in out:
        m.err(ssl_st, "SSL: a key without its certificate")
    return out


def _track_files(m: _Map, top: list[Statement]) -> dict[str, tuple[str, int, bool]]:
    """The ``track_file NAME {file PATH; weight W [reverse]}`` blocks (also ``vrrp_track_file``):
    name -> (path, weight, reverse)."""
    out: dict[str, tuple[str, int, bool]] = {}
    for st in [*(s for s in top if s.keyword == "track_file" and s.block is not None),
               *(s for s in top if s.keyword == "vrrp_track_file")]:
        m.use(st)
        if not st.args:
            m.err(st, f"{st.keyword} needs a name")
            continue
        f = m.one(st, "file")
        if f is None or not f.args:
            m.err(st, f"{st.keyword} {st.args[0]}: needs file PATH")
            continue
        w = m.one(st, "weight")
        weight = m.num(w, int, 0) if w is not None else 0
        reverse = w is not None and len(w.args) > 1 and w.args[1] == "reverse"
        init = m.one(st, "init_file")
        if init is not None:
            m.warn(init, "init_file: lvsbus does not create the file: a missing file reads as 0")
        out[st.args[0]] = (f.args[0], weight, reverse)
    return out


#: a virtual_server_group's address range expands to at most this many addresses
MAX_RANGE = 256

Member = tuple[str | None, int | None, int | None, Statement]  # address, port, fwmark, where


def _member(m: _Map, words: list[str], st: Statement) -> list[Member]:
    """``IP PORT``, ``IP-LAST PORT`` (the last part a range) or ``fwmark N``: the services it names
    (address None for a fwmark: the caller gives it its VIP)."""
    if len(words) == 2 and words[0] == "fwmark":
        mark = m.num(dataclasses.replace(st, args=words[1:]), int, None)
        return [] if mark is None else [(None, None, mark, st)]
    if len(words) != 2 or not words[1].isdigit():
        m.err(st, f"{' '.join(words)!r}: give IP PORT, IP-LAST PORT (a range) or fwmark N")
        return []
    first, _, last = words[0].partition("-")
    try:
        ip = ipaddress.ip_address(first)
    except ValueError:
        m.err(st, f"{first!r} is not an IP address")
        return []
    count = 1
    if last:
        base = int(str(ip).split(":" if ip.version == 6 else ".")[-1] or "0", 16 if ip.version == 6 else 10)
        try:
            end = int(last, 16 if ip.version == 6 else 10)
        except ValueError:
            end = -1
        count = end - base + 1
        if not 1 <= count <= MAX_RANGE:
            m.err(st, f"{words[0]!r}: the range's last part must follow the address's, at most {MAX_RANGE} addresses")
            return []
    return [(str(ip + i), int(words[1]), None, st) for i in range(count)]


def _members(m: _Map, vs: Statement, vsgs: dict[str, Statement]) -> list[Member]:
    if len(vs.args) == 2 and vs.args[0] == "group":
        g = vsgs.get(vs.args[1])
        if g is None:
            m.err(vs, f"virtual_server group {vs.args[1]!r}: no virtual_server_group of that name")
            return []
        out: list[Member] = []
        for st in g.block or ():
            m.use(st)
            out += _member(m, [st.keyword, *st.args], st)
        return out
    return _member(m, list(vs.args), vs)


def _dynamic(check: Check | None) -> bool:
    """Whether a check sets the real server's weight (misc_dynamic, a FILE_CHECK weight)."""
    return check is not None and (check.dynamic_weight or bool(check.file_weight))


def _virtual_server(m: _Map, vs: Statement, index: int, vips: dict[str, tuple[int | None, str | None, str | None, str]],
                    vsgs: dict[str, Statement], mark_vip: str | None) -> list[VirtualService]:
    members = _members(m, vs, vsgs)
    if not members:
        m.skip(vs)
        return []
    name = f"vs{index}"
    key = f"virtual.{name}"
    m.use(vs, key)
    first_rs = vs.find("real_server")
    rs_port = int(first_rs[0].args[1]) if first_rs and len(first_rs[0].args) > 1 and first_rs[0].args[1].isdigit() else 0
    port = members[0][1] if members[0][1] is not None else rs_port  # a fwmark's: its first real server's
    interval = m.num(m.one(vs, "delay_loop", f"{key}.check.interval"), float, 60.0)
    kw: dict[str, Any] = {}
    algo = m.one(vs, "lb_algo", f"{key}.scheduler")
    if algo is not None and algo.args:
        kw["scheduler"] = algo.args[0]
        if algo.args[0] not in SCHEDULERS:
            m.err(algo, f"lb_algo {algo.args[0]!r}: one of {', '.join(SCHEDULERS)}")
            kw.pop("scheduler")
    kind = m.one(vs, "lb_kind", f"{key}.forwarding") or m.one(vs, "lvs_method", f"{key}.forwarding")
    if kind is not None and kind.args:
        fwd = _KINDS.get(kind.args[0].upper())
        if fwd is None:
            m.err(kind, f"lb_kind {kind.args[0]!r}: NAT, DR or TUN")
        else:
            kw["forwarding"] = fwd
    pt = m.one(vs, "persistence_timeout", f"{key}.persistence")
    if pt is not None:
        kw["persistence"] = m.num(pt, int, 360) if pt.args else 360
    pg = m.one(vs, "persistence_granularity", f"{key}.persistence_prefixlen")
    if pg is not None and pg.args:
        try:
            kw["persistence_prefixlen"] = ipaddress.ip_network(f"0.0.0.0/{pg.args[0]}").prefixlen \
                if "." in pg.args[0] else int(pg.args[0])
        except ValueError:
            m.err(pg, f"persistence_granularity {pg.args[0]!r}: a netmask (255.255.255.0) or a prefix length")
    proto = m.one(vs, "protocol", f"{key}.protocol")
    if proto is not None and proto.args:
        try:
            kw["protocol"] = Protocol(proto.args[0].lower())
        except ValueError:
            m.err(proto, f"protocol {proto.args[0]!r}: TCP, UDP or SCTP")
    quorum_st = None
    for kwd, field in (("quorum", "quorum"), ("hysteresis", "hysteresis")):
        st = m.one(vs, kwd, f"{key}.{field}")
        if st is not None:
            kw[field] = m.num(st, int, 1)
            quorum_st = quorum_st or (st if kwd == "quorum" else None)
    sorry = m.one(vs, "sorry_server", f"{key}.sorry_server")
    if sorry is not None and m.arg(sorry, 1):
        kw["sorry_server"] = sorry.args[0]
        if len(sorry.args) > 1:
            kw["sorry_server_port"] = m.num(dataclasses.replace(sorry, args=sorry.args[1:]), int, None)
    if m.one(vs, "inhibit_on_failure") is not None:
        kw["inhibit_on_failure"] = True
    vhost = m.one(vs, "virtualhost")
    for kwd in ("quorum_up", "quorum_down"):
        cmd = _command(m, m.one(vs, kwd, f"{key}.{kwd}"))
        if cmd is not None:
            kw[kwd] = cmd
    for kwd in ("alpha", "omega"):
        if m.one(vs, kwd, f"{key}.{kwd}") is not None:
            kw[kwd] = True
    if m.one(vs, "ops", f"{key}.ops") is not None:  # one-packet scheduling (ipvsadm -o)
        kw["ops"] = True
    flags: list[str] = []
    sched = kw.get("scheduler", "wlc")
    for kwd in ("sh-fallback", "sh-port", "mh-fallback", "mh-port", "flag-1", "flag-2", "flag-3"):
        st = m.one(vs, kwd, f"{key}.scheduler_flags")
        if st is None:
            continue
        if kwd.startswith("flag-"):  # keepalived's generic flags: 1 fallback, 2 port (sh and mh)
            if kwd == "flag-3" or sched not in ("sh", "mh"):
                m.warn(st, f"{kwd}: IPVS gives it no meaning for scheduler {sched}: ignored")
                continue
            kwd = f"{sched}-{'fallback' if kwd == 'flag-1' else 'port'}"
        if kwd not in flags:
            flags.append(kwd)
    if flags:
        kw["scheduler_flags"] = tuple(flags)
    st = m.one(vs, "ha_suspend")
    if st is not None:
        m.warn(st, "ha_suspend: lvsbus checks the real servers on every router, active or not (a warm "
                   "backup's table is ready at takeover): not suspended")
    servers: list[RealServer] = []
    check: Check | None = None
    for i, rs in enumerate(vs.find("real_server"), 1):
        all_marks = all(mk is not None for _a, _p, mk, _w in members)
        if not rs.args or (len(rs.args) < 2 and not all_marks):
            m.skip(rs)
            m.err(rs, "real_server needs an address and a port (a port only a fwmark service may leave out)")
            continue
        rname = f"rs{i}"
        rkey = f"{key}.server.{rname}"
        m.use(rs, rkey)
        w = m.num(m.one(rs, "weight", f"{rkey}.weight"), int, 1)
        if m.one(rs, "inhibit_on_failure") is not None:
            kw["inhibit_on_failure"] = True
        commands: dict[str, Any] = {kwd: _command(m, m.one(rs, kwd, f"{rkey}.{kwd}")) for kwd in ("notify_up", "notify_down")}
        for kwd, fname in (("uthreshold", "upper_threshold"), ("lthreshold", "lower_threshold")):  # IPVS -x / -y
            n = m.num(m.one(rs, kwd, f"{rkey}.{fname}"), int, None)
            if n is not None:
                commands[fname] = n  # smtp_alert: map_keepalived
        chk = _check(m, rs, interval, vhost.args[0] if vhost is not None and vhost.args else None)
        if check is None and chk is not None:
            check = chk
        try:
            rport = int(rs.args[1]) if len(rs.args) > 1 else 0  # fwmark, no port: the client's (IPVS port 0)
        except ValueError:
            m.err(rs, f"real_server port {rs.args[1]!r} is not a number")
            continue
        servers.append(RealServer(rname, rs.args[0], port=rport if rport != port else None, weight=w,
                                  check=chk if chk is not None and chk != check else None,
                                  **{k: v for k, v in commands.items() if v is not None}))
    if check is not None:
        kw["check"] = check
    if quorum_st is not None and any(_dynamic(c) for c in [check] + [rs.check for rs in servers]):
        m.warn(quorum_st, "quorum: lvsbus counts the real servers' configured weights; keepalived counts the "
                          "ones misc_dynamic or a FILE_CHECK weight set")
    if check is not None and "alpha" not in kw:
        m.no_alpha.append(vs)
    out = []
    for j, (address, mport, mark, where) in enumerate(members, 1):
        vname = name if len(members) == 1 else f"{name}-{j}"
        m.where.setdefault(f"virtual.{vname}", (where.file, where.line))
        if mark is not None:
            if mark_vip is None:
                m.err(where, f"fwmark {mark}: lvsbus holds a VIP for a fwmark service: list one in a "
                             "vrrp_instance's virtual_ipaddress that no virtual_server names"
                             + ("" if vips else " (this file has no vrrp_instance)"))
                continue
            address = mark_vip
            m.warn(where, f"fwmark {mark}: lvsbus holds VIP {address} for it (the first VIP no virtual_server "
                          "names); the packets are marked by your firewall rules, as with keepalived")
        assert address is not None
        extra = dict(kw)
        vip = vips.get(address)
        if vip is not None:
            extra.update(vip_prefixlen=vip[0], device=vip[1], label=vip[2], group=vip[3])
        else:
            m.warn(where, f"{address} is in no vrrp_instance's virtual_ipaddress: lvsbus holds it as a VIP of "
                          "the default group (keepalived expects it on the host already)")
        svc_port = mport if mport is not None else rs_port  # a fwmark: its first real server's port (0: the client's)
        out.append(VirtualService(vname, address, port=svc_port, fwmark=mark, servers=tuple(
            dataclasses.replace(rs, port=None if (rs.port or port) == svc_port else (rs.port or port))
            for rs in servers), **extra))
    return out


def map_keepalived(tree: list[Statement], filename: str, config_id: str,
                   key_file: str | None = None) -> tuple[Config, _Map]:
    m = _Map(filename)
    top = Statement("", [], filename, 0, block=tree)
    m.track_files = _track_files(m, tree)
    m.tls = _ssl_block(m, top)
    # global_defs
    gd = m.one(top, "global_defs")
    if gd is not None:
        rid = m.one(gd, "router_id")
        alerting = _global_alerts(m, gd)
        if rid is not None and alerting is not None and rid.args:
            alerting["router_id"] = rid.args[0]
            m.where.setdefault("alerts.router_id", (rid.file, rid.line))
            m.warn(rid, "router_id: the [ID] of every alert's subject ([alerts] router_id); lvsbus names each "
                        "router by its address (lvs-10-0-0-1), so the configs converted on every router agree")
        elif rid is not None:
            m.warn(rid, "router_id: lvsbus names each router by its address (lvs-10-0-0-1), so the configs "
                        "converted on every router agree")
    else:
        alerting = None
    marks: dict[str, bool] = {}  # smtp_alert of a vrrp_instance, sync group, virtual_server, real_server
    # scripts
    tracks: list[Track] = []
    scripts: dict[str, Statement] = {}
    for sc in top.find("vrrp_script"):
        if not sc.args:
            m.use(sc)
            m.err(sc, "vrrp_script needs a name")
            continue
        scripts[sc.args[0]] = m.use(sc, f"track.{sc.args[0]}")
    # instances
    sync_of: dict[str, str] = {}
    for sg in top.find("vrrp_sync_group"):
        m.use(sg)
        grp = m.one(sg, "group")
        for name in grp.words() if grp is not None else []:
            sync_of[name] = sg.args[0] if sg.args else "sync"
        _smtp_alert(m, sg, [f"group:{sg.args[0] if sg.args else 'sync'}"], marks)
        for st in sg.block or ():
            if st.keyword.startswith("notify") or st.keyword == "global_tracking":
                m.skip(st)
                m.warn(st, f"{st.keyword} of a sync group: lvsbus runs each member group's commands")
    instances = top.find("vrrp_instance")
    local_addr: str | None = None
    peers: list[str] = []
    groups: list[Group] = []
    vips: dict[str, tuple[int | None, str | None, str | None, str]] = {}  # VIP -> prefixlen, device, label, group
    spare_vips: list[tuple[str, int | None, str | None, str | None, str, Statement]] = []
    adverts: list[float] = []
    # heartbeat field -> (value, where): the instances' (the first used), global_defs' when none has it
    garp: dict[str, list[tuple[Any, Statement]]] = {}
    garp_defaults: dict[str, tuple[Any, Statement]] = {}
    if gd is not None:
        for kw, field, conv in _GARP:
            gst = m.one(gd, kw, f"heartbeat.{field}")
            if gst is not None:
                garp_defaults[field] = (m.num(gst, conv, None), gst)
        for kw, why in _SCRIPT_SECURITY.items():
            gst = m.one(gd, kw)
            if gst is not None:
                m.warn(gst, f"{kw}: {why}")
        for kw in _GARP_NOT_RUN:
            gst = m.one(gd, kw)
            if gst is not None:
                m.warn(gst, f"{kw}: lvsbus sends its garp_repeat gratuitous ARPs at once on taking the VIPs "
                           "(and every garp_refresh s): no delayed second set, no other spacing")
    local_prio: int | None = None
    master = False
    for inst in instances:
        name = inst.args[0] if inst.args else "VI"
        gkey = f"group.{name}"
        m.use(inst, gkey)
        _smtp_alert(m, inst, [f"group:{name}"], marks)
        prio = m.num(m.one(inst, "priority", f"{gkey}.priority"), int, 100)
        state = inst.find("state")
        if local_prio is None:
            local_prio = prio
            master = bool(state) and bool(state[0].args) and state[0].args[0].upper() == "MASTER"
        ifc = m.one(inst, "interface")
        adv = m.one(inst, "advert_int")
        if adv is not None:
            adverts.append(m.num(adv, float, 1.0))
        for kw, field, conv in _GARP:
            gst = m.one(inst, kw.removeprefix("vrrp_"), f"heartbeat.{field}")
            if gst is not None:
                garp.setdefault(field, []).append((m.num(gst, conv, None), gst))
        src = m.one(inst, "unicast_src_ip", "routers")
        if src is not None and src.args:
            local_addr = local_addr or src.args[0]
        up = m.one(inst, "unicast_peer")
        if up is not None:
            m.skip(up)
        for w in up.words() if up is not None else []:
            if w not in peers:
                peers.append(w)
        for kw, why in _WIRE.items():
            s = m.one(inst, kw)
            if s is not None:
                m.skip(s)
                m.warn(s, f"{kw}: {why}")
        pre = not any(m.one(inst, k) is not None for k in ("nopreempt",))
        pdelay = m.num(m.one(inst, "preempt_delay", f"{gkey}.preempt_delay"), float, None)
        for blk in ("virtual_ipaddress", "virtual_ipaddress_excluded"):
            vb = m.one(inst, blk)
            for line in vb.block or () if vb is not None else ():
                m.use(line)
                vip = _vip(m, line)
                if vip is not None:
                    addr, plen, dev, label = vip
                    dev = dev or (ifc.args[0] if ifc is not None and ifc.args else None)
                    vips.setdefault(addr, (plen, dev, label, name))
                    spare_vips.append((addr, plen, dev, label, name, line))
        for tkind, kind in (("track_interface", TrackKind.INTERFACE), ("track_script", TrackKind.SCRIPT),
                            ("track_file", TrackKind.FILE)):
            tb = m.one(inst, tkind)
            for line in tb.block or () if tb is not None else ():
                m.use(line)
                weight = 0
                if len(line.args) >= 2 and line.args[0] == "weight":
                    weight = m.num(dataclasses.replace(line, args=line.args[1:]), int, 0)
                if kind is TrackKind.INTERFACE:
                    tname = f"{name}-if-{line.keyword}"
                    tracks.append(Track(tname, kind, weight=weight, device=line.keyword, groups=(name,)))
                elif kind is TrackKind.SCRIPT:
                    script = scripts.get(line.keyword)
                    if script is None:
                        m.err(line, f"track_script {line.keyword!r}: no vrrp_script of that name")
                        continue
                    tracks.append(_script_track(m, script, name, weight if len(line.args) >= 2 else None))
                else:
                    tfile = m.track_files.get(line.keyword)
                    if tfile is None:
                        m.err(line, f"track_file {line.keyword!r}: no track_file block of that name")
                        continue
                    rev = tfile[2]
                    if len(line.args) >= 3:
                        rev = line.args[2] == "reverse"
                    tracks.append(Track(f"{name}-file-{line.keyword}", kind, weight=weight if len(line.args) >= 2
                                        else tfile[1], reverse=rev, path=tfile[0], groups=(name,)))
        is_master = bool(state) and bool(state[0].args) and state[0].args[0].upper() == "MASTER"
        groups.append(Group(name, priority=(("__local__", prio), ("__master__", int(is_master))), preempt=pre, preempt_delay=pdelay,
                            sync_group=sync_of.get(name), **_notify(m, inst)))
    # virtual servers (a group's members and fwmarks each a virtual service of lvsbus)
    vsgs = {g.args[0]: m.use(g) for g in top.find("virtual_server_group") if g.args}
    named: set[str] = set()
    for vs in top.find("virtual_server"):
        for a in ([st.keyword for st in vsgs[vs.args[1]].block or ()] if len(vs.args) == 2 and vs.args[0] == "group"
                  and vs.args[1] in vsgs else vs.args[:1]):
            named.add(a.split("-")[0])
    mark_vip = next((v[0] for v in spare_vips if v[0] not in named), None)
    for gname, g in vsgs.items():
        if not any(len(vs.args) == 2 and vs.args[0] == "group" and vs.args[1] == gname for vs in top.find("virtual_server")):
            m.skip(g)
            m.warn(g, f"virtual_server_group {gname}: no virtual_server names it (virtual_server group {gname})")
    vss: list[VirtualService] = []
    for i, vs in enumerate(top.find("virtual_server"), 1):
        m.use(vs)
        made = _virtual_server(m, vs, i, vips, vsgs, mark_vip)
        vss += made
        _smtp_alert(m, vs, [f"virtual:{v.name}" for v in made], marks)
        for j, rs in enumerate(vs.find("real_server"), 1):  # named rs1, rs2... as _virtual_server names them
            _smtp_alert(m, rs, [f"server:{v.name}/rs{j}" for v in made if any(r.name == f"rs{j}" for r in v.servers)],
                        marks)
    if m.no_alpha:
        more = len(m.no_alpha) - 1
        m.warn(m.no_alpha[0], "virtual_server without alpha" + (f" (and {more} more)" if more else "")
               + ": keepalived puts every real server in the table at start; lvsbus adds one after its first "
               "passed check (as keepalived with alpha), one delay_loop at most")
    # VIPs no virtual server uses: the NAT gateway, or not held
    used = {v.address for v in vss}
    nat: NatRouter | None = None
    any_nat = any(v.forwarding is Forwarding.NAT for v in vss)
    for addr, plen, dev, label, gname, line in spare_vips:
        if addr in used:
            continue
        if nat is None and any_nat:
            nat = NatRouter(addr, device=dev, label=label, prefixlen=plen, group=gname)
            m.where.setdefault("nat_router", (line.file, line.line))
        else:
            m.warn(line, f"VIP {addr}: no virtual_server uses it: lvsbus holds the VIPs of its virtual "
                         "services and one NAT gateway: not held")
    # routers
    if instances and (local_addr is None or not peers):
        m.err(instances[0], "lvsbus routers find their peers by address: give unicast_src_ip and "
                            "unicast_peer { ADDRESS ... } (multicast VRRP has no lvsbus equivalent)")
    local = local_addr or "127.0.0.1"
    lname = _name_of(local)
    base = local_prio if local_prio is not None else 100
    # no router device: keepalived puts each VIP on its own interface (dev, else the instance's)
    routers = [Router(lname, local, priority=base)]
    for i, p in enumerate(peers, 1):
        pp = max(1, min(254, base - i if master else base + i))
        routers.append(Router(_name_of(p), p, priority=pp))
    # a peer's priority in each group: its heartbeats say it; until heard, a placeholder below ours
    # where this router is the MASTER, above where it is the BACKUP
    placed: list[Group] = []
    for fg in groups:
        own, above = dict(fg.priority)["__local__"], dict(fg.priority)["__master__"]
        prios = [(lname, own)] + [(_name_of(p), max(1, min(254, own - i if above else own + i)))
                                  for i, p in enumerate(peers, 1)]
        placed.append(dataclasses.replace(fg, priority=tuple(prios)))
    groups = placed
    hb = Heartbeat(enabled=bool(instances))
    if key_file:
        hb = dataclasses.replace(hb, key_file=key_file)
    if adverts:
        ka = min(adverts)
        hb = dataclasses.replace(hb, keepalive=ka, deadtime=3 * ka)
    for field, default in garp_defaults.items():
        garp.setdefault(field, []).append(default)
    for field, found in garp.items():  # gratuitous ARPs: one setting for every group
        values = [(v, st) for v, st in found if v is not None]
        if not values:
            continue
        value, first = values[0]
        if field == "garp_repeat" and not 1 <= value <= 100:
            m.err(first, f"{first.keyword} {value}: 1..100")
            continue
        hb = dataclasses.replace(hb, **{field: value})
        for other, st in values[1:]:
            if other != value:
                m.warn(st, f"{st.keyword} {other}: lvsbus has one {field} for every group: "
                           f"{value} (line {first.line}) is used")
    cfg = Config(routers=tuple(routers), heartbeat=hb, virtual_services=tuple(vss), tracks=tuple(tracks),
                 groups=tuple(groups) if instances else (), nat_router=nat, alerts=_alerts(m, alerting, marks))
    m.unused(tree)
    return cfg, m


_TRUE, _FALSE = ("true", "on", "yes"), ("false", "off", "no")


def _bool(m: _Map, st: Statement) -> bool | None:
    """keepalived's ``[<BOOL>]``: no value is true; true/on/yes, false/off/no."""
    if not st.args:
        return True
    word = st.args[0].lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    m.err(st, f"{st.keyword}: {st.args[0]!r} is not true or false (on/off, yes/no)")
    return None


#: global_defs keywords of alerts that lvsbus does not run, and why
_ALERTS_NOT_RUN = {
    "notify_fifo_script": "lvsbus writes the FIFO and does not start its reader: run your reader as a service of its own",
    "vrrp_notify_fifo_script": "lvsbus writes the FIFO and does not start its reader: run your reader as a service of its own",
    "lvs_notify_fifo_script": "lvsbus writes the FIFO and does not start its reader: run your reader as a service of its own",
    "no_email_faults": "lvsbus mails a FAULT as any other role change (leave 'role' out of [alerts] on to mail none)",
    "no_checker_emails": "lvsbus mails a real server's verdict when it changes (keepalived's no_checker_emails behaviour)",
}


def _global_alerts(m: _Map, gd: Statement) -> dict[str, Any] | None:
    """global_defs' mail and notify FIFO keywords as ``[alerts]`` settings (docs/keepalived.md);
    None when they ask for nothing (no relay with recipients, no FIFO)."""
    kw: dict[str, Any] = {}
    glob: dict[str, bool | None] = {}
    email = m.one(gd, "notification_email", "alerts.email")
    if email is not None:
        m.skip(email)
        kw["email"] = tuple(email.words())
    for keyword, field in (("notification_email_from", "email_from"), ("smtp_helo_name", "smtp_helo_name"),
                           ("notify_fifo", "notify_fifo"), ("vrrp_notify_fifo", "role_notify_fifo"),
                           ("lvs_notify_fifo", "lvs_notify_fifo")):
        st = m.one(gd, keyword, f"alerts.{field}")
        if st is not None and m.arg(st, 1):
            kw[field] = st.args[0]
            if keyword.endswith("fifo") and len(st.args) > 1:
                m.warn(st, f"{keyword}: the FIFO lvsbus makes is root's, mode 0600 (user and group not applied): "
                           "make it yourself with the owner you need, lvsbus opens an existing one")
    server = m.one(gd, "smtp_server", "alerts.smtp_server")
    if server is not None and m.arg(server, 1):
        kw["smtp_server"] = server.args[0]
        if len(server.args) > 1:
            kw["smtp_port"] = m.num(dataclasses.replace(server, args=server.args[1:]), int, 25)
            m.where.setdefault("alerts.smtp_port", (server.file, server.line))
    timeout = m.one(gd, "smtp_connect_timeout", "alerts.smtp_timeout")
    if timeout is not None:
        kw["smtp_timeout"] = m.num(timeout, float, 30.0)
    for keyword in ("smtp_alert", "smtp_alert_vrrp", "smtp_alert_checker"):
        st = m.one(gd, keyword, "alerts.on")
        if st is not None:
            glob[keyword] = _bool(m, st)
    for keyword, why in _ALERTS_NOT_RUN.items():
        st = m.one(gd, keyword)
        if st is not None:
            m.skip(st)
            m.warn(st, f"{keyword}: {why}")
    if kw.get("email") and "smtp_server" not in kw:
        m.warn(email, "notification_email without smtp_server: no mail is sent (as keepalived)")  # type: ignore[arg-type]
        kw.pop("email")
    elif "smtp_server" in kw and not kw.get("email"):
        m.warn(server, "smtp_server without notification_email: no mail is sent (as keepalived)")  # type: ignore[arg-type]
        for k in ("smtp_server", "smtp_port"):
            kw.pop(k, None)
    if not kw.get("email") and not any(kw.get(f) for f in ("notify_fifo", "role_notify_fifo", "lvs_notify_fifo")):
        return None
    default = glob.get("smtp_alert")
    role = glob.get("smtp_alert_vrrp") if glob.get("smtp_alert_vrrp") is not None else default
    checker = glob.get("smtp_alert_checker") if glob.get("smtp_alert_checker") is not None else default
    kw["on"] = (("role",) if role else ()) + (("real_server", "virtual_service") if checker else ())
    return kw


def _smtp_alert(m: _Map, block: Statement, targets: list[str], marks: dict[str, bool]) -> None:
    """A vrrp_instance's, sync group's, virtual_server's or real_server's ``smtp_alert [<BOOL>]``:
    its targets go to ``[alerts] mail`` (true) or ``no_mail`` (false)."""
    st = m.one(block, "smtp_alert")
    if st is None:
        return
    on = _bool(m, st)
    if on is None:
        return
    for target in targets:
        marks[target] = on
        m.where.setdefault(f"alerts.{'mail' if on else 'no_mail'}", (st.file, st.line))


def _alerts(m: _Map, kw: dict[str, Any] | None, marks: dict[str, bool]) -> Alerts | None:
    if kw is None:
        if marks:
            where = m.where.get("alerts.mail") or m.where.get("alerts.no_mail")
            if where is not None:
                m.issues.append(Issue(key="", message="smtp_alert: no mail relay and recipients (global_defs "
                                      "smtp_server, notification_email): nothing is mailed", file=where[0],
                                      line=where[1], severity=Severity.WARNING))
        return None
    return Alerts(**kw, mail=tuple(t for t, on in marks.items() if on),
                  no_mail=tuple(t for t, on in marks.items() if not on))


def _script_track(m: _Map, sc: Statement, group: str, weight: int | None) -> Track:
    script = m.one(sc, "script")
    cmd = " ".join(script.args) if script is not None else ""
    if script is None:
        m.err(sc, "vrrp_script needs a script")
    w = weight if weight is not None else m.num(m.one(sc, "weight"), int, 0)
    for kw in ("user", "init_fail"):
        st = m.one(sc, kw)
        if st is not None:
            m.warn(st, f"{kw}: lvsbus runs track scripts as its nanny does (root, started as fine until they fail)")
    return Track(f"{sc.args[0]}-{group}", TrackKind.SCRIPT, weight=w, command=cmd,
                 interval=m.num(m.one(sc, "interval"), float, 1.0), timeout=m.num(m.one(sc, "timeout"), float, 1.0),
                 rise=m.num(m.one(sc, "rise"), int, 1), fall=m.num(m.one(sc, "fall"), int, 1), groups=(group,))


def looks_like_keepalived(text: str) -> bool:
    """Whether a config's text is keepalived's: a top-level block keepalived has and lvs.cf does not."""
    return bool(re.search(r"^\s*(@\^?\S+\s+)?(global_defs|vrrp_instance|vrrp_script|vrrp_sync_group|"
                          r"virtual_server|virtual_server_group|include)\b", text, re.M))


def loads_keepalived(text: str, filename: str = "keepalived.conf", config_id: str = "",
                     files: Files | None = None, key_file: str | None = None) -> LoadedConfig:
    """Read a keepalived.conf (includes relative to ``filename``, read through ``files``: none, an
    include is an error) as lvsbus runs it; ``config_id``: what ``@ID`` lines match. Raises
    ConfigError with every error (file and line); the warnings say what lvsbus does not run or
    runs differently. ``key_file``: the heartbeat key (keepalived.conf has no place for it; else
    the default, /etc/lvsbus/heartbeat.key)."""
    cid = config_id
    tree, gram_warnings = parse(text, filename, config_id=cid, files=files)
    cfg, m = map_keepalived(tree, filename, cid, key_file)
    issues = list(gram_warnings) + m.issues
    for issue in validate(cfg, "keepalived"):
        f, line = m.locate(issue.key)
        issues.append(dataclasses.replace(issue, file=f or filename, line=line))
    errors = [i for i in issues if i.severity is Severity.ERROR]
    warnings = [i for i in issues if i.severity is Severity.WARNING]
    order = {filename: 0}

    def key(i: Issue) -> tuple:
        return (order.get(i.file or "", 1), i.file or "", i.line or 0)

    if errors:
        raise ConfigError(sorted(errors, key=key))
    return LoadedConfig(config=cfg, warnings=tuple(sorted(warnings, key=key)), source=filename, format="keepalived",
                        locate=m.locate)
