"""The bgp shell: the bgp core on the bus, and the BGP speaker it drives (docs/scaleout.md).

    python -m lvsbus_services.bgp --state-dir DIR --config FILE --run-start-seq N [--config-seq M]

On start it writes BIRD's config from ``[scaleout]`` (router ID: this router's address) and
starts BIRD (``services/bgp/speaker.py``), or adopts the BIRD an earlier run of this service
started (BIRD runs in its own session: a SIGKILLed or restarted bgp service leaves it, and its
routes, in place), then publishes ``bgp.speaker_started``; the core
answers with the whole route set. It carries out ``bgp.set_routes`` (rewrites the routes file,
``configure`` over the control socket) and reports ``bgp.routes_applied``. Every 0.5 s it reads
the sessions and publishes each change as ``bgp.session_changed``; a BIRD that died is started
again (1 s later, then 2, 4... at most 30) and announced again by ``bgp.speaker_started``; so is
one that runs but has not answered for 10 s (killed first): when, ``services/bgp/watch.py``. A
reload that changes ``[scaleout]`` rewrites ``bird.conf`` and reconfigures BIRD. On stop it stops
BIRD: the sessions close and the upstream drops this router's routes (a planned stop drains
first: the core re-announces with GRACEFUL_SHUTDOWN on ``router.shutdown_requested``, for
``drain_time``, before the supervisor stops this service).

All the decisions are the core's; the shell only runs BIRD and reports what it says.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import structlog

from lvsbus.host import logs
from lvsbus.config import Config, from_dict
from lvsbus.runtime.core import Effect
from lvsbus.wire.events import Event
from lvsbus.host.paths import StateDirs
from lvsbus.runtime.engine import ServiceRuntime, service_arguments, service_config

from .core import BgpCore
from .speaker import BgpSettings, BirdSpeaker, Route, RunningBird, SpeakerError
from .watch import SpeakerWatch

log = structlog.get_logger("bgp")
POLL_S = 0.5


def settings_of(cfg: Config, local: str) -> BgpSettings:
    so = cfg.scaleout
    router = cfg.router(local)
    if so is None or router is None:
        raise ValueError("no [scaleout] in the config, or this router is not in it")
    return BgpSettings(router_id=router.address, local_as=so.local_as, peer_as=so.peer_as, peers=so.peers,
                       hold_time=so.hold_time, bfd=so.bfd)


class BgpShell:
    def __init__(self, state_dir: str, run_start_seq: int, cfg: Config, local: str) -> None:
        self.dirs = StateDirs(state_dir).make()
        self.core = BgpCore()
        self.runtime = ServiceRuntime(self.core, self.dirs, execute=self.execute, run_start_seq=run_start_seq)
        self.local = local
        self.settings = settings_of(cfg, local)
        assert cfg.scaleout is not None
        # a relative control socket: in the state directory (several routers on one host, tests)
        ctl = os.path.join(os.path.abspath(state_dir), cfg.scaleout.control_socket)
        self.speaker: BirdSpeaker | RunningBird
        if cfg.scaleout.speaker == "bird-running":  # the operator's BIRD: neither started nor stopped
            assert cfg.scaleout.routes_file is not None  # (check-config's)
            self.speaker = RunningBird(self.settings, cfg.scaleout.routes_file, ctl)
        else:
            self.speaker = BirdSpeaker(self.settings, os.path.join(state_dir, "bgp"), ctl, stderr=sys.stderr)
        self.stop = asyncio.Event()
        self.sessions: dict[str, tuple[str, str]] = {}
        self.watch_policy = SpeakerWatch()  # when to start BIRD again, when it is hung
        self.started = False
        self.digest = ""
        self.watcher: asyncio.Future | None = None

    # -- speaker -----------------------------------------------------------------------------

    async def _start_speaker(self) -> None:
        try:
            version, pid = await asyncio.to_thread(self.speaker.start)
        except SpeakerError as exc:
            log.error("speaker_start_failed", error=str(exc), retry_in_s=self.watch_policy.not_running(time.monotonic()))
            return
        self.started = True
        self.watch_policy.started()
        log.info("speaker_started", speaker=self.speaker.name, version=version, pid=pid)
        self.runtime.publish("bgp.speaker_started", {"speaker": self.speaker.name, "version": version[:128],
                                                     "pid": pid, "epoch": time.monotonic_ns(),
                                                     "adopted": self.speaker.adopted is not None})

    async def on_start(self) -> None:
        """On the bus: start BIRD, then watch it (the watcher's restarts never race this first start)."""
        await self._start_speaker()
        self.watcher = asyncio.ensure_future(self.watch())

    async def execute(self, eff: Effect, ev: Event) -> None:
        if eff.type != "bgp.set_routes":
            return
        p = eff.payload
        routes = [Route(r["address"], r["prefixlen"], r["state"]) for r in p["routes"]]
        error = ""
        if not self.speaker.alive():
            error = "the speaker is not running (restarting)"
        else:
            try:
                await asyncio.to_thread(self.speaker.set_routes, routes)
            except SpeakerError as exc:
                error = str(exc)
        if error:
            log.warning("routes_not_applied", version=p["version"], error=error)
        else:
            log.info("routes_applied", version=p["version"], routes=len(routes), reason=p["reason"])
        self.runtime.publish("bgp.routes_applied", {"version": p["version"], "ok": not error, "error": error[:1024]})

    async def watch(self) -> None:
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), POLL_S)
                return
            except asyncio.TimeoutError:
                pass
            if not self.speaker.alive():
                if self.started:
                    log.error("speaker_died", retry_in_s=self.watch_policy.not_running(time.monotonic()))
                    self.started = False
                    for peer, (state, _info) in sorted(self.sessions.items()):
                        if state == "up":  # its sessions died with it
                            self.runtime.publish("bgp.session_changed",
                                                 {"peer": peer, "state": "down", "info": "the speaker died"})
                        self.sessions[peer] = ("down", "the speaker died")
                if self.watch_policy.start_due(time.monotonic()):
                    await self._start_speaker()
                continue
            await self._follow_config()
            asked = time.monotonic()
            try:
                sessions = await asyncio.to_thread(self.speaker.sessions)
            except SpeakerError as exc:
                log.warning("sessions_unreadable", error=str(exc))
                silent = self.watch_policy.unanswered(asked, time.monotonic())
                if silent is not None:
                    log.error("speaker_hung", silent_s=round(silent, 1))
                    await asyncio.to_thread(self.speaker.stop, 1.0)  # not alive: restarted at the next poll
                continue
            self.watch_policy.answered()
            for s in sessions:
                if self.sessions.get(s.peer, ("", ""))[0] != s.state:
                    log.info("session_changed", peer=s.peer, state=s.state, info=s.info)
                    self.runtime.publish("bgp.session_changed", {"peer": s.peer, "state": s.state, "info": s.info})
                self.sessions[s.peer] = (s.state, s.info)

    async def _follow_config(self) -> None:
        """A reload that changed [scaleout]: BIRD's config rewritten and reconfigured."""
        st = self.runtime.state
        if st is None or st.model is None or st.digest == self.digest:
            return
        self.digest = st.digest
        try:
            settings = settings_of(from_dict(st.model), self.local)
        except ValueError:
            return  # [scaleout] removed: the core withdraws everything; BIRD stays until stopped
        if settings != self.settings:
            self.settings = settings
            try:
                await asyncio.to_thread(self.speaker.reconfigure, settings)
                log.info("speaker_reconfigured", peers=list(settings.peers))
            except SpeakerError as exc:
                log.error("speaker_reconfigure_failed", error=str(exc))

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        try:
            await self.runtime.run(self.stop, on_start=self.on_start)
        finally:
            self.stop.set()
            if self.watcher is not None:
                await self.watcher
            await asyncio.to_thread(self.speaker.stop)
            log.info("speaker_stopped")
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = service_arguments("bgp", "bgp: announce the VIPs by BGP through BIRD (scale-out, docs/scaleout.md)")
    args = ap.parse_args(argv)
    logs.setup(service="bgp")
    sc = service_config("bgp", args)
    if sc is None:
        return 2
    local = sc.payload["local_router"] if sc.payload is not None else None
    if local is None:
        from lvsbus.host import netutil
        from lvsbus.config.model import ConfigError, identify_local_router

        try:
            local = identify_local_router(sc.config, netutil.local_addresses()).name
        except ConfigError as exc:
            print(f"bgp: {exc}", file=sys.stderr)
            return 2
    if sc.config.scaleout is None:
        print(f"bgp: {sc.path} has no [scaleout]: nothing to announce (docs/scaleout.md)", file=sys.stderr)
        return 2
    return asyncio.run(BgpShell(args.state_dir, args.run_start_seq, sc.config, local).main())
