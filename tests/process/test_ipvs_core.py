"""The applier's pure core on the host (no IPVS here): plan minimality and order, idempotence,
the simulator property (plan applied to actual gives desired), unmanaged entries untouched,
ipvsadm --save golden lines, and ApplierCore's read/apply/retry cycle."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.config import loads, to_dict
from lvsbus.wire.events import REGISTRY, Event
from lvsbus.ipvs.table import Dest, Service, ServiceKey, Table
from lvsbus_services.ipvs.core import (ApplierCore, apply_ops, desired_from_config, plan, plan_globals, save_lines)
from tests.helpers.event_log import write_events

K1 = ServiceKey.tcp("10.0.0.1", 80)
K2 = ServiceKey.tcp("10.0.0.2", 53, "udp")
KM = ServiceKey.mark(5)
OTHER = ServiceKey.tcp("192.0.2.9", 25)


def base() -> Table:
    t = Table().with_service(Service(K1, "wlc"), [Dest("10.0.1.1", 80, "nat", 1), Dest("10.0.1.2", 80, "nat", 2)])
    return t.with_service(Service(K2, "rr"), [Dest("10.0.1.3", 53, "direct", 1)])


def test_empty_to_table_adds_services_before_dests():
    ops = plan(Table(), base())
    kinds = [o["op"] for o in ops]
    assert kinds == ["add_service", "add_service", "add_dest", "add_dest", "add_dest"]
    assert apply_ops(Table(), ops) == base()


def test_one_weight_change_is_one_edit():
    want = base().with_dest(K1, Dest("10.0.1.2", 80, "nat", 7))
    assert plan(base(), want) == [{"op": "edit_dest", "service": str(K1), "dest": "10.0.1.2:80",
                                   "attrs": {"forwarding": "nat", "weight": 7, "upper": 0, "lower": 0}}]


def test_order_deletes_dests_then_services_then_adds():
    actual = base()
    want = Table().with_service(Service(K1, "rr"), [Dest("10.0.1.1", 80, "nat", 1), Dest("10.0.1.9", 80, "nat", 1)])
    want = want.with_service(Service(KM, "wlc", 300, 24), [Dest("10.0.1.4", 0, "direct", 1)])
    ops = plan(actual, want, managed={K1, K2})
    assert [(o["op"], o["dest"]) for o in ops] == [
        ("del_dest", "10.0.1.2:80"), ("del_service", None), ("add_service", None), ("edit_service", None),
        ("add_dest", "10.0.1.4:0"), ("add_dest", "10.0.1.9:80")]  # keys in order: fwm:inet:5 sorts first
    assert apply_ops(actual, ops) == want
    assert plan(want, want, managed={K1, K2}) == []


def test_unmanaged_left_alone_unless_flushed():
    actual = base().with_service(Service(OTHER, "rr"), [Dest("192.0.2.10", 25, "direct", 1)])
    ops = plan(actual, base(), managed={K1, K2})
    assert ops == []
    ops = plan(actual, base(), managed={K1, K2}, flush_unmanaged=True)
    assert ops == [{"op": "del_service", "service": str(OTHER), "dest": None, "attrs": {}}]
    # a managed service not desired any more goes
    assert plan(base(), Table().with_service(Service(K1, "wlc"), base()[K1].dests.values()), managed={K1, K2}) == [
        {"op": "del_service", "service": str(K2), "dest": None, "attrs": {}}]


def test_globals():
    want_t = {"tcp": 900, "tcpfin": 0, "udp": 60}
    assert plan_globals({"tcp": 900, "tcpfin": 120, "udp": 60}, want_t, [], []) == []
    assert plan_globals({"tcp": 100, "tcpfin": 120, "udp": 60}, want_t, [], [])[0]["op"] == "set_timeouts"
    m = {"state": "master", "ifname": "eth1", "syncid": 3}
    assert [o["op"] for o in plan_globals(None, {"tcp": 0, "tcpfin": 0, "udp": 0}, [], [m])] == ["start_daemon"]
    b = {"state": "backup", "ifname": "eth1", "syncid": 3}
    ops = plan_globals(None, {"tcp": 0, "tcpfin": 0, "udp": 0}, [m], [b])
    assert [(o["op"], o["attrs"]["state"]) for o in ops] == [("stop_daemon", "master"), ("start_daemon", "backup")]


# --- property: plan(actual, desired) applied to actual gives desired; unmanaged untouched ------

ADDRS = [f"10.0.0.{i}" for i in range(1, 5)] + ["2001:db8::1"]
DADDRS = [f"10.1.0.{i}" for i in range(1, 5)]


@st.composite
def tables(draw):
    t = Table()
    for addr in draw(st.lists(st.sampled_from(ADDRS), unique=True, max_size=4)):
        proto = draw(st.sampled_from(["tcp", "udp", "sctp"]))
        key = ServiceKey.tcp(addr, draw(st.sampled_from([80, 443])), proto)
        v6 = key.family == "inet6"
        svc = Service(key, draw(st.sampled_from(["rr", "wlc", "sh", "mh"])), draw(st.sampled_from([0, 300])),
                      draw(st.sampled_from([128, 64] if v6 else [32, 24])))
        daddrs = ["2001:db8::a", "2001:db8::b"] if v6 else DADDRS
        dests = [Dest(a, draw(st.sampled_from([80, 8080])), draw(st.sampled_from(["nat", "direct", "tunnel"])),
                      draw(st.integers(0, 3)), draw(st.sampled_from([0, 100])), 0)
                 for a in draw(st.lists(st.sampled_from(daddrs), unique=True, max_size=3))]
        t = t.with_service(svc, dests)
    if draw(st.booleans()):
        t = t.with_service(Service(ServiceKey.mark(draw(st.integers(1, 3))), "wlc"), [Dest("10.1.0.9", 0, "direct", 1)])
    return t


@settings(max_examples=300, deadline=None)
@given(tables(), tables(), st.booleans())
def test_plan_applied_gives_desired(actual, desired, all_managed):
    managed = set(actual.keys()) if all_managed else set()
    ops = plan(actual, desired, managed=managed)
    got = apply_ops(actual, ops)  # strict: every op fits the state it is applied to
    for k in desired.keys():
        assert got[k] == desired[k]
    for k in actual.keys():
        if k not in desired:
            if all_managed:
                assert k not in got
            else:
                assert got[k] == actual[k]  # unmanaged: untouched
    assert plan(got, desired, managed=managed) == []  # idempotent
    # minimal: at most one op per service and per destination that differs
    assert len(ops) <= len(set(actual.keys()) | set(desired.keys())) + sum(
        len(e.dests) for _k, e in desired.items()) + sum(len(e.dests) for _k, e in actual.items())


# --- ipvsadm --save golden -------------------------------------------------------------------

def test_save_golden():
    t = Table()
    t = t.with_service(Service(ServiceKey.tcp("10.0.0.1", 80), "wlc"), [Dest("192.168.1.2", 80, "nat", 1), Dest("192.168.1.3", 8080, "nat", 3)])
    t = t.with_service(Service(ServiceKey.tcp("10.0.0.1", 53, "udp"), "rr", 300, 24), [Dest("192.168.1.2", 53, "direct", 1)])
    t = t.with_service(Service(ServiceKey.tcp("10.0.0.2", 9, "sctp"), "sh", 0, 32, ("sh-fallback", "sh-port")), [Dest("192.168.1.4", 9, "tunnel", 2, 100, 10)])
    t = t.with_service(Service(ServiceKey.mark(7), "lc"), [Dest("192.168.1.5", 0, "direct", 1)])
    t = t.with_service(Service(ServiceKey.tcp("2001:db8::1", 443), "mh", 600, 64), [Dest("2001:db8::2", 443, "direct", 1)])
    t = t.with_service(Service(ServiceKey.tcp("10.0.0.3", 5060, "udp"), "mh", 60, 32, ("mh-port", "onepacket"), "sip"))
    assert save_lines(t) == [
        "-A -f 7 -s lc",
        "-a -f 7 -r 192.168.1.5:0 -g -w 1",
        "-A --sctp-service 10.0.0.2:9 -s sh -b sh-fallback,sh-port",
        "-a --sctp-service 10.0.0.2:9 -r 192.168.1.4:9 -i -w 2 --tun-type ipip -x 100 -y 10",
        "-A -t 10.0.0.1:80 -s wlc",
        "-a -t 10.0.0.1:80 -r 192.168.1.2:80 -m -w 1",
        "-a -t 10.0.0.1:80 -r 192.168.1.3:8080 -m -w 3",
        "-A -u 10.0.0.1:53 -s rr -p 300 -M 255.255.255.0",
        "-a -u 10.0.0.1:53 -r 192.168.1.2:53 -g -w 1",
        "-A -u 10.0.0.3:5060 -s mh -p 60 --pe sip -o -b mh-port",  # ipvsadm 1.31's order
        "-A -t [2001:db8::1]:443 -s mh -p 600 -M 64",
        "-a -t [2001:db8::1]:443 -r [2001:db8::2]:443 -g -w 1",
    ]


CONFIG = """
[router.lvs1]
address = "192.0.2.1"

