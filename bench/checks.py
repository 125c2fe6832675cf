"""nanny's check engine at scale: N real servers (default 10,000) checked every second by TCP
connect, sustained, with the results folded into NannyCore as the shell does (batches every 50 ms).

    python bench/checks.py [--servers 10000] [--seconds 30] [--interval 1.0] [--no-netns]

The real servers are (address, port) pairs on loopback: --ports listeners bound to the wildcard
address of a private network namespace (``unshare -n``, when root; --no-netns binds 127.0.0.1
only, and then needs servers <= ports), times 127.0.0.x addresses, in a separate listener process
(its CPU is not counted). Prints one figure a line, ``name=value unit``:

    checks_per_s, cpu_share (of one core, this process: scheduler + checks + batching + core fold),
    lateness_p50/p99/max (check start against its schedule), failed, skipped,
    health_memory_kb_per_server (10,000 NannyCore machines, measured with tracemalloc), and the
    same for one transitions.Machine model per server on a shared Machine, for comparison.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack  # noqa: E402

from lvsbus.config import Check, Config, RealServer, Router, VirtualService, to_dict  # noqa: E402
from lvsbus.wire.events import Event  # noqa: E402
from lvsbus_services.nanny.checks import Scheduler, new_loop, raise_nofile  # noqa: E402
from lvsbus_services.nanny.core import NannyCore  # noqa: E402

BASE_PORT = 20000


def serve(ports: int, host: str) -> None:
    """Listener process: accept and close, as fast as possible."""
    raise_nofile(65536)
    sel = selectors.DefaultSelector()
    for i in range(ports):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, BASE_PORT + i))
        s.listen(4096)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            ls = key.fileobj
            for _ in range(256):
                try:
                    c, _a = ls.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue
                c.close()


def make_config(n: int, ports: int, interval: float, multi_addr: bool) -> Config:
    per_vs = 100
    vss = []
    i = 0
    for v in range((n + per_vs - 1) // per_vs):
        servers = []
        for _ in range(min(per_vs, n - i)):
            addr = f"127.0.{1 + (i // ports) // 250}.{1 + (i // ports) % 250}" if multi_addr else "127.0.0.1"
            servers.append(RealServer(name=f"rs{i}", address=addr, port=BASE_PORT + i % ports))
            i += 1
        vss.append(VirtualService(name=f"vs{v}", address=f"10.1.{v // 250}.{v % 250 + 1}", port=80,
                                  check=Check(interval=interval, timeout=min(1.0, interval), rise=2, fall=3),
                                  servers=tuple(servers)))
    return Config(routers=(Router(name="lvs1", address="10.0.0.1"),), virtual_services=tuple(vss))


def ev(seq: int, type_: str, payload: dict) -> Event:
    return Event(seq, "bench", "nanny", type_, 1, time.monotonic_ns(), time.time_ns(), None, payload)


def memory_figures(cfg: Config) -> tuple[float, float]:
    core = NannyCore()
    model = to_dict(cfg)
    st = core.initial()
    tracemalloc.start()
    a = tracemalloc.take_snapshot()
    st, _ = core.decide(st, ev(1, "config.loaded", {"model": model, "digest": "d", "reload": False, "diff": {}}))
    b = tracemalloc.take_snapshot()
    used = sum(s.size_diff for s in b.compare_to(a, "filename"))
    tracemalloc.stop()
    n = len(st.machines)
    # the other way, for comparison: one transitions model object per server on a shared Machine
    from transitions import Machine

    from lvsbus_services.nanny.core import HEALTH_STATES, HEALTH_TRANSITIONS

    class M:
        pass

    m = Machine(model=[], states=list(HEALTH_STATES), initial="INIT", auto_transitions=False,
                transitions=[{"trigger": t, "source": list(s), "dest": d} for t, s, d, _r, _x in HEALTH_TRANSITIONS])
    k = 2000
    tracemalloc.start()
    a = tracemalloc.take_snapshot()
    models = [M() for _ in range(k)]
    for x in models:
        m.add_model(x)
    b = tracemalloc.take_snapshot()
    per_model = sum(s.size_diff for s in b.compare_to(a, "filename")) / k
    tracemalloc.stop()
    return used / n / 1024, per_model / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--ports", type=int, default=100)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--no-netns", action="store_true")
    ap.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--host", default="0.0.0.0", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.host)
        return 0
    if not args.no_netns and not args.in_netns:
        if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
            cmd = " ".join([sys.executable, *map(str, sys.argv), "--in-netns"])
            return subprocess.call(["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {cmd}"])
        args.no_netns = True
    multi = not args.no_netns
    raise_nofile(65536)
    host = "0.0.0.0" if multi else "127.0.0.1"
    lst = subprocess.Popen([sys.executable, __file__, "--serve", str(args.ports), "--host", host],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert lst.stdout.readline().strip() == "ready"
        cfg = make_config(args.servers, args.ports, args.interval, multi)
        kb_core, kb_model = memory_figures(cfg)
        return run(args, cfg, kb_core, kb_model)
    finally:
        lst.kill()
        lst.wait()


def run(args, cfg: Config, kb_core: float, kb_model: float) -> int:
    loop = new_loop()
    asyncio.set_event_loop(loop)
    core = NannyCore()
    st = core.initial()
    st, _ = core.decide(st, ev(1, "config.loaded", {"model": to_dict(cfg), "digest": "d", "reload": False, "diff": {}}))
    seq = [1]
    batch = {"ids": [], "ok": [], "latency_us": [], "detail": []}
    counts = {"results": 0, "failed": 0, "events": 0, "batches": 0}
    max_late = [0]

    def on_result(id_, ok, latency_us, detail, late_us, weight=None):
        batch["ids"].append(id_)
        batch["ok"].append(ok)
        batch["latency_us"].append(latency_us)
        batch["detail"].append(detail)
        if late_us > max_late[0]:
            max_late[0] = late_us
        counts["results"] += 1
        if not ok:
            counts["failed"] += 1

    def flush():
        nonlocal st
        loop.call_later(0.05, flush)
        if not batch["ids"]:
            return
        payload = {"digest": "d", **batch, "late_us": max_late[0]}
        body = msgpack.packb(payload)  # what publishing costs (the broker and bus are bench/bus.py's)
        payload = msgpack.unpackb(body)  # what the core's runtime decodes
        seq[0] += 1
        st, effects = core.decide(st, ev(seq[0], "health.check_results", payload))
        counts["events"] += len(effects)
        counts["batches"] += 1
        for k in batch:
            batch[k] = []
        max_late[0] = 0

    sched = Scheduler(on_result, loop)
    plan = [(h.id, h.address, h.check[1], h.check[2]) for h in st.machines.values()]
    sched.set_checks(plan)

    async def go():
        sched.start()
        loop.call_later(0.05, flush)
        await asyncio.sleep(args.warmup)
        r0, u0 = counts["results"], resource.getrusage(resource.RUSAGE_SELF)
        f0 = counts["failed"]
        sched.lateness = []
        t0 = time.monotonic()
        await asyncio.sleep(args.seconds)
        t1 = time.monotonic()
        u1 = resource.getrusage(resource.RUSAGE_SELF)
        lat = sorted(sched.lateness)
        sched.stop()
        wall = t1 - t0
        cpu = (u1.ru_utime - u0.ru_utime) + (u1.ru_stime - u0.ru_stime)
        n = counts["results"] - r0

        def q(p):
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else 0.0

        print(f"loop={type(loop).__module__.split('.')[0]}")
        print(f"servers={args.servers} count")
        print(f"interval={args.interval} s")
        print(f"seconds={wall:.1f} s")
        print(f"checks_per_s={n / wall:.0f} checks/s")
        print(f"cpu_share={100 * cpu / wall:.1f} % of one core")
        print(f"cpu_user={100 * (u1.ru_utime - u0.ru_utime) / wall:.1f} % of one core")
        print(f"cpu_sys={100 * (u1.ru_stime - u0.ru_stime) / wall:.1f} % of one core")
        print(f"cpu_per_check={1e6 * cpu / max(n, 1):.1f} us")
        print(f"lateness_p50={q(0.5):.2f} ms")
        print(f"lateness_p99={q(0.99):.2f} ms")
        print(f"lateness_max={lat[-1] * 1000 if lat else 0:.2f} ms")
        print(f"failed={counts['failed'] - f0} checks")
        print(f"skipped={sched.skipped} checks")
        print(f"batches={counts['batches']} count")
        print(f"health_events={counts['events']} count")
        print(f"health_memory_per_server={kb_core:.2f} KB (NannyCore: slotted Health + one shared Machine)")
        print(f"transitions_model_per_server={kb_model:.2f} KB (for comparison: one Machine model per server)")
        print(f"health_memory_10000={kb_core * 10000 / 1024:.1f} MB")
        print(f"loadavg_1m={os.getloadavg()[0]:.2f} (the machine's: other work competes for its {os.cpu_count()} cores)")

    loop.run_until_complete(go())
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
