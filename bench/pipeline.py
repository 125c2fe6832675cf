"""From a failed check to the desired-table delta at the applier's input, through real processes:

    broker (python -m lvsbus.cli broker)   nanny (python -m lvsbus_services.nanny --no-checks)
    lvsd (python -m lvsbus_services.lvsd)         this process: the check results' publisher and the applier

This process publishes ``health.check_results`` batches as nanny's shell does (one server failing,
then passing again; fall = rise = 1), nanny's core turns each into ``health.real_server_down`` /
``_up``, lvsd's core into ``lvsd.table_delta`` (its cause is the health event), and this process,
subscribed as the applier is, receives the delta. Printed, one figure a line (``name=value unit``):

    down_to_delta_p50/p99/max   the DOWN (or UP) event's broker timestamp -> delta received
    check_to_delta_p50/p99/max  the check results published -> delta received (nanny's fold too)

    python bench/pipeline.py [--events 1000] [--servers 50] [--gap-ms 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lvsbus.wire import catalog  # noqa: E402,F401
from lvsbus.bus import BusClient  # noqa: E402
from lvsbus.config import loads, to_dict  # noqa: E402
from lvsbus.host.paths import StateDirs  # noqa: E402


def start_broker(dirs: StateDirs) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "lvsbus.cli", "broker", "--node", "bench", "--state-dir", dirs.root],
                         cwd=ROOT, stderr=subprocess.PIPE, env={**os.environ, "LVSBUS_LOG_FORMAT": "json"})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = p.stderr.readline().decode()
        if "broker ready" in line:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p
    raise RuntimeError("broker did not start")


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each still running process, the last started first; SIGKILL one that does not exit within 10 s."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def config_text(n: int) -> str:
    out = ['[router.lvs1]\naddress = "127.0.0.1"\n', '[virtual.web]\naddress = "10.9.0.1"\nport = 80\n',
           "[virtual.web.check]\ninterval = 1.0\ntimeout = 1.0\nrise = 1\nfall = 1\n"]
    for i in range(n):
        out.append(f'[virtual.web.server.s{i}]\naddress = "10.0.{i // 250}.{i % 250 + 1}"\n')
    return "\n".join(out)


def q(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1000, help="health changes (half DOWN, half UP)")
    ap.add_argument("--servers", type=int, default=50)
    ap.add_argument("--gap-ms", type=float, default=5.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lvsbus-pipeline-"))
    procs: list[subprocess.Popen] = []
    try:
        dirs = StateDirs(str(tmp / "state")).make()
        procs.append(start_broker(dirs))
        cfg_path = tmp / "lvs.toml"
        cfg_path.write_text(config_text(args.servers))
        loaded = loads(cfg_path.read_text(), str(cfg_path))
        pub = BusClient(dirs.run, "nanny-shell")
        run_start = pub.publish_acked("config.loaded", {
            "path": str(cfg_path), "format": loaded.format, "digest": loaded.digest, "model": to_dict(loaded.config),
            "warnings": [], "local_router": "lvs1", "reload": False, "diff": {}})
        applier = BusClient(dirs.run, "applier", subs=("lvsd.table_desired", "lvsd.table_delta", "health.real_server_up", "health.real_server_down"))
        for name, extra in (("nanny", ["--no-checks"]), ("lvsd", [])):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", f"lvsbus_services.{name}", "--state-dir", dirs.root, "--config", str(cfg_path),
                 "--run-start-seq", str(run_start), *extra],
                cwd=ROOT, stderr=open(tmp / f"{name}.err", "wb"), env={**os.environ, "LVSBUS_LOG_LEVEL": "warning"}))
        ids = [f"web/s{i}" for i in range(args.servers)]

        def results(ok_for: dict[str, bool]):
            return {"digest": loaded.digest, "ids": list(ok_for), "ok": list(ok_for.values()),
                    "latency_us": [50] * len(ok_for), "detail": ["ok" if v else "refused" for v in ok_for.values()],
                    "late_us": 0}

        # warm up: every server UP, and lvsd's first full table seen
        pub.publish("health.check_results", results({i: True for i in ids}))
        got_table = False
        up_count = 0
        deadline = time.monotonic() + 20
        while (not got_table or up_count < args.servers) and time.monotonic() < deadline:
            e = applier.recv(1.0)
            if e is None:
                continue
            if e.type == "lvsd.table_desired":
                got_table = True
            elif e.type == "health.real_server_up":
                up_count += 1
        if not got_table:
            raise RuntimeError("lvsd published no table: " + (tmp / "lvsd.err").read_text()[-2000:])
        while applier.recv(0.3) is not None:
            pass

        down_to_delta: list[float] = []
        check_to_delta: list[float] = []
        down_only: list[float] = []
        health_ns: dict[int, tuple[int, str]] = {}
        for k in range(args.events):
            sid = ids[(k // 2) % len(ids)]
            ok = k % 2 == 1
            t_pub = time.monotonic_ns()
            pub.publish("health.check_results", results({sid: ok}))
            while True:
                e = applier.recv(5.0)
                now = time.monotonic_ns()
                if e is None:
                    raise RuntimeError(f"no delta for event {k}")
                if e.type.startswith("health.real_server_"):
                    health_ns[e.seq] = (e.mono_ns, e.type)
                    continue
                if e.type == "lvsd.table_delta" and e.cause in health_ns:
                    mono, typ = health_ns.pop(e.cause)
                    down_to_delta.append((now - mono) / 1e6)
                    check_to_delta.append((now - t_pub) / 1e6)
                    if typ.endswith("down"):
                        down_only.append((now - mono) / 1e6)
                    break
            time.sleep(args.gap_ms / 1000)
        print(f"events={len(down_to_delta)} count")
        print(f"down_to_delta_p50={q(down_only, 0.5):.2f} ms")
        print(f"down_to_delta_p99={q(down_only, 0.99):.2f} ms")
        print(f"down_to_delta_max={max(down_only):.2f} ms")
        print(f"health_to_delta_p50={q(down_to_delta, 0.5):.2f} ms (DOWN and UP)")
        print(f"health_to_delta_p99={q(down_to_delta, 0.99):.2f} ms (DOWN and UP)")
        print(f"check_to_delta_p50={q(check_to_delta, 0.5):.2f} ms")
        print(f"check_to_delta_p99={q(check_to_delta, 0.99):.2f} ms")
        print(f"check_to_delta_max={max(check_to_delta):.2f} ms")
        pub.close()
        applier.close()
        return 0
    finally:
        stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