[ipvs_timeouts]
tcp = 900
udp = 60

[sync_daemon]
enabled = true
interface = "eth1"
sync_id = 4

[virtual.web]
address = "10.0.0.1"
port = 80
scheduler = "wrr"
forwarding = "direct"

[virtual.web.server.a]
address = "192.168.1.2"
weight = 3

[virtual.web.server.b]
address = "192.168.1.3"
active = false

[virtual.off]
address = "10.0.0.9"
active = false
"""


def test_desired_from_config_and_save():
    cfg = loads(CONFIG, "x.toml").config
    assert save_lines(desired_from_config(cfg)) == ["-A -t 10.0.0.1:80 -s wrr", "-a -t 10.0.0.1:80 -r 192.168.1.2:80 -g -w 3"]


SIP = """
[router.lvs1]
address = "192.0.2.1"

[virtual.sip]
address = "10.0.0.5"
port = 5060
protocol = "udp"
scheduler = "sh"
scheduler_flags = ["sh-port", "sh-fallback"]
ops = true
persistence = 60
persistence_engine = "sip"

[virtual.sip.check]
kind = "udp"

[virtual.sip.server.a]
address = "192.168.1.2"
"""


def test_scheduler_flags_ops_and_pe_from_config_to_the_table_and_its_forms():
    t = desired_from_config(loads(SIP, "x.toml").config)
    (entry,) = (e for _k, e in t.items())
    assert entry.service.flags == ("onepacket", "sh-fallback", "sh-port") and entry.service.pe == "sip"
    assert save_lines(t)[0] == "-A -u 10.0.0.5:5060 -s sh -p 60 --pe sip -o -b sh-fallback,sh-port"
    from lvsbus.cli.ipvs import show_lines
    assert "UDP  10.0.0.5:5060 sh persistent 60 pe sip ops (sh-fallback,sh-port)" in show_lines(t, None, {})
    d = t.to_dict()["udp:10.0.0.5:5060"]
    assert (d["flags"], d["pe"]) == (["onepacket", "sh-fallback", "sh-port"], "sip")
    assert Table.from_dict(t.to_dict()) == t
    ops = plan(Table(), t)
    assert ops[0]["attrs"] == {"scheduler": "sh", "persistence": 60, "netmask": 32,
                               "flags": ["onepacket", "sh-fallback", "sh-port"], "pe": "sip"}
    assert apply_ops(Table(), ops) == t
    # the engine and the flags are edited in place, and taken off by an edit without them
    plain = Table().with_service(Service(entry.service.key, "sh", 60), entry.dests.values())
    assert [o["op"] for o in plan(t, plain)] == ["edit_service"]
    assert "pe" not in plan(t, plain)[0]["attrs"]


def test_a_table_without_flags_or_pe_keeps_its_old_plain_form():
    """Old logs replay: no "pe" key unless a persistence engine is set; flags in the kernel's order."""
    t = base()
    assert all(set(v) == {"scheduler", "persistence", "netmask", "flags", "dests"} for v in t.to_dict().values())
    assert Service(KM, "sh", 0, 32, ("sh-port", "sh-fallback")).flags == ("sh-fallback", "sh-port")
    with pytest.raises(ValueError):
        Service(KM, "sh", 0, 32, ("sh-prot",))
    with pytest.raises(ValueError):
        Service(KM, "sh", 60, 32, (), "h323")


