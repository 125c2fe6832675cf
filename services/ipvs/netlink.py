"""The thin netlink layer: the only module of lvsbus that speaks pyroute2's IPVS API.

kernel dump -> ``Table`` (+ timeouts, sync daemons); op dict -> one generic netlink request;
netlink errors -> errno. No policy here (keepalived's ``ipvswrapper.c``).

Messages are built from raw attributes with every field set, never through ``IPVS.service("set")``
and its defaults (it falls back to direct routing, wlc, no flags, timeout 0 for what is left out),
and never with the command "update" (it maps to a delete). pyroute2's ``ipvsmsg`` carries the
daemon and timeout attributes as opaque "hex"; ``lvsmsg`` below declares them, so the sync daemon,
the timeouts and flush are requests of this module too. Reading back uses the raw attributes
(``from_message`` fills only addr, port, protocol, af, sched_name, weight and fwmark).

Encodings (include/uapi/linux/ip_vs.h): forwarding method in the dest's conn flags (masquerading
0, tunnel 2, direct routing 3); persistence is flag 0x1 plus the timeout; the persistence netmask
is an IPv4 mask for inet services and the prefix length in the first byte for inet6 ("128.0.0.0");
a firewall-mark service carries af and netmask but no address, protocol or port.
"""
from __future__ import annotations

import errno as E
import ipaddress
import socket

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, nla
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket
from pyroute2.netlink.generic import ipvs as genl

from lvsbus.ipvs_table import Dest, Entry, Service, ServiceKey, Table

AF = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}
AF_NAME = {v: k for k, v in AF.items()}
PROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "sctp": 132}
PROTO_NAME = {v: k for k, v in PROTO.items()}
FWD = {"nat": 0, "tunnel": 2, "direct": 3}
FWD_NAME = {v: k for k, v in FWD.items()}
F_PERSISTENT = 0x0001
F_HASHED = 0x0002
SVC_FLAGS = {"onepacket": 0x0004, "sh-fallback": 0x0008, "sh-port": 0x0010, "mh-fallback": 0x0008, "mh-port": 0x0010}
DAEMON_STATE = {"master": 1, "backup": 2}
DAEMON_NAME = {v: k for k, v in DAEMON_STATE.items()}

REQ = NLM_F_REQUEST | NLM_F_ACK
CREATE = REQ | NLM_F_CREATE | NLM_F_EXCL
CHANGE = REQ | NLM_F_REPLACE
DUMP = NLM_F_REQUEST | NLM_F_DUMP


