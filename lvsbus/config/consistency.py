"""The routers of a scale-out group, compared: what ``lvsbus check-config A B ...`` refuses when
the files of one group's routers (one file each) would not map a flow to the same real server on
every router (docs/scaleout.md "Configuration"). Pure: no I/O; the files are read by the caller.

With ``[scaleout]`` the upstream spreads flows over the routers by ECMP and moves some of them to
another router when one is lost; IPVS ``mh`` sends a flow to the same real server on every router
only when every router has the same virtual service with the same real servers, weights,
forwarding method, scheduler and scheduler flags. ``mh`` also fills its lookup table walking the
real servers in the order they were added, so for ``mh`` the order counts too (the model keeps
the file's order, and lvsd adds them in it). Compared, for each file against the first:

- the scale-out mode itself (a file with ``[scaleout]`` beside one without is an error) and
  ``scaleout.local_as`` (one AS for the group);
- the active virtual services, matched by their IPVS key (protocol, address, port; or fwmark and
  address family), not by name: one in a file and not in another is a difference;
- for each: scheduler, scheduler flags (``ops`` is IPVS's onepacket flag), forwarding method,
  the active real servers by (address, port), their weights, and with ``mh`` their order;
- the VIPs the routers hold (a fwmark service's VIP is not in its key).

Each difference is an ``Issue`` at the file and line of the item that differs (from
``LoadedConfig.locate``, when the file was loaded with ``locations=True``), naming the other file
and its line.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lvsbus.config.model import (ORDERED_SCHEDULERS, Issue, LoadedConfig, RealServer, VirtualService, host_port,
                                 ip_family, server_port)
from lvsbus.ipvs.table import ServiceKey

__all__ = ["Comparison", "compare_routers", "service_key_text"]

@dataclass(frozen=True, slots=True)
class Comparison:
    """What comparing the files found: ``compared`` is False when no file has ``[scaleout]``
    (routers of an active/backup pair may differ); ``issues``: every difference, as errors."""

    compared: bool
    issues: tuple[Issue, ...] = ()


def service_key_text(vs: VirtualService) -> str:
    """The virtual service's IPVS key as ipvsadm writes it: ``tcp:10.0.0.1:80``, ``fwm:inet:5``."""
    family = "inet6" if ip_family(vs.address) == 6 else "inet"
    if vs.fwmark:
        return str(ServiceKey.mark(vs.fwmark, family))
    return str(ServiceKey.tcp(vs.address, vs.port, vs.protocol.value))


def compare_routers(configs: Sequence[LoadedConfig]) -> Comparison:
    """Compare the configs of one scale-out group's routers, each against the first. Not compared
    (``compared`` False, no issue) when none has ``[scaleout]`` or there is only one."""
    if len(configs) < 2 or all(c.config.scaleout is None for c in configs):
        return Comparison(False)
    ref = configs[0]
    issues: list[Issue] = []
    for other in configs[1:]:
        issues += _compare(ref, other)
    return Comparison(True, tuple(issues))


# ---------------------------------------------------------------------------------------------

class _File:
    """One file's side: where its keys are, and its active virtual services by key."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self.source = loaded.source
        cfg = loaded.config
        self.services: dict[str, VirtualService] = {}
        self.inactive: dict[str, VirtualService] = {}
        for vs in cfg.lvs_services():
            try:
                key = service_key_text(vs)
            except ValueError:  # a validated config has none; nothing to match it by
                continue
            (self.services if vs.active else self.inactive).setdefault(key, vs)

    def where(self, key: str) -> tuple[str, int | None]:
        if self.loaded.locate is None:
            return self.source, None
        file, line = self.loaded.locate(key)
        return (file or self.source), line

    def at(self, key: str) -> str:
        """``FILE:LINE`` (``FILE`` when the line is unknown) of ``key``, for a message."""
        file, line = self.where(key)
        return file if line is None else f"{file}:{line}"

    def issue(self, key: str, message: str) -> Issue:
        file, line = self.where(key)
        return Issue(key=key, message=message, file=file, line=line)


def _vs_key(vs: VirtualService) -> str:
    return f"virtual.{vs.name}"


def _rs_key(vs: VirtualService, rs: RealServer) -> str:
    return f"virtual.{vs.name}.server.{rs.name}"


def _named(vs: VirtualService, other: VirtualService) -> str:
    """How a message names ``other`` beside ``vs``: nothing when the name is the same."""
    return "" if vs.name == other.name else f" (virtual {other.name})"


def _flags(vs: VirtualService) -> tuple[str, ...]:
    """The IPVS service flags as lvsd sets them: the scheduler flags, and onepacket for ``ops``."""
    return tuple(sorted({*vs.scheduler_flags, *(("onepacket",) if vs.ops else ())}))


def _servers(vs: VirtualService) -> list[tuple[str, RealServer]]:
    """The active real servers as IPVS has them, in the config's order: ((address, port), server)."""
    return [(host_port(rs.address, server_port(vs, rs)), rs) for rs in vs.servers if rs.active]


