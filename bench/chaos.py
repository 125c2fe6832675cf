"""Chaos: a router pair in network namespaces under random, seeded faults for a bounded time.

    sudo python bench/chaos.py [--seed 1] [--duration 120] [--keepalive 0.2] [--deadtime 1.0]
                               [--interval 2.0] [--mix service=60,broker=20,router=10,link=10,flap=10,reload=25]
    sudo python bench/chaos.py --disk-full [--fill-hold 5]

Setup, faults and windows: tests/helpers/chaos.py's docstring (and docs/router.md, "Chaos: what the
bench injects and what must hold"). In short: two routers (r1 preferred, preempt off) and two
real servers s1, s2 in namespaces, a client requesting the VIP every 100 ms; one fault at a time
against the ACTIVE router: SIGKILL of one of its services (pulse, nanny, lvsd, ipvs), of its
broker, of the whole router (started again after --down-s), its public link cut (--cut-s), a real
server's echo stopped (--flap-s), a reload (SIGHUP to both, s2's weight toggled).

Documented windows: a router kill, from the kill to the takeover + --margin; a public link cut,
from the cut to the takeover + --margin and from the heal to heal + deadtime + --margin. Requests
may fail and a takeover may happen only inside one; a takeover elsewhere is a false failover.
Goal: false_failovers=0, requests_failed_outside_windows=0, replay_verify_*=identical.

Output: ``name=value unit`` lines; each fault and the first replay divergence per router on stderr.
Exit 1 when a goal is missed.

--disk-full: r1's log directory on an 8 MiB tmpfs, filled while the pair runs, then freed: r1
keeps its role, reports log.write_failed, writes the backlog on recovery (log.write_recovered);
log check and replay verify on its log (tests/helpers/chaos.py ``disk_full``).

--slow-disk: r1's log directory on ext4 on a loop device, r1's processes in a cgroup v1 blkio
group throttled to --slow-iops writes/s for --slow-hold s (each fsync ~1-2 s; device-mapper's
delay target is not available here): r1 keeps its role, bus.log_stats shows the slow commits.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lvsbus.demo.netns import Topology, netns_available  # noqa: E402
from tests.helpers.chaos import DEFAULT_MIX, KINDS, as_lines, chaos, disk_full, slow_disk  # noqa: E402


def _mix(text: str) -> dict:
    mix = {k: 0 for k in KINDS}
    for part in text.split(","):
        k, _, v = part.partition("=")
        if k.strip() not in KINDS or not v.strip().isdigit():
            raise argparse.ArgumentTypeError(f"--mix: {part!r}: want KIND=WEIGHT with KIND one of {', '.join(KINDS)}")
        mix[k.strip()] = int(v)
    return mix


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of faults")
    ap.add_argument("--keepalive", type=float, default=0.2)
    ap.add_argument("--deadtime", type=float, default=1.0)
    ap.add_argument("--interval", type=float, default=2.0, help="mean seconds between faults (x0.5..1.5)")
    ap.add_argument("--mix", type=_mix, default=dict(DEFAULT_MIX),
                    help="fault weights, default " + ",".join(f"{k}={v}" for k, v in DEFAULT_MIX.items()))
    ap.add_argument("--margin", type=float, default=1.0, help="seconds added to each documented window")
    ap.add_argument("--down-s", type=float, default=3.0, help="a killed router stays down this long")
    ap.add_argument("--cut-s", type=float, default=3.0, help="a cut link stays cut this long")
    ap.add_argument("--flap-s", type=float, default=2.0, help="a flapped real server stays down this long")
    ap.add_argument("--disk-full", action="store_true", help="the full-disk scenario instead")
    ap.add_argument("--fill-hold", type=float, default=5.0, help="--disk-full: seconds the disk stays full")
    ap.add_argument("--slow-disk", action="store_true", help="the slow-disk scenario instead")
    ap.add_argument("--slow-iops", type=int, default=2, help="--slow-disk: writes/s allowed to r1's log device")
    ap.add_argument("--slow-hold", type=float, default=12.0, help="--slow-disk: seconds the disk stays slow")
    args = ap.parse_args()
    why = netns_available()
    if why:
        print(f"bench/chaos.py: {why}", file=sys.stderr)
        return 1
    # Ctrl-C and SIGTERM unwind through the finally blocks (routers stopped, tmpfs / loop device /
    # cgroup removed, namespaces destroyed), also when started with SIGINT ignored (a background job)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    t0 = time.monotonic()
    topo = Topology(routers=2, servers=2)
    try:
        topo.build()
        with tempfile.TemporaryDirectory(prefix="lvsbus-chaos-") as tmp:
            if args.disk_full or args.slow_disk:
                if args.disk_full:
                    r = disk_full(topo, Path(tmp), keepalive=args.keepalive, deadtime=args.deadtime,
                                  hold_s=args.fill_hold, say=lambda s: print(s, file=sys.stderr))
                else:
                    r = slow_disk(topo, Path(tmp), keepalive=args.keepalive, deadtime=args.deadtime, iops=args.slow_iops,
                                  hold_s=args.slow_hold, say=lambda s: print(s, file=sys.stderr))
                for k, v in r.items():
                    if k.endswith("_report") or k.startswith("replay_divergence"):
                        print(f"{k}: {v}", file=sys.stderr)
                    else:
                        print(f"{k}={v}")
                ok = r["ok"]
            else:
                r = chaos(topo, Path(tmp), seed=args.seed, duration=args.duration, keepalive=args.keepalive,
                          deadtime=args.deadtime, mix=args.mix, interval=args.interval, margin=args.margin,
                          down_s=args.down_s, cut_s=args.cut_s, flap_s=args.flap_s,
                          say=lambda s: print(s, file=sys.stderr, flush=True))
                print(f"seed={args.seed}")
                print(f"keepalive_s={args.keepalive} s")
                print(f"deadtime_s={args.deadtime} s")
                for line in as_lines(r):
                    print(line)
                for k, v in r.items():
                    if k.startswith(("replay_divergence", "log_check_")) and k.endswith(("_report", "_after")) or \
                            k.startswith("replay_divergence") or k == "false_failover_after":
                        print(f"{k}: {v}", file=sys.stderr)
                ok = (r["false_failovers"] == 0 and r["requests_failed_outside_windows"] == 0
                      and all(v in ("ok", "identical") for k, v in r.items() if k.startswith(("log_check_", "replay_verify_"))
                              and not k.endswith("_report")))
    finally:
        topo.destroy()
    print(f"load_average={' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"elapsed_s={time.monotonic() - t0:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench/chaos.py: interrupted; routers stopped, namespaces removed", file=sys.stderr)
        sys.exit(130)
