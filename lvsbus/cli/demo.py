"""``lvsbus demo``: show lvsbus working on this machine.

``lvsbus demo bus`` shows the spine: a broker process records events from two publishers, is
killed with SIGKILL, restarts and resumes the sequence; the log is checked and replayed.
``lvsbus demo cluster`` (the README's main job) builds a real LVS cluster out of network
namespaces; see ``lvsbus/demo/cluster.py``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from lvsbus.host.argtypes import dir_to_write, float_range, int_range


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run a demo on this machine (root)",
        description="Demos. `cluster` (default): two LVS routers, three real servers and a client in network "
        "namespaces; the client's requests through IPVS; failover after SIGKILL; the incident replayed. Where this "
        "kernel has no IPVS, the cluster runs inside a qemu VM (Debian's kernel) unless --no-vm. "
        "`bus`: the recorded bus and its log alone.",
    )
    p.add_argument("what", nargs="?", default="cluster", choices=("cluster", "bus"))
    p.add_argument("--keep", action="store_true", help="keep the state directory (logs) afterwards")
    p.add_argument("--out", default="demo-out", type=dir_to_write, help="where to write the incident timeline (default %(default)s/)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--vm", action="store_true",
                       help="cluster: run inside the qemu VM (Debian's kernel, with IPVS) even if this kernel has IPVS; "
                       "fail if the VM cannot run. Default: the VM only where this kernel has no IPVS")
    where.add_argument("--no-vm", action="store_true",
                       help="cluster: never the VM; without IPVS here, show the table lvsd desires instead of the "
                       "kernel's (no load balancing)")
    p.add_argument("--quick", action="store_true", help="cluster: skip the replay --verify step (the test suite's run)")
    p.add_argument("--vm-timeout", type=float_range(0, 86400, low_open=True), default=1200,
                   help=argparse.SUPPRESS)
    p.add_argument("--vm-cpus", type=int_range(0, 64), default=0, help=argparse.SUPPRESS)  # 0: 2 where the host has 2+
    p.set_defaults(func=cmd_demo)


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def cmd_demo(args) -> int:
    if args.what == "bus":
        return demo_bus(args)
    try:
        from lvsbus.demo.cluster import demo_cluster
    except ModuleNotFoundError:
        say("the cluster demo is not available in this build; running the bus demo")
        return demo_bus(args)
    return demo_cluster(args)


def _start_broker(state: str) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-m", "lvsbus.cli", "broker", "--node", "demo1", "--state-dir", state],
        stderr=subprocess.PIPE,
        env={**os.environ, "LVSBUS_LOG_LEVEL": "warning"},
    )
    while b"broker ready" not in p.stderr.readline():
        if p.poll() is not None:
            raise SystemExit("broker did not start")
    return p


def demo_bus(args) -> int:
    from lvsbus.wire import catalog  # noqa: F401
    from lvsbus.bus import BusClient
    from lvsbus.wire.events import decode
    from lvsbus.log import LogReader, check

    state = tempfile.mkdtemp(prefix="lvsbus-demo-")
    broker = None
    try:
        say(f"starting a broker for router 'demo1' (state in {state})")
        broker = _start_broker(state)
        sub = BusClient(f"{state}/run", "watcher", subs=("bus.probe",), log_dir=f"{state}/log")
        a, b = BusClient(f"{state}/run", "svc-a"), BusClient(f"{state}/run", "svc-b")
        acked = []
        for i in range(10):
            acked.append((a if i % 2 else b).publish_acked("bus.probe", {"sent_ns": time.monotonic_ns(), "n": i, "pad": ""}))
        say(f"10 events published by two services and acknowledged as durable: seqs {acked[0]}..{acked[-1]}")
        say("a malformed event is refused and counted; the broker runs on")
        a.publish("bus.probe", {"sent_ns": "yesterday", "n": 0, "pad": ""})
        time.sleep(0.2)
        say(f"SIGKILL the broker (pid {broker.pid})")
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        broker = _start_broker(state)
        seq = a.publish_acked("bus.probe", {"sent_ns": time.monotonic_ns(), "n": 10, "pad": ""}, timeout=10)
        say(f"broker restarted; the same clients went on without help; the next event got seq {seq}")
        got = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(got) < 11:
            got.extend(sub.recv_batch(0.5))
        say(f"the watcher received {len(got)} probes in log order, none lost across the crash: "
            f"{[e.payload['n'] for e in got]}")
        for c in (sub, a, b):
            c.close()
        report = check(f"{state}/log")
        say("log check: " + (report.format().splitlines()[0] if hasattr(report, "format") else str(report)))
        say("the log, as `lvsbus log dump` shows it:")
        from lvsbus.cli.bus import format_event

        for s, body in LogReader(f"{state}/log").read(1):
            print("   " + format_event(decode(body, s), False))
        return 0
    finally:
        if broker is not None and broker.poll() is None:
            broker.send_signal(signal.SIGTERM)
            broker.wait(10)
        if args.keep:
            say(f"state kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)
