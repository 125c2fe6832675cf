"""The native form (TOML) and the one builder every reader goes through. Pure (no file access).

Layout of a native file (every key optional unless said; see docs/config.md)::

    service = "lvs"                  # top-level scalars: Config fields
    [router.NAME]                    # one table a router
    [heartbeat]  [ipvs_timeouts]  [sync_daemon]  [notify]  [nat_router]
    [virtual.NAME]                   # one table a virtual service
    [virtual.NAME.check]             # its check
    [virtual.NAME.server.NAME]       # one table a real server
    [virtual.NAME.server.NAME.check] # per-server override, merged over the virtual's check
    [failover.NAME]
    [track.NAME]                     # a tracked interface, script or file (kind = ...)
    [group.NAME]                     # a failover group (priority = {ROUTER = N, ...})

``config_from_mapping`` builds and validates a Config from that shape or from ``to_dict`` output
(lists under ``routers``/``virtual_services``/``servers``/``failover_services``).
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import ipaddress
import math
import re
import tomllib
from typing import Any, Callable

from lvsbus.config.model import shown as _shown
from lvsbus.config.model import (
    MAX_KEY_PARTS,
    Alerts,
    MAX_NESTING,
    MAX_NUMBER_CHARS,
    Check,
    CheckKind,
    Config,
    ConfigError,
    FailoverService,
    Forwarding,
    Heartbeat,
    HttpUrl,
    IpvsTimeouts,
    Issue,
    LoadedConfig,
    NatRouter,
    Notify,
    Protocol,
    RealServer,
    Router,
    Scaleout,
    ServiceType,
    Severity,
    SyncDaemon,
    Group,
    Track,
    TrackKind,
    VirtualService,
    Web,
    size_issue,
    to_dict,
)
from lvsbus.config.validate import FIELD_LIMITS, range_text, validate

__all__ = ["config_from_mapping", "from_dict", "loads_toml", "render_toml", "TomlLocator", "Locate"]

#: maps a dotted key path to (line or None, key as the operator wrote it)
Locate = Callable[[str], tuple["int | None", str]]

_ENUMS: dict[str, type[enum.Enum]] = {
    "ServiceType": ServiceType, "Protocol": Protocol, "Forwarding": Forwarding, "CheckKind": CheckKind,
    "TrackKind": TrackKind,
}
_NESTED: dict[str, type] = {
    "Heartbeat": Heartbeat, "IpvsTimeouts": IpvsTimeouts, "SyncDaemon": SyncDaemon,
    "Notify": Notify, "NatRouter": NatRouter, "Check": Check, "Web": Web,
    "Scaleout": Scaleout, "Alerts": Alerts,
}
#: list-valued fields: dict-form key -> (native table name, item class)
_LISTS: dict[str, tuple[str, type]] = {
    "routers": ("router", Router),
    "virtual_services": ("virtual", VirtualService),
    "failover_services": ("failover", FailoverService),
    "servers": ("server", RealServer),
    "tracks": ("track", Track),
    "groups": ("group", Group),
}
_TABLE_TO_LIST = {v[0]: k for k, v in _LISTS.items()}
#: the classes whose list fields are tables of their own (built by the caller): elsewhere a field
#: named like one (a tracked item's ``groups``) is a plain value
_LIST_OWNERS = frozenset({"Config", "VirtualService"})
_ADDRESS_FIELDS = {"address", "private_address", "shared_address", "sorry_server", "connect_ip", "bind"}


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _type_of(f: dataclasses.Field) -> tuple[str, bool]:
    t = str(f.type)
    optional = t.endswith(" | None")
    return (t[: -len(" | None")] if optional else t), optional


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    factory: Any = f.default_factory  # (a field without a default has one: this dataclass's rule)
    return factory()


#: a reader suggests a close match ("did you mean") for its first this many issues only: a
#: suggestion costs a fraction of a millisecond, and a 1.5 MB file of 200,000 bad lines took a
#: minute of suggestions (found by bench/fuzz_config.py); every issue is still reported
SUGGESTIONS_AT_MOST = 100


def suggest(word: str, choices: list[str] | tuple[str, ...] | set[str]) -> str | None:
    found = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return found[0] if found else None


class _Refused(Exception):
    """A value a field cannot take; the message says why."""


def _to_bool(value: Any, fieldname: str, limit: str | None) -> bool:
    if isinstance(value, bool):
        return value
    raise _Refused(f"{_shown(value)} must be true or false")


def _to_int(value: Any, fieldname: str, limit: str | None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Refused(f"{_shown(value)} must be an integer")
    if value.bit_length() > 64:
        raise _Refused(f"{_shown(value)} is out of range: must be "
                       + (range_text(limit) if limit else "a 64-bit integer"))
    return value


def _to_float(value: Any, fieldname: str, limit: str | None) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _Refused(f"{_shown(value)} must be a number of seconds (like 2 or 0.5)")
    # an int beyond a float's range would raise in float(): out of range like inf
    if (isinstance(value, float) and math.isfinite(value)) or (
            isinstance(value, int) and value.bit_length() <= 1000):
        return float(value)
    raise _Refused(f"{_shown(value)} is out of range: must be "
                   + (f"{range_text(limit)} seconds" if limit else "a finite number of seconds"))


def _to_str(value: Any, fieldname: str, limit: str | None) -> str:
    """A string; an address field's in its normal form when it is an address."""
    if not isinstance(value, str):
        raise _Refused(f"{_shown(value)} must be a string")
    if fieldname in _ADDRESS_FIELDS:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            pass  # validate() says what is wrong
    return value


