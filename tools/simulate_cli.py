"""``lvsbus simulate``: the command line of the cluster simulator (tools/simulate.py) and of its
scale-out cluster (tools/simulate_scaleout.py); ``python tools/simulate_cli.py ARGS`` is the same."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

if __name__ == "__main__":  # ``python tools/simulate_cli.py``: this checkout's packages, not the tools/ directory
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from lvsbus.host.argtypes import SEED_MAX, dir_to_write, existing_file, int_range, run_one, seed_range
from lvsbus_tools.simulate import GOLDEN, Fault, SimResult, run_seed, shrink, write_golden
from lvsbus_tools.simulate_scaleout import ScaleoutCluster
from lvsbus_tools.timeline import render_text, timeline

def add_commands(subparsers) -> None:
    s = subparsers.add_parser("simulate", help="run simulated clusters with seeded faults (tools/simulate.py)")
    s.add_argument("--seed", type=int_range(0, SEED_MAX),
                   help=f"one seed, 0..{SEED_MAX} (reproduces a failing one exactly)")
    s.add_argument("--seeds", metavar="A-B", type=seed_range,
                   help="a sweep of seeds, e.g. 0-999 (at most 1,000,000)")
    s.add_argument("--routers", type=int_range(1, 5), help="routers in the cluster, 1..5 (default 2; 3 with --scaleout)")
    s.add_argument("--servers", type=int_range(1, 100), default=3,
                   help="real servers of the virtual service, 1..100 (default 3)")
    s.add_argument("--fos", action="store_true",
                   help="service = fos: one failover service (start_cmd/stop_cmd, killed by fos_kill faults), no IPVS")
    s.add_argument("--groups", action="store_true",
                   help="two failover groups, web (the first router ranks highest) and mail (the last one "
                   "does): the active/active pair; invariants hold per group")
    s.add_argument("--tracking", action="store_true",
                   help="every router tracks two interfaces (weight -120, and 0: FAULT) and a script (weight "
                   "-120), failed by track_down / track_fail faults (docs/config.md, Tracking)")
    s.add_argument("--scaleout", action="store_true",
                   help="[scaleout]: every router active, each announcing two VIPs by BGP to a simulated upstream "
                   "router's ECMP table; adds BGP session flaps, speaker crashes, drains, planned stops and "
                   "per-router path faults; invariants: a VIP announced only by routers that can serve it, never "
                   "left unannounced while one can (docs/scaleout.md)")
    s.add_argument("--faults", metavar="FILE", type=existing_file,
                   help="a JSON fault schedule (as printed for a shrunk failure)")
    s.add_argument("--logs", metavar="DIR", type=dir_to_write,
                   help="keep the logs here (one directory per seed and router)")
    s.add_argument("--no-shrink", action="store_true", help="do not shrink a failing schedule")
    s.add_argument("--golden", metavar="DIR", type=dir_to_write, help="(re)write the golden incident logs and timelines into DIR")
    s.add_argument("--json", action="store_true", help="one JSON object a seed (failing ones with their shrunk schedule)")
    s.set_defaults(func=_cmd_simulate)


def _sim_json(res) -> dict:
    return {"seed": res.seed, "ok": res.ok, "violations": res.violations, "replay_errors": res.replay_errors,
            "advisories": res.advisories, "faults": [f.to_json() for f in res.faults], "logs": res.logs,
            "events": res.events, "failovers": res.failovers, "outage_ns": res.outage_ns, "roles": res.roles}


def _cmd_simulate(args) -> int:
    if args.golden:
        return _write_golden_all(args.golden)
    faults = None
    if args.faults:
        faults = _read_faults(args.faults)
        if faults is None:
            return 1
    if args.seeds:
        seeds = list(args.seeds)
    else:
        seeds = [args.seed if args.seed is not None else 0]
    failed = 0
    t0 = time.perf_counter()
    if args.scaleout and (args.fos or args.groups or args.tracking):
        print("lvsbus simulate: --scaleout runs its own cluster (two VIPs, every router active): not with "
              "--fos, --groups or --tracking", file=sys.stderr)
        return 2
    routers = args.routers if args.routers is not None else (3 if args.scaleout else 2)
    kw: dict = {"routers": routers, "servers": args.servers}
    again = "".join(f" --{k} {v}" for k, v in kw.items()
                    if v != {"routers": 3 if args.scaleout else 2, "servers": 3}[k])
    if args.scaleout:
        kw["cluster"] = ScaleoutCluster
        again += " --scaleout"
    if args.fos:
        kw["fos"] = True
        again += " --fos"
    if args.tracking:
        kw["tracking"] = True
        again += " --tracking"
    if args.groups:
        kw["groups"] = True
        again += " --groups"
    for seed in seeds:
        logs = os.path.join(args.logs, f"seed-{seed}") if args.logs else None
        res = run_seed(seed, log_root=logs, faults=faults, **kw)
        if res.ok:
            if args.json:
                print(json.dumps(_sim_json(res)))
            elif len(seeds) == 1:
                print(res.summary())
            continue
        failed += 1
        _report_failure(args, seed, res, logs, faults, kw, again)
    if len(seeds) > 1 and not args.json:
        el = time.perf_counter() - t0
        print(f"{len(seeds)} seeds, {failed} failed, {el:.1f}s ({len(seeds) / el * 60:,.0f} scenarios/min)")
    return 1 if failed else 0


def _write_golden_all(root: str) -> int:
    """--golden: every golden scenario's logs and its timeline.txt under ``root``."""
    for name in GOLDEN:
        res = write_golden(name, root)
        logs = [res.logs[n] for n in sorted(res.logs)]
        with open(os.path.join(root, name, "timeline.txt"), "w", encoding="utf-8") as fh:
            fh.write(render_text(timeline(logs)))
        print(f"{name}: {'ok' if res.ok else 'FAILED'} ({res.events} events) -> {os.path.join(root, name)}")
    return 0


