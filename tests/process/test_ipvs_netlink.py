"""The applier's netlink batching, against a fake kernel at the socket boundary: many requests a
send, at most a window of them unacknowledged, every ack matched to its op by sequence number (a
refused op names itself with its errno), lost acks (ENOBUFS) reported on the ops they belonged to."""
from __future__ import annotations

import errno as E
import random
import socket
import struct

import pytest

from lvsbus.ipvs.table import Dest, Service, ServiceKey, Table
from lvsbus_services.ipvs.core import plan
from lvsbus_services.ipvs.netlink import Ipvs, IpvsError

FAMILY = 0x1D


class FakeKernel:
    """A netlink socket whose peer handles each message of a send in turn (as the kernel does,
    inside the send) and queues one ack datagram each, at most ``capacity`` queued (more: dropped,
    and the next read fails ENOBUFS, as a netlink socket that overran)."""

    def __init__(self, refuse=lambda cmd, body: 0, capacity: int = 10_000, rcvbuf: int = 64 * 1024,
                 shuffle: random.Random | None = None) -> None:
        self.refuse, self.capacity, self.rcvbuf, self.shuffle = refuse, capacity, rcvbuf, shuffle
        self.queue: list[bytes] = []
        self.overrun = False
        self.sends: list[int] = []  # messages a send
        self.most_unacked = 0
        self.handled: list[tuple[int, int]] = []  # (seq, errno) in the order handled

    def getsockopt(self, level, opt):
        assert (level, opt) == (socket.SOL_SOCKET, socket.SO_RCVBUF)
        return self.rcvbuf

    def send(self, data: bytes) -> int:
        off, acks = 0, []
        while off < len(data):
            n, typ, flags, seq, _pid = struct.unpack_from("IHHII", data, off)
            assert typ == FAMILY and n >= 20
            body = data[off + 16:off + n]
            code = self.refuse(body[0], body[4:])
            self.handled.append((seq, code))
            acks.append(struct.pack("IHHII", 36, 2, 0x100, seq, 0) + struct.pack("i", -code) + data[off:off + 16])
            off += (n + 3) & ~3
        self.sends.append(len(acks))
        self.most_unacked = max(self.most_unacked, len(self.queue) + len(acks))
        if self.shuffle:
            self.shuffle.shuffle(acks)
        for a in acks:
            if len(self.queue) >= self.capacity:
                self.overrun = True
            else:
                self.queue.append(a)
        return len(data)

    def recv_into(self, buf, n, flags=0) -> int:
        if self.overrun:
            self.overrun = False
            raise OSError(E.ENOBUFS, "No buffer space available")
        if not self.queue:
            if flags & socket.MSG_DONTWAIT:
                raise BlockingIOError(E.EAGAIN, "would block")
            raise AssertionError("a blocking read with nothing to come: the client waits forever")
        d = self.queue.pop(0)
        buf[:len(d)] = d
        return len(d)

    def close(self) -> None:
        pass


def _table(services: int, dests: int) -> Table:
    t = Table()
    for i in range(services):
        t = t.with_service(Service(ServiceKey.tcp(f"10.1.{i // 250}.{i % 250 + 1}", 80), "wlc"),
                           [Dest(f"192.168.{j}.{i % 250 + 1}", 8000, "nat", 1) for j in range(dests)])
    return t


def _refuse_address(address: str, code: int):
    packed = socket.inet_aton(address)
    return lambda cmd, body: code if cmd == 5 and packed in body else 0  # IPVS_CMD_NEW_DEST


def test_a_batch_goes_out_in_few_sends_and_a_refused_op_names_itself():
    ops = plan(Table(), _table(60, 10))  # 660 ops
    bad = next(i for i, op in enumerate(ops) if op["dest"] == "192.168.3.17:8000")
    k = FakeKernel(refuse=_refuse_address("192.168.3.17", E.EEXIST))
    x = Ipvs(sock=k, family=FAMILY)
    codes = x.apply_many(ops)
    assert codes == [E.EEXIST if i == bad else 0 for i in range(len(ops))]
    assert [s for s, _c in k.handled] == sorted(s for s, _c in k.handled)  # in order, one each
    assert len(k.handled) == len(ops)
    assert len(k.sends) < len(ops) // 10  # many requests a send, not one each
    assert k.most_unacked <= x.window == 32  # 64 KiB of receive buffer: 32 acks in flight


