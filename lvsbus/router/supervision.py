"""The supervisor's restart decisions, pure: time is an argument, nothing here forks, waits or sleeps.

``RestartPolicy.died(service, now)`` is asked once for every death of a service's process (the
live one, or a warm spare that died while it waited), whichever process record it was: the
history belongs to the service, so a crash-looping broker backs off and is bounded like pulse.

    deaths of the service within ``window_s`` before this one:  0    1    2    3    4    >= max_restarts
    the next process is started after (s):                      0    0.2  0.4  0.8  1.6  give up: step down

With a warm spare (broker, pulse: see lvsbus/router/supervisor.py) the service itself is back at once, by
the spare; the delay above is when the *next spare* is started. A crash loop that kills spares
faster than they are made leaves the service down until the delay ends, and ``max_restarts``
deaths within the window make the router step down: that service truly cannot come back, and a
failover to the peer is then the right outcome.

``Supervision`` holds every other decision of the supervisor, for the real router
(``lvsbus/router/supervisor.py``) and the simulated one (``tools/simulate.py``) alike: which services run
(``SERVICES``: always, only while pulse is ACTIVE, or when configured), lvsd following pulse's
``pulse.start_lvsd`` / ``pulse.stop_lvsd``, and what a restart loop does (step down, or, for nanny
under ``hard_shutdown = false``, abandon it and stay up).

The router's shell (``Supervisor._supervise``) does only the I/O: it reports deaths, starts what this
says when it says, and steps down when told.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Collection

RESTART = "restart"
GIVE_UP = "give_up"  # a restart loop: the router steps down
ABANDON = "abandon"  # a restart loop of a service the router runs on without (nanny, hard_shutdown = false)

#: when a service runs: from the start on, only while pulse is ACTIVE (lvsd: a silent standby
#: meanwhile on the real router), or when the config asks for it (metrics: ``metrics_address``;
#: alerts: ``[alerts]`` or a checker notify command, ``Config.alerts_wanted``; a change of [alerts]
#: restarts it with the new settings)
ALWAYS, WHILE_ACTIVE, CONFIGURED = "always", "active", "configured"
#: the router's services, in start order (the broker comes before them all)
SERVICES: tuple[tuple[str, str], ...] = (
    ("pulse", ALWAYS),
    ("nanny", ALWAYS),  # on the backup too, so that a new active knows the health
    ("lvsd", WHILE_ACTIVE),
    ("ipvs", ALWAYS),  # both roles: it runs the connection sync daemon as master or backup
    ("metrics", CONFIGURED),  # with metrics_address
    ("web", CONFIGURED),  # with a [web] section (the console, docs/console.md)
    ("alerts", CONFIGURED),  # with an [alerts] section (mail and notify FIFO alerts, docs/alerts.md)
    ("bgp", CONFIGURED),  # with [scaleout]: BIRD announces the VIPs (docs/scaleout.md); stopped last
)
WHEN = dict(SERVICES)
#: services whose restart loop need not step the router down (``hard_shutdown = false``)
ABANDONABLE = ("nanny",)
#: services whose restart loop never steps the router down: the router serves without them
OPTIONAL = ("web", "alerts")
#: what the router's own bus client subscribes to: pulse's lvsd orders (it starts and stops lvsd),
#: the role and pulse's VIP effects (its status)
ROUTER_SUBS = ("pulse.start_lvsd", "pulse.stop_lvsd", "router.role_changed", "pulse.take_vips", "pulse.release_vips")
#: services that keep a warm spare (a second process blocked on the service's lock; see ``on_death``)
SPARES = ("broker", "pulse")


#: what in a config (``lvsbus.config.Config``) turns each CONFIGURED service on; a change of it
#: restarts the service (a new address)
CONFIGURED_BY: dict[str, Callable[[Any], Any]] = {"metrics": lambda cfg: cfg.metrics_address, "web": lambda cfg: cfg.web,
                                                   "alerts": lambda cfg: cfg.alerts_wanted(),
                                                   "bgp": lambda cfg: cfg.scaleout}


def configured_services(cfg: Any) -> frozenset[str]:
    """The CONFIGURED services a config turns on."""
    return frozenset(name for name, on in CONFIGURED_BY.items() if on(cfg))
#: lvsd's orders, from pulse's effect events
LVSD_START, LVSD_STOP = "start", "stop"


@dataclass(frozen=True)
class RestartLimits:
    max_restarts: int = 5  # restarts within window_s; one more death is a restart loop
    window_s: float = 60.0
    backoff_base_s: float = 0.2
    backoff_max_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.window_s <= 0 or self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError(f"bad restart limits: {self}")


@dataclass(frozen=True)
class Decision:
    action: str  # RESTART, GIVE_UP or (Supervision.died) ABANDON
    delay_s: float  # RESTART: start the next process this long after the death
    attempt: int  # RESTART: restarts of this service in this run, this one included (1 = the first)
    recent: int  # deaths of this service within the window, this one included


class RestartPolicy:
    def __init__(self, limits: RestartLimits | None = None) -> None:
        self.limits = limits or RestartLimits()
        self._deaths: dict[str, deque[float]] = {}
        self._attempts: dict[str, int] = {}

    def died(self, service: str, now: float) -> Decision:
        lim = self.limits
        deaths = self._deaths.setdefault(service, deque())
        while deaths and now - deaths[0] > lim.window_s:
            deaths.popleft()
        recent = len(deaths)
        if recent >= lim.max_restarts:
            return Decision(GIVE_UP, 0.0, self._attempts.get(service, 0), recent + 1)
        delay = 0.0 if recent == 0 else min(lim.backoff_max_s, lim.backoff_base_s * 2 ** (recent - 1))
        deaths.append(now)
        self._attempts[service] = self._attempts.get(service, 0) + 1
        return Decision(RESTART, delay, self._attempts[service], recent + 1)

    def attempts(self, service: str) -> int:
        """Restarts of ``service`` so far in this run."""
        return self._attempts.get(service, 0)

    def forget(self, service: str) -> None:
        """The service was stopped on purpose (lvsd on a step-down, metrics moved by a reload): a
        later start begins a new history. The run's restart count stays."""
        self._deaths.pop(service, None)


