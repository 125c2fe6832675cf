"""nanny's pure core: one health machine per (virtual service, real server), per failover service
(``fos/NAME``) and per tracked script of this router (``track/NAME``: ``[track.NAME]`` kind =
script, run as a program check; its moves are ``health.track_changed``), fed only by recorded
events: ``config.loaded`` and ``health.check_results`` batches.

Sans-IO: no socket, no clock, no randomness, no logging. The shell schedules and runs the checks
(the schedule is the shell's); the verdict is the core's: it folds each batch of results into the
machines and outputs ``health.real_server_up`` / ``health.real_server_down`` (and
``health.state_changed`` for the other moves), so a replay of the log sees exactly what nanny saw.

The health table is data (``HEALTH_STATES``, ``HEALTH_TRANSITIONS``) driving ONE shared
``transitions`` Machine built at import, with a single cursor model: a machine's state lives in a
small slotted ``Health`` object (~0.3 KB), and a transition is fired on the shared Machine (which
refuses anything the table does not allow) only when the state changes. The per-result fast path
(``Health.step``) only counts passes and failures: 10,000 results cost ~10-20 ms of CPU, not
10,000 triggers. ``health_fsm_dot()`` renders the table.

Counts: ``rise`` passes in a row bring a server UP after it has failed (Piranha's reentry maps
onto rise), ``fall`` failures in a row take an UP server DOWN (keepalived's retry maps onto fall).
A server with no health history (a machine that has seen no failure since it was created, reset
by a changed check or enabled again: first start, or a router restart, a new run whose cores start empty)
needs only ``initial_rise`` passes (default 1): Piranha's nanny started its count at the reentry
threshold, so one passed check put a server in, and asked for reentry only after a failure. A
server that was never UP (INIT, RISING) is DOWN at its first failure: it is not in the table
anyway, and an unreachable server should be known as DOWN at once; from then on it has history.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from transitions import Machine

from lvsbus.config import Config, ConfigError, check_port, effective_check, from_dict, server_port
from lvsbus.config.model import Check, CheckKind, FailoverService, Track, TrackKind
from lvsbus.runtime.core import Core, Effect
from lvsbus.wire.events import Event

# ---------------------------------------------------------------------------------------------
# the health FSM, as data: the one place the transition table lives

INIT, RISING, UP, FALLING, DOWN, DISABLED = "INIT", "RISING", "UP", "FALLING", "DOWN", "DISABLED"
HEALTH_STATES: tuple[str, ...] = (INIT, RISING, UP, FALLING, DOWN, DISABLED)
_LIVE = (INIT, RISING, UP, FALLING, DOWN)

#: (trigger, sources, dest, reason (health event), what fires it)
HEALTH_TRANSITIONS: tuple[tuple[str, tuple[str, ...], str, str, str], ...] = (
    ("pass_first", (INIT, DOWN), RISING, "first_check_passed", "a check passed, fewer than rise (initial_rise without history) in a row"),
    ("rise", (INIT, RISING, DOWN), UP, "checks_passed", "rise checks (initial_rise without history) passed in a row"),
    ("fail_early", (INIT, RISING), DOWN, "first_check_failed", "a check failed before the server was ever UP"),
    ("fail_first", (UP,), FALLING, "check_failing", "a check failed, fewer than fall in a row"),
    ("recover", (FALLING,), UP, "check_recovered", "a check passed before fall failures in a row"),
    ("fall", (UP, FALLING), DOWN, "checks_failed", "fall checks failed in a row"),
    ("disable", _LIVE, DISABLED, "disabled", "the config made the server or its virtual service inactive"),
    ("enable", (DISABLED,), INIT, "enabled", "the config made it active again"),
    ("reset", (RISING, UP, FALLING, DOWN), INIT, "check_changed", "a reload changed its check, address or port"),
)
_REASON = {t[0]: t[3] for t in HEALTH_TRANSITIONS}


class _Cursor:
    """The one model of the shared Machine: a transition loads a Health's state into it, fires, and
    reads the new state back. The Machine validates every move against HEALTH_TRANSITIONS."""

    state = INIT


_CURSOR = _Cursor()
MACHINE = Machine(
    model=_CURSOR,
    states=list(HEALTH_STATES),
    transitions=[{"trigger": t, "source": list(src), "dest": dst} for t, src, dst, _r, _d in HEALTH_TRANSITIONS],
    initial=INIT,
    auto_transitions=False,
)


def health_fsm_dot() -> str:
    """The health table as Graphviz dot text, from HEALTH_TRANSITIONS."""
    out = ["digraph nanny_health {", "  rankdir=LR;", '  node [shape=box, style=rounded];', "  __start [shape=point];",
           f"  __start -> {INIT};"]
    for trigger, sources, dest, _r, _doc in HEALTH_TRANSITIONS:
        for src in sources:
            out.append(f'  {src} -> {dest} [label="{trigger}"];')
    out.append("}")
    return "\n".join(out) + "\n"


class Health:
    """One (virtual service, real server) machine: its state and its counts. Small on purpose."""

    __slots__ = ("id", "virtual", "server", "address", "port", "check", "rise", "fall", "initial_rise", "state",
                 "passes", "fails", "detail", "fresh", "weight", "configured_weight")

    def __init__(self, id: str, virtual: str, server: str, address: str, port: int, check: tuple,
                 rise: int, fall: int, state: str = INIT, initial_rise: int = 1) -> None:
        self.id, self.virtual, self.server, self.address, self.port = id, virtual, server, address, port
        self.check = check  # (address, probed port, Check): a change resets the machine
        self.rise, self.fall, self.state, self.initial_rise = rise, fall, state, initial_rise
        self.passes = 0
        self.fails = 0
        self.detail = "ok"
        self.fresh = True  # no health history: no failure seen since INIT (initial_rise applies)
        self.weight: int | None = None  # the weight a dynamic_weight program gave (None: the configured)
        self.configured_weight = 1  # the real server's, from the config (a file check's number adds to it)

    def step(self, ok: bool) -> str | None:
        """Count one result; the trigger to fire, or None when the state stays (the fast path)."""
        s = self.state
        if ok:
            self.fails = 0
            self.passes += 1
            if s == UP:
                return None
            if s == FALLING:
                return "recover"
            if s == DISABLED:
                return None
            if self.passes >= (self.initial_rise if self.fresh else self.rise):
                return "rise"
            return None if s == RISING else "pass_first"
        self.passes = 0
        self.fails += 1
        if s != DISABLED:
            self.fresh = False
        if s == DOWN or s == DISABLED:
            return None
        if s == INIT or s == RISING:
            return "fail_early"
        if self.fails >= self.fall:
            return "fall"
        return "fail_first" if s == UP else None


def fire(h: Health, trigger: str) -> str:
    """Move ``h`` by ``trigger`` on the shared Machine (raises MachineError if the table forbids
    it); returns the old state."""
    old = h.state
    _CURSOR.state = old
    getattr(_CURSOR, trigger)()
    h.state = _CURSOR.state
    return old


# ---------------------------------------------------------------------------------------------
# the config -> machines


def check_id(virtual: str, server: str) -> str:
    return f"{virtual}/{server}"


#: the ``virtual`` of a failover service's machine (its id is ``fos/NAME``): with ``service = fos``
#: there is no virtual service at all, so no pair id can collide with it
FOS = "fos"


def fos_check(cfg: Config, fs: FailoverService) -> Check:
    """How a failover service is checked, as Piranha's nanny did for fos: a TCP connect (or
    send/expect when ``send`` or ``expect`` is set) to its address and port every keepalive, each
    probe given at most a keepalive; DOWN once its failures in a row span ``timeout`` seconds
    (fall = floor(timeout / keepalive) + 1: at least timeout unreachable); UP after one pass. ``reentry`` is pulse's business (how
    long a router that gave up stays out of preemption), not a rise count: see docs/config.md."""
    ka = float(cfg.heartbeat.keepalive)
    kind = CheckKind.TCP_SEND_EXPECT if (fs.send or fs.expect) else CheckKind.TCP_CONNECT
    fall = int(math.floor(float(fs.timeout) / ka + 1e-9)) + 1
    return Check(kind=kind, interval=ka, timeout=min(ka, float(fs.timeout)), rise=1, fall=fall, initial_rise=1,
                 send=fs.send, expect=fs.expect)


#: the ``virtual`` of a tracked script's machine (its id is ``track/NAME``); the validator refuses a
#: virtual service named ``track`` with a server of a tracked script's name, so ids never collide
TRACK = "track"


def track_check(t: Track) -> Check:
    """How a tracked script (``[track.NAME]``, kind = script) is run: a program check of its command
    (by /bin/sh, no ``%h``/``%p`` to fill: it has no address) every ``interval`` s, each run given at
    most ``timeout`` s, passed when it exits 0; ``rise`` passes / ``fall`` failures in a row, and one
    pass for a script that has never failed since the router started (initial_rise 1; its first
    failure is DOWN at once, see docs/config.md "Tracking")."""
    return Check(kind=CheckKind.PROGRAM, interval=float(t.interval), timeout=float(t.timeout), rise=t.rise,
                 fall=t.fall, initial_rise=1, command=t.command or "", exit_code=0)


class PlannedCheck(NamedTuple):
    """One health check nanny runs: a (virtual service, real server) pair, a failover service, or a
    tracked script of this router."""

    id: str  # check_id(virtual, server): "VIRTUAL/SERVER", "fos/NAME" or "track/NAME"
    virtual: str  # the virtual service's name (FOS for a failover service, TRACK for a tracked script)
    server: str  # the real server's (or failover service's, or tracked script's) name
    address: str  # what is checked ("" for a tracked script)
    port: int  # the real server's port in the IPVS table (0: the client's)
    probe: int  # the port the check connects to
    check: Check  # the check, the virtual's merged with the server's override
    enabled: bool  # both the virtual service and the server are active
    weight: int = 1  # the real server's configured weight (a file check's number is added to it)


def plan(cfg: Config, local: str | None = None) -> list[PlannedCheck]:
    """Every (virtual service, real server) pair of ``cfg`` (``service = lvs``) or every failover
    service (``service = fos``, id ``fos/NAME``), then, when ``local`` names this router, every
    tracked script it runs (``[track.NAME]`` kind = script that applies to it, id ``track/NAME``):
    what the core tracks and the shell checks. Pure and deterministic (config order). lvsd plans
    without ``local``: it has no use for tracked scripts."""
    out = []
    for vs in cfg.lvs_services():
        for rs in vs.servers:
            out.append(PlannedCheck(check_id(vs.name, rs.name), vs.name, rs.name, rs.address, server_port(vs, rs),
                                    check_port(vs, rs), effective_check(vs, rs), vs.active and rs.active, rs.weight))
    for fs in cfg.fos_services():
        out.append(PlannedCheck(check_id(FOS, fs.name), FOS, fs.name, fs.address, fs.port, fs.port,
                                fos_check(cfg, fs), fs.active))
    if local is not None:
        for t in cfg.tracks_of(local):
            if t.kind is TrackKind.SCRIPT:
                out.append(PlannedCheck(check_id(TRACK, t.name), TRACK, t.name, "", 0, 0, track_check(t), True))
    return out


class NannyState:
    __slots__ = ("digest", "model", "local", "config", "machines", "bad_config", "stale_results",
                 "unknown_results", "results")

    def __init__(self) -> None:
        self.digest = ""
        self.local: str | None = None  # config.loaded's local_router: which tracked scripts are ours
        self.model: dict | None = None
        self.config: Config | None = None
        self.machines: dict[str, Health] = {}
        self.bad_config = 0
        self.stale_results = 0  # results scheduled under another config (a reload in between)
        self.unknown_results = 0  # ids not in the config (a removed server)
        self.results = 0

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for h in self.machines.values():
            counts[h.state] = counts.get(h.state, 0) + 1
        return f"NannyState({self.digest[:8]} {counts})"


def _server(h: Health) -> dict:
    return {"virtual": h.virtual, "server": h.server, "address": h.address, "port": h.port}


def _change(h: Health, trigger: str, out: list) -> None:
    old = fire(h, trigger)
    reason = _REASON[trigger]
    new = h.state
    if h.virtual == FOS:  # a failover service: one event type for every move (pulse reads it)
        out.append(Effect("health.failover_changed", {
            "service": h.server, "address": h.address, "port": h.port, "old": old, "new": new, "reason": reason,
            "detail": h.detail, "count": h.passes if new in (UP, RISING) else h.fails,
        }))
    elif h.virtual == TRACK:  # a tracked script of this router: pulse reads it (docs/pulse.md, tracking)
        out.append(Effect("health.track_changed", {
            "track": h.server, "old": old, "new": new, "reason": reason, "detail": h.detail,
            "count": h.passes if new in (UP, RISING) else h.fails,
        }))
    elif new == UP:
        out.append(Effect("health.real_server_up", {**_server(h), "reason": reason, "previous": old,
                                                     "passes": h.passes, "detail": h.detail}))
    elif new == DOWN:
        out.append(Effect("health.real_server_down", {**_server(h), "reason": reason, "previous": old,
                                                       "failures": h.fails, "detail": h.detail}))
    else:
        out.append(Effect("health.state_changed", {**_server(h), "old": old, "new": new, "reason": reason,
                                                    "detail": h.detail if trigger in ("pass_first", "fail_first") else None}))


def _weight(h: Health, weight: int | None, out: list) -> None:
    previous, h.weight = h.weight, weight
    out.append(Effect("health.weight_changed", {**_server(h), "weight": weight, "previous": previous}))


class NannyCore(Core[NannyState]):
    name = "nanny"
    inputs = ("config.loaded", "health.check_results")
    outputs = frozenset({"health.real_server_up", "health.real_server_down", "health.state_changed",
                         "health.config_rejected", "health.failover_changed", "health.track_changed",
                         "health.weight_changed"})

    def initial(self) -> NannyState:
        return NannyState()

    def decide(self, state: NannyState, event: Event) -> tuple[NannyState, list[Effect]]:
        out: list[Effect] = []
        t = event.type
        if t == "health.check_results":
            self._fold(state, event.payload, out)
        elif t == "config.loaded":
            self._config(state, event.payload, out)
        return state, out

    # -- results: the hot path ------------------------------------------------------------------

    def _fold(self, st: NannyState, p: dict, out: list) -> None:
        ids = p["ids"]
        if p["digest"] != st.digest:
            st.stale_results += len(ids)
            return
        machines = st.machines
        st.results += len(ids)
        weights = p.get("weights")
        if weights:  # before the verdicts: a server coming up is programmed with its weight at once
            for hid, w in weights.items():
                h = machines.get(hid)
                if h is None or h.virtual in (FOS, TRACK):
                    continue
                if h.check[2].kind is CheckKind.FILE:  # the file's number x its weight: added to the configured
                    w = max(0, min(65535, h.configured_weight + w))
                if h.weight != w:
                    _weight(h, w, out)
        for hid, ok, detail in zip(ids, p["ok"], p["detail"]):
            h = machines.get(hid)
            if h is None:
                st.unknown_results += 1
                continue
            h.detail = detail
            if ok and h.state == UP:  # Health.step's answer for a server that stays up, inlined
                h.fails = 0
                h.passes += 1
                continue
            trigger = h.step(ok)
            if trigger is not None:
                _change(h, trigger, out)

    # -- config ---------------------------------------------------------------------------------

    def _config(self, st: NannyState, p: dict, out: list) -> None:
        try:
            cfg = from_dict(p["model"])
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            st.bad_config += 1
            out.append(Effect("health.config_rejected", {"error": str(exc)[:1024], "count": st.bad_config}))
            return
        self._apply_config(st, cfg, p["model"], p["digest"], p.get("local_router"), out)

    def _apply_config(self, st: NannyState, cfg: Config, model: dict, digest: str, local: str | None,
                      out: list | None) -> None:
        old = st.machines
        new: dict[str, Health] = {}
        for pc in plan(cfg, local):
            id_, chk, enabled = pc.id, pc.check, pc.enabled
            key = (pc.address, pc.probe, chk)
            h = old.get(id_)
            if h is None:
                h = Health(id_, pc.virtual, pc.server, pc.address, pc.port, key, chk.rise, chk.fall,
                           INIT if enabled else DISABLED, chk.initial_rise)
            else:
                h.address, h.port = pc.address, pc.port
                if h.check != key:  # keepalived: a changed check starts over; unchanged pairs keep their state
                    h.check, h.rise, h.fall, h.initial_rise = key, chk.rise, chk.fall, chk.initial_rise
                    h.passes = h.fails = 0
                    h.fresh = True
                    if h.weight is not None:  # its dynamic weight goes with the old check
                        if out is None:
                            h.weight = None
                        else:
                            _weight(h, None, out)
                    if h.state not in (INIT, DISABLED):
                        self._emit(h, "reset", out)
                if not enabled and h.state != DISABLED:
                    self._emit(h, "disable", out)
                elif enabled and h.state == DISABLED:
                    h.passes = h.fails = 0
                    h.fresh = True
                    self._emit(h, "enable", out)
            h.configured_weight = pc.weight
            new[id_] = h
        st.machines = new
        st.config, st.model, st.digest, st.local = cfg, model, digest, local

    @staticmethod
    def _emit(h: Health, trigger: str, out: list | None) -> None:
        if out is None:
            fire(h, trigger)
        else:
            _change(h, trigger, out)

    # -- snapshots --------------------------------------------------------------------------------

    def snapshot(self, st: NannyState) -> Any:
        return {
            "digest": st.digest, "model": st.model, "local": st.local,
            "counts": [st.bad_config, st.stale_results, st.unknown_results, st.results],
            "machines": [[h.id, h.state, h.passes, h.fails, h.detail, h.fresh, h.weight] for h in st.machines.values()],
        }

    def restore(self, data: Any) -> NannyState:
        st = NannyState()
        st.bad_config, st.stale_results, st.unknown_results, st.results = data["counts"]
        if data["model"] is not None:
            # a snapshot from before tracking has no "local": it planned no tracked script either
            self._apply_config(st, from_dict(data["model"]), data["model"], data["digest"], data.get("local"), None)
        for id_, state, passes, fails, detail, *rest in data["machines"]:
            h = st.machines.get(id_)
            if h is not None:
                h.state, h.passes, h.fails, h.detail = state, passes, fails, detail
                # a snapshot from before ``fresh`` was kept: only a machine still in INIT has no history
                h.fresh = bool(rest[0]) if rest else state == INIT
                h.weight = rest[1] if len(rest) > 1 else None  # older snapshots: no dynamic weights
        return st


def states(st: NannyState) -> dict[str, str]:
    """id -> state (tests, status)."""
    return {i: h.state for i, h in st.machines.items()}
