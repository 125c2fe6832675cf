"""What a reload changes: the diff between two configs. Pure.

Virtual services are keyed by name, real servers by (virtual service name, real server name): a
service or server whose effective settings are equal in both configs is *unchanged* and keeps its
health state and its kernel entries. Real servers are compared on effective values (a server that
inherits the virtual's port or check changes when the virtual's does).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lvsbus.config.model import Config, FailoverService, VirtualService, effective_check, server_port

__all__ = ["diff", "ConfigDiff", "VirtualServiceChange", "RealServerChange", "Vip"]

#: changing one of these re-creates the IPVS service (delete + add) instead of editing it
_VS_KEY_FIELDS = ("address", "port", "protocol", "fwmark")
_VIP_FIELDS = ("address", "device", "label", "vip_prefixlen", "active")

#: (address, device, label, prefixlen): one address a router adds while active
Vip = tuple[str, "str | None", "str | None", "int | None"]


@dataclass(frozen=True, slots=True)
class RealServerChange:
    name: str
    #: effective fields that differ: address, port, weight, active, upper_threshold,
    #: lower_threshold, check
    fields: tuple[str, ...]

    @property
    def key_changed(self) -> bool:
        """The IPVS destination is a different one (address or port): delete + add."""
        return "address" in self.fields or "port" in self.fields

    @property
    def check_changed(self) -> bool:
        """The health check differs: nanny restarts this server's check from UNKNOWN."""
        return "check" in self.fields or self.key_changed

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fields": list(self.fields), "key_changed": self.key_changed,
                "check_changed": self.check_changed}


@dataclass(frozen=True, slots=True)
class VirtualServiceChange:
    name: str
    #: virtual-service fields that differ (not counting its servers)
    fields: tuple[str, ...]
    servers_added: tuple[str, ...] = ()
    servers_removed: tuple[str, ...] = ()
    servers_changed: tuple[RealServerChange, ...] = ()
    servers_unchanged: tuple[str, ...] = ()

    @property
    def key_changed(self) -> bool:
        """The IPVS service identity (VIP, port, protocol, fwmark) differs: delete + add."""
        return any(f in self.fields for f in _VS_KEY_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "fields": list(self.fields), "key_changed": self.key_changed,
            "servers_added": list(self.servers_added),
            "servers_removed": list(self.servers_removed),
            "servers_changed": [c.to_dict() for c in self.servers_changed],
            "servers_unchanged": list(self.servers_unchanged),
        }


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    virtual_added: tuple[str, ...] = ()
    virtual_removed: tuple[str, ...] = ()
    virtual_changed: tuple[VirtualServiceChange, ...] = ()
    virtual_unchanged: tuple[str, ...] = ()
    failover_added: tuple[str, ...] = ()
    failover_removed: tuple[str, ...] = ()
    failover_changed: tuple[str, ...] = ()
    #: dotted paths: router.NAME (added/removed) or router.NAME.FIELD
    routers_changed: tuple[str, ...] = ()
    #: dotted paths like heartbeat.keepalive
    heartbeat_changed: tuple[str, ...] = ()
    #: other global paths: service, ipvs_timeouts.tcp, sync_daemon.enabled, notify.*, nat_router...
    global_changed: tuple[str, ...] = ()
    #: addresses the active router must add / remove (VIPs of active services, the NAT router)
    vips_added: tuple[Vip, ...] = ()
    vips_removed: tuple[Vip, ...] = ()

    @property
    def needs_vip_moves(self) -> bool:
        return bool(self.vips_added or self.vips_removed)

    @property
    def is_empty(self) -> bool:
        return not (self.virtual_added or self.virtual_removed or self.virtual_changed
                    or self.failover_added or self.failover_removed or self.failover_changed
                    or self.routers_changed or self.heartbeat_changed or self.global_changed
                    or self.vips_added or self.vips_removed)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the config-reloaded event."""
        return {
            "virtual_added": list(self.virtual_added),
            "virtual_removed": list(self.virtual_removed),
            "virtual_changed": [c.to_dict() for c in self.virtual_changed],
            "virtual_unchanged": list(self.virtual_unchanged),
            "failover_added": list(self.failover_added),
            "failover_removed": list(self.failover_removed),
            "failover_changed": list(self.failover_changed),
            "routers_changed": list(self.routers_changed),
            "heartbeat_changed": list(self.heartbeat_changed),
            "global_changed": list(self.global_changed),
            "vips_added": [list(v) for v in self.vips_added],
            "vips_removed": [list(v) for v in self.vips_removed],
            "needs_vip_moves": self.needs_vip_moves,
            "is_empty": self.is_empty,
        }

    def lines(self) -> list[str]:
        """A human summary, one change a line (``lvsbus config diff``)."""
        out: list[str] = []
        out += [f"+ virtual {n}" for n in self.virtual_added]
        out += [f"- virtual {n}" for n in self.virtual_removed]
        for c in self.virtual_changed:
            what = ", ".join(c.fields) if c.fields else "real servers"
            out.append(f"~ virtual {c.name}: {what}" + (" (re-created)" if c.key_changed else ""))
            out += [f"    + server {n}" for n in c.servers_added]
            out += [f"    - server {n}" for n in c.servers_removed]
            out += [f"    ~ server {s.name}: {', '.join(s.fields)}" for s in c.servers_changed]
            if c.servers_unchanged:
                out.append(f"    = servers unchanged: {', '.join(c.servers_unchanged)}")
        out += [f"+ failover {n}" for n in self.failover_added]
        out += [f"- failover {n}" for n in self.failover_removed]
        out += [f"~ failover {n}" for n in self.failover_changed]
        out += [f"~ {p}" for p in self.routers_changed + self.heartbeat_changed + self.global_changed]
        out += [f"+ vip {_vip_str(v)}" for v in self.vips_added]
        out += [f"- vip {_vip_str(v)}" for v in self.vips_removed]
        if self.virtual_unchanged:
            out.append(f"= virtual unchanged: {', '.join(self.virtual_unchanged)}")
        return out


def _vip_str(v: Vip) -> str:
    addr, dev, label, plen = v
    text = addr + (f"/{plen}" if plen is not None else "")
    if label or dev:
        text += f" dev {label or dev}"
    return text


def _field_diff(old: Any, new: Any, skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(old)
                 if f.name not in skip and getattr(old, f.name) != getattr(new, f.name))


def _server_view(vs: VirtualService) -> dict[str, dict[str, Any]]:
    return {
        rs.name: {
            "address": rs.address, "port": server_port(vs, rs), "weight": rs.weight,
            "active": rs.active, "upper_threshold": rs.upper_threshold,
            "lower_threshold": rs.lower_threshold, "check": effective_check(vs, rs),
        }
        for rs in vs.servers
    }


def _vips(cfg: Config) -> list[Vip]:
    out: list[Vip] = []
    services: list[VirtualService | FailoverService] = [*cfg.virtual_services, *cfg.failover_services]
    for s in services:
        if s.active:
            v = (s.address, s.device, s.label, s.vip_prefixlen)
            if v not in out:
                out.append(v)
    if cfg.nat_router is not None:
        nr = cfg.nat_router
        v = (nr.address, nr.device, nr.label, nr.prefixlen)
        if v not in out:
            out.append(v)
    return out


def diff(old: Config, new: Config) -> ConfigDiff:
    """The changes that take ``old`` to ``new``, keyed by name."""
    old_vs = {v.name: v for v in old.virtual_services}
    new_vs = {v.name: v for v in new.virtual_services}
    changed: list[VirtualServiceChange] = []
    unchanged: list[str] = []
    for name, nv in new_vs.items():
        if name in old_vs:
            change = _virtual_change(old_vs[name], nv)
            if change is None:
                unchanged.append(name)
            else:
                changed.append(change)
    old_fs = {f.name: f for f in old.failover_services}
    new_fs = {f.name: f for f in new.failover_services}
    ov, nv_ = _vips(old), _vips(new)
    return ConfigDiff(
        virtual_added=_added(old_vs, new_vs),
        virtual_removed=_added(new_vs, old_vs),
        virtual_changed=tuple(changed),
        virtual_unchanged=tuple(unchanged),
        failover_added=_added(old_fs, new_fs),
        failover_removed=_added(new_fs, old_fs),
        failover_changed=tuple(n for n in new_fs if n in old_fs and old_fs[n] != new_fs[n]),
        routers_changed=_routers_changed(old, new),
        heartbeat_changed=tuple(f"heartbeat.{f}" for f in _field_diff(old.heartbeat, new.heartbeat)),
        global_changed=_globals_changed(old, new),
        vips_added=tuple(v for v in nv_ if v not in ov),
        vips_removed=tuple(v for v in ov if v not in nv_),
    )


def _added(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, ...]:
    """The names in ``new`` that ``old`` has not, in ``new``'s order."""
    return tuple(n for n in new if n not in old)


