"""A whole LVS cluster in one process: routers, links, clocks and seeded faults, driving the real cores.

    from lvsbus_tools.simulate import Cluster, generate_faults
    result = Cluster(seed=7, routers=2).run()      # SimResult: violations, log dirs, stats
    result.ok, result.violations, result.logs

What is simulated (everything a core does not see directly):

* a clock per router: simulated time is one global ``t`` (ns); each router's CLOCK_MONOTONIC is
  ``t`` seen through its own drift (ppm) and boot offset, and starts again near 0 after a reboot;
  its wall clock can be stepped (NTP) without touching the monotonic one;
* a broker per router: assigns seqs, stamps ``mono_ns``/``wall_ns`` from that router's clocks,
  validates every event against the catalog (as the real broker does) and appends it to a real
  log (``EventLog``, durability ``none``) in ``<log_root>/<router>/log``, so ``tools/replay.py``
  reads it like any router's log;
* the router's lifecycle as ``lvsbus router`` runs it, its decisions taken by the supervisor's
  own code (``lvsbus.router.supervision.Supervision``): broker, ``config.loaded`` (the run start: every
  core starts from ``initial()`` there), pulse, nanny and the applier always, lvsd started on
  ``pulse.start_lvsd`` (its standby told to go: no process start) and stopped on ``pulse.stop_lvsd``; every
  service death goes through the restart policy (attempt, backoff; a restart loop steps the router
  down, or abandons nanny under ``hard_shutdown = false``), the broker's among them, and the broker
  and pulse keep a warm spare (a process already up, waiting) that takes over at once when the live
  one dies, the policy's delay then being for the next spare (``Supervision.on_death``, as
  ``Supervisor._died``); lvsd's deaths are forgotten when it is stopped (``Supervision.lvsd_started``:
  the real router starts its standby then); a service that starts again is restored
  from its snapshot (through the snapshot format) and answers the inputs logged while it was down,
  as ``lvsbus.runtime.engine`` does;
* a simulated shell per core, which executes its effects with the real shells' decision code
  (every decision a shell makes is pure code both call: nanny's ``schedule``, the applier's
  ``apply_global``/``applied_events``/``table_read_payload``, pulse's ``reconcile_vips``, its link
  watch's ``link_devices``/``link_poll_interval``/``link_changes``, pulse's wire format
  ``datagram_of``/``accept``; this module keeps the simulated I/O): pulse's
  ``send_heartbeat`` and ``send_fence`` become datagrams on simulated links (both links, per pair: cut, loss, delay, reordering), the receiving router's
  shell accepts them (or rejects them: ``pulse.datagram_rejected``) and publishes ``pulse.heartbeat_received`` / ``pulse.fence_received``; ``take_vips``/``release_vips`` add and remove the VIPs on the router;
  ``send_garp`` moves the clients' ARP entry; notify commands finish after a few ms; nanny's shell
  runs its check schedule on the router's monotonic clock and publishes the results in 50 ms
  batches; the applier's ``read_table``/``apply`` hit a simulated kernel IPVS table (which refuses
  what the kernel refuses, with its errno: ``lvsbus.ipvs.table.Refused``);
* timers exactly as ``lvsbus.runtime.engine`` arms them (``lvsbus.runtime.timer``): after every event the
  core's ``next_deadline`` is (re)armed, and when it passes a ``timer.fired`` is published through the bus;
* clients: they send to the VIP's ARP owner, and are served when it runs, holds the VIP and has a
  healthy real server in its kernel table; ``SimResult.outage_ns`` is the time they were not,
  after the cluster first served.

Cores come from ``lvsbus_services.cores.available()`` (pulse, nanny, lvsd, the applier)
and are fed through ``lvsbus.runtime.core.run_core``, the one loop the runtime and replay use.

Faults (``Fault``), scheduled from the seed by ``generate_faults``: router crash (a host crash:
VIPs and IPVS table gone, monotonic clock restarts) and restart, service crash and restart (the
core is restored from its snapshot; VIPs stay), link cut and heal per (pair, link), a NIC down
(pulse's link watch polls it, with monitor_links), packet loss, delay and reordering per link, a
router stall (GC/VM pause), wall-clock steps, monotonic drift, real servers failing (for a while or for good),
flapping, answering too slowly (checks time out), and broker crashes at any instant (between two
messages it receives, having written what it had received or not). After a service's or the
broker's crash, the process the supervisor's decision brings in (the spare, at once, or a new one,
after the policy's delay) serves the fault's duration later. Services run write-ahead, as
``lvsbus.runtime.engine``: a step's outputs are recorded, then its effects run; with no broker
they wait, the lost ones are sent again and the written ones found
(``lvsbus.bus.AsyncBusClient``), and a service that dies meanwhile answers those inputs again.

Invariants, checked after every simulated instant (``Cluster.violations``):

* at most one router holds a VIP, except inside the fencing window: two holders are allowed while
  they cannot hear each other (no usable link, a stalled router, a dead pulse) and for at most
  ``fencing_window_ns`` (deadtime + keepalive + the largest link delay) after they can again;
* a router holds the VIPs if and only if its pulse core is ACTIVE (and then all of them);
* after the faults stop and the cluster settles: exactly one router is ACTIVE, every other one is
  BACKUP, every router hears every other one (no core is left without its timer), and the active
  router's kernel IPVS table holds exactly the healthy real servers of each virtual service (the
  backup's table is left as it was: lvsd runs only on the active router); a router that stepped
  down after a restart loop stays down and is left out;
* and the clients' ARP entry for each VIP points at the active router (their last gratuitous ARP
  came from it: pulse re-announces after a split brain, also one it heard of late);
* no event is lost or reordered: each log reads back with contiguous seqs and the exact bytes the
  broker wrote (a digest kept while writing);
* every effect that ran is in the log, as its service's output for its input (write-ahead);
* (``verify=True``) every log passes ``lvsbus_tools.replay.verify``.

Deterministic: the same seed (and fault list) gives the same logs byte for byte. A failing seed is
shrunk (``shrink``) to the shortest fault schedule that still fails; ``lvsbus simulate --seed N``
reproduces it, ``--faults FILE`` replays a given (e.g. shrunk) schedule.
"""
from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import os
import random
import shutil
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack

if __name__ == "__main__":  # run as a script by mistake: say so rather than exit 0 having done nothing
    sys.exit("lvsbus_tools.simulate is a library; its command line is: lvsbus simulate "
             "(or python tools/simulate_cli.py)")

import lvsbus.wire.catalog  # noqa: F401  (fills the registry)
from lvsbus.config import (Config, FailoverService, Heartbeat, RealServer, Router, ServiceType, Track, TrackKind,
                           VirtualService, to_dict)
from lvsbus.config.derive import config_vips, loaded_payload
from lvsbus.runtime.core import Core, Effect, run_core
from lvsbus.wire.events import REGISTRY, Event, encode
from lvsbus.ipvs.table import Refused, Table
from lvsbus.bus.stats import ReportLimit
from lvsbus.log import Durability, EventLog, LogReader
from lvsbus.runtime.snapshot import decode_state, encode_state
from lvsbus.runtime.timer import TimerState
from lvsbus.router.supervision import (ABANDON, GIVE_UP, LVSD_START, ROUTER_SUBS, SERVICES, SPARES, WHILE_ACTIVE, Death,
                                       Supervision, configured_services)
from lvsbus_services.cores import available
from lvsbus_services.nanny.schedule import FLUSH_S, TICK, ResultBatch, Schedule, checks_for, next_flush, phase_of, wake_delay
from lvsbus_services.pulse import wire
from lvsbus_services.pulse.watch import file_observation, interface_observation, track_changes, watched_items
from lvsbus_services.pulse.core import (
    _settings_from_model, grow_epoch, link_changes, link_devices, link_poll_interval, started_payload,
)
from lvsbus_tools.replay import verify as replay_verify

S = 1_000_000_000
MS = 1_000_000
NANNY_FLUSH = int(FLUSH_S * S)  # nanny's shell flushes its results every 50 ms
NANNY_TICK = int(TICK * S)  # ... and wakes at least a tick ahead
GO = 1 * MS  # lvsd's standby (started, recovered, following the bus) told to go on its stdin
LINKS = ("public", "private")
SIM_KEY = wire.key_from_secret(b"lvsbus simulated cluster")  # every router's heartbeat key


class _QuietLog:
    """EventLog's logger, silent (the simulator opens and closes many logs)."""

    def _noop(self, *a, **kw) -> None:
        pass

    debug = info = warning = error = exception = _noop


# ---------------------------------------------------------------------------------------------
# the cluster's configuration: a real Config model, as config.loaded carries it


def router_names(n: int) -> list[str]:
    return [f"lvs{i + 1}" for i in range(n)]


def make_config(routers: int = 2, servers: int = 3, keepalive: float = 1.0, deadtime: float = 3.0,
                **heartbeat: Any) -> Config:
    """The simulated cluster's config: N routers on 10.0.0.0/24 (public) and 192.168.0.0/24
    (private), priorities 200, 150, 100..., one virtual service on 10.0.0.100:80 with M real servers."""
    hb = {"keepalive": keepalive, "deadtime": deadtime, "monitor_links": True, "garp_repeat": 2}
    hb.update(heartbeat)
    return Config(
        routers=tuple(
            Router(name, f"10.0.0.{i + 1}", f"192.168.0.{i + 1}", priority=max(1, 200 - 50 * i),
                   device="eth0", private_device="eth1")
            for i, name in enumerate(router_names(routers))
        ),
        heartbeat=Heartbeat(**hb),
        virtual_services=(
            VirtualService("web", "10.0.0.100", device="eth0", label="eth0:1", vip_prefixlen=24, port=80,
                           servers=tuple(RealServer(f"rs{j + 1}", f"192.168.100.{10 + j}") for j in range(servers))),
        ),
    )


def make_fos_config(routers: int = 2, keepalive: float = 1.0, deadtime: float = 3.0, timeout: float = 3.0,
                    reentry: float = 6.0, **heartbeat: Any) -> Config:
    """``service = fos``: the same routers, no virtual service, one failover service ``web`` on
    10.0.0.100:80 that each router's start_cmd starts and stop_cmd stops (simulated: see
    ``Cluster.fos_running``)."""
    base = make_config(routers, 0, keepalive, deadtime, **heartbeat)
    return dataclasses.replace(base, service=ServiceType.FOS, virtual_services=(), failover_services=(
        FailoverService("web", "10.0.0.100", device="eth0", label="eth0:1", vip_prefixlen=24, port=80,
                        timeout=timeout, reentry=reentry, start_cmd="/etc/init.d/web start",
                        stop_cmd="/etc/init.d/web stop"),
    ))


#: the tracked items of ``make_tracking_config``: name -> kind (what its faults do: docs/replay.md)
TRACKED_INTERFACES = ("uplink", "gw")
TRACKED_SCRIPTS = ("svc",)


def make_tracking_config(routers: int = 2, servers: int = 3, **kw: Any) -> Config:
    """``make_config`` with tracking ([track.NAME]) on every router: ``uplink`` (an interface,
    weight -120: the active router drops below the next one, which preempts), ``gw`` (an interface,
    weight 0: FAULT while down) and ``svc`` (a script run by nanny every second, rise 2, fall 2,
    weight -120) and ``websvc`` (the virtual service web's quorum, weight -120: server faults move
    it, each router's nanny judging on its own)."""
    base = make_config(routers, servers, **kw)
    return dataclasses.replace(base, tracks=(
        Track("uplink", TrackKind.INTERFACE, weight=-120, device="eth2"),
        Track("gw", TrackKind.INTERFACE, device="eth3"),
        Track("svc", TrackKind.SCRIPT, weight=-120, command="/usr/local/bin/check-svc", interval=1.0, timeout=0.5,
              rise=2, fall=2),
        Track("websvc", TrackKind.SERVICE, weight=-120, virtual="web"),
    ))


