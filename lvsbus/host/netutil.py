"""Host networking for the shells: local addresses, VIPs (pyroute2), gratuitous ARP and unsolicited
neighbour advertisements (raw sockets), link state.

Everything here is I/O; nothing here decides anything. Functions are synchronous and short (one
netlink request, or one datagram): the asyncio shells call them directly, and run the repeated
ARP announcements in a background task (``announce``).
"""
from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
import threading
from typing import Iterable, Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
BROADCAST = b"\xff" * 6
IFA_F_NODAD = 0x02


class NetError(RuntimeError):
    pass


_local = threading.local()


@contextlib.contextmanager
def _ipr() -> Iterator[IPRoute]:
    """One netlink socket per thread, kept open (a new one costs a few ms).

    pyroute2 0.9's synchronous IPRoute runs its own event loop: it cannot be used on a thread where
    an asyncio loop is running. asyncio shells call these functions through an executor thread."""
    ipr = getattr(_local, "ipr", None)
    if ipr is None:
        ipr = _local.ipr = IPRoute()
    try:
        yield ipr
    except (OSError, NetlinkError):
        raise
    except Exception:
        _local.ipr = None  # a broken socket: make a new one next time
        with contextlib.suppress(Exception):
            ipr.close()
        raise


def local_addresses() -> set[str]:
    """Every address configured on this host (this network namespace), normalised, no prefix."""
    out: set[str] = set()
    with _ipr() as ipr:
        for a in ipr.get_addr():
            addr = a.get("address") or a.get_attr("IFA_ADDRESS")
            if addr:
                out.add(str(ipaddress.ip_address(addr.split("%")[0])))
    return out


def links() -> dict[str, dict]:
    """ifname -> {index, operstate, carrier, mac}."""
    out = {}
    with _ipr() as ipr:
        for link in ipr.get_links():
            name = link.get("ifname")
            out[name] = {
                "index": link["index"],
                "operstate": link.get("operstate"),
                "carrier": link.get("carrier"),
                "mac": link.get("address"),
            }
    return out


def link_up(info: dict | None) -> bool:
    """A link carries traffic: it exists, has carrier and its operstate is UP (or UNKNOWN, as lo)."""
    if info is None:
        return False
    return bool(info.get("carrier", 1)) and info.get("operstate") in ("UP", "UNKNOWN")


def device_of(address: str) -> str | None:
    """The interface that holds ``address``, or None."""
    want = str(ipaddress.ip_address(address))
    with _ipr() as ipr:
        names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
        for a in ipr.get_addr():
            addr = a.get("address")
            if addr and str(ipaddress.ip_address(addr.split("%")[0])) == want:
                return names.get(a["index"])
    return None


def device_for_subnet(address: str) -> str | None:
    """The interface with an address whose subnet contains ``address`` (for a VIP with no device)."""
    ip = ipaddress.ip_address(address)
    with _ipr() as ipr:
        names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
        for a in ipr.get_addr():
            addr = a.get("address")
            if not addr:
                continue
            try:
                net = ipaddress.ip_interface(f"{addr.split('%')[0]}/{a['prefixlen']}").network
            except ValueError:
                continue
            if ip.version == net.version and ip in net and net.prefixlen < net.max_prefixlen:
                return names.get(a["index"])
    return None


def _index(ipr: IPRoute, device: str) -> int:
    found = ipr.link_lookup(ifname=device)
    if not found:
        raise NetError(f"no such interface {device!r}")
    return found[0]


def add_address(address: str, prefixlen: int, device: str, label: str | None = None) -> bool:
    """Add one address (a VIP). Idempotent: True when added, False when it was already there."""
    ip = ipaddress.ip_address(address)
    with _ipr() as ipr:
        idx = _index(ipr, device)
        kwargs: dict = {"index": idx, "address": str(ip), "prefixlen": prefixlen}
        if ip.version == 4:
            if label:
                kwargs["label"] = label
        else:
            kwargs["flags"] = IFA_F_NODAD  # usable at once (no duplicate detection): we own it now
        try:
            ipr.addr("add", **kwargs)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise NetError(f"add {ip}/{prefixlen} on {device}: {exc}") from None
    return True