def _virtual_change(ov: VirtualService, nv: VirtualService) -> VirtualServiceChange | None:
    """How a virtual service kept by name changed (its fields, each of its real servers), or None
    when it did not (servers reordered at most)."""
    fields = _field_diff(ov, nv, skip=("servers",))
    so, sn = _server_view(ov), _server_view(nv)
    s_changed = []
    s_same = []
    for sname, view in sn.items():
        if sname not in so:
            continue
        f = tuple(k for k in view if view[k] != so[sname][k])
        if f:
            s_changed.append(RealServerChange(sname, f))
        else:
            s_same.append(sname)
    s_added, s_removed = _added(so, sn), _added(sn, so)
    if not (fields or s_added or s_removed or s_changed):
        return None
    return VirtualServiceChange(nv.name, fields, s_added, s_removed, tuple(s_changed), tuple(s_same))


def _routers_changed(old: Config, new: Config) -> tuple[str, ...]:
    """``router.NAME`` for each router added, then removed; ``router.NAME.FIELD`` for a changed one."""
    old_r = {r.name: r for r in old.routers}
    new_r = {r.name: r for r in new.routers}
    routers = [f"router.{n}" for n in _added(old_r, new_r) + _added(new_r, old_r)]
    for n, r in new_r.items():
        if n in old_r:
            routers += [f"router.{n}.{f}" for f in _field_diff(old_r[n], r)]
    return tuple(routers)


def _globals_changed(old: Config, new: Config) -> tuple[str, ...]:
    """The other top-level settings that differ: a section's changed fields by dotted path, a
    value (or a section appearing or going) by its name."""
    globals_: list[str] = []
    for f in dataclasses.fields(Config):
        name = f.name
        if name in ("routers", "heartbeat", "virtual_services", "failover_services"):
            continue
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b) and type(a) is type(b):
            globals_ += [f"{name}.{sub}" for sub in _field_diff(a, b)]
        else:
            globals_.append(name)
    return tuple(globals_)
