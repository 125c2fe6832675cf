"""The I/O shell's engine: runs one pure core on the bus, with timers, effects and snapshots.

    bus (log order) --> core.decide --> outputs published (source = core, cause = input seq)
                                    \\-> shell executes each effect (execute callback)
    core.next_deadline --> a timer --> ``timer.fired`` published --> back through the bus

Write-ahead: the outputs of a delivered batch of inputs go to the broker as one batch, and their
effects run only once the broker says that batch is durable in the log (one group commit, ~1 ms).
So an effect that ran is always in the log; a crash before the acknowledgement leaves the outputs
unrecorded and their effects not run: a broker that restarts gets them again (the client finds in
the log what the old broker wrote and sends the rest, see ``AsyncBusClient``), a service that
restarts recomputes them (below). While it waits, the service holds its effects and its next
inputs; a stop request ends the wait without running them.

Restart: the runtime loads the core's latest snapshot (taken at a seq), reads the log after it
and feeds it to the core. Outputs for inputs the previous run already answered (their outputs are
in the log) are recomputed but neither published nor executed again, so a restarted service does
not flap anything; the shell reconciles the world on start (``on_start``), as the applier dumps the
kernel table. Then it follows the bus live, with no gap between the two.

Config: a service runs with the config the router accepted and recorded (``service_config``): the
``config.loaded`` at ``--config-seq`` (the run start's, then the last reload the router accepted),
never what the file holds now, so a broken file whose reload was refused cannot reach a service
that restarts later. The file is read only when the log holds no config.loaded there (a service
started by hand).
"""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import structlog

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.bus import AsyncBusClient, PublishRefused
from lvsbus.config import Config, ConfigError, Issue, from_dict
from lvsbus.runtime.core import Core, Effect
from lvsbus.wire.events import Event, decodable, decode
from lvsbus.log import LogReader
from lvsbus.host.paths import StateDirs
from lvsbus.runtime.snapshot import SnapshotStore, SnapshotVersionError, decode_state, encode_state
from lvsbus.runtime.timer import TimerState

log = structlog.get_logger("lvsbus.runtime.engine")

Execute = Callable[[Effect, Event], "Awaitable[None] | None"]
PUBLISH_CHUNK = 512  # outputs a frame at most