def with_groups(base: Config) -> Config:
    """``base`` with two failover groups, the active/active pair: ``web`` (its virtual service, and
    nat_router) where the first router ranks highest, ``mail`` (a second virtual service on
    10.0.0.101:25, the same real servers) where the last one does; tracked items move both."""
    from lvsbus.config.model import Group

    names = [r.name for r in base.routers]
    web = Group("web", priority=tuple((n, 200 - 50 * i) for i, n in enumerate(names)))
    mail = Group("mail", priority=tuple((n, 200 - 50 * i) for i, n in enumerate(reversed(names))))
    vs = [dataclasses.replace(v, group="web") for v in base.virtual_services]
    if vs:
        vs.append(dataclasses.replace(vs[0], name="mail", address="10.0.0.101", label="eth0:2", port=25, group="mail"))
    return dataclasses.replace(base, groups=(web, mail), virtual_services=tuple(vs))


def config_payload(model: dict, local: str, digest: str, reload: bool = False) -> dict:
    """``config.loaded`` as the router publishes it (``lvsbus.config.derive.loaded_payload``)."""
    return loaded_payload("/etc/lvsbus/lvs.toml", "toml", digest, model, [], local, reload, {})


# ---------------------------------------------------------------------------------------------
# faults

FAULT_KINDS = (
    "router_crash",  # target router; the host goes down for duration (VIPs gone), then boots
    "service_crash",  # target "router/service"; the process dies (VIPs stay); the supervisor's decision
    # (lvsbus.router.supervision) brings its spare in at once or starts a new one after the policy's
    # delay; that process serves duration later
    "link_cut",  # target "a-b/link"; no datagram passes for duration
    "nic_down",  # target "router/link"; the router's NIC on that link is down (pulse's link watch, with
    # monitor_links, publishes pulse.link_changed at its next poll)
    "loss",  # target "a-b/link"; value: permille of datagrams lost, for duration
    "delay",  # target "a-b/link"; value: extra delay up to this many ms (reorders), for duration
    "stall",  # target router; the router freezes for duration (GC/VM pause), then catches up
    "wall_step",  # target router; the wall clock steps by value ms (either way); no duration
    "drift",  # target router; the monotonic clock runs value ppm fast (or slow), for duration
    "server_fail",  # target real server; it refuses connections for duration (0: for good)
    "server_flap",  # target real server; its checks pass and fail in turn, for duration
    "slow_check",  # target real server; it answers too late (checks time out), for duration
    # target router; its broker is SIGKILLed before the (value // 2)-th message it receives from then
    # on (in the middle of whatever the router is doing), having written what it had received
    # (odd value) or not (even); the supervisor's decision brings in its spare (or a new one after
    # the policy's delay), serving duration later
    "broker_crash",
)
#: service = fos (``Cluster(fos=True)``): no real server; the failover service can be killed
FOS_KILL = "fos_kill"  # target router; its failover service process dies (until its next start_cmd)
FOS_FAULT_KINDS = tuple(k for k in FAULT_KINDS if k not in ("server_fail", "server_flap", "slow_check")) + (FOS_KILL,)
#: tracking (``Cluster(tracking=True)``, ``make_tracking_config``): two more kinds
TRACK_DOWN = "track_down"  # target "router/item": a tracked interface of that router is down, for duration
TRACK_FAIL = "track_fail"  # target "router/item": a tracked script fails on that router, for duration
TRACK_FAULT_KINDS = FAULT_KINDS + (TRACK_DOWN, TRACK_FAIL)
SERVER_FAULTS = ("server_fail", "server_flap", "slow_check")


@dataclass(frozen=True, order=True)
class Fault:
    at: int  # simulated ns since the start
    kind: str
    target: str
    duration: int = 0
    value: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Fault":
        return cls(int(d["at"]), str(d["kind"]), str(d["target"]), int(d.get("duration", 0)), int(d.get("value", 0)))

    def describe(self) -> str:
        extra = {"loss": f" {self.value / 10:g}%", "delay": f" +{self.value}ms", "wall_step": f" {self.value:+d}ms",
                 "drift": f" {self.value:+d}ppm",
                 "broker_crash": f" before message {max(1, self.value // 2)}"
                                 f"{' (what it received written)' if self.value % 2 else ''}"}.get(self.kind, "")
        dur = f" for {self.duration / S:g}s" if self.duration else ""
        if self.kind == "broker_crash":
            dur = f", the next one serving after {self.duration / S:g}s"
        return f"t={self.at / S:g}s {self.kind} {self.target}{extra}{dur}"


def generate_faults(seed: int, routers: int = 2, start: int = 6 * S, span: int = 20 * S,
                    max_faults: int = 5, kinds: tuple[str, ...] = FAULT_KINDS, servers: int = 3) -> list[Fault]:
    """A fault schedule from the seed: 1..max_faults faults starting in [start, start + span), each
    over by ``start + span`` so the cluster can settle after it."""
    rng = random.Random(seed * 7919 + 17)
    names = router_names(routers)
    pairs = [f"{a}-{b}" for i, a in enumerate(names) for b in names[i + 1:]]
    if not servers:
        kinds = tuple(k for k in kinds if k not in SERVER_FAULTS)
    if not pairs:  # one router: no link between routers to fault
        kinds = tuple(k for k in kinds if not _targets_a_pair(k))
    crashes = "broker_crash" in kinds
    kinds = tuple(k for k in kinds if k != "broker_crash")  # drawn apart: the other kinds' draws stay as they were
    out = _broker_crashes(seed, names, start, span, others=bool(kinds)) if crashes else []
    for _ in range(rng.randint(1, max_faults) if kinds else 0):
        out.append(_draw_fault(rng, rng.choice(kinds), names, pairs, servers, start, span))
    return sorted(out)


def _broker_crashes(seed: int, names: list[str], start: int, span: int, others: bool) -> list[Fault]:
    """The broker crashes of the seed's schedule, from their own dice: 0-2 among other kinds, else 1-3."""
    brng = random.Random(seed * 6151 + 29)
    return [Fault(start + brng.randrange(0, span - S, MS), "broker_crash", brng.choice(names),
                  brng.randrange(20 * MS, 800 * MS, MS), brng.randrange(2, 80))
            for _ in range(brng.choice((0, 1, 1, 2)) if others else brng.randint(1, 3))]


def _targets_a_pair(kind: str) -> bool:
    """A fault on the link between two routers (``lvs1-lvs2/public``): the kinds ``_draw_fault``
    gives a pair of routers as their target."""
    return kind not in ("router_crash", "stall", "wall_step", "drift", FOS_KILL, "service_crash", "nic_down",
                        "broker_crash", TRACK_DOWN, TRACK_FAIL, *SERVER_FAULTS)