def _read_faults(path: str) -> list[Fault] | None:
    """--faults FILE: its schedule, or None (said on stderr) when it cannot be read as one."""
    try:
        with open(path, encoding="utf-8") as fh:
            return [Fault.from_json(d) for d in json.load(fh)]
    except OSError as exc:
        print(f"lvsbus simulate: {path}: {exc.strerror or exc}", file=sys.stderr)
        return None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # not JSON, or not faults
        print(f"lvsbus simulate: {path}: not a fault schedule (a JSON list of faults, "
              f"as printed for a shrunk failure): {type(exc).__name__}: {str(exc)[:200]}",
              file=sys.stderr)
        return None


def _report_failure(args, seed: int, res: SimResult, logs: str | None, faults: list[Fault] | None,
                    kw: dict, again: str) -> None:
    """A failing seed: its logs kept, its schedule shrunk (unless --no-shrink), and how to run both again."""
    if not logs:  # run it again keeping the logs, for the report (the same run: deterministic)
        logs = os.path.join(tempfile.gettempdir(), f"lvsbus-sim-seed-{seed}")
        shutil.rmtree(logs, ignore_errors=True)
        res = run_seed(seed, log_root=logs, faults=faults, **kw)
    small = None
    if not args.no_shrink and res.faults:
        small = shrink(seed, res.faults, **kw)
        path = os.path.join(logs, "shrunk-faults.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump([f.to_json() for f in small], fh, indent=1)
    if args.json:
        print(json.dumps({**_sim_json(res), "shrunk": [f.to_json() for f in small] if small is not None else None}))
        return
    print(res.summary())
    print(f"  reproduce: lvsbus simulate --seed {seed}{again}{' --faults FILE' if faults else ''} --logs DIR")
    if small is not None:
        print(f"  shrunk to {len(small)} fault(s): " + "; ".join(f.describe() for f in small))
        print(f"  reproduce the shrunk schedule: lvsbus simulate --seed {seed}{again} --faults {path} --logs DIR")


def main(argv: list[str] | None = None) -> int:
    """``python tools/simulate.py ARGS`` is ``lvsbus simulate ARGS``, with the same parser (as
    tools/replay.py is replay)."""
    return run_one(add_commands, "simulate", sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
