"""Services drop privileges: the capability bookkeeping (pure), the drop itself on real child
processes (root), and two real routers in network namespaces whose services show exactly their
kept sets in /proc/PID/status (every thread) while failover still adds the VIP and sends
gratuitous ARP.
"""
from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lvsbus import privileges as P
from tests.netns import netns_module  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parent.parent
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


def _task_sets(pid: int) -> list[P.CapSets]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as fh:
            out.append(P.parse_status(fh.read()))
    return out


@ROOT_ONLY
def test_dropper_in_a_child_every_thread_and_what_it_executes():
    d = P.Dropper(P.SERVICE_CAPS["pulse"])
    want = d.plan.after(d.current)
    assert want.effective == NET & d.current.permitted
    p = subprocess.Popen([sys.executable, "-c", THREADED], stdout=subprocess.PIPE, preexec_fn=d)
    try:
        pid = int(p.stdout.readline())
        sets = _task_sets(pid)
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
        "from lvsbus import privileges as P\n"
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
    from lvsbus.router import Child

    marker = tmp_path / "ran"
    d = P.Dropper(())
    d._header.version = 0x1  # not a capability ABI version: capset fails with EINVAL
    c = Child("x", [sys.executable, "-c", f"open({str(marker)!r}, 'w')"], dropper=d)
    c.start()
    assert c.proc is None and not c.alive() and "dropping privileges failed" in (c.start_error or "")
    time.sleep(0.3)
    assert not marker.exists()


# -- two routers in network namespaces ---------------------------------------------------------

SERVICES = ("broker", "pulse", "nanny", "ipvs", "metrics")
KEPT = {"broker": 0, "pulse": NET, "nanny": 0, "ipvs": 1 << 12, "metrics": 0, "lvsd": 0}
NOTIFY = """#!/bin/sh
{ echo "$*"; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; } >> %s
"""


@pytest.fixture(scope="module")
def topo(netns_module):  # noqa: F811  (the fixture)
    from tests.helpers.routers import start_responders

    t = netns_module(routers=2)
    start_responders(t, t.routers)
    return t


@pytest.fixture
def cluster(topo, tmp_path):
    from tests.helpers.routers import clusters
    from tests.netns import router_toml

    with clusters(topo, tmp_path) as new:
        def make(port: int = 539, **cfg):
            c = new(**cfg)
            notify = tmp_path / "notify.sh"
            notify.write_text(NOTIFY % (tmp_path / "notify.out"))
            os.chmod(notify, 0o755)
            text = router_toml(topo, tmp_path / "hb.key", port=port, keepalive=c.cfg["keepalive"],
                               deadtime=c.cfg["deadtime"], extra=f'\n[notify]\nnotify = "{notify}"\n')
            c.config.write_text('metrics_address = "127.0.0.1:9539"\n' + text)
            return c

        yield make


def _sets_of(pid: int) -> list[P.CapSets]:
    return _task_sets(pid)


def _assert_kept(c, r: str, service: str, want: int) -> None:
    pid = c.pid_of(r, service)
    sets = _sets_of(pid)
    expected = P.CapSets(inheritable=0, permitted=want, effective=want, bounding=want, ambient=0, no_new_privs=True)
    bad = [s for s in sets if s != expected]
    assert not bad, f"{r} {service} (pid {pid}, {len(sets)} threads): {bad[0]} != {expected}"


