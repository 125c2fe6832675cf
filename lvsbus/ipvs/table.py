"""The IPVS table as data: what lvsd desires and what the applier reads back from the kernel.

Pure (no I/O): lvsd's core builds ``Table`` values, the applier's core diffs two of them, and both
travel on the bus as plain dicts (``to_dict`` / ``from_dict``).

Identity:
* a virtual service is keyed by ``ServiceKey``: (family, protocol, address, port) or, for a
  firewall-mark service, (family, fwmark). Its string form is what operators know from ipvsadm:
  ``tcp:10.0.0.1:80``, ``udp:[2001:db8::1]:53``, ``sctp:10.0.0.1:9``, ``fwm:inet:5``.
* a real server (destination) is keyed by (address, port) inside its service: ``10.0.1.2:80``,
  ``[2001:db8::2]:80``.
Everything else (scheduler, persistence, weights, forwarding method, thresholds) is an attribute
that can be edited in place, without removing the entry.
"""
from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field, replace
from errno import EEXIST, ENOENT, ESRCH
from typing import Iterable, Mapping

FAMILIES = ("inet", "inet6")
PROTOCOLS = ("tcp", "udp", "sctp")
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos")
FORWARDING = ("direct", "tunnel", "nat")
#: service flags by name, in the kernel's bit order (a dump names bits 0x8/0x10 after the
#: scheduler: sh-* for every scheduler but mh, as ipvsadm does); "onepacket" is ipvsadm's -o
SERVICE_FLAGS = ("onepacket", "sh-fallback", "sh-port", "mh-fallback", "mh-port")
#: persistence engines (ipvsadm --pe); "" = none
PERSISTENCE_ENGINES = ("", "sip")


@functools.lru_cache(maxsize=65536)
def _ip_version(address: str) -> int:
    """4 or 6; ValueError for what is not an address (not cached). A table of thousands of entries
    names the same addresses again and again (every op, every decode): parsed once each."""
    return ipaddress.ip_address(address).version


@functools.lru_cache(maxsize=65536)
def _canonical(address: str) -> str:
    return str(ipaddress.ip_address(address))


@dataclass(frozen=True, slots=True, order=True)
class ServiceKey:
    family: str  # inet | inet6
    protocol: str  # tcp | udp | sctp | fwmark
    address: str  # "" for fwmark services
    port: int  # 0 for fwmark services (and for persistent all-ports services)
    fwmark: int = 0

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family {self.family!r}: one of {FAMILIES}")
        if self.fwmark:
            if self.protocol != "fwmark" or self.address or self.port:
                raise ValueError("a firewall-mark service has protocol 'fwmark', no address and no port")
            if not 0 < self.fwmark < 2**32:
                raise ValueError(f"fwmark {self.fwmark} out of range 1..4294967295")
        else:
            if self.protocol not in PROTOCOLS:
                raise ValueError(f"protocol {self.protocol!r}: one of {PROTOCOLS}")
            if (_ip_version(self.address) == 6) != (self.family == "inet6"):
                raise ValueError(f"address {self.address} does not match family {self.family}")
            if not 0 <= self.port <= 65535:
                raise ValueError(f"port {self.port} out of range 0..65535")

    @classmethod
    def tcp(cls, address: str, port: int, protocol: str = "tcp") -> "ServiceKey":
        family = "inet6" if ":" in address else "inet"
        return cls(family, protocol, _canonical(address), port)

    @classmethod
    def mark(cls, fwmark: int, family: str = "inet") -> "ServiceKey":
        return cls(family, "fwmark", "", 0, fwmark)

    def __str__(self) -> str:
        if self.fwmark:
            return f"fwm:{self.family}:{self.fwmark}"
        host = f"[{self.address}]" if self.family == "inet6" else self.address
        return f"{self.protocol}:{host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> "ServiceKey":
        return _parse_key(text)

    @classmethod
    def _parse(cls, text: str) -> "ServiceKey":
        kind, _, rest = text.partition(":")
        if kind == "fwm":
            family, _, mark = rest.partition(":")
            return cls.mark(int(mark), family)
        host, _, port = rest.rpartition(":")
        return cls.tcp(host.strip("[]"), int(port), kind)


@functools.lru_cache(maxsize=65536)
def _parse_key(text: str) -> ServiceKey:
    """ServiceKey.parse, once a string (keys are immutable: one shared value is safe)."""
    return ServiceKey._parse(text)


