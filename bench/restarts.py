"""Restarts never fail over: SIGKILL the active router's pulse and broker, again and again.

    sudo python bench/restarts.py [--pulse-kills 100] [--broker-kills 100] [--keepalive 0.1] [--deadtime 0.3]

Two routers in network namespaces (lvsbus/demo/netns.py); r1 ACTIVE. pulse and the broker on r1 are
SIGKILLed alternately, each kill once the service's warm spare is waiting (lvsbus/router/supervisor.py,
"Warm spares"). Printed: the kills, the takeovers by the backup (r2 becoming ACTIVE), and the
longest gap between r1's heartbeats as recorded by r2 (any link), then per link.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lvsbus.demo.netns import Topology, netns_available  # noqa: E402
from tests.helpers.restarts import campaign  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pulse-kills", type=int, default=100)
    ap.add_argument("--broker-kills", type=int, default=100)
    ap.add_argument("--keepalive", type=float, default=0.1)
    ap.add_argument("--deadtime", type=float, default=0.3)
    ap.add_argument("--window", type=float, default=1.0, help="--restart-window given to the routers")
    ap.add_argument("--baseline-s", type=float, default=60.0,
                    help="then the same pair for this long without any kill (what the load alone does); 0: skip")
    ap.add_argument("--no-spares", action="store_true", help="routers without warm spares (the old restarts)")
    ap.add_argument("--prefill-mib", type=float, default=0.0,
                    help="first write this many MiB of an earlier run's records into r1's log (one segment: what "
                         "a broker restart after hours of running recovers); 0: none")
    ap.add_argument("--keep-dir", type=Path, default=None,
                    help="keep both routers' state directories and stderr here (for lvsbus log dump / replay "
                         "--timeline); default: a temporary directory, removed")
    args = ap.parse_args()
    if args.keep_dir is not None and (args.keep_dir / "kills").exists():
        ap.error(f"--keep-dir {args.keep_dir}: holds an earlier run's 'kills' (give a new directory)")
    why = netns_available()
    if why:
        print(f"bench/restarts.py: {why}", file=sys.stderr)
        return 1
    topo = Topology(routers=2).build()
    t0 = time.monotonic()
    base = None
    try:
        with tempfile.TemporaryDirectory(prefix="lvsbus-restarts-") as scratch:
            tmp = args.keep_dir if args.keep_dir is not None else Path(scratch)
            r = campaign(topo, tmp / "kills", args.pulse_kills, args.broker_kills, keepalive=args.keepalive,
                         deadtime=args.deadtime, window=args.window, spares=not args.no_spares, say=print,
                         prefill_mib=args.prefill_mib)
            if args.baseline_s > 0:
                base = campaign(topo, tmp / "idle", 0, 0, keepalive=args.keepalive, deadtime=args.deadtime,
                                idle_s=args.baseline_s)
    finally:
        topo.destroy()
    print(f"keepalive_s={args.keepalive}")
    print(f"deadtime_s={args.deadtime}")
    if args.prefill_mib > 0:
        print(f"prefilled_records={r['prefilled_records']}")
    for k in ("pulse_kills", "broker_kills", "takeovers", "r1_role_changes", "max_heartbeat_gap_ms",
              "gaps_over_deadtime"):
        print(f"{k}={r[k]}")
    for k in ("pulse_kill_gap_ms_median", "pulse_kill_gap_ms_max", "broker_kill_gap_ms_median", "broker_kill_gap_ms_max"):
        print(f"{k}={r[k]}")
    for link, g in r["max_heartbeat_gap_ms_per_link"].items():
        print(f"max_heartbeat_gap_ms_{link}={g}")
    print(f"restart_events={r['restart_events']}")
    print(f"merged_log_lines={r['merged_log_lines']}")
    print(f"replay_r1={r['replay_r1'].splitlines()[-1][:200] if r['replay_r1'] != 'identical' else 'identical'}")
    print(f"replay_r2={r['replay_r2'].splitlines()[-1][:200] if r['replay_r2'] != 'identical' else 'identical'}")
    print(f"measured_s={r['measured_s']}")
    if base is not None:
        for k in ("measured_s", "takeovers", "max_heartbeat_gap_ms", "gaps_over_deadtime"):
            print(f"baseline_{k}={base[k]}")
    print(f"load_average={' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"elapsed_s={time.monotonic() - t0:.0f}")
    return 0 if r["takeovers"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
