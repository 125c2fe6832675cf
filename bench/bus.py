"""Bus benchmark: publisher process -> broker process (durable log, group commit) -> subscriber process.

Prints, one per line as `name=value unit`:
  sustained events/s (publisher batching as the client library does, subscriber receiving all),
  publish-to-deliver latency p50/p99/max at a fixed 10,000 events/s (one event per publish).

Usage: python bench/bus.py [--events 600000] [--rate 10000] [--seconds 5] [--durability group]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

PAD = "x" * 60  # ~120-byte events, like a heartbeat observation


def subscriber(run_dir, log_dir, n_expected, ready, out, timeout):
    from lvsbus.bus import BusClient

    c = BusClient(run_dir, "bench-sub", subs=("bus.probe",), log_dir=log_dir, rcvhwm=10000)
    while c.core.epoch is None:
        c._pump(0.05)
    ready.set()
    got = 0
    lat = []
    first = last = None
    deadline = time.monotonic() + timeout
    while got < n_expected and time.monotonic() < deadline:
        for ev in c.recv_batch(1.0):
            now = time.monotonic_ns()
            if first is None:
                first = now
            last = now
            got += 1
            lat.append(now - ev.payload["sent_ns"])
    out.put((got, first, last, lat, c.core.lags))
    c.close()


def publisher(run_dir, n, batch, rate, go):
    from lvsbus.bus import BusClient

    c = BusClient(run_dir, "bench-pub")
    go.wait()
    if rate:
        interval = 1e9 / rate
        start = time.monotonic_ns()
        for i in range(n):
            target = start + i * interval
            delay = (target - time.monotonic_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)  # not a busy loop: on 2 cores it would steal the broker's CPU
            c.publish("bus.probe", {"sent_ns": time.monotonic_ns(), "n": i, "pad": PAD})
    else:
        for i in range(0, n, batch):
            t = time.monotonic_ns()
            c.publish_many([("bus.probe", {"sent_ns": t, "n": j, "pad": PAD}) for j in range(i, min(n, i + batch))])
    c.publish_acked("bus.probe", {"sent_ns": time.monotonic_ns(), "n": n, "pad": PAD}, timeout=60)
    c.close()


def run(n, batch, rate, durability):
    state = tempfile.mkdtemp(prefix="lvsbus-bench-")
    broker = subprocess.Popen(
        [sys.executable, "-m", "lvsbus.cli", "broker", "--node", "bench", "--state-dir", state, "--durability", durability],
        stderr=subprocess.PIPE, env={**os.environ, "LVSBUS_LOG_LEVEL": "warning"},
    )
    try:
        while b"broker ready" not in broker.stderr.readline():
            if broker.poll() is not None:
                raise SystemExit("broker did not start")
        ready, go, out = mp.Event(), mp.Event(), mp.Queue()
        sub = mp.Process(target=subscriber, args=(f"{state}/run", f"{state}/log", n + 1, ready, out, 120))
        sub.start()
        ready.wait(10)
        pub = mp.Process(target=publisher, args=(f"{state}/run", n, batch, rate, go))
        pub.start()
        time.sleep(0.3)
        t0 = time.monotonic_ns()
        go.set()
        got, first, last, lat, lags = out.get(timeout=180)
        pub.join(30)
        sub.join(30)
        return got, t0, last, lat, lags
    finally:
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(10)
        except subprocess.TimeoutExpired:
            broker.kill()
        shutil.rmtree(state, ignore_errors=True)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=600_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of the fixed-rate latency run")
    ap.add_argument("--durability", default="group", choices=("group", "always", "none"))
    a = ap.parse_args()

    got, t0, last, _lat, lags = run(a.events, a.batch, 0, a.durability)
    print(f"throughput_events={got} events")
    print(f"throughput_events_per_s={got / ((last - t0) / 1e9):.0f} events/s")
    print(f"throughput_subscriber_lags={lags} count")

    n = int(a.rate * a.seconds)
    got, t0, last, lat, lags = run(n, 1, a.rate, a.durability)
    lat = [x / 1e3 for x in lat[:-1]]  # us; drop the acked closing probe
    print(f"latency_rate={a.rate} events/s")
    print(f"latency_events={len(lat)} events")
    print(f"latency_p50={pct(lat, 0.50):.0f} us")
    print(f"latency_p99={pct(lat, 0.99):.0f} us")
    print(f"latency_max={max(lat):.0f} us")


if __name__ == "__main__":
    main()
