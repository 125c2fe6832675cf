"""How fast the upstream's ECMP route follows lvsbus's BGP announcements (scale-out, docs/scaleout.md).

    sudo python bench/bgp.py [--runs 5]

Topology: lvsbus/demo/netns.py with three routers and the client namespace as the upstream router:
BIRD 2 there with ``merge paths`` into its kernel table and the GRACEFUL_SHUTDOWN filter, and one
BIRD a router driven by lvsbus's driver (services/bgp/speaker.py). For each run, on router r3, the
time from the action to the upstream kernel's route to the VIP gaining or losing r3's nexthop
(polled with ``ip -j route`` about every 2 ms, so ~2 ms of resolution):

  announce_ms     set_routes([announce]) until the nexthop is there
  drain_ms        set_routes([drain]) (GRACEFUL_SHUTDOWN) until it leaves the ECMP set
  withdraw_ms     set_routes([]) until it is gone
  set_routes_ms   the driver's own call (write routes.conf, ``configure`` over the control socket)
  kill_ms         SIGKILL of r3's BIRD until its nexthop is gone (its TCP session closes)
  bfd_cut_ms      r3's cable cut with bfd = true (100 ms x 3) until gone (hold time 30 s)

The kernel datapath figures of issue 17 (reroute_ms, survivor_flows_kept, moved_flows_kept)
need IPVS and are for the kernel tier's bench/scaleout.py. Output: ``name=value unit`` lines
(medians over ``--runs``).
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lvsbus.demo.netns import Topology, netns_available  # noqa: E402
from lvsbus_services.bgp.speaker import BirdControl, BirdSpeaker, Route  # noqa: E402
from tests.helpers.bgp import VIP, nexthops, router_speaker, start_upstream, upstream_conf  # noqa: E402


def until(pred, timeout: float = 30.0) -> float:
    """Seconds until ``pred()`` holds (polled); raises on timeout."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("the upstream's route did not change")
        time.sleep(0.001)
    return time.monotonic() - t0


def one_run(tmp: Path) -> dict[str, float]:
    topo = Topology(routers=3, private=False).build()
    speakers: dict[str, BirdSpeaker] = {}
    try:
        addrs = {f"r{i}": topo.router_address(i) for i in (1, 2, 3)}
        up_ctl = start_upstream(topo, tmp, upstream_conf(addrs, hold_time=30, bfd=addrs), stderr=subprocess.DEVNULL)
        for i, r in enumerate(addrs, 1):
            sp = router_speaker(topo, i, tmp, stderr=subprocess.DEVNULL, hold_time=30, bfd=True)
            sp.start()
            speakers[r] = sp
        for sp in speakers.values():
            until(lambda sp=sp: any(s.state == "up" for s in sp.sessions()))
        until(lambda: "\n".join(t for _c, t in BirdControl(up_ctl).check("show bfd sessions")).count("Up") == 3)
        for r in ("r1", "r2"):
            speakers[r].set_routes([Route(VIP, 32, "announce")])
        until(lambda: nexthops(topo) == {addrs["r1"], addrs["r2"]})
        r3, me = speakers["r3"], addrs["r3"]
        fig: dict[str, float] = {}
        calls: list[float] = []

        def timed(routes, pred) -> float:
            t0 = time.monotonic()
            r3.set_routes(routes)
            calls.append((time.monotonic() - t0) * 1000)
            return (time.monotonic() - t0 + until(pred)) * 1000

        fig["announce_ms"] = timed([Route(VIP, 32, "announce")], lambda: me in nexthops(topo))
        fig["drain_ms"] = timed([Route(VIP, 32, "drain")], lambda: me not in nexthops(topo))
        timed([Route(VIP, 32, "announce")], lambda: me in nexthops(topo))
        fig["withdraw_ms"] = timed([], lambda: me not in nexthops(topo))
        timed([Route(VIP, 32, "announce")], lambda: me in nexthops(topo))
        fig["set_routes_ms"] = statistics.median(calls)
        proc = r3.proc
        assert proc is not None
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        until(lambda: me not in nexthops(topo))
        fig["kill_ms"] = (time.monotonic() - t0) * 1000
        # r2's cable: BFD (r2's BIRD is alive and silent behind the cut)
        t0 = time.monotonic()
        topo.cut("r2", "public")
        until(lambda: addrs["r2"] not in nexthops(topo))
        fig["bfd_cut_ms"] = (time.monotonic() - t0) * 1000
        return fig
    finally:
        for sp in speakers.values():
            sp.stop()
        topo.destroy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    why = netns_available()
    if why:
        print(f"bench/bgp.py: {why}", file=sys.stderr)
        return 2
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="lvsbus-bgp-") as tmp:
            runs.append(one_run(Path(tmp)))
    for name in ("announce_ms", "drain_ms", "withdraw_ms", "set_routes_ms", "kill_ms", "bfd_cut_ms"):
        print(f"{name}={statistics.median(r[name] for r in runs):.1f} ms")
    print(f"runs={len(runs)} count")
    return 0


if __name__ == "__main__":
    sys.exit(main())
