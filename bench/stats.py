"""How much the IPVS traffic figures (``ipvs.stats``) add to the event log, and what they cost.

Synthetic kernels of SERVICES x SERVERS with figures of a busy site (counters of hours of
traffic, so most byte and packet counters need 8 bytes), sampled every INTERVAL seconds for one
simulated hour through the applier's real pure code (``lvsbus.ipvs.stats.Sampler``), each payload
encoded as the broker stores it (envelope + log framing, ``lvsbus.wire.events.encode`` +
``lvsbus.log.frame``). Each interval a share of the real servers sees traffic (its counters and
rates change); the rest are idle (their rates decayed to 0: nothing changes). Printed, one figure
a line (``name=value unit``):

    log_bytes_per_hour_worst     every row changes every interval
    log_bytes_per_hour_share     SHARE of the real servers change every interval
    event_bytes_full             one full sample (the first, then every 10 min)
    sampler_us_per_sample        the pure diff of two samples (the shell's CPU per interval)
    validate_us_per_event        the broker's schema check of one worst-case event
    fold_us_per_event            lvsbus.ipvs.stats.fold of one worst-case event (metrics, console)

    python bench/stats.py [--services 100] [--servers 10] [--intervals 2,5] [--share 0.2]

Each line is printed for each interval (s); 5 is the config's default (ipvs_stats_interval).
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lvsbus.wire import catalog  # noqa: E402,F401
from lvsbus.wire.events import REGISTRY, Event, encode  # noqa: E402
from lvsbus.ipvs.stats import Figures, Sampler, fold, row, service_row  # noqa: E402
from lvsbus.log import frame  # noqa: E402


def busy_kernel(services: int, servers: int, rnd: random.Random) -> dict:
    out = {}
    for i in range(services):
        dests = {}
        for j in range(servers):
            conns = rnd.randrange(10**6, 10**8)
            inp, outp = conns * 12, conns * 20
            dests[f"10.{1 + i // 250}.{i % 250}.{j + 1}:80"] = row(
                (conns, inp, outp, inp * 90, outp * 1200, rnd.randrange(50, 500), rnd.randrange(500, 6000),
                 rnd.randrange(800, 10000), rnd.randrange(10**5, 10**7), rnd.randrange(10**6, 10**8),
                 rnd.randrange(0, 2000), rnd.randrange(0, 20000)))
        svc = [sum(r[k] for r in dests.values()) for k in range(10)]
        out[f"tcp:192.0.{2 + i // 250}.{i % 250}:{80 + i % 3}"] = (service_row(svc, list(dests.values())), dests)
    return out


def tick(kernel: dict, share: float, interval: float, rnd: random.Random) -> dict:
    """The kernel one interval later: a share of the real servers saw traffic."""
    out = {}
    for svc, (srow, dests) in kernel.items():
        nd = {}
        for k, r in dests.items():
            if share >= 1 or rnd.random() < share:
                c = rnd.randrange(1, 500)
                r = row((r[0] + c, r[1] + c * 12, r[2] + c * 20, r[3] + c * 1080, r[4] + c * 24000,
                         max(1, r[5] + rnd.randrange(-5, 6)), r[6] + rnd.randrange(1, 50), r[7] + rnd.randrange(1, 50),
                         r[8] + rnd.randrange(1, 5000), r[9] + rnd.randrange(1, 50000),
                         rnd.randrange(0, 2000), rnd.randrange(0, 20000)))
            nd[k] = r
        changed = nd != dests
        svc_figs = [srow[k] + (sum(nd[d][k] - dests[d][k] for d in nd) if changed and k < 5 else 0) for k in range(10)]
        if changed:
            svc_figs[5:10] = [sum(r[k] for r in nd.values()) for k in range(5, 10)]
        out[svc] = (service_row(svc_figs, list(nd.values())), nd)
    return out


def log_bytes(payload: dict, seq: int) -> int:
    ev = Event(seq, "lvs1", "ipvs", "ipvs.stats", 1, seq * 10**9, 1_700_000_000 * 10**9 + seq, None, payload)
    return len(frame(seq, encode(ev)))


def run_hour(services: int, servers: int, interval: float, share: float, seed: int = 1) -> tuple[int, int, int]:
    """(log bytes in one hour, events, bytes of the first full event)."""
    rnd = random.Random(seed)
    kernel = busy_kernel(services, servers, rnd)
    sampler = Sampler()
    total = events = first = 0
    n = int(3600 / interval)
    for i in range(n):
        p = sampler.observe(kernel, int(i * interval * 1e9), int(interval * 1000))
        if p is not None:
            b = log_bytes(p, i + 1)
            total += b
            events += 1
            first = first or b
        kernel = tick(kernel, share, interval, rnd)
    return total, events, first


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--servers", type=int, default=10)
    ap.add_argument("--intervals", default="2,5", help="seconds (ipvs_stats_interval values), comma-separated")
    ap.add_argument("--share", type=float, default=0.2, help="share of the real servers with traffic each interval")
    args = ap.parse_args(argv)
    for interval in (float(x) for x in args.intervals.split(",")):
        worst, ev_w, full = run_hour(args.services, args.servers, interval, 1.0)
        part, ev_p, _ = run_hour(args.services, args.servers, interval, args.share)
        print(f"# services={args.services} servers={args.servers} interval_s={interval}")
        print(f"log_bytes_per_hour_worst={worst} B ({worst / 1e6:.1f} MB, {ev_w} events)")
        print(f"log_bytes_per_hour_share={part} B ({part / 1e6:.1f} MB, share={args.share}, {ev_p} events)")
        print(f"event_bytes_full={full} B")

    rnd = random.Random(2)
    a = busy_kernel(args.services, args.servers, rnd)
    b = tick(a, 1.0, 2.0, rnd)
    reps = 20
    t0 = time.perf_counter()
    for i in range(reps):
        s = Sampler()
        s.observe(a, 0, 2000)
        p = s.observe(b, 1, 2000)
    per_sample = (time.perf_counter() - t0) / (2 * reps)
    print(f"sampler_us_per_sample={per_sample * 1e6:.0f} us")
    t0 = time.perf_counter()
    for _ in range(reps):
        REGISTRY.validate("ipvs.stats", 1, p)
    print(f"validate_us_per_event={(time.perf_counter() - t0) / reps * 1e6:.0f} us")
    t0 = time.perf_counter()
    for _ in range(reps):
        fold(Figures(), p)
    print(f"fold_us_per_event={(time.perf_counter() - t0) / reps * 1e6:.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