def _to_strings(value: Any, fieldname: str, limit: str | None) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _Refused(f"{_shown(value)} must be a list of strings, like [\"sh-port\"]")


def _to_priorities(value: Any, fieldname: str, limit: str | None) -> tuple[tuple[str, int], ...]:
    """Router name -> integer: a table (``{r1 = 200, r2 = 100}``) or, from ``to_dict``, pairs."""
    pairs = list(value.items()) if isinstance(value, dict) else value
    if isinstance(pairs, (list, tuple)) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str)
            and isinstance(p[1], int) and not isinstance(p[1], bool) for p in pairs):
        for name, n in pairs:
            _to_int(n, fieldname, limit)
        return tuple((name, n) for name, n in pairs)
    raise _Refused(f"{_shown(value)} must be a table of router names and integers, like {{r1 = 200, r2 = 100}}")


def _to_ints(value: Any, fieldname: str, limit: str | None) -> tuple[int, ...]:
    """A list of integers, or one integer as a list of one."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    raise _Refused(f"{_shown(value)} must be a list of integers, like [200, 301]")


_URL_KEYS = ("path", "status", "digest", "body_regex")


def _to_urls(value: Any, fieldname: str, limit: str | None) -> tuple[HttpUrl, ...]:
    """An http check's URLs: a list of tables ``{path = "/", status = [200], digest = "...",
    body_regex = "..."}`` (TOML ``[[virtual.NAME.check.urls]]``), each key but path optional."""
    if not isinstance(value, (list, tuple)):
        raise _Refused(f"{_shown(value)} must be a list of tables, like [{{path = \"/health\", status = [200]}}]")
    out = []
    for i, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise _Refused(f"item {i}: {_shown(item)} must be a table, like {{path = \"/health\"}}")
        unknown = sorted(set(item) - set(_URL_KEYS))
        if unknown:
            raise _Refused(f"item {i}: unknown key {unknown[0]!r}: allowed keys are {', '.join(_URL_KEYS)}")
        path = item.get("path", "/")
        if not isinstance(path, str):
            raise _Refused(f"item {i}: path {_shown(path)} must be a string")
        status = _to_ints(item.get("status", [200]), "status", None)
        extra: dict[str, str | None] = {}
        for key in ("digest", "body_regex"):
            v = item.get(key)
            if v is not None and not isinstance(v, str):
                raise _Refused(f"item {i}: {key} {_shown(v)} must be a string")
            extra[key] = v
        out.append(HttpUrl(path=path, status=status, **extra))
    return tuple(out)


#: the model's scalar field types (as annotated) -> converter(value, field name, its LIMITS entry)
_SCALARS: dict[str, Callable[[Any, str, "str | None"], Any]] = {
    "bool": _to_bool, "int": _to_int, "float": _to_float, "str": _to_str,
    "tuple[str, ...]": _to_strings, "tuple[int, ...]": _to_ints,
    "tuple[tuple[str, int], ...]": _to_priorities, "tuple[HttpUrl, ...]": _to_urls,
}


class _Builder:
    def __init__(self, filename: str, locate: Locate | None):
        self.filename = filename
        self.locate = locate
        self.issues: list[Issue] = []

    def issue(self, path: str, msg: str, suggestion: str | None = None,
              severity: Severity = Severity.ERROR) -> None:
        line, shown = self.locate(path) if self.locate else (None, path)
        self.issues.append(Issue(key=shown, message=msg, file=self.filename, line=line,
                                 suggestion=suggestion, severity=severity))

    def hint(self, word: str, choices: list[str] | tuple[str, ...] | set[str]) -> str | None:
        return suggest(word, choices) if len(self.issues) < SUGGESTIONS_AT_MOST else None

    # scalars ---------------------------------------------------------------------------------
    def scalar(self, path: str, tname: str, value: Any, fieldname: str,
               owner: str = "") -> tuple[bool, Any]:
        """``value`` as a field of type ``tname`` (the model's annotation, or an enum's name):
        (True, the value), or (False, None) and the issue said."""
        if tname in _ENUMS:
            return self._enum(path, _ENUMS[tname], value)
        convert = _SCALARS.get(tname)
        if convert is None:  # pragma: no cover - a model field type this builder does not know
            raise TypeError(f"unsupported field type {tname} at {path}")
        try:
            return True, convert(value, fieldname, FIELD_LIMITS.get((owner, fieldname)))
        except _Refused as exc:
            self.issue(path, str(exc))
            return False, None

    def _enum(self, path: str, enum_cls: type[enum.Enum], value: Any) -> tuple[bool, Any]:
        allowed = [m.value for m in enum_cls]
        if isinstance(value, str) and value in allowed:
            return True, enum_cls(value)
        # a hint only for a string: str() of an integer over 4,300 digits raises (the fuzzer's find)
        self.issue(path, f"{_shown(value)} is not allowed: one of {', '.join(allowed)}",
                   self.hint(value, allowed) if isinstance(value, str) else None)
        return False, None

    # dataclasses -----------------------------------------------------------------------------
    def build(self, cls: type, data: Any, path: str, extra: dict[str, Any] | None = None,
              skip: set[str] | None = None) -> Any:
        fields = _fields(cls)
        extra = dict(extra or {})
        skip = skip or set()
        if not isinstance(data, dict):
            self.issue(path, f"must be a table of settings, not {type(data).__name__}")
            data = {}
        known = set(fields) - set(extra) - skip
        kwargs: dict[str, Any] = dict(extra)
        for key in data:
            if key in skip:
                continue
            if key not in known:
                kp = f"{path}.{key}" if path else str(key)
                if key in extra and key not in _LISTS:
                    self.issue(kp, "is set by the table header, not a key")
                else:
                    tables = _LISTS if cls.__name__ in _LIST_OWNERS else {}
                    shown = {tables[k][0] if k in tables else k
                             for k in known | (skip & set(fields)) | (set(extra) & set(tables))}
                    self.issue(kp, f"unknown key {_what(path)}: allowed keys are "
                                   f"{', '.join(sorted(shown))}", self.hint(str(key), shown))
        for name, f in fields.items():
            if name in extra or name in skip:
                continue
            p = f"{path}.{name}" if path else name
            tname, optional = _type_of(f)
            value = data.get(name)
            if value is None:
                if not _has_default(f):
                    self.issue(p, "is required")
                    kwargs[name] = _placeholder(tname)
                continue
            if tname in _NESTED:
                kwargs[name] = self.build(_NESTED[tname], value, p)
                continue
            if name in _LISTS and cls.__name__ in _LIST_OWNERS:
                continue  # handled by the caller
            ok, conv = self.scalar(p, tname, value, name, cls.__name__)
            if ok:
                kwargs[name] = conv
            elif not _has_default(f):
                kwargs[name] = _placeholder(tname)
        for name in list(kwargs):
            if name not in fields:
                del kwargs[name]
        return cls(**kwargs)

    def items(self, data: Any, list_key: str, path: str) -> list[tuple[str, dict]]:
        """(name, table) pairs from list form (to_dict) or name-keyed table form (TOML)."""
        table_name = _LISTS[list_key][0]
        p = f"{path}.{table_name}" if path else table_name
        out: list[tuple[str, dict]] = []
        if isinstance(data, dict):
            for name, table in data.items():
                if not isinstance(table, dict):
                    self.issue(f"{p}.{name}", f"must be a table [{p}.{name}] of settings")
                    continue
                if "name" in table:
                    self.issue(f"{p}.{name}.name", "is set by the table header, not a key")
                    table = {k: v for k, v in table.items() if k != "name"}
                out.append((str(name), table))
        elif isinstance(data, (list, tuple)):
            for i, table in enumerate(data):
                if not isinstance(table, dict) or not isinstance(table.get("name"), str):
                    self.issue(f"{p}[{i}]", "must be a table with a string 'name'")
                    continue
                out.append((table["name"], {k: v for k, v in table.items() if k != "name"}))
        else:
            self.issue(p, f"must be tables [{p}.NAME]")
        return out


def _what(path: str) -> str:
    return f"in [{path}]" if path else "at the top level"


def _placeholder(tname: str) -> Any:
    """A stand-in for a required field that is missing or failed to convert (already reported):
    of the field's type, so validation can still look at the rest without tripping on None."""
    if tname.startswith("tuple["):
        return ()
    return {"str": "", "int": 0, "float": 0.0, "bool": False}.get(tname)