class ServiceRuntime:
    def __init__(
        self,
        core: Core,
        dirs: StateDirs,
        execute: Execute | None = None,
        run_start_seq: int = 1,
        snapshot_every: int = 5000,
        extra_subs: tuple[str, ...] = (),
    ) -> None:
        self.core = core
        self.dirs = dirs
        self.execute = execute
        self.run_start_seq = run_start_seq
        self.snapshot_every = snapshot_every
        self.snapshots = SnapshotStore(dirs.snapshots)
        self.state: Any = None
        self.last_seq = 0  # the last event seq the core has seen (fed or skipped)
        self.answered_upto = 0  # inputs up to here were already answered by an earlier run
        self._since_snapshot = 0
        # answers computed but not recorded (stopped while waiting for the broker, or a standby's):
        # no snapshot may be taken past their inputs, or a restart could never recompute them
        self._owed = False
        self._timer: asyncio.TimerHandle | None = None
        self._timers = TimerState()
        self.subs = tuple(dict.fromkeys(core.inputs + ("timer.fired",) + extra_subs))
        self.client: AsyncBusClient | None = None
        self.on_event: Callable[[Event], None] | None = None  # shells may watch every input too
        self._pending: list[tuple[Event, list[Effect]]] = []
        self.executed_upto = 0  # the last input whose effects have run (or had none)
        self._stop: asyncio.Event | None = None
        self._fault = _FaultPoint.from_env(core.name)

    # -- start: snapshot + log ---------------------------------------------------------------

    def recover(self) -> int:
        """Restore the core from its snapshot and the log; returns the first seq to follow live."""
        self.state = None
        for seq, fmt, body in self.snapshots.valid(self.core.name):
            if seq < self.run_start_seq - 1:
                break  # of an earlier router run: this run starts from its config.loaded
            try:
                self.state = decode_state(self.core, body, fmt)
            except SnapshotVersionError as exc:  # never guessed at: an older one, or the log
                log.error("snapshot_refused", service=self.core.name, seq=seq, reason=str(exc))
                continue
            self.last_seq = seq
            log.info("restored_snapshot", service=self.core.name, seq=seq)
            break
        if self.state is None:
            self.state = self.core.initial()
            self.last_seq = self.run_start_seq - 1
        # what has the previous run of this core already answered?
        # past a corrupt record (said), so a restart is never stuck on it (issue 19)
        reader = LogReader(self.dirs.log, skip_corrupt=True, on_problem=lambda p: log.error(
            "log_record_unreadable", service=self.core.name, error=str(p)))
        tail: list[Event] = []
        skipped: list = []
        for ev in decodable(reader.read(self.last_seq + 1), skipped):
            if self.core.is_output(ev) and ev.cause is not None:
                self.answered_upto = max(self.answered_upto, ev.cause)
            tail.append(ev)
        for seq, exc in skipped:  # never delivered live either: skipped, said by seq (docs/bus.md)
            log.warning("undecodable_record_skipped", service=self.core.name, seq=seq, reason=exc.reason,
                        detail=str(exc)[:300])
        self._pending = [(ev, effs) for ev in tail if (effs := self._feed(ev))]
        if tail:
            log.info("recovered_from_log", service=self.core.name, events=len(tail), answered_upto=self.answered_upto)
        return self.last_seq + 1

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, on_start: Callable[[], Any] | None = None,
                  go: asyncio.Event | None = None, on_caught_up: Callable[[], Any] | None = None) -> None:
        """Recover, then follow the bus. With ``go`` (a standby, see ``_standby``): fold the inputs
        as they come, publishing and executing nothing, until ``go`` is set; then start as a
        service that just recovered from the log would. ``on_caught_up`` runs once the answers
        owed from the log are recorded and their effects run: the core's state then is what the
        log says, and the shell may reconcile the world with it."""
        self._stop = stop
        from_seq = self.recover()
        self.client = AsyncBusClient(self.dirs.run, self.core.name, subs=self.subs, log_dir=self.dirs.log, from_seq=from_seq)
        await self.client.start()
        if go is not None and not await self._standby(stop, go):
            self.client.close()
            return
        if on_start is not None:
            r = on_start()
            if inspect.isawaitable(r):
                await r
        pending, self._pending = self._pending, []
        if pending:  # inputs recorded while this service was down: their answers, as one batch
            recorded = await self._record(pending)
            if recorded is None:  # stopped while waiting: nothing ran, a restart recomputes them
                self.client.close()
                return
            if recorded:
                for ev, effects in pending:
                    await self._execute(ev, effects)
        if on_caught_up is not None:
            r = on_caught_up()
            if inspect.isawaitable(r):
                await r
        self._arm_timer()
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                if not await self._bus_ready(stopper):
                    break
                await self._step(self.client.take())
                self._arm_timer()
        finally:
            stopper.cancel()
            if self._timer:
                self._timer.cancel()
            self.save_snapshot()
            self.client.close()

    async def _standby(self, stop: asyncio.Event, go: asyncio.Event) -> bool:
        """A standby: the core follows the bus (its state current, its answers kept in
        ``_pending``, no timer armed), so that starting it takes no log to fold: what ``recover``
        would read at start is folded already. Nothing is published or executed, so the log is the
        same as if the service had started at ``go`` and recovered from it. False: stopped first."""
        waiter = asyncio.ensure_future(go.wait())
        stopper = asyncio.ensure_future(stop.wait())
        log.info("standby", service=self.core.name, last_seq=self.last_seq)
        try:
            while not go.is_set() and not stop.is_set():
                await self._bus_ready(waiter, stopper)
                # what was delivered is folded even when go came in the same turn: those inputs
                # are before the start (a start_lvsd here is answered with the owed answers)
                for ev in self.client.take():  # type: ignore[union-attr]
                    effects = self._feed(ev)
                    if effects:
                        self._pending.append((ev, effects))
        finally:
            waiter.cancel()
            stopper.cancel()
        if go.is_set() and not stop.is_set():
            log.info("standby_go", service=self.core.name, last_seq=self.last_seq, answers_owed=len(self._pending))
            return True
        self.save_snapshot()
        return False

    async def _bus_ready(self, *others: asyncio.Future) -> bool:
        """Wait until the bus has events to take, or one of ``others`` is done (then False, unless
        events are ready too). Only the waiting is cancelled, never a take: a delivery that comes
        in the same loop turn as a stop or a go is still there to take (a cancelled ``recv_batch``
        lost it: lvsd's standby dropped the ``pulse.start_lvsd`` it was told to go on)."""
        assert self.client is not None
        ready = asyncio.ensure_future(self.client.wait_ready(1.0))
        done, _ = await asyncio.wait({ready, *others}, return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            return True
        ready.cancel()
        return False

    async def _step(self, evs: list[Event]) -> None:
        """One delivered batch: fold every input, record all their outputs as one batch, then (once
        durable) let the shell see each input and run its effects, in log order."""
        steps = [(ev, self._feed(ev)) for ev in evs]
        outputs = [s for s in steps if s[1]]
        unheld = self.core.unheld
        if outputs and unheld and all(eff.type in unheld for _ev, effects in outputs for eff in effects):
            # liveness only (heartbeats): recorded in one batch as usual, run without waiting for
            # its durability (a slow or full disk must not stop the heartbeat; docs/router.md)
            assert self.client is not None
            self.client.publish_durable([(eff.type, eff.payload, ev.seq) for ev, effects in outputs
                                         for eff in effects]).add_done_callback(_unheld_done)
            for ev, effects in steps:
                if self.on_event is not None:
                    self.on_event(ev)
                await self._execute(ev, effects)
                self.executed_upto = ev.seq
            return
        recorded = await self._record(outputs)
        if recorded is None:
            self._owed = True
            return  # stopped while waiting: nothing runs (a restart recomputes what is not in the log)
        for ev, effects in steps:
            if self.on_event is not None:
                self.on_event(ev)
            if recorded:
                await self._execute(ev, effects)
            self.executed_upto = ev.seq
        if self._since_snapshot >= self.snapshot_every:
            self.save_snapshot()

    async def _record(self, steps: list[tuple[Event, list[Effect]]]) -> bool | None:
        """Publish the outputs of ``steps`` as one batch and wait until it is durable. True: run
        the effects; False: the broker refused them (nothing recorded: run nothing); None: the
        service is stopping."""
        items = [(eff.type, eff.payload, ev.seq) for ev, effects in steps for eff in effects]
        if not items:
            return True
        assert self.client is not None
        # one frame for a decision step; a long backlog (answers owed after a restart) in several,
        # well under the broker's frame limit
        futs = [self.client.publish_durable(items[i:i + PUBLISH_CHUNK]) for i in range(0, len(items), PUBLISH_CHUNK)]
        fut = futs[0] if len(futs) == 1 else asyncio.gather(*futs)
        await self._fault.reach("published", steps)
        if not fut.done():
            waits = {fut}
            stopper = None
            if self._stop is not None:
                stopper = asyncio.ensure_future(self._stop.wait())
                waits.add(stopper)
            t0 = time.monotonic()
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if stopper is not None:
                stopper.cancel()
            if not fut.done():
                fut.cancel()
                log.warning("effects_not_run", service=self.core.name, outputs=len(items), cause=steps[0][0].seq,
                            reason="stopping before their record was durable")
                return None
            waited = time.monotonic() - t0
            if waited > 1.0:
                log.warning("effects_held", service=self.core.name, outputs=len(items), held_s=round(waited, 3),
                            reason="waited for the broker to record them")
        try:
            fut.result()
        except PublishRefused as exc:
            log.error("outputs_refused", service=self.core.name, outputs=len(items), cause=steps[0][0].seq,
                      error=str(exc), note="not recorded, so their effects do not run")
            return False
        await self._fault.reach("acked", steps)
        return True

    async def _execute(self, ev: Event, effects: list[Effect]) -> None:
        for i, eff in enumerate(effects):
            if self.execute is not None:
                try:
                    r = self.execute(eff, ev)
                    if inspect.isawaitable(r):
                        await r
                except Exception:  # an effect that fails must not kill the service: its shell reports it
                    log.exception("effect_failed", service=self.core.name, type=eff.type, seq=ev.seq)
            if i == 0:
                await self._fault.reach("executed", [(ev, effects)])

    def _feed(self, ev: Event) -> list[Effect]:
        if ev.seq <= self.last_seq:
            return []
        self.last_seq = ev.seq
        if not self.core.accepts(ev):
            return []
        self.state, effects = self.core.decide(self.state, ev)
        self._since_snapshot += 1  # a snapshot is taken after the step's answers are recorded (_step)
        if ev.seq <= self.answered_upto:
            return []  # already answered by the run before a restart
        return effects

    def save_snapshot(self) -> None:
        if self.state is None or self.last_seq < 1:
            return
        if self._owed or self._pending:
            # the state holds inputs whose answers are not in the log: a snapshot would hide them
            # from the next start (found by replay: lvsd stopped while its answer waited for the ack)
            log.info("snapshot_skipped", service=self.core.name, seq=self.last_seq,
                     reason="answers not recorded yet; the next start folds the log instead")
            return
        try:
            body = encode_state(self.core, self.state)
            self.snapshots.save(self.core.name, self.last_seq, body)
            self._since_snapshot = 0
        except OSError as exc:  # a full disk costs a longer restart, not the service
            log.error("snapshot_failed", service=self.core.name, error=str(exc))

    # -- time --------------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline(self.state)
        if not self._timers.arm(deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is None:
            return
        delay = max(0.0, (deadline - time.monotonic_ns()) / 1e9)
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire, deadline)

    def _fire(self, deadline: int) -> None:
        self._timer = None  # still armed for this deadline: done until the core asks for another
        if self.client is None or not self._timers.fire(deadline):
            return
        self.client.publish_nowait("timer.fired", {"service": self.core.name, "deadline_ns": deadline})

    def publish(self, type_: str, payload: dict) -> None:
        """An observation of the shell's (cause None)."""
        assert self.client is not None
        self.client.publish_nowait(type_, payload)


def _unheld_done(fut) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("unheld_outputs_refused", error=str(fut.exception()))


class _FaultPoint:
    """A deterministic fault point for crash tests (``LVSBUS_FAULT=service:effect_type:point:path``).

    When a step of ``service`` has an output of ``effect_type`` and reaches ``point`` (``published``:
    its batch sent, not acknowledged yet; ``acked``: durable, no effect run yet; ``executed``: the
    step's first effect run), the runtime writes ``path`` and waits until the test removes it (the
    test kills the broker, the service or both meanwhile). Once per ``path`` (``path.done``)."""

    def __init__(self, service: str = "", type_: str = "", point: str = "", path: str = "") -> None:
        self.service, self.type, self.point, self.path = service, type_, point, path

    @classmethod
    def from_env(cls, service: str) -> "_FaultPoint":
        spec = os.environ.get("LVSBUS_FAULT", "")
        parts = spec.split(":", 3)
        if len(parts) != 4 or parts[0] != service:
            return cls()
        return cls(*parts)

    async def reach(self, point: str, steps) -> None:
        if point != self.point or not self.path:
            return
        if not any(eff.type == self.type for _ev, effects in steps for eff in effects):
            return
        if os.path.exists(self.path + ".done"):
            return
        with open(self.path + ".done", "w") as fh:
            fh.write(point)
        with open(self.path, "w") as fh:
            fh.write(f"{self.service} {self.type} {point} {steps[0][0].seq}\n")
        log.warning("fault_point", service=self.service, type=self.type, point=point, seq=steps[0][0].seq)
        while os.path.exists(self.path):
            await asyncio.sleep(0.002)


def service_arguments(name: str, description: str, package: str = "lvsbus_services"):
    """The command line every service shares (the router starts each with these four); ``package``
    names where the service's module lives (the console is ``lvsbus_tools.web``)."""
    import argparse

    ap = argparse.ArgumentParser(prog=f"python -m {package}.{name}", description=description)
    ap.add_argument("--state-dir", required=True, help="the router's state directory")
    ap.add_argument("--config", required=True,
                    help="the router's configuration file: named in messages, read only when the log "
                         "holds no config.loaded at --config-seq (a service started by hand)")
    ap.add_argument("--run-start-seq", type=int, required=True,
                    help="seq of the router run's config.loaded: the service's state starts there")
    ap.add_argument("--config-seq", type=int, default=None,
                    help="seq of the config.loaded in force (the run's, or the last reload the router "
                         "accepted): the service runs with that config; default: --run-start-seq")
    return ap


@dataclass(frozen=True)
class ServiceConfig:
    """The configuration a service starts with: the ``config.loaded`` the router accepted and
    recorded, or (no such event in the log) the file, read and validated."""

    config: Config
    payload: dict | None  # the config.loaded payload (model, digest, path, format, local_router...); None: the file
    seq: int | None  # its seq; None when read from the file
    path: str  # the file it was read from (for messages)

    @property
    def digest(self) -> str:
        return self.payload["digest"] if self.payload is not None else ""

    @property
    def source(self) -> str:
        return f"config.loaded seq {self.seq} ({self.path})" if self.seq is not None else self.path


def config_event(dirs: StateDirs, seq: int) -> dict | None:
    """The payload of the ``config.loaded`` recorded at ``seq``; None when the log holds no such
    event there (another type, not written yet, no log, retention)."""
    try:
        for s, body in LogReader(dirs.log).read(seq, seq):
            ev = decode(body, s)
            if s == seq and ev.type == "config.loaded":
                return ev.payload
    except Exception as exc:  # no log directory, a corrupt record, SeqUnavailable: the caller falls back
        log.warning("config_event_unreadable", seq=seq, error=str(exc))
    return None


def config_in_force(dirs: StateDirs, run_start_seq: int, config_seq: int | None, path: str) -> ServiceConfig:
    """The config a service runs with. Under a router: the ``config.loaded`` at ``config_seq`` (the
    router passes the seq of the one in force: the run's, or the last reload it accepted), so a
    restarted service never depends on what the file holds now (a broken file whose reload the
    router refused stays on disk). Without ``config_seq``: the run start's. When the log holds no
    config.loaded there (a service started by hand on a bare bus), the file, read and validated.
    Raises ConfigError."""
    from lvsbus.host.configfiles import load_config as load

    seq = config_seq if config_seq is not None else run_start_seq
    payload = config_event(dirs, seq)
    if payload is None:
        log.warning("config_from_file", seq=seq, path=path,
                    reason="no config.loaded at this seq in the log: using the file")
        return ServiceConfig(load(path).config, None, None, path)
    where = f"config.loaded seq {seq} ({payload.get('path') or path})"
    try:
        cfg = from_dict(payload["model"])
    except ConfigError as exc:
        raise ConfigError([dataclasses.replace(i, file=where) for i in exc.issues]) from None
    except Exception as exc:  # a model no reader wrote (the router records to_dict of a valid config)
        raise ConfigError([Issue(key="", message=f"unusable model: {type(exc).__name__}: {exc}", file=where)]) from None
    return ServiceConfig(cfg, payload, seq, payload.get("path") or path)


def service_config(name: str, args) -> ServiceConfig | None:
    """The config of a service started with ``service_arguments``; None after one clear line on
    stderr when it cannot be used (the service then exits 2)."""
    import sys

    try:
        return config_in_force(StateDirs(args.state_dir), args.run_start_seq, args.config_seq, args.config)
    except ConfigError as exc:
        print(f"{name}: cannot use the configuration: {exc}", file=sys.stderr)
        return None
