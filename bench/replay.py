"""Benchmark of ``lvsbus replay --verify`` on a realistic 1,000,000-event router log.

The log is made by the cluster simulator (tools/simulate.py): two routers (keepalive 1 s, both
links), 20 real servers checked every 2 s by nanny (results in 50 ms batches), all the cores the
repository has, and every half hour of simulated time one incident in turn (a router crash with
failover and preemption back, a flapping real server, a real server down for a while, a cut
private link, a nanny restart, a router stall). lvs1's log is verified up to --events records.

The log is kept in --cache (default: $TMPDIR/lvsbus-bench-replay-N), so a second run measures the
replay alone. Prints one figure a line, ``name=value unit``; ``cpu_events_per_s`` is the replay's
own CPU time (the machine is shared: wall clock includes other processes' turns).

    python bench/replay.py [--events 1000000] [--cache DIR] [--profile]
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lvsbus.log import LogReader  # noqa: E402
from lvsbus.wire.events import decode, decode_records  # noqa: E402
from lvsbus_tools.replay import verify  # noqa: E402
from lvsbus_tools.simulate import S, Cluster, Fault  # noqa: E402

EVENTS_PER_SIM_S = 9.0  # lvs1's log with 20 real servers (measured); sizes the simulated duration


def incidents(duration_ns: int) -> list[Fault]:
    cycle = [
        ("router_crash", "lvs1", 20 * S, 0),  # failover to lvs2, lvs1 boots and preempts back
        ("server_flap", "rs3", 60 * S, 0),
        ("server_fail", "rs7", 30 * S, 0),
        ("link_cut", "lvs1-lvs2/private", 20 * S, 0),
        ("service_crash", "lvs1/nanny", 2 * S, 0),
        ("stall", "lvs2", 4 * S, 0),
    ]
    out, at, k = [], 600 * S, 0
    while at < duration_ns - 120 * S:
        kind, target, dur, value = cycle[k % len(cycle)]
        out.append(Fault(at, kind, target, dur, value))
        at += 1800 * S
        k += 1
    return out


def generate(root: str, events: int) -> str:
    log = os.path.join(root, "lvs1", "log")
    if os.path.isdir(log):
        last = None
        for batch in LogReader(log).read_batches():
            last = batch[-1][0]
        if last is not None and last >= events:
            print(f"log=cached {log} ({last} events)")
            return log
    duration = int(events / EVENTS_PER_SIM_S * 1.03) * S
    faults = incidents(duration)
    t0 = time.perf_counter()
    res = Cluster(1, servers=20, faults=faults, log_root=root, duration=duration, check_invariants=False,
                  validate=False).run()
    el = time.perf_counter() - t0
    print(f"generated={res.events} events ({len(faults)} incidents, {duration / S / 3600:.1f} h simulated) "
          f"in {el:.1f} s ({res.events / el:,.0f} events/s)")
    return log


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--cache", default=None)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    root = args.cache or os.path.join(tempfile.gettempdir(), f"lvsbus-bench-replay-{args.events}")
    log = generate(root, args.events)

    # the log's mix
    mix = collections.Counter()
    n = 0
    t0 = time.process_time()
    for batch in LogReader(log).read_batches(1, args.events):
        for seq, body in batch:
            mix[decode(body, seq).type] += 1
            n += 1
    dec = time.process_time() - t0
    top = ", ".join(f"{t} {c / n:.0%}" for t, c in mix.most_common(6))
    print(f"mix: {top}")
    print(f"read_and_decode_validated_cpu_per_s={n / dec:,.0f} events/s")
    t0 = time.process_time()
    for batch in LogReader(log).read_batches(1, args.events):
        decode_records(batch, validate=False)
    print(f"read_and_decode_cpu_per_s={n / (time.process_time() - t0):,.0f} events/s (as --verify reads)")

    if args.profile:
        import cProfile
        import pstats

        cProfile.runctx("verify(log, to_seq=args.events)", globals(), locals(), "/tmp/bench-replay.prof")
        pstats.Stats("/tmp/bench-replay.prof").sort_stats("tottime").print_stats(20)
    ok = True
    for strict in (False, True):
        w0, c0 = time.perf_counter(), time.process_time()
        rep = verify(log, to_seq=args.events, strict=strict)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        ok = ok and rep.ok
        if not strict:
            print(rep.format())
            print(f"events={rep.events}")
            print(f"verify_wall_s={wall:.2f} s")
            print(f"events_per_s={rep.events / wall:,.0f} events/s (wall)")
            print(f"cpu_events_per_s={rep.events / cpu:,.0f} events/s (goal >= 200,000)")
        else:  # every payload checked against its schema again (--strict)
            print(f"strict_cpu_events_per_s={rep.events / cpu:,.0f} events/s (--strict, wall {rep.events / wall:,.0f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