def _normalise_native(data: dict[str, Any], tables: tuple[str, ...] | None = None) -> dict[str, Any]:
    """TOML table names (router, virtual, server, failover, track, group) -> model list keys;
    ``tables``: only these (inside a virtual service only ``server`` is a table: its ``group`` is
    a key)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TABLE_TO_LIST and (tables is None or key in tables):
            out[_TABLE_TO_LIST[key]] = value
        else:
            out[key] = value
    return out


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from ``lvsbus.config.model.to_dict`` output (lists or tuples both accepted)
    and re-validate it. Raises ConfigError."""
    return config_from_mapping(data, filename="<dict>")


def config_from_mapping(data: dict[str, Any], *, filename: str = "<config>",
                        locate: Locate | None = None,
                        return_warnings: bool = False, failed: set[str] | None = None,
                        dialect: str = "toml") -> Any:
    """Build and validate a Config from native-shaped data. Raises ConfigError with every error.

    ``data`` may be TOML-shaped (name-keyed tables ``router``, ``virtual``, ``server``,
    ``failover``) or ``to_dict`` output (lists under ``routers``, ``virtual_services``, ``servers``,
    ``failover_services``). With ``return_warnings`` returns ``(config, warnings)``. ``failed``: keys (as
    shown) a reader already reported errors for; validation errors on them are not repeated.
    ``dialect``: the form of the file ("toml" or "lvscf"), for messages that name keys to set.
    """
    b = _Builder(filename, locate)
    if not isinstance(data, dict):
        raise ConfigError([Issue(key="", message="the configuration must be a table", file=filename)])
    data = _normalise_native(data)
    routers = [b.build(Router, t, f"router.{n}", extra={"name": n})
               for n, t in b.items(data.get("routers", {}), "routers", "")]
    virtuals = [_virtual_service(b, vname, vt)
                for vname, vt in b.items(data.get("virtual_services", {}), "virtual_services", "")]
    failovers = [b.build(FailoverService, t, f"failover.{n}", extra={"name": n})
                 for n, t in b.items(data.get("failover_services", {}), "failover_services", "")]
    tracks = [b.build(Track, t, f"track.{n}", extra={"name": n})
              for n, t in b.items(data.get("tracks", {}), "tracks", "")]
    groups = [b.build(Group, t, f"group.{n}", extra={"name": n})
              for n, t in b.items(data.get("groups", {}), "groups", "")]
    top = {k: v for k, v in data.items() if k not in _LISTS}
    cfg = b.build(Config, top, "", extra={"routers": tuple(routers),
                                          "virtual_services": tuple(virtuals),
                                          "failover_services": tuple(failovers),
                                          "tracks": tuple(tracks),
                                          "groups": tuple(groups)})
    errors, warnings = _validated(b, cfg, filename, locate, failed, dialect)
    if errors:
        raise ConfigError(errors)
    return (cfg, warnings) if return_warnings else cfg