def del_address(address: str, prefixlen: int, device: str | None) -> bool:
    """Remove one address. Idempotent: True when removed, False when it was not there."""
    ip = ipaddress.ip_address(address)
    with _ipr() as ipr:
        if device is None:
            device = device_of(str(ip))
            if device is None:
                return False
        try:
            idx = _index(ipr, device)
        except NetError:
            return False
        try:
            ipr.addr("del", index=idx, address=str(ip), prefixlen=prefixlen)
        except NetlinkError as exc:
            if exc.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV, errno.ESRCH):
                return False
            raise NetError(f"del {ip}/{prefixlen} on {device}: {exc}") from None
    return True


# ---------------------------------------------------------------------------------------------
# announcements


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def arp_frames(mac: bytes, ip: str) -> list[bytes]:
    """The two gratuitous ARP forms for ``ip`` (as send_arp / arping -U and -A): a request and a
    reply, both broadcast, sender and target protocol address = ``ip``."""
    spa = socket.inet_aton(ip)
    eth = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    head = struct.pack("!HHBB", 1, ETH_P_IP, 6, 4)
    request = eth + head + struct.pack("!H", 1) + mac + spa + b"\x00" * 6 + spa
    reply = eth + head + struct.pack("!H", 2) + mac + spa + BROADCAST + spa
    return [request, reply]


_packet_socks: dict[str, socket.socket] = {}
_packet_lock = threading.Lock()


def _packet_socket(device: str) -> socket.socket:
    """A send-only packet socket on ``device``, kept open for the next announcement.

    Protocol 0 (it receives nothing): binding a packet socket that has a protocol hooks it into
    the receive path, and the kernel waits for an RCU grace period to do so (~16 ms measured
    here, on the takeover's critical path); closing one waits again (8-24 ms), so it is kept."""
    with _packet_lock:
        s = _packet_socks.get(device)
        if s is None:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                s.bind((device, 0))
            except OSError:
                s.close()
                raise
            _packet_socks[device] = s
        return s


def _drop_packet_socket(device: str) -> None:
    with _packet_lock:
        s = _packet_socks.pop(device, None)
    if s is not None:
        s.close()


def send_garp(device: str, ip: str) -> int:
    """One gratuitous ARP request and one reply for ``ip`` out of ``device``. Returns frames sent."""
    for attempt in (1, 2):
        s = _packet_socket(device)
        try:
            mac = s.getsockname()[4]  # the device's address now (read at each call)
            if len(mac) != 6:
                raise NetError(f"{device} has no Ethernet address")
            n = 0
            for frame in arp_frames(mac, ip):
                s.send(frame)
                n += 1
            return n
        except OSError:
            _drop_packet_socket(device)  # the device went away or was re-created: a new socket once
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def na_packet(mac: bytes, ip: str) -> bytes:
    """An unsolicited neighbour advertisement (RFC 4861 7.2.6) for ``ip``: override flag set,
    target link-layer address option. The kernel fills in the ICMPv6 checksum."""
    target = socket.inet_pton(socket.AF_INET6, ip)
    flags = 0x20000000  # O (override); not solicited, not a router
    return struct.pack("!BBHI", 136, 0, 0, flags) + target + struct.pack("!BB", 2, 1) + mac


def send_unsolicited_na(device: str, ip: str) -> int:
    """One unsolicited neighbour advertisement for ``ip`` to ff02::1 out of ``device``."""
    info = links().get(device)
    if info is None or not info.get("mac"):
        raise NetError(f"{device}: no such interface or no Ethernet address")
    mac = _mac_bytes(info["mac"])
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, info["index"])
        try:
            s.bind((ip, 0, 0, info["index"]))
        except OSError:
            pass  # the VIP not yet usable as a source: the kernel picks the link-local one
        s.sendto(na_packet(mac, ip), ("ff02::1", 0, 0, info["index"]))
    return 1


def announce_once(vips: Iterable[dict]) -> list[str]:
    """Announce each VIP once (ARP or NA by family); returns the errors (empty: all sent)."""
    errors = []
    for v in vips:
        device = v.get("device") or device_of(v["address"]) or device_for_subnet(v["address"])
        if device is None:
            errors.append(f"{v['address']}: no device to announce it on")
            continue
        try:
            if v.get("family", "ipv4") == "ipv6" or ":" in v["address"]:
                send_unsolicited_na(device, v["address"])
            else:
                send_garp(device, v["address"])
        except (OSError, NetError) as exc:
            errors.append(f"{v['address']} on {device}: {exc}")
    return errors
