"""The announcement path of scale-out on real BIRD 2 processes in network namespaces
(docs/scaleout.md): an upstream router (BIRD with ECMP into its kernel table and the
GRACEFUL_SHUTDOWN filter) and three lvsbus routers' speakers driven by lvsbus's BIRD driver. The
upstream's route to the VIP gains and loses nexthops as routers announce, drain, withdraw, or
are SIGKILLed. (This kernel has no IPVS: the datapath part is the kernel tier's, docs/scaleout.md.)"""
from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest

from lvsbus_services.bgp.speaker import BgpSettings, BirdControl, BirdSpeaker, Route, SpeakerError
from tests.netns import netns  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed (apt-get install bird2)")

VIP = "10.200.0.1"
UPSTREAM = "10.99.1.100"

UPSTREAM_CONF = """\
router id {up};
log stderr {{ warning, error, fatal }};
protocol device {{}}
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}
# RFC 8326: a route tagged GRACEFUL_SHUTDOWN gets the lowest preference, so it leaves the ECMP set
filter from_lvs {{ if (65535,0) ~ bgp_community then bgp_local_pref = 0; accept; }}
template bgp lvs {{ local {up} as 65000; hold time 9; connect delay time 1; connect retry time 2;
  ipv4 {{ import filter from_lvs; export none; }}; }}
{peers}
"""


def nexthops(topo, vip: str = VIP) -> set[str]:
    """The upstream kernel's nexthops for ``vip`` (a multipath route, or one gateway)."""
    out = topo.run("c", "ip", "-j", "route", "show", vip, check=False).stdout
    routes = json.loads(out) if out.strip() else []
    hops: set[str] = set()
    for r in routes:
        if r.get("gateway"):
            hops.add(r["gateway"])
        for nh in r.get("nexthops", []):
            hops.add(nh["gateway"])
    return hops


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
    peers = "\n".join(f"protocol bgp {r} from lvs {{ neighbor {a} as 65001; }}" for r, a in addrs.items())
    (tmp_path / "up.conf").write_text(UPSTREAM_CONF.format(up=UPSTREAM, peers=peers))
    up_sock = str(tmp_path / "up.ctl")
    topo.popen("c", ["bird", "-f", "-c", str(tmp_path / "up.conf"), "-s", up_sock, "-P", str(tmp_path / "up.pid")],
               stderr=open(tmp_path / "up.log", "w"))
    speakers: dict[str, BirdSpeaker] = {}
    try:
        for r, a in addrs.items():
            sp = BirdSpeaker(BgpSettings(router_id=a, local_as=65001, peer_as=65000, peers=(UPSTREAM,)),
                             tmp_path / r, str(tmp_path / f"{r}.ctl"), stderr=open(tmp_path / f"{r}.log", "w"),
                             argv_prefix=("ip", "netns", "exec", topo.ns(r)))
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
        shown = BirdControl(up_sock).check(f"show route for {VIP} all")
        text = "\n".join(t for _c, t in shown)
        assert text.count("BGP.local_pref: 0") == 1 and "(65535,0)" in text
        assert text.count("unicast [") == 3  # three routes, one depreferenced

        # withdraw r2, then announce again
        speakers["r2"].set_routes([])
        wait_for("r2's route gone", lambda: "unicast [" in "\n".join(
            t for _c, t in BirdControl(up_sock).check(f"show route for {VIP} all")) and "\n".join(
            t for _c, t in BirdControl(up_sock).check(f"show route for {VIP} all")).count("unicast [") == 2)
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
    sp = BirdSpeaker(BgpSettings(router_id=topo.router_address(1), local_as=65001, peer_as=65000, peers=(UPSTREAM,)),
                     tmp_path / "r1", str(tmp_path / "r1.ctl"), argv_prefix=("ip", "netns", "exec", topo.ns("r1")))
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
