"""Services drop privileges: the capability bookkeeping (pure), the drop itself on real child
processes (root), and two real routers in network namespaces whose services show exactly their
kept sets in /proc/PID/status (every thread) while failover still adds the VIP and sends
gratuitous ARP.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lvsbus.host import privileges as P
from tests.helpers.procs import task_sets

ROOT = Path(__file__).resolve().parents[2]
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (capabilities to drop)")

STATUS = """Name:\tpython
Uid:\t0\t0\t0\t0
CapInh:\t0000000000000000
CapPrm:\t000001fffeffffff
CapEff:\t000001fffeffffff
CapBnd:\t000001fffeffffff
CapAmb:\t0000000000000000
NoNewPrivs:\t0
Seccomp:\t0
"""
ALL = 0x1FFFEFFFFFF  # everything but CAP_SYS_RESOURCE (24), as on this project's CI hosts
NET = P.mask(["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"])


# -- bookkeeping (pure) ---------------------------------------------------------------------------


def test_names_and_masks():
    assert P.CAP_NUMBERS["CAP_NET_ADMIN"] == 12 and P.CAP_NUMBERS["CAP_NET_RAW"] == 13
    assert P.CAP_NUMBERS["CAP_NET_BIND_SERVICE"] == 10 and P.CAP_NUMBERS["CAP_CHECKPOINT_RESTORE"] == 40
    assert P.mask(["net_admin", "CAP_NET_RAW"]) == 0x3000
    assert P.names(0x3400) == ["CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert P.names(1 << 45) == ["cap_45"]
    assert P.describe(0) == "none" and P.describe(1 << 12) == "CAP_NET_ADMIN"
    with pytest.raises(ValueError, match="unknown capability 'CAP_FLY'"):
        P.mask(["CAP_FLY"])


def test_parse_status():
    s = P.parse_status(STATUS)
    assert s == P.CapSets(inheritable=0, permitted=ALL, effective=ALL, bounding=ALL, ambient=0, no_new_privs=False)


def test_plan_as_root_lowers_every_set_to_what_is_kept():
    cur = P.parse_status(STATUS)
    p = P.plan(P.SERVICE_CAPS["pulse"], cur, last=40)
    assert p.keep == NET and p.bounding_lowered and p.missing == 0
    assert set(p.bounding_drop) == {c for c in range(41) if ALL >> c & 1} - {10, 12, 13}
    assert p.after(cur) == P.CapSets(0, NET, NET, NET, 0, True)
    none = P.plan((), cur, last=40)
    assert none.keep == 0 and none.after(cur) == P.CapSets(0, 0, 0, 0, 0, True)


def test_plan_without_setpcap_keeps_the_bounding_set_and_cannot_add():
    """Under the systemd unit without CAP_SETPCAP: the bounding set cannot be lowered (no_new_privs
    holds the line at exec); what the supervisor lacks cannot be kept."""
    unit = P.CapSets(permitted=NET, effective=NET, bounding=NET, inheritable=NET, ambient=NET)
    p = P.plan(["CAP_NET_ADMIN", "CAP_SYS_ADMIN"], unit, last=40)
    assert not p.bounding_lowered and p.bounding_drop == ()
    assert p.keep == 1 << 12 and p.missing == 1 << 21
    assert p.after(unit) == P.CapSets(inheritable=0, permitted=1 << 12, effective=1 << 12, bounding=NET, ambient=0,
                                      no_new_privs=True)


def _config(metrics_address=None, kinds=("tcp_connect",), server_kinds=()):
    check = lambda k: SimpleNamespace(kind=SimpleNamespace(value=k))  # noqa: E731
    servers = tuple(SimpleNamespace(check=check(k)) for k in server_kinds) + (SimpleNamespace(check=None),)
    vss = tuple(SimpleNamespace(check=check(k), servers=servers) for k in kinds)
    return SimpleNamespace(metrics_address=metrics_address, virtual_services=vss)


def test_what_each_service_keeps():
    assert P.service_caps("pulse") == ("CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE")
    assert P.service_caps("ipvs") == ("CAP_NET_ADMIN",)
    for name in ("broker", "lvsd", "nanny", "metrics", "unknown"):
        assert P.service_caps(name, _config()) == ()
    assert P.service_caps("metrics", _config("127.0.0.1:9539")) == ()
    assert P.service_caps("metrics", _config("[::1]:80")) == ("CAP_NET_BIND_SERVICE",)
    # a check program (ping has cap_net_raw as a file capability): nanny keeps CAP_NET_RAW
    assert P.service_caps("nanny", _config(kinds=("http", "program"))) == ("CAP_NET_RAW",)
    assert P.service_caps("nanny", _config(server_kinds=("program",))) == ("CAP_NET_RAW",)
    assert P.service_caps("pulse", _config(kinds=("program",))) == P.service_caps("pulse")
    # bgp: what the BIRD it starts needs; nothing when it drives the operator's running BIRD
    bird = ("CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW")
    so = SimpleNamespace(**vars(_config()), scaleout=SimpleNamespace(speaker="bird"))
    assert P.service_caps("bgp", so) == bird
    so.scaleout.speaker = "bird-running"
    assert P.service_caps("bgp", so) == ()


def test_program_checks_of_a_real_config(tmp_path):
    from lvsbus.config import load

    cfg = tmp_path / "lvs.toml"
    cfg.write_text('service = "lvs"\n[router.a]\naddress = "10.0.0.1"\n[heartbeat]\nenabled = false\n'
                   '[virtual.web]\naddress = "10.0.0.100"\n[virtual.web.check]\nkind = "program"\n'
                   'command = "/bin/true %h"\n[virtual.web.server.s1]\naddress = "10.0.1.1"\n')
    assert P.has_program_checks(load(str(cfg)).config)
    cfg.write_text(cfg.read_text().replace('kind = "program"\ncommand = "/bin/true %h"', 'kind = "tcp_connect"'))
    assert not P.has_program_checks(load(str(cfg)).config)


# -- the drop on real processes ------------------------------------------------------------------

THREADED = r"""
import threading, time, os
ready = threading.Event()
threading.Thread(target=lambda: (ready.set(), time.sleep(5)), daemon=True).start()
ready.wait()
print(os.getpid(), flush=True)
time.sleep(5)
"""


@ROOT_ONLY
def test_dropper_in_a_child_every_thread_and_what_it_executes():
    d = P.Dropper(P.SERVICE_CAPS["pulse"])
    want = d.plan.after(d.current)
    assert want.effective == NET & d.current.permitted
    p = subprocess.Popen([sys.executable, "-c", THREADED], stdout=subprocess.PIPE, preexec_fn=d)
    try:
        pid = int(p.stdout.readline())
        sets = task_sets(pid)
        assert len(sets) == 2 and all(s == want for s in sets), sets
    finally:
        p.kill()
        p.wait()
    # a program it runs (a notify command) gets the same sets as uid 0, not the whole bounding set back
    out = subprocess.run(["/bin/sh", "-c", "cat /proc/self/status"], preexec_fn=d, capture_output=True, text=True)
    assert P.parse_status(out.stdout) == want
    # nothing kept: a file-capability binary (ping has cap_net_raw) is refused at exec, not run privileged
    none = P.Dropper(())
    r = subprocess.run(["/bin/sh", "-c", "cat /proc/self/status; exec ping -c1 -W1 127.0.0.1"], preexec_fn=none,
                       capture_output=True, text=True)
    assert P.parse_status(r.stdout) == P.CapSets(0, 0, 0, 0, 0, True)
    if os.path.exists("/bin/ping"):
        assert r.returncode != 0
    assert P.read() == d.current  # the parent is untouched


@ROOT_ONLY
def test_without_setpcap_no_new_privs_still_stops_the_regain():
    """A supervisor holding only the systemd unit's set (no CAP_SETPCAP): the bounding set stays,
    yet the service runs with only its own capability, and so does whatever it executes."""
    inner = (
        "import subprocess, sys\n"
        "from lvsbus.host import privileges as P\n"
        "d = P.Dropper(['CAP_NET_ADMIN'])\n"
        "assert not d.plan.bounding_lowered\n"
        "out = subprocess.run(['/bin/sh', '-c', 'cat /proc/self/status'], preexec_fn=d, capture_output=True, text=True)\n"
        "got = P.parse_status(out.stdout)\n"
        "print(got == d.plan.after(d.current), hex(got.effective), hex(got.bounding))\n"
    )
    unit = P.Dropper(("CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"))
    r = subprocess.run([sys.executable, "-c", inner], preexec_fn=unit, capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.split() == ["True", "0x1000", "0x3400"], r.stderr


@ROOT_ONLY
def test_a_failed_drop_means_the_child_never_runs(tmp_path):
    """The supervisor's Child: a drop that fails (here: a broken capset) is a failed start,
    which the supervision treats as a death (restart, then the restart loop)."""
    from lvsbus.router.supervisor import Child

    marker = tmp_path / "ran"
    d = P.Dropper(())
    d._header.version = 0x1  # not a capability ABI version: capset fails with EINVAL
    c = Child("x", [sys.executable, "-c", f"open({str(marker)!r}, 'w')"], dropper=d)
    c.start()
    assert c.proc is None and not c.alive() and "dropping privileges failed" in (c.start_error or "")
    time.sleep(0.3)
    assert not marker.exists()


# -- two routers in network namespaces ---------------------------------------------------------


# -- in the kernel tier's VM: the applier with CAP_NET_ADMIN only against a real IPVS -----------

APPLIER_CONFIG = """
[router.lvs1]
address = "127.0.0.1"

