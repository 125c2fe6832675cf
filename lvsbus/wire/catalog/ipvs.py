"""ipvs: the applier that makes the kernel's IPVS table equal to lvsd's desired table.

* observations, published by the applier's shell: ``ipvs.started``, ``ipvs.table_read`` (a kernel
  dump), ``ipvs.ops_applied`` (a run of consecutive operations of a batch the kernel accepted,
  named by their place in the batch's ``ipvs.apply``) / ``ipvs.op_failed`` (one per refused
  operation, naming it, with the errno); ``ipvs.op_applied`` (one per accepted operation) is what
  shells before ``ipvs.ops_applied`` published, still read in older logs;
  ``ipvs.batch_applied`` (a batch done), ``ipvs.unavailable`` (no IPVS in this kernel: an error,
  retried with backoff), ``ipvs.stats`` (traffic figures, every ``ipvs_stats_interval``: only
  what changed; see lvsbus/ipvs/stats.py);
* effects of the applier's core: ``ipvs.read_table`` (dump the kernel table) and ``ipvs.apply``
  (carry out these operations, in order).

Replay checks the core's effects; the shell's op events say what the kernel did with them.
See docs/ipvs.md.
"""
from lvsbus.wire.events import declare
from lvsbus.wire.schema import Bool, Dict, Enum, Int, Json, List, Nullable, Str, Struct

OP_KINDS_1 = ("add_service", "edit_service", "del_service", "add_dest", "edit_dest", "del_dest",
              "set_timeouts", "start_daemon", "stop_daemon")
OP = Struct(
    {
        "op": Enum(*OP_KINDS_1),
        "service": Str(max_len=80, doc="ServiceKey string (tcp:10.0.0.1:80, udp:[2001:db8::1]:53, fwm:inet:5); '' for global ops"),
        "dest": Nullable(Str(max_len=64, min_len=3), doc="Dest key ADDRESS:PORT ([v6]:PORT); None for service and global ops"),
        "attrs": Json(doc="service {scheduler, persistence, netmask, flags (onepacket, sh-/mh- scheduler flags), pe (persistence engine, only when set)}; dest {forwarding, weight, upper, lower}; "
                          "set_timeouts {tcp, tcpfin, udp} (s, 0 = keep); start_daemon {state, ifname, syncid}; "
                          "stop_daemon {state}; {} for deletions"),
    },
    doc="one IPVS operation (the same shape as lvsd's delta ops, plus the global ones)",
)
#: version 2 of an op (ipvs.apply v2, ipvs.op_failed v2): set_sysctl
OP_2 = Struct(
    {**OP.fields,
     "op": Enum(*OP_KINDS_1, "set_sysctl"),
     "attrs": Json(doc="as OP's; set_sysctl {name, value}: /proc/sys/net/ipv4/vs/NAME (sloppy_tcp, sloppy_sctp)")},
    doc="one IPVS operation; v2: set_sysctl (an IPVS sysctl, written to /proc/sys/net/ipv4/vs)",
)
#: the IPVS sysctls the applier manages, as it read them (None: not readable)
SYSCTLS = Nullable(Dict(Int(min=0), max_items=16),
                   doc="IPVS sysctls the applier manages (sloppy_tcp, sloppy_sctp) and their values")
BATCH = Int(min=1, doc="the core's batch number (grows by one per ipvs.apply)")
REQUEST = Int(min=1, doc="the core's read request number (grows by one per ipvs.read_table)")
ERRNO = Int(min=0, doc="the kernel's errno (0 when the error was not an OS error)")
TIMEOUTS = Struct({"tcp": Int(min=0), "tcpfin": Int(min=0), "udp": Int(min=0)}, doc="IPVS connection timeouts, s")
DAEMON = Struct(
    {"state": Enum("master", "backup"), "ifname": Str(max_len=32), "syncid": Int(min=0, max=255)},
    doc="one IPVS connection sync daemon",
)

