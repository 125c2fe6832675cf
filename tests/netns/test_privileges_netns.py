"""Two real routers in network namespaces whose services show exactly their kept capability sets in /proc/PID/status (every thread) while failover still adds the VIP and sends gratuitous ARP; a reload that adds a check program; --keep-privileges."""
from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvsbus.host import privileges as P
from tests.helpers.procs import task_sets

ROOT = Path(__file__).resolve().parents[2]


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (capabilities to drop)")


NET = P.mask(["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"])


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
    from lvsbus.demo.netns import router_toml

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


def _assert_kept(c, r: str, service: str, want: int) -> None:
    pid = c.pid_of(r, service)
    sets = task_sets(pid)
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
            sets = task_sets(spare)
            want = P.CapSets(inheritable=0, permitted=KEPT[service], effective=KEPT[service], bounding=KEPT[service],
                             ambient=0, no_new_privs=True)
            assert sets and all(x == want for x in sets), f"{r} {service} spare (pid {spare}): {sets[0]} != {want}"
        sup = P.read(c.procs[r].pid)  # ip netns exec execs the router: its pid is the supervisor's
        assert sup.effective == mine.effective and sup.bounding == mine.bounding and not sup.no_new_privs
        line = [l for l in c.err_lines(r) if l.get("event") == "privileges_dropped"][-1]
        assert line["kept"] == {"broker": "none", "pulse": "CAP_NET_BIND_SERVICE CAP_NET_ADMIN CAP_NET_RAW",
                                "nanny": "none", "lvsd": "none", "ipvs": "CAP_NET_ADMIN", "metrics": "none",
                                "web": "none", "alerts": "none",
                                "bgp": "CAP_NET_BIND_SERVICE CAP_NET_BROADCAST CAP_NET_ADMIN CAP_NET_RAW"}
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
        from tests.helpers.routers import capture_frames
        from lvsbus.demo.netns import router_mac

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
    from lvsbus.demo.netns import router_toml, write_key

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