def restarted_payload(service: str, attempt: int, exit_: str) -> dict:
    """``router.service_restarted``: the service is back (its spare took over, or a new process started)."""
    return {"service": service, "attempt": attempt, "exit": exit_[:256]}


def abandoned_payload(service: str, restarts: int, exit_: str) -> dict:
    """``router.service_abandoned``: a restart loop of a service the router runs on without."""
    return {"service": service, "restarts": restarts, "exit": exit_[:256]}


@dataclass(frozen=True)
class Death:
    """What the supervisor does about one death of a service's process (``Supervision.on_death``).

    RESTART: ``promote``: the live process died and its warm spare takes over now; ``start_at``: no
    spare took over, a new live process starts at this time, and ``restarted`` is recorded then;
    ``spare_at``: the next spare starts at this time (once the live process holds the lock).
    ``events`` are recorded now (``router.service_restarted`` when a spare took over or a spare
    died; ``router.service_abandoned`` for ABANDON). GIVE_UP: the router steps down, ``reason``.
    """

    decision: Decision
    promote: bool = False
    start_at: float | None = None
    spare_at: float | None = None
    events: tuple[tuple[str, dict], ...] = ()
    restarted: dict | None = None
    reason: str = ""

    @property
    def action(self) -> str:
        return self.decision.action


class Supervision:
    """The supervisor's decisions, pure: the restart policy, which services run, lvsd following pulse.

    ``died(service, now, hard_shutdown)``: RESTART (after ``delay_s``), GIVE_UP (step down) or
    ABANDON (nanny under ``hard_shutdown = false``, or the console: not restarted, the router stays up).
    ``on_death(service, now, spare_alive, of_spare, exit_, hard_shutdown)``: all of it for one
    death (``Death``: promote the spare, when to start a new process or the next spare, the events).
    ``lvsd_started()``: lvsd was started on an order, not as a restart: a new history.
    ``lvsd_order(type)``: on a delivered ``pulse.start_lvsd`` / ``pulse.stop_lvsd``, LVSD_START or
    LVSD_STOP (``active`` follows). ``wanted(service, configured)``: whether the service's process
    should be running now (a dead one is restarted only then).
    """

    def __init__(self, limits: RestartLimits | None = None) -> None:
        self.restarts = RestartPolicy(limits)
        self.active = False  # pulse said start_lvsd, and not stop_lvsd since

    def starts(self, configured: Collection[str] = ()) -> list[str]:
        """The services started with the router, in order (``configured``: the CONFIGURED ones the
        config turns on, ``configured_services``)."""
        return [name for name, _when in SERVICES if self.wanted(name, configured)]

    def wanted(self, service: str, configured: Collection[str] = ()) -> bool:
        when = WHEN.get(service, ALWAYS)
        return when == ALWAYS or (when == WHILE_ACTIVE and self.active) or (when == CONFIGURED and service in configured)

    def lvsd_order(self, type_: str) -> str | None:
        if type_ == "pulse.start_lvsd":
            self.active = True
            return LVSD_START
        if type_ == "pulse.stop_lvsd":
            self.active = False
            return LVSD_STOP
        return None

    def died(self, service: str, now: float, hard_shutdown: bool = True) -> Decision:
        d = self.restarts.died(service, now)
        if d.action == GIVE_UP and (service in OPTIONAL or (service in ABANDONABLE and not hard_shutdown)):
            return Decision(ABANDON, 0.0, d.attempt, d.recent)
        return d

    def on_death(self, service: str, now: float, *, spare_alive: bool = False, of_spare: bool = False,
                 exit_: str = "", hard_shutdown: bool = True) -> Death:
        """One death of ``service``'s live process (``of_spare``: of its warm spare, waiting), at
        ``now`` (the router's monotonic seconds). A live one whose spare is alive is replaced by it
        at once and the policy's delay is when the next spare starts; with no spare, a new process
        starts after the delay. ``exit_``: how it ended (``exit 3``, ``killed by SIGKILL``)."""
        d = self.died(service, now, hard_shutdown)
        if d.action == ABANDON:
            return Death(d, events=(("router.service_abandoned", abandoned_payload(service, d.recent - 1, exit_)),))
        if d.action == GIVE_UP:
            return Death(d, reason=f"restart loop: {service}")
        restarted = restarted_payload(service, d.attempt, exit_)
        promote = spare_alive and not of_spare
        if promote or of_spare:
            return Death(d, promote=promote, spare_at=now + d.delay_s, events=(("router.service_restarted", restarted),))
        return Death(d, start_at=now + d.delay_s, restarted=restarted)

    def lvsd_started(self) -> None:
        """lvsd was started on an order (the standby after a stop, or an active one with no
        standby to tell), not restarted after a death: its deaths so far no longer count."""
        self.restarts.forget("lvsd")
