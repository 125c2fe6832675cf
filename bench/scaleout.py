"""Scale-out on the real datapath, in the kernel-tier VM (issue 17; docs/scaleout.md):

    python bench/scaleout.py [--flows 60] [--runs 1]     # on the host: boots the VM, runs itself in it
    python bench/scaleout.py --in-vm ...                  # inside a kernel that has IPVS (as root)

An upstream namespace running BIRD 2 (ECMP over the routers, layer-4 hashing, BFD 100 ms x 3),
three ``lvsbus router`` processes all active (IPVS mh with mh-port, direct routing, sloppy TCP),
three real servers, a client behind the upstream with --flows long-lived TCP connections and a new
one every --new-every s (20 ms) (tests/helpers/scaleout_datapath.py). Router r2 is lost as a host dies (cable cut,
every process SIGKILLed); then r3 is stopped by SIGTERM (drained, then withdrawn). Figures, one a
line (``name=value unit``), the median over --runs when more than one:

* reroute_ms: the loss -> new connections stop failing: the later of the upstream's route change
  and the start of the last new connection that failed or lost its first SYN (answered only after
  TCP's retransmission, a second later). The client only samples that window (under TCG it makes
  few attempts while the VM tears r2 down), so the route change bounds it;
* survivor_flows_kept: the share of established connections through r1 and r3 still working after;
* moved_flows_kept: the share of r2's established connections that continued through r1 or r3;
* out_of_ecmp_ms: the loss -> the upstream kernel's route to the VIP changed (BFD's detection and
  BIRD's update; stamped by an rtnetlink listener in the upstream);
* drain_out_of_ecmp_ms: r3's SIGTERM -> the upstream's route without r3 (it still announces,
  with GRACEFUL_SHUTDOWN), and drain_new_failed: new connections that failed from the SIGTERM on.

The VM emulates its CPU (TCG) where KVM is not available: the timers are a slow machine's, and the
figures that are times are an upper bound of what a real router does.
"""
from __future__ import annotations

import argparse
import shutil
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def in_vm(args) -> int:
    from tests.helpers.scaleout_datapath import Rig, lose_one_drain_one

    subprocess.run(["modprobe", "ip_vs"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    rows: list[dict[str, float]] = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
            rig = Rig(Path(tmp)).build()
            try:
                up = rig.start()
                run = lose_one_drain_one(rig, n_long=args.flows, new_every=args.new_every)
            finally:
                rig.close()
        f = run.figures
        if args.raw:
            with open(args.raw, "a") as out:
                out.write(json.dumps({"t_loss": run.t_loss, "t_out": run.t_out, "t_drain": run.t_drain,
                                      "t_drained": run.t_drained, "via": run.via, "servers": run.servers,
                                      "long": run.flows.long, "new": run.flows.new}) + "\n")
        rows.append({"reroute_ms": f.reroute_ms, "survivor_flows_kept": f.survivor_flows_kept,
                     "moved_flows_kept": f.moved_flows_kept, "out_of_ecmp_ms": f.out_of_ecmp_ms,
                     "drain_out_of_ecmp_ms": (run.t_drained - run.t_drain) * 1000,
                     "drain_new_failed": float(len(run.flows.failed_new_after(run.t_drain)))})
        print(f"# run {i + 1}: routers up in {up:.0f} s; {f.survivors} survivor and {f.moved} moved flows; "
              f"{f.new_failed} of {f.new_total} new connections failed or lost their first SYN after the loss, "
              f"{f.new_exposed} started before the route change", flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"reroute_ms={med['reroute_ms']:.0f} ms")
    print(f"survivor_flows_kept={med['survivor_flows_kept']:.3f}")
    print(f"moved_flows_kept={med['moved_flows_kept']:.3f}")
    print(f"out_of_ecmp_ms={med['out_of_ecmp_ms']:.0f} ms")
    print(f"drain_out_of_ecmp_ms={med['drain_out_of_ecmp_ms']:.0f} ms")
    print(f"drain_new_failed={med['drain_new_failed']:.0f} connections")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--flows", type=int, default=60, help="long-lived connections (default %(default)s)")
    ap.add_argument("--new-every", type=float, default=0.02,
                    help="seconds between the client's new connections (default %(default)s)")
    ap.add_argument("--runs", type=int, default=1, help="runs, the median printed (default %(default)s)")
    ap.add_argument("--raw", metavar="FILE", help="also write each run's raw data (instants, flows, new "
                    "connections) as JSON lines to FILE (in the VM: under /mnt/out, the host's output directory)")
    ap.add_argument("--in-vm", action="store_true", help="run here (a kernel with IPVS, as root)")
    args = ap.parse_args()
    if args.in_vm:
        return in_vm(args)
    from lvsbus.demo import qemu as kitmod

    kit = kitmod.build(log=lambda m: print(m, file=sys.stderr))
    out = tempfile.mkdtemp(prefix="bench-scaleout-vm-")
    cmd = (f"{sys.executable} bench/scaleout.py --in-vm --flows {args.flows} --runs {args.runs} "
           f"--new-every {args.new_every} {'--raw /mnt/out/raw.jsonl ' if args.raw else ''}"
           f"> /mnt/out/bench.txt 2>&1")
    res = kitmod.run(kit, cmd, out, cwd=str(ROOT), timeout=3600, memory_mb=2048, cpus=2)
    text = Path(out, "bench.txt").read_text() if Path(out, "bench.txt").exists() else res.console[-3000:]
    print(text, end="")
    if args.raw and Path(out, "raw.jsonl").exists():
        Path(args.raw).write_text(Path(out, "raw.jsonl").read_text())
    print(f"vm_seconds={res.seconds:.0f} s (qemu {kitmod.accel(kit).upper()}, 2 vCPUs)")
    shutil.rmtree(out, ignore_errors=True)  # this run's VM output, read above
    return 0 if res.rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
