"""The IPVS applier at scale, in the kernel-tier VM (a Debian kernel with IPVS under qemu/TCG):

    python bench/apply.py [--services 1000] [--dests 10]       # on the host: boots the VM, runs itself in it
    python bench/apply.py --in-vm ...                           # inside a kernel that has IPVS

Figures, one a line (``name=value unit``):

* plan_ms: the pure diff, empty -> full table;
* netlink_ops_per_s: the full table from empty through ``lvsbus_services.ipvs.netlink`` (the applier's
  netlink layer: one request an op, every field sent, many requests a send, one ack each);
* applier_ops_per_s: the same through the running applier (``python -m lvsbus_services.ipvs`` on a real
  bus: lvsd.table_desired in, ``ipvs.ops_applied`` events (a run of accepted ops each), batch_applied out);
* single_change_ms: one weight change on the full table, from the lvsd.table_delta being
  recorded to the ops_applied event (bus, core plan, netlink, event back), median of --changes
  (stamps from the broker's clock, so the bench's own polling is not in the figure);
* ipvsadm_restore_ops_per_s: ``ipvsadm --restore`` of the same table (``lvsbus ipvs save``
  output) in the same VM, and the ratio of the applier's rate to it;
* ipvsadm_e_ms: ``ipvsadm -e`` of one weight on the same full table, run once (process start
  included), median of --changes, and the single change's ratio to it.

TCG emulates the CPU (roughly 5-20x slower than native): compare ratios, not absolute numbers.
"""
from __future__ import annotations

