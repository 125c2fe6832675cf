"""Benchmark of lvsbus.log: append throughput per durability policy, frame parsing, reading.

Prints one figure a line, ``name=value unit``. 100-byte bodies. Temporary files go under a temp
directory that is deleted at the end. Run: ``python bench/log.py [--seconds 2]``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lvsbus.log import Durability, EventLog, LogReader, frame_batch, parse_frames  # noqa: E402

BODY = bytes(range(100))


class _Quiet:
    def debug(self, *a, **k): pass
    info = warning = error = debug


def bench_append(base: str, mode: str, seconds: float, batch: int) -> tuple[float, float, int]:
    d = tempfile.mkdtemp(dir=base)
    log = EventLog(d, durability=Durability(mode), logger=_Quiet())
    n = 1
    t0 = time.perf_counter()
    deadline = t0 + seconds
    try:
        while True:
            log.append_batch([(s, BODY) for s in range(n, n + batch)])
            n += batch
            if (n & 0x3FF) < batch and time.perf_counter() > deadline:
                break
        elapsed = time.perf_counter() - t0
        t1 = time.perf_counter()
        log.sync()
        lag = time.perf_counter() - t1
    finally:
        log.close()
    return (n - 1) / elapsed, lag, n - 1


def bench_group_latency(base: str, seconds: float) -> tuple[float, float]:
    """Time from append return to durable_seq covering it (interval 1 ms), one record at a time."""
    d = tempfile.mkdtemp(dir=base)
    lat = []
    with EventLog(d, durability=Durability("group", interval_ms=1.0), logger=_Quiet()) as log:
        deadline = time.perf_counter() + seconds
        n = 1
        while time.perf_counter() < deadline:
            log.append(n, BODY)
            t0 = time.perf_counter()
            log.wait_durable(n, timeout=5)
            lat.append(time.perf_counter() - t0)
            n += 1
    lat.sort()
    return lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000


def bench_parse(seconds: float) -> float:
    buf = frame_batch((s, BODY) for s in range(1, 10001))
    count = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        records, consumed = parse_frames(buf)
        count += len(records)
    return count / (time.perf_counter() - t0)


def bench_read(base: str, seconds: float) -> tuple[float, int]:
    d = tempfile.mkdtemp(dir=base)
    with EventLog(d, durability=Durability("none"), logger=_Quiet()) as log:
        n = 1
        for _ in range(1000):
            log.append_batch([(s, BODY) for s in range(n, n + 1000)])
            n += 1000
    total = n - 1
    count = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in LogReader(d).read(1):
            count += 1
    elapsed = time.perf_counter() - t0
    return count / elapsed, total


def bench_sealed_scan(base: str, segments: int, segment_mb: float) -> dict:
    """The broker's start-up scan of sealed segments (EventLog.scan_sealed): by whole-file CRC
    (segments sealed with a .sum) and record by record (no .sum), and how much a Python thread
    running alongside (the broker's loop) is slowed while it runs."""
    import threading

    d = tempfile.mkdtemp(dir=base)
    seg_bytes = int(segment_mb * 2**20)
    log = EventLog(d, durability=Durability("none"), segment_bytes=seg_bytes, logger=_Quiet())
    n = 1
    while len(os.listdir(d)) < 3 * (segments + 1):  # .seg, .idx, .sum of each sealed one
        log.append_batch([(s, BODY) for s in range(n, n + 1000)])
        n += 1000
    out = {"records": n - 1}

    def spin(stop, counter):
        while not stop.is_set():
            for _ in range(10_000):
                pass
            counter[0] += 1

    def measure(fn):
        counter, stop = [0], threading.Event()
        t = threading.Thread(target=spin, args=(stop, counter))
        t0 = time.perf_counter()
        t.start()
        time.sleep(0.3)
        base_rate = counter[0] / 0.3
        c0, t1 = counter[0], time.perf_counter()
        res = fn()
        during = (counter[0] - c0) / (time.perf_counter() - t1)
        stop.set()
        t.join()
        del t0
        return res, during / base_rate if base_rate else 0.0

    res, share = measure(log.scan_sealed)
    out["sum_mb_s"] = res.bytes / 2**20 / res.seconds
    out["sum_share"] = share
    out["sum_segments"] = res.by_sum
    for name in os.listdir(d):
        if name.endswith(".sum"):
            os.unlink(os.path.join(d, name))
    res, share = measure(log.scan_sealed)
    out["records_mb_s"] = res.bytes / 2**20 / res.seconds
    out["records_per_s"] = (n - 1) * res.bytes / max(1, sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
                                                       if f.endswith(".seg"))) / res.seconds
    out["records_share"] = share
    out["records_segments"] = res.by_records
    log.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--scan", action="store_true", help="also the sealed-segment scan figures (writes "
                   "--scan-segments x --scan-segment-mb of log)")
    p.add_argument("--scan-only", action="store_true", help="only the sealed-segment scan figures")
    p.add_argument("--scan-segments", type=int, default=4)
    p.add_argument("--scan-segment-mb", type=float, default=64)
    args = p.parse_args()
    base = tempfile.mkdtemp(prefix="lvsbus-bench-log-")
    try:
        if args.scan or args.scan_only:
            r = bench_sealed_scan(base, args.scan_segments, args.scan_segment_mb)
            print(f"sealed_scan_by_sum_mb_per_s={r['sum_mb_s']:.0f} MB/s ({r['sum_segments']} segments of "
                  f"{args.scan_segment_mb:g} MiB; a Python thread alongside keeps {100 * r['sum_share']:.0f}% "
                  "of its speed)", flush=True)
            print(f"sealed_scan_by_records_mb_per_s={r['records_mb_s']:.0f} MB/s ({r['records_per_s']:.0f} "
                  f"records/s; a Python thread alongside keeps {100 * r['records_share']:.0f}% of its speed)",
                  flush=True)
            if args.scan_only:
                return 0
        for mode, batch in (("none", 1000), ("none", 100), ("none", 1), ("group", 1000), ("group", 100),
                            ("group", 1), ("always", 1000), ("always", 1)):
            rate, lag, n = bench_append(base, mode, args.seconds, batch)
            suffix = "" if batch == 1000 else f"_batch{batch}"
            print(f"append_{mode}{suffix}_records_per_s={rate:.0f} records/s", flush=True)
        p50, p99 = bench_group_latency(base, args.seconds / 2)
        print(f"group_commit_durable_latency_p50_ms={p50:.3f} ms", flush=True)
        print(f"group_commit_durable_latency_p99_ms={p99:.3f} ms", flush=True)
        print(f"parse_frames_records_per_s={bench_parse(args.seconds):.0f} records/s", flush=True)
        rate, total = bench_read(base, args.seconds)
        print(f"read_records_per_s={rate:.0f} records/s", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