class lvsmsg(genl.ipvsmsg):
    """pyroute2's ipvsmsg with the daemon and timeout attributes declared."""

    nla_map = (
        ("IPVS_CMD_ATTR_UNSPEC", "none"),
        ("IPVS_CMD_ATTR_SERVICE", "service"),
        ("IPVS_CMD_ATTR_DEST", "dest"),
        ("IPVS_CMD_ATTR_DAEMON", "daemon"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_UDP", "uint32"),
    )

    class daemon(nla):
        prefix = "IPVS_DAEMON_ATTR_"
        nla_map = (
            ("IPVS_DAEMON_ATTR_UNSPEC", "none"),
            ("IPVS_DAEMON_ATTR_STATE", "uint32"),
            ("IPVS_DAEMON_ATTR_MCAST_IFN", "asciiz"),
            ("IPVS_DAEMON_ATTR_SYNC_ID", "uint32"),
            ("IPVS_DAEMON_ATTR_SYNC_MAXLEN", "uint16"),
            ("IPVS_DAEMON_ATTR_MCAST_GROUP", "ip4addr"),
            ("IPVS_DAEMON_ATTR_MCAST_GROUP6", "ip6addr"),
            ("IPVS_DAEMON_ATTR_MCAST_PORT", "uint16"),
            ("IPVS_DAEMON_ATTR_MCAST_TTL", "uint8"),
        )


class IpvsError(Exception):
    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno


class Unavailable(IpvsError):
    """IPVS cannot be reached at all (no ip_vs in this kernel, or no permission)."""


def _errno(exc: BaseException) -> int:
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code > 0:
        return code
    code = getattr(exc, "errno", None)
    return code if isinstance(code, int) and code > 0 else 0


# ---------------------------------------------------------------------------------------------
# model -> attributes


def _netmask_attr(svc: Service) -> str:
    if svc.key.family == "inet6":
        return f"{svc.netmask}.0.0.0"
    return str(ipaddress.IPv4Network(f"0.0.0.0/{svc.netmask}").netmask)


def key_attrs(key: ServiceKey) -> list:
    if key.fwmark:
        return [("IPVS_SVC_ATTR_AF", AF[key.family]), ("IPVS_SVC_ATTR_FWMARK", key.fwmark)]
    return [
        ("IPVS_SVC_ATTR_AF", AF[key.family]),
        ("IPVS_SVC_ATTR_PROTOCOL", PROTO[key.protocol]),
        ("IPVS_SVC_ATTR_ADDR", key.address),
        ("IPVS_SVC_ATTR_PORT", key.port),
    ]


def service_attrs(svc: Service) -> list:
    flags = F_PERSISTENT if svc.persistence else 0
    for f in svc.flags:
        flags |= SVC_FLAGS[f]
    return key_attrs(svc.key) + [
        ("IPVS_SVC_ATTR_SCHED_NAME", svc.scheduler),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": flags, "mask": 0xFFFF & ~F_HASHED}),
        ("IPVS_SVC_ATTR_TIMEOUT", svc.persistence),
        ("IPVS_SVC_ATTR_NETMASK", _netmask_attr(svc)),
    ]


def dest_attrs(d: Dest) -> list:
    af = socket.AF_INET6 if ":" in d.address else socket.AF_INET
    return [
        ("IPVS_DEST_ATTR_ADDR_FAMILY", af),
        ("IPVS_DEST_ATTR_ADDR", d.address),
        ("IPVS_DEST_ATTR_PORT", d.port),
        ("IPVS_DEST_ATTR_FWD_METHOD", FWD[d.forwarding]),
        ("IPVS_DEST_ATTR_WEIGHT", d.weight),
        ("IPVS_DEST_ATTR_U_THRESH", d.upper),
        ("IPVS_DEST_ATTR_L_THRESH", d.lower),
    ]


def dest_key_attrs(address: str, port: int) -> list:
    af = socket.AF_INET6 if ":" in address else socket.AF_INET
    return [("IPVS_DEST_ATTR_ADDR_FAMILY", af), ("IPVS_DEST_ATTR_ADDR", address), ("IPVS_DEST_ATTR_PORT", port)]


# ---------------------------------------------------------------------------------------------
# attributes -> model


def service_from_nla(s) -> Service:
    af = AF_NAME[s.get_attr("IPVS_SVC_ATTR_AF")]
    mark = s.get_attr("IPVS_SVC_ATTR_FWMARK") or 0
    if mark:
        key = ServiceKey.mark(mark, af)
    else:
        key = ServiceKey(af, PROTO_NAME.get(s.get_attr("IPVS_SVC_ATTR_PROTOCOL"), "tcp"),
                         str(ipaddress.ip_address(s.get_attr("IPVS_SVC_ATTR_ADDR"))), s.get_attr("IPVS_SVC_ATTR_PORT"))
    fl = s.get_attr("IPVS_SVC_ATTR_FLAGS")
    flags = fl["flags"] if fl is not None else 0
    sched = s.get_attr("IPVS_SVC_ATTR_SCHED_NAME") or "wlc"
    names = []
    if flags & 0x0004:
        names.append("onepacket")
    fam = "mh" if sched == "mh" else "sh"
    if flags & 0x0008:
        names.append(f"{fam}-fallback")
    if flags & 0x0010:
        names.append(f"{fam}-port")
    timeout = s.get_attr("IPVS_SVC_ATTR_TIMEOUT") or 0
    persistence = timeout if flags & F_PERSISTENT else 0
    nm = s.get_attr("IPVS_SVC_ATTR_NETMASK") or ("128.0.0.0" if af == "inet6" else "255.255.255.255")
    if af == "inet6":
        netmask = int(nm.split(".")[0])
    else:
        netmask = ipaddress.IPv4Network(f"0.0.0.0/{nm}").prefixlen
    return Service(key, sched, persistence, netmask, tuple(names))


def dest_from_nla(d) -> Dest:
    return Dest(
        str(ipaddress.ip_address(d.get_attr("IPVS_DEST_ATTR_ADDR"))),
        d.get_attr("IPVS_DEST_ATTR_PORT"),
        FWD_NAME.get((d.get_attr("IPVS_DEST_ATTR_FWD_METHOD") or 0) & 0x7, "nat"),
        d.get_attr("IPVS_DEST_ATTR_WEIGHT") or 0,
        d.get_attr("IPVS_DEST_ATTR_U_THRESH") or 0,
        d.get_attr("IPVS_DEST_ATTR_L_THRESH") or 0,
    )


# ---------------------------------------------------------------------------------------------
# the socket


class Ipvs:
    """One generic netlink socket bound to the IPVS family. Raises ``Unavailable`` when the
    kernel has no IPVS (the family is unknown) or the caller may not use it."""

    def __init__(self) -> None:
        self.sock = GenericNetlinkSocket()
        try:
            self.sock.bind(genl.GENL_NAME, lvsmsg)
        except Exception as exc:  # NetlinkError(ENOENT) "family not found", PermissionError...
            self.sock.close()
            code = _errno(exc) or E.ENOENT
            raise Unavailable(code, f"IPVS generic netlink family not available: {exc}") from exc

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Ipvs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, cmd: int, attrs: list, flags: int = REQ) -> list:
        msg = lvsmsg()
        msg["cmd"] = cmd
        msg["version"] = genl.GENL_VERSION
        msg["attrs"] = attrs
        try:
            return list(self.sock.nlm_request(msg, msg_type=self.sock.prid, msg_flags=flags))
        except NetlinkError as exc:
            raise IpvsError(exc.code, f"{os_strerror(exc.code)}") from exc

    # -- reading ---------------------------------------------------------------------------

    def dump(self) -> Table:
        entries = {}
        for m in self._request(genl.IPVS_CMD_GET_SERVICE, [], DUMP):
            s = m.get_attr("IPVS_CMD_ATTR_SERVICE")
            if s is None:
                continue
            svc = service_from_nla(s)
            dests = {}
            for dm in self._request(genl.IPVS_CMD_GET_DEST, [("IPVS_CMD_ATTR_SERVICE", {"attrs": key_attrs(svc.key)})], DUMP):
                d = dm.get_attr("IPVS_CMD_ATTR_DEST")
                if d is not None:
                    dest = dest_from_nla(d)
                    dests[dest.key] = dest
            entries[svc.key] = Entry(svc, dests)
        return Table(entries)

    def timeouts(self) -> dict:
        m = self._request(genl.IPVS_CMD_GET_CONFIG, [], REQ)[0]
        return {
            "tcp": m.get_attr("IPVS_CMD_ATTR_TIMEOUT_TCP") or 0,
            "tcpfin": m.get_attr("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN") or 0,
            "udp": m.get_attr("IPVS_CMD_ATTR_TIMEOUT_UDP") or 0,
        }

    def daemons(self) -> list[dict]:
        out = []
        for m in self._request(genl.IPVS_CMD_GET_DAEMON, [], DUMP):
            d = m.get_attr("IPVS_CMD_ATTR_DAEMON")
            if d is None:
                continue
            out.append({
                "state": DAEMON_NAME.get(d.get_attr("IPVS_DAEMON_ATTR_STATE"), "master"),
                "ifname": d.get_attr("IPVS_DAEMON_ATTR_MCAST_IFN") or "",
                "syncid": d.get_attr("IPVS_DAEMON_ATTR_SYNC_ID") or 0,
            })
        return sorted(out, key=lambda x: x["state"])

    # -- writing ---------------------------------------------------------------------------

    def apply(self, op: dict) -> None:
        """Carry out one op dict (``services.ipvs.core`` shape). Raises ``IpvsError`` with the errno."""
        kind = op["op"]
        a = op["attrs"]
        if kind == "set_timeouts":
            self._request(genl.IPVS_CMD_SET_CONFIG, [
                ("IPVS_CMD_ATTR_TIMEOUT_TCP", a["tcp"]),
                ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", a["tcpfin"]),
                ("IPVS_CMD_ATTR_TIMEOUT_UDP", a["udp"]),
            ])
            return
        if kind == "start_daemon":
            self._request(genl.IPVS_CMD_NEW_DAEMON, [("IPVS_CMD_ATTR_DAEMON", {"attrs": [
                ("IPVS_DAEMON_ATTR_STATE", DAEMON_STATE[a["state"]]),
                ("IPVS_DAEMON_ATTR_MCAST_IFN", a["ifname"]),
                ("IPVS_DAEMON_ATTR_SYNC_ID", a["syncid"]),
            ]})])
            return
        if kind == "stop_daemon":
            self._request(genl.IPVS_CMD_DEL_DAEMON, [("IPVS_CMD_ATTR_DAEMON", {"attrs": [
                ("IPVS_DAEMON_ATTR_STATE", DAEMON_STATE[a["state"]])]})])
            return
        key = ServiceKey.parse(op["service"])
        if kind in ("add_service", "edit_service"):
            svc = Service(key, a["scheduler"], a["persistence"], a["netmask"], tuple(a.get("flags", ())))
            cmd, flags = (genl.IPVS_CMD_NEW_SERVICE, CREATE) if kind == "add_service" else (genl.IPVS_CMD_SET_SERVICE, CHANGE)
            self._request(cmd, [("IPVS_CMD_ATTR_SERVICE", {"attrs": service_attrs(svc)})], flags)
            return
        if kind == "del_service":
            self._request(genl.IPVS_CMD_DEL_SERVICE, [("IPVS_CMD_ATTR_SERVICE", {"attrs": key_attrs(key)})])
            return
        host, _, port = op["dest"].rpartition(":")
        host = host.strip("[]")
        svc_key = ("IPVS_CMD_ATTR_SERVICE", {"attrs": key_attrs(key)})
        if kind == "del_dest":
            self._request(genl.IPVS_CMD_DEL_DEST, [svc_key, ("IPVS_CMD_ATTR_DEST", {"attrs": dest_key_attrs(host, int(port))})])
            return
        d = Dest(host, int(port), a["forwarding"], a["weight"], a.get("upper", 0), a.get("lower", 0))
        cmd, flags = (genl.IPVS_CMD_NEW_DEST, CREATE) if kind == "add_dest" else (genl.IPVS_CMD_SET_DEST, CHANGE)
        self._request(cmd, [svc_key, ("IPVS_CMD_ATTR_DEST", {"attrs": dest_attrs(d)})], flags)

    def flush(self) -> None:
        self._request(genl.IPVS_CMD_FLUSH, [])


def os_strerror(code: int) -> str:
    import os

    try:
        return os.strerror(code)
    except ValueError:
        return f"errno {code}"


__all__ = ["Ipvs", "IpvsError", "Unavailable", "lvsmsg"]
