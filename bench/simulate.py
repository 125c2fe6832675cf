"""Benchmark of the cluster simulator: simulated failover scenarios per minute on one core.

A scenario is one seed of ``lvsbus_tools.simulate``: two routers and three real servers start, the
seed's fault schedule (1-5 faults of every kind) plays over 20 s, then the cluster settles; every
invariant is checked as it runs and each router writes a real log. A *failover* scenario adds a
crash of the active router at a seeded time to that schedule (so every one fails over, and
usually preempts back when the crashed router boots). Figures: failover scenarios (logs written,
invariants checked), the same with ``replay --verify`` of every log (what the test sweep does),
and the plain seeded scenarios of the test sweep.

    python bench/simulate.py [--seeds 300] [--start 0]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lvsbus_tools.simulate import failover_schedule, run_seed  # noqa: E402


def run(seeds, verify: bool, failover: bool) -> dict:
    w0, c0 = time.perf_counter(), time.process_time()
    out = {"failed": 0, "failovers": 0, "with_failover": 0, "events": 0, "sim_ns": 0, "outage": []}
    for s in seeds:
        res = run_seed(s, verify=verify, faults=failover_schedule(s) if failover else None)
        out["failed"] += not res.ok
        out["failovers"] += res.failovers
        out["with_failover"] += res.failovers > 0
        out["events"] += res.events
        out["sim_ns"] += res.sim_ns
        out["outage"].append(res.outage_ns)
    out["wall"], out["cpu"] = time.perf_counter() - w0, time.process_time() - c0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=300)
    p.add_argument("--start", type=int, default=0)
    args = p.parse_args(argv)
    seeds = range(args.start, args.start + args.seeds)
    failed = 0
    for failover, verify in ((True, False), (True, True), (False, False)):
        r = run(seeds, verify, failover)
        failed += r["failed"]
        label = ("failover_scenarios" if failover else "random_scenarios") + ("_with_verify" if verify else "")
        n = len(seeds)
        print(f"{label}_per_min={n / r['cpu'] * 60:,.0f} scenarios/min (cpu; wall {n / r['wall'] * 60:,.0f}; "
              f"{r['with_failover']}/{n} failed over, {r['failovers']} failovers; "
              f"{r['events'] / r['cpu']:,.0f} events/s; {r['sim_ns'] / 1e9 / n:.0f} s simulated each; clients "
              f"unserved median {sorted(r['outage'])[n // 2] / 1e9:.2f} s)")
    print(f"seeds={len(seeds)} failed={failed} (goal: failover scenarios >= 1,000/min on one core)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