def _draw_fault(rng: random.Random, kind: str, names: list[str], pairs: list[str], servers: int,
                start: int, span: int) -> Fault:
    """One fault of ``kind``: when, for how long (over by ``start + span``), on what, how much."""
    end = start + span
    at = start + rng.randrange(0, span - S, MS * 10)
    duration = min(rng.randrange(S // 2, 10 * S, MS * 10), end - at)
    if kind in ("router_crash", "stall", "wall_step", "drift", FOS_KILL):
        target = rng.choice(names)
    elif kind == "service_crash":
        target = f"{rng.choice(names)}/{rng.choice(('pulse', 'nanny', 'lvsd', 'ipvs'))}"
        duration = min(rng.randrange(S // 10, 3 * S, MS * 10), end - at)
    elif kind == "nic_down":
        target = f"{rng.choice(names)}/{rng.choice(LINKS)}"
    elif kind == TRACK_DOWN:
        target = f"{rng.choice(names)}/{rng.choice(TRACKED_INTERFACES)}"
    elif kind == TRACK_FAIL:
        target = f"{rng.choice(names)}/{rng.choice(TRACKED_SCRIPTS)}"
    elif kind in SERVER_FAULTS:
        target = f"rs{rng.randrange(servers) + 1}"
        if kind == "server_fail" and rng.random() < 0.3:
            duration = 0  # for good: the settled table must be without it
    else:
        assert _targets_a_pair(kind), kind
        target = f"{rng.choice(pairs)}/{rng.choice(LINKS)}"
    value, duration = _fault_value(rng, kind, duration, end - at)
    return Fault(at, kind, target, duration, value)


def _fault_value(rng: random.Random, kind: str, duration: int, left: int) -> tuple[int, int]:
    """A fault's value and its duration as its kind wants them (``left``: the time until the end)."""
    value = 0
    if kind == "loss":
        value = rng.choice((100, 300, 500, 900, 1000))
    elif kind == "delay":
        value = rng.choice((5, 50, 300, 900))
    elif kind == "wall_step":
        value, duration = rng.choice((-1, 1)) * rng.randrange(1, 3_600_000), 0
    elif kind == "drift":
        value = rng.choice((-1, 1)) * rng.randrange(10, 1000)
    elif kind == "stall":
        duration = min(rng.randrange(MS * 100, 8 * S, MS * 10), left)
    elif kind == FOS_KILL:
        duration = 0
    return value, duration


def failover_schedule(seed: int, routers: int = 2) -> list[Fault]:
    """A failover scenario: the seed's schedule plus a crash of the active router (lvs1, the
    highest priority) at a seeded time, so every such scenario fails over (and usually preempts
    back when lvs1 boots again). Used by bench/simulate.py and the test sweep."""
    rng = random.Random(seed * 104729 + 3)
    crash = Fault(rng.randrange(7 * S, 12 * S, MS), "router_crash", "lvs1", rng.randrange(3 * S, 9 * S, MS))
    return sorted(generate_faults(seed, routers) + [crash])


# ---------------------------------------------------------------------------------------------
# the simulated parts


class SimClock:
    """One router's clocks. ``mono(t)``: boot offset + time since boot, drifting by ``ppm``."""

    def __init__(self, boot_mono: int, wall_base: int) -> None:
        self.ppm = 0
        self.anchor_t = 0  # global time at the last rate change
        self.anchor_mono = boot_mono
        self.wall_offset = wall_base

    def mono(self, t: int) -> int:
        dt = t - self.anchor_t
        return self.anchor_mono + dt + dt * self.ppm // 1_000_000

    def wall(self, t: int) -> int:
        return self.wall_offset + t

    def set_rate(self, t: int, ppm: int) -> None:
        self.anchor_mono = self.mono(t)
        self.anchor_t = t
        self.ppm = ppm

    def reboot(self, t: int, boot_mono: int) -> None:
        self.anchor_t, self.anchor_mono, self.ppm = t, boot_mono, 0

    def global_time(self, mono: int, now: int) -> int:
        """The earliest global time (>= now) at which this clock reads ``mono``."""
        if mono <= self.mono(now):
            return now
        t = self.anchor_t + (mono - self.anchor_mono) * 1_000_000 // (1_000_000 + self.ppm)
        while self.mono(t) < mono:
            t += 1
        return max(t, now)


class SimCheck:
    """One of nanny's checks as its schedule (services/nanny/schedule.py) sees it."""

    __slots__ = ("id", "server", "interval", "timeout_us", "phase", "due", "running", "alive", "retry_delay")

    def __init__(self, id_: str, server: str, interval: float, timeout_us: int, retry_delay: float | None = None) -> None:
        self.id, self.server, self.interval, self.timeout_us = id_, server, interval, timeout_us
        self.retry_delay = retry_delay
        self.phase = phase_of(id_, interval)
        self.due = 0.0
        self.running = False
        self.alive = True

    def same(self, other: "SimCheck") -> bool:
        return ((self.server, self.interval, self.timeout_us, self.retry_delay)
                == (other.server, other.interval, other.timeout_us, other.retry_delay))


class SimService:
    __slots__ = ("name", "core", "state", "up", "timer", "timer_gen", "starts", "backlog", "owed")

    def __init__(self, core: Core) -> None:
        self.name = core.name
        self.core = core
        self.state = core.initial()
        self.up = False
        self.timer = TimerState()  # the runtime's timer (lvsbus.runtime.timer): armed and published deadlines
        self.timer_gen = 0
        self.starts = 0
        self.backlog: list[Event] = []  # inputs logged while the service was down
        # outputs it computed and never got recorded (the broker was down when it died): its next
        # start answers those inputs again, as the runtime does for inputs after ``answered_upto``
        self.owed: list[tuple[int, Effect]] = []


class SimRouter:
    def __init__(self, name: str, index: int, cores: list[Core], clock: SimClock, log_dir: str | None) -> None:
        self.name = name
        self.index = index
        self.clock = clock
        self.services = {c.name: SimService(c) for c in cores}
        self.up = False
        self.frozen_until = 0
        self.epoch = 0  # pulse's persisted boot epoch counter (STATE_DIR/pulse.epoch: kept across host crashes)
        self.broker_runs = 0
        self.vips: dict[str, dict] = {}  # address -> vip payload
        self.nic_up = {link: True for link in LINKS}
        # pulse's link watch: the links it polls and their devices (link_devices), what it last saw
        self.watched: dict[str, str | None] = {}
        self.links_known: dict[str, bool] = {}
        self.link_poll_ns = 0
        # pulse's track watch (services/pulse/watch.py): the items it polls, what it last published;
        # the simulated world: tracked interfaces down, tracked scripts failing (track_* faults)
        self.tracked: tuple = ()
        self.tracks_known: dict = {}
        self.track_down: set[str] = set()
        self.script_failing: set[str] = set()
        self.rejected = 0  # datagrams pulse's shell rejected (wire.accept), and its report limit
        self.reject_limit = ReportLimit(wire.REJECT_EVENTS_PER_S)
        self.log_dir = log_dir
        self.log: EventLog | None = None
        self.next_seq = 1
        self.queue: deque[Event] = deque()
        self.pending: list[tuple[int, bytes]] = []
        self.digest = hashlib.blake2b(digest_size=16)
        self.count = 0
        # the simulated kernel: IPVS table, timeouts, sync daemons (gone with a host crash)
        self.kernel = Table()
        self.timeouts = {"tcp": 0, "tcpfin": 0, "udp": 0}
        self.daemons: list[dict] = []
        self.shell_gen: dict[str, int] = {}  # service -> run number of its shell (stale callbacks die)
        self.flap: dict[str, int] = {}  # real server -> checks done while it flaps
        # nanny's shell: its check schedule and result batch (services/nanny/schedule.py, the real
        # shell's code), the time it started (its flushes are every 50 ms from then)
        self.schedule = Schedule()
        self.batch = ResultBatch()
        self.wake_gen = 0  # the schedule's wake-up armed last (older ones are stale)
        self.flush_armed = False
        self.nanny_started = 0
        self.nanny_digest = ""  # the config digest its schedule was planned under
        # the supervisor's decisions (lvsbus.router.supervision, as lvsbus/router/supervisor.py): a new one each boot
        self.supervision = Supervision()
        self.crashed: dict[str, Death] = {}  # services dead, waiting for the policy's delay (Death.start_at)
        # warm spares (broker, pulse): a spare is a process already up, waiting; it is started when
        # due (spare_at, ns) once the live process runs, and takes over when the live one dies
        self.spare: set[str] = set()
        self.spare_at: dict[str, int] = {}
        self.abandoned: set[str] = set()  # a restart loop under hard_shutdown = false: not restarted
        self.stepped_down = False  # a restart loop made the router step down (it stays down)
        # the broker and write-ahead: a record is written (durable) when the broker forwards it;
        # an output's effect runs only once its record is written
        self.broker_up = False
        self.crash_in: int | None = None  # a broker crash due before the crash_in-th next message
        self.crash_written = False  # ... after writing what it had received (else: lost)
        self.written_seq = 0
        self.pending_items: list[tuple] = []  # what each pending record was published as (to send again)
        self.outbox: list[tuple] = []  # published while no broker runs: sent again when one does
        self.held: list[tuple] = []  # written, effect not run: the broker died before acknowledging
        self.reconcile_due = False  # pulse restarted with no broker: it reconciles once one runs
        self.role_run: dict[str, str] = {}  # group -> the role of its last router.role_changed whose effects ran
        self.executed: list[tuple] = []  # (service, cause, type, packed payload) of every effect run

    def open_log(self) -> None:
        if self.log_dir is not None and self.log is None:
            self.log = EventLog(self.log_dir, durability=Durability("none"), logger=_QuietLog())
            self.next_seq = self.log.next_seq
        self.written_seq = self.next_seq - 1

    def flush(self, upto: int | None = None) -> None:
        """Write what the broker received (up to seq ``upto``)."""
        if self.pending:
            n = len(self.pending)
            if upto is not None:
                n = next((k for k, (seq, _b) in enumerate(self.pending) if seq > upto), n)
                if n == 0:
                    return
            batch = self.pending[:n] if n < len(self.pending) else self.pending
            if self.log is not None:
                self.log.append_batch(batch)
            for _seq, body in batch:
                self.digest.update(body)
            self.count += len(batch)
            self.written_seq = batch[-1][0]
            self.pending = self.pending[n:]
            self.pending_items = self.pending_items[n:]

    def close_log(self) -> None:
        self.flush()
        if self.log is not None:
            self.log.close()
            self.log = None


@dataclass
class SimResult:
    seed: int
    faults: list[Fault]
    violations: list[str]
    logs: dict[str, str]  # router -> log directory ("" when logs were not kept)
    events: int
    failovers: int  # BACKUP -> ACTIVE transitions after the first election
    sim_ns: int
    roles: dict[str, str]
    replay_errors: list[str] = field(default_factory=list)
    advisories: list[str] = field(default_factory=list)
    outage_ns: int = 0  # after the cluster first served: time the clients could not be served

    @property
    def ok(self) -> bool:
        return not self.violations and not self.replay_errors

    def summary(self) -> str:
        head = "ok" if self.ok else "FAILED"
        lines = [f"seed {self.seed}: {head}: {self.events} events, {self.failovers} failovers, "
                 f"{self.sim_ns / S:g}s simulated, clients unserved {self.outage_ns / S:.3f}s, roles {self.roles}"]
        lines += [f"  fault: {f.describe()}" for f in self.faults]
        lines += [f"  violation: {v}" for v in self.violations]
        lines += [f"  replay: {v}" for v in self.replay_errors]
        lines += [f"  advisory: {v}" for v in self.advisories]
        lines += [f"  log {name}: {path}" for name, path in self.logs.items() if path]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the cluster


class Cluster:
    """N routers wired by a simulated bus, network and clock; ``run()`` plays the fault schedule."""

    def __init__(
        self,
        seed: int,
        routers: int = 2,
        servers: int = 3,
        faults: list[Fault] | None = None,
        log_root: str | None = None,
        duration: int | None = None,
        settle: int | None = None,
        config: Config | None = None,
        client_joined_version: int = 2,
        check_invariants: bool = True,
        validate: bool = True,
        fencing_window_ns: int | None = None,
        fos: bool = False,
        boot_at: dict[str, int] | None = None,
        tracking: bool = False,
        groups: bool = False,
    ) -> None:
        self.seed = seed
        self.boot_at = dict(boot_at or {})  # router -> when it boots (ns); the others at a seeded time
        self.tracking = tracking
        if config is None:
            config = (make_fos_config(routers) if fos else make_tracking_config(routers, servers) if tracking
                      else make_config(routers, servers))
            if groups:
                config = with_groups(config)
        self.grouped = bool(config.groups)
        self.config = config
        self.model = to_dict(self.config)
        self.digest = hashlib.sha256(json.dumps(self.model, sort_keys=True).encode()).hexdigest()
        names = [r.name for r in self.config.routers]
        self.fos = {fs.name: fs for fs in self.config.fos_services() if fs.active}
        self.faults = self._fault_schedule(seed, len(names), faults)
        self._set_timers(fencing_window_ns, settle, duration)
        self.client_joined_version = client_joined_version
        self.check = check_invariants
        self.validate = validate
        self.rng = random.Random(seed)  # the network's dice (loss, delay), never the fault schedule's
        self.broker_restart_ns = 300 * MS  # after a broker crash, the next broker serves this much later (its fault's duration)
        self.t = 0
        self.heap: list = []
        self._order = 0
        cores_by_name = available()
        # the bgp core with [scaleout] (tools/simulate_scaleout.py simulates its speaker and upstream)
        self.scaleout = config.scaleout is not None
        self.core_names = [n for n in ("pulse", "nanny", "lvsd", "ipvs", "bgp") if n in cores_by_name
                           and (n != "bgp" or self.scaleout)]
        self.log_root = log_root
        self.routers = self._make_routers(seed, names, cores_by_name)
        self._init_network()
        self.violations: list[str] = []
        self.advisories: list[str] = []  # worth knowing, not (yet) an invariant: see docs/replay.md
        self.failovers = 0
        self._elected = False
        self.events = 0
        self._init_servers_and_clients()
        # service = fos: the failover service processes (router -> service -> running), started by
        # start_cmd, stopped by stop_cmd, killed by a fos_kill fault or a host crash; and what pulse
        # asked for (router -> service -> last command: "start"/"stop"), for the pairing invariant
        self.fos_running: dict[str, dict[str, bool]] = {n: {} for n in names}
        self.fos_asked: dict[str, dict[str, str]] = {n: {} for n in names}

    def _init_network(self) -> None:
        # network: (frozenset pair, link) -> state
        self.cut: dict[tuple[str, str, str], int] = {}  # (a, b, link) -> how many cut faults hold it
        self.loss: dict[tuple[str, str, str], int] = {}  # permille
        self.extra_delay: dict[tuple[str, str, str], int] = {}  # ms
        self.arp_owner: dict[str, str] = {}  # vip -> router the clients send to
        self.heard: dict[tuple[str, str], int] = {}  # (receiver, sender) -> when a datagram last arrived

    def _make_routers(self, seed: int, names: list[str], cores_by_name: dict[str, type[Core]]) -> dict[str, SimRouter]:
        """Each router with its clocks (booted at a seeded monotonic time), its cores and its log."""
        routers: dict[str, SimRouter] = {}
        for i, name in enumerate(names):
            clock = SimClock(boot_mono=(1000 + 37 * i + seed % 997) * S, wall_base=1_767_225_600 * S + i * 3 * MS)
            log_dir = os.path.join(self.log_root, name, "log") if self.log_root is not None else None
            cores = [cores_by_name[n]() for n in self.core_names]
            routers[name] = SimRouter(name, i, cores, clock, log_dir)
        return routers

    def _fault_schedule(self, seed: int, routers: int, faults: list[Fault] | None) -> list[Fault]:
        """The faults given, or the seed's: of the kinds this cluster's service can suffer."""
        if faults is not None:
            return sorted(faults)
        if self.fos:
            return generate_faults(seed, routers, kinds=FOS_FAULT_KINDS, servers=0)
        return generate_faults(seed, routers, kinds=TRACK_FAULT_KINDS if self.tracking else FAULT_KINDS,
                               servers=sum(len(vs.servers) for vs in self.config.virtual_services))

    def _set_timers(self, fencing_window_ns: int | None, settle: int | None, duration: int | None) -> None:
        """The heartbeat's timers, and from them and the faults: the fencing window, how long the
        cluster settles after the last fault, and how long the run lasts."""
        hb = self.config.heartbeat
        self.keepalive = int(hb.keepalive * S)
        self.deadtime = int(hb.deadtime * S)
        self.base_delay = (100_000, 900_000)  # one-way datagram delay, ns
        max_extra = max([f.value for f in self.faults if f.kind == "delay"] or [0]) * MS
        self.fencing_window_ns = (fencing_window_ns if fencing_window_ns is not None
                                  else self.deadtime + self.keepalive + self.base_delay[1] + max_extra)
        faults_end = max([f.at + f.duration for f in self.faults] or [0])
        self.faults_end = faults_end
        self.settle = settle if settle is not None else 3 * self.deadtime + 4 * self.keepalive + max_extra
        if self.fos and settle is None:  # a router that gave up stays out of preemption for reentry
            self.settle += int(max(f.timeout + f.reentry for f in self.fos.values()) * S)
        self.duration = duration if duration is not None else max(faults_end, 6 * S) + self.settle

    def _init_servers_and_clients(self) -> None:
        # the clients: they send to the VIP's ARP owner; served when it holds the VIP, runs, and its
        # kernel table has a healthy real server for the service
        self.outage_ns = 0
        self._served_once = False
        self._serving = False
        self._serving_since = 0
        self._dual_since: dict[str, int] = {}
        # real servers: what their checks would find
        self.server_mode: dict[str, str] = {}  # name -> up | down | flap | slow
        self.server_address: dict[str, str] = {}
        for vs in self.config.virtual_services:
            for rs in vs.servers:
                self.server_mode[rs.name] = "up"
                self.server_address[rs.name] = rs.address
        self.server_by_address = {a: n for n, a in self.server_address.items()}
        self._client_services: list[tuple[str, Any]] = []
        for vs in self.config.virtual_services:
            if vs.active:
                key = None
                if "ipvs" in self.core_names:
                    from lvsbus_services.lvsd.core import service_key

                    key = service_key(vs)
                self._client_services.append((vs.address, key))
        for fs in self.fos.values():  # served when the VIP's owner runs the failover service
            self._client_services.append((fs.address, ("fos", fs.name)))

    # -- scheduling ---------------------------------------------------------------------------
    def _at(self, t: int, kind: str, *args: Any) -> None:
        self._order += 1
        heapq.heappush(self.heap, (t, self._order, kind, args))

    def violation(self, text: str) -> None:
        if len(self.violations) < 50:
            self.violations.append(f"t={self.t / S:.6f}s {text}")

    # -- the broker -----------------------------------------------------------------------------
    def publish(self, r: SimRouter, source: str, type_: str, payload: dict, cause: int | None = None,
                version: int | None = None, eff: Effect | None = None, message: bool = True) -> Event | None:
        """The broker receives an event (``message``: the first of a client's message; a broker
        crash falls between messages). No broker running: it waits in the publisher's queue and is
        sent again when one runs (``lvsbus.bus.AsyncBusClient``); the broker's own are lost."""
        t = self.t
        if version is None:
            version = REGISTRY.latest(type_).version
        item = (source, type_, payload, cause, version, eff, r.shell_gen.get(source, 0))
        if r.crash_in is not None and message:
            r.crash_in -= 1
            if r.crash_in <= 0:
                self.broker_crash(r)
        if not r.broker_up:
            if source != "broker":
                r.outbox.append(item)
            return None
        if self.validate:
            REGISTRY.validate(type_, version, payload)
        ev = Event(r.next_seq, r.name, source, type_, version, r.clock.mono(t), r.clock.wall(t), cause, payload)
        r.next_seq += 1
        body = encode(ev)
        r.pending.append((ev.seq, body))
        r.pending_items.append(item)
        self.events += 1
        if version != REGISTRY.latest(type_).version:  # an old-version event: cores see it upcast
            v, p = REGISTRY.upcast(type_, version, payload)
            ev = ev._replace(version=v, payload=p)
        r.queue.append(ev)
        return ev

    def drain(self, r: SimRouter) -> None:
        """Deliver every logged event to the router's cores, in seq order; record their outputs,
        then run their effects (write-ahead, as ``lvsbus.runtime.engine``)."""
        if not r.queue or not r.broker_up:
            return  # nothing new: no core's state (or deadline) changed
        services = [s for s in r.services.values()]
        while r.queue:
            ev = r.queue.popleft()
            if r.crash_in is not None:
                r.flush(ev.seq)  # the broker forwards what it has written (only a crash due tells the difference)
            if ev.source == "pulse" and ev.type in ("pulse.start_lvsd", "pulse.stop_lvsd"):
                self.supervise(r, ev.type)  # the supervisor acts on the delivered record
            for svc in services:
                if not svc.up:
                    if svc.core.accepts(ev):
                        svc.backlog.append(ev)
                    continue
                for svc.state, step in run_core(svc.core, svc.state, (ev,)):
                    if step.effects:
                        self.answer(r, svc, [(ev.seq, eff) for eff in step.effects])
                if svc.name == "nanny" and ev.type == "config.loaded":  # the shell's on_event
                    self._nanny_replan(r)
        for svc in services:
            if svc.up:
                self._arm(r, svc)
        if r.broker_up:
            r.flush()

    def answer(self, r: SimRouter, svc: SimService, outputs: list[tuple[int, Effect]]) -> None:
        """A service's outputs, one message: recorded, then (acknowledged) their effects run. With
        no broker (or one that dies before acknowledging) they wait, effects held."""
        unheld = svc.core.unheld
        if unheld and all(eff.type in unheld for _c, eff in outputs):  # heartbeats: at once (lvsbus.runtime.engine)
            for cause, eff in outputs:
                self.execute(r, svc, eff)
            for k, (cause, eff) in enumerate(outputs):  # recorded (resent after a broker crash), never held
                self.publish(r, svc.name, eff.type, eff.payload, cause=cause, message=k == 0)
            return
        for k, (cause, eff) in enumerate(outputs):
            self.publish(r, svc.name, eff.type, eff.payload, cause=cause, eff=eff, message=k == 0)
        if not r.broker_up:
            return
        if r.crash_in is not None:
            r.flush()
            r.crash_in -= 1  # the acknowledgement is a message too: the broker may die before it
            if r.crash_in <= 0:
                self.broker_crash(r)
                gen = r.shell_gen.get(svc.name, 0)
                r.held.extend((svc.name, eff.type, eff.payload, cause, None, eff, gen) for cause, eff in outputs)
                return
        for cause, eff in outputs:
            self.run_effect(r, svc, cause, eff)

    def run_effect(self, r: SimRouter, svc: SimService, cause: int | None, eff: Effect) -> None:
        if self.check:  # checked against the log at the end: every effect that ran is in it
            r.executed.append((svc.name, cause, eff.type, msgpack.packb(eff.payload, use_bin_type=True)))
        self.execute(r, svc, eff)

    def broker_crash(self, r: SimRouter) -> None:
        """The broker dies (SIGKILL) between two messages: what it had received and not written is
        lost (its publishers send it again to the next broker, effects held meanwhile), or, after
        writing it (``crash_written``), it is in the log and not acknowledged (effects held until the
        publishers find it in the log at the next broker's start). The supervisor decides as for any
        service (``died``): its spare takes over, or a new broker starts after the policy's delay."""
        r.broker_up = False
        r.crash_in = None
        if r.crash_written:
            items = r.pending_items
            r.flush()
            r.held.extend(i for i in items if i[5] is not None)
        else:
            r.outbox = [i for i in r.pending_items if i[0] != "broker"] + r.outbox
            r.pending, r.pending_items = [], []
            r.next_seq = r.written_seq + 1
            r.queue = deque(ev for ev in r.queue if ev.seq <= r.written_seq)  # written: delivered after the restart
        self.died(r, "broker", self.broker_restart_ns)

    def broker_up(self, r: SimRouter) -> None:
        """The new broker: resumes from the log; each client says hello again, finds what the old
        broker wrote and sends the rest; effects held run once their records are durable."""
        r.broker_up = True
        self.publish(r, "broker", "bus.broker_started", {
            "epoch": f"{self.seed:x}-{r.name}-{r.broker_runs}-{r.next_seq}", "resumed_from": r.next_seq - 1,
            "recovery": "",
        })
        held, r.held = r.held, []
        items, r.outbox = r.outbox, []
        run = [i for i in held if i[6] == r.shell_gen.get(i[0], 0)]
        for i, item in enumerate(items):
            source, type_, payload, cause, version, eff, gen = item
            if gen != r.shell_gen.get(source, 0):
                continue  # its publisher died meanwhile
            first = i == 0 or items[i - 1][3] != cause or items[i - 1][0] != source
            self.publish(r, source, type_, payload, cause=cause, version=version, eff=eff, message=first)
            if eff is not None:
                run.append(item)
        if not r.broker_up:
            return  # it died again
        r.flush()
        for item in run:
            svc = r.services.get(item[0])
            if svc is not None and svc.up:
                self.run_effect(r, svc, item[3], item[5])
        pulse = r.services.get("pulse")
        if r.reconcile_due and pulse is not None and pulse.up:  # its answers were waiting for this broker
            self.reconcile_vips(r, pulse)
        r.reconcile_due = False
        self._spares(r)
        self.drain(r)

    def _arm(self, r: SimRouter, svc: SimService) -> None:
        d = svc.core.next_deadline(svc.state)
        if not svc.timer.arm(d):
            return
        svc.timer_gen += 1  # the timer set before is cancelled
        if d is not None:
            self._at(r.clock.global_time(d, self.t), "timer", r.name, svc.name, d, svc.timer_gen)

    # -- the shells -----------------------------------------------------------------------------
    def execute(self, r: SimRouter, svc: SimService, eff: Effect) -> None:
        t, p = eff.type, eff.payload
        if t in ("pulse.send_heartbeat", "pulse.send_fence"):  # the shell's datagram (pulse's wire format)
            data = wire.datagram_of(SIM_KEY, t, p)
            for d in p["destinations"]:
                self.send(r.name, d, data)
        elif t == "pulse.take_vips":
            for v in p["vips"]:
                r.vips[v["address"]] = v
        elif t == "pulse.release_vips":
            for v in p["vips"]:
                r.vips.pop(v["address"], None)
        elif t == "pulse.send_garp":
            for v in p["vips"]:
                if v["address"] in r.vips:
                    self.arp_owner[v["address"]] = r.name
        elif t == "pulse.run_failover":
            asked = self.fos_asked[r.name]
            if asked.get(p["service"], "stop") == p["action"]:
                self.violation(f"{r.name}: {p['action']}_cmd of {p['service']} twice in a row (start/stop unpaired)")
            asked[p["service"]] = p["action"]
            self._at(self.t + 5 * MS, "fos_cmd", r.name, r.broker_runs, p["service"], p["action"], p["command"])
        elif t == "pulse.run_notify":
            self._at(self.t + 3 * MS, "notify", r.name, {
                "kind": p["kind"], "command": p["command"], "exit_code": 0, "duration_ms": 3, "error": "",
            })
        elif t == "ipvs.read_table":
            self._at(self.t + MS, "shell", r.name, "ipvs", r.shell_gen.get("ipvs", 0), "read", p)
        elif t == "ipvs.apply":
            self._at(self.t + MS, "shell", r.name, "ipvs", r.shell_gen.get("ipvs", 0), "apply", p)
        elif t == "router.role_changed":
            r.role_run[p["group"]] = p["new"]
        else:
            self.execute_other(r, svc, eff)
        if t == "router.role_changed" and p["new"] == "ACTIVE":
            if self._elected:
                self.failovers += 1
            self._elected = True

    def shell_started(self, r: SimRouter, svc: SimService, pid: int) -> None:
        """The start of a shell this module does not simulate (a subclass does: the bgp service's)."""

    def execute_other(self, r: SimRouter, svc: SimService, eff: Effect) -> None:
        """An effect no shell above runs: a report that is only recorded, or the bgp service's
        (``tools/simulate_scaleout.py`` runs those)."""

    def supervise(self, r: SimRouter, type_: str) -> None:
        """The router's supervisor, on a delivered ``pulse.start_lvsd`` / ``pulse.stop_lvsd``: the
        services that run only while pulse is ACTIVE (lvsd) are started (the real router's standby
        told to go on its stdin, ``GO`` later: it has started and recovered already, so no process
        start; modelled as a start from the log) or stopped."""
        order = r.supervision.lvsd_order(type_)
        for name, when in SERVICES:
            if when != WHILE_ACTIVE or name not in r.services:
                continue
            if order == LVSD_START and not r.services[name].up:
                self._at(self.t + GO, "start", r.name, name, r.broker_runs)
            elif order != LVSD_START:
                self._at(self.t, "stop", r.name, name, r.broker_runs)

    def reconcile_vips(self, r: SimRouter, svc: SimService) -> None:
        """pulse's ``on_caught_up`` after a restart: the VIPs as its role says, announced when
        ACTIVE (``reconcile_vips`` of services/pulse/core.py decides, as for the real shell)."""
        from lvsbus_services.pulse.core import TAKE, reconcile_vips

        st = svc.state
        r.role_run = {u.name: u.role for u in st.units.values()}
        for todo, vips in reconcile_vips(st):
            for v in vips:
                if todo == TAKE:
                    r.vips[v.address] = v.payload()
                    self.arp_owner[v.address] = r.name
                else:
                    r.vips.pop(v.address, None)

    def _nanny_wake(self, r: SimRouter) -> None:
        """Arm the shell's next wake-up as ``checks.Scheduler._arm`` does (at least a tick ahead)."""
        due = r.schedule.next_deadline()
        if due is None:
            return
        r.wake_gen += 1
        now = r.clock.mono(self.t)
        mono = now + wake_delay(int(due * S), now, NANNY_TICK)
        self._at(r.clock.global_time(mono, self.t), "shell", r.name, "nanny", r.shell_gen["nanny"], "wake", r.wake_gen)

    def start_check(self, r: SimRouter, chk: "SimCheck", late_us: int) -> None:
        """One check starts; its result comes back after its latency."""
        cid, server, timeout_us = chk.id, chk.server, chk.timeout_us
        mode = self.server_seen(r, server)
        if server in self.fos and cid.startswith("fos/"):
            mode = "up" if self._fos_answers(r, self.fos[server]) else "down"
        elif cid.startswith("track/"):  # a tracked script of this router (a track_fail fault)
            mode = "script_failed" if server in r.script_failing else "up"
        if mode == "flap":
            n = r.flap[server] = r.flap.get(server, 0) + 1
            mode = "up" if n % 2 else "down"
        if mode == "up":
            res = (cid, True, 200 + self.rng.randrange(800), "ok", late_us)
        elif mode == "down":
            res = (cid, False, 150, "refused", late_us)
        elif mode == "script_failed":
            res = (cid, False, 2000, "exit_code", late_us)
        else:
            res = (cid, False, timeout_us, "timeout", late_us)
        self._at(self.t + res[2] * 1000, "shell", r.name, "nanny", r.shell_gen["nanny"], "result", (chk, res))

    def server_seen(self, r: SimRouter, server: str) -> str:
        """What a real server's checks from ``r`` find: up, down, flap or slow (the same from every
        router here; scale-out's path faults make it differ)."""
        return self.server_mode.get(server, "up")

    def shell(self, r: SimRouter, what: str, p: Any) -> None:
        """nanny's checks and the applier's netlink, simulated."""
        if what == "wake":  # the shell's scheduler wakes: the checks due start
            if p != r.wake_gen:
                return
            for chk, late in r.schedule.take_due(r.clock.mono(self.t) / S):
                chk.running = True
                self.start_check(r, chk, int(late * 1_000_000))
            self._nanny_wake(r)
        elif what == "result":  # kept until the shell's next 50 ms flush (or sent when 2,000 wait)
            self._check_result(r, *p)
        elif what == "flush":
            r.flush_armed = False
            self._nanny_flush(r)
        elif what == "read":
            from lvsbus_services.ipvs.core import table_read_payload

            self.publish(r, "ipvs", "ipvs.table_read", table_read_payload(
                p["request"], r.kernel, dict(r.timeouts), [dict(d) for d in r.daemons], 800))
        elif what == "apply":
            self._apply(r, p)

    def _nanny_flush(self, r: SimRouter) -> None:
        payload = r.batch.take(r.nanny_digest)
        if payload is not None:
            self.publish(r, "nanny", "health.check_results", payload)

    def _check_result(self, r: SimRouter, chk: Any, res: tuple) -> None:
        r.schedule.finished(chk, res[1], r.clock.mono(self.t) / S)  # as checks.Scheduler._done
        if not res[1] and chk.retry_delay is not None:
            self._nanny_wake(r)
        if not chk.alive:
            return
        if r.batch.add(*res):
            self.shell(r, "flush", None)
        elif not r.flush_armed:
            r.flush_armed = True
            due = next_flush(r.nanny_started, self.t, NANNY_FLUSH)
            self._at(due, "shell", r.name, "nanny", r.shell_gen["nanny"], "flush", None)

    def _apply(self, r: SimRouter, p: dict) -> None:
        """The simulated kernel answers each op of a batch; the shell reports as the real one."""
        from lvsbus_services.ipvs.core import CHUNK, GLOBAL_OPS, applied_events, apply_global, apply_ops, batch_applied

        ops = p["ops"]
        results: list[tuple[int | None, str, int]] = []
        for op in ops:
            try:
                if op["op"] in GLOBAL_OPS:
                    timeouts, daemons = apply_global(r.timeouts, r.daemons, op)
                    r.timeouts, r.daemons = timeouts or {}, daemons or []
                else:
                    r.kernel = apply_ops(r.kernel, [op], strict=True)
            except Refused as exc:  # the kernel refuses (lvsbus.ipvs.table: its errno)
                results.append((exc.errno, str(exc), 0))
                continue
            results.append((None, "", 40))
        reported: list[tuple[str, dict]] = []
        for i in range(0, len(ops), CHUNK):
            for type_, payload in applied_events(p["batch"], i, ops[i:i + CHUNK], results[i:i + CHUNK]):
                self.publish(r, "ipvs", type_, payload)
                reported.append((type_, payload))
        self.publish(r, "ipvs", "ipvs.batch_applied", batch_applied(p["batch"], reported, 40 * len(ops)))

    def _fos_answers(self, r: SimRouter, fs: FailoverService) -> bool:
        """A check of a failover service from ``r`` goes to its address: ``r`` itself when it holds
        the VIP, otherwise the router the clients' ARP entry names (Piranha's backup watched the
        service through the VIP). It answers when that router runs and its service process runs."""
        holder = r if fs.address in r.vips else self.routers.get(self.arp_owner.get(fs.address, ""))
        if holder is None or not holder.up or holder.frozen_until > self.t or fs.address not in holder.vips:
            return False
        return self.fos_running[holder.name].get(fs.name, False)

    def send(self, sender: str, dest: dict, data: bytes) -> None:
        """One datagram from ``sender`` to a destination of its heartbeat or fence, on its link."""
        peer, link = dest["peer"], dest["link"]
        key = (sender, peer, link) if sender < peer else (peer, sender, link)
        a, b = self.routers[sender], self.routers.get(peer)
        if b is None or self.cut.get(key) or not a.nic_up[link] or not b.nic_up[link]:
            return
        loss = self.loss.get(key, 0)
        rng = self.rng
        if loss and rng.randrange(1000) < loss:
            return
        delay = rng.randrange(*self.base_delay)
        extra = self.extra_delay.get(key, 0)
        if extra:
            delay += rng.randrange(extra * MS)
        self._at(self.t + delay, "dgram", peer, link, dest["local_address"], data)

    # -- starting and stopping ------------------------------------------------------------------
    def boot(self, r: SimRouter) -> None:
        """The router starts (lvsbus/router/supervisor.py): broker, ``config.loaded`` (its seq is the run start:
        every core of this run starts from ``initial()`` there), then pulse and nanny; lvsd and the
        applier only while pulse is ACTIVE."""
        r.up = True
        r.supervision = Supervision()
        r.crashed, r.abandoned, r.stepped_down = {}, set(), False
        r.spare, r.spare_at = set(), {name: self.t for name in SPARES}  # once the live one runs (Supervisor.run)
        r.broker_runs += 1
        r.open_log()
        r.broker_up = True
        r.crash_in = None
        r.outbox, r.held, r.pending_items, r.reconcile_due = [], [], [], False
        r.role_run = {}
        for svc in r.services.values():
            svc.state = svc.core.initial()
            svc.backlog = []
            svc.owed = []
            svc.up = False
            svc.starts = 0
        self.publish(r, "broker", "bus.broker_started", {
            "epoch": f"{self.seed:x}-{r.name}-{r.broker_runs}", "resumed_from": r.next_seq - 1, "recovery": "",
        })
        self.hello(r, "router", list(ROUTER_SUBS), 900)
        self.publish(r, "router", "config.loaded", config_payload(self.model, r.name, self.digest))
        for name in r.supervision.starts(configured=configured_services(self.config)):
            if name in r.services:
                self.start_service(r, r.services[name])
        self._spares(r)
        self.drain(r)

    def hello(self, r: SimRouter, client: str, subs: list[str], pid: int) -> None:
        if self.client_joined_version == 1:
            self.publish(r, "broker", "bus.client_joined",
                         {"client": client, "subscriptions": ",".join(subs), "pid": pid}, version=1)
        else:
            self.publish(r, "broker", "bus.client_joined", {"client": client, "subscriptions": subs, "pid": pid})

    def start_service(self, r: SimRouter, svc: SimService) -> None:
        """lvsbus.runtime.engine's start: the core's state (restored from its snapshot when it ran before
        in this router run), hello, the shell's start event, then the answers to the inputs
        recorded while it was down (cause = each input's seq)."""
        if svc.starts:
            # the runtime restores the core from its snapshot and the log after it, which is the
            # state it had; a round trip through the snapshot format keeps that path honest
            svc.state = decode_state(svc.core, encode_state(svc.core, svc.state))
        svc.up = True
        svc.starts += 1
        svc.timer = TimerState()  # a new process: a new runtime
        svc.timer_gen += 1
        backlog, svc.backlog = svc.backlog, []
        answers, svc.owed = svc.owed, []  # first the inputs it had answered with nothing recorded
        for svc.state, step in run_core(svc.core, svc.state, backlog):
            answers.extend((step.event.seq, eff) for eff in step.effects)
        pid = {"pulse": 1000, "nanny": 1500, "lvsd": 2000, "ipvs": 3000, "bgp": 5000}.get(svc.name, 4000) + r.broker_runs * 10 + svc.starts
        self.hello(r, svc.name, list(dict.fromkeys(svc.core.inputs + ("timer.fired",))), pid)
        r.shell_gen[svc.name] = r.shell_gen.get(svc.name, 0) + 1
        if svc.name == "pulse":
            self._pulse_shell_started(r, svc)
        elif svc.name == "nanny":
            self._nanny_shell_started(r)
        elif svc.name == "lvsd":
            self.publish(r, "lvsd", "lvsd.started", {"pid": pid, "epoch": r.clock.mono(self.t)})
        elif svc.name == "ipvs":
            self.publish(r, "ipvs", "ipvs.started", {"pid": pid, "flush_unmanaged": False, "kernel": "6.1.0-sim"})
        else:
            self.shell_started(r, svc, pid)
        if answers:
            self.answer(r, svc, answers)
        if svc.name == "pulse" and svc.starts > 1:  # on_caught_up: once its answers are recorded and run
            if r.broker_up or not answers:
                self.reconcile_vips(r, svc)
            else:
                r.reconcile_due = True
        self._spares(r)

    def _pulse_shell_started(self, r: SimRouter, svc: SimService) -> None:
        r.rejected, r.reject_limit = 0, ReportLimit(wire.REJECT_EVENTS_PER_S)  # a new shell's counts
        r.epoch = grow_epoch(r.epoch, r.clock.wall(self.t) // S)  # the shell's next_epoch, on this router's wall clock
        self.publish(r, "pulse", "pulse.started", started_payload(
            r.epoch, r.name, [f"10.0.0.{r.index + 1}", f"192.168.0.{r.index + 1}"], key_loaded=True))
        # the shell's link watch (services/pulse/shell.py _watch_links): only with monitor_links, the
        # configured links, polled now and every link_poll_interval after on this router's monotonic
        # clock; it starts from what the core believes (a NIC that changed while pulse was down is
        # reported at its first poll)
        r.watched = link_devices(self.model, r.name)
        # and its track watch (_watch_tracks): this router's tracked interfaces and files, every
        # link_poll_interval whatever monitor_links says, each published once at its first poll
        r.tracked, r.tracks_known = watched_items(self.model, r.name), {}
        if r.watched or r.tracked:
            r.links_known = dict(getattr(svc.state, "links_up", None) or {})
            r.link_poll_ns = link_poll_interval(_settings_from_model(self.config, r.name).keepalive_ns)
            self._poll_links(r)

    def _poll_links(self, r: SimRouter) -> None:
        """One poll of pulse's link watch: a pulse.link_changed for each link whose NIC changed since
        the last poll (``link_changes``), and the next poll armed."""
        for link, up in link_changes(r.links_known, {link: r.nic_up[link] for link in r.watched}):
            self.publish(r, "pulse", "pulse.link_changed", {"link": link, "up": up, "device": r.watched[link]})
        if r.tracked:  # no file exists in the simulated world: a tracked file reads as missing (0)
            observed = {w: interface_observation(True, w.name not in r.track_down) if w.kind == "interface"
                        else file_observation(None) for w in r.tracked}
            for p in track_changes(r.tracks_known, r.tracked, observed):
                self.publish(r, "pulse", "pulse.track_observed", p)
        mono = r.clock.mono(self.t) + r.link_poll_ns
        self._at(r.clock.global_time(mono, self.t), "links", r.name, r.shell_gen["pulse"])

    def _nanny_shell_started(self, r: SimRouter) -> None:
        # the shell's schedule and batches (services/nanny/schedule.py, on this router's
        # monotonic clock): each check every interval, at a phase from the crc32 of its id;
        # results leave in batches every 50 ms
        r.schedule, r.batch, r.flush_armed, r.nanny_started, r.nanny_digest = Schedule(), ResultBatch(), False, self.t, ""
        self._nanny_replan(r)

    def _nanny_replan(self, r: SimRouter) -> None:
        """The shell's ``replan`` (services/nanny/shell.py), at its start and on every ``config.loaded``
        its core folds: the checks of the config the core is under, unless planned already; the
        results of the old plan leave first, tagged with its digest."""
        nanny = r.services["nanny"]
        planned = checks_for(nanny.state, r.nanny_digest)
        if planned is None:
            return
        self._nanny_flush(r)
        r.nanny_digest = nanny.state.digest
        r.schedule.set_checks([SimCheck(pc.id, pc.server, pc.check.interval, int(pc.check.timeout * 1_000_000),
                                        pc.check.retry_delay) for pc in planned], r.clock.mono(self.t) / S)
        self._nanny_wake(r)

    def stop_service(self, r: SimRouter, svc: SimService) -> None:
        svc.up = False  # its state stays: the runtime saves a snapshot when it stops
        svc.timer_gen += 1
        r.shell_gen[svc.name] = r.shell_gen.get(svc.name, 0) + 1
        # its outputs not recorded (no broker): a restart finds those inputs unanswered in the log
        owed = [i for i in r.outbox if i[0] == svc.name and i[5] is not None]
        if owed:
            svc.owed.extend((i[3], i[5]) for i in owed)
            r.outbox = [i for i in r.outbox if i[0] != svc.name]

    def died(self, r: SimRouter, sname: str, startup_ns: int) -> None:
        """A service's process died (the broker's too): the supervisor's decision
        (``Supervision.on_death``, on the router's monotonic clock), as ``Supervisor._died`` takes it:
        its warm spare takes over at once, or a new process starts after the policy's delay, or a
        restart loop abandons it or steps the router down. The process that takes over serves
        ``startup_ns`` later (the fault's duration: a spare's takeover, a new process's start)."""
        now = r.clock.mono(self.t) / S
        d = r.supervision.on_death(sname, now, spare_alive=sname in r.spare, exit_="killed by SIGKILL",
                                   hard_shutdown=self.config.hard_shutdown)
        if d.action == GIVE_UP:
            self.step_down(r, d.reason)
            return
        for type_, payload in d.events:
            self.publish(r, "router", type_, payload)
        if d.action == ABANDON:
            r.abandoned.add(sname)
        if d.spare_at is not None:
            self._spare_due(r, sname, d.spare_at - now)
        if d.promote:
            r.spare.discard(sname)
            self._up_after(r, sname, startup_ns)
        elif d.start_at is not None:
            r.crashed[sname] = d
            self._at(self.t + round((d.start_at - now) * S), "restart", r.name, sname, r.broker_runs, startup_ns)
        self.drain(r)

    def restart(self, r: SimRouter, sname: str, startup_ns: int) -> None:
        """The policy's delay is over (``Death.start_at``): the supervisor starts a new process, if it
        still wants it, and records ``router.service_restarted``; it serves ``startup_ns`` later."""
        d = r.crashed.pop(sname, None)
        if d is None or d.restarted is None:
            return
        if sname != "broker" and (r.services[sname].up or not r.supervision.wanted(sname, configured_services(self.config))):
            return
        self.publish(r, "router", "router.service_restarted", d.restarted)
        if sname in SPARES:
            r.spare_at.setdefault(sname, self.t)  # its next spare, once it runs
        self._up_after(r, sname, startup_ns)
        self.drain(r)

    def _up_after(self, r: SimRouter, sname: str, startup_ns: int) -> None:
        if sname == "broker":
            self._at(self.t + startup_ns, "broker_up", r.name, r.broker_runs)
        else:
            self._at(self.t + startup_ns, "start", r.name, sname, r.broker_runs)

    def _spare_due(self, r: SimRouter, sname: str, delay_s: float) -> None:
        r.spare_at[sname] = at = self.t + round(delay_s * S)
        self._at(at, "spare", r.name, r.broker_runs)

    def _spares(self, r: SimRouter) -> None:
        """A spare due is started once its live process runs (holds the lock): up at once, waiting."""
        for name, at in list(r.spare_at.items()):
            live = r.broker_up if name == "broker" else name in r.services and r.services[name].up
            if at <= self.t and live:
                del r.spare_at[name]
                r.spare.add(name)

    def step_down(self, r: SimRouter, reason: str) -> None:
        """A restart loop (``Supervisor._shutdown(graceful=False)``): ``router.shutdown_requested``,
        pulse hands over (its leaving heartbeat, VIPs released), the supervisor releases what VIPs
        are left and the router exits; it stays down (the kernel's IPVS table as it was)."""
        self.publish(r, "router", "router.shutdown_requested", {"reason": reason[:256], "graceful": False})
        self.drain(r)
        me = self.config.router(r.name)
        for v in config_vips(self.config, me.device if me else None):  # the supervisor's last resort
            r.vips.pop(v.address, None)  # (Supervisor._release_vips)
        r.up = False
        r.stepped_down = True
        for svc in r.services.values():
            if svc.up:
                self.stop_service(r, svc)
        r.queue.clear()
        r.broker_up = False
        r.crash_in = None
        r.outbox, r.held, r.pending_items, r.reconcile_due = [], [], [], False
        r.close_log()

    def crash_router(self, r: SimRouter) -> None:
        r.up = False
        for svc in r.services.values():
            svc.up = False
        r.vips.clear()  # the host went down: its addresses and its IPVS table went with it
        self.fos_running[r.name] = {}  # and its processes, the failover services among them
        self.fos_asked[r.name] = {}
        r.kernel = Table()
        r.timeouts = {"tcp": 0, "tcpfin": 0, "udp": 0}
        r.daemons = []
        r.queue.clear()
        r.crashed.clear()
        r.abandoned.clear()
        r.broker_up = False
        r.crash_in = None
        r.outbox, r.held, r.pending_items, r.reconcile_due = [], [], [], False
        r.close_log()

    # -- faults ---------------------------------------------------------------------------------
    def _pair_key(self, target: str) -> tuple[str, str, str]:
        pair, link = target.split("/")
        a, b = pair.split("-")
        return (a, b, link) if a < b else (b, a, link)

    def fault(self, f: Fault, begin: bool) -> None:
        handler = self.FAULT_HANDLERS.get(f.kind)
        if handler is not None:
            handler(self, f, begin)

    def _router_crash(self, f: Fault, begin: bool) -> None:
        r = self.routers[f.target]
        if begin and r.up:
            self.crash_router(r)
        elif not begin and not r.up:
            r.clock.reboot(self.t, boot_mono=(5 + self.rng.randrange(10)) * S)
            self.boot(r)

    def _service_crash(self, f: Fault, begin: bool) -> None:
        """The process dies; whatever takes over serves the fault's duration later (``died``)."""
        rname, sname = f.target.split("/")
        r = self.routers[rname]
        svc = r.services.get(sname)
        if begin and svc is not None and r.up and svc.up:
            self.stop_service(r, svc)
            self.died(r, sname, f.duration)

    def _broker_crash(self, f: Fault, begin: bool) -> None:
        r = self.routers[f.target]
        if begin and r.up and r.broker_up:
            # value: the broker dies before the (value // 2)-th next message it receives, having
            # written what it had received before (odd value) or not (even)
            r.crash_in = max(1, f.value // 2)
            r.crash_written = bool(f.value % 2)
            self.broker_restart_ns = max(MS, f.duration)

    def _link_fault(self, f: Fault, begin: bool) -> None:
        """link_cut, loss, delay: between a pair of routers on one link."""
        k = f.kind
        key = self._pair_key(f.target)
        table = {"link_cut": self.cut, "loss": self.loss, "delay": self.extra_delay}[k]
        if k == "link_cut":
            table[key] = table.get(key, 0) + (1 if begin else -1)
        elif begin:
            table[key] = max(table.get(key, 0), f.value)
        else:
            table.pop(key, None)

    def _nic_down(self, f: Fault, begin: bool) -> None:
        rname, link = f.target.split("/")
        self.routers[rname].nic_up[link] = not begin  # pulse's link watch (monitor_links) sees it at its next poll

    def _track_fault(self, f: Fault, begin: bool) -> None:
        """track_down, track_fail: a tracked interface down, a tracked script failing, on one router."""
        rname, item = f.target.split("/")
        held = self.routers[rname].track_down if f.kind == TRACK_DOWN else self.routers[rname].script_failing
        if begin:
            held.add(item)
        else:
            held.discard(item)

    def _server_fault(self, f: Fault, begin: bool) -> None:
        """server_fail, server_flap, slow_check: what a real server's checks find."""
        mode = {"server_fail": "down", "server_flap": "flap", "slow_check": "slow"}[f.kind]
        if begin:
            self.server_mode[f.target] = mode
        elif self.server_mode.get(f.target) == mode:
            self.server_mode[f.target] = "up"

    def _stall(self, f: Fault, begin: bool) -> None:
        r = self.routers[f.target]
        if begin:
            r.frozen_until = max(r.frozen_until, self.t + f.duration)

    def _wall_step(self, f: Fault, begin: bool) -> None:
        self.routers[f.target].clock.wall_offset += f.value * MS

    def _fos_kill(self, f: Fault, begin: bool) -> None:
        for name in self.fos_running[f.target]:
            self.fos_running[f.target][name] = False

    def _drift(self, f: Fault, begin: bool) -> None:
        self.routers[f.target].clock.set_rate(self.t, f.value if begin else 0)

    #: fault kind -> what its begin (begin=True) and its end (False) do to the cluster
    FAULT_HANDLERS: dict[str, Callable[[Cluster, Fault, bool], None]] = {
        "router_crash": _router_crash, "service_crash": _service_crash, "broker_crash": _broker_crash,
        "link_cut": _link_fault, "loss": _link_fault, "delay": _link_fault, "nic_down": _nic_down,
        "server_fail": _server_fault, "server_flap": _server_fault,
        "slow_check": _server_fault, "stall": _stall, "wall_step": _wall_step,
        FOS_KILL: _fos_kill, "drift": _drift, TRACK_DOWN: _track_fault, TRACK_FAIL: _track_fault,
    }

    # -- the loop -------------------------------------------------------------------------------
    def run(self, verify: bool = False) -> SimResult:
        self._schedule_boots_and_faults()
        heap = self.heap
        handlers = self.EVENT_HANDLERS
        while heap and heap[0][0] <= self.duration:
            t, _, kind, args = heapq.heappop(heap)
            self.t = t
            handlers[kind](self, kind, args)
            if self.check:
                self.check_vips()
            self._clients(t)
        self._clients(self.duration)
        self.t = self.duration
        if self.check:
            self.check_settled()
        for r in self.routers.values():
            r.close_log()
        if self.check and self.log_root is not None:
            self.check_logs()
        return self._result(verify)

    def _schedule_boots_and_faults(self) -> None:
        start_rng = random.Random(self.seed * 31 + 5)
        for r in self.routers.values():
            at = start_rng.randrange(0, 2 * S, MS)
            self._at(self.boot_at.get(r.name, at), "boot", r.name)
        for f in self.faults:
            self._at(f.at, "fault", f, True)
            if f.duration:
                self._at(f.at + f.duration, "fault", f, False)

    def _result(self, verify: bool) -> SimResult:
        routers = self.routers
        result = SimResult(
            seed=self.seed, faults=list(self.faults), violations=list(self.violations),
            logs={n: (r.log_dir or "") for n, r in routers.items()}, events=self.events,
            failovers=self.failovers, sim_ns=self.duration, roles=self.roles(), advisories=list(self.advisories),
            outage_ns=self.outage_ns,
        )
        if verify and self.log_root is not None:
            for name, r in routers.items():
                rep = replay_verify(r.log_dir)
                if not rep.ok:
                    result.replay_errors.append(f"{name}: {rep.divergences[0].describe()}")
        return result

    # the scheduled events, each (kind, args) as ``_at`` queued it; a router stalled (frozen_until)
    # gets it again when it runs again

    def _frozen(self, r: SimRouter, kind: str, args: tuple) -> bool:
        if r.frozen_until > self.t:
            self._at(r.frozen_until, kind, *args)
            return True
        return False

    def _on_dgram(self, kind: str, args: tuple) -> None:
        r = self.routers[args[0]]
        if self._frozen(r, kind, args):  # in the socket buffer until the router runs again
            return
        pulse = r.services.get("pulse")
        if r.up and pulse is not None and pulse.up:  # pulse's shell: accepted (decoded, checked) or rejected
            _name, link, src, data = args
            got = wire.accept(SIM_KEY, data, link, src, pulse.state.settings)
            if isinstance(got, wire.Rejected):
                r.rejected += 1  # counted, reported at most REJECT_EVENTS_PER_S a second (as the shell)
                if r.reject_limit.admit(r.clock.mono(self.t) / S)[0]:
                    self.publish(r, "pulse", "pulse.datagram_rejected", got.payload(link, src, len(data), r.rejected))
            else:
                self.heard[(r.name, got[1]["peer"])] = self.t
                self.publish(r, "pulse", *got)
            self.drain(r)

    def _on_links(self, kind: str, args: tuple) -> None:
        r = self.routers[args[0]]
        pulse = r.services.get("pulse")
        if not (r.up and pulse is not None and pulse.up and r.shell_gen.get("pulse") == args[1]):
            return  # that shell run is gone
        if self._frozen(r, kind, args):
            return
        self._poll_links(r)
        self.drain(r)

    def _on_timer(self, kind: str, args: tuple) -> None:
        r = self.routers[args[0]]
        svc = r.services[args[1]]
        if not (r.up and svc.up and svc.timer_gen == args[3]):
            return
        if self._frozen(r, kind, args):
            return
        if r.clock.mono(self.t) < args[2]:  # the clock's rate changed since it was armed
            self._at(r.clock.global_time(args[2], self.t), kind, *args)
            return
        if not svc.timer.fire(args[2]):  # a deadline is published once (D, E, then D again: not twice)
            return
        self.publish(r, svc.name, "timer.fired", {"service": svc.name, "deadline_ns": args[2]})
        self.drain(r)

    def _on_fault(self, kind: str, args: tuple) -> None:
        self.fault(args[0], args[1])

    def _on_broker_up(self, kind: str, args: tuple) -> None:
        r = self.routers[args[0]]
        if r.up and r.broker_runs == args[1] and not r.broker_up:
            self.broker_up(r)

    def _on_spare(self, kind: str, args: tuple) -> None:
        r = self.routers[args[0]]
        if r.up and r.broker_runs == args[1]:
            self._spares(r)

    def _on_boot(self, kind: str, args: tuple) -> None:
        self.boot(self.routers[args[0]])

    def _on_supervisor(self, kind: str, args: tuple) -> None:
        """start, stop, restart of a service, in the router run (broker_runs) that queued it."""
        r = self.routers[args[0]]
        if not r.up or r.broker_runs != args[2]:
            return
        if kind == "restart":  # a service's, or the broker's
            self.restart(r, args[1], args[3])
            return
        svc = r.services[args[1]]
        wanted = r.supervision.wanted(args[1], configured_services(self.config))
        if kind == "start" and wanted and not svc.up and args[1] not in r.crashed:
            self.start_service(r, svc)
            self.drain(r)
        elif kind == "stop" and not wanted:
            if svc.up:
                self.stop_service(r, svc)
            r.crashed.pop(args[1], None)  # Child.terminate: no restart due any more
            if args[1] == "lvsd":
                r.supervision.lvsd_started()  # the standby started once it is gone (Supervisor._start_lvsd)

    def _on_shell(self, kind: str, args: tuple) -> None:
        r = self.routers[args[0]]
        svc = r.services[args[1]]
        if not (r.up and svc.up and r.shell_gen.get(args[1]) == args[2]):
            return  # that shell run is gone
        if self._frozen(r, kind, args):
            return
        self.shell(r, args[3], args[4])
        self.drain(r)

    def _on_fos_cmd(self, kind: str, args: tuple) -> None:
        r = self.routers[args[0]]
        if self._frozen(r, kind, args):
            return
        if r.up and r.broker_runs == args[1]:
            _name, _runs, service, action, command = args
            self.fos_running[r.name][service] = action == "start"
            self.publish(r, "pulse", "pulse.failover_cmd_finished", {
                "service": service, "action": action, "command": command, "exit_code": 0,
                "duration_ms": 5, "stderr_tail": "", "error": ""})
            self.drain(r)

    def _on_notify(self, kind: str, args: tuple) -> None:
        r = self.routers[args[0]]
        if self._frozen(r, kind, args):
            return
        if r.up:
            self.publish(r, "pulse", "pulse.notify_finished", args[1])
            self.drain(r)

    #: the kind of a scheduled event -> what happens when its time comes
    EVENT_HANDLERS: dict[str, Callable[[Cluster, str, tuple], None]] = {
        "dgram": _on_dgram, "timer": _on_timer, "fault": _on_fault, "broker_up": _on_broker_up, "boot": _on_boot,
        "start": _on_supervisor, "stop": _on_supervisor, "restart": _on_supervisor, "shell": _on_shell,
        "fos_cmd": _on_fos_cmd, "notify": _on_notify, "links": _on_links, "spare": _on_spare,
    }

    def _serving_now(self) -> bool:
        t = self.t
        for address, key in self._client_services:
            owner = self.routers.get(self.arp_owner.get(address, ""))
            if owner is None or not owner.up or owner.frozen_until > t or address not in owner.vips:
                return False
            if isinstance(key, tuple):  # a failover service: its process runs on the VIP's owner
                if not self.fos_running[owner.name].get(key[1], False):
                    return False
                continue
            if key is not None:
                entry = owner.kernel.get(key)
                if entry is None:
                    return False
                for d in entry.dests.values():
                    if d.weight > 0 and self.server_mode.get(self.server_by_address.get(d.address, ""), "up") != "down":
                        break
                else:
                    return False
        return True

    def _clients(self, t: int) -> None:
        """Account the time since the last instant; then look at the cluster as it is now."""
        if self._served_once and not self._serving:
            self.outage_ns += t - self._serving_since
        self._serving_since = t
        self._serving = self._serving_now()
        self._served_once = self._served_once or self._serving

    # -- invariants -----------------------------------------------------------------------------
    def roles(self) -> dict[str, str]:
        out = {}
        for n, r in self.routers.items():
            svc = r.services.get("pulse")
            out[n] = (svc.state.role if svc is not None else "?") if r.up else "DOWN"
        return out

    def hears(self, a: SimRouter, b: SimRouter) -> bool:
        """Whether a and b can exchange heartbeats now (at least one usable link, both running)."""
        t = self.t
        for r in (a, b):
            p = r.services.get("pulse")
            if not r.up or r.frozen_until > t or p is None or not p.up or not r.broker_up:
                return False  # (with no broker a router decides nothing: stalled)
        for link in LINKS:
            key = (a.name, b.name, link) if a.name < b.name else (b.name, a.name, link)
            if (not self.cut.get(key) and a.nic_up[link] and b.nic_up[link] and self.loss.get(key, 0) < 500):
                return True
        return False

    def check_vips(self) -> None:
        t = self.t
        holders: dict[str, list[SimRouter]] = {}
        for r in self.routers.values():
            if not r.up:
                continue
            pulse = r.services.get("pulse")
            role = pulse.state.role if pulse is not None else None
            if pulse is not None and pulse.state.settings is not None:
                units = {u.name: (u.role, u.cfg.vips) for u in pulse.state.units.values()}
                if self.effects_held(r, pulse):  # its decisions wait for a broker: the world is as the last one run left it
                    units = {n: (r.role_run.get(n, "INIT"), vips) for n, (_role, vips) in units.items()}
                    role = "ACTIVE" if any(x == "ACTIVE" for x, _v in units.values()) else role
                for name, (urole, vips) in units.items():
                    held = [v.address for v in vips if v.address in r.vips]
                    if held and urole != "ACTIVE":
                        self.violation(f"{r.name} holds {sorted(held)} of group {name} but is {urole} there")
                    elif urole == "ACTIVE" and len(held) != len(vips):
                        self.violation(f"{r.name} is ACTIVE for group {name} but holds {sorted(r.vips)}")
            elif r.vips:
                self.violation(f"{r.name} holds {sorted(r.vips)} but is {role}")
            for a in r.vips:
                holders.setdefault(a, []).append(r)
            if self.fos and role is not None and role != "ACTIVE":
                started = sorted(n for n, a in self.fos_asked[r.name].items() if a == "start")
                if started:
                    self.violation(f"{r.name} is {role} but its start_cmd of {started} has no stop_cmd")
        if self.scaleout:
            return  # every router holds every VIP: scale-out's own invariants (tools/simulate_scaleout.py)
        for vip, rs in holders.items():
            if len(rs) < 2:
                self._dual_since.pop(vip, None)
                continue
            connected = all(self.hears(x, y) for i, x in enumerate(rs) for y in rs[i + 1:])
            if not connected:
                self._dual_since[vip] = t  # allowed while they cannot hear each other
                continue
            since = self._dual_since.setdefault(vip, t)
            if t - since > self.fencing_window_ns:
                self.violation(f"{[r.name for r in rs]} all hold {vip} for {(t - since) / S:.3f}s "
                               f"(fencing window {self.fencing_window_ns / S:g}s)")
                self._dual_since[vip] = t  # report once a window

    @staticmethod
    def effects_held(r: SimRouter, svc: SimService) -> bool:
        return bool(svc.owed or (svc.name == "pulse" and r.reconcile_due) or any(
            i[0] == svc.name and i[5] is not None for i in (*r.outbox, *r.held)))

    def unit_roles(self) -> dict[str, dict[str, str]]:
        """Each election unit (failover group) -> each router's role in it (DOWN: the host is)."""
        roles = self.roles()
        units = [u.name for u in _settings_from_model(self.config, next(iter(self.routers))).units]
        out: dict[str, dict[str, str]] = {u: {} for u in units}
        for n, r in self.routers.items():
            svc = r.services.get("pulse")
            configured = r.up and svc is not None and svc.state.settings is not None
            for u in units:
                out[u][n] = svc.state.units[u].role if configured and u in svc.state.units else roles[n]
        return out

    def check_settled(self) -> None:
        if self.duration - self.faults_end < self.settle:
            return
        roles = self.roles()
        holders: dict[str, str] = {}  # unit -> its active router
        for unit, by_router in sorted(self.unit_roles().items()):
            active = [n for n, role in by_router.items() if role == "ACTIVE"]
            # a router that stepped down after a restart loop is out until someone starts it again
            others = {n: role for n, role in by_router.items() if role != "ACTIVE" and
                      not (role == "DOWN" and self.routers[n].stepped_down)}
            if len(active) != 1 or any(role != "BACKUP" for role in others.values()):
                self.violation(f"not settled after the faults stopped: roles {roles}"
                               + (f" (group {unit}: {by_router})" if self.grouped else ""))
                return
            holders[unit] = active[0]
        for r in self.routers.values():  # liveness: after settling, every router hears every other one
            pulse = r.services.get("pulse")
            if not r.up or pulse is None:
                continue
            deaf = [n for n, peer in pulse.state.peers.items() if self.routers[n].up and
                    (not peer.alive or self.t - self.heard.get((r.name, n), -self.deadtime) > self.deadtime)]
            if deaf:
                self.violation(f"{r.name} does not hear {deaf} after the faults stopped")
        for unit, name in holders.items():
            self._check_holder(unit, self.routers[name])

    def _check_holder(self, unit: str, holder: SimRouter) -> None:
        """After settling: what the active router of ``unit`` must run, announce and program."""
        pulse = holder.services["pulse"].state
        vips = {v.address for v in pulse.units[unit].cfg.vips}
        groups = set(pulse.units[unit].cfg.groups)
        for name in self.fos:  # a killed failover service made its router give up: it runs again
            if not self.fos_running[holder.name].get(name, False):
                self.violation(f"the active router {holder.name} does not run failover service {name} "
                               "after the faults stopped")
            for other in self.routers.values():
                if other is not holder and self.fos_running[other.name].get(name, False):
                    self.violation(f"failover service {name} runs on {other.name} too (not active)")
        for vip in sorted(vips & set(holder.vips)):  # once an advisory; an invariant since pulse re-announces on late news
            if self.arp_owner.get(vip) != holder.name:
                self.violation(f"clients send {vip} to {self.arp_owner.get(vip)} (its last gratuitous ARP) "
                               f"after the faults stopped, the active router is {holder.name}")
        if not {"nanny", "lvsd", "ipvs"} <= set(self.core_names) or "nanny" in holder.abandoned:
            return  # (nanny abandoned: no health checks, the table stays as it was)
        from lvsbus_services.lvsd.core import service_key

        healthy = {n for n, mode in self.server_mode.items() if mode == "up"}
        for r in (holder,):  # the backup's table is left as it was (lvsd stopped there)
            for vs in self.config.virtual_services:
                if not vs.active or (vs.group or "default") not in groups:
                    continue
                entry = r.kernel.get(service_key(vs))
                have = sorted(d.address for d in entry.dests.values() if d.weight > 0) if entry is not None else None
                want = sorted(rs.address for rs in vs.servers if rs.active and rs.name in healthy)
                if have != want:
                    self.violation(f"{r.name}'s kernel table has {have} for {vs.name}, the healthy real servers "
                                   f"are {want}")

    def check_logs(self) -> None:
        """No event lost or reordered: every log reads back contiguous from 1 with the same bytes."""
        for r in self.routers.values():
            digest = hashlib.blake2b(digest_size=16)
            expect = 1
            for seq, body in LogReader(r.log_dir).read():
                if seq != expect:
                    self.violation(f"{r.name}'s log jumps from seq {expect - 1} to {seq}")
                    break
                digest.update(body)
                expect += 1
            if expect - 1 != r.count or digest.digest() != r.digest.digest():
                self.violation(f"{r.name}'s log holds {expect - 1} events, the broker wrote {r.count} "
                               f"(or their bytes differ)")
            # write-ahead: every effect that ran is in the log, as its service's output for its input
            if r.executed:
                logged = set()
                for _seq, body in LogReader(r.log_dir).read():
                    rec = msgpack.unpackb(body, raw=False, strict_map_key=False)
                    if rec[8] is not None:
                        logged.add((rec[3], rec[8], rec[4], msgpack.packb(rec[9], use_bin_type=True)))
                missing = [x for x in r.executed if x not in logged]
                if missing:
                    svc, cause, type_, _p = missing[0]
                    self.violation(f"{r.name}: {len(missing)} effect(s) ran without their record in the log, "
                                   f"the first {svc}'s {type_} for input #{cause}")


# ---------------------------------------------------------------------------------------------
# running seeds, shrinking


def run_seed(seed: int, log_root: str | None = None, faults: list[Fault] | None = None,
             verify: bool = True, cluster: Callable[..., Cluster] | None = None, **kw: Any) -> SimResult:
    """One seed's run (``cluster``: the Cluster class, ``Cluster`` unless given: scale-out's is
    ``lvsbus_tools.simulate_scaleout.ScaleoutCluster``)."""
    keep = log_root is not None
    root = log_root if keep else tempfile.mkdtemp(prefix=f"lvsbus-sim-{seed}-")
    try:
        res = (cluster or Cluster)(seed, faults=faults, log_root=root, **kw).run(verify=verify)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    if not keep:
        res.logs = {n: "" for n in res.logs}
    return res


def shrink(seed: int, faults: list[Fault], fails: Callable[[list[Fault]], bool] | None = None,
           **kw: Any) -> list[Fault]:
    """The shortest sub-schedule of ``faults`` that still fails (greedy delta debugging: drop
    halves, then quarters..., then single faults, while the failure reproduces)."""
    if fails is None:
        def fails(fs: list[Fault]) -> bool:
            return not run_seed(seed, faults=fs, **kw).ok
    cur = list(faults)
    n = 2
    while len(cur) >= 1:
        chunk = max(1, len(cur) // n)
        removed = False
        for i in range(0, len(cur), chunk):
            trial = cur[:i] + cur[i + chunk:]
            if trial != cur and fails(trial):
                cur = trial
                removed = True
                break
        if removed:
            n = max(2, n - 1)
            continue
        if chunk == 1:
            break
        n = min(len(cur), n * 2)
    return cur


def sweep(seeds: range | list[int], **kw: Any) -> list[SimResult]:
    return [run_seed(s, **kw) for s in seeds]


# ---------------------------------------------------------------------------------------------
# golden incidents: fixed scenarios whose logs are committed under tests/fixtures/logs

GOLDEN: dict[str, dict] = {
    # the active router's host dies (VIPs and IPVS table gone with it); the backup takes over after
    # deadtime and fences it; the old active boots 6 s later as BACKUP and preempts (priority 200)
    "failover_after_crash": {"seed": 101, "faults": [Fault(8 * S, "router_crash", "lvs1", 6 * S)],
                             "duration": 22 * S},
    # both links between the routers are cut: both are active (split brain, allowed while they
    # cannot hear each other); on heal the lower one steps down at the first heartbeat it hears
    "partition_heals": {"seed": 102, "faults": [Fault(8 * S, "link_cut", "lvs1-lvs2/public", 6 * S),
                                                Fault(8 * S, "link_cut", "lvs1-lvs2/private", 6 * S)],
                        "duration": 20 * S},
    # rs2's checks pass and fail in turn (FALLING/UP, never three failures in a row: stays in the
    # table), rs3 refuses connections for 6 s (DOWN, removed, back after two passes)
    "real_server_flap": {"seed": 103, "faults": [Fault(8 * S, "server_flap", "rs2", 8 * S),
                                                 Fault(9 * S, "server_fail", "rs3", 6 * S)],
                         "duration": 22 * S},
    # service = fos: lvs1's failover service is killed; its checks fail for timeout (3 s), lvs1 gives
    # up (stop_cmd, VIPs released, priority 0 for reentry), lvs2 takes over and runs start_cmd;
    # after reentry (6 s) lvs1 preempts back and runs start_cmd again
    "fos_service_killed": {"seed": 105, "faults": [Fault(10 * S, FOS_KILL, "lvs1")], "duration": 26 * S,
                           "fos": True},
    # an old log: written when bus.client_joined was version 1 (subscriptions comma-joined)
    "old_client_joined_v1": {"seed": 104, "faults": [], "duration": 6 * S, "client_joined_version": 1},
}


def write_golden(name: str, root: str) -> SimResult:
    spec = dict(GOLDEN[name])
    seed = spec.pop("seed")
    faults = spec.pop("faults")
    dest = os.path.join(root, name)
    shutil.rmtree(dest, ignore_errors=True)
    res = Cluster(seed, faults=faults, log_root=dest, **spec).run(verify=True)
    for path in res.logs.values():  # the writer's lock file is no part of the log
        lock = os.path.join(path, ".lock")
        if os.path.exists(lock):
            os.unlink(lock)
    return res