def test_acks_in_any_order_are_matched_by_sequence_number():
    ops = plan(Table(), _table(30, 10))
    refused = {"192.168.1.5": E.EINVAL, "192.168.7.20": E.ENOENT}
    fns = [_refuse_address(a, c) for a, c in refused.items()]
    k = FakeKernel(refuse=lambda cmd, body: max(f(cmd, body) for f in fns), shuffle=random.Random(7))
    # a stale ack of an earlier request (not ours any more) is skipped
    k.queue.append(struct.pack("IHHII", 36, 2, 0, 999_999, 0) + struct.pack("i", -E.EPERM) + b"\0" * 16)
    codes = Ipvs(sock=k, family=FAMILY).apply_many(ops)
    want = [refused.get((op["dest"] or "").split(":")[0], 0) if op["op"] == "add_dest" else 0 for op in ops]
    assert codes == want and sum(1 for c in codes if c) == 2


def test_lost_acks_are_reported_enobufs_on_their_own_ops_and_the_socket_goes_on():
    ops = plan(Table(), _table(20, 10))  # 220 ops
    k = FakeKernel(capacity=20, rcvbuf=1 << 20)  # the window (512) is more than the buffer takes
    x = Ipvs(sock=k, family=FAMILY)
    codes = x.apply_many(ops)
    assert len(k.handled) == len(ops)
    lost = [i for i, c in enumerate(codes) if c == E.ENOBUFS]
    assert lost and all(c in (0, E.ENOBUFS) for c in codes)
    # of each send, the acks that fitted were read and matched; the rest are the lost ones
    first = k.sends[0]
    assert codes[:20] == [0] * 20 and codes[20:first] == [E.ENOBUFS] * (first - 20)
    k.capacity = 10_000
    assert x.apply_many(ops[:50]) == [0] * 50  # nothing stale left behind


def test_one_op_raises_its_errno():
    k = FakeKernel(refuse=_refuse_address("192.168.0.1", E.EEXIST))
    x = Ipvs(sock=k, family=FAMILY)
    op = plan(Table(), _table(1, 1))[1]
    with pytest.raises(IpvsError) as ei:
        x.apply(op)
    assert ei.value.errno == E.EEXIST


def test_cached_real_server_encoding_is_the_generic_one_byte_for_byte():
    """op_msg builds real-server ops from cached pieces; the generic path (op_request +
    encode_attrs, itself checked against pyroute2's encoder in test_ipvs_core) gives the same bytes."""
    from lvsbus_services.ipvs.netlink import op_body, op_request

    t = Table()
    t = t.with_service(Service(ServiceKey.tcp("10.0.0.1", 80), "wlc"),
                       [Dest("10.0.1.2", 8080, "nat", 3, 100, 10), Dest("10.0.1.3", 0, "tunnel", 0)])
    t = t.with_service(Service(ServiceKey.tcp("2001:db8::1", 443, "udp"), "mh", 600, 64),
                       [Dest("2001:db8::2", 443, "direct", 65535)])
    t = t.with_service(Service(ServiceKey.mark(7, "inet6"), "sh"), [Dest("2001:db8::9", 1, "direct", 1)])
    t = t.with_service(Service(ServiceKey.mark(70000), "rr"), [Dest("10.0.2.1", 65535, "nat", 1, 0, 5)])
    t2 = Table({k: e for k, e in t.items()}).with_dest(ServiceKey.tcp("10.0.0.1", 80), Dest("10.0.1.2", 8080, "direct", 9))
    ops = plan(Table(), t) + plan(t, t2) + plan(t, Table(), managed=t.keys())
    ops += [{"op": "del_dest", "service": "tcp:10.0.0.1:80", "dest": "10.0.1.3:0", "attrs": {}}]
    assert {o["op"] for o in ops} >= {"add_dest", "edit_dest", "del_dest", "add_service", "del_service"}
    fast, slow = Ipvs(sock=FakeKernel(), family=FAMILY), Ipvs(sock=FakeKernel(), family=FAMILY)
    for op in ops:
        assert fast.op_msg(op) == slow._msg(*op_request(op)), op
    assert sum(1 for o in ops if op_body(o) is not None) >= 6