@dataclass(frozen=True, slots=True)
class Service:
    key: ServiceKey
    scheduler: str = "wlc"
    persistence: int = 0  # seconds; 0 = not persistent
    netmask: int = 32  # persistence granularity as a prefix length (ipvsadm -M); 128 for inet6
    flags: tuple[str, ...] = ()  # SERVICE_FLAGS, kept in that order (equal tables compare equal)
    pe: str = ""  # persistence engine ("sip"); "" = none. Left out of the plain-data forms when ""

    @property
    def ops(self) -> bool:
        """One-packet scheduling (ipvsadm ``-o``): the "onepacket" flag."""
        return "onepacket" in self.flags

    @property
    def scheduler_flags(self) -> tuple[str, ...]:
        """The scheduler's own flags (ipvsadm ``-b``): every flag but "onepacket"."""
        return tuple(f for f in self.flags if f != "onepacket")

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler {self.scheduler!r}: one of {', '.join(SCHEDULERS)}")
        if self.flags:
            for f in self.flags:
                if f not in SERVICE_FLAGS:
                    raise ValueError(f"service flag {f!r}: one of {', '.join(SERVICE_FLAGS)}")
            ordered = tuple(sorted(set(self.flags), key=SERVICE_FLAGS.index))
            if ordered != self.flags:
                object.__setattr__(self, "flags", ordered)
        if self.pe not in PERSISTENCE_ENGINES:
            raise ValueError(f"persistence engine {self.pe!r}: one of {', '.join(repr(p) for p in PERSISTENCE_ENGINES)}")
        if not 0 <= self.persistence <= 2**31:
            raise ValueError(f"persistence {self.persistence} out of range")
        limit = 128 if self.key.family == "inet6" else 32
        if not 0 <= self.netmask <= limit:
            raise ValueError(f"netmask /{self.netmask} out of range 0..{limit}")


