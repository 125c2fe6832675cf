"""lvsd: the desired IPVS table, from the config and the health verdicts.

* observation, published by lvsd's shell when it starts: ``lvsd.started``;
* decisions of lvsd's core: ``lvsd.table_desired`` (the whole table) and ``lvsd.table_delta``
  (the operations that take the previous desired table to the next one). The applier keeps the
  last table, applies deltas whose ``base_version`` is its version, and on a gap waits for (or
  reconciles against) the next full table. See docs/nanny-lvsd.md.
"""
from lvsbus.wire.events import declare
from lvsbus.wire.schema import Enum, Int, Json, List, Nullable, Str, Struct

OP = Struct(
    {
        "op": Enum("add_service", "edit_service", "del_service", "add_dest", "edit_dest", "del_dest"),
        "service": Str(max_len=80, min_len=3, doc="ServiceKey string: tcp:10.0.0.1:80, udp:[2001:db8::1]:53, fwm:inet:5"),
        "dest": Nullable(Str(max_len=64, min_len=3), doc="Dest key ADDRESS:PORT ([v6]:PORT); None for service ops"),
        "attrs": Json(doc="the new attributes: service {scheduler, persistence, netmask, flags (onepacket, sh-/mh- scheduler flags), pe (persistence engine, only when set)}; "
                          "dest {forwarding, weight, upper, lower}; {} for deletions"),
    },
    doc="one operation on the desired table, in the order to apply",
)

declare(
    "lvsd.started", 1,
    {"pid": Int(min=0), "epoch": Int(min=0, doc="the lvsd shell's start count, unique per process start (its monotonic start time, ns)")},
    doc="lvsd's shell started (or restarted) and wants its core to publish the whole desired table.",
)
declare(
    "lvsd.table_desired", 1,
    {
        "version": Int(min=1, doc="grows by one with every table_desired and table_delta of this core"),
        "table": Json(doc="lvsbus.ipvs.table.Table.to_dict(): {service key: {scheduler, persistence, netmask, flags, pe (only when set), dests: {dest key: {forwarding, weight, upper, lower}}}}"),
        "reason": Enum("started", "config", "start_lvsd"),
        "digest": Str(max_len=128, doc="the config digest the table was built from"),
        "services": Int(min=0),
        "dests": Int(min=0),
    },
    doc="The whole desired IPVS table: the applier reconciles the kernel to exactly this.",
)
declare(
    "lvsd.table_delta", 1,
    {
        "version": Int(min=2),
        "base_version": Int(min=1, doc="the version this delta applies to (version - 1)"),
        "ops": List(OP, max_items=100000),
        "reason": Str(max_len=512, doc="readable: which server changed and why"),
        "virtual": Nullable(Str(max_len=64)),
        "server": Nullable(Str(max_len=64)),
    },
    doc="A change of the desired table caused by a health event (the envelope's cause is its seq).",
)
declare(
    "lvsd.config_rejected", 1,
    {"error": Str(max_len=1024), "count": Int(min=1)},
    doc="lvsd's core could not use a config.loaded payload; the previous desired table stays.",
)
