"""nanny's I/O shell: runs every check of this router in one asyncio loop (uvloop when installed)
and publishes the outcomes in batches; the core (on the same bus, through ``ServiceRuntime``)
folds them into the health machines.

    python -m lvsbus_services.nanny --state-dir DIR --config FILE --run-start-seq N [--config-seq M]

* The schedule is the shell's: it is derived from the config the core is under (the
  ``config.loaded`` events in the log, restored on restart), re-planned on every reload; checks
  whose settings did not change keep their schedule.
* Results leave as ``health.check_results`` every 50 ms, or every 2,000 results, tagged with the
  config digest they were scheduled under (the core ignores a batch from another config).
* Restart (after SIGKILL too): the runtime restores the core from its snapshot and the log, so the
  machines keep their states and counts and the checks carry on: no UP server flaps.
* nanny runs on the backup router too, so that health is already known in the log when lvsd
  starts on a new active router.

The config in force is the one in the log: at start the shell checks the ``config.loaded`` the
router accepted (``--config-seq``, ``runtime.service_config``), never what ``FILE`` holds now;
``FILE`` is read only by a nanny started by hand on a log without that event.
"""
from __future__ import annotations

import asyncio
import os
import signal

import structlog
import zmq

from lvsbus.host import logs
from lvsbus.host.paths import StateDirs
from lvsbus.runtime.engine import ServiceRuntime, service_arguments, service_config

from .checks import Scheduler, new_loop, raise_nofile
from .core import NannyCore
from .schedule import FLUSH_S, ResultBatch, checks_for

log = structlog.get_logger("nanny")


class NannyShell:
    def __init__(self, state_dir: str, run_start_seq: int, checks: bool = True) -> None:
        self.dirs = StateDirs(state_dir).make()
        self.core = NannyCore()
        self.runtime = ServiceRuntime(self.core, self.dirs, run_start_seq=run_start_seq)
        self.runtime.on_event = self.on_event
        self.checks = checks
        self.stop = asyncio.Event()
        self.sched: Scheduler | None = None
        self.digest = ""
        self.batch = ResultBatch()
        self._flusher: asyncio.TimerHandle | None = None
        self.dropped = 0

    # -- results -> batches ------------------------------------------------------------------

    def on_result(self, id_: str, ok: bool, latency_us: int, detail: str, late_us: int, weight: int | None = None) -> None:
        if self.batch.add(id_, ok, latency_us, detail, late_us, weight):
            self.flush()

    def flush(self) -> None:
        if self.runtime.client is None:
            return
        payload = self.batch.take(self.digest)
        if payload is None:
            return
        try:
            self.runtime.publish("health.check_results", payload)
        except zmq.ZMQError as exc:  # back-pressure: these results are lost; the next ones count
            self.dropped += len(payload["ids"])
            log.warning("results_dropped", count=len(payload["ids"]), error=str(exc))

    def _tick(self) -> None:
        self.flush()
        self._flusher = asyncio.get_running_loop().call_later(FLUSH_S, self._tick)

    # -- the schedule, from the core's config -----------------------------------------------

    def replan(self) -> None:
        if self.sched is None or (planned := checks_for(self.runtime.state, self.digest)) is None:
            return
        self.flush()  # results scheduled under the previous config leave tagged with it
        self.digest = self.runtime.state.digest
        specs = [(pc.id, pc.address, pc.probe, pc.check) for pc in planned]
        raise_nofile(2 * len(specs) + 256)
        self.sched.set_checks(specs)
        log.info("checks_planned", checks=len(specs), digest=self.digest[:12])

    def on_event(self, ev) -> None:
        if ev.type == "config.loaded":
            self.replan()

    def on_start(self) -> None:
        states: dict[str, int] = {}
        for h in self.runtime.state.machines.values():
            states[h.state] = states.get(h.state, 0) + 1
        log.info("nanny_started", machines=len(self.runtime.state.machines), states=states, checks=self.checks)
        if self.checks:
            self.replan()
            self.sched.start()
        self._tick()

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        self.sched = Scheduler(self.on_result, loop)
        try:
            await self.runtime.run(self.stop, on_start=self.on_start)
        finally:
            self.sched.stop()
            if self._flusher is not None:
                self._flusher.cancel()
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = service_arguments("nanny", "nanny: health checks of real servers")
    ap.add_argument("--no-checks", action="store_true", help="fold results published by someone else (benchmarks)")
    args = ap.parse_args(argv)
    logs.setup(service="nanny")
    if service_config("nanny", args) is None:
        return 2
    shell = NannyShell(args.state_dir, args.run_start_seq, checks=not args.no_checks)
    loop = new_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(shell.main())
    finally:
        loop.close()
        log.info("nanny_stopped", pid=os.getpid())