def _virtual_service(b: _Builder, vname: str, vt: Any) -> VirtualService:
    """A virtual service with its check and its real servers."""
    vp = f"virtual.{vname}"
    vt = _normalise_native(vt, ("server",)) if isinstance(vt, dict) else vt
    check = b.build(Check, vt.get("check") or {}, f"{vp}.check") if isinstance(vt, dict) else Check()
    servers = []
    if isinstance(vt, dict):
        for sname, st in b.items(vt.get("servers", {}), "servers", vp):
            sp = f"{vp}.server.{sname}"
            scheck = None
            if isinstance(st, dict) and st.get("check") is not None:
                scheck = b.build(Check, _server_check(b, st["check"], check, sp), f"{sp}.check")
            servers.append(b.build(RealServer, st, sp, extra={"name": sname, "check": scheck},
                                   skip={"check"}))
    return b.build(VirtualService, vt, vp, extra={"name": vname, "check": check, "servers": tuple(servers)},
                   skip={"check", "servers"})


def _server_check(b: _Builder, override: Any, check: Check, sp: str) -> Any:
    """A real server's own check table: merged over the virtual service's ``check`` unless it says
    ``inherit = false`` (anything not a table is left for ``build`` to refuse)."""
    if not isinstance(override, dict):
        return override
    override = dict(override)
    inherit = override.pop("inherit", True)
    if not isinstance(inherit, bool):
        b.issue(f"{sp}.check.inherit", f"{_shown(inherit)} must be true (merge over "
                "the virtual service's check) or false (replace it)")
        inherit = True
    if not inherit:
        return override
    merged = {k: v for k, v in to_dict_check(check).items() if v is not None}
    merged.update(override)
    return merged


