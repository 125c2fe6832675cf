"""How fast a router that starts is back in charge: lvsbus (services forked from the zygote, and
by exec as before) and keepalived 2.2's VRRP side by side (issue 18, goal 2; docs/router.md).

    sudo python bench/startup.py [--runs 5] [--keepalive 0.1] [--deadtime 0.3]

The failover bench's topology (bench/failover.py: two routers, a client probing the VIP every
``--probe-ms``): r1 (the higher priority) is stopped, r2 serves; then r1 starts:

* ``first_packet_ms``: start -> r1's first heartbeat (lvsbus UDP / VRRP advert) seen on r2's
  public interface (a packet socket in r2's namespace);
* ``back_ms``: start -> the client's first answer from r1 on the VIP (it preempted);
* ``gap_ms``: the longest time without an answer meanwhile (the client-visible outage);
* for lvsbus, where the time goes: start -> the first log line of each stage (``at_zygote_started_ms``,
  ``at_broker_started_ms``, ``at_config_loaded_ms``, ``at_pulse_forked_ms``, ``at_pulse_started_ms``).

Output: ``name=value unit`` lines, medians over ``--runs``, one set per kind.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import signal
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lvsbus.demo.netns import VIP, Topology, netns_available  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_failover", ROOT / "bench" / "failover.py")
failover = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(failover)  # type: ignore[union-attr]

R1_PUBLIC = "10.99.1.11"
ETH_P_IP = 0x0800


class Sniffer(threading.Thread):
    """r2's public interface: the first IPv4 packet from r1 that is a heartbeat (VRRP, IP proto 112,
    or lvsbus's UDP to ``port``) after ``arm``; time.monotonic() of it."""

    def __init__(self, topo: Topology, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = topo.socket("r2", socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        self.sock.settimeout(0.2)
        self.port = port
        self.armed_at: float | None = None
        self.seen_at: float | None = None
        self.stop = False
        self.start()

    def arm(self) -> None:
        self.seen_at = None
        self.armed_at = time.monotonic()

    def run(self) -> None:
        src = socket.inet_aton(R1_PUBLIC)
        while not self.stop:
            try:
                pkt = self.sock.recv(2048)
            except (socket.timeout, OSError):
                continue
            now = time.monotonic()
            if self.armed_at is None or self.seen_at is not None or len(pkt) < 28 or pkt[12:16] != src:
                continue
            ihl = (pkt[0] & 0x0F) * 4
            proto = pkt[9]
            if proto == 112 or (proto == 17 and struct.unpack("!H", pkt[ihl + 2: ihl + 4])[0] == self.port):
                self.seen_at = now


class Kind(failover.Pair):
    """The failover bench's pair, lvsbus with ``--spawn`` (None: keepalived)."""

    def __init__(self, *a, spawn: str | None = None, **kw) -> None:
        super().__init__(*a, **kw)
        self.spawn = spawn

    def argv_extra(self) -> list[str]:
        return ["--spawn", self.spawn] if self.spawn else []


def start_with(pair: Kind, r: str) -> None:
    """Pair.start with ``--spawn`` for lvsbus (the failover bench's argv, one option more)."""
    if pair.kind != "lvsbus":
        pair.start(r)
        return
    import os
    import subprocess

    argv = [sys.executable, "-m", "lvsbus.cli", "router", "--config", str(pair.config), "--state-dir",
            str(pair.state(r)), *pair.argv_extra()]
    pair.procs[r] = pair.topo.popen(r, argv, stdout=subprocess.DEVNULL,
                                    stderr=open(pair.tmp / f"{pair.kind}-{pair.spawn}-{r}.err", "ab"),
                                    cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT), "LVSBUS_LOG_FORMAT": "json"})


#: where a start's time goes (lvsbus): the first log line of each, from r1's stderr
STAGES = (("zygote_started", lambda r: r.get("event") == "zygote_started"),
          ("broker_started", lambda r: r.get("event") == "broker_started"),
          ("config_loaded", lambda r: r.get("event") == "config_loaded"),
          ("pulse_forked", lambda r: r.get("event") == "service_started" and r.get("service") == "pulse"),
          ("pulse_started", lambda r: r.get("event") == "pulse_started"))


