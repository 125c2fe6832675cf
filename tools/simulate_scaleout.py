"""Scale-out in the simulator: N active routers, their BGP speakers, an upstream router's ECMP table.

    from lvsbus_tools.simulate_scaleout import ScaleoutCluster
    result = ScaleoutCluster(seed=7, routers=3).run()      # a SimResult, as Cluster's

``ScaleoutCluster`` is ``Cluster`` (tools/simulate.py) with ``[scaleout]`` in the config: every
router runs the same cores as a real ``lvsbus router`` in scale-out, the bgp core among them (the
product's decision code: what to announce, drain or withdraw, from recorded inputs), and this
module simulates what those cores do not see:

* each router's BGP speaker (BIRD, as ``services/bgp/shell.py`` drives it): started by the bgp
  service when it is not running (``bgp.speaker_started``, ``adopted`` when an earlier run of the
  service left it running: it outlives a crash of the service), given each ``bgp.set_routes`` a
  few ms later (``bgp.routes_applied``), stopped when the router stops (a graceful stop's bgp
  service stops last), gone with a host crash;
* its BGP session to the upstream router: established ``CONNECT_NS`` after the speaker starts (or
  after a flap), reported by the shell's watch (``bgp.session_changed``); closed at once when the
  speaker stops or is killed (the kernel closes its TCP connection), but a crashed host is seen
  only after the detection time (BFD's, or the hold time without BFD);
* the upstream router: the routes each established session carries, and for each VIP the ECMP set
  it forwards to: the routers announcing it plainly, or, when none does, those announcing it
  with GRACEFUL_SHUTDOWN (RFC 8326: a draining router keeps its flows only while nothing better
  exists);
* the real world of a scale-out router: a real server one router cannot reach (``path_down``)
  fails that router's checks and its flows, not the others'; the kernel's IPVS table serves
  while the router's Python processes are stalled or restarting.

Fault kinds beyond Cluster's (``SCALEOUT_ONLY_KINDS``): ``session_flap`` (the router's BGP
session resets, and is established again after the fault), ``speaker_crash`` (BIRD is killed; the
shell starts it again a second later), ``bgp_drain`` (an operator's ``lvsbus bgp drain``, resumed
after the fault), ``planned_stop`` (``lvsbus router`` stopped gracefully, started again after the
fault), ``path_down`` (a router loses its path to a real server), and service crashes of the bgp
service (``service_crash`` of ``lvsN/bgp``).

Invariants (checked after every simulated instant, beside Cluster's per-router ones):

* **a VIP is announced only by routers that can serve it**: every router in the upstream's ECMP
  set for a VIP runs, holds the VIP, and has in its kernel table, for every virtual service on
  that address, a real server it can reach with a weight; a router that stops being so may stay
  in the set at most ``safety_ns`` (a crashed host: the detection time; a real server lost: the
  checks' ``fall`` failures, then lvsd, the bgp core and the speaker);
* **no VIP is left with no announcer while a router can serve it**: when the ECMP set of a VIP is
  empty while some router could serve it (it runs, its BGP session is up, it is not stopping, and
  every virtual service on the VIP has its quorum among the real servers it reaches), that lasts
  at most ``liveness_ns`` (a server coming back: ``rise`` checks, then the route);
* after the faults stop and the cluster settles: every running router is ACTIVE in every unit
  and holds every VIP, its kernel table holds exactly the healthy real servers it reaches, and
  the upstream's ECMP set for each VIP is exactly the routers that can serve it (so, with no path
  fault left, every router: the flows spread over all of them, and ``mh`` maps each to the same
  real server on every router, whose tables are then the same).

``lvsbus simulate --scaleout --seeds 0-999`` sweeps them; tests/unit/test_simulate_scaleout.py
runs a sweep and shows each invariant failing when the bgp core misbehaves.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable

from lvsbus.config import Config
from lvsbus.config.model import Check, Scaleout
from lvsbus.runtime.core import Effect
from lvsbus_services.lvsd.core import service_key
from lvsbus_tools.simulate import (
    FAULT_KINDS, MS, S, Cluster, Fault, SimRouter, SimService, generate_faults, make_config, router_names,
)

UPSTREAM = "10.0.0.254"  # the upstream router: every lvsbus router's BGP peer
CONNECT_NS = 1 * S  # a BGP session is established this long after both ends can talk
APPLY_NS = 5 * MS  # the speaker takes a route set (BIRD's configure) this long after the shell gets it
SPEAKER_RESTART_NS = 1 * S  # the shell starts a dead BIRD again 1 s later (services/bgp/shell.py)
BFD_DETECT_NS = 300 * MS  # BIRD's BFD: 100 ms x 3
SPEAKER = {"speaker": "bird", "version": "2.0.12"}

#: the fault kinds scale-out adds (see the module's docstring)
SCALEOUT_ONLY_KINDS = ("session_flap", "speaker_crash", "bgp_drain", "planned_stop", "path_down")
SCALEOUT_FAULT_KINDS = FAULT_KINDS + SCALEOUT_ONLY_KINDS


def make_scaleout_config(routers: int = 3, servers: int = 3, bfd: bool = True, drain_time: float = 1.5) -> Config:
    """``make_config`` in scale-out: every router announces two VIPs to the upstream (10.0.0.254) by
    BGP; ``web`` (10.0.0.100:80, quorum 2: a router reaching fewer than two real servers withdraws
    it) and ``api`` (10.0.0.101:443, quorum 1), both ``mh`` over the same real servers, checked
    every second (rise 2, fall 2)."""
    base = make_config(routers, servers)
    check = Check(interval=1.0, timeout=0.5, rise=2, fall=2)
    web = dataclasses.replace(base.virtual_services[0], scheduler="mh", quorum=min(2, servers), check=check)
    api = dataclasses.replace(web, name="api", address="10.0.0.101", label="eth0:2", port=443, quorum=1)
    return dataclasses.replace(base, virtual_services=(web, api), scaleout=Scaleout(
        local_as=65001, peer_as=65000, peers=(UPSTREAM,), bfd=bfd, drain_time=drain_time))


def generate_scaleout_faults(seed: int, routers: int = 3, servers: int = 3, start: int = 6 * S,
                             span: int = 20 * S) -> list[Fault]:
    """The seed's schedule of Cluster's kinds, and from dice of their own 1..3 faults of scale-out's
    kinds (a bgp service crash among them), each over by ``start + span``."""
    out = generate_faults(seed, routers, start, span, kinds=FAULT_KINDS, servers=servers)
    rng = random.Random(seed * 48271 + 11)
    names = router_names(routers)
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(SCALEOUT_ONLY_KINDS + ("bgp_crash",))
        at = start + rng.randrange(0, span - S, 10 * MS)
        duration = min(rng.randrange(S // 2, 8 * S, 10 * MS), start + span - at)
        target = rng.choice(names)
        if kind == "path_down":
            target = f"{target}/rs{rng.randrange(servers) + 1}"
        elif kind == "bgp_crash":
            kind, target, duration = "service_crash", f"{target}/bgp", min(rng.randrange(S // 10, 3 * S, 10 * MS), duration)
        out.append(Fault(at, kind, target, duration))
    return sorted(out)


class SimSpeaker:
    """A router's BGP speaker (BIRD) and its session to the upstream."""

    __slots__ = ("alive", "gen", "routes", "session", "flaps", "stopped_by_router")

    def __init__(self) -> None:
        self.alive = False
        self.gen = 0  # its run (a callback of an earlier run is stale)
        self.routes: dict[str, str] = {}  # address -> announce | drain: what it announces
        self.session = False  # established with the upstream
        self.flaps = 0  # session_flap faults holding the session down