# --- the core: read, plan, apply, fail, re-read, retry ---------------------------------------

class Feed:
    def __init__(self):
        self.core = ApplierCore()
        self.state = self.core.initial()
        self.seq = 0

    def __call__(self, type_, payload, source="x", mono=0, version=1):
        self.seq += 1
        REGISTRY.validate(type_, version, payload)
        ev = Event(self.seq, "n", source, type_, version, mono, 0, None, payload)
        assert self.core.accepts(ev)
        self.state, effs = self.core.decide(self.state, ev)
        for e in effs:
            REGISTRY.validate(e.type, REGISTRY.latest(e.type).version, e.payload)  # as the runtime records it
        snap = self.core.restore(self.core.snapshot(self.state))  # snapshots round-trip
        assert self.core.snapshot(snap) == self.core.snapshot(self.state)
        return effs


def read(f, req, table, timeouts=None, daemons=()):
    return f("ipvs.table_read", {"request": req, "table": table.to_dict(), "timeouts": timeouts or {"tcp": 900, "tcpfin": 120, "udp": 300},
                                 "daemons": list(daemons), "services": len(table), "dests": 0, "duration_us": 1})


def test_core_cycle():
    f = Feed()
    cfg = loads(CONFIG, "x.toml").config
    assert f("config.loaded", {"path": "x", "format": "toml", "digest": "d", "model": to_dict(cfg), "warnings": [],
                               "local_router": "lvs1", "reload": False, "diff": {}}) == []
    assert f("lvsd.table_desired", {"version": 1, "table": base().to_dict(), "reason": "started", "digest": "d",
                                    "services": 2, "dests": 3}) == []  # no dump yet: nothing
    (eff,) = f("ipvs.started", {"pid": 1, "flush_unmanaged": False, "kernel": "6.1"})
    assert eff.type == "ipvs.read_table" and eff.payload["request"] == 1
    # the kernel holds a stale dest, a wrong weight and another tool's service
    messy = base().with_dest(K1, Dest("10.0.1.2", 80, "nat", 9)).with_dest(K1, Dest("10.0.1.99", 80, "nat", 1))
    messy = messy.with_service(Service(OTHER, "rr"), [])
    (eff,) = read(f, 1, messy)
    assert eff.type == "ipvs.apply"
    ops = eff.payload["ops"]
    assert [o["op"] for o in ops] == ["set_timeouts", "del_dest", "edit_dest"]  # timeouts: udp 300 -> 60
    # role: the sync daemon starts as master on the active router
    (eff,) = f("router.role_changed", {"node": "lvs1", "old": "BACKUP", "new": "ACTIVE", "reason": "peer_dead",
                                      "priority": 100, "epoch": 1, "peer": None})
    assert eff.payload["ops"] == [{"op": "start_daemon", "service": "", "dest": None,
                                   "attrs": {"state": "master", "ifname": "eth1", "syncid": 4}}]
    # a delta: one weight
    (eff,) = f("lvsd.table_delta", {"version": 2, "base_version": 1, "reason": "x", "virtual": None, "server": None, "ops": [
        {"op": "edit_dest", "service": str(K1), "dest": "10.0.1.1:80", "attrs": {"forwarding": "nat", "weight": 0, "upper": 0, "lower": 0}}]})
    assert [o["op"] for o in eff.payload["ops"]] == ["edit_dest"]
    # a delta that does not follow is ignored (the next full table fixes it)
    assert f("lvsd.table_delta", {"version": 9, "base_version": 8, "reason": "x", "virtual": None, "server": None, "ops": []}) == []
    # a failed op: re-read and reconcile
    (eff,) = f("ipvs.batch_applied", {"batch": 3, "applied": 0, "failed": 1, "duration_us": 1})
    assert eff.type == "ipvs.read_table"
    want = f.state.desired
    (eff,) = read(f, eff.payload["request"], Table(), daemons=[{"state": "master", "ifname": "eth1", "syncid": 4}],
                  timeouts={"tcp": 900, "tcpfin": 120, "udp": 60})
    assert apply_ops(Table(), eff.payload["ops"]) == want


