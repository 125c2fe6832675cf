"""The applier as a real process (python -m lvsbus_services.ipvs) on a real bus against a real IPVS:
reconcile from a messy start (one reconcile makes it exact, a second does nothing), unmanaged
services left alone, timeouts and the sync daemon from the config and the role, and SIGKILL
mid-way through a big batch followed by a restart that ends exact."""
from __future__ import annotations

import subprocess

import pytest

from lvsbus.ipvs.table import Dest, Service, ServiceKey, Table

from .conftest import ipvsadm
from .harness import KernelRig, kernel_table

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
    r = KernelRig(tmp_path, cfg)
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
                                          "priority": 100, "epoch": 1, "peer": None, "group": "default"}, source="pulse")
    router.wait(lambda: "master sync daemon (mcast=sync0, syncid=7" in ipvsadm("-L", "--daemon"), 30, "master sync daemon")
    router.publish("router.role_changed", {"node": "lvs1", "old": "ACTIVE", "new": "BACKUP", "reason": "fenced",
                                          "priority": 100, "epoch": 1, "peer": None, "group": "default"}, source="pulse")
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
    # 370 services x 10 real servers (4,070 ops, one batch: MAX_BATCH_OPS is 4,096), so that the
    # kill lands mid-way (with 200 x 10 the VM's second vCPU let the applier finish between the
    # first chunk's record and the kill, once in CI); the first chunk is looked for every 10 ms
    big = Table()
    for i in range(370):
        k = ServiceKey.tcp(f"10.10.{i // 250}.{i % 250 + 1}", 80)
        big = big.with_service(Service(k, "wrr"), [Dest(f"192.168.{j}.{i % 250 + 1}", 80, "nat", j + 1) for j in range(10)])
    router.publish_table(big)
    router.start("ipvs")
    router.wait(lambda: router.events("ipvs.ops_applied"), 120, "the batch under way (its first chunk of 256 ops)", every=0.01)
    router.kill("ipvs")  # SIGKILL mid-way
    part = kernel_table()
    done = len(part) + sum(len(e.dests) for _k, e in part.items())  # services first, then their dests
    assert 0 < done < 370 + 3700, f"killed mid-way ({done} of 4,070 ops in the kernel)"
    mark = router.events()[-1].seq
    router.start("ipvs")
    router.wait(lambda: router.events("ipvs.batch_applied", after=mark), 300, "the restart's batch done", every=0.5)
    assert kernel_table() == big
    assert not router.events("ipvs.op_failed")
    # and the first batch's ops were not repeated: the second batch is the remainder
    applies = router.events("ipvs.apply")
    assert len(applies) == 2 and len(applies[1].payload["ops"]) < len(applies[0].payload["ops"])
    router.verify_replay("ipvs")  # across the SIGKILL too


# -- scheduler flags, one-packet scheduling, the SIP persistence engine: config to kernel -------

OPTIONS = """
[router.lvs1]
address = "127.0.0.1"

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
address = "192.168.1.1"

[virtual.marked]
address = "10.0.0.6"
fwmark = 12
port = 53
protocol = "udp"
scheduler = "mh"
scheduler_flags = ["mh-fallback", "mh-port"]
ops = true

[virtual.marked.check]
kind = "udp"

[virtual.marked.server.a]
address = "192.168.1.1"
port = 0
"""


def _save_services() -> list[str]:
    return sorted(x.strip() for x in ipvsadm("--save", "-n").split("\n") if x.startswith("-A"))


