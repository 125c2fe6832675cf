"""Every IPVS feature applied through lvsbus_services.ipvs.netlink, read back with pyroute2 (our dump)
and with ipvsadm (-Ln / --save), and compared."""
import os
import re
import subprocess

import pytest

from lvsbus.ipvs.table import Dest, Service, ServiceKey, Table
from lvsbus_services.ipvs.core import plan, save_lines
from lvsbus_services.ipvs.netlink import IpvsError

from .conftest import ipvsadm

KVER = os.uname().release
HAS_TWOS = os.path.exists(f"/lib/modules/{KVER}/kernel/net/netfilter/ipvs/ip_vs_twos.ko")
SCHEDS = ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"] + (["twos"] if HAS_TWOS else [])


def everything() -> Table:
    t = Table()
    for i, s in enumerate(SCHEDS):
        k = ServiceKey.tcp(f"10.1.0.{i + 1}", 80)
        t = t.with_service(Service(k, s), [Dest("192.168.1.1", 80, "nat", 1), Dest("192.168.1.2", 8080, "nat", 3)])
    t = t.with_service(Service(ServiceKey.tcp("10.2.0.1", 53, "udp"), "rr"), [Dest("192.168.2.1", 53, "direct", 2)])
    t = t.with_service(Service(ServiceKey.tcp("10.2.0.2", 9, "sctp"), "wrr"), [Dest("192.168.2.2", 9, "tunnel", 5)])
    t = t.with_service(Service(ServiceKey.mark(7), "wlc", 300, 24), [Dest("192.168.3.1", 0, "direct", 1), Dest("192.168.3.2", 0, "tunnel", 2, 100, 10)])
    t = t.with_service(Service(ServiceKey.mark(8, "inet6"), "rr"), [Dest("2001:db8::10", 0, "direct", 1)])
    t = t.with_service(Service(ServiceKey.tcp("2001:db8::1", 443), "sh", 600, 64, ("sh-fallback", "sh-port")),
                       [Dest("2001:db8::2", 443, "nat", 4, 1000, 500), Dest("2001:db8::3", 443, "direct", 0)])
    t = t.with_service(Service(ServiceKey.tcp("10.3.0.1", 0), "lc", 1800, 32), [Dest("192.168.4.1", 0, "direct", 1)])
    t = t.with_service(Service(ServiceKey.tcp("10.3.0.2", 80), "mh", 0, 32, ("mh-port",)), [Dest("192.168.4.2", 80, "nat", 1)])
    return t


def test_everything_round_trips(ipvs):
    want = everything()
    for op in plan(Table(), want):
        ipvs.apply(op)
    got = ipvs.dump()
    assert got.to_dict() == want.to_dict()
    # ipvsadm sees the same table
    save = ipvsadm("--save", "-n").split("\n")
    have = sorted(x.strip() for x in save if x.strip())
    # ipvsadm --save leaves the thresholds out (ours keeps them: --restore reads -x/-y)
    expect = sorted(re.sub(r" -x \d+| -y \d+", "", x) for x in save_lines(want))
    assert set(have) ^ set(expect) == set() and len(have) == len(expect)
    listing = ipvsadm("-Ln", "--thresholds")
    assert re.search(r"\[2001:db8::2\]:443\s+1000\s+500\s", listing), listing
    assert re.search(r"192\.168\.3\.2:0\s+100\s+10\s", listing), listing


def test_edit_in_place_and_delete(ipvs):
    t = everything()
    for op in plan(Table(), t):
        ipvs.apply(op)
    k = ServiceKey.tcp("10.2.0.1", 53, "udp")
    t2 = t.with_service(Service(k, "wrr", 120, 24), [Dest("192.168.2.1", 53, "tunnel", 9, 50, 5), Dest("192.168.2.9", 53, "direct", 1)])
    t2 = t2.without_service(ServiceKey.mark(7))
    ops = plan(ipvs.dump(), t2, managed=t.keys())
    kinds = [o["op"] for o in ops]
    assert kinds == ["del_service", "edit_service", "edit_dest", "add_dest"]
    for op in ops:
        ipvs.apply(op)
    assert ipvs.dump().to_dict() == t2.to_dict()
    assert plan(ipvs.dump(), t2, managed=t.keys()) == []


def test_errors_carry_errno(ipvs):
    import errno

    op = {"op": "add_service", "service": "tcp:10.9.9.9:80", "dest": None,
          "attrs": {"scheduler": "rr", "persistence": 0, "netmask": 32, "flags": []}}
    ipvs.apply(op)
    with pytest.raises(IpvsError) as e:
        ipvs.apply(op)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(IpvsError) as e:
        ipvs.apply({"op": "del_service", "service": "tcp:10.9.9.8:80", "dest": None, "attrs": {}})
    assert e.value.errno == errno.ESRCH


def test_timeouts(ipvs):
    ipvs.apply({"op": "set_timeouts", "service": "", "dest": None, "attrs": {"tcp": 900, "tcpfin": 60, "udp": 120}})
    assert ipvs.timeouts() == {"tcp": 900, "tcpfin": 60, "udp": 120}
    assert "900 60 120" in " ".join(ipvsadm("-L", "--timeout").split()[-3:]) or ipvsadm("-L", "--timeout").split()[-3:] == ["900", "60", "120"]


def test_sync_daemons(ipvs):
    subprocess.run(["ip", "link", "add", "sync0", "type", "dummy"], check=False)
    subprocess.run(["ip", "link", "set", "sync0", "up", "multicast", "on"], check=True)
    subprocess.run(["ip", "addr", "add", "10.77.0.1/24", "dev", "sync0"], check=False)
    ipvs.apply({"op": "start_daemon", "service": "", "dest": None, "attrs": {"state": "master", "ifname": "sync0", "syncid": 9}})
    ipvs.apply({"op": "start_daemon", "service": "", "dest": None, "attrs": {"state": "backup", "ifname": "sync0", "syncid": 9}})
    assert ipvs.daemons() == [{"state": "backup", "ifname": "sync0", "syncid": 9}, {"state": "master", "ifname": "sync0", "syncid": 9}]
    out = ipvsadm("-L", "--daemon")
    assert "master sync daemon" in out and "backup sync daemon" in out and "syncid=9" in out
    for s in ("master", "backup"):
        ipvs.apply({"op": "stop_daemon", "service": "", "dest": None, "attrs": {"state": s}})
    assert ipvs.daemons() == []
