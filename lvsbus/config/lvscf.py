"""Reader for Piranha's lvs.cf (``/etc/sysconfig/ha/lvs.cf``). Pure: takes text, not a path.

The file is read the way Piranha's lvsconfig.c read it (``key = value`` lines, ``#`` comment lines,
``virtual NAME {`` / ``server NAME {`` / ``failover NAME {`` blocks closed by ``}``, values quoted
with ``"`` or ``'``), then mapped onto the native shape and built by the same builder as TOML, so
both forms give the same model and the same validation. Errors carry the lvs.cf line and keyword.

Piranha mapping of health checks (nanny): ``interval`` = the global ``keepalive``;
``fall`` = ceil(timeout / interval); ``rise`` = ceil(reentry / interval) (each at least 1);
the probe ``timeout`` = min(timeout, interval).
"""
from __future__ import annotations

import builtins  # (annotations in _Conv, whose methods are named bool and int)
import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from lvsbus.config.model import ConfigError, Issue, LoadedConfig, Severity, size_issue
from lvsbus.config.model import shown as _shown
from lvsbus.config.native import SUGGESTIONS_AT_MOST, config_from_mapping, suggest
from lvsbus.config.validate import LIMITS, range_text

__all__ = ["loads_lvscf", "GLOBAL_KEYS", "VIRTUAL_KEYS", "SERVER_KEYS", "FAILOVER_KEYS", "OBSOLETE"]

GLOBAL_KEYS = (
    "serial_no", "service", "primary", "primary_private", "primary_shared", "backup",
    "backup_private", "backup_shared", "backup_active", "heartbeat", "heartbeat_port", "keepalive",
    "deadtime", "network", "nat_router", "nat_nmask", "syncdaemon", "syncd_iface", "syncd_id",
    "tcp_timeout", "tcpfin_timeout", "udp_timeout", "active_cmd", "inactive_cmd", "monitor_links",
    "hard_shutdown", "ipvsadm", "rsh_command", "sync", "debug_level", "reservation_conflict_action",
)
VIRTUAL_KEYS = (
    "address", "vip_nmask", "active", "port", "protocol", "fwmark", "scheduler", "persistent",
    "pmask", "sorry_server", "timeout", "reentry", "quiesce_server", "send", "expect", "use_regex",
    "send_program", "load_monitor", "client_monitor",
)
SERVER_KEYS = ("address", "active", "weight", "port")
FAILOVER_KEYS = (
    "address", "vip_nmask", "active", "timeout", "reentry", "port", "send", "expect", "start_cmd",
    "stop_cmd",
)
BLOCK_KEYS = {"": GLOBAL_KEYS, "virtual": VIRTUAL_KEYS, "server": SERVER_KEYS,
              "failover": FAILOVER_KEYS}
CHILD_BLOCKS = {"": ("virtual", "failover"), "virtual": ("server",), "server": (), "failover": ()}

#: keywords accepted with a warning: what lvsbus does instead
OBSOLETE = {
    "rsh_command": "lvsbus does not copy lvs.cf between routers with rsh/ssh; distribute the file "
                   "with your configuration management (both routers read the same file)",
    "sync": "lvsbus does not synchronise the config file between routers; distribute it with your "
            "configuration management",
    "ipvsadm": "lvsbus programs IPVS over netlink and never runs ipvsadm",
    "client_monitor": "lvsbus runs its own health checker (nanny) inside the router; there is no "
                      "external monitor program",
    "load_monitor": "Piranha's rup/ruptime load-based weights are obsolete: lvsbus keeps the "
                    "configured weights; use a program check or per-server weights",
}

#: native (TOML) keys of a virtual service that lvs.cf has no keyword for (Piranha had none):
#: written in lvs.cf, the error says how to get them instead of suggesting a look-alike keyword
NATIVE_ONLY = {"virtual": ("scheduler_flags", "ops", "persistence_engine", "inhibit_on_failure",
                           "quorum", "hysteresis", "quorum_up", "quorum_down", "alpha", "omega"),
               "server": ("notify_up", "notify_down")}

_STRING_KEYS = {"send", "expect", "send_program", "active_cmd", "inactive_cmd", "start_cmd",
                "stop_cmd", "debug_level", "rsh_command", "ipvsadm", "client_monitor",
                "load_monitor", "sync"}

#: the few service names Piranha's getservbyname() lookup was used for
PORT_NAMES = {
    "ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "dns": 53, "http": 80,
    "www": 80, "pop3": 110, "ntp": 123, "imap": 143, "snmp": 161, "ldap": 389, "https": 443,
    "smtps": 465, "submission": 587, "ldaps": 636, "imaps": 993, "pop3s": 995, "mysql": 3306,
    "postgresql": 5432,
}