def test_scheduler_flags_ops_and_sip_engine_from_the_config_to_the_kernel(tmp_path, ipvs):
    """lvsd (from the config) and the applier as processes: ipvsadm --save shows the flags, -o and
    --pe sip; a reload without them takes them off in place (edit_service, never delete + add)."""
    from lvsbus.config import loads_toml, to_dict
    from lvsbus_services.ipvs.core import desired_from_config, save_lines

    cfg = tmp_path / "lvs.toml"
    cfg.write_text(OPTIONS)
    want = desired_from_config(loads_toml(OPTIONS, "lvs.toml").config)
    r = KernelRig(tmp_path, cfg)
    try:
        r.start("ipvs")
        r.start("lvsd")  # no nanny: no real server is in service, the services alone
        r.wait(lambda: set(kernel_table().keys()) == set(want.keys()), 60, "both services in the kernel")
        expect = ["-A -f 12 -s mh -o -b mh-fallback,mh-port",
                  "-A -u 10.0.0.5:5060 -s sh -p 60 --pe sip -o -b sh-fallback,sh-port"]
        assert _save_services() == expect
        assert sorted(x for x in save_lines(want) if x.startswith("-A")) == expect  # `lvsbus ipvs save` agrees
        assert {k: e.service for k, e in kernel_table().items()} == {k: e.service for k, e in want.items()}
        assert "pe sip" in ipvsadm("-Ln") and "ops" in ipvsadm("-Ln")

        plain = OPTIONS.replace('scheduler_flags = ["sh-port", "sh-fallback"]\nops = true\n', "") \
                       .replace('persistence_engine = "sip"\n', "")
        mark = r.events()[-1].seq
        r.publish("config.loaded", {"path": str(cfg), "format": "toml", "digest": "plain",
                                    "model": to_dict(loads_toml(plain, "lvs.toml").config), "warnings": [],
                                    "local_router": "lvs1", "reload": True, "diff": {}})
        r.wait(lambda: "-A -u 10.0.0.5:5060 -s sh -p 60" in _save_services(), 60, "the options taken off")
        ops = [o for e in r.events("ipvs.apply", after=mark) for o in e.payload["ops"]]
        assert [(o["op"], o["service"]) for o in ops] == [("edit_service", "udp:10.0.0.5:5060")], ops
        assert not r.events("ipvs.op_failed")
        r.stop_and_settle("lvsd", "ipvs")
        r.verify_replay("lvsd", "ipvs")
    finally:
        r.close()


SCALEOUT = """
[router.lvs1]
address = "127.0.0.1"

[virtual.web]
address = "10.0.0.9"
port = 80
scheduler = "mh"
forwarding = "direct"

[virtual.web.server.a]
address = "192.168.1.1"

[scaleout]
local_as = 65001
peer_as = 65000
peers = ["192.0.2.254"]
"""


def test_scaleout_makes_ipvs_sloppy(tmp_path, ipvs):
    """Scale-out (docs/scaleout.md): the applier sets net.ipv4.vs.sloppy_tcp and sloppy_sctp, so a
    router takes the middle of a flow another router saw start; once, and it replays."""
    def sysctls():
        return {n: open(f"/proc/sys/net/ipv4/vs/{n}").read().strip() for n in ("sloppy_tcp", "sloppy_sctp")}

    for n in ("sloppy_tcp", "sloppy_sctp"):
        with open(f"/proc/sys/net/ipv4/vs/{n}", "w") as f:
            f.write("0\n")
    cfg = tmp_path / "lvs.toml"
    cfg.write_text(SCALEOUT)
    r = KernelRig(tmp_path, cfg)
    try:
        r.start("ipvs")
        r.wait(lambda: sysctls() == {"sloppy_tcp": "1", "sloppy_sctp": "1"}, 60, "sloppy TCP and SCTP on")
        ops = [o for e in r.events("ipvs.apply") for o in e.payload["ops"] if o["op"] == "set_sysctl"]
        assert sorted(o["attrs"]["name"] for o in ops) == ["sloppy_sctp", "sloppy_tcp"]
        reads = [e.payload["sysctls"] for e in r.events("ipvs.table_read")]
        assert reads and reads[0] == {"sloppy_tcp": 0, "sloppy_sctp": 0}
        assert not r.events("ipvs.op_failed")
        r.stop_and_settle("ipvs")
        r.verify_replay("ipvs")
    finally:
        r.close()
        for n in ("sloppy_tcp", "sloppy_sctp"):
            with open(f"/proc/sys/net/ipv4/vs/{n}", "w") as f:
                f.write("0\n")