def test_sync_daemons_follow_the_roles_of_every_failover_group():
    """Active/active: a router active for web and backup for mail runs the master sync daemon (its web
    connections go out) and the backup one (the peer's mail connections come in); a lone group: one."""
    f = Feed()
    cfg = loads(CONFIG, "x.toml").config
    f("config.loaded", {"path": "x", "format": "toml", "digest": "d", "model": to_dict(cfg), "warnings": [],
                        "local_router": "lvs1", "reload": False, "diff": {}})
    f("ipvs.started", {"pid": 1, "flush_unmanaged": False, "kernel": "6.1"})
    read(f, 1, Table(), timeouts={"tcp": 900, "tcpfin": 120, "udp": 60})

    def role(group, old, new):
        effs = f("router.role_changed", {"node": "lvs1", "old": old, "new": new, "reason": "config", "priority": 100,
                                         "epoch": 1, "peer": None, "group": group}, version=4)
        return [(o["op"], o["attrs"]["state"]) for e in effs for o in e.payload["ops"]]

    assert role("web", "INIT", "ACTIVE") == [("start_daemon", "master")]
    assert role("mail", "INIT", "BACKUP") == [("start_daemon", "backup")]
    assert f.state.roles == {"web": "ACTIVE", "mail": "BACKUP"}
    assert role("mail", "BACKUP", "ACTIVE") == [("stop_daemon", "backup")]  # both active: master only
    assert role("web", "ACTIVE", "BACKUP") == [("start_daemon", "backup")]
    assert role("web", "BACKUP", "FAULT") == [("stop_daemon", "backup")]
    # a version 3 snapshot (one role) reads as the default group's
    snap = f.core.snapshot(f.state)
    old = {k: v for k, v in snap.items() if k != "roles"}
    old["role"] = "BACKUP"
    assert f.core.snapshot_upcasters[3](old)["roles"] == {"default": "BACKUP"}