#: lvs.cf keyword (``failover.`` prefixed in failover blocks) -> validate.LIMITS entry
_KEY_LIMITS = {
    "serial_no": "serial_no", "tcp_timeout": "ipvs_timeout", "tcpfin_timeout": "ipvs_timeout",
    "udp_timeout": "ipvs_timeout", "syncd_id": "sync_id", "fwmark": "fwmark",
    "persistent": "persistence", "weight": "weight", "heartbeat_port": "port", "port": "port",
    "keepalive": "keepalive", "deadtime": "deadtime", "timeout": "vs_timeout",
    "reentry": "vs_reentry", "failover.timeout": "fos_time", "failover.reentry": "fos_time",
}
#: numbers: ASCII only (int() and float() also take '١٢', '１２', '1_0', 'inf')
_DIGITS_RE = re.compile(r"[0-9]+")
_INT_RE = re.compile(r"[+-]?(?:0[xX](?P<hex>[0-9a-fA-F]+)|(?P<dec>[0-9]+))")
# one way to match: "[0-9]+\.?[0-9]*" split a long run of digits every way before failing on what
# follows it (49 s on a 300,000-digit timeout; found by bench/fuzz_config.py)
_NUM_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

_BLOCK_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s+(\S+?)\s*(\{)?\s*$")


@dataclass
class _Entry:
    key: str
    value: str
    quoted: bool
    line: int


@dataclass
class _Block:
    kind: str
    name: str
    line: int
    entries: list[_Entry] = field(default_factory=list)
    children: list["_Block"] = field(default_factory=list)


@dataclass
class _Parsing:
    """Where pass 1 is: the open blocks (the file's root first), a block header waiting for its
    '{', and the depth inside a block being skipped (one that is not allowed where it is)."""
    stack: list[_Block]
    pending: _Block | None = None
    skipping: int = 0

    def open(self, blk: _Block) -> None:
        self.stack[-1].children.append(blk)
        self.stack.append(blk)


class _Reader:
    def __init__(self, filename: str):
        self.filename = filename
        self.issues: list[Issue] = []
        self.loc: dict[str, tuple[int | None, str]] = {}

    def err(self, line: int | None, key: str, msg: str, suggestion: str | None = None) -> None:
        self.issues.append(Issue(key=key, message=msg, file=self.filename, line=line,
                                 suggestion=suggestion))

    def hint(self, word: str, choices: list[str] | tuple[str, ...] | set[str]) -> str | None:
        return suggest(word, choices) if len(self.issues) < SUGGESTIONS_AT_MOST else None

    def warn(self, line: int | None, key: str, msg: str) -> None:
        self.issues.append(Issue(key=key, message=msg, file=self.filename, line=line,
                                 severity=Severity.WARNING))

    # ---- pass 1: lines into blocks ------------------------------------------------------------
    def parse(self, text: str) -> _Block:
        root = _Block("", "", 0)
        at = _Parsing([root])
        # lines end at \n only, as an editor counts them (splitlines() also splits at \x0c,
        # \x1c, \u2028..., and the line numbers of every error after one would be off)
        for no, raw in enumerate(text.split("\n"), 1):
            line = raw.strip()
            if line and not line.startswith("#"):
                self._line(at, no, line)
        if at.pending is not None:
            self._no_brace(at.stack, at.pending)
        for blk in at.stack[1:]:
            self.err(blk.line, _dotted([blk]), f"block '{blk.kind} {blk.name}' opened here is never "
                                                "closed with '}'")
        return root

    def _line(self, at: _Parsing, no: int, line: str) -> None:
        """One line that is not blank or a comment: a block's '{' or '}', an entry, a block header."""
        if at.pending is not None:
            if line == "{":
                at.open(at.pending)
                at.pending = None
                return
            self._no_brace(at.stack, at.pending)
            at.pending = None
        if at.skipping:
            at.skipping += line.endswith("{") - (line == "}")
            return
        if line == "}":
            if len(at.stack) == 1:
                self.err(no, "}", "'}' without an open block")
            else:
                at.stack.pop()
            return
        if "=" in line and not line.endswith("{"):
            self._entry(at.stack[-1], no, line)
            return
        m = _BLOCK_RE.match(line)
        if m:
            self._block_header(at, no, m.group(1), m.group(2), m.group(3))
            return
        first = line.split()[0]
        self.err(no, first, "expected 'keyword = value', 'virtual NAME {', 'server NAME {', "
                            "'failover NAME {' or '}'",
                 self.hint(first, BLOCK_KEYS[at.stack[-1].kind]))

    def _no_brace(self, stack: list[_Block], blk: _Block) -> None:
        """A block header (``blk``) not followed by '{' (the caller drops it)."""
        self.err(blk.line, _dotted(stack[1:] + [blk]), f"'{blk.kind} {blk.name}' must be followed by '{{'")

    def _entry(self, blk: _Block, no: int, line: str) -> None:
        """``keyword = value`` into the block it is in."""
        key, _, value = line.partition("=")
        key = key.strip()
        value, quoted = _value(value)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            self.err(no, key or "=", "expected 'keyword = value'")
            return
        blk.entries.append(_Entry(key, value, quoted, no))

    def _block_header(self, at: _Parsing, no: int, kind: str, name: str, brace: str | None) -> None:
        """``KIND NAME {`` (or its '{' on the next line): opens the block, or, a kind not allowed
        here, says so and skips the block."""
        cur = at.stack[-1]
        allowed = CHILD_BLOCKS[cur.kind]
        if kind not in allowed:
            where = f"inside '{cur.kind} {cur.name}'" if cur.kind else "at the top level"
            every = ("virtual", "server", "failover")
            hint = self.hint(kind, allowed) or (None if kind in every else self.hint(kind, every))
            what = (f"a '{kind}' block is not allowed {where}"
                    if kind in every else f"unknown block '{kind}' {where}")
            self.err(no, kind, what + (f": allowed here: {', '.join(allowed)}"
                                       if allowed else ": no blocks are allowed here"), hint)
            at.skipping = 1 if brace else 0
            return
        blk = _Block(kind, name, no)
        if brace:
            at.open(blk)
        else:
            at.pending = blk

    # ---- pass 2: blocks into native-shaped data -----------------------------------------------
    def entries(self, blk: _Block, prefix: str) -> dict[str, _Entry]:
        allowed = BLOCK_KEYS[blk.kind]
        out: dict[str, _Entry] = {}
        for e in blk.entries:
            shown = f"{prefix}{e.key}"
            if e.key not in allowed:
                elsewhere = [k for k, keys in BLOCK_KEYS.items() if e.key in keys and k != blk.kind]
                where = f"'{blk.kind} {blk.name}'" if blk.kind else "the global section"
                msg = f"unknown keyword '{e.key}' in {where}"
                if e.key in NATIVE_ONLY.get(blk.kind, ()):
                    self.err(e.line, shown, msg + f": '{e.key}' is a key of the native form, which lvs.cf "
                                                  "has no keyword for: convert the file (lvsbus config "
                                                  "convert FILE > FILE.toml) and set it there")
                    continue
                if elsewhere:
                    place = elsewhere[0] or "global"
                    msg += f": '{e.key}' belongs in a {place} block" if elsewhere[0] else \
                        f": '{e.key}' is a global keyword, put it before the blocks"
                self.err(e.line, shown, msg, None if elsewhere else self.hint(e.key, allowed))
                continue
            if e.key in out:
                self.err(e.line, shown, f"given twice (first at line {out[e.key].line})")
                continue
            out[e.key] = e
            if e.key in OBSOLETE and not (e.key == "load_monitor" and e.value.lower() in ("", "none")):
                self.warn(e.line, shown, f"obsolete keyword, ignored: {OBSOLETE[e.key]}")
        return out

    def at(self, path: str, e: _Entry, shown: str) -> None:
        self.loc.setdefault(path, (e.line, shown))


def _dotted(blocks: list[_Block]) -> str:
    return ".".join(f"{b.kind}.{b.name}" for b in blocks)


def _value(text: str) -> tuple[str, bool]:
    text = text.strip()
    if text[:1] in ("'", '"'):
        q = text[0]
        end = text.find(q, 1)
        if end > 0 and (not text[end + 1:].strip() or text[end + 1:].strip().startswith("#")):
            return text[1:end], True
        return text, False
    hash_at = re.search(r"\s#", text)
    if hash_at:
        text = text[: hash_at.start()].rstrip()
    return text, False


#: Piranha's nanny (convert_str): \\ \r \n \t \' \"; lvsbus adds \xHH and octal \N, \NN, \NNN
#: (\0 is NUL) for binary protocols
_ESCAPES = {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\", '"': b'"', "'": b"'"}
_ESCAPE_RE = re.compile(r"\\(x[0-9A-Fa-f]{2}|[0-7]{1,3}|.?)", re.S)
KNOWN_ESCAPES = "\\r \\n \\t \\\\ \\\" \\' \\xHH (hex byte) \\NNN (octal byte, \\0 = NUL)"


def _unescape_bytes(s: str, regex: bool = False) -> tuple[bytes, str | None]:
    """The bytes a send/expect value stands for: literal text as UTF-8, escapes as bytes.
    (bytes, None), or (b"", why) for an unknown escape. With ``regex`` (an expect under use_regex)
    only Piranha's escapes are turned into bytes; any other backslash sequence is the regular
    expression's (``\\d``, ``\\.``, ``\\x41``...) and kept, as Piranha's nanny kept it."""
    out = bytearray()
    pos = 0
    for m in _ESCAPE_RE.finditer(s):
        out += s[pos:m.start()].encode()
        pos = m.end()
        e = m.group(1)
        if e in _ESCAPES:
            out += _ESCAPES[e]
        elif regex:
            out += m.group(0).encode()
        elif e[:1] == "x" and len(e) == 3:
            out.append(int(e[1:], 16))
        elif e[:1].isdigit() and e[0] in "01234567":
            value = int(e, 8)
            if value > 0o377:
                return b"", f"escape '\\{e}' is more than one byte (octal 0..377)"
            out.append(value)
        elif not e:
            return b"", "ends with a lone backslash (write \\\\ for one backslash)"
        else:
            shown = "\\" + e if e != "x" else "\\x without two hex digits"
            return b"", f"unknown escape '{shown}'; known: {KNOWN_ESCAPES}"
    out += s[pos:].encode()
    return bytes(out), None


def _texts(values: dict[str, bytes]) -> tuple[dict[str, str], str]:
    """Byte values as the model's text and its encoding: UTF-8 text when all of them are valid
    UTF-8, else every one decoded as latin-1 (one character a byte: exact bytes on the wire)."""
    try:
        return {k: v.decode("utf-8") for k, v in values.items()}, "utf-8"
    except UnicodeDecodeError:
        return {k: v.decode("latin-1") for k, v in values.items()}, "latin-1"


class _Conv:
    """Value converters with lvs.cf wording; each returns (ok, value) and reports on failure."""

    def __init__(self, r: _Reader):
        self.r = r

    def _range(self, shown: str) -> str:
        """The documented range of an lvs.cf keyword (``virtual.web.weight`` -> ``0..65535``)."""
        key = shown.rpartition(".")[2]
        limit = _KEY_LIMITS.get(("failover." if shown.startswith("failover.") else "") + key)
        return range_text(limit) if limit else "a number"

    def int(self, e: _Entry, shown: str, what: str = "an integer") -> tuple[builtins.bool, builtins.int]:
        """Decimal or 0x hex, ASCII digits only, as Piranha's strtol read them (a leading 0 is
        still decimal). More than 20 digits is out of every range."""
        v = e.value.strip()
        m = _INT_RE.fullmatch(v)
        if m is None:
            self.r.err(e.line, shown, f"{_shown(e.value)} must be {what}")
            return False, 0
        if len(m.group("hex") or m.group("dec")) > 20:
            self.r.err(e.line, shown, f"{_shown(v)} is out of range: must be {self._range(shown)}")
            return False, 0
        return True, int(v, 16 if m.group("hex") else 10)

    def num(self, e: _Entry, shown: str) -> tuple[builtins.bool, float]:
        """A decimal number (``2``, ``0.5``, ``1e-3``), ASCII digits only, finite."""
        v = e.value.strip()
        if _NUM_RE.fullmatch(v) is None:
            self.r.err(e.line, shown, f"{_shown(e.value)} must be a number of seconds")
            return False, 0.0
        x = float(v)
        if not math.isfinite(x):
            self.r.err(e.line, shown, f"{_shown(v)} is out of range: must be "
                                      f"{self._range(shown)} seconds")
            return False, 0.0
        return True, x

    def bool(self, e: _Entry, shown: str) -> tuple[builtins.bool, builtins.bool]:
        v = e.value.strip().lower()
        if v in ("1", "yes", "true", "on"):
            return True, True
        if v in ("0", "no", "false", "off"):
            return True, False
        self.r.err(e.line, shown, f"{e.value!r} must be 0 or 1")
        return False, False

    def port(self, e: _Entry, shown: str) -> tuple[builtins.bool, builtins.int]:
        v = e.value.strip()
        if v.lower() in PORT_NAMES:
            return True, PORT_NAMES[v.lower()]
        if _DIGITS_RE.fullmatch(v) is None:
            self.r.err(e.line, shown, f"{_shown(e.value)} must be a port number 1..65535 or a "
                                      f"service name ({', '.join(sorted(PORT_NAMES))})")
            return False, 0
        if len(v) > 20:
            self.r.err(e.line, shown, f"{_shown(v)} is out of range: must be 1..65535")
            return False, 0
        return True, int(v, 10)

    def netmask(self, e: _Entry, shown: str) -> tuple[builtins.bool, builtins.int]:
        v = e.value.strip().lstrip("/")
        if _DIGITS_RE.fullmatch(v) and len(v) <= 3:  # ASCII: '²'.isdigit() is true
            return True, int(v)
        try:
            net = ipaddress.ip_network(f"0.0.0.0/{v}")
            return True, net.prefixlen
        except ValueError:
            self.r.err(e.line, shown, f"{e.value!r} is not a netmask: give a dotted mask with "
                                      "contiguous ones (255.255.255.0) or a prefix length (24)")
            return False, 0

    def address_dev(self, e: _Entry, shown: str, need_dev: builtins.bool = False) -> dict[str, Any] | None:
        parts = e.value.split()
        if not parts or len(parts) > 2:
            self.r.err(e.line, shown, f"{e.value!r} must be 'IP DEVICE', like '192.0.2.10 eth0:1'")
            return None
        out: dict[str, Any] = {"address": parts[0]}
        if len(parts) == 2:
            dev = parts[1]
            if ":" in dev:
                out["device"], out["label"] = dev.split(":", 1)[0], dev
            else:
                out["device"] = dev
        elif need_dev:
            self.r.err(e.line, shown, f"{e.value!r} needs a device: 'IP DEVICE', like "
                                      "'192.0.2.254 eth1:1'")
        return out


def loads_lvscf(text: str, filename: str = "lvs.cf") -> LoadedConfig:
    """Parse and validate lvs.cf text. Raises ConfigError listing every error (with line)."""
    too_big = size_issue(text, filename)
    if too_big is not None:
        raise ConfigError([too_big])
    r = _Reader(filename)
    root = r.parse(text)
    c = _Conv(r)
    g = r.entries(root, "")
    data: dict[str, Any] = {}
    _top_level(r, c, g, data)
    data["router"] = _routers(r, c, g)
    data["heartbeat"] = hb = _heartbeat(r, c, g)
    _globals(r, c, g, data)
    data["virtual"], data["failover"] = _blocks(r, c, root, g, hb["keepalive"], _forwarding(r, g))
    if "network" in g and data.get("service") == "fos":
        r.warn(g["network"].line, "network", "ignored: it is the virtual services' forwarding, and "
                                             "service = fos runs none")

    def locate(path: str) -> tuple[int | None, str]:
        return _locate(r, path)

    errors = [i for i in r.issues if i.severity is Severity.ERROR]
    warnings = [i for i in r.issues if i.severity is Severity.WARNING]
    try:
        cfg, more = config_from_mapping(data, filename=filename, locate=locate,
                                        return_warnings=True, failed={i.key for i in errors},
                                        dialect="lvscf")
    except ConfigError as exc:
        raise ConfigError(_sorted(errors + list(exc.issues))) from None
    if errors:
        raise ConfigError(_sorted(errors))
    return LoadedConfig(config=cfg, warnings=tuple(_sorted(warnings + more)), source=filename,
                        format="lvscf", locate=lambda path: (filename, locate(path)[0]))


def _put(r: _Reader, path: str, target: dict, key: str, value: Any, e: _Entry, shown: str) -> None:
    """Set ``target[key]`` and remember where it came from (``path``'s line, as ``shown``)."""
    target[key] = value
    r.at(path, e, shown)


def _simple(r: _Reader, c: _Conv, g: dict[str, _Entry], key: str, target: dict, tkey: str, path: str,
            conv: str) -> None:
    """A top-level keyword converted by ``conv`` (a _Conv method, or "str") into ``target[tkey]``."""
    e = g.get(key)
    if e is None:
        return
    if conv == "str":
        ok, v = True, e.value
    else:
        ok, v = getattr(c, conv)(e, key)
    if ok:
        _put(r, path, target, tkey, v, e, key)
    else:  # the default stands in; a cross-check on it points here (and is not repeated)
        r.at(path, e, key)


def _top_level(r: _Reader, c: _Conv, g: dict[str, _Entry], data: dict[str, Any]) -> None:
    _simple(r, c, g, "serial_no", data, "serial_no", "serial_no", "int")
    _simple(r, c, g, "service", data, "service", "service", "str")
    _simple(r, c, g, "hard_shutdown", data, "hard_shutdown", "hard_shutdown", "bool")
    _simple(r, c, g, "debug_level", data, "debug_level", "debug_level", "str")
    _simple(r, c, g, "reservation_conflict_action", data, "reservation_conflict_action",
            "reservation_conflict_action", "str")


def _routers(r: _Reader, c: _Conv, g: dict[str, _Entry]) -> dict[str, dict[str, Any]]:
    """primary and (with backup_active = 1) backup, with their private and shared addresses."""
    routers: dict[str, dict[str, Any]] = {}
    backup_active = False
    if "backup_active" in g:
        ok, backup_active = c.bool(g["backup_active"], "backup_active")
    for role, prio in (("primary", 200), ("backup", 100)):
        if role == "backup" and not backup_active:
            for k in ("backup", "backup_private", "backup_shared"):
                if k in g:
                    r.warn(g[k].line, k, "ignored: backup_active is not 1, so there is no backup "
                                          "router (set backup_active = 1 to use it)")
            continue
        if role not in g:
            if role == "backup":
                r.err(g["backup_active"].line, "backup_active", "backup_active = 1 needs "
                                                               "'backup = IP'")
            continue
        rt: dict[str, Any] = {"priority": prio}
        for suffix, fieldname in (("", "address"), ("_private", "private_address"),
                                  ("_shared", "shared_address")):
            e = g.get(role + suffix)
            if e is not None:
                _put(r, f"router.{role}.{fieldname}", rt, fieldname, e.value.strip(), e, e.key)
        if "address" in rt:
            r.loc.setdefault(f"router.{role}", (g[role].line, role))
            routers[role] = rt
    if "primary" not in g:
        r.err(None, "primary", "the primary router's address is missing: add 'primary = IP'")
        r.loc["router"] = (None, "primary")  # validate()'s "no router" is this same error
    return routers


def _heartbeat(r: _Reader, c: _Conv, g: dict[str, _Entry]) -> dict[str, Any]:
    hb: dict[str, Any] = {}
    for key, tkey, conv in (("heartbeat", "enabled", "bool"), ("heartbeat_port", "port", "port"),
                            ("keepalive", "keepalive", "num"), ("deadtime", "deadtime", "num"),
                            ("monitor_links", "monitor_links", "bool")):
        _simple(r, c, g, key, hb, tkey, f"heartbeat.{tkey}", conv)
    hb.setdefault("keepalive", 2.0)  # Piranha's defaults: lvs.cf keeps meaning what it meant
    hb.setdefault("deadtime", 5.0)
    if "deadtime" not in g and "keepalive" in g:  # the default deadtime against this keepalive
        r.at("heartbeat.deadtime", g["keepalive"], "deadtime")
    return hb


def _globals(r: _Reader, c: _Conv, g: dict[str, _Entry], data: dict[str, Any]) -> None:
    """IPVS timeouts, the sync daemon, notify commands, nat_router."""
    ipvs: dict[str, Any] = {}
    for proto in ("tcp", "tcpfin", "udp"):
        _simple(r, c, g, f"{proto}_timeout", ipvs, proto, f"ipvs_timeouts.{proto}", "int")
    data["ipvs_timeouts"] = ipvs
    sync: dict[str, Any] = {}
    _simple(r, c, g, "syncdaemon", sync, "enabled", "sync_daemon.enabled", "bool")
    _simple(r, c, g, "syncd_iface", sync, "interface", "sync_daemon.interface", "str")
    _simple(r, c, g, "syncd_id", sync, "sync_id", "sync_daemon.sync_id", "int")
    data["sync_daemon"] = sync
    notify: dict[str, Any] = {}
    _simple(r, c, g, "active_cmd", notify, "active_cmd", "notify.active_cmd", "str")
    _simple(r, c, g, "inactive_cmd", notify, "inactive_cmd", "notify.inactive_cmd", "str")
    data["notify"] = notify

    if "nat_router" in g:
        e = g["nat_router"]
        nr = c.address_dev(e, "nat_router", need_dev=True)
        if nr is not None:
            for k in nr:
                r.at(f"nat_router.{k}", e, "nat_router")
            r.at("nat_router", e, "nat_router")
            if "nat_nmask" in g:
                ok, plen = c.netmask(g["nat_nmask"], "nat_nmask")
                if ok:
                    _put(r, "nat_router.prefixlen", nr, "prefixlen", plen, g["nat_nmask"], "nat_nmask")
            data["nat_router"] = nr
    elif "nat_nmask" in g:
        r.warn(g["nat_nmask"].line, "nat_nmask", "ignored: there is no nat_router")


def _forwarding(r: _Reader, g: dict[str, _Entry]) -> str:
    """``network``: every virtual service's forwarding method."""
    forwarding = "nat"
    if "network" in g:
        e = g["network"]
        if e.value in ("direct", "nat", "tunnel"):
            forwarding = e.value
        else:
            r.err(e.line, "network", f"{e.value!r} must be direct, nat or tunnel",
                  suggest(e.value, ("direct", "nat", "tunnel")))

    return forwarding


def _blocks(r: _Reader, c: _Conv, root, g: dict[str, _Entry], keepalive: float,
            forwarding: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``virtual`` and ``failover`` blocks, by name."""
    virtuals: dict[str, Any] = {}
    failovers: dict[str, Any] = {}
    for blk in root.children:
        if blk.kind == "virtual":
            if blk.name in virtuals:
                r.err(blk.line, f"virtual.{blk.name}", f"virtual service '{blk.name}' is defined "
                                                         "twice")
                continue
            virtuals[blk.name] = _virtual(r, c, blk, keepalive, forwarding, g.get("network"),
                                          g.get("keepalive"))
        elif blk.kind == "failover":
            if blk.name in failovers:
                r.err(blk.line, f"failover.{blk.name}", f"failover service '{blk.name}' is defined "
                                                          "twice")
                continue
            failovers[blk.name] = _failover(r, c, blk)
    return virtuals, failovers


def _locate(r: _Reader, path: str) -> tuple[int | None, str]:
    """The line (and the key as the file wrote it) of a model path, or of its nearest parent."""
    probe = path
    while probe:
        if probe in r.loc:
            line, shown = r.loc[probe]
            return line, (shown if probe == path else path)
        probe = probe.rpartition(".")[0]
    return None, path


def _sorted(issues: list[Issue]) -> list[Issue]:
    return sorted(issues, key=lambda i: (i.line is None, i.line or 0))


def _virtual(r: _Reader, c: _Conv, blk: _Block, keepalive: float, forwarding: str,
             network_entry: _Entry | None, keepalive_entry: _Entry | None) -> dict[str, Any]:
    """One ``virtual`` block: the service's own keywords (``_VIRTUAL_KEYWORDS``), its health check,
    its real servers."""
    base = f"virtual.{blk.name}"
    v = r.entries(blk, f"{base}.")
    out: dict[str, Any] = {"forwarding": forwarding}
    r.loc.setdefault(base, (blk.line, base))
    if network_entry is not None:
        r.at(f"{base}.forwarding", network_entry, "network")

    def put(path_key: str, value: Any, e: _Entry) -> None:
        out[path_key] = value
        r.at(f"{base}.{path_key}", e, f"{base}.{e.key}")

    if "address" in v:
        _virtual_address(r, c, v["address"], f"{base}.address", put)
    else:
        r.err(blk.line, base, "has no 'address = IP DEVICE'")
        out["address"] = "0.0.0.0"
    for key, handle in _VIRTUAL_KEYWORDS.items():
        if key in v:
            handle(r, c, v[key], f"{base}.{key}", put)
    out["check"] = _check(r, c, blk, v, keepalive, keepalive_entry, out.get("protocol", "tcp"))
    out["server"] = _servers(r, c, blk)
    return out


#: ``put(model key, value, entry)``: set a virtual service's key, remembering the entry's line
_Put = Callable[[str, Any, _Entry], None]


def _virtual_address(r: _Reader, c: _Conv, e: _Entry, shown: str, put: _Put) -> None:
    ad = c.address_dev(e, shown)
    if ad:
        for k, val in ad.items():
            put(k, val, e)


def _converted(model_key: str, conv: str) -> Callable[[_Reader, _Conv, _Entry, str, _Put], None]:
    """A keyword whose value a _Conv method (``conv``) turns into ``model_key``."""
    def handle(r: _Reader, c: _Conv, e: _Entry, shown: str, put: _Put) -> None:
        ok, val = getattr(c, conv)(e, shown)
        if ok:
            put(model_key, val, e)
    return handle


def _protocol(r: _Reader, c: _Conv, e: _Entry, shown: str, put: _Put) -> None:
    if e.value in ("tcp", "udp"):
        put("protocol", e.value, e)
    elif e.value == "sctp":
        r.err(e.line, shown, "sctp cannot be given in lvs.cf (Piranha had tcp and udp): convert the file "
                             "to TOML to use SCTP")
    else:
        r.err(e.line, shown, f"{e.value!r} must be tcp or udp", suggest(e.value, ("tcp", "udp")))


def _scheduler(r: _Reader, c: _Conv, e: _Entry, shown: str, put: _Put) -> None:
    put("scheduler", e.value.strip(), e)


def _sorry_server(r: _Reader, c: _Conv, e: _Entry, shown: str, put: _Put) -> None:
    """``IP``, ``IP PORT`` or ``IP:PORT`` (the port a number or a service name)."""
    parts = e.value.replace(":", " ", 1).split() if e.value.count(":") == 1 else e.value.split()
    put("sorry_server", parts[0] if parts else "", e)
    if len(parts) == 2:
        ok, port = c.port(_Entry(e.key, parts[1], False, e.line), shown)
        if ok:
            put("sorry_server_port", port, e)


#: a virtual block's own keywords, handled in this order (address first, and the check's keywords
#: apart: ``_check``); each handler gets the entry and its shown key and ``put``s what it gives
_VIRTUAL_KEYWORDS: dict[str, Callable[[_Reader, _Conv, _Entry, str, _Put], None]] = {
    "vip_nmask": _converted("vip_prefixlen", "netmask"),
    "active": _converted("active", "bool"),
    "port": _converted("port", "port"),
    "fwmark": _converted("fwmark", "int"),
    "persistent": _converted("persistence", "int"),
    "pmask": _converted("persistence_prefixlen", "netmask"),
    "quiesce_server": _converted("quiesce", "bool"),
    "protocol": _protocol,
    "scheduler": _scheduler,
    "sorry_server": _sorry_server,
}


def _check(r: _Reader, c: _Conv, blk: _Block, v: dict[str, _Entry], keepalive: float,
           keepalive_entry: _Entry | None, proto: str) -> dict[str, Any]:
    """A virtual block's health check, Piranha's way (see the module's docstring): its times from
    keepalive, timeout and reentry; its kind from send_program, the protocol, send and expect."""
    base = f"virtual.{blk.name}"
    pre = f"{base}."
    interval = float(keepalive)
    check: dict[str, Any] = {"interval": interval}
    if keepalive_entry is not None:
        r.at(f"{base}.check.interval", keepalive_entry, "keepalive")
    timeout, reentry = _check_times(r, c, v, pre)
    ilo, ihi = LIMITS["interval"]
    if ilo <= interval <= ihi:  # else keepalive's own error; fall and rise keep their defaults
        check["fall"] = max(1, math.ceil(timeout / interval - 1e-9))
        check["rise"] = max(1, math.ceil(reentry / interval - 1e-9))
        check["timeout"] = min(timeout, interval)
    for path_key, key in (("fall", "timeout"), ("timeout", "timeout"), ("rise", "reentry")):
        if key in v:
            r.at(f"{base}.check.{path_key}", v[key], pre + key)
    regex = False
    if "use_regex" in v:
        ok, regex = c.bool(v["use_regex"], pre + "use_regex")
        r.at(f"{base}.check.regex", v["use_regex"], pre + "use_regex")
    texts, encoding = _send_expect(r, v, pre, regex)
    if encoding != "utf-8":
        check["encoding"] = encoding
        for key in texts:
            r.at(f"{base}.check.encoding", v[key], pre + key)
    _check_kind(r, v, base, check, proto, texts.get("send", ""), texts.get("expect", ""), regex)
    for key in ("send", "expect"):
        if key in v:
            r.at(f"{base}.check.{key}", v[key], pre + key)
            r.at(f"{base}.check.payload" if key == "send" else f"{base}.check.kind", v[key],
                 pre + key)
    r.at(f"{base}.check", _Entry("", "", False, blk.line), base)
    return check


def _check_times(r: _Reader, c: _Conv, v: dict[str, _Entry], pre: str) -> tuple[float, float]:
    """``timeout`` and ``reentry`` in seconds (Piranha's defaults 10 and 180), each in its range."""
    times = {"timeout": 10.0, "reentry": 180.0}
    for key in times:
        if key in v:
            ok, val = c.num(v[key], pre + key)
            lo, hi = LIMITS[_KEY_LIMITS[key]]
            if ok and val <= 0 and key == "timeout":
                r.err(v[key].line, pre + key, f"{_shown(v[key].value)} must be more than 0 "
                                              f"seconds (at most {hi:g})")
            elif ok and not lo <= val <= hi:
                r.err(v[key].line, pre + key, f"{_shown(v[key].value)} is out of range: must be "
                                              f"{range_text(_KEY_LIMITS[key])} seconds")
            elif ok:
                times[key] = val
    return times["timeout"], times["reentry"]


def _send_expect(r: _Reader, v: dict[str, _Entry], pre: str, regex: bool) -> tuple[dict[str, str], str]:
    """The ``send`` and ``expect`` given, escapes resolved, as the model's text and its encoding
    (``_texts``); an expect under use_regex keeps the regular expression's escapes."""
    raw: dict[str, bytes] = {}
    for key in ("send", "expect"):
        if key in v:
            data, why = _unescape_bytes(v[key].value, regex=(key == "expect" and regex is True))
            if why:
                r.err(v[key].line, pre + key, why)
            raw[key] = data
    return _texts(raw)


def _check_kind(r: _Reader, v: dict[str, _Entry], base: str, check: dict[str, Any], proto: str,
                send: str, expect: str, regex: bool) -> None:
    """The check's kind and its fields: a program (send_program), a UDP exchange, a TCP
    send/expect, or a TCP connect."""
    pre = f"{base}."
    if "send_program" in v:
        e = v["send_program"]
        check.update(kind="program", command=e.value, expect=expect, regex=regex)
        r.at(f"{base}.check.command", e, pre + "send_program")
        r.at(f"{base}.check.kind", e, pre + "send_program")
        if "send" in v:
            r.warn(v["send"].line, pre + "send", "ignored: send_program is given, and its output "
                                                 "is matched against expect")
    elif proto == "udp":
        check.update(kind="udp", payload=send, expect=expect, regex=regex)
    elif send or expect:
        check.update(kind="tcp_send_expect", send=send, expect=expect, regex=regex)
    else:
        check.update(kind="tcp_connect")


def _servers(r: _Reader, c: _Conv, blk: _Block) -> dict[str, Any]:
    """The ``server`` blocks of a virtual block, by name."""
    servers: dict[str, Any] = {}
    for child in blk.children:
        sbase = f"virtual.{blk.name}.server.{child.name}"
        if child.name in servers:
            r.err(child.line, sbase, f"real server '{child.name}' is defined twice in "
                                     f"'virtual {blk.name}'")
            continue
        servers[child.name] = _server(r, c, child, sbase)
    return servers


def _server(r: _Reader, c: _Conv, child: _Block, sbase: str) -> dict[str, Any]:
    spre = sbase + "."
    s = r.entries(child, spre)
    r.loc.setdefault(sbase, (child.line, sbase))
    srv: dict[str, Any] = {}
    if "address" in s:
        srv["address"] = s["address"].value.strip()
        r.at(f"{sbase}.address", s["address"], spre + "address")
    else:
        r.err(child.line, sbase, "has no 'address = IP'")
        srv["address"] = "0.0.0.0"
    for key, conv in (("active", "bool"), ("weight", "int"), ("port", "port")):
        if key in s:
            ok, val = getattr(c, conv)(s[key], spre + key)
            if ok:
                srv[key] = val
                r.at(f"{sbase}.{key}", s[key], spre + key)
    return srv


def _failover(r: _Reader, c: _Conv, blk: _Block) -> dict[str, Any]:
    base = f"failover.{blk.name}"
    pre = base + "."
    f = r.entries(blk, pre)
    r.loc.setdefault(base, (blk.line, base))
    out: dict[str, Any] = {}
    if "address" in f:
        ad = c.address_dev(f["address"], pre + "address")
        if ad:
            out.update(ad)
            for k in ad:
                r.at(f"{base}.{k}", f["address"], pre + "address")
    else:
        r.err(blk.line, base, "has no 'address = IP DEVICE'")
        out["address"] = "0.0.0.0"
    for key, tkey, conv in (("vip_nmask", "vip_prefixlen", "netmask"), ("active", "active", "bool"),
                            ("port", "port", "port"), ("timeout", "timeout", "num"),
                            ("reentry", "reentry", "num")):
        if key in f:
            ok, val = getattr(c, conv)(f[key], pre + key)
            if ok:
                out[tkey] = val
                r.at(f"{base}.{tkey}", f[key], pre + key)
    for key in ("send", "expect"):
        if key in f:
            data, why = _unescape_bytes(f[key].value)
            if why:
                r.err(f[key].line, pre + key, why)
            try:
                out[key] = data.decode("utf-8")
            except UnicodeDecodeError:
                r.err(f[key].line, pre + key, "a failover service's send/expect is text: its bytes must be UTF-8")
            r.at(f"{base}.{key}", f[key], pre + key)
    for key in ("start_cmd", "stop_cmd"):
        if key in f:
            out[key] = f[key].value
            r.at(f"{base}.{key}", f[key], pre + key)
    return out