def _validated(b: _Builder, cfg: Config, filename: str, locate: Locate | None, failed: set[str] | None,
               dialect: str) -> tuple[list[Issue], list[Issue]]:
    """Every issue, the builder's and validate()'s (each at its file line), as (errors, warnings)
    in line order, each once."""
    # validation issues on keys that already failed to convert are noise: drop them
    failed = {i.key for i in b.issues} | (failed or set())
    for issue in validate(cfg, dialect):
        line, shown = locate(issue.key) if locate else (None, issue.key)
        if shown in failed and issue.severity is Severity.ERROR:
            continue
        b.issues.append(dataclasses.replace(issue, file=filename, line=line, key=shown))
    # one mistake reported once (lvs.cf's keepalive is also every check's interval)
    unique = list(dict.fromkeys(b.issues))
    ordered = sorted(unique, key=lambda i: (i.line is None, i.line or 0))
    errors = [i for i in ordered if i.severity is Severity.ERROR]
    warnings = [i for i in ordered if i.severity is Severity.WARNING]
    return errors, warnings


def to_dict_check(chk: Check) -> dict[str, Any]:
    d = {f.name: getattr(chk, f.name) for f in dataclasses.fields(chk)}
    d["kind"] = chk.kind.value
    d["status"] = list(chk.status)
    d["urls"] = [{"path": u.path, "status": list(u.status), **({"digest": u.digest} if u.digest else {}),
                  **({"body_regex": u.body_regex} if u.body_regex is not None else {})} for u in chk.urls]
    return d