class ScaleoutCluster(Cluster):
    """Cluster with ``[scaleout]``: the bgp core on every router, its speaker, the upstream's ECMP."""

    def __init__(self, seed: int, routers: int = 3, servers: int = 3, faults: list[Fault] | None = None,
                 config: Config | None = None, **kw: Any) -> None:
        if config is None:
            config = make_scaleout_config(routers, servers)
        assert config.scaleout is not None, "ScaleoutCluster needs a config with [scaleout]"
        self._servers = servers
        super().__init__(seed, routers=routers, servers=servers, faults=faults, config=config, **kw)
        so = config.scaleout
        self.detect_ns = BFD_DETECT_NS if so.bfd else so.hold_time * S
        self.drain_ns = int(so.drain_time * S)
        self.speakers = {n: SimSpeaker() for n in self.routers}
        self.adj: dict[str, dict[str, str]] = {}  # the upstream: router -> the routes its session carries
        self.adj_gen = {n: 0 for n in self.routers}  # the upstream's session with each router, by run
        self.path_down: dict[tuple[str, str], int] = {}  # (router, real server) -> faults holding it
        self.stopping: dict[str, int] = {}  # router -> its planned stop's run (broker_runs)
        self.drained_by_fault: set[str] = set()
        self.start_after_stop: set[str] = set()  # a planned stop's end came before the router had stopped
        checks = [rs.check or vs.check for vs in config.virtual_services for rs in vs.servers]
        worst = max(checks, key=lambda c: c.interval * max(c.fall, c.rise) + c.timeout)
        self.safety_ns = max(self.detect_ns, int((worst.interval * worst.fall + worst.timeout) * S)) + S
        self.liveness_ns = int((worst.interval * (worst.rise + 1) + worst.timeout) * S) + CONNECT_NS + S
        self._bad_since: dict[tuple[str, str], int] = {}  # (vip, router) announced, cannot serve, since
        self._orphan_since: dict[str, int] = {}  # vip with no announcer while a router could serve it, since
        self.vip_services: dict[str, list] = {}  # VIP -> its active virtual services
        self.keys = {vs.name: service_key(vs) for vs in config.virtual_services}  # -> the kernel's key
        for vs in config.virtual_services:
            if vs.active:
                self.vip_services.setdefault(vs.address, []).append(vs)
        self.ecmp_changes = 0
        # the longest a router stayed in a VIP's ECMP set unable to serve it, and a VIP stayed with
        # no announcer while a router could serve it (bench and docs: how far from the bounds)
        self.worst_unservable_ns = 0
        self.worst_orphan_ns = 0

    # -- the schedule ---------------------------------------------------------------------------
    def _fault_schedule(self, seed: int, routers: int, faults: list[Fault] | None) -> list[Fault]:
        if faults is not None:
            return sorted(faults)
        return generate_scaleout_faults(seed, routers, self._servers)

    def _set_timers(self, fencing_window_ns: int | None, settle: int | None, duration: int | None) -> None:
        super()._set_timers(fencing_window_ns, settle, duration)
        if settle is None:  # health too must settle: a server back needs its rise checks, then the route
            extra = 12 * S
            self.settle += extra
            if duration is None:
                self.duration += extra

    # -- the world as a router sees it ---------------------------------------------------------
    def server_seen(self, r: SimRouter, server: str) -> str:
        return "down" if self.path_down.get((r.name, server)) else super().server_seen(r, server)

    # -- the bgp shell and its speaker ----------------------------------------------------------
    def shell_started(self, r: SimRouter, svc: SimService, pid: int) -> None:
        if svc.name != "bgp":
            return
        sp = self.speakers[r.name]
        adopted = sp.alive  # BIRD outlived an earlier run of the service
        if not sp.alive:
            self._speaker_start(r)
        self.publish(r, "bgp", "bgp.speaker_started", {**SPEAKER, "pid": 7000 + sp.gen, "epoch": r.clock.mono(self.t),
                                                         "adopted": adopted})
        self._report_session(r)

    def _speaker_start(self, r: SimRouter) -> None:
        sp = self.speakers[r.name]
        sp.alive, sp.routes, sp.session = True, {}, False
        sp.gen += 1
        self._at(self.t + CONNECT_NS, "bgp", r.name, "connect", sp.gen)

    def _speaker_stop(self, r: SimRouter, crash: bool) -> None:
        """The speaker stops (its TCP session closes: the upstream drops its routes at once) or
        its host dies (seen after the detection time)."""
        sp = self.speakers[r.name]
        was = sp.session
        sp.alive, sp.routes, sp.session = False, {}, False
        sp.gen += 1
        if was:
            self._upstream_drop(r.name, self.detect_ns if crash else MS)

    def _upstream_drop(self, name: str, after: int) -> None:
        self._at(self.t + after, "bgp", name, "drop", self.adj_gen[name])

    def _report_session(self, r: SimRouter) -> None:
        """The shell's watch: the session's state, published while the bgp service runs."""
        svc = r.services.get("bgp")
        if r.up and svc is not None and svc.up:
            up = self.speakers[r.name].session
            self.publish(r, "bgp", "bgp.session_changed", {"peer": UPSTREAM, "state": "up" if up else "down",
                                                           "info": "Established" if up else "Active"})

    def execute_other(self, r: SimRouter, svc: SimService, eff: Effect) -> None:
        if eff.type == "bgp.set_routes":
            self._at(self.t + APPLY_NS, "bgp", r.name, "apply", r.shell_gen.get("bgp", 0), eff.payload)

    def _on_bgp(self, kind: str, args: tuple) -> None:
        name, what = args[0], args[1]
        r, sp = self.routers[name], self.speakers[name]
        if what == "apply":  # the shell hands the speaker the route set (services/bgp/shell.py)
            svc = r.services["bgp"]
            if not (r.up and svc.up and r.shell_gen.get("bgp") == args[2]):
                return
            if self._frozen(r, kind, args):
                return
            p = args[3]
            if sp.alive:
                sp.routes = {x["address"]: x["state"] for x in p["routes"]}
                if sp.session:
                    self._upstream_set(name, dict(sp.routes))
                self.publish(r, "bgp", "bgp.routes_applied", {"version": p["version"], "ok": True, "error": ""})
            else:
                self.publish(r, "bgp", "bgp.routes_applied", {"version": p["version"], "ok": False,
                                                              "error": "bird: control socket: connection refused"})
            self.drain(r)
        elif what == "connect":  # the session comes up, if nothing holds it down
            if sp.alive and sp.gen == args[2] and not sp.session and not sp.flaps and r.up:
                sp.session = True
                self.adj_gen[name] += 1
                self._upstream_set(name, dict(sp.routes))
                self._report_session(r)
                self.drain(r)
        elif what == "drop":  # the upstream sees the session gone
            if self.adj_gen[name] == args[2] and name in self.adj:
                del self.adj[name]
                self.ecmp_changes += 1
        elif what == "restart":  # the shell starts a dead BIRD again (the same shell run)
            svc = r.services["bgp"]
            if r.up and svc.up and r.shell_gen.get("bgp") == args[2] and not sp.alive:
                self._speaker_start(r)
                self.publish(r, "bgp", "bgp.speaker_started", {**SPEAKER, "pid": 7000 + sp.gen,
                                                                 "epoch": r.clock.mono(self.t), "adopted": False})
                self.drain(r)
        elif what == "stopped":  # a planned stop: pulse has released the VIPs; the router exits
            if r.up and r.broker_runs == args[2] and self.stopping.get(name) == args[2]:
                self._router_exits(r)

    def _upstream_set(self, name: str, routes: dict[str, str]) -> None:
        if self.adj.get(name) != routes:
            self.adj[name] = routes
            self.ecmp_changes += 1

    def ecmp(self, vip: str) -> list[str]:
        """The upstream's nexthops for ``vip``: the routers announcing it plainly, else those
        draining (GRACEFUL_SHUTDOWN: least preferred, used only when nothing else is there)."""
        plain = sorted(n for n, routes in self.adj.items() if routes.get(vip) == "announce")
        return plain or sorted(n for n, routes in self.adj.items() if routes.get(vip) == "drain")

    # -- the router's life ----------------------------------------------------------------------
    def crash_router(self, r: SimRouter) -> None:
        super().crash_router(r)
        self._speaker_stop(r, crash=True)
        self.stopping.pop(r.name, None)

    def step_down(self, r: SimRouter, reason: str) -> None:
        super().step_down(r, reason)
        self._speaker_stop(r, crash=False)  # the bgp service stops last, BIRD with it

    def _router_exits(self, r: SimRouter) -> None:
        """The end of a planned stop (``Supervisor._shutdown`` then ``_stop_all``): what VIPs are left
        released, every service stopped, the bgp service last, BIRD with it; the host stays up
        (its kernel table as it was)."""
        me = self.config.router(r.name)
        from lvsbus.config.derive import config_vips

        for v in config_vips(self.config, me.device if me else None):
            r.vips.pop(v.address, None)
        for svc in r.services.values():
            if svc.up:
                self.stop_service(r, svc)
        self._speaker_stop(r, crash=False)
        r.up = False
        r.queue.clear()
        r.broker_up = False
        r.crash_in = None
        r.outbox, r.held, r.pending_items, r.reconcile_due = [], [], [], False
        r.close_log()
        self.stopping.pop(r.name, None)
        if r.name in self.start_after_stop:
            self.start_after_stop.discard(r.name)
            self._at(self.t + 10 * MS, "boot", r.name)

    # -- scale-out's faults -------------------------------------------------------------------
    def _session_flap(self, f: Fault, begin: bool) -> None:
        r, sp = self.routers[f.target], self.speakers[f.target]
        if begin:
            sp.flaps += 1
            if sp.session:
                sp.session = False
                self._upstream_drop(f.target, MS)  # a reset: the upstream drops the session's routes
                self._report_session(r)
                self.drain(r)
        else:
            sp.flaps = max(0, sp.flaps - 1)
            if not sp.flaps and sp.alive:
                self._at(self.t + CONNECT_NS, "bgp", f.target, "connect", sp.gen)

    def _speaker_crash(self, f: Fault, begin: bool) -> None:
        r, sp = self.routers[f.target], self.speakers[f.target]
        if begin and r.up and sp.alive:
            self._speaker_stop(r, crash=False)
            self._report_session(r)
            svc = r.services["bgp"]
            if svc.up:
                self._at(self.t + SPEAKER_RESTART_NS, "bgp", r.name, "restart", r.shell_gen.get("bgp", 0))
            self.drain(r)

    def _bgp_drain(self, f: Fault, begin: bool) -> None:
        r = self.routers[f.target]
        if not r.up or (not begin and f.target not in self.drained_by_fault):
            return
        (self.drained_by_fault.add if begin else self.drained_by_fault.discard)(f.target)
        self.publish(r, "router", "operator.bgp_drain", {"action": "drain" if begin else "resume",
                                                         "by": "operator", "via": "cli", "reason": "maintenance"})
        self.drain(r)

    def _planned_stop(self, f: Fault, begin: bool) -> None:
        r = self.routers[f.target]
        if begin and r.up and r.name not in self.stopping and not r.stepped_down:
            self.stopping[r.name] = r.broker_runs
            self.publish(r, "router", "router.shutdown_requested", {"reason": "planned stop (SIGTERM)", "graceful": True})
            self.drain(r)
            # the supervisor waits for pulse, which serves on drain_time + 1 s (its stop_at)
            self._at(self.t + self.drain_ns + S + 10 * MS, "bgp", r.name, "stopped", r.broker_runs)
        elif not begin and r.name in self.stopping:
            self.start_after_stop.add(r.name)  # asked to start while it is still stopping: once it has
        elif not begin and not r.up and not r.stepped_down:
            self.boot(r)  # started again (the same host: its clock goes on)

    def _path_down(self, f: Fault, begin: bool) -> None:
        rname, server = f.target.split("/")
        key = (rname, server)
        self.path_down[key] = self.path_down.get(key, 0) + (1 if begin else -1)
        if not self.path_down[key]:
            del self.path_down[key]

    def boot(self, r: SimRouter) -> None:
        self.drained_by_fault.discard(r.name)  # an operator's drain lasts until the router restarts
        super().boot(r)

    FAULT_HANDLERS: dict[str, Callable[[Cluster, Fault, bool], None]] = {
        **Cluster.FAULT_HANDLERS, "session_flap": _session_flap, "speaker_crash": _speaker_crash,  # type: ignore[dict-item]
        "bgp_drain": _bgp_drain, "planned_stop": _planned_stop, "path_down": _path_down,  # type: ignore[dict-item]
    }
    EVENT_HANDLERS: dict[str, Callable[[Cluster, str, tuple], None]] = {
        **Cluster.EVENT_HANDLERS, "bgp": _on_bgp,  # type: ignore[dict-item]
    }

    # -- ground truth -------------------------------------------------------------------------
    def _reaches(self, r: SimRouter, address: str, strict: bool) -> bool:
        """Whether ``r``'s flows to the real server at ``address`` are answered (``strict``: and its
        checks all pass: not flapping, not slow)."""
        server = self.server_by_address.get(address, "")
        mode = self.server_seen(r, server)
        return mode == "up" if strict else mode != "down"

    def servable(self, r: SimRouter, vip: str) -> bool:
        """``r`` answers flows to ``vip`` now: it runs (the kernel serves while its Python processes
        stall), holds the VIP, and its kernel table has, for every virtual service on it, a real
        server it reaches with a weight."""
        if not r.up or vip not in r.vips:
            return False
        for vs in self.vip_services.get(vip, ()):
            entry = r.kernel.get(self.keys[vs.name])
            if entry is None or not any(d.weight > 0 and self._reaches(r, d.address, False)
                                        for d in entry.dests.values()):
                return False
        return True

    def can_serve(self, r: SimRouter, vip: str) -> bool:
        """``r`` should be announcing ``vip``: it runs, is not stopping or drained, its BGP session
        is up, and every virtual service on the VIP has its quorum among the real servers it
        reaches (by their configured weights)."""
        if not r.up or r.stepped_down or r.name in self.stopping or r.name in self.drained_by_fault:
            return False
        if not self.speakers[r.name].session:
            return False
        for vs in self.vip_services.get(vip, ()):
            weight = sum(rs.weight for rs in vs.servers if rs.active and self._reaches(r, rs.address, True))
            if weight < vs.quorum:
                return False
        return True

    # -- invariants -----------------------------------------------------------------------------
    def check_vips(self) -> None:
        super().check_vips()  # per router: it holds a unit's VIPs if and only if it is ACTIVE there
        t = self.t
        for vip in self.vip_services:
            hops = self.ecmp(vip)
            for name in self.routers:
                key = (vip, name)
                if name in hops and not self.servable(self.routers[name], vip):
                    since = self._bad_since.setdefault(key, t)
                    self.worst_unservable_ns = max(self.worst_unservable_ns, t - since)
                    if t - since > self.safety_ns:
                        self.violation(f"the upstream sends {vip} to {name}, which cannot serve it, for "
                                       f"{(t - since) / S:.3f}s (allowed {self.safety_ns / S:g}s)")
                        self._bad_since[key] = t  # once a window
                else:
                    self._bad_since.pop(key, None)
            able = [n for n, r in self.routers.items() if self.can_serve(r, vip)]
            if hops or not able:
                self._orphan_since.pop(vip, None)
                continue
            since = self._orphan_since.setdefault(vip, t)
            self.worst_orphan_ns = max(self.worst_orphan_ns, t - since)
            if t - since > self.liveness_ns:
                self.violation(f"no router announces {vip} for {(t - since) / S:.3f}s while {able} could serve it "
                               f"(allowed {self.liveness_ns / S:g}s)")
                self._orphan_since[vip] = t

    def _serving_now(self) -> bool:
        """The clients: every flow is answered when each VIP has nexthops and every one serves."""
        for vip in self.vip_services:
            hops = self.ecmp(vip)
            if not hops or not all(self.servable(self.routers[n], vip) for n in hops):
                return False
        return True

    def check_settled(self) -> None:
        if self.duration - self.faults_end < self.settle:
            return
        roles = self.unit_roles()
        running = [n for n, r in self.routers.items() if not r.stepped_down]
        for unit, by_router in sorted(roles.items()):
            bad = {n: role for n, role in by_router.items() if n in running and role != "ACTIVE"}
            if bad:
                self.violation(f"not settled after the faults stopped: in scale-out every router is ACTIVE, "
                               f"roles {by_router}")
                return
        healthy = {n for n, mode in self.server_mode.items() if mode == "up"}
        for name in running:
            r = self.routers[name]
            if "nanny" in r.abandoned:
                continue
            for vs in self.config.virtual_services:
                if not vs.active:
                    continue
                entry = r.kernel.get(service_key(vs))
                have = sorted(d.address for d in entry.dests.values() if d.weight > 0) if entry is not None else None
                want = sorted(rs.address for rs in vs.servers if rs.active and rs.name in healthy
                              and not self.path_down.get((name, rs.name)))
                if have != want:
                    self.violation(f"{name}'s kernel table has {have} for {vs.name}, the healthy real servers "
                                   f"it reaches are {want}")
        for vip in self.vip_services:
            want = sorted(n for n in running if self.can_serve(self.routers[n], vip))
            if self.ecmp(vip) != want:
                self.violation(f"after the faults stopped the upstream sends {vip} to {self.ecmp(vip)}, "
                               f"the routers that can serve it are {want}")


def run_scaleout_seed(seed: int, log_root: str | None = None, faults: list[Fault] | None = None,
                      verify: bool = True, **kw: Any) -> Any:
    """``run_seed`` for a scale-out cluster (3 routers unless ``routers`` says otherwise)."""
    from lvsbus_tools.simulate import run_seed

    return run_seed(seed, log_root=log_root, faults=faults, verify=verify, cluster=ScaleoutCluster, **kw)