declare(
    "ipvs.started", 1,
    {
        "pid": Int(min=0),
        "flush_unmanaged": Bool(doc="delete kernel services lvsbus does not manage (--flush-unmanaged)"),
        "kernel": Str(max_len=256, doc="uname release of the running kernel"),
    },
    doc="The applier's shell started (or restarted); its core asks for a kernel dump and reconciles.",
)
declare(
    "ipvs.read_table", 1,
    {"request": REQUEST, "reason": Enum("started", "op_failed", "retry")},
    doc="Dump the kernel's IPVS table (services, destinations, timeouts, sync daemons) and publish ipvs.table_read.",
)
_TABLE_READ_1 = declare(
    "ipvs.table_read", 1,
    {
        "request": REQUEST,
        "table": Json(doc="lvsbus.ipvs.table.Table.to_dict() of what the kernel holds"),
        "timeouts": Nullable(TIMEOUTS),
        "daemons": List(DAEMON, max_items=2),
        "services": Int(min=0),
        "dests": Int(min=0),
        "duration_us": Int(min=0),
    },
    doc="The kernel's IPVS table as dumped by netlink, in answer to ipvs.read_table.",
)
declare(
    "ipvs.table_read", 2,
    {**_TABLE_READ_1.payload.fields, "sysctls": SYSCTLS},
    doc="The kernel's IPVS table as dumped by netlink, in answer to ipvs.read_table. v2: the IPVS sysctls "
    "the applier manages (a v1 record: null, not read).",
    upcast=lambda p: {**p, "sysctls": None},
)
_APPLY_1 = declare(
    "ipvs.apply", 1,
    {
        "batch": BATCH,
        "ops": List(OP, max_items=1_000_000),
        "reason": Enum("table_desired", "table_delta", "config", "role", "reconcile"),
        "version": Int(min=0, doc="the lvsd table version the batch makes the kernel equal to"),
    },
    doc="Carry out these IPVS operations in order (the minimal diff from the kernel table to the desired one).",
)
declare(
    "ipvs.apply", 2,
    {**_APPLY_1.payload.fields, "ops": List(OP_2, max_items=1_000_000)},
    doc="Carry out these IPVS operations in order (the minimal diff from the kernel table to the desired one). "
    "v2: the op set_sysctl.",
    upcast=lambda p: p,
)
declare(
    "ipvs.op_applied", 1,
    {"batch": BATCH, "op": OP, "duration_us": Int(min=0)},
    doc="The kernel accepted one operation of a batch.",
)
declare(
    "ipvs.ops_applied", 1,
    {"batch": BATCH, "first": Int(min=0, doc="index of the first of these ops in the batch's ipvs.apply ops"),
     "count": Int(min=1), "duration_us": Int(min=0, doc="the kernel's time for these ops (their sends and acks)")},
    doc="The kernel accepted ops first .. first+count-1 of a batch (one event a run of accepted ops: "
        "a refused op in between is its own ipvs.op_failed).",
)
declare(
    "ipvs.op_failed", 1,
    {"batch": BATCH, "op": OP, "errno": ERRNO, "error": Str(max_len=1024)},
    doc="The kernel refused one operation (EEXIST, ENOENT, ESRCH...); the applier dumps and reconciles after the batch.",
)
declare(
    "ipvs.op_failed", 2,
    {"batch": BATCH, "op": OP_2, "errno": ERRNO, "error": Str(max_len=1024)},
    doc="The kernel refused one operation (EEXIST, ENOENT, ESRCH...); the applier dumps and reconciles after the "
    "batch. v2: the op set_sysctl.",
    upcast=lambda p: p,
)
declare(
    "ipvs.batch_applied", 1,
    {"batch": BATCH, "applied": Int(min=0), "failed": Int(min=0), "duration_us": Int(min=0)},
    doc="A batch is done: how many operations the kernel accepted and refused.",
)
declare(
    "ipvs.unavailable", 1,
    {"request": Int(min=0, doc="the read request that failed (0: none)"), "errno": ERRNO, "error": Str(max_len=1024)},
    doc="IPVS cannot be reached (kernel without IP_VS, module not loadable, no permission). "
        "An error: the applier retries with backoff, the rest of the router runs on.",
)

STATS_ROW = List(Int(min=0), max_items=12, doc="conns, inpkts, outpkts, inbytes, outbytes (counters since the entry was "
                 "added or zeroed), cps, inpps, outpps, inbps, outbps (the kernel's per-second estimates), active, "
                 "inactive (connections; a service's are its real servers' sums): lvsbus.ipvs.stats.FIELDS")
declare(
    "ipvs.stats", 1,
    {
        "interval_ms": Int(min=0, doc="the sampling interval in force (config ipvs_stats_interval)"),
        "full": Bool(doc="true: every service and real server in the kernel (replaces every figure); false: only "
                         "what changed since the previous ipvs.stats"),
        "services": Dict(
            Nullable(Struct({
                "stats": Nullable(STATS_ROW, doc="the service's row; null: unchanged"),
                "dests": Dict(Nullable(STATS_ROW), doc="real server key (ADDRESS:PORT) -> its row; null: gone; "
                              "absent: unchanged"),
            })),
            doc="service key (tcp:10.0.0.1:80) -> its figures; null: the service is gone",
        ),
    },
    doc="IPVS traffic figures read by netlink every ipvs_stats_interval seconds, absolute values (never deltas), "
        "only the rows that changed (none changed: no event), a full sample first and at least every 10 minutes. "
        "No core acts on it; lvsbus.ipvs.stats.fold gives the current figures, metrics folds it into lvsbus_ipvs_*.",
)