def _compare(a_loaded: LoadedConfig, b_loaded: LoadedConfig) -> list[Issue]:
    """``b`` against the reference ``a``: every difference, at the item in the file that has it."""
    a, b = _File(a_loaded), _File(b_loaded)
    so_a, so_b = a_loaded.config.scaleout, b_loaded.config.scaleout
    if so_a is None or so_b is None:
        if so_b is None:
            return [b.issue("", f"no [scaleout], but {a.at('scaleout')} has it: the routers of a scale-out group "
                                "all run it, one file each (compare an active/backup pair's files with "
                                "'lvsbus config diff')")]
        return [b.issue("scaleout", f"[scaleout] here, none in {a.source}: the routers of a scale-out group all "
                                    "run it, one file each")]
    out: list[Issue] = []
    if so_a.local_as != so_b.local_as:
        out.append(b.issue("scaleout.local_as", f"{so_b.local_as} here, {so_a.local_as} in "
                                                f"{a.at('scaleout.local_as')}: every router of the group "
                                                "uses the same AS"))
    for key, va in a.services.items():
        vb = b.services.get(key)
        if vb is None:
            gone = b.inactive.get(key)
            note = (f" (inactive at {b.at(_vs_key(gone))})" if gone is not None else "")
            out.append(a.issue(_vs_key(va), f"{key} is not a virtual service of {b.source}{note}: every router "
                                             "of a scale-out group needs the same ones"))
            continue
        out += _compare_service(a, va, b, vb)
    for key, vb in b.services.items():
        if key not in a.services:
            gone = a.inactive.get(key)
            note = (f" (inactive at {a.at(_vs_key(gone))})" if gone is not None else "")
            out.append(b.issue(_vs_key(vb), f"{key} is not a virtual service of {a.source}{note}: every router "
                                             "of a scale-out group needs the same ones"))
    out += _compare_vips(a, b)
    return out


def _compare_service(a: _File, va: VirtualService, b: _File, vb: VirtualService) -> list[Issue]:
    """One virtual service on two routers: the scheduler, its flags, the forwarding method, the real
    servers, their weights and (mh) their order. Each issue is at ``b``'s item unless the item is
    in ``a`` only."""
    out: list[Issue] = []
    pa, pb = _vs_key(va), _vs_key(vb)
    there = _named(vb, va)
    if va.scheduler != vb.scheduler:
        out.append(b.issue(f"{pb}.scheduler", f"{vb.scheduler} here, {va.scheduler} in "
                                              f"{a.at(f'{pa}.scheduler')}{there}: every router must send a flow "
                                              "to the same real server"))
    if _flags(va) != _flags(vb):
        fa, fb = (", ".join(_flags(v)) or "none" for v in (va, vb))
        out.append(b.issue(f"{pb}.scheduler_flags", f"scheduler flags {fb} here, {fa} in "
                                                    f"{a.at(f'{pa}.scheduler_flags')}{there}: they change what "
                                                    "the scheduler maps a flow by (mh-port: the ports too)"))
    if va.forwarding != vb.forwarding:
        out.append(b.issue(f"{pb}.forwarding", f"{vb.forwarding.value} here, {va.forwarding.value} in "
                                               f"{a.at(f'{pa}.forwarding')}{there}: a flow moved to "
                                               "another router must reach its real server the same way"))
    sa, sb = _servers(va), _servers(vb)
    by_a, by_b = dict(sa), dict(sb)
    for dest, ra in sa:
        rb = by_b.get(dest)
        if rb is None:
            off = next((r for r in vb.servers if not r.active and host_port(r.address, server_port(vb, r)) == dest), None)
            note = f" (inactive at {b.at(_rs_key(vb, off))})" if off is not None else ""
            out.append(b.issue(pb, f"real server {dest} ({ra.name} at {a.at(_rs_key(va, ra))}) is not in "
                                   f"this virtual service{note}: every router needs the same real servers"))
        elif ra.weight != rb.weight:
            out.append(b.issue(f"{_rs_key(vb, rb)}.weight",
                               f"real server {dest}: weight {rb.weight} here, {ra.weight} in "
                               f"{a.at(f'{_rs_key(va, ra)}.weight')}: mh sends a flow to the same real "
                               "server on every router only when the weights are the same"))
    for dest, rb in sb:
        if dest not in by_a:
            off = next((r for r in va.servers if not r.active and host_port(r.address, server_port(va, r)) == dest), None)
            note = f", inactive at {a.at(_rs_key(va, off))}" if off is not None else ""
            out.append(b.issue(_rs_key(vb, rb), f"real server {dest} is not in {a.source}'s {va.name} "
                                                 f"({a.at(pa)}{note}): every router needs the same real servers"))
    if (va.scheduler in ORDERED_SCHEDULERS and vb.scheduler == va.scheduler
            and set(by_a) == set(by_b) and [d for d, _ in sa] != [d for d, _ in sb]):
        i, (da, db) = next((i, p) for i, p in enumerate(zip((d for d, _ in sa), (d for d, _ in sb)), 1)
                           if p[0] != p[1])
        out.append(b.issue(pb, f"the real servers are in another order than in {a.at(pa)}{there}: number {i} "
                               f"is {db} here, {da} there (IPVS mh fills its lookup table in the order the "
                               "real servers are added, and lvsd adds them in the config's: list them in "
                               "the same order on every router)"))
    return out


def _vips(f: _File) -> dict[str, VirtualService]:
    """The VIPs a scale-out router holds (every active virtual service's address), each with its
    first service."""
    out: dict[str, VirtualService] = {}
    for vs in f.services.values():
        out.setdefault(vs.address, vs)
    return out


def _compare_vips(a: _File, b: _File) -> list[Issue]:
    """VIPs held on one router and not the other, left out when a virtual service missing from one
    side already says so (only a fwmark service's VIP is not in its key)."""
    out: list[Issue] = []
    for mine, theirs in ((a, b), (b, a)):
        vips_theirs = _vips(theirs)
        for vip, vs in _vips(mine).items():
            if vip in vips_theirs:
                continue
            owners = [k for k, v in mine.services.items() if v.address == vip]
            if any(k not in theirs.services for k in owners):
                continue  # reported as a virtual service missing there
            out.append(mine.issue(f"{_vs_key(vs)}.address",
                                  f"VIP {vip} is held here and not by {theirs.source}'s router: every router "
                                  "announces and holds the same VIPs"))
    return out
