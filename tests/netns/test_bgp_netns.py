"""The announcement path of scale-out on real BIRD 2 processes in network namespaces
(docs/scaleout.md): an upstream router (BIRD with ECMP into its kernel table and the
GRACEFUL_SHUTDOWN filter) and three lvsbus routers' speakers driven by lvsbus's BIRD driver. The
upstream's route to the VIP gains and loses nexthops as routers announce, drain, withdraw, or
are SIGKILLed. (This kernel has no IPVS: the datapath part is the kernel tier's, docs/scaleout.md.)"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from lvsbus_services.bgp.speaker import BirdControl, BirdSpeaker, Route, SpeakerError
from tests.helpers.bgp import UPSTREAM, VIP, nexthops, router_speaker, start_upstream, upstream_conf
from tests.helpers.lvs_config import lvs_toml, scaleout_toml

pytestmark = pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed (apt-get install bird2)")


def upstream_routes(ctl: str, vip: str = VIP) -> str:
    """The upstream BIRD's routes to ``vip``, every attribute (``show route for VIP all``)."""
    return "\n".join(t for _c, t in BirdControl(ctl).check(f"show route for {vip} all"))


def wait_for(what, pred, timeout: float = 20.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def test_upstream_ecmp_follows_announce_drain_withdraw_and_sigkill(netns, tmp_path):  # noqa: F811
    topo = netns(routers=3, private=False)
    addrs = {f"r{i}": topo.router_address(i) for i in (1, 2, 3)}
    up_sock = start_upstream(topo, tmp_path, upstream_conf(addrs))
    speakers: dict[str, BirdSpeaker] = {}
    try:
        for i, r in enumerate(addrs, 1):
            sp = router_speaker(topo, i, tmp_path)
            version, pid = sp.start()
            assert version.startswith("2.") and pid > 0
            speakers[r] = sp
        # nothing announced yet: sessions come up, no route
        for r, sp in speakers.items():
            wait_for(f"{r}'s session", lambda sp=sp: [s for s in sp.sessions() if s.state == "up"])
            assert sp.sessions() == [sp.sessions()[0]] and sp.sessions()[0].peer == UPSTREAM
        assert nexthops(topo) == set()

        announce = [Route(VIP, 32, "announce")]
        for sp in speakers.values():
            sp.set_routes(announce)
        all3 = set(addrs.values())
        wait_for("three nexthops", lambda: nexthops(topo) == all3)

        # drain r2: still announced (the upstream has the route) but out of the ECMP set
        speakers["r2"].set_routes([Route(VIP, 32, "drain")])
        wait_for("r2 drained", lambda: nexthops(topo) == all3 - {addrs["r2"]})
        text = upstream_routes(up_sock)
        assert text.count("BGP.local_pref: 0") == 1 and "(65535,0)" in text
        assert text.count("unicast [") == 3  # three routes, one depreferenced

        # withdraw r2, then announce again
        speakers["r2"].set_routes([])
        wait_for("r2's route gone", lambda: upstream_routes(up_sock).count("unicast [") == 2)
        assert nexthops(topo) == all3 - {addrs["r2"]}
        speakers["r2"].set_routes(announce)
        wait_for("r2 back", lambda: nexthops(topo) == all3)

        # SIGKILL r3's BIRD: its TCP session closes with it, the upstream drops the nexthop at once
        # (no graceful restart: no stale route kept)
        p3 = speakers["r3"].proc
        assert p3 is not None
        t0 = time.monotonic()
        os.killpg(p3.pid, signal.SIGKILL)
        wait_for("r3 gone", lambda: nexthops(topo) == all3 - {addrs["r3"]}, every=0.01)
        lost_s = time.monotonic() - t0
        assert lost_s < 3.0, lost_s  # the hold time (9 s) is not what found it
        p3.wait(5)
        assert not speakers["r3"].alive()

        # the last two withdraw: no route left
        for r in ("r1", "r2"):
            speakers[r].set_routes([])
        wait_for("no route", lambda: nexthops(topo) == set())
    finally:
        for sp in speakers.values():
            sp.stop()


def test_bad_route_set_is_refused_and_the_previous_stays(netns, tmp_path):  # noqa: F811
    topo = netns(routers=1, private=False)
    sp = router_speaker(topo, 1, tmp_path)
    try:
        sp.start()
        sp.set_routes([Route(VIP, 32, "announce")])
        # a file BIRD cannot parse (what a bug in the renderer would give): configure refuses, and
        # BIRD keeps the routes it had
        sp.routes_file.write_text("protocol static lvsbus_vips4 { ipv4; route nonsense; }\n")
        with pytest.raises(SpeakerError) as exc:
            sp.control.check("configure")
        assert "BIRD refused" in str(exc.value)
        text = "\n".join(t for _c, t in sp.control.check(f"show route for {VIP}"))
        assert VIP in text
        sp.stop()
        assert not sp.alive()
        with pytest.raises(SpeakerError):
            sp.sessions()  # no BIRD: an error the shell reports, never a hang
    finally:
        sp.stop()


# ---------------------------------------------------------------------------------------------
# the bgp service itself (core + shell on a real bus, BIRD started by the shell)

def _events(log_dir: str, type_: str) -> list:
    from lvsbus_tools.timeline import read_events

    return [e for e in read_events(log_dir) if e.type == type_]


def test_bgp_service_announces_withdraws_drains_and_restarts_bird(netns, tmp_path):  # noqa: F811
    import sys
    import threading

    from lvsbus.bus import Broker, BusClient
    from lvsbus.config import load
    from lvsbus.log import Durability
    from lvsbus.host.paths import StateDirs
    from lvsbus.router.supervisor import config_payload
    from lvsbus_tools.replay import make_cores, verify

    topo = netns(routers=2, private=False)
    addrs = {r: topo.router_address(i) for i, r in ((1, "r1"), (2, "r2"))}
    up_sock = start_upstream(topo, tmp_path, upstream_conf(addrs))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root}
    brokers, clients, dirs, argv, procs = [], {}, {}, {}, {}
    try:
        for r in ("r1", "r2"):
            d = StateDirs(str(tmp_path / r / "state")).make()
            dirs[r] = d
            broker = Broker(r, d.run, d.log, Durability("group"))
            threading.Thread(target=broker.run, daemon=True).start()
            brokers.append(broker)
            cfg = tmp_path / r / "lvsbus.toml"
            cfg.write_text(lvs_toml() + scaleout_toml(control_socket=tmp_path / r / "bird.ctl", drain_time=1.0))
            loaded = load(str(cfg))
            c = BusClient(d.run, "router")
            seq = c.publish_acked("config.loaded", config_payload(loaded, r, False, {}), timeout=10.0)
            clients[r] = c
            argv[r] = [sys.executable, "-m", "lvsbus_services.bgp", "--state-dir", d.root, "--config", str(cfg),
                       "--run-start-seq", str(seq)]
            procs[r] = topo.popen(r, argv[r], env=env, stderr=open(tmp_path / f"{r}.bgp.log", "w"))

        def role(r, new):
            clients[r].publish_acked("router.role_changed", {"node": r, "old": "INIT", "new": new, "reason": "started",
                                                             "priority": 100, "epoch": 1, "peer": None, "group": "default"}, timeout=5.0)

        def health(r, up):
            if up:
                clients[r].publish_acked("health.real_server_up", {
                    "virtual": "web", "server": "s1", "address": "10.99.3.101", "port": 80, "reason": "checks_passed",
                    "previous": "RISING", "passes": 2, "detail": "ok"}, timeout=5.0)
            else:
                clients[r].publish_acked("health.real_server_down", {
                    "virtual": "web", "server": "s1", "address": "10.99.3.101", "port": 80, "reason": "checks_failed",
                    "previous": "FALLING", "failures": 3, "detail": "refused"}, timeout=5.0)

        for r in ("r1", "r2"):
            wait_for(f"{r}'s BIRD", lambda r=r: _events(dirs[r].log, "bgp.speaker_started"))
            wait_for(f"{r}'s session", lambda r=r: [e for e in _events(dirs[r].log, "bgp.session_changed")
                                                    if e.payload["state"] == "up"])
            role(r, "BACKUP")
        assert nexthops(topo) == set()  # no health yet: no quorum, nothing announced
        for r in ("r1", "r2"):
            health(r, True)
        both = set(addrs.values())
        wait_for("both announce", lambda: nexthops(topo) == both)

        # r1's only real server fails: r1 withdraws the VIP, r2 keeps it
        health("r1", False)
        wait_for("r1 withdrawn", lambda: nexthops(topo) == {addrs["r2"]})
        health("r1", True)
        wait_for("r1 back", lambda: nexthops(topo) == both)

        # an operator drains r2 (lvsbus bgp drain): out of the ECMP set, still announced; resume
        def cli(*a):
            return subprocess.run([sys.executable, "-m", "lvsbus.cli", "bgp", *a, "--state-dir", dirs["r2"].root],
                                  capture_output=True, text=True, env=env, timeout=30)

        r = cli("drain", "--reason", "maintenance")
        assert r.returncode == 0 and "now drained (1 VIPs)" in r.stdout, r.stdout + r.stderr
        wait_for("r2 drained", lambda: nexthops(topo) == {addrs["r1"]})
        r = cli("drain")
        assert r.returncode == 0 and "already drained" in r.stdout, r.stdout + r.stderr
        r = cli("resume")
        assert r.returncode == 0 and "now announced plainly" in r.stdout, r.stdout + r.stderr
        wait_for("r2 resumed", lambda: nexthops(topo) == both)

        # r2's BIRD is SIGKILLed: the upstream drops it; the shell starts BIRD again, the core
        # gives it the route set, r2 is back
        pid = _events(dirs["r2"].log, "bgp.speaker_started")[-1].payload["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for("r2 gone", lambda: nexthops(topo) == {addrs["r1"]}, every=0.01)
        wait_for("r2 back after its BIRD restarted", lambda: nexthops(topo) == both, timeout=30)
        assert len(_events(dirs["r2"].log, "bgp.speaker_started")) == 2
        def states():
            got = [e.payload["state"] for e in _events(dirs["r2"].log, "bgp.session_changed")]
            return got[got.index("up"):]  # (a first poll may see it connecting)

        wait_for("r2's session reported up again", lambda: len(states()) >= 3)  # polled every 0.5 s
        assert states() == ["up", "down", "up"], states()

        # lvsbus status shows the sessions and the announcements
        from lvsbus.router.status import read_status

        bst = read_status(dirs["r2"].root)["bgp"]
        assert bst["sessions"] == {UPSTREAM: {"state": "up", "info": "up Established"}}
        assert bst["announced"] == {VIP: {"state": "announce", "reason": "serving"}} and not bst["drained"]
        out = subprocess.run([sys.executable, "-m", "lvsbus.cli", "status", "--state-dir", dirs["r2"].root],
                             capture_output=True, text=True, env=env, timeout=30).stdout
        assert f"  vip    {VIP}: announced (serving)" in out and f"  peer   {UPSTREAM}: up" in out, out

        # the bgp service itself SIGKILLed and started again: it adopts the BIRD still running,
        # whose routes stay announced all along (a restarting service moves no traffic)
        bird_pid = _events(dirs["r2"].log, "bgp.speaker_started")[-1].payload["pid"]
        os.kill(procs["r2"].pid, signal.SIGKILL)
        procs["r2"].wait(5)
        procs["r2"] = topo.popen("r2", argv["r2"], env=env, stderr=open(tmp_path / "r2.bgp.2.log", "w"))
        seen = []
        deadline = time.monotonic() + 20
        while len(_events(dirs["r2"].log, "bgp.speaker_started")) < 3 and time.monotonic() < deadline:
            seen.append(nexthops(topo))
            time.sleep(0.02)
        assert _events(dirs["r2"].log, "bgp.speaker_started")[-1].payload["pid"] == bird_pid
        time.sleep(0.5)  # its route set applied and the sessions read again
        seen.append(nexthops(topo))
        assert all(hops == both for hops in seen), seen

        # that BIRD hangs (SIGSTOP: running, silent on its control socket): the shell kills it after
        # HUNG_S and starts another, which gets the route set; the upstream has r2 again
        os.kill(bird_pid, signal.SIGSTOP)
        wait_for("r2's hung BIRD replaced", lambda: len(_events(dirs["r2"].log, "bgp.speaker_started")) == 4, timeout=40)
        assert _events(dirs["r2"].log, "bgp.speaker_started")[-1].payload["pid"] != bird_pid
        wait_for("r2 back after its hung BIRD was replaced", lambda: nexthops(topo) == both, timeout=30)

        # a reload of r1 that adds a peer: bird.conf rewritten, BIRD reconfigured, the first session stays up
        cfg1 = tmp_path / "r1" / "lvsbus.toml"
        cfg1.write_text(cfg1.read_text().replace(f'peers = ["{UPSTREAM}"]', f'peers = ["{UPSTREAM}", "10.99.1.99"]'))
        clients["r1"].publish_acked("config.loaded", {**config_payload(load(str(cfg1)), "r1", True, {})}, timeout=10.0)
        r1ctl = BirdControl(str(tmp_path / "r1" / "bird.ctl"))
        wait_for("r1's BIRD has the new peer", lambda: "lvsbus_peer2" in "\n".join(
            t for _c, t in r1ctl.check("show protocols")))
        assert nexthops(topo) == both

        # a planned stop of r1: drained first (out of the ECMP set, still announced), withdrawn after drain_time
        clients["r1"].publish_acked("router.shutdown_requested", {"reason": "SIGTERM", "graceful": True}, timeout=5.0)
        wait_for("r1 drained", lambda: nexthops(topo) == {addrs["r2"]})
        assert "(65535,0)" in upstream_routes(up_sock)
        wait_for("r1 withdrawn after drain_time", lambda: [e for e in _events(dirs["r1"].log, "bgp.vip_changed")
                                                           if e.payload["reason"] == "shutdown"], timeout=10)
        changes = [(e.payload["new"], e.payload["reason"]) for e in _events(dirs["r1"].log, "bgp.vip_changed")]
        assert changes == [("announce", "serving"), ("withdraw", "quorum_lost"), ("announce", "serving"),
                           ("drain", "shutdown_drain"), ("withdraw", "shutdown")]
        for r in ("r1", "r2"):
            applied = _events(dirs[r].log, "bgp.routes_applied")
            assert applied and all(e.payload["ok"] for e in applied), [e.payload for e in applied]
        # replay: every decision of the bgp core in both logs comes out the same
        for r in ("r1", "r2"):
            rep = verify(dirs[r].log, cores=make_cores(["bgp"]))
            assert rep.ok, [d.describe() for d in rep.divergences]
    finally:
        for c in clients.values():
            c.close()
        topo.destroy()  # the bgp services and their BIRDs (by PID, in their namespaces)
        for b in brokers:
            b.stop()


def test_bfd_finds_a_dead_router_long_before_the_hold_time(netns, tmp_path):  # noqa: F811
    """A router whose cable is cut closes no TCP session: without BFD the upstream keeps its route
    for the hold time (30 s here); with ``bfd = true`` BFD (100 ms x 3) drops it in well under a second."""
    topo = netns(routers=2, private=False)
    addrs = {"r1": topo.router_address(1), "r2": topo.router_address(2)}
    up_sock = start_upstream(topo, tmp_path, upstream_conf(addrs, hold_time=30, bfd={"r2"}))
    speakers = []
    try:
        for i, (r, bfd) in enumerate((("r1", False), ("r2", True)), 1):
            sp = router_speaker(topo, i, tmp_path, hold_time=30, bfd=bfd)
            sp.start()
            speakers.append(sp)
            wait_for(f"{r}'s session", lambda sp=sp: [s for s in sp.sessions() if s.state == "up"])
            sp.set_routes([Route(VIP, 32, "announce")])
        wait_for("both nexthops", lambda: nexthops(topo) == set(addrs.values()))
        wait_for("r2's BFD session up", lambda: "Up" in "\n".join(
            t for _c, t in BirdControl(up_sock).check("show bfd sessions")))

        t0 = time.monotonic()
        topo.cut("r2", "public")
        wait_for("r2 dropped by BFD", lambda: nexthops(topo) == {addrs["r1"]}, timeout=5, every=0.01)
        assert time.monotonic() - t0 < 2.0

        topo.cut("r1", "public")  # no BFD: the upstream cannot tell before the hold time
        time.sleep(2.0)
        assert nexthops(topo) == {addrs["r1"]}
    finally:
        for sp in speakers:
            sp.stop()


def test_ipv6_vip_over_ipv6_sessions(netns, tmp_path):  # noqa: F811
    """An IPv6 VIP goes over IPv6 sessions: the upstream's IPv6 route to it has both routers as nexthops."""
    topo = netns(routers=2, private=False)
    up6, vip6 = "fd99:1::100", "fd99:200::1"
    addrs = {"r1": "fd99:1::11", "r2": "fd99:1::12"}
    for short, a in (("c", up6), *addrs.items()):
        topo.run(short, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
        topo.run(short, "ip", "-6", "addr", "add", f"{a}/64", "dev", "eth0", "nodad")
    start_upstream(topo, tmp_path, upstream_conf(addrs, up6, gshut_filter=False))
    speakers = []
    try:
        for i in (1, 2):
            sp = router_speaker(topo, i, tmp_path, peers=(up6,))
            sp.start()
            speakers.append(sp)
            sp.set_routes([Route(vip6, 128, "announce"), Route(VIP, 32, "announce")])  # the v4 one has no v4 peer

        wait_for("both IPv6 nexthops", lambda: nexthops(topo, vip6) == set(addrs.values()))
        assert nexthops(topo) == set()  # the IPv4 VIP went nowhere: no IPv4 session carries it
        speakers[1].set_routes([Route(vip6, 128, "drain")])  # no GRACEFUL_SHUTDOWN filter upstream here:
        time.sleep(0.5)  # a drained route is still a route (the community changes nothing without the filter)
        assert nexthops(topo, vip6) == set(addrs.values())
        speakers[1].set_routes([])
        wait_for("r2 withdrawn", lambda: nexthops(topo, vip6) == {addrs["r1"]})
    finally:
        for sp in speakers:
            sp.stop()


def test_the_operators_running_bird_is_driven_not_started_or_stopped(netns, tmp_path):  # noqa: F811
    """speaker = "bird-running": the operator's own BIRD on the router, its own config (its own BGP
    session to the upstream, and a route of its own) including lvsbus's routes file. lvsbus
    announces and withdraws the VIP through it; stopping lvsbus's side withdraws the VIP only: the
    operator's BIRD, its session and its own route stay."""
    from lvsbus_services.bgp.speaker import BgpSettings, RunningBird, render_routes

    topo = netns(routers=1, private=False)
    r1 = topo.router_address(1)
    start_upstream(topo, tmp_path, upstream_conf({"r1": r1}))
    routes = tmp_path / "lvsbus-routes.conf"
    routes.write_text(render_routes([]))  # the operator creates it empty, so that BIRD starts before lvsbus
    (tmp_path / "ops.conf").write_text(f"""
router id {r1};
protocol device {{}}
include "{routes}";
protocol static ops_own {{ ipv4; route 10.250.0.0/24 blackhole; }}
protocol bgp to_upstream {{
  local as 65001; neighbor {UPSTREAM} as 65000; hold time 9;
  connect delay time 1; connect retry time 2; error wait time 1, 10;
  ipv4 {{ import none; next hop self; export where proto ~ "lvsbus_vips*" || proto = "ops_own"; }};
}}
""")
    ctl = str(tmp_path / "ops.ctl")
    ops = topo.popen("r1", ["bird", "-f", "-c", str(tmp_path / "ops.conf"), "-s", ctl, "-P", str(tmp_path / "ops.pid")],
                     stderr=open(tmp_path / "ops.log", "w"))
    wait_for("the operator's BIRD", lambda: os.path.exists(ctl))
    sp = RunningBird(BgpSettings(router_id=r1, local_as=65001, peer_as=65000, peers=(UPSTREAM,)), str(routes), ctl)
    version, pid = sp.start()
    assert version.startswith("2.") and pid == 0 and sp.alive()
    wait_for("the session", lambda: [s for s in sp.sessions() if s.state == "up"])
    (s,) = sp.sessions()
    assert s.peer == UPSTREAM and s.info.startswith("to_upstream: up")  # found by its neighbour, whatever its name

    def own_route() -> bool:
        return bool(topo.run("c", "ip", "route", "show", "10.250.0.0/24", check=False).stdout.strip())

    wait_for("the operator's own route at the upstream", own_route)
    assert nexthops(topo) == set()
    sp.set_routes([Route(VIP, 32, "announce")])
    wait_for("the VIP through r1", lambda: nexthops(topo) == {r1})
    sp.stop()
    wait_for("the VIP withdrawn", lambda: nexthops(topo) == set())
    assert ops.poll() is None and own_route() and not sp.alive()  # BIRD, its session and its route go on
    assert [x.state for x in sp.sessions()] == ["up"]
    # lvsbus's side again: the routes file kept as it is (an earlier run's routes stay until decided)
    sp.set_routes([Route(VIP, 32, "announce")])
    wait_for("announced again", lambda: nexthops(topo) == {r1})
    before = routes.read_text()
    sp2 = RunningBird(BgpSettings(router_id=r1, local_as=65001, peer_as=65000, peers=(UPSTREAM,)), str(routes), ctl)
    sp2.start()
    assert routes.read_text() == before and nexthops(topo) == {r1}
    # a BIRD that does not answer: not alive, and start says why
    ops.kill()
    ops.wait()
    assert not sp2.alive()
    with pytest.raises(SpeakerError, match="control socket"):
        sp2.start()


def test_the_bgp_service_drives_the_operators_running_bird(netns, tmp_path):  # noqa: F811
    """The bgp service (python -m lvsbus_services.bgp) with speaker = "bird-running": it connects to
    the operator's BIRD (started before it, with the routes file included), announces once the role
    and the health are known, and on SIGTERM withdraws the VIP and leaves BIRD and its session up."""
    import sys
    import threading

    from lvsbus.bus import Broker, BusClient
    from lvsbus.config import load
    from lvsbus.host.paths import StateDirs
    from lvsbus.log import Durability
    from lvsbus.router.supervisor import config_payload
    from lvsbus_services.bgp.speaker import BgpSettings, RunningBird, render_routes

    topo = netns(routers=1, private=False)
    r1 = topo.router_address(1)
    start_upstream(topo, tmp_path, upstream_conf({"r1": r1}))
    routes = tmp_path / "lvsbus-routes.conf"
    routes.write_text(render_routes([]))
    (tmp_path / "ops.conf").write_text(f"""
router id {r1};
protocol device {{}}
include "{routes}";
protocol bgp to_upstream {{
  local as 65001; neighbor {UPSTREAM} as 65000; connect delay time 1; connect retry time 2;
  ipv4 {{ import none; next hop self; export where proto ~ "lvsbus_vips*"; }};
}}
""")
    ctl = str(tmp_path / "ops.ctl")
    ops = topo.popen("r1", ["bird", "-f", "-c", str(tmp_path / "ops.conf"), "-s", ctl, "-P", str(tmp_path / "ops.pid")],
                     stderr=open(tmp_path / "ops.log", "w"))
    wait_for("the operator's BIRD", lambda: os.path.exists(ctl))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root}
    d = StateDirs(str(tmp_path / "state")).make()
    broker = Broker("r1", d.run, d.log, Durability("group"))
    threading.Thread(target=broker.run, daemon=True).start()
    client = None
    try:
        cfg = tmp_path / "lvsbus.toml"
        cfg.write_text(lvs_toml(routers=1) + scaleout_toml(speaker="bird-running", routes_file=str(routes),
                                                           control_socket=ctl, drain_time=0.0))
        client = BusClient(d.run, "router")
        seq = client.publish_acked("config.loaded", config_payload(load(str(cfg)), "r1", False, {}), timeout=10.0)
        svc = topo.popen("r1", [sys.executable, "-m", "lvsbus_services.bgp", "--state-dir", d.root, "--config", str(cfg),
                                "--run-start-seq", str(seq)], env=env, stderr=open(tmp_path / "bgp.log", "w"))
        wait_for("connected", lambda: _events(d.log, "bgp.speaker_started"))
        started = _events(d.log, "bgp.speaker_started")[0].payload
        assert started["speaker"] == "bird-running" and started["pid"] == 0 and started["adopted"] is True
        wait_for("the session reported", lambda: [e for e in _events(d.log, "bgp.session_changed")
                                                   if e.payload["state"] == "up"])
        client.publish_acked("router.role_changed", {"node": "r1", "old": "INIT", "new": "ACTIVE", "reason": "scale_out",
                                                     "priority": 100, "epoch": 1, "peer": None, "group": "default"},
                             timeout=5.0)
        client.publish_acked("health.real_server_up", {
            "virtual": "web", "server": "s1", "address": "10.99.3.101", "port": 80, "reason": "checks_passed",
            "previous": "RISING", "passes": 2, "detail": "ok"}, timeout=5.0)
        wait_for("the VIP through r1", lambda: nexthops(topo) == {r1})
        svc.send_signal(signal.SIGTERM)
        svc.wait(15)
        wait_for("the VIP withdrawn", lambda: nexthops(topo) == set())
        assert ops.poll() is None  # the operator's BIRD runs on, its session up
        sp = RunningBird(BgpSettings(router_id=r1, local_as=65001, peer_as=65000, peers=(UPSTREAM,)), str(routes), ctl)
        assert [s.state for s in sp.sessions()] == ["up"]
    finally:
        if client is not None:
            client.close()
        topo.destroy()
        broker.stop()
