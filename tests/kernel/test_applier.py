"""The applier as a real process (python -m lvsbus_services.ipvs) on a real bus against a real IPVS:
reconcile from a messy start (one reconcile makes it exact, a second does nothing), unmanaged
services left alone, timeouts and the sync daemon from the config and the role, and SIGKILL
mid-way through a big batch followed by a restart that ends exact."""
from __future__ import annotations

import subprocess

import pytest

from lvsbus.ipvs_table import Dest, Service, ServiceKey, Table

from .conftest import ipvsadm
from .harness import Router, kernel_table

CONFIG = """
[router.lvs1]
address = "127.0.0.1"

[ipvs_timeouts]
tcp = 901
tcpfin = 61
udp = 121

[sync_daemon]
enabled = true
interface = "sync0"
sync_id = 7

[virtual.web]
address = "10.0.0.1"
port = 80
scheduler = "wlc"

[virtual.web.server.a]
address = "192.168.1.1"

[virtual.dns]
address = "10.0.0.2"
port = 53
protocol = "udp"
scheduler = "rr"

[virtual.dns.server.a]
address = "192.168.1.1"
"""

WEB = ServiceKey.tcp("10.0.0.1", 80)
DNS = ServiceKey.tcp("10.0.0.2", 53, "udp")


def desired() -> Table:
    t = Table().with_service(Service(WEB, "wlc"), [Dest("192.168.1.1", 80, "nat", 1), Dest("192.168.1.2", 80, "nat", 5)])
    return t.with_service(Service(DNS, "rr"), [Dest("192.168.1.1", 53, "nat", 1)])


@pytest.fixture
def router(tmp_path, ipvs):
    subprocess.run(["ip", "link", "add", "sync0", "type", "dummy"], capture_output=True)
    subprocess.run(["ip", "link", "set", "sync0", "up", "multicast", "on"], check=True)
    cfg = tmp_path / "lvs.toml"
    cfg.write_text(CONFIG)
    r = Router(tmp_path, cfg)
    yield r
    r.close()
    for s in ("master", "backup"):
        subprocess.run(["ipvsadm", "--stop-daemon", s], capture_output=True)


def test_messy_start_one_reconcile_then_nothing(router):
    # the kernel before: a stale destination, a wrong weight, the wrong scheduler,
    # a managed service that is no longer desired... and another tool's service
    for line in ("-A -t 10.0.0.1:80 -s rr", "-a -t 10.0.0.1:80 -r 192.168.1.1:80 -m -w 3",
                 "-a -t 10.0.0.1:80 -r 192.168.1.99:80 -m -w 1", "-A -t 10.0.0.3:80 -s rr",
                 "-A -t 192.0.2.1:25 -s wlc", "-a -t 192.0.2.1:25 -r 192.0.2.2:25 -g -w 1"):
        ipvsadm(*line.split())
    # 10.0.0.3:80 is managed once a desired table named it
    router.publish_table(Table().with_service(Service(ServiceKey.tcp("10.0.0.3", 80), "rr")))
    router.publish_table(desired())
    router.start("ipvs")
    other = ServiceKey.tcp("192.0.2.1", 25)
    want = desired().with_service(Service(other, "wlc"), [Dest("192.0.2.2", 25, "direct", 1)])
    router.wait(lambda: router.events("ipvs.batch_applied"), 60, "the batch reported")
    assert kernel_table() == want  # exact, and the unmanaged service kept
    applies = router.events("ipvs.apply")
    assert len(applies) == 1
    kinds = [o["op"] for o in applies[0].payload["ops"]]
    assert kinds == ["set_timeouts", "del_dest", "del_service", "add_service", "edit_service", "add_dest", "add_dest", "edit_dest"] \
        or sorted(kinds) == sorted(["set_timeouts", "del_dest", "del_service", "add_service", "edit_service", "add_dest", "add_dest", "edit_dest"])
    assert not router.events("ipvs.op_failed")
    assert [(e.payload["first"], e.payload["count"]) for e in router.events("ipvs.ops_applied")] == [(0, len(kinds))]
    assert ipvsadm("-L", "--timeout").split()[-3:] == ["901", "61", "121"]
    # the role: master sync daemon on the active router
    router.publish("router.role_changed", {"node": "lvs1", "old": "BACKUP", "new": "ACTIVE", "reason": "peer_dead",
                                          "priority": 100, "epoch": 1, "peer": None}, source="pulse")
    router.wait(lambda: "master sync daemon (mcast=sync0, syncid=7" in ipvsadm("-L", "--daemon"), 30, "master sync daemon")
    router.publish("router.role_changed", {"node": "lvs1", "old": "ACTIVE", "new": "BACKUP", "reason": "fenced",
                                          "priority": 100, "epoch": 1, "peer": None}, source="pulse")
    router.wait(lambda: "backup sync daemon (mcast=sync0, syncid=7" in ipvsadm("-L", "--daemon")
                and "master" not in ipvsadm("-L", "--daemon"), 30, "backup sync daemon only")
    # a second reconcile (restart) does nothing
    n_apply = len(router.events("ipvs.apply"))
    router.kill("ipvs", 15)
    mark = router.events()[-1].seq
    router.start("ipvs")
    router.wait(lambda: router.events("ipvs.table_read", after=mark), 60, "the restart's dump")
    import time

    time.sleep(1.0)
    assert len(router.events("ipvs.apply")) == n_apply
    assert kernel_table() == want
    router.verify_replay("ipvs")


def test_sigkill_midway_then_exact(router):
    big = Table()
    for i in range(200):
        k = ServiceKey.tcp(f"10.10.{i // 250}.{i % 250 + 1}", 80)
        big = big.with_service(Service(k, "wrr"), [Dest(f"192.168.{j}.{i % 250 + 1}", 80, "nat", j + 1) for j in range(10)])
    router.publish_table(big)
    router.start("ipvs")
    router.wait(lambda: router.events("ipvs.ops_applied"), 120, "the batch under way (its first chunk of 256 ops)", every=0.05)
    router.kill("ipvs")  # SIGKILL mid-way
    part = kernel_table()
    assert 0 < sum(len(e.dests) for _k, e in part.items()) < 2000, "killed mid-way"
    mark = router.events()[-1].seq
    router.start("ipvs")
    router.wait(lambda: router.events("ipvs.batch_applied", after=mark), 300, "the restart's batch done", every=0.5)
    assert kernel_table() == big
    assert not router.events("ipvs.op_failed")
    # and the first batch's ops were not repeated: the second batch is the remainder
    applies = router.events("ipvs.apply")
    assert len(applies) == 2 and len(applies[1].payload["ops"]) < len(applies[0].payload["ops"])
    router.verify_replay("ipvs")  # across the SIGKILL too
