"""The thin netlink layer: the only module of lvsbus that speaks pyroute2's IPVS API.

kernel dump -> ``Table`` (+ timeouts, sync daemons); op dict -> one generic netlink request;
netlink errors -> errno. No policy here (keepalived's ``ipvswrapper.c``).

Messages are built from raw attributes with every field set, never through ``IPVS.service("set")``
and its defaults (it falls back to direct routing, wlc, no flags, timeout 0 for what is left out),
and never with the command "update" (it maps to a delete). pyroute2's ``ipvsmsg`` carries the
daemon and timeout attributes as opaque "hex"; ``lvsmsg`` below declares them. Reading back parses
the raw attributes (``from_message`` fills only addr, port, protocol, af, sched_name, weight and
fwmark). pyroute2 resolves the IPVS generic netlink family; the requests themselves are encoded
here (byte for byte what pyroute2's ``lvsmsg`` encodes, a host test checks it) because pyroute2's
encoder costs ~260 us an op (5+ ms under qemu TCG) and its sync API sends one request a call:
here an apply batch goes out in 32 KiB sends and each op still gets its own ack and errno.

Encodings (include/uapi/linux/ip_vs.h): forwarding method in the dest's conn flags (masquerading
0, tunnel 2, direct routing 3); persistence is flag 0x1 plus the timeout; one-packet scheduling
flag 0x4, scheduler flags 0x8/0x10; the persistence engine's name (``sip``) attribute 11; the persistence netmask
is an IPv4 mask for inet services and the prefix length in the first byte for inet6 ("128.0.0.0");
a firewall-mark service carries af and netmask but no address, protocol or port.
"""
from __future__ import annotations

import errno as E
import functools
import ipaddress
import socket
import struct

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, nla
from pyroute2.netlink.generic import GenericNetlinkSocket
from pyroute2.netlink.generic import ipvs as genl

from lvsbus.ipvs.stats import service_row
from lvsbus.ipvs.table import Dest, Entry, Service, ServiceKey, Table
from lvsbus.ipvs.table import service_from_attrs as service_from_op_attrs

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
    attrs = key_attrs(svc.key) + [
        ("IPVS_SVC_ATTR_SCHED_NAME", svc.scheduler),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": flags, "mask": 0xFFFF & ~F_HASHED}),
        ("IPVS_SVC_ATTR_TIMEOUT", svc.persistence),
        ("IPVS_SVC_ATTR_NETMASK", _netmask_attr(svc)),
    ]
    if svc.pe:  # absent = none: a "set" without it takes the engine off (ip_vs_edit_service)
        attrs.append(("IPVS_SVC_ATTR_PE_NAME", svc.pe))
    return attrs


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
# wire encoding (hand-rolled: pyroute2's nla encoder costs ~260 us an op natively, 5+ ms under
# TCG; this one ~10 us). Attribute numbers: include/uapi/linux/ip_vs.h.

NLMSG_ERROR, NLMSG_DONE = 2, 3
SOL_NETLINK, NETLINK_CAP_ACK = 270, 10
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
CMD_ATTR = {"IPVS_CMD_ATTR_SERVICE": 1, "IPVS_CMD_ATTR_DEST": 2, "IPVS_CMD_ATTR_DAEMON": 3,
            "IPVS_CMD_ATTR_TIMEOUT_TCP": 4, "IPVS_CMD_ATTR_TIMEOUT_TCP_FIN": 5, "IPVS_CMD_ATTR_TIMEOUT_UDP": 6}
SVC_ATTR = {"IPVS_SVC_ATTR_AF": (1, "H"), "IPVS_SVC_ATTR_PROTOCOL": (2, "H"), "IPVS_SVC_ATTR_ADDR": (3, "addr"),
            "IPVS_SVC_ATTR_PORT": (4, ">H"), "IPVS_SVC_ATTR_FWMARK": (5, "I"), "IPVS_SVC_ATTR_SCHED_NAME": (6, "z"),
            "IPVS_SVC_ATTR_FLAGS": (7, "flags"), "IPVS_SVC_ATTR_TIMEOUT": (8, "I"), "IPVS_SVC_ATTR_NETMASK": (9, "ip4"),
            "IPVS_SVC_ATTR_PE_NAME": (11, "z")}