def test_the_shell_reports_runs_of_accepted_ops_and_each_refused_op_by_name(tmp_path):
    """One ipvs.ops_applied a run of accepted ops (by their place in the batch), every refused op
    its own ipvs.op_failed naming it, in order, across the shell's chunks; the metrics count them."""
    import asyncio

    from lvsbus.wire.events import REGISTRY, Event
    from lvsbus_services.ipvs import shell as shellmod
    from lvsbus_services.metrics.fold import Metrics

    ops = plan(Table(), _table(60, 10))  # 660 ops: three chunks of 256
    refused = {5: E.EEXIST, 6: E.EEXIST, 300: E.ENOENT, 659: E.EINVAL}
    k = FakeKernel(refuse=lambda cmd, body: 0)
    x = Ipvs(sock=k, family=FAMILY)

    def apply_many(batch_ops):
        codes = x.apply_many(batch_ops)
        return [refused.get(ops.index(op), c) for op, c in zip(batch_ops, codes)]

    published = []

    async def run():
        sh = shellmod.ApplierShell(str(tmp_path), 1)
        sh.ipvs = type("I", (), {"apply_many": staticmethod(apply_many), "close": lambda self: None})()
        sh.runtime.publish = lambda t, p: published.append((t, p))
        await sh.apply({"batch": 3, "ops": ops, "reason": "test", "version": 1})

    asyncio.run(run())
    for t, p in published:
        REGISTRY.validate(t, 1, p)
    got = [(t, (p["first"], p["count"]) if t == "ipvs.ops_applied" else p["op"]["dest"] if t == "ipvs.op_failed" else p["failed"])
           for t, p in published]
    assert got == [
        ("ipvs.ops_applied", (0, 5)), ("ipvs.op_failed", ops[5]["dest"]), ("ipvs.op_failed", ops[6]["dest"]),
        ("ipvs.ops_applied", (7, 249)), ("ipvs.ops_applied", (256, 44)), ("ipvs.op_failed", ops[300]["dest"]),
        ("ipvs.ops_applied", (301, 211)), ("ipvs.ops_applied", (512, 147)), ("ipvs.op_failed", ops[659]["dest"]),
        ("ipvs.batch_applied", 4)]
    assert [p["errno"] for t, p in published if t == "ipvs.op_failed"] == [E.EEXIST, E.EEXIST, E.ENOENT, E.EINVAL]
    m = Metrics()
    for i, (t, p) in enumerate(published, 1):
        m.apply(Event(i, "n", "ipvs", t, 1, i, i, None, p))
    assert m.ipvs_ops == len(ops) and sum(m.ipvs_failures.values()) == 4


def test_a_service_with_flags_and_pe_reads_back_from_its_own_attributes():
    """What the applier sends for a service is what a dump of it gives back (attribute 11 is the
    persistence engine's name, flag 0x4 one-packet scheduling, 0x8/0x10 the scheduler's flags)."""
    from lvsbus_services.ipvs.netlink import SVC_ATTR, _value, parse_attrs, service_attrs, service_from_attrs

    for svc in (Service(ServiceKey.tcp("10.0.0.5", 5060, "udp"), "sh", 60, 32, ("onepacket", "sh-fallback", "sh-port"), "sip"),
                Service(ServiceKey.mark(9), "mh", 0, 32, ("mh-port",)),
                Service(ServiceKey.tcp("10.0.0.6", 80), "wlc")):
        raw = b"".join(struct.pack("HH", 4 + len(v), SVC_ATTR[n][0]) + v + b"\0" * (-(4 + len(v)) % 4)
                       for n, v in ((n, _value(SVC_ATTR[n][1], x)) for n, x in service_attrs(svc)))
        assert service_from_attrs(parse_attrs(raw, 0, len(raw))) == svc