@pytest.mark.netns
@pytest.mark.slow
@ROOT_ONLY
def test_routers_services_keep_exactly_their_capabilities_and_fail_over(topo, cluster, tmp_path):
    c = cluster()
    c.start()
    c.wait_steady("r1", timeout=30)
    c.wait(lambda: all(c.started(r, "metrics") for r in topo.routers), 10.0, "metrics started")
    c.wait(lambda: c.events("r1", ("lvsd.started",)), 10.0, "lvsd on r1")
    mine = P.read()
    for r in topo.routers:
        for service in SERVICES + ("lvsd",):  # the backup's lvsd is its standby
            _assert_kept(c, r, service, KEPT[service])
        for service in ("broker", "pulse"):  # the warm spares: the same set as the service they replace
            c.wait(lambda: [l for l in c.err_lines(r) if l.get("event") == "spare_waiting" and l.get("service") == service],
                   10.0, f"{r}'s {service} spare")
            spare = [l["pid"] for l in c.err_lines(r) if l.get("event") == "spare_started" and l.get("service") == service][-1]
            sets = _sets_of(spare)
            want = P.CapSets(inheritable=0, permitted=KEPT[service], effective=KEPT[service], bounding=KEPT[service],
                             ambient=0, no_new_privs=True)
            assert sets and all(x == want for x in sets), f"{r} {service} spare (pid {spare}): {sets[0]} != {want}"
        sup = P.read(c.procs[r].pid)  # ip netns exec execs the router: its pid is the supervisor's
        assert sup.effective == mine.effective and sup.bounding == mine.bounding and not sup.no_new_privs
        line = [l for l in c.err_lines(r) if l.get("event") == "privileges_dropped"][-1]
        assert line["kept"] == {"broker": "none", "pulse": "CAP_NET_BIND_SERVICE CAP_NET_ADMIN CAP_NET_RAW",
                                "nanny": "none", "lvsd": "none", "ipvs": "CAP_NET_ADMIN", "metrics": "none",
                                "web": "none"}
        assert line["bounding_set"] == "lowered to the kept set"
    # pulse bound the privileged heartbeat port (CAP_NET_BIND_SERVICE kept)
    assert ":539 " in topo.run("r1", "ss", "-uln").stdout
    # notify commands: uid 0 with pulse's set, no_new_privs
    notes = tmp_path / "notify.out"
    c.wait(lambda: notes.exists() and "r1 MASTER" in notes.read_text(), 5.0, "r1's notify")
    text = notes.read_text()
    assert "CapEff:\t0000000000003400" in text and "CapBnd:\t0000000000003400" in text and "NoNewPrivs:\t1" in text

    # failover with dropped capabilities: r2 adds the VIP and announces it (GARP seen on the wire)
    arp = topo.socket("c", socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    try:
        arp.bind(("eth0", 0))
        os.killpg(c.procs["r1"].pid, signal.SIGKILL)
        c.procs["r1"].wait(5)
        topo.run("r1", "ip", "addr", "del", "10.99.1.50/32", "dev", "eth0", check=False)
        c.wait_answer("r2", timeout=8.0)
        # the VIP may answer before the broker has recorded the decision (effects run as they are
        # published): wait for the record
        c.wait(lambda: c.role("r2") == "ACTIVE", 3.0, "r2 ACTIVE in its log")
        assert topo.has_address("r2", "10.99.1.50")
        from tests.netns import router_mac
        from tests.helpers.routers import capture_frames

        mac = bytes.fromhex(router_mac(2, 1).replace(":", ""))
        vip = socket.inet_aton("10.99.1.50")
        frames = capture_frames(arp, lambda f: f[6:12] == mac and f[12:14] == b"\x08\x06" and f[28:32] == vip == f[38:42],
                          enough=lambda got: len({struct.unpack("!H", g[20:22])[0] for g in got}) == 2)
        assert sorted({struct.unpack("!H", f[20:22])[0] for f in frames}) == [1, 2]  # request and reply
    finally:
        arp.close()
    assert topo.neigh_mac("c", "10.99.1.50") == router_mac(2, 1)
    failed = ("effect_failed", "garp_failed", "vip_add_failed", "vip_del_failed", "link_poll_failed", "rebind_failed",
              "service_start_failed", "service_died")
    assert not [l for r in topo.routers for l in c.err_lines(r) if l.get("event") in failed]
    c.wait(lambda: c.events("r2", ("lvsd.started",)), 10.0, "lvsd on r2")
    for service in SERVICES + ("lvsd",):
        _assert_kept(c, "r2", service, KEPT[service])
    c.wait(lambda: "r2 MASTER" in notes.read_text(), 5.0, "r2's notify")


@pytest.mark.netns
@pytest.mark.slow
@ROOT_ONLY
def test_a_reload_that_adds_a_check_program_gives_nanny_net_raw(topo, cluster):
    """ping in a check program needs CAP_NET_RAW (a file capability): the supervisor restarts nanny
    with it when a reload brings the first program check, and the check passes."""
    c = cluster()
    c.start("r1")
    c.wait(lambda: c.role("r1") == "ACTIVE", 20.0, "r1 active alone")
    c.wait(lambda: c.started("r1", "nanny"), 5.0, "nanny")
    _assert_kept(c, "r1", "nanny", 0)
    old = c.pid_of("r1", "nanny")
    c.config.write_text(c.config.read_text().replace(
        '[virtual.echo.check]\nkind = "udp"', '[virtual.echo.check]\nkind = "program"\ncommand = "ping -c1 -W1 127.0.0.1"\n'
        "interval = 0.5\ntimeout = 0.5"))
    c.procs["r1"].send_signal(signal.SIGHUP)
    c.wait(lambda: c.started("r1", "nanny") == 2, 10.0, "nanny restarted with the new set")
    assert [l for l in c.err_lines("r1") if l.get("event") == "service_privileges_changed"][-1]["new"] == "CAP_NET_RAW"
    assert c.pid_of("r1", "nanny") != old
    _assert_kept(c, "r1", "nanny", 1 << 13)
    reload_seq = [e for e in c.events("r1", ("config.loaded",)) if e.payload["reload"]][-1].seq
    c.wait(lambda: [ok for e in c.events("r1", ("health.check_results",)) if e.seq > reload_seq
                    for ok, d in zip(e.payload["ok"], e.payload["detail"]) if ok], 10.0, "a passing ping check")


@pytest.mark.netns
@pytest.mark.slow
@ROOT_ONLY
def test_keep_privileges_runs_the_services_with_the_supervisors(topo, tmp_path):
    from tests.netns import router_toml, write_key

    key = write_key(tmp_path / "hb.key")
    cfg = tmp_path / "lvs.toml"
    cfg.write_text(router_toml(topo, key))
    err = tmp_path / "r1.err"
    p = topo.popen("r1", [sys.executable, "-m", "lvsbus.cli", "router", "--config", str(cfg), "--state-dir",
                          str(tmp_path / "s"), "--keep-privileges"], stdout=subprocess.DEVNULL, stderr=open(err, "ab"),
                   cwd=str(ROOT), env={**os.environ, "LVSBUS_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)})
    try:
        import json

        deadline = time.monotonic() + 20
        pids: dict = {}
        while time.monotonic() < deadline and not {"pulse", "nanny"} <= set(pids):
            for line in err.read_text(errors="replace").splitlines():
                if line.startswith("{") and '"service_started"' in line:
                    j = json.loads(line)
                    pids[j["service"]] = j["pid"]
            time.sleep(0.1)
        assert "privileges_kept" in err.read_text()
        mine = P.read()
        for name in ("pulse", "nanny"):
            s = P.read(pids[name])
            assert s.effective == mine.effective and s.bounding == mine.bounding and not s.no_new_privs
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


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
    from lvsbus.ipvs_table import Dest, Service, ServiceKey, Table
    from tests.kernel.harness import Router, kernel_table

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
    r = Router(tmp_path, cfg)
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
        assert all(s == P.CapSets(0, 1 << 12, 1 << 12, 1 << 12, 0, True) for s in _task_sets(r.procs["ipvs"].pid))
        r.publish("router.role_changed", {"node": "lvs1", "old": "BACKUP", "new": "ACTIVE", "reason": "peer_dead",
                                          "priority": 100, "epoch": 1, "peer": None}, source="pulse")
        daemons = lambda: subprocess.run(["ipvsadm", "-L", "--daemon"], capture_output=True, text=True).stdout  # noqa: E731
        r.wait(lambda: "master sync daemon (mcast=sync1, syncid=9" in daemons(), 30, "the master sync daemon")
        r.verify_replay("ipvs")
    finally:
        r.close()
        subprocess.run(["ipvsadm", "--stop-daemon", "master"], capture_output=True)
        subprocess.run(["ipvsadm", "-C"], capture_output=True)