def test_unavailable_backoff():
    f = Feed()
    (eff,) = f("ipvs.started", {"pid": 1, "flush_unmanaged": False, "kernel": "6.1"})
    deadlines = []
    now = 0
    for _ in range(9):
        assert f("ipvs.unavailable", {"request": eff.payload["request"], "errno": 2, "error": "no IPVS"}, mono=now) == []
        dl = f.core.next_deadline(f.state)
        deadlines.append((dl - now) // 10**9)
        now = dl
        (eff,) = f("timer.fired", {"service": "ipvs", "deadline_ns": dl}, mono=now)
        assert eff.type == "ipvs.read_table"
    assert deadlines == [1, 2, 4, 8, 16, 32, 60, 60, 60]


# --- the shell on this host (no IPVS): an error event and retries, never a crash -------------

def test_shell_without_ipvs_reports_unavailable_and_retries(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from lvsbus.bus import BusClient
    from lvsbus.wire.events import decode
    from lvsbus.log import LogReader
    from lvsbus_services.ipvs.netlink import Ipvs, Unavailable
    from tests.helpers.procs import BrokerProc

    try:
        Ipvs().close()
        import pytest

        pytest.skip("this kernel has IPVS: the kernel tier covers the shell")
    except Unavailable:
        pass
    cfg = tmp_path / "lvs.toml"
    cfg.write_text(CONFIG)
    broker = BrokerProc(tmp_path / "state").start()
    c = BusClient(broker.dirs.run, "supervisor")
    start = c.publish_acked("config.loaded", {"path": str(cfg), "format": "toml", "digest": "d",
                                              "model": to_dict(loads(CONFIG, "x.toml").config), "warnings": [],
                                              "local_router": "lvs1", "reload": False, "diff": {}})
    c.close()
    p = subprocess.Popen([sys.executable, "-m", "lvsbus_services.ipvs", "--state-dir", broker.dirs.root, "--config", str(cfg),
                          "--run-start-seq", str(start)], stderr=subprocess.DEVNULL, env={**os.environ, "LVSBUS_LOG_FORMAT": "json"})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            evs = [decode(b, s) for s, b in LogReader(broker.dirs.log).read(1)]
            un = [e for e in evs if e.type == "ipvs.unavailable"]
            if len(un) >= 2:
                break
            time.sleep(0.2)
        assert len(un) >= 2, [e.type for e in evs]
        reads = [e for e in evs if e.type == "ipvs.read_table"]
        assert [e.payload["reason"] for e in reads[:2]] == ["started", "retry"]
        assert p.poll() is None, "the applier must keep running"
    finally:
        p.terminate()
        p.wait(10)
        broker.kill()


def test_big_plans_split_into_batches():
    from lvsbus_services.ipvs.core import MAX_BATCH_OPS

    f = Feed()
    (eff,) = f("ipvs.started", {"pid": 1, "flush_unmanaged": False, "kernel": "6.1"})
    read(f, eff.payload["request"], Table())
    big = Table()
    for i in range(1000):
        big = big.with_service(Service(ServiceKey.tcp(f"10.9.{i // 250}.{i % 250 + 1}", 80), "rr"),
                               [Dest(f"10.1.{j}.1", 80, "nat", 1) for j in range(10)])
    effs = f("lvsd.table_desired", {"version": 1, "table": big.to_dict(), "reason": "started", "digest": "d",
                                    "services": 1000, "dests": 10000})
    assert [len(e.payload["ops"]) for e in effs] == [MAX_BATCH_OPS, MAX_BATCH_OPS, 11000 - 2 * MAX_BATCH_OPS]
    assert [e.payload["batch"] for e in effs] == [1, 2, 3]
    ops = [o for e in effs for o in e.payload["ops"]]
    assert apply_ops(Table(), ops) == big


def test_netlink_encoder_matches_pyroute2():
    """lvsbus_services.ipvs.netlink encodes requests itself (speed); byte for byte what pyroute2 encodes."""
    from lvsbus_services.ipvs.netlink import encode_attrs, lvsmsg, op_request

    t = base().with_service(Service(KM, "sh", 300, 24, ("sh-port",)), [Dest("10.0.1.4", 0, "tunnel", 2, 100, 10)])
    t = t.with_service(Service(ServiceKey.tcp("2001:db8::1", 443), "mh", 600, 64), [Dest("2001:db8::2", 443, "direct", 1)])
    t = t.with_service(Service(ServiceKey.tcp("10.0.0.5", 5060, "udp"), "mh", 60, 32, ("onepacket", "mh-port"), "sip"))
    ops = plan(Table(), t) + plan(t, Table(), managed=t.keys()) + [
        {"op": "start_daemon", "service": "", "dest": None, "attrs": {"state": "backup", "ifname": "eth1", "syncid": 3}},
        {"op": "stop_daemon", "service": "", "dest": None, "attrs": {"state": "master"}},
        {"op": "set_timeouts", "service": "", "dest": None, "attrs": {"tcp": 900, "tcpfin": 0, "udp": 60}}]
    for op in ops:
        cmd, attrs, flags = op_request(op)
        m = lvsmsg()
        m["cmd"], m["version"], m["attrs"] = cmd, 1, attrs
        m["header"]["type"], m["header"]["flags"], m["header"]["sequence_number"], m["header"]["pid"] = 30, flags, 1, 0
        m.encode()
        assert bytes(m.data)[20:] == encode_attrs(attrs), op


def test_plan_only_some_services():
    want = base().with_dest(K1, Dest("10.0.1.2", 80, "nat", 7)).with_dest(K2, Dest("10.0.1.3", 53, "direct", 5))
    ops = plan(base(), want, only={K1})
    assert [(o["op"], o["service"]) for o in ops] == [("edit_dest", str(K1))]
    assert plan(base(), want) == plan(base(), want, only={K1, K2})


# --- lvsbus ipvs save / show ------------------------------------------------------------------

def test_cli_save_and_show_from_log(tmp_path, capsys):
    from lvsbus.cli import main

    cfg = tmp_path / "lvs.toml"
    cfg.write_text(CONFIG)
    assert main(["ipvs", "save", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out.splitlines() == ["-A -t 10.0.0.1:80 -s wrr", "-a -t 10.0.0.1:80 -r 192.168.1.2:80 -g -w 3"]
    assert main(["ipvs", "save", "--state-dir", str(tmp_path / "none")]) == 1
    capsys.readouterr()
    edit = {"op": "edit_dest", "service": str(K1), "dest": "10.0.1.2:80", "attrs": {"forwarding": "nat", "weight": 0, "upper": 0, "lower": 0}}
    write_events(tmp_path / "state", [
        ("lvsd.table_desired", "lvsd", {"version": 1, "table": base().to_dict(), "reason": "started", "digest": "d", "services": 2, "dests": 3}),
        ("health.real_server_down", "nanny", {"virtual": "web", "server": "b", "address": "10.0.1.2", "port": 80, "reason": "checks_failed",
                                              "previous": "FALLING", "failures": 3, "detail": "refused"}),
        ("lvsd.table_delta", "lvsd", {"version": 2, "base_version": 1, "ops": [edit], "reason": "b down", "virtual": "web", "server": "b"}),
    ])
    assert main(["ipvs", "save", "--state-dir", str(tmp_path / "state")]) == 0
    out = capsys.readouterr().out
    assert "-a -t 10.0.0.1:80 -r 10.0.1.2:80 -m -w 0" in out
    assert main(["ipvs", "show", "--state-dir", str(tmp_path / "state")]) == 0
    out = capsys.readouterr().out
    assert "# desired: lvsd table version 2" in out
    assert "TCP  10.0.0.1:80 wlc" in out
    assert any("10.0.1.2:80" in line and "DOWN" in line and "0/" in line for line in out.splitlines()), out
    # this host has no IPVS: the actual side says so (on a kernel with IPVS it is the dump)
    from lvsbus.cli.ipvs import actual_table

    table, why = actual_table()
    assert (table is None) == (why is not None)


def test_refused_again_and_again_backs_off():
    f = Feed()
    (eff,) = f("ipvs.started", {"pid": 1, "flush_unmanaged": False, "kernel": "6.1"})
    read(f, eff.payload["request"], Table())
    twos = Table().with_service(Service(K1, "twos"), [])  # a scheduler this kernel lacks
    (eff,) = f("lvsd.table_desired", {"version": 1, "table": twos.to_dict(), "reason": "started", "digest": "d",
                                      "services": 1, "dests": 0})
    now = 0
    (eff,) = f("ipvs.batch_applied", {"batch": eff.payload["batch"], "applied": 0, "failed": 1, "duration_us": 1}, mono=now)
    assert eff.type == "ipvs.read_table" and eff.payload["reason"] == "op_failed"  # the first time: at once
    (eff,) = read(f, eff.payload["request"], Table())
    waits = []
    for _ in range(4):
        assert f("ipvs.batch_applied", {"batch": eff.payload["batch"], "applied": 0, "failed": 1, "duration_us": 1}, mono=now) == []
        dl = f.core.next_deadline(f.state)
        waits.append((dl - now) // 10**9)
        now = dl
        (eff,) = f("timer.fired", {"service": "ipvs", "deadline_ns": dl}, mono=now)
        assert eff.payload["reason"] == "retry"
        (eff,) = read(f, eff.payload["request"], Table())
        assert eff.type == "ipvs.apply"
    assert waits == [1, 2, 4, 8]
    assert f("ipvs.batch_applied", {"batch": eff.payload["batch"], "applied": 1, "failed": 0, "duration_us": 1}) == []
    assert f.state.fail_streak == 0 and f.core.next_deadline(f.state) is None


@pytest.mark.parametrize("seed", range(40))
def test_planned_result_is_the_plan_folded(seed):
    """The core's expected table after a batch is computed from the plan's services, not by
    folding 11,000 ops one by one: the same table as folding them."""
    import random

    from lvsbus_services.ipvs.core import planned_result

    rnd = random.Random(seed)

    def rand_table():
        t = Table()
        for i in rnd.sample(range(12), rnd.randint(0, 8)):
            svc = Service(ServiceKey.tcp(f"10.0.0.{i + 1}", 80), rnd.choice(["rr", "wlc", "sh"]), rnd.choice([0, 300]))
            t = t.with_service(svc, [Dest(f"10.1.0.{j + 1}", 80, rnd.choice(["nat", "direct"]), rnd.randint(0, 3))
                                     for j in rnd.sample(range(6), rnd.randint(0, 5))])
        return t

    actual, desired = rand_table(), rand_table()
    managed = [k for k in actual.keys() if rnd.random() < 0.5]
    only = None if rnd.random() < 0.5 else [k for k in list(actual.keys()) + list(desired.keys()) if rnd.random() < 0.5]
    ops = plan(actual, desired, managed, flush_unmanaged=rnd.random() < 0.2, only=only)
    assert planned_result(actual, desired, ops) == apply_ops(actual, ops)


def test_the_shells_report_of_a_chunk_runs_of_accepted_ops_and_each_refused_op_in_its_place():
    """The real shell and the simulator report a batch with this one function (services/ipvs/core.py)."""
    from lvsbus_services.ipvs.core import applied_events, batch_applied

    ops = [{"op": "add_dest", "service": "tcp:10.0.0.1:80", "dest": f"192.168.0.{i}:80", "attrs": {}} for i in range(5)]
    ok, eexist = (None, "", 10), (17, "File exists", 0)
    got = applied_events(7, 256, ops, [ok, ok, eexist, ok, ok])
    assert got == [
        ("ipvs.ops_applied", {"batch": 7, "first": 256, "count": 2, "duration_us": 20}),
        ("ipvs.op_failed", {"batch": 7, "op": ops[2], "errno": 17, "error": "File exists"}),
        ("ipvs.ops_applied", {"batch": 7, "first": 259, "count": 2, "duration_us": 20}),
    ]
    assert applied_events(1, 0, ops[:1], [eexist]) == [("ipvs.op_failed", {"batch": 1, "op": ops[0], "errno": 17,
                                                                          "error": "File exists"})]
    second = applied_events(7, 261, ops[:2], [eexist, ok])
    assert batch_applied(7, got + second, 900) == {"batch": 7, "applied": 5, "failed": 2, "duration_us": 900}
    assert batch_applied(8, [], 0) == {"batch": 8, "applied": 0, "failed": 0, "duration_us": 0}


def test_the_simulated_kernel_refuses_with_the_kernels_errno():
    """EEXIST for an add of something present, ESRCH for any other op on a service absent, ENOENT
    for a destination absent (as ip_vs_ctl.c answers; tests/kernel/test_netlink.py asks the real one)."""
    import errno

    from lvsbus.ipvs.table import Refused

    svc = {"op": "add_service", "service": "tcp:10.0.0.1:80", "dest": None,
           "attrs": {"scheduler": "rr", "persistence": 0, "netmask": 32, "flags": []}}
    dest = {"op": "add_dest", "service": "tcp:10.0.0.1:80", "dest": "192.168.0.1:80",
            "attrs": {"forwarding": "direct", "weight": 1}}
    t = apply_ops(Table(), [svc, dest])

    def refusal(table, op):
        with pytest.raises(Refused) as ei:
            apply_ops(table, [op], strict=True)
        return ei.value.errno

    assert refusal(t, svc) == errno.EEXIST and refusal(t, dest) == errno.EEXIST
    for kind in ("edit_service", "del_service"):
        assert refusal(Table(), {**svc, "op": kind}) == errno.ESRCH
    assert refusal(Table(), dest) == errno.ESRCH  # a destination of a service absent
    for kind in ("edit_dest", "del_dest"):
        assert refusal(t, {**dest, "op": kind, "dest": "192.168.0.9:80"}) == errno.ENOENT
    assert apply_ops(t, [svc, dest], strict=False) == t  # not strict: refused ops are skipped


def test_global_ops_fold_as_the_kernel_applies_them():
    from lvsbus_services.ipvs.core import apply_global

    op = {"op": "set_timeouts", "service": "", "dest": None, "attrs": {"tcp": 900, "tcpfin": 0, "udp": 60}}
    assert apply_global({"tcp": 1, "tcpfin": 120, "udp": 1}, None, op)[0] == {"tcp": 900, "tcpfin": 120, "udp": 60}
    master = {"state": "master", "ifname": "eth1", "syncid": 1}
    start = {"op": "start_daemon", "service": "", "dest": None, "attrs": master}
    _t, daemons = apply_global(None, [{"state": "master", "ifname": "eth0", "syncid": 9}, {"state": "backup"}], start)
    assert daemons == [{"state": "backup"}, master]
    stop = {"op": "stop_daemon", "service": "", "dest": None, "attrs": {"state": "backup"}}
    assert apply_global(None, daemons, stop)[1] == [master]


SCALEOUT = """
[router.lvs1]
address = "192.0.2.1"

[virtual.web]
address = "10.200.0.1"
port = 80
scheduler = "mh"
forwarding = "direct"

[virtual.web.server.s1]
address = "10.0.1.1"

[scaleout]
local_as = 65001
peer_as = 65000
peers = ["192.0.2.254"]
"""


def test_scaleout_sets_the_sloppy_sysctls_once_and_only_with_scaleout():
    """A scale-out router takes the middle of a flow another router saw start (the upstream moved it):
    IPVS's sloppy_tcp and sloppy_sctp, set by the applier once read and found otherwise; not touched
    without [scaleout], nor when they cannot be read (a v1 dump)."""
    def run(text, sysctls, version=2):
        f = Feed()
        cfg = loads(text, "x.toml").config
        f("config.loaded", {"path": "x", "format": "toml", "digest": "d", "model": to_dict(cfg), "warnings": [],
                            "local_router": "lvs1", "reload": False, "diff": {}})
        f("ipvs.started", {"pid": 1, "flush_unmanaged": False, "kernel": "6.1"})
        p = {"request": 1, "table": Table().to_dict(), "timeouts": {"tcp": 900, "tcpfin": 120, "udp": 300},
             "daemons": [], "services": 0, "dests": 0, "duration_us": 1}
        if version == 2:
            p["sysctls"] = sysctls
        effs = f("ipvs.table_read", p, version=version)
        return f, [o for e in effs for o in e.payload["ops"] if o["op"] == "set_sysctl"]

    f, ops = run(SCALEOUT, {"sloppy_tcp": 0, "sloppy_sctp": 0})
    assert ops == [{"op": "set_sysctl", "service": "", "dest": None, "attrs": {"name": "sloppy_sctp", "value": 1}},
                   {"op": "set_sysctl", "service": "", "dest": None, "attrs": {"name": "sloppy_tcp", "value": 1}}]
    REGISTRY.validate("ipvs.apply", 2, {"batch": 1, "ops": ops, "reason": "reconcile", "version": 0})
    assert f.state.sysctls_have == {"sloppy_tcp": 1, "sloppy_sctp": 1}  # as once applied: not planned again
    # a snapshot of version 4 reads as none known, none wanted
    old = {k: v for k, v in f.core.snapshot(f.state).items() if not k.startswith("sysctls_")}
    st = f.core.restore(f.core.snapshot_upcasters[4](old))
    assert (st.sysctls_have, st.sysctls_want) == (None, {})
    assert run(SCALEOUT, {"sloppy_tcp": 1, "sloppy_sctp": 1})[1] == []  # already so
    assert run(SCALEOUT, None)[1] == []  # not readable: nothing to write to
    assert run(SCALEOUT, None, version=1)[1] == []  # a record from before: as it decided then
    assert run(CONFIG, {"sloppy_tcp": 0, "sloppy_sctp": 0})[1] == []  # no scale-out: the kernel's are left


def test_the_shell_reads_and_writes_the_ipvs_sysctls_and_runs_them_in_order(tmp_path):
    from lvsbus_services.ipvs import shell

    assert shell.read_sysctls(str(tmp_path)) is None  # no ip_vs: not readable
    for name in ("sloppy_tcp", "sloppy_sctp"):
        (tmp_path / name).write_text("0\n")
    assert shell.read_sysctls(str(tmp_path)) == {"sloppy_tcp": 0, "sloppy_sctp": 0}
    code, err, _us = shell.write_sysctl("sloppy_tcp", 1, str(tmp_path))
    assert (code, err) == (None, "") and (tmp_path / "sloppy_tcp").read_text() == "1\n"
    assert shell.write_sysctl("conntrack", 1, str(tmp_path))[0] == 22  # only those it manages: EINVAL
    assert shell.write_sysctl("sloppy_sctp", 1, str(tmp_path / "nope"))[0] == 2  # ENOENT, said with its path