DEST_ATTR = {"IPVS_DEST_ATTR_ADDR": (1, "addr"), "IPVS_DEST_ATTR_PORT": (2, ">H"), "IPVS_DEST_ATTR_FWD_METHOD": (3, "I"),
             "IPVS_DEST_ATTR_WEIGHT": (4, "I"), "IPVS_DEST_ATTR_U_THRESH": (5, "I"), "IPVS_DEST_ATTR_L_THRESH": (6, "I"),
             "IPVS_DEST_ATTR_ADDR_FAMILY": (11, "H")}
DAEMON_ATTR = {"IPVS_DAEMON_ATTR_STATE": (1, "I"), "IPVS_DAEMON_ATTR_MCAST_IFN": (2, "z"), "IPVS_DAEMON_ATTR_SYNC_ID": (3, "I")}
NESTED = {"IPVS_CMD_ATTR_SERVICE": SVC_ATTR, "IPVS_CMD_ATTR_DEST": DEST_ATTR, "IPVS_CMD_ATTR_DAEMON": DAEMON_ATTR}


def _nla(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("HH", n, kind) + payload + b"\0" * (-n % 4)


@functools.lru_cache(maxsize=65536)
def _packed(address: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)


_parse_key = functools.lru_cache(maxsize=65536)(ServiceKey.parse)


def _value(fmt: str, v) -> bytes:
    if fmt == "addr":
        return _packed(v)
    if fmt == "z":
        return v.encode() + b"\0"
    if fmt == "flags":
        return struct.pack("II", v["flags"], v["mask"])
    if fmt == "ip4":
        return socket.inet_aton(v)
    return struct.pack(fmt, v)


def encode_attrs(attrs: list) -> bytes:
    out = []
    for name, value in attrs:
        if name in NESTED:
            table = NESTED[name]
            inner = b"".join(_nla(table[n][0], _value(table[n][1], v)) for n, v in value["attrs"])
            out.append(_nla(CMD_ATTR[name], inner))
        else:
            out.append(_nla(CMD_ATTR[name], struct.pack("I", value)))
    return b"".join(out)


def parse_attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    out = {}
    while off + 4 <= end:
        n, kind = struct.unpack_from("HH", buf, off)
        if n < 4:
            break
        out[kind & 0x3FFF] = bytes(buf[off + 4:off + n])
        off += (n + 3) & ~3
    return out


def _u32(a: dict, k: int, default: int = 0) -> int:
    v = a.get(k)
    return struct.unpack("I", v[:4])[0] if v else default


def _addr(raw: bytes, af: int) -> str:
    return str(ipaddress.ip_address(raw[:4] if af == socket.AF_INET else raw[:16]))


def service_from_attrs(a: dict) -> Service:
    afn = struct.unpack("H", a[1][:2])[0]
    af = AF_NAME[afn]
    mark = _u32(a, 5)
    if mark:
        key = ServiceKey.mark(mark, af)
    else:
        proto = struct.unpack("H", a[2][:2])[0]
        key = ServiceKey(af, PROTO_NAME.get(proto, "tcp"), _addr(a[3], afn), struct.unpack(">H", a[4][:2])[0])
    sched = a.get(6, b"wlc\0").split(b"\0")[0].decode() or "wlc"
    flags = struct.unpack("II", a[7][:8])[0] if 7 in a else 0
    names = []
    if flags & 0x0004:
        names.append("onepacket")
    fam = "mh" if sched == "mh" else "sh"
    if flags & 0x0008:
        names.append(f"{fam}-fallback")
    if flags & 0x0010:
        names.append(f"{fam}-port")
    timeout = _u32(a, 8)
    nm = a.get(9)
    if af == "inet6":
        netmask = nm[0] if nm else 128
    else:
        netmask = ipaddress.IPv4Network(f"0.0.0.0/{socket.inet_ntoa(nm[:4])}").prefixlen if nm else 32
    pe = a.get(11, b"").split(b"\0")[0].decode(errors="replace")
    return Service(key, sched, timeout if flags & F_PERSISTENT else 0, netmask, tuple(names), pe)


def dest_from_attrs(a: dict, svc_af: int) -> Dest:
    af = struct.unpack("H", a[11][:2])[0] if 11 in a else svc_af
    return Dest(_addr(a[1], af), struct.unpack(">H", a[2][:2])[0], FWD_NAME.get(_u32(a, 3) & 0x7, "nat"),
                _u32(a, 4), _u32(a, 5), _u32(a, 6))


# stats: IPVS_SVC_ATTR_STATS 10 / STATS64 12, IPVS_DEST_ATTR_STATS 10 / STATS64 12, dest
# ACTIVE_CONNS 7 / INACT_CONNS 8; inside, IPVS_STATS_ATTR_CONNS 1 .. OUTBPS 10 (PAD 11). In the
# 32-bit form inbytes and outbytes (4, 5) are u64, the rest u32; in STATS64 every figure is u64.
SVC_STATS, SVC_STATS64 = 10, 12
DEST_STATS, DEST_STATS64, DEST_ACTIVE, DEST_INACT = 10, 12, 7, 8


def stats_figures(a: dict, k32: int, k64: int) -> tuple:
    """The 10 figures (conns, inpkts, outpkts, inbytes, outbytes, cps, inpps, outpps, inbps,
    outbps) of a service's or dest's attributes; zeros for what the kernel did not send."""
    raw = a.get(k64)
    wide = raw is not None
    if raw is None:
        raw = a.get(k32)
    if raw is None:
        return (0,) * 10
    s = parse_attrs(raw, 0, len(raw))
    out = []
    for i in range(1, 11):
        v = s.get(i)
        if not v:
            out.append(0)
        elif wide or i in (4, 5):
            out.append(struct.unpack("Q", v[:8])[0] if len(v) >= 8 else struct.unpack("I", v[:4])[0])
        else:
            out.append(struct.unpack("I", v[:4])[0])
    return tuple(out)


def stats_row(figures10: tuple, active: int, inactive: int) -> tuple:
    return tuple(figures10) + (active, inactive)


# ---------------------------------------------------------------------------------------------
# the socket


class Ipvs:
    """One generic netlink socket for the IPVS family. pyroute2 resolves the family (and raises
    when the kernel has none: ``Unavailable``); requests go out as hand-encoded messages on a
    plain netlink socket, many in one send, each acknowledged with its own errno.

    Batching (``apply_many``): requests go out in sends of at most ``CHUNK_BYTES``, each message
    with its own sequence number and NLM_F_ACK, with at most ``window`` of them unacknowledged;
    every ack (NLMSG_ERROR, errno 0 = done) is matched to its op by sequence number, so a refused
    op names itself with its own errno. The kernel handles a send's messages in turn inside the
    send itself and queues one ack each on our socket: the window keeps those acks within the
    receive buffer (``SO_RCVBUFFORCE`` when allowed, else ``SO_RCVBUF`` capped by
    net.core.rmem_max). Should acks be lost all the same (ENOBUFS: the socket overran), every op
    of the send whose ack did not come is reported ENOBUFS (its outcome unknown: the applier
    dumps the kernel again, as after any failure)."""

    CHUNK_BYTES = 32 * 1024
    RCVBUF = 4 * 1024 * 1024
    ACK_BYTES = 1024  # what one queued ack costs the receive buffer (skb truesize), rounded up
    MAX_WINDOW = 1024

    def __init__(self, sock: socket.socket | None = None, family: int | None = None) -> None:
        if family is None:
            try:
                with GenericNetlinkSocket() as g:
                    g.bind(genl.GENL_NAME, lvsmsg)
                    family = g.prid
            except Exception as exc:  # NetlinkError(ENOENT) "family not found", PermissionError...
                code = _errno(exc) or E.ENOENT
                raise Unavailable(code, f"IPVS generic netlink family not available: {exc}") from exc
        self.family = family
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)  # NETLINK_GENERIC
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.RCVBUF)  # root / CAP_NET_ADMIN
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF)
            try:  # a refused request's ack carries its header only, not the whole request
                sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            except OSError:
                pass
            sock.bind((0, 0))
        self.sock = sock
        rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.window = max(1, min(self.MAX_WINDOW, rcvbuf // self.ACK_BYTES // 2))
        self._buf = bytearray(1 << 20)
        self._view = memoryview(self._buf)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Ipvs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _msg(self, cmd: int, attrs: list, flags: int) -> tuple[int, bytes]:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        body = struct.pack("BBH", cmd, genl.GENL_VERSION, 0) + encode_attrs(attrs)
        return self.seq, struct.pack("IHHII", 16 + len(body), self.family, flags, self.seq, 0) + body

    def _recv(self, flags: int = 0):
        """Yield (type, flags, seq, buf, payload offset, end) for every message of one datagram.
        ``buf`` is reused by the next call: copy what must outlive it."""
        n = self.sock.recv_into(self._buf, len(self._buf), flags)
        buf = self._buf
        off = 0
        while off + 16 <= n:
            size, typ, mflags, seq, _pid = struct.unpack_from("IHHII", buf, off)
            if size < 16 or off + size > n:
                break
            yield typ, mflags, seq, buf, off + 16, off + size
            off += (size + 3) & ~3

    def _requests(self, msgs: list[tuple[int, bytes]]) -> dict[int, int]:
        """Send acked requests, many a send and at most ``window`` unacknowledged; return
        {seq: errno (0 = done)}, one entry per request."""
        results: dict[int, int] = {}
        i = 0
        while i < len(msgs):
            j, size = i, 0
            while j < len(msgs) and j - i < self.window and (j == i or size + len(msgs[j][1]) <= self.CHUNK_BYTES):
                size += len(msgs[j][1])
                j += 1
            self.sock.send(b"".join(m for _s, m in msgs[i:j]))
            want = {s for s, _m in msgs[i:j]}
            try:
                while want:
                    for typ, _f, seq, buf, off, _end in self._recv():
                        if typ == NLMSG_ERROR and seq in want:
                            results[seq] = -struct.unpack_from("i", buf, off)[0]
                            want.discard(seq)
            except OSError as exc:
                if exc.errno != E.ENOBUFS:
                    raise
                # the kernel dropped acks (our receive buffer overran): it handled the whole send
                # before returning, so what is queued now is all that will come
                self._collect_queued(want, results)
                for seq in want:
                    results[seq] = E.ENOBUFS
            i = j
        return results

    def _collect_queued(self, want: set, results: dict[int, int]) -> None:
        while want:
            try:
                for typ, _f, seq, buf, off, _end in self._recv(socket.MSG_DONTWAIT):
                    if typ == NLMSG_ERROR and seq in want:
                        results[seq] = -struct.unpack_from("i", buf, off)[0]
                        want.discard(seq)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno != E.ENOBUFS:
                    raise

    def _request(self, cmd: int, attrs: list, flags: int = REQ) -> None:
        seq, m = self._msg(cmd, attrs, flags)
        code = self._requests([(seq, m)])[seq]
        if code:
            raise IpvsError(code, os_strerror(code))

    def _dump(self, cmd: int, attrs: list, flags: int = DUMP) -> list[dict[int, bytes]]:
        """Every reply's top-level attributes, until NLMSG_DONE."""
        seq, m = self._msg(cmd, attrs, flags)
        self.sock.send(m)
        out = []
        while True:
            for typ, _f, rseq, buf, off, end in self._recv():
                if rseq != seq:
                    continue
                if typ == NLMSG_DONE:
                    return out
                if typ == NLMSG_ERROR:
                    code = -struct.unpack_from("i", buf, off)[0]
                    if code:
                        raise IpvsError(code, os_strerror(code))
                    return out
                out.append(parse_attrs(buf, off + 4, end))  # past the genl header
                if not flags & NLM_F_DUMP:
                    return out

    # -- reading ---------------------------------------------------------------------------

    def dump(self) -> Table:
        entries = {}
        for top in self._dump(genl.IPVS_CMD_GET_SERVICE, []):
            if 1 not in top:
                continue
            sa = parse_attrs(top[1], 0, len(top[1]))
            svc = service_from_attrs(sa)
            af = struct.unpack("H", sa[1][:2])[0]
            dests = {}
            for dtop in self._dump(genl.IPVS_CMD_GET_DEST, [("IPVS_CMD_ATTR_SERVICE", {"attrs": key_attrs(svc.key)})]):
                if 2 in dtop:
                    d = dest_from_attrs(parse_attrs(dtop[2], 0, len(dtop[2])), af)
                    dests[d.key] = d
            entries[svc.key] = Entry(svc, dests)
        return Table(entries)

    def stats(self) -> dict:
        """The traffic figures of every service and real server: ``lvsbus.ipvs.stats`` Sample
        {service key: (row, {dest key: row})} (``stats_by_service``, all of it)."""
        return dict(self.stats_by_service())

    def stats_by_service(self):
        """Yield (service key, (row, {dest key: row})) a service at a time: one dump of the
        services, then one dump request per service for its real servers, made when the next item
        is asked for (a caller with better things to do stops asking). 64-bit figures
        (IPVS_*_ATTR_STATS64, kernel 4.1+) when the kernel sends them, else the 32-bit ones; a
        service deleted between the two dumps is left out."""
        for top in self._dump(genl.IPVS_CMD_GET_SERVICE, []):
            if 1 not in top:
                continue
            sa = parse_attrs(top[1], 0, len(top[1]))
            key = service_from_attrs(sa).key
            af = struct.unpack("H", sa[1][:2])[0]
            dests = {}
            try:
                dtops = self._dump(genl.IPVS_CMD_GET_DEST, [("IPVS_CMD_ATTR_SERVICE", {"attrs": key_attrs(key)})])
            except IpvsError as exc:
                if exc.errno == E.ESRCH:  # deleted since the service dump: not in this sample
                    continue
                raise
            for dtop in dtops:
                if 2 in dtop:
                    da = parse_attrs(dtop[2], 0, len(dtop[2]))
                    d = dest_from_attrs(da, af)
                    dests[d.key] = stats_row(stats_figures(da, DEST_STATS, DEST_STATS64), _u32(da, DEST_ACTIVE), _u32(da, DEST_INACT))
            yield str(key), (service_row(stats_figures(sa, SVC_STATS, SVC_STATS64), list(dests.values())), dests)

    def zero(self, key: ServiceKey | None = None) -> None:
        """IPVS_CMD_ZERO: every counter of ``key`` (its real servers too), or of every service and
        the totals (``ipvsadm -Z``). Raises ``IpvsError`` (ESRCH: no such service)."""
        attrs = [] if key is None else [("IPVS_CMD_ATTR_SERVICE", {"attrs": key_attrs(key)})]
        self._request(genl.IPVS_CMD_ZERO, attrs)

    def timeouts(self) -> dict:
        (top,) = self._dump(genl.IPVS_CMD_GET_CONFIG, [], REQ)
        return {"tcp": _u32(top, 4), "tcpfin": _u32(top, 5), "udp": _u32(top, 6)}

    def daemons(self) -> list[dict]:
        out = []
        for top in self._dump(genl.IPVS_CMD_GET_DAEMON, []):
            if 3 not in top:
                continue
            d = parse_attrs(top[3], 0, len(top[3]))
            out.append({
                "state": DAEMON_NAME.get(_u32(d, 1), "master"),
                "ifname": d.get(2, b"").split(b"\0")[0].decode(),
                "syncid": _u32(d, 3),
            })
        return sorted(out, key=lambda x: x["state"])

    # -- writing ---------------------------------------------------------------------------

    def apply(self, op: dict) -> None:
        """Carry out one op dict (``lvsbus_services.ipvs.core`` shape). Raises ``IpvsError`` with the errno."""
        cmd, attrs, flags = op_request(op)
        self._request(cmd, attrs, flags)

    def op_msg(self, op: dict) -> tuple[int, bytes]:
        """(seq, message) of one op: real-server ops (most of a batch) from cached pieces
        (``op_body``), the rest through ``op_request``; the same bytes either way (tested)."""
        body = op_body(op)
        if body is None:
            return self._msg(*op_request(op))
        cmd, flags, attrs = body
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return self.seq, _HDR.pack(20 + len(attrs), self.family, flags, self.seq, 0, cmd, genl.GENL_VERSION, 0) + attrs

    def apply_many(self, ops: list[dict]) -> list[int]:
        """Carry out ops in order, many per send; the errno of each (0 = applied). The kernel
        handles every message of a send in turn, failed or not, as separate requests would."""
        msgs = [self.op_msg(op) for op in ops]
        res = self._requests(msgs)
        return [res[s] for s, _m in msgs]

    def flush(self) -> None:
        self._request(genl.IPVS_CMD_FLUSH, [])


def op_request(op: dict) -> tuple[int, list, int]:
    """(command, attributes, netlink flags) for one op; every field is sent."""
    kind = op["op"]
    a = op["attrs"]
    if kind == "set_timeouts":
        return genl.IPVS_CMD_SET_CONFIG, [
            ("IPVS_CMD_ATTR_TIMEOUT_TCP", a["tcp"]),
            ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", a["tcpfin"]),
            ("IPVS_CMD_ATTR_TIMEOUT_UDP", a["udp"]),
        ], REQ
    if kind == "start_daemon":
        return genl.IPVS_CMD_NEW_DAEMON, [("IPVS_CMD_ATTR_DAEMON", {"attrs": [
            ("IPVS_DAEMON_ATTR_STATE", DAEMON_STATE[a["state"]]),
            ("IPVS_DAEMON_ATTR_MCAST_IFN", a["ifname"]),
            ("IPVS_DAEMON_ATTR_SYNC_ID", a["syncid"]),
        ]})], REQ
    if kind == "stop_daemon":
        return genl.IPVS_CMD_DEL_DAEMON, [("IPVS_CMD_ATTR_DAEMON", {"attrs": [
            ("IPVS_DAEMON_ATTR_STATE", DAEMON_STATE[a["state"]])]})], REQ
    key = _parse_key(op["service"])
    if kind in ("add_service", "edit_service"):
        svc = service_from_op_attrs(key, a)
        cmd, flags = (genl.IPVS_CMD_NEW_SERVICE, CREATE) if kind == "add_service" else (genl.IPVS_CMD_SET_SERVICE, CHANGE)
        return cmd, [("IPVS_CMD_ATTR_SERVICE", {"attrs": service_attrs(svc)})], flags
    if kind == "del_service":
        return genl.IPVS_CMD_DEL_SERVICE, [("IPVS_CMD_ATTR_SERVICE", {"attrs": key_attrs(key)})], REQ
    host, _, port = op["dest"].rpartition(":")
    host = host.strip("[]")
    svc_key = ("IPVS_CMD_ATTR_SERVICE", {"attrs": key_attrs(key)})
    if kind == "del_dest":
        return genl.IPVS_CMD_DEL_DEST, [svc_key, ("IPVS_CMD_ATTR_DEST", {"attrs": dest_key_attrs(host, int(port))})], REQ
    cmd, flags = (genl.IPVS_CMD_NEW_DEST, CREATE) if kind == "add_dest" else (genl.IPVS_CMD_SET_DEST, CHANGE)
    return cmd, [svc_key, ("IPVS_CMD_ATTR_DEST", {"attrs": dest_key_attrs(host, int(port)) + [
        ("IPVS_DEST_ATTR_FWD_METHOD", FWD[a["forwarding"]]),
        ("IPVS_DEST_ATTR_WEIGHT", a["weight"]),
        ("IPVS_DEST_ATTR_U_THRESH", a.get("upper", 0)),
        ("IPVS_DEST_ATTR_L_THRESH", a.get("lower", 0)),
    ]})], flags


_HDR = struct.Struct("IHHIIBBH")  # nlmsghdr + genlmsghdr
_DEST_TAIL = struct.Struct("HHIHHIHHIHHI")  # forwarding, weight, upper, lower: four u32 attributes
_DEST_CMD = {"add_dest": (genl.IPVS_CMD_NEW_DEST, CREATE), "edit_dest": (genl.IPVS_CMD_SET_DEST, CHANGE),
             "del_dest": (genl.IPVS_CMD_DEL_DEST, REQ)}


@functools.lru_cache(maxsize=65536)
def _service_key_nla(service: str) -> bytes:
    return encode_attrs([("IPVS_CMD_ATTR_SERVICE", {"attrs": key_attrs(_parse_key(service))})])


@functools.lru_cache(maxsize=65536)
def _dest_key_payload(dest: str) -> bytes:
    host, _, port = dest.rpartition(":")
    host = host.strip("[]")
    raw = _packed(host)
    return (struct.pack("HHHxx", 6, 11, socket.AF_INET6 if len(raw) == 16 else socket.AF_INET)
            + _nla(1, raw) + struct.pack("HH", 6, 2) + struct.pack(">Hxx", int(port)))


def op_body(op: dict) -> tuple[int, int, bytes] | None:
    """(command, flags, attributes) of a real-server op from cached pieces (the service key's
    attribute and the destination key's per string: ~3x faster than building the attribute
    lists); None for other ops."""
    kind = op["op"]
    cf = _DEST_CMD.get(kind)
    if cf is None:
        return None
    inner = _dest_key_payload(op["dest"])
    if kind != "del_dest":
        a = op["attrs"]
        inner += _DEST_TAIL.pack(8, 3, FWD[a["forwarding"]], 8, 4, a["weight"], 8, 5, a.get("upper", 0),
                                 8, 6, a.get("lower", 0))
    return cf[0], cf[1], _service_key_nla(op["service"]) + struct.pack("HH", 4 + len(inner), CMD_ATTR["IPVS_CMD_ATTR_DEST"]) + inner


def os_strerror(code: int) -> str:
    import os

    try:
        return os.strerror(code)
    except ValueError:
        return f"errno {code}"


__all__ = ["Ipvs", "IpvsError", "Unavailable", "lvsmsg"]