def stages(pair: Kind, r: str, since_wall: float) -> dict[str, float]:
    """ms from ``since_wall`` to the first line of each stage in this run of ``r``."""
    import datetime

    got: dict[str, float] = {}
    path = pair.tmp / f"{pair.kind}-{pair.spawn}-{r}.err"
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
            ts = datetime.datetime.fromisoformat(rec["ts"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError):
            continue
        if ts < since_wall:
            continue
        for name, match in STAGES:
            if name not in got and match(rec):
                got[name] = (ts - since_wall) * 1000
    return {f"at_{name}_ms": got.get(name, float("nan")) for name, _ in STAGES}


def one_run(pair: Kind, prober, sniffer: Sniffer, every: float) -> dict[str, float]:
    pair.stop_all()
    pair.run += 1
    for r in ("r1", "r2"):
        pair.topo.run(r, "ip", "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)
    start_with(pair, "r2")
    if prober.first_from("r2", time.monotonic(), 30.0, every) is None:
        raise RuntimeError(f"{pair.kind}: r2 does not answer alone")
    time.sleep(0.5)
    sniffer.arm()
    wall = time.time()
    t0 = time.monotonic()
    start_with(pair, "r1")
    gap, seen = prober.gaps(30.0, every, stop_when=lambda names: "r1" in names)
    back = (time.monotonic() - t0) if "r1" in seen else float("nan")
    row = {"back_ms": back * 1000, "gap_ms": gap * 1000,
           "first_packet_ms": ((sniffer.seen_at - t0) * 1000) if sniffer.seen_at else float("nan")}
    if pair.kind == "lvsbus":
        time.sleep(0.5)
        row.update(stages(pair, "r1", wall))
    pair.stop_all()  # the next kind has the topology to itself
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--runs", type=int, default=5, help="starts per kind, interleaved; medians printed (default %(default)s)")
    ap.add_argument("--keepalive", type=float, default=0.1, help="heartbeat / VRRP advert interval, s (default %(default)s)")
    ap.add_argument("--deadtime", type=float, default=0.3, help="lvsbus's deadtime, s (default %(default)s)")
    ap.add_argument("--probe-ms", type=float, default=2.0, help="the client's probe interval (default %(default)s)")
    ap.add_argument("--kinds", default="zygote,exec,keepalived",
                    help="comma-separated: zygote, exec (lvsbus --spawn), keepalived (default %(default)s)")
    args = ap.parse_args()
    why = netns_available()
    if why:
        print(f"bench/startup.py: {why}", file=sys.stderr)
        return 2
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in ("zygote", "exec", "keepalived")]
    if unknown or not kinds or args.runs < 1:
        print(f"bench/startup.py: --kinds takes zygote, exec, keepalived (got {args.kinds!r}); --runs at least 1",
              file=sys.stderr)
        return 2
    if "keepalived" in kinds and not shutil.which("keepalived"):
        print("# keepalived not installed: skipped", file=sys.stderr)
        kinds.remove("keepalived")
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    topo = Topology(routers=2).build()
    try:
        failover.start_responders(topo, topo.routers)
        prober = failover.Prober(topo)
        sniffer = Sniffer(topo, 5391)
        every = args.probe_ms / 1000
        results: dict[str, list[dict[str, float]]] = {}
        pairs = {k: Kind(topo, tmp / k, "keepalived" if k == "keepalived" else "lvsbus", args.keepalive,
                         args.deadtime, private_link=False, spawn=None if k == "keepalived" else k)
                 for k in kinds if (tmp / k).mkdir(parents=True) is None}
        for i in range(args.runs):  # interleaved: each kind sees the same machine
            for k, pair in pairs.items():
                row = one_run(pair, prober, sniffer, every)
                results.setdefault(k, []).append(row)
                print(f"# run {i + 1} {k}: " + ", ".join(f"{n} {v:.0f}" for n, v in row.items()), file=sys.stderr, flush=True)
        for k, pair in pairs.items():
            pair.stop_all()
        for k, rows in results.items():
            for name in rows[0]:
                vals = [r[name] for r in rows if r[name] == r[name]]
                med = statistics.median(vals) if vals else float("nan")
                failover.out(f"{k}_{name}", f"{med:.0f}", "ms")
        return 0
    finally:
        sniffer_obj = locals().get("sniffer")
        if sniffer_obj is not None:
            sniffer_obj.stop = True
        for pair in locals().get("pairs", {}).values():
            pair.stop_all()
        topo.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
