"""The IPVS applier's pure core: the minimal operations that make the kernel table the desired one.

What ipvsadm was to Piranha: lvsd decides the table (weights, quiescing, sorry servers are its
policy), the applier only makes the kernel equal to it.

* ``plan(actual, desired, managed)`` is the diff: a minimal, ordered list of ops (the same op
  dicts as lvsd's deltas, ``{"op", "service", "dest", "attrs"}``): deletions of destinations, then
  deletions of services, then service edits and additions, then destination edits and additions.
  Every service attribute the model has (scheduler, persistence, netmask, flags, persistence
  engine) and every
  destination attribute (forwarding, weight, thresholds) can be edited in place in IPVS
  (IPVS_CMD_SET_SERVICE / SET_DEST), so nothing is ever deleted and re-added for an attribute
  change: the identity is the key (family, protocol, address, port | fwmark) and a different key
  is a different service. ``REPLACE_ATTRS`` lists attributes that would need a delete + add
  (none today: the kernel swaps a persistence engine in place too; keep it in one place if the
  model grows).
* Managed entries: lvsbus manages a kernel service when its key is one of the config's virtual
  services (active or not) or was ever in a desired table this core saw. Any other service in the
  kernel (another tool's) is left alone, with its destinations, unless the shell was started with
  ``--flush-unmanaged`` (recorded in ``ipvs.started``). Within a managed service every destination
  is managed.
* ``ApplierCore`` folds ``lvsd.table_desired`` / ``lvsd.table_delta`` (desired), ``config.loaded``
  (managed keys, IPVS timeouts, sync daemon) and ``router.role_changed`` (sync daemon role) with
  the shell's observations (``ipvs.started``, ``ipvs.table_read``, ``ipvs.batch_applied``,
  ``ipvs.unavailable``, ``timer.fired``) into effects: ``ipvs.read_table`` (dump the kernel) and
  ``ipvs.apply`` (a batch of ops). The kernel is dumped on start and after any failed op, and the
  next batch is planned from that dump plus the batches the shell will still execute after it.

Pure: no I/O, no clock (time is ``event.mono_ns``), no pyroute2.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from lvsbus.config import Config, ConfigError, from_dict
from lvsbus.runtime.core import Core, Effect
from lvsbus.wire.events import Event
from lvsbus.ipvs.table import (  # noqa: F401  (re-exported: the applier's tests and tools use them here)
    DEST_OPS, SERVICE_OPS, Dest, Entry, Service, ServiceKey, Table, apply_ops, dest_attrs, parse_dest_key,
    entry_ops, service_attrs,
)

Op = dict  # {"op": kind, "service": key string, "dest": dest key | None, "attrs": {...}}

GLOBAL_OPS = ("set_timeouts", "start_daemon", "stop_daemon", "set_sysctl")
#: the IPVS sysctls (/proc/sys/net/ipv4/vs/NAME) the applier reads and may set
SYSCTLS = ("sloppy_tcp", "sloppy_sctp")
_PHASE = {"del_dest": 0, "del_service": 1, "add_service": 2, "edit_service": 2, "add_dest": 3, "edit_dest": 3}
OP_KINDS = SERVICE_OPS + DEST_OPS + GLOBAL_OPS
#: service attributes that IPVS cannot edit in place (a change means delete + add). None today.
REPLACE_ATTRS: tuple[str, ...] = ()

#: ops per ipvs.apply event (a bus frame is at most 4 MiB; an op is ~100-150 bytes of msgpack)
MAX_BATCH_OPS = 4096
RETRY_MIN_NS = 1_000_000_000
RETRY_MAX_NS = 60_000_000_000


# ---------------------------------------------------------------------------------------------
# the diff


def plan(actual: Table, desired: Table, managed: Callable[[ServiceKey], bool] | Iterable[ServiceKey] | None = None,
         flush_unmanaged: bool = False, only: Iterable[ServiceKey] | None = None) -> list[Op]:
    """The minimal ordered ops turning ``actual`` into ``desired`` for the managed services.

    ``managed``: a predicate or a set of keys; services of ``desired`` are always managed. None:
    only the desired ones. A service in ``actual`` that is not managed is left alone (with its
    destinations) unless ``flush_unmanaged``. ``only``: look at these services and no others
    (a delta touching one service of thousands costs one service's diff).
    """
    if managed is None:
        is_managed: Callable[[ServiceKey], bool] = lambda k: False  # noqa: E731
    elif callable(managed):
        is_managed = managed
    else:
        managed_set = frozenset(managed)
        is_managed = managed_set.__contains__
    if only is not None:
        only_keys = sorted(set(only))
        actual_keys = [k for k in only_keys if k in actual]
        desired_keys = [k for k in only_keys if k in desired]
    else:
        actual_keys = sorted(actual.keys())
        desired_keys = sorted(desired.keys())
    ops: list[Op] = []
    for key in actual_keys:
        if key not in desired and (flush_unmanaged or is_managed(key)):
            ops += entry_ops(key, actual[key], None)
    for key in desired_keys:
        want, have = desired[key], actual.get(key)
        if have is not None and any(getattr(have.service, a) != getattr(want.service, a) for a in REPLACE_ATTRS):
            ops += entry_ops(key, have, None)
            have = None
        ops += entry_ops(key, have, want)
    # the kernel's order: free destinations and services first, then create and edit
    return sorted(ops, key=lambda op: _PHASE[op["op"]])


def planned_result(actual: Table, desired: Table, ops: list[Op]) -> Table:
    """``apply_ops(actual, ops)`` for ops that ``plan(actual, desired, ...)`` gave, without folding
    them one by one: a service the plan touched ends as ``desired`` has it (or gone), every other
    one as it was. (11,000 ops folded: ~170 ms natively, seconds under emulation.)"""
    entries = dict(actual.items())
    for key_s in {op["service"] for op in ops if op["op"] not in GLOBAL_OPS}:
        key = ServiceKey.parse(key_s)
        want = desired.get(key)
        if want is None:
            entries.pop(key, None)
        else:
            entries[key] = want
    return Table(entries)


def plan_globals(actual_timeouts: dict | None, want_timeouts: dict, actual_daemons: list[dict] | None,
                 want_daemons: list[dict], actual_sysctls: dict | None = None,
                 want_sysctls: dict | None = None) -> list[Op]:
    """Ops for the IPVS sysctls (those wanted, when they could be read), the timeouts (0 = leave
    the kernel's value) and the sync daemons."""
    ops: list[Op] = []
    if actual_sysctls is not None:
        for name, value in sorted((want_sysctls or {}).items()):
            if actual_sysctls.get(name) != value:
                ops.append({"op": "set_sysctl", "service": "", "dest": None, "attrs": {"name": name, "value": value}})
    if any(want_timeouts.values()):
        have = actual_timeouts or {}
        if any(v and have.get(k) != v for k, v in want_timeouts.items()):
            ops.append({"op": "set_timeouts", "service": "", "dest": None, "attrs": dict(want_timeouts)})
    have_d = {d["state"]: d for d in (actual_daemons or [])}
    want_d = {d["state"]: d for d in want_daemons}
    for state in ("master", "backup"):
        h, w = have_d.get(state), want_d.get(state)
        if h is not None and (w is None or _daemon_differs(h, w)):
            ops.append({"op": "stop_daemon", "service": "", "dest": None, "attrs": {"state": state}})
        if w is not None and (h is None or _daemon_differs(h, w)):
            ops.append({"op": "start_daemon", "service": "", "dest": None, "attrs": dict(w)})
    return ops


def sysctls_after(sysctls: dict | None, op: Op) -> dict | None:
    """The IPVS sysctls once ``op`` is applied (a set_sysctl sets one; anything else: unchanged)."""
    if op["op"] == "set_sysctl":
        return {**(sysctls or {}), op["attrs"]["name"]: op["attrs"]["value"]}
    return sysctls


def apply_global(timeouts: dict | None, daemons: list[dict] | None, op: Op) -> tuple[dict | None, list[dict] | None]:
    """The IPVS timeouts and sync daemons once a global op is applied, as the kernel does it: a
    timeout of 0 leaves that one as it was; a daemon replaces the one of its state (master or
    backup), or is stopped. Not a global op: unchanged. The core plans with it, and the simulated
    kernel (tools/simulate.py) applies with it."""
    kind = op["op"]
    if kind == "set_timeouts":
        timeouts = {k: (v or (timeouts or {}).get(k, 0)) for k, v in op["attrs"].items()}
    elif kind == "start_daemon":
        daemons = [d for d in (daemons or []) if d["state"] != op["attrs"]["state"]] + [dict(op["attrs"])]
    elif kind == "stop_daemon":
        daemons = [d for d in (daemons or []) if d["state"] != op["attrs"]["state"]]
    return timeouts, daemons


#: ops a trip to the kernel (the shell's netlink thread) carries: runs of accepted ops are reported
#: within one such chunk
CHUNK = 256


def table_read_payload(request: int, table: Table, timeouts: dict, daemons: list[dict], duration_us: int,
                       sysctls: dict | None = None) -> dict:
    """``ipvs.table_read``: what a dump of the kernel found (the real shell's and the simulated kernel's)."""
    return {"request": request, "table": table.to_dict(), "timeouts": timeouts, "daemons": daemons,
            "services": len(table), "dests": sum(len(e.dests) for _k, e in table.items()), "duration_us": duration_us,
            "sysctls": sysctls}


def applied_events(batch: int, first: int, ops: list[Op], results: list[tuple[int | None, str, int]]) -> list[tuple[str, dict]]:
    """What the shell publishes for one chunk of a batch (``ops``, starting at index ``first`` of
    the batch) once the kernel has answered each op with (errno or None, error, duration_us): one
    ``ipvs.ops_applied`` for each run of accepted ops, one ``ipvs.op_failed`` for each refused op,
    in their place."""
    out: list[tuple[str, dict]] = []
    run, run_us = None, 0  # the run of accepted ops under way: its first index
    for j, (op, (code, error, us)) in enumerate(zip(ops, results), first):
        if code is None:
            run = j if run is None else run
            run_us += us
            continue
        if run is not None:
            out.append(("ipvs.ops_applied", {"batch": batch, "first": run, "count": j - run, "duration_us": run_us}))
            run, run_us = None, 0
        out.append(("ipvs.op_failed", {"batch": batch, "op": op, "errno": code, "error": error[:1024]}))
    if run is not None:
        out.append(("ipvs.ops_applied", {"batch": batch, "first": run, "count": first + len(ops) - run,
                                         "duration_us": run_us}))
    return out


def batch_applied(batch: int, reported: list[tuple[str, dict]], duration_us: int) -> dict:
    """``ipvs.batch_applied``, the end of a batch whose chunks were reported as ``reported`` (every
    ``applied_events`` of the batch, in order): how many ops the kernel accepted and refused."""
    applied = failed = 0
    for type_, p in reported:
        if type_ == "ipvs.op_failed":
            failed += 1
        else:
            applied += p["count"]
    return {"batch": batch, "applied": applied, "failed": failed, "duration_us": duration_us}


def _daemon_differs(a: dict, b: dict) -> bool:
    return (a.get("ifname"), a.get("syncid")) != (b.get("ifname"), b.get("syncid"))


# ---------------------------------------------------------------------------------------------
# the config's table (ipvsadm --save of a config, no running router needed)


def desired_from_config(cfg: Config) -> Table:
    """The table ``cfg`` asks for with every active real server in service (lvsd's own layout of a
    virtual service, so the two cannot disagree)."""
    from lvsbus_services.lvsd.core import Layout  # lvsd's policy owns what a virtual service becomes

    entries = {}
    for vs in cfg.lvs_services():  # service = fos: none, an empty table
        if not vs.active:
            continue
        lay = Layout(vs)
        entries[lay.key] = Entry(lay.service, {up.key: up for _id, _w, up, _zero in lay.servers})
    return Table(entries)


def managed_keys(cfg: Config) -> set[ServiceKey]:
    from lvsbus_services.lvsd.core import service_key

    return {service_key(vs) for vs in cfg.lvs_services()}  # service = fos: the applier manages nothing


# ---------------------------------------------------------------------------------------------
# ipvsadm --save format


def _ipvsadm_service(key: ServiceKey) -> str:
    if key.fwmark:
        return f"-f {key.fwmark}" + (" -6" if key.family == "inet6" else "")
    flag = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}[key.protocol]
    host = f"[{key.address}]" if key.family == "inet6" else key.address
    return f"{flag} {host}:{key.port}"


FWD_FLAG = {"direct": "-g", "tunnel": "-i", "nat": "-m"}


def save_lines(table: Table) -> list[str]:
    """The table as ``ipvsadm --save -n`` prints it (one ``-A`` per service, one ``-a`` per real server)."""
    out = []
    for key in sorted(table.keys()):
        e = table[key]
        s = e.service
        svc = _ipvsadm_service(key)
        line = f"-A {svc} -s {s.scheduler}"
        if s.persistence:
            line += f" -p {s.persistence}"
            full = 128 if key.family == "inet6" else 32
            if s.netmask != full:
                if key.family == "inet6":
                    line += f" -M {s.netmask}"
                else:
                    import ipaddress

                    line += f" -M {ipaddress.IPv4Network(f'0.0.0.0/{s.netmask}').netmask}"
        # in ipvsadm's order (1.31): --pe, -o, -b with the scheduler flags
        if s.pe:
            line += f" --pe {s.pe}"
        if s.ops:
            line += " -o"
        if s.scheduler_flags:
            line += " -b " + ",".join(s.scheduler_flags)
        out.append(line)
        for dk in sorted(e.dests):
            d = e.dests[dk]
            line = f"-a {svc} -r {d.key} {FWD_FLAG[d.forwarding]} -w {d.weight}"
            if d.forwarding == "tunnel":
                line += " --tun-type ipip"  # ipvsadm >= 1.30 prints (and restores) the tunnel type
            if d.upper:
                line += f" -x {d.upper}"
            if d.lower:
                line += f" -y {d.lower}"
            out.append(line)
    return out


# ---------------------------------------------------------------------------------------------
# the core


@dataclass
class ApplierState:
    desired: Table | None = None  # None until lvsd's first table: the kernel is not touched before
    version: int = 0  # lvsd's table version
    expected: Table | None = None  # what the kernel holds once every emitted batch is applied
    timeouts_have: dict | None = None
    daemons_have: list | None = None
    timeouts_want: dict = field(default_factory=lambda: {"tcp": 0, "tcpfin": 0, "udp": 0})
    sync: dict | None = None  # config's sync daemon {ifname, syncid} when enabled
    sysctls_have: dict | None = None  # the IPVS sysctls as last read (and set since); None: unknown
    #: what the config wants of them: scale-out, sloppy TCP and SCTP (a router takes the middle of a
    #: flow another router saw start); otherwise nothing (the kernel's are left as they are)
    sysctls_want: dict = field(default_factory=dict)
    role: str = "INIT"  # the last role_changed's new role (any group): shown, not decided on
    roles: dict = field(default_factory=dict)  # failover group -> this router's role in it
    managed: set = field(default_factory=set)  # ServiceKey
    flush_unmanaged: bool = False
    batch: int = 0  # last batch number emitted
    request: int = 0  # last read request number emitted
    reads: dict = field(default_factory=dict)  # read request -> batch number when it was asked for
    pending: list = field(default_factory=list)  # [(batch, ops)] emitted, not yet confirmed
    started: bool = False
    available: bool = True
    attempts: int = 0
    retry_at: int | None = None
    gaps: int = 0
    fail_streak: int = 0  # batches in a row with a refused op
    idle: bool = False  # service = fos: no IPVS at all (no dump, no op, no retry)


class ApplierCore(Core[ApplierState]):
    name = "ipvs"
    inputs = ("config.loaded", "lvsd.table_desired", "lvsd.table_delta", "router.role_changed",
              "ipvs.started", "ipvs.table_read", "ipvs.batch_applied", "ipvs.unavailable")
    outputs = frozenset({"ipvs.apply", "ipvs.read_table"})

    def initial(self) -> ApplierState:
        return ApplierState()

    def next_deadline(self, state: ApplierState) -> int | None:
        return state.retry_at

    def decide(self, st: ApplierState, ev: Event) -> tuple[ApplierState, list[Effect]]:
        handler = self._HANDLERS.get(ev.type)
        return st, (handler(self, st, ev.payload, ev) if handler is not None else [])

    def _on_table_desired(self, st: ApplierState, p: dict, ev: Event) -> list[Effect]:
        st.desired = Table.from_dict(p["table"])
        st.version = p["version"]
        st.managed |= set(st.desired.keys())
        return self._reconcile(st, "table_desired")

    def _on_table_delta(self, st: ApplierState, p: dict, ev: Event) -> list[Effect]:
        if st.desired is None or p["base_version"] != st.version:
            st.gaps += 1  # wait for the next full table (lvsd sends one on start and on config)
            return []
        st.desired = apply_ops(st.desired, p["ops"], strict=False)
        st.version = p["version"]
        touched = {ServiceKey.parse(op["service"]) for op in p["ops"]}
        st.managed |= touched
        # the kernel (as expected) equals the previous desired table everywhere else
        return self._reconcile(st, "table_delta", only=touched)

    def _on_config_loaded(self, st: ApplierState, p: dict, ev: Event) -> list[Effect]:
        try:
            cfg = from_dict(p["model"])
        except (ConfigError, KeyError, TypeError, ValueError):
            return []
        st.managed |= managed_keys(cfg)
        was_idle, st.idle = st.idle, cfg.service.value == "fos"
        if st.idle:  # failover services: the applier stays idle, the kernel untouched
            st.retry_at = None
            return []
        to = cfg.ipvs_timeouts
        st.timeouts_want = {"tcp": to.tcp, "tcpfin": to.tcpfin, "udp": to.udp}
        sd = cfg.sync_daemon
        st.sync = {"ifname": sd.interface, "syncid": sd.sync_id} if sd.enabled else None
        st.sysctls_want = dict.fromkeys(SYSCTLS, 1) if cfg.scaleout is not None else {}
        if was_idle and st.started and not st.reads:  # back from fos mode: look at the kernel first
            return [self._read(st, "config")]
        return self._reconcile(st, "config")

    def _on_role_changed(self, st: ApplierState, p: dict, ev: Event) -> list[Effect]:
        st.role = p["new"]
        st.roles[p.get("group", "default")] = p["new"]
        return self._reconcile(st, "role")

    def _on_started(self, st: ApplierState, p: dict, ev: Event) -> list[Effect]:
        st.started = True
        st.flush_unmanaged = bool(p.get("flush_unmanaged", False))
        st.available, st.attempts, st.retry_at = True, 0, None
        st.pending.clear()  # a new shell: what the old one did not apply is in the dump, or lost
        if st.idle:
            return []
        return [self._read(st, "started")]

    def _on_table_read(self, st: ApplierState, p: dict, ev: Event) -> list[Effect]:
        base = st.reads.pop(p["request"], None)
        if base is None:
            return []
        st.available, st.attempts = True, 0
        if st.fail_streak == 0:
            st.retry_at = None
        st.pending = [(b, ops) for b, ops in st.pending if b > base]
        exp = Table.from_dict(p["table"])
        for _b, ops in st.pending:
            exp = apply_ops(exp, ops, strict=False)
        st.expected = exp
        st.timeouts_have = dict(p["timeouts"]) if p["timeouts"] is not None else None
        st.daemons_have = list(p["daemons"])
        sysctls = p.get("sysctls")  # (a v1 record: not read)
        st.sysctls_have = dict(sysctls) if sysctls is not None else None
        return self._reconcile(st, "reconcile")

    def _on_batch_applied(self, st: ApplierState, p: dict, ev: Event) -> list[Effect]:
        st.pending = [(b, ops) for b, ops in st.pending if b > p["batch"]]
        if not p["failed"]:
            st.fail_streak = 0
            return []
        st.expected = None  # unknown until the next dump
        st.fail_streak += 1
        if st.fail_streak == 1:
            return [self._read(st, "op_failed")]
        # the kernel keeps refusing (a scheduler module it lacks, a bad address): back off
        # instead of re-planning the same refused ops in a loop
        if st.retry_at is None:
            st.retry_at = ev.mono_ns + min(RETRY_MAX_NS, RETRY_MIN_NS << min(st.fail_streak - 2, 6))
        return []

    def _on_unavailable(self, st: ApplierState, p: dict, ev: Event) -> list[Effect]:
        st.reads.pop(p.get("request", -1), None)
        st.available = False
        st.expected = None
        st.attempts += 1
        delay = min(RETRY_MAX_NS, RETRY_MIN_NS << min(st.attempts - 1, 6))
        st.retry_at = ev.mono_ns + delay
        return []

    def _on_timer_fired(self, st: ApplierState, p: dict, ev: Event) -> list[Effect]:
        if st.retry_at is not None and ev.mono_ns >= st.retry_at and not st.idle:
            st.retry_at = None
            return [self._read(st, "retry")]
        return []

    _HANDLERS: dict[str, Callable[["ApplierCore", ApplierState, dict, Event], list[Effect]]] = {
        "lvsd.table_desired": _on_table_desired,
        "lvsd.table_delta": _on_table_delta,
        "config.loaded": _on_config_loaded,
        "router.role_changed": _on_role_changed,
        "ipvs.started": _on_started,
        "ipvs.table_read": _on_table_read,
        "ipvs.batch_applied": _on_batch_applied,
        "ipvs.unavailable": _on_unavailable,
        "timer.fired": _on_timer_fired,
    }

    def _read(self, st: ApplierState, reason: str) -> Effect:
        st.request += 1
        st.reads[st.request] = st.batch
        return Effect("ipvs.read_table", {"request": st.request, "reason": reason})

    def _want_daemons(self, st: ApplierState) -> list[dict]:
        if st.sync is None:
            return []
        # a router active for a group sends its connections (master); one backup for a group takes
        # the peer's (backup); an active/active pair runs both, as the kernel allows
        roles = set(st.roles.values())
        return ([{"state": "master", **st.sync}] if "ACTIVE" in roles else []) + \
            ([{"state": "backup", **st.sync}] if "BACKUP" in roles else [])

    def _reconcile(self, st: ApplierState, reason: str, only: set | None = None) -> list[Effect]:
        if st.idle or st.expected is None or st.reads:
            return []  # no dump yet, or one on its way: plan when it arrives
        ops = plan_globals(st.timeouts_have, st.timeouts_want, st.daemons_have, self._want_daemons(st),
                           st.sysctls_have, st.sysctls_want)
        if st.desired is not None:
            managed = st.managed
            ops += plan(st.expected, st.desired, lambda k: k in managed, st.flush_unmanaged, only=only)
        if not ops:
            return []
        if st.desired is not None:
            st.expected = planned_result(st.expected, st.desired, ops)
        # what the globals will be once applied
        for op in ops:
            if op["op"] in GLOBAL_OPS:
                st.timeouts_have, st.daemons_have = apply_global(st.timeouts_have, st.daemons_have, op)
                st.sysctls_have = sysctls_after(st.sysctls_have, op)
        effects = []
        for i in range(0, len(ops), MAX_BATCH_OPS):
            chunk = ops[i:i + MAX_BATCH_OPS]
            st.batch += 1
            st.pending.append((st.batch, chunk))
            effects.append(Effect("ipvs.apply", {"batch": st.batch, "ops": chunk, "reason": reason, "version": st.version}))
        return effects

    # snapshots: plain data. Version 1 lacked fail_streak before it existed; version 2 has it;
    # version 3 has idle (service = fos); version 4 has roles (one a failover group); version 5
    # the IPVS sysctls (sysctls_have, sysctls_want)
    snapshot_version = 5
    snapshot_upcasters = {1: lambda d: {"fail_streak": 0, **d}, 2: lambda d: {"idle": False, **d},
                          3: lambda d: {"roles": {"default": d["role"]} if d["role"] != "INIT" else {}, **d},
                          4: lambda d: {"sysctls_have": None, "sysctls_want": {}, **d}}

    def snapshot(self, st: ApplierState) -> Any:
        return {
            "desired": st.desired.to_dict() if st.desired is not None else None,
            "version": st.version,
            "expected": st.expected.to_dict() if st.expected is not None else None,
            "timeouts_have": st.timeouts_have, "daemons_have": st.daemons_have,
            "timeouts_want": st.timeouts_want, "sync": st.sync, "role": st.role,
            "sysctls_have": st.sysctls_have, "sysctls_want": dict(st.sysctls_want),
            "roles": dict(sorted(st.roles.items())),
            "managed": sorted(str(k) for k in st.managed), "flush_unmanaged": st.flush_unmanaged,
            "batch": st.batch, "request": st.request,
            "reads": [[k, v] for k, v in st.reads.items()],
            "pending": [[b, ops] for b, ops in st.pending],
            "started": st.started, "available": st.available, "attempts": st.attempts,
            "retry_at": st.retry_at, "gaps": st.gaps, "fail_streak": st.fail_streak, "idle": st.idle,
        }

    def restore(self, d: Any) -> ApplierState:
        return ApplierState(
            desired=Table.from_dict(d["desired"]) if d["desired"] is not None else None,
            version=d["version"],
            expected=Table.from_dict(d["expected"]) if d["expected"] is not None else None,
            timeouts_have=d["timeouts_have"], daemons_have=d["daemons_have"],
            timeouts_want=d["timeouts_want"], sync=d["sync"], role=d["role"], roles=dict(d["roles"]),
            sysctls_have=d["sysctls_have"], sysctls_want=dict(d["sysctls_want"]),
            managed={ServiceKey.parse(k) for k in d["managed"]}, flush_unmanaged=d["flush_unmanaged"],
            batch=d["batch"], request=d["request"], reads={k: v for k, v in d["reads"]},
            pending=[(b, ops) for b, ops in d["pending"]], started=d["started"], available=d["available"],
            attempts=d["attempts"], retry_at=d["retry_at"], gaps=d["gaps"], fail_streak=d["fail_streak"],
            idle=d["idle"],
        )