# ---------------------------------------------------------------------------------------------
# TOML reading and line finding

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _split_key(text: str) -> list[str] | None:
    """Split a TOML dotted key (``a."b.c".d``) into parts; None if it does not parse."""
    parts: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            break
        if text[i] in "\"'":
            q = text[i]
            j = i + 1
            buf = []
            while j < n and text[j] != q:
                if q == '"' and text[j] == "\\" and j + 1 < n:
                    buf.append(text[j + 1])
                    j += 2
                    continue
                buf.append(text[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            m = _BARE.match(text, i)
            if not m:
                return None
            parts.append(m.group(0))
            i = m.end()
        while i < n and text[i] in " \t":
            i += 1
        if i < n:
            if text[i] != ".":
                return None
            i += 1
    return parts


class TomlLocator:
    """Best-effort line numbers for dotted key paths, by scanning the TOML text."""

    def __init__(self, text: str):
        self.lines: dict[str, int] = {}
        table: list[str] = []
        in_multiline: str | None = None
        for no, raw in enumerate(text.split("\n"), 1):  # TOML's lines: \n only (\r\n stripped)
            line = raw.strip()
            if in_multiline:
                if in_multiline in line:
                    in_multiline = None
                continue
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                inner = line.lstrip("[").split("]", 1)[0]
                parts = _split_key(inner)
                if parts is not None:
                    table = parts
                    self._add(table, no)
                continue
            if "=" in line:
                key = line.split("=", 1)[0]
                parts = _split_key(key)
                if parts:
                    self._add(table + parts, no)
                rest = line.split("=", 1)[1]
                for q in ('"""', "'''"):
                    if rest.count(q) == 1:
                        in_multiline = q

    def _add(self, parts: list[str], no: int) -> None:
        """The line of a key and of each of its prefixes (``[ro0ter.a]`` is where the unknown
        top-level key ``ro0ter`` is)."""
        for i in range(len(parts), 0, -1):
            if self.lines.setdefault(".".join(parts[:i]), no) != no:
                break  # its prefixes were seen at an earlier line too

    def __call__(self, path: str) -> tuple[int | None, str]:
        probe = path
        while probe:
            if probe in self.lines:
                return self.lines[probe], path
            probe = probe.rpartition(".")[0]
        return None, path


def _toml_error_line(exc: tomllib.TOMLDecodeError, text: str) -> int | None:
    m = re.search(r"line (\d+)", str(exc))
    if m:
        return int(m.group(1))
    if "end of document" in str(exc):
        return text.count("\n") + 1
    return None


#: TOML tokens, enough to count nesting, dotted-key parts and number lengths outside strings
#: (possessive quantifiers: linear on any input)
_TOKENS = re.compile(
    r'(?P<str>"""(?:[^"\\]|\\.|"(?!""))*+"""'
    r"|'''(?:[^']|'(?!''))*+'''"
    r'|"(?:[^"\\\n]|\\.)*+"?'
    r"|'[^'\n]*+'?"
    r"|\#[^\n]*+)"
    r"|(?P<open>[\[{])"
    r"|(?P<close>[\]}])"
    r"|(?P<sep>[=,\n])"
    r"|(?P<dot>\.)"
    r"|(?P<word>[A-Za-z0-9_+:-]++)"
    r"""|[^"'#\[\]{}=,\n.A-Za-z0-9_+:-]++""")


def _toml_limit_issue(text: str, filename: str) -> Issue | None:
    """The first place ``text`` goes past MAX_NESTING, MAX_KEY_PARTS or MAX_NUMBER_CHARS, as an
    Issue with its line; None if it does not. Run before tomllib, which recurses on nesting
    (RecursionError), is quadratic in a key's parts, and raises ValueError on long integers."""
    depth = parts = 0
    line = 1
    for m in _TOKENS.finditer(text):
        kind = m.lastgroup
        if kind is None:
            continue
        if kind == "str":
            line += m.group().count("\n")
        elif kind == "open":
            depth += 1
            parts = 0
            if depth > MAX_NESTING:
                return Issue(key="", message=f"arrays or tables nested more than {MAX_NESTING} "
                                             "deep", file=filename, line=line)
        elif kind == "close":
            depth = max(0, depth - 1)
            parts = 0
        elif kind == "sep":
            parts = 0
            if m.group() == "\n":
                line += 1
        elif kind == "dot":
            parts += 1
            if parts >= MAX_KEY_PARTS:
                return Issue(key="", message=f"a dotted key of more than {MAX_KEY_PARTS} parts",
                             file=filename, line=line)
        else:  # word
            word = m.group()
            if len(word) > MAX_NUMBER_CHARS and word.lstrip("+-")[:1].isdigit():
                return Issue(key="", message=f"{_shown(word)} is out of range: a number has at "
                                             f"most {MAX_NUMBER_CHARS} characters", file=filename,
                             line=line)
    return None


#: a cheap first look: dots with no '=' or line end between them, as a dotted key of
#: MAX_KEY_PARTS parts has (strings with many dots match too; the token scan then decides)
_MANY_DOTS = re.compile(r"(?:\.[^.\n=]*+){%d}" % (MAX_KEY_PARTS - 1))


def _nesting(data: Any) -> int:
    """How deep lists and dicts nest in ``data`` (iterative: any depth)."""
    deepest, todo = 0, [(data, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            depth += 1
            deepest = max(deepest, depth)
            todo.extend((v, depth) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def loads_toml(text: str, filename: str = "<toml>") -> LoadedConfig:
    """Parse and validate native TOML text. Raises ConfigError listing every error.

    Refused before tomllib sees them: a text over MAX_CONFIG_BYTES, dotted keys of more than
    MAX_KEY_PARTS parts (tomllib takes time quadratic in them); after: nesting deeper than
    MAX_NESTING (tables count: ``[virtual.x.check]`` is 3 deep), numbers over MAX_NUMBER_CHARS."""
    problem = size_issue(text, filename)
    if problem is None and _MANY_DOTS.search(text):
        problem = _toml_limit_issue(text, filename)
    if problem is not None:
        raise ConfigError([problem])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Issue(key="", message=f"not valid TOML: {exc}", file=filename,
                                 line=_toml_error_line(exc, text))]) from None
    except (RecursionError, ValueError) as exc:  # nesting, or an integer over 4300 digits
        problem = _toml_limit_issue(text, filename) or Issue(
            key="", message=f"not valid TOML: {_shown(str(exc))}", file=filename)
        raise ConfigError([problem]) from None
    if _nesting(data) > MAX_NESTING + MAX_KEY_PARTS:  # tables and dotted keys nest the data too
        problem = _toml_limit_issue(text, filename) or Issue(
            key="", message=f"arrays or tables nested more than {MAX_NESTING} deep", file=filename)
        raise ConfigError([problem])
    locator = TomlLocator(text)
    cfg, warnings = config_from_mapping(data, filename=filename, locate=locator, return_warnings=True)
    return LoadedConfig(config=cfg, warnings=tuple(warnings), source=filename, format="toml",
                        locate=lambda path: (filename, locator(path)[0]))


# ---------------------------------------------------------------------------------------------
# TOML writing

def _toml_str(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        r = repr(v)
        return r if any(c in r for c in ".en") else r + ".0"
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table (a check's urls); None values left out
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _toml_key(k: str) -> str:
    return k if _BARE.fullmatch(k) else _toml_str(k)


def _scalars(d: dict[str, Any]) -> list[str]:
    return [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in d.items()
            if v is not None and not isinstance(v, dict) and (k in _INLINE_LISTS or not (
                isinstance(v, list) and v and isinstance(v[0], dict)))]


#: list-of-tables values written inline (``urls = [{path = "/a"}, ...]``), not as tables of their own
_INLINE_LISTS = frozenset({"urls"})


_CHECK_COMMON = ("kind", "interval", "timeout", "rise", "fall")
_CHECK_RELEVANT = {
    "tcp_connect": (),
    "tcp_send_expect": ("send", "expect", "regex"),
    "http": ("path", "status", "body_regex", "host"),
    "https": ("path", "status", "body_regex", "host"),
    "udp": ("payload", "expect", "regex", "reply_required"),
    "program": ("command", "expect", "regex", "exit_code"),
    "smtp": ("helo_name",),
    "dns": ("dns_type", "dns_name"),
    "ping": (),
    "file": ("file",),
}
_CHECK_DEFAULTS = to_dict_check(Check())


def _check_table(d: dict[str, Any]) -> dict[str, Any]:
    """A check's keys for writing: the common ones, the ones its kind uses, and any other that
    differs from its default (so the text re-loads to an equal model)."""
    relevant = _CHECK_COMMON + _CHECK_RELEVANT.get(d["kind"], ())
    return {k: v for k, v in d.items() if k in relevant or v != _CHECK_DEFAULTS.get(k)}


def _override_table(base: dict[str, Any], check: dict[str, Any]) -> dict[str, Any]:
    """A server's check table: the keys that differ from the virtual's check (it is merged over
    it on reading), or, when an unset (None) value must override a set one, ``inherit = false``
    and the whole check."""
    changed = {k: v for k, v in check.items() if v != base.get(k)}
    if any(v is None for v in changed.values()):
        return {"inherit": False, **_check_table(check)}
    return {"kind": check["kind"], **changed}


_TRACK_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Track) if f.name != "name"}


def _track_table(t: dict[str, Any]) -> dict[str, Any]:
    """A tracked item's keys for writing: its kind and weight, and every other key not at its default."""
    keep = ("kind", "weight")
    return {k: v for k, v in t.items()
            if k != "name" and (k in keep or v != _TRACK_DEFAULTS.get(k) and not (k == "on_routers" and not v))}


def _table(out: list[str], header: list[str], d: dict[str, Any], comment: str | None = None,
           inline: dict[str, dict[str, Any]] | None = None) -> None:
    """``[header]`` and its scalars; ``inline``: keys written as inline tables (``k = {a = 1}``)."""
    if not any(v is not None for v in d.values()) and not inline:
        return
    out.append("")
    if comment:
        out.append(f"# {comment}")
    out.append("[" + ".".join(_toml_key(h) for h in header) + "]")
    out.extend(_scalars(d))
    for key, table in (inline or {}).items():
        out.append(f"{_toml_key(key)} = {{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()) + "}")


def render_toml(cfg: Config, header: str | None = None) -> str:
    """The native TOML text of ``cfg``: every value written (None left out), so ``loads_toml``
    of the result gives an equal Config."""
    d = to_dict(cfg)
    out: list[str] = []
    if header:
        out.extend(f"# {line}" if line else "#" for line in header.splitlines())
    out.extend(_scalars({k: v for k, v in d.items() if k not in _LISTS}))
    for r in d["routers"]:
        _table(out, ["router", r["name"]], {k: v for k, v in r.items() if k != "name"})
    for name, comment in (("heartbeat", "heartbeat between routers; times in seconds"),
                          ("ipvs_timeouts", "IPVS connection timeouts, seconds (0 = kernel default)"),
                          ("sync_daemon", "IPVS connection sync daemon"),
                          ("notify", "commands run on role changes"),
                          ("nat_router", "gateway of the real servers in NAT, moves with the VIPs"),
                          ("web", "the web console (docs/console.md)"),
                          ("scaleout", "active/active routers announcing the VIPs by BGP (docs/scaleout.md)"),
                          ("alerts", "mail and notify FIFO alerts, as keepalived sends them (docs/alerts.md)")):
        if d.get(name) is not None:
            _table(out, [name], d[name], comment)
    for vs in d["virtual_services"]:
        vname = vs["name"]
        _table(out, ["virtual", vname], {k: v for k, v in vs.items()
                                         if k not in ("name", "check", "servers")})
        _table(out, ["virtual", vname, "check"], _check_table(vs["check"]))
        for rs in vs["servers"]:
            _table(out, ["virtual", vname, "server", rs["name"]],
                   {k: v for k, v in rs.items() if k not in ("name", "check")})
            if rs["check"] is not None:
                _table(out, ["virtual", vname, "server", rs["name"], "check"],
                       _override_table(vs["check"], rs["check"]))
    for fs in d["failover_services"]:
        _table(out, ["failover", fs["name"]], {k: v for k, v in fs.items() if k != "name"})
    for t in d["tracks"]:
        _table(out, ["track", t["name"]], _track_table(t))
    for g in d["groups"]:
        _table(out, ["group", g["name"]], {k: v for k, v in g.items() if k not in ("name", "priority")},
               inline={"priority": dict(g["priority"])} if g["priority"] else None)
    return "\n".join(out).lstrip("\n") + "\n"
