"""What write-ahead costs a decision step: the time from a service publishing the outputs of one
input until it may run their effects.

    python bench/write_ahead.py [--steps 400] [--outputs 4]

A broker process (durability group: fsync about every 1 ms) and one asyncio client in this
process, as a service's runtime uses it. For each step: ``publish_durable`` of ``--outputs``
items, awaited until the broker acknowledges them (the effects may run then). Before the change,
effects ran right after ``publish_nowait`` (0 wait). Prints ``name=value unit`` lines.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def measure(state: str, steps: int, outputs: int) -> list[float]:
    from lvsbus.bus import AsyncBusClient
    from lvsbus.host.paths import StateDirs

    dirs = StateDirs(state)
    c = AsyncBusClient(dirs.run, "bench", log_dir=dirs.log)
    await c.start()
    out = []
    try:
        for i in range(steps + 20):
            items = [("bus.probe", {"sent_ns": time.monotonic_ns(), "n": i, "pad": "x" * 60}, None)] * outputs
            t0 = time.perf_counter()
            await c.publish_durable(items)
            if i >= 20:  # warm-up
                out.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.002)  # decisions come one at a time, not back to back
    finally:
        c.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--outputs", type=int, default=4, help="outputs a step (a takeover has ~8)")
    ap.add_argument("--durability", default="group", help="the broker's: group (as a router runs it), none, always")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="lvsbus-wa-")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    broker = subprocess.Popen([sys.executable, "-m", "lvsbus.cli", "broker", "--node", "b", "--state-dir", tmp,
                               "--durability", args.durability],
                              stderr=subprocess.PIPE, env=env)
    try:
        while b"broker ready" not in broker.stderr.readline():
            if broker.poll() is not None:
                raise SystemExit("the broker did not start")
        lat = sorted(asyncio.run(measure(tmp, args.steps, args.outputs)))
        q = statistics.quantiles(lat, n=100)
        print(f"steps={len(lat)}")
        print(f"outputs_per_step={args.outputs}")
        print(f"durability={args.durability}")
        print(f"ack_wait_p50={q[49]:.2f} ms")
        print(f"ack_wait_p90={q[89]:.2f} ms")
        print(f"ack_wait_p99={q[98]:.2f} ms")
        print(f"ack_wait_max={lat[-1]:.2f} ms")
        print(f"load_average={os.getloadavg()[0]:.1f}")
    finally:
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
