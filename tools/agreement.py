"""Sim-to-real agreement: the decisions a router's log records, timings aside, so that a run of
real routers and a simulated run of the same fault schedule can be compared.

    from lvsbus_tools.agreement import decisions, first_divergence
    first_divergence({"r1": decisions(real_r1_log), ...}, {"r1": decisions(sim_r1_log), ...})

Decisions come in three streams a router, each in log order; how the streams interleave depends
on timing alone, so they are compared apart:

* ``pulse``: role changes (old, new, reason), VIPs taken or released, fences sent (target), lvsd
  started or stopped, links degraded or restored (peer, link);
* ``health``: real servers up or down (virtual service, real server);
* ``table``: each new desired IPVS table (lvsd's ``table_desired`` and ``table_delta`` folded),
  as its (service, real server, weight) entries, a table the same as the one before left out, and
  so are the tables without any real server before the first with one (whether lvsd started before
  nanny's first verdict is timing).

Everything else (heartbeats, timers, check results and their latencies, batches) is timing.
``first_divergence`` names the first decision where two runs differ.
"""
from __future__ import annotations

if __name__ == "__main__":  # run as a script by mistake: say so rather than exit 0 having done nothing
    import sys

    sys.exit("lvsbus_tools.agreement is a library (tests/netns/test_sim_agreement.py uses it); it has no command line")

import lvsbus.wire.catalog  # noqa: F401  (fills the registry)
from lvsbus.wire.events import decode
from lvsbus.ipvs.table import Table, apply_ops
from lvsbus.log import LogReader

STREAMS = ("pulse", "health", "table")


def _entries(table: Table) -> tuple:
    return tuple(sorted((str(k), dk, d.weight) for k, e in table.items() for dk, d in e.dests.items()))


def decisions(log_dir: str) -> dict[str, list[tuple]]:
    """The decisions recorded in one router's log: stream -> decisions in log order."""
    out: dict[str, list[tuple]] = {s: [] for s in STREAMS}
    table: Table | None = None
    for seq, body in LogReader(log_dir).read():
        ev = decode(body, seq)
        t, p = ev.type, ev.payload
        if t == "router.role_changed":
            out["pulse"].append(("role", p["old"], p["new"], p["reason"]))
        elif t in ("pulse.take_vips", "pulse.release_vips"):
            out["pulse"].append((t.split(".")[1], tuple(sorted(v["address"] for v in p["vips"]))))
        elif t == "pulse.send_fence":
            out["pulse"].append(("fence", p["target"]))
        elif t in ("pulse.start_lvsd", "pulse.stop_lvsd"):
            out["pulse"].append((t.split(".")[1],))
        elif t in ("pulse.link_degraded", "pulse.link_restored"):
            out["pulse"].append((t.split(".")[1], p["peer"], p["link"]))
        elif t in ("health.real_server_up", "health.real_server_down"):
            out["health"].append((t.split(".")[1], p["virtual"], p["server"]))
        elif t in ("lvsd.table_desired", "lvsd.table_delta"):
            new = Table.from_dict(p["table"]) if t == "lvsd.table_desired" else \
                apply_ops(table if table is not None else Table(), p["ops"], strict=False)
            entries = _entries(new)
            # a table with no real server before the first one with any is timing: lvsd started
            # before or after nanny's first verdict (the sim-agreement test saw both on one schedule)
            if (table is None or entries != _entries(table)) and (entries or out["table"]):
                out["table"].append(entries)
            table = new
    return out


def first_divergence(real: dict[str, dict[str, list[tuple]]], sim: dict[str, dict[str, list[tuple]]]) -> str | None:
    """None when every router made the same decisions in both runs (router -> ``decisions``);
    else the first decision that differs, named."""
    for router in sorted(set(real) | set(sim)):
        for stream in STREAMS:
            a, b = real.get(router, {}).get(stream, []), sim.get(router, {}).get(stream, [])
            for i, (x, y) in enumerate(zip(a, b)):
                if x != y:
                    return f"{router} {stream} decision #{i + 1}: real {x}, simulated {y}"
            if len(a) != len(b):
                more, extra = ("real", a[len(b)]) if len(a) > len(b) else ("simulated", b[len(a)])
                return f"{router} {stream} decision #{min(len(a), len(b)) + 1}: only the {more} run has {extra}"
    return None