@dataclass(frozen=True, slots=True)
class Dest:
    address: str
    port: int
    forwarding: str = "nat"
    weight: int = 1
    upper: int = 0  # connection thresholds; 0 = none
    lower: int = 0

    def __post_init__(self) -> None:
        _ip_version(self.address)
        if self.forwarding not in FORWARDING:
            raise ValueError(f"forwarding {self.forwarding!r}: one of {FORWARDING}")
        if not 0 <= self.weight <= 65535:
            raise ValueError(f"weight {self.weight} out of range 0..65535")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")

    @property
    def key(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Entry:
    service: Service
    dests: Mapping[str, Dest] = field(default_factory=dict)  # Dest.key -> Dest


class Table:
    """An immutable IPVS table: ServiceKey -> Entry. Cheap to copy-on-write with ``with_*``."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[ServiceKey, Entry] | None = None) -> None:
        self._entries: dict[ServiceKey, Entry] = dict(entries or {})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Table) and self._entries == other._entries

    def __repr__(self) -> str:
        return f"Table({len(self._entries)} services, {sum(len(e.dests) for e in self._entries.values())} dests)"

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: ServiceKey) -> bool:
        return key in self._entries

    def __getitem__(self, key: ServiceKey) -> Entry:
        return self._entries[key]

    def get(self, key: ServiceKey) -> Entry | None:
        return self._entries.get(key)

    def keys(self) -> Iterable[ServiceKey]:
        return self._entries.keys()

    def items(self) -> Iterable[tuple[ServiceKey, Entry]]:
        return self._entries.items()

    def with_service(self, service: Service, dests: Iterable[Dest] | None = None) -> "Table":
        entries = dict(self._entries)
        old = entries.get(service.key)
        if dests is None:
            d = dict(old.dests) if old else {}
        else:
            d = {x.key: x for x in dests}
        entries[service.key] = Entry(service, d)
        return Table(entries)

    def without_service(self, key: ServiceKey) -> "Table":
        entries = dict(self._entries)
        entries.pop(key, None)
        return Table(entries)

    def with_dest(self, key: ServiceKey, dest: Dest) -> "Table":
        entries = dict(self._entries)
        e = entries[key]
        d = dict(e.dests)
        d[dest.key] = dest
        entries[key] = Entry(e.service, d)
        return Table(entries)

    def without_dest(self, key: ServiceKey, dest_key: str) -> "Table":
        entries = dict(self._entries)
        e = entries[key]
        d = dict(e.dests)
        d.pop(dest_key, None)
        entries[key] = Entry(e.service, d)
        return Table(entries)

    # -- plain data ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        out = {}
        for key in sorted(self._entries):
            e = self._entries[key]
            s = e.service
            out[str(key)] = {
                **service_attrs(s),
                "dests": {
                    dk: {"forwarding": d.forwarding, "weight": d.weight, "upper": d.upper, "lower": d.lower}
                    for dk, d in sorted(e.dests.items())
                },
            }
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "Table":
        entries = {}
        for ks, v in data.items():
            key = ServiceKey.parse(ks)
            svc = service_from_attrs(key, v)
            dests = {}
            for dk, dv in v["dests"].items():
                host, _, port = dk.rpartition(":")
                d = Dest(host.strip("[]"), int(port), dv["forwarding"], dv["weight"], dv.get("upper", 0), dv.get("lower", 0))
                dests[d.key] = d
            entries[key] = Entry(svc, dests)
        return cls(entries)


# ---------------------------------------------------------------------------------------------
# ops: the one change format, shared by lvsd's deltas (lvsd.table_delta) and the applier
# (ipvs.apply): {"op", "service": str(ServiceKey), "dest": Dest.key or None, "attrs": {...}}

SERVICE_OPS = ("add_service", "edit_service", "del_service")
DEST_OPS = ("add_dest", "edit_dest", "del_dest")


def service_attrs(s: Service) -> dict:
    """A service's attributes as plain data (ops and ``Table.to_dict``). ``pe`` only when set: a
    table without one has the same form as before persistence engines existed (old logs replay)."""
    a = {"scheduler": s.scheduler, "persistence": s.persistence, "netmask": s.netmask, "flags": list(s.flags)}
    if s.pe:
        a["pe"] = s.pe
    return a


def service_from_attrs(key: ServiceKey, a: Mapping) -> Service:
    """The inverse of ``service_attrs`` (``flags`` and ``pe`` may be absent: none)."""
    return Service(key, a["scheduler"], a["persistence"], a["netmask"], tuple(a.get("flags", ())), a.get("pe", ""))


def dest_attrs(d: Dest) -> dict:
    return {"forwarding": d.forwarding, "weight": d.weight, "upper": d.upper, "lower": d.lower}


def parse_dest_key(dk: str) -> tuple[str, int]:
    host, _, port = dk.rpartition(":")
    return host.strip("[]"), int(port)


def entry_ops(key: ServiceKey, old: Entry | None, new: Entry | None) -> list[dict]:
    """Ops taking one service from ``old`` to ``new`` (None = absent). Order: the service first,
    then dest additions and edits before deletions (a service never goes empty in between)."""
    ks = str(key)
    if new is None:
        return [] if old is None else [{"op": "del_service", "service": ks, "dest": None, "attrs": {}}]
    ops: list[dict] = []
    if old is None:
        ops.append({"op": "add_service", "service": ks, "dest": None, "attrs": service_attrs(new.service)})
        old_dests: Mapping[str, Dest] = {}
    else:
        old_dests = old.dests
        if old.service != new.service:
            ops.append({"op": "edit_service", "service": ks, "dest": None, "attrs": service_attrs(new.service)})
    for dk in sorted(new.dests):
        d, o = new.dests[dk], old_dests.get(dk)
        if o is None:
            ops.append({"op": "add_dest", "service": ks, "dest": dk, "attrs": dest_attrs(d)})
        elif o != d:
            ops.append({"op": "edit_dest", "service": ks, "dest": dk, "attrs": dest_attrs(d)})
    ops += [{"op": "del_dest", "service": ks, "dest": dk, "attrs": {}} for dk in sorted(old_dests) if dk not in new.dests]
    return ops


class Refused(KeyError):
    """An op the kernel refuses, with its errno as the kernel's IPVS netlink answers it: EEXIST for
    an add of a service or destination present, ESRCH for any other op on a service absent, ENOENT
    for an edit or delete of a destination absent."""

    def __init__(self, message: str, errno: int) -> None:
        super().__init__(message)
        self.errno = errno


def apply_ops(table: Table, ops: Iterable[dict], strict: bool = True) -> Table:
    """The pure simulator: ``ops`` folded into ``table`` as the kernel would. ``strict``: an add of
    something present, or an edit/delete of something absent, raises ``Refused`` (a ``KeyError``:
    the kernel's refusal and its errno); otherwise such an op is skipped."""
    entries = dict(table.items())
    for op in ops:
        try:
            _apply_one(entries, op)
        except KeyError:
            if strict:
                raise
    return Table(entries)


def _apply_one(entries: dict, op: dict) -> None:
    kind = op["op"]
    if kind not in SERVICE_OPS and kind not in DEST_OPS:
        return  # a global op (timeouts, sync daemon): not part of the table
    key = ServiceKey.parse(op["service"])
    a = op["attrs"]
    if kind == "add_service" or kind == "edit_service":
        if (kind == "add_service") == (key in entries):
            if key in entries:
                raise Refused(f"{kind} {key}: exists", EEXIST)
            raise Refused(f"{kind} {key}: no such service", ESRCH)
        svc = service_from_attrs(key, a)
        old = entries.get(key)
        entries[key] = Entry(svc, old.dests if old else {})
        return
    if key not in entries:
        raise Refused(f"{kind} {key}: no such service", ESRCH)
    if kind == "del_service":
        del entries[key]
        return
    e = entries[key]
    dk = op["dest"]
    d = dict(e.dests)
    if kind == "del_dest":
        if dk not in d:
            raise Refused(f"del_dest {key} {dk}: no such destination", ENOENT)
        del d[dk]
    else:
        if (kind == "add_dest") == (dk in d):
            if dk in d:
                raise Refused(f"{kind} {key} {dk}: exists", EEXIST)
            raise Refused(f"{kind} {key} {dk}: no such destination", ENOENT)
        host, port = parse_dest_key(dk)
        nd = Dest(host, port, a["forwarding"], a["weight"], a.get("upper", 0), a.get("lower", 0))
        d[nd.key] = nd
    entries[key] = Entry(e.service, d)


__all__ = [
    "ServiceKey", "Service", "Dest", "Entry", "Table", "SCHEDULERS", "FORWARDING", "PROTOCOLS", "replace",
    "SERVICE_OPS", "DEST_OPS", "SERVICE_FLAGS", "PERSISTENCE_ENGINES", "service_attrs", "service_from_attrs", "dest_attrs", "parse_dest_key", "entry_ops", "apply_ops", "Refused",
]