import argparse
import shutil
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def table(services: int, dests: int):
    from lvsbus.ipvs.table import Dest, Service, ServiceKey, Table

    entries = {}
    t = Table()
    for i in range(services):
        k = ServiceKey.tcp(f"10.{100 + i // 62500}.{(i // 250) % 250}.{i % 250 + 1}", 80)
        t = t.with_service(Service(k, "wlc"), [Dest(f"192.168.{j}.{i % 250 + 1}", 8000 + i // 250, "nat", 1) for j in range(dests)])
    del entries
    return t


def cpu_now() -> list[int]:
    """/proc/stat's first line: user nice system idle iowait irq softirq (clock ticks)."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:8]]


def cpu_split(before: list[int], after: list[int]) -> str:
    d = [b - a for a, b in zip(before, after)]
    hz = os.sysconf("SC_CLK_TCK")
    names = ("user", "nice", "sys", "idle", "iowait", "irq", "softirq")
    return " ".join(f"{n}={v / hz:.2f}s" for n, v in zip(names, d) if v)


def proc_cpu(pid: int) -> tuple[float, float]:
    """(user, system) seconds of one process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / hz, int(fields[12]) / hz


def in_vm(args) -> int:
    from lvsbus_services.ipvs.core import plan, save_lines
    from lvsbus_services.ipvs.netlink import Ipvs, op_request
    from lvsbus.ipvs.table import Table

    subprocess.run(["modprobe", "ip_vs"], check=True)
    subprocess.run(["modprobe", "ip_vs_wlc"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)  # no interface up: IPVS refuses every dest
    full = table(args.services, args.dests)
    nops = len(full) + sum(len(e.dests) for _k, e in full.items())

    t0 = time.perf_counter()
    ops = plan(Table(), full)
    print(f"plan_ms={(time.perf_counter() - t0) * 1000:.1f} ms ({len(ops)} ops)")

    with Ipvs() as ipvs:
        ipvs.flush()
        c0, r0 = cpu_now(), resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        codes = ipvs.apply_many(ops)
        dt = time.perf_counter() - t0
        c1, r1 = cpu_now(), resource.getrusage(resource.RUSAGE_SELF)
        assert not any(codes), f"{sum(1 for c in codes if c)} ops failed"
        print(f"netlink_ops_per_s={nops / dt:.0f} ops/s ({nops} ops in {dt:.2f} s; this process: user "
              f"{r1.ru_utime - r0.ru_utime:.2f} s, kernel {r1.ru_stime - r0.ru_stime:.2f} s; vCPU: {cpu_split(c0, c1)})")
        t0 = time.perf_counter()
        for op in ops:
            ipvs._msg(*op_request(op))
        print(f"encode_us_per_op={(time.perf_counter() - t0) / len(ops) * 1e6:.0f} us")
        t0 = time.perf_counter()
        got = ipvs.dump()
        print(f"dump_ms={(time.perf_counter() - t0) * 1000:.0f} ms")
        assert got == full, "the kernel table differs from the desired one"
        ipvs.flush()

    # ipvsadm --restore of the same table
    text = "\n".join(save_lines(full)) + "\n"
    c0, r0 = cpu_now(), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(["ipvsadm", "--restore"], input=text, text=True, check=True)
    restore_dt = time.perf_counter() - t0
    c1, r1 = cpu_now(), resource.getrusage(resource.RUSAGE_CHILDREN)
    restore_rate = nops / restore_dt
    print(f"ipvsadm_restore_ops_per_s={restore_rate:.0f} ops/s ({restore_dt:.2f} s; ipvsadm: user "
          f"{r1.ru_utime - r0.ru_utime:.2f} s, kernel {r1.ru_stime - r0.ru_stime:.2f} s; vCPU: {cpu_split(c0, c1)})")
    with Ipvs() as ipvs:
        assert ipvs.dump() == full, "ipvsadm --restore gave another table"
        ipvs.flush()
    applier_rate, change_ms = through_applier(full, nops, args.changes)
    # ipvsadm -e of one real server's weight on the same full table (left by the applier), run once each
    key = sorted(full.keys())[len(full) // 2]
    dk = sorted(full[key].dests)[0]
    e_ms = []
    for i in range(args.changes):
        t0 = time.perf_counter()
        subprocess.run(["ipvsadm", "-e", "-t", f"{key.address}:{key.port}", "-r", dk, "-m", "-w", str(50 + i)], check=True)
        e_ms.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.2)
    with Ipvs() as ipvs:
        assert ipvs.dump()[key].dests[dk].weight == 50 + args.changes - 1
        ipvs.flush()
    print(f"applier_ops_per_s={applier_rate:.0f} ops/s")
    print(f"single_change_ms={statistics.median(change_ms):.1f} ms (median of {len(change_ms)}; "
          f"min {min(change_ms):.1f}, max {max(change_ms):.1f})")
    print(f"ipvsadm_e_ms={statistics.median(e_ms):.1f} ms (median of {len(e_ms)}; min {min(e_ms):.1f}, max {max(e_ms):.1f}; "
          f"fork + exec + one request, on the same full table)")
    print(f"ratio_applier_to_ipvsadm_restore={applier_rate / restore_rate:.2f}")
    print(f"ratio_single_change_to_ipvsadm_e={statistics.median(change_ms) / statistics.median(e_ms):.2f}")
    return 0


def through_applier(full, nops: int, changes: int):
    from tests.kernel.harness import KernelRig
    from lvsbus.bus import BusClient
    from lvsbus_services.ipvs.netlink import Ipvs

    tmp = Path(tempfile.mkdtemp(prefix="bench-apply-"))
    cfg = tmp / "lvs.toml"
    cfg.write_text('[router.lvs1]\naddress = "127.0.0.1"\n')
    r = KernelRig(tmp, cfg)
    try:
        r.start("ipvs")
        r.wait(lambda: r.events("ipvs.table_read"), 120, "the applier's first dump", every=0.2)
        # the bench waits on the bus, not by reading the log over and over (on one vCPU each read
        # of a log holding the whole table took CPU from the processes measured)
        watch = BusClient(r.dirs.run, "bench", subs=("ipvs.batch_applied", "ipvs.ops_applied"))
        watch.recv(0.5)

        def wait_for(pred, timeout: float, what: str) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                ev = watch.recv(max(0.0, deadline - time.monotonic()))
                if ev is not None and pred(ev):
                    return
            raise AssertionError(f"timed out ({timeout}s) waiting for {what}")

        pids = {"broker": r.broker.proc.pid, "applier": r.procs["ipvs"].pid}
        p0 = {n: proc_cpu(pid) for n, pid in pids.items()}
        c0 = cpu_now()
        seq0 = r.publish_table(full)
        done_ops = [0]

        def counted(ev) -> bool:
            if ev.type == "ipvs.batch_applied" and ev.seq > seq0:
                done_ops[0] += ev.payload["applied"] + ev.payload["failed"]
            return done_ops[0] >= nops

        wait_for(counted, 3600, "the full table")
        c1 = cpu_now()
        p1 = {n: proc_cpu(pid) for n, pid in pids.items()}
        evs = r.events("", after=seq0 - 1)
        t_in = evs[0].mono_ns
        done = [e for e in evs if e.type == "ipvs.batch_applied"][-1]
        failed = sum(e.payload["failed"] for e in evs if e.type == "ipvs.batch_applied")
        assert failed == 0, f"{failed} ops failed"
        rate = nops / ((done.mono_ns - t_in) / 1e9)
        first_apply = next(e for e in evs if e.type == "ipvs.apply")
        first_op = next(e for e in evs if e.type == "ipvs.ops_applied")
        nl_us = sum(e.payload["duration_us"] for e in evs if e.type == "ipvs.ops_applied")
        print(f"applier_stages: table_desired -> first ipvs.apply {(first_apply.mono_ns - t_in) / 1e6:.0f} ms, "
              f"-> first ops_applied {(first_op.mono_ns - t_in) / 1e6:.0f} ms, -> last batch_applied "
              f"{(done.mono_ns - t_in) / 1e6:.0f} ms; netlink (sum of op durations) {nl_us / 1e3:.0f} ms; events {len(evs)}")
        print("applier_cpu: " + ", ".join(f"{n} user {p1[n][0] - p0[n][0]:.2f} s kernel {p1[n][1] - p0[n][1]:.2f} s" for n in pids)
              + f"; vCPU: {cpu_split(c0, c1)}")
        with Ipvs() as ipvs:
            assert ipvs.dump() == full
        key = sorted(full.keys())[len(full) // 2]
        dk = sorted(full[key].dests)[0]
        lat = []
        version = r.version
        for i in range(changes):
            d = full[key].dests[dk]
            w = 2 + i
            op = {"op": "edit_dest", "service": str(key), "dest": dk,
                  "attrs": {"forwarding": d.forwarding, "weight": w, "upper": 0, "lower": 0}}
            seq = r.as_lvsd.publish_acked("lvsd.table_delta", {"version": version + 1, "base_version": version, "ops": [op],
                                                               "reason": "bench", "virtual": None, "server": None})
            version += 1
            wait_for(lambda ev: ev.type == "ipvs.ops_applied" and ev.seq > seq, 60, "the weight change")
            ev_in = r.events("lvsd.table_delta", after=seq - 1)[0]
            ev_out = r.events("ipvs.ops_applied", after=seq)[0]
            ev_apply = r.events("ipvs.apply", after=seq)[0]
            lat.append((ev_out.mono_ns - ev_in.mono_ns) / 1e6)
            print(f"single_change {i}: delta -> ipvs.apply {(ev_apply.mono_ns - ev_in.mono_ns) / 1e6:.1f} ms -> ops_applied "
                  f"{(ev_out.mono_ns - ev_apply.mono_ns) / 1e6:.1f} ms (netlink {ev_out.payload['duration_us'] / 1e3:.1f} ms); "
                  f"stats events so far {len(r.events('ipvs.stats'))}", flush=True)
            time.sleep(0.5)
        watch.close()
        return rate, lat
    finally:
        r.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--dests", type=int, default=10)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--in-vm", action="store_true")
    args = ap.parse_args()
    if args.in_vm:
        return in_vm(args)
    from lvsbus.demo import qemu as kitmod

    kit = kitmod.build(log=lambda m: print(m, file=sys.stderr))
    out = tempfile.mkdtemp(prefix="bench-apply-vm-")
    cmd = (f"{sys.executable} bench/apply.py --in-vm --services {args.services} --dests {args.dests} "
           f"--changes {args.changes} > /mnt/out/bench.txt 2>&1")
    res = kitmod.run(kit, cmd, out, cwd=str(ROOT), timeout=3600, memory_mb=2048)
    text = Path(out, "bench.txt").read_text() if Path(out, "bench.txt").exists() else res.console[-3000:]
    print(text, end="")
    print(f"vm_seconds={res.seconds:.0f} s (qemu {kitmod.accel(kit).upper()}, 1 vCPU)")
    shutil.rmtree(out, ignore_errors=True)  # this run's VM output, read above
    return 0 if res.rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
