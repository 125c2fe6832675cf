"""What the router and its services derive from a config, pure (no I/O): the ``config.loaded``
payload and the VIPs. One copy each, for the real router (``lvsbus/router/supervisor.py``), pulse
(``services/pulse/core.py``) and the simulator (``tools/simulate.py``).
"""
from __future__ import annotations

import ipaddress
from typing import NamedTuple, Sequence

from lvsbus.config.model import Config, FailoverService, VirtualService


def loaded_payload(path: str, fmt: str, digest: str, model: dict, warnings: Sequence, local: str, reload: bool,
                   diff: dict) -> dict:
    """The payload of ``config.loaded``: ``path`` of the file (absolute), its format (``lvscf``
    is written ``lvs.cf``), digest, the model (``to_dict``), its warnings, the local router's name,
    whether it is a reload and its diff (``ConfigDiff.to_dict``), within the schema's bounds."""
    return {
        "path": path[:4096],
        "format": "lvs.cf" if fmt == "lvscf" else fmt,
        "digest": digest,
        "model": model,
        "warnings": [str(w)[:1024] for w in warnings][:1000],
        "local_router": local,
        "reload": reload,
        "diff": diff,
    }


class VipSpec(NamedTuple):
    address: str  # normalised
    prefixlen: int
    family: str  # ipv4 | ipv6
    device: str | None
    label: str | None
    owners: tuple[str, ...]  # the services (and "nat_router") that have this VIP, in config order


def vip_spec(address: str, prefixlen: int | None, device: str | None, label: str | None,
             default_device: str | None) -> VipSpec:
    """One VIP: a missing prefix length is the full one; the device is the configured one, else
    the label's (``eth0:1`` -> ``eth0``), else ``default_device``. ValueError: a bad prefix length."""
    ip = ipaddress.ip_address(address)
    full = 32 if ip.version == 4 else 128
    plen = full if prefixlen is None else int(prefixlen)
    if not 0 <= plen <= full:
        raise ValueError(f"VIP {address}: prefix length {plen} out of range")
    if device is None and label:
        device = label.split(":", 1)[0]
    return VipSpec(str(ip), plen, f"ipv{ip.version}", device or default_device, label or None, ())


#: where a scale-out router holds its VIPs: the loopback device, so the router accepts their
#: traffic (IPVS sees it on LOCAL_IN) without answering ARP on a LAN for them (docs/scaleout.md)
SCALEOUT_DEVICE = "lo"


def config_vips(cfg: Config, default_device: str | None) -> list[VipSpec]:
    """Every VIP the active router holds under ``cfg``, once each (the first service's settings):
    service = lvs, the active virtual services' and nat_router's; service = fos, the active
    failover services'. ``default_device``: the local router's device. In scale-out
    (``[scaleout]``) every router holds the virtual services' VIPs as full-length addresses on
    ``SCALEOUT_DEVICE``, without label, and no nat_router (a gateway cannot be on every router)."""
    vips: dict[str, VipSpec] = {}
    owners: dict[str, list[str]] = {}
    services: list[VirtualService | FailoverService] = [*cfg.lvs_services(), *cfg.fos_services()]
    items: list[tuple[str, str, int | None, str | None, str | None]]
    if cfg.scaleout is not None:
        items = [(s.name, s.address, None, SCALEOUT_DEVICE, None) for s in services if s.active]
    else:
        items = [(s.name, s.address, s.vip_prefixlen, s.device, s.label) for s in services if s.active]
    if cfg.nat_router is not None and cfg.service.value == "lvs" and cfg.scaleout is None:
        n = cfg.nat_router
        items.append(("nat_router", n.address, n.prefixlen, n.device, n.label))
    for owner, address, plen, device, label in items:
        v = vip_spec(address, plen, device, label, default_device)
        vips.setdefault(v.address, v)
        owners.setdefault(v.address, []).append(owner)
    return [v._replace(owners=tuple(owners[a])) for a, v in vips.items()]