[sync_daemon]
enabled = true
interface = "sync1"
sync_id = 9

[virtual.web]
address = "10.0.0.1"
port = 80
scheduler = "wlc"

[virtual.web.server.a]
address = "192.168.1.1"
"""


@pytest.mark.skipif(os.environ.get("LVSBUS_IN_VM") != "1",
                    reason="needs a kernel with IPVS: runs inside the kernel tier's VM (tests/kernel/test_host_tier.py)")
def test_applier_with_net_admin_only_in_the_vm(tmp_path):
    """The applier under the router's drop (CAP_NET_ADMIN, nothing else, no_new_privs) dumps,
    reconciles and runs the sync daemon on a real IPVS; without CAP_NET_ADMIN IPVS refuses it."""
    from lvsbus.ipvs.table import Dest, Service, ServiceKey, Table
    from tests.kernel.harness import KernelRig, kernel_table

    subprocess.run(["modprobe", "ip_vs"], check=True)
    subprocess.run(["ip", "link", "add", "sync1", "type", "dummy"], capture_output=True)
    subprocess.run(["ip", "link", "set", "sync1", "up", "multicast", "on"], check=True)
    probe = "from lvsbus_services.ipvs.netlink import Ipvs\nwith Ipvs() as x: print(len(x.dump()))"
    bare = subprocess.run([sys.executable, "-c", probe], preexec_fn=P.Dropper(()), capture_output=True, text=True, cwd=ROOT)
    assert bare.returncode != 0 and ("EPERM" in bare.stderr or "Operation not permitted" in bare.stderr
                                     or "errno 1" in bare.stderr.lower() or "(1," in bare.stderr), bare.stderr[-500:]
    ok = subprocess.run([sys.executable, "-c", probe], preexec_fn=P.Dropper(P.service_caps("ipvs")), capture_output=True,
                        text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr[-1000:]

    cfg = tmp_path / "lvs.toml"
    cfg.write_text(APPLIER_CONFIG)
    r = KernelRig(tmp_path, cfg)
    try:
        web = ServiceKey.tcp("10.0.0.1", 80)
        want = Table().with_service(Service(web, "wlc"), [Dest("192.168.1.1", 80, "nat", 1), Dest("192.168.1.2", 80, "nat", 3)])
        r.publish_table(want)
        r.procs["ipvs"] = subprocess.Popen(
            [sys.executable, "-m", "lvsbus_services.ipvs", "--state-dir", r.dirs.root, "--config", str(cfg),
             "--run-start-seq", str(r.run_start)],
            cwd=ROOT, stderr=open(tmp_path / "ipvs.err", "ab"), env={**os.environ, "LVSBUS_LOG_FORMAT": "json"},
            preexec_fn=P.Dropper(P.service_caps("ipvs")))
        r.wait(lambda: r.events("ipvs.batch_applied"), 60, "the batch applied")
        assert kernel_table() == want and not r.events("ipvs.op_failed") and not r.events("ipvs.unavailable")
        assert all(s == P.CapSets(0, 1 << 12, 1 << 12, 1 << 12, 0, True) for s in task_sets(r.procs["ipvs"].pid))
        r.publish("router.role_changed", {"node": "lvs1", "old": "BACKUP", "new": "ACTIVE", "reason": "peer_dead",
                                          "priority": 100, "epoch": 1, "peer": None, "group": "default"}, source="pulse")
        daemons = lambda: subprocess.run(["ipvsadm", "-L", "--daemon"], capture_output=True, text=True).stdout  # noqa: E731
        r.wait(lambda: "master sync daemon (mcast=sync1, syncid=9" in daemons(), 30, "the master sync daemon")
        r.verify_replay("ipvs")
    finally:
        r.close()
        subprocess.run(["ipvsadm", "--stop-daemon", "master"], capture_output=True)
        subprocess.run(["ipvsadm", "-C"], capture_output=True)
