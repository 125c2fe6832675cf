"""The applier's I/O shell: carries out the core's ``ipvs.read_table`` and ``ipvs.apply`` effects
through ``lvsbus_services.ipvs.netlink`` and publishes what the kernel said.

    python -m lvsbus_services.ipvs --state-dir DIR --config FILE --run-start-seq N [--config-seq M] [--flush-unmanaged]

* start: publish ``ipvs.started``; the core answers with ``ipvs.read_table``; the shell dumps the
  kernel (``ipvs.table_read``) and the core plans the ops that make it exact (``ipvs.apply``);
* every run of accepted ops: ``ipvs.ops_applied`` {batch, first, count} (the ops are the batch's,
  in its ``ipvs.apply``: not repeated, one event a chunk rather than one an op, since 11,000 op
  events cost the broker and the applier more than the kernel's work); every refused op:
  ``ipvs.op_failed`` {op, errno, error}, in its place; every batch: ``ipvs.batch_applied``. A failed op makes the core ask for a new dump and reconcile;
* no IPVS (a kernel without IP_VS, as on this project's CI hosts): ``ipvs.unavailable`` (an error
  event); the core retries with backoff (1 s doubling to 60 s) and the router runs on.

Traffic figures: every ``ipvs_stats_interval`` seconds (config; 0 = off; a reload's
``config.loaded`` changes it live) the shell reads every service's and real server's counters,
rates and connection counts and publishes ``ipvs.stats`` with what changed since the previous
read (``lvsbus.ipvs.stats.Sampler`` decides; nothing changed: nothing published). Not while IPVS
is unavailable, nor while a batch or a dump is under way; and a read under way gives way (is
given up, before its next service) as soon as a batch or a dump is asked for, so a weight change
never waits behind a whole table's figures (seconds for thousands of services under emulation).

The config in force is the one in the log: at start the shell checks the ``config.loaded`` the
router accepted (``--config-seq``), not ``FILE`` (read only when the log holds no such event).
"""
from __future__ import annotations

import asyncio
import errno
import gc
import os
import signal
import subprocess
import time

from concurrent.futures import ThreadPoolExecutor

import structlog

from lvsbus.host import logs
from lvsbus.config import Config
from lvsbus.runtime.core import Effect
from lvsbus.wire.events import Event
from lvsbus.ipvs.stats import Sampler
from lvsbus.host.paths import StateDirs
from lvsbus.runtime.engine import ServiceRuntime, service_arguments, service_config

from .core import CHUNK, SYSCTLS, ApplierCore, applied_events, batch_applied, table_read_payload

log = structlog.get_logger("ipvs")

DEFAULT_STATS_INTERVAL = Config().ipvs_stats_interval  # a config.loaded of a version before the key


#: where the kernel's IPVS sysctls are (present once ip_vs is loaded)
SYSCTL_DIR = "/proc/sys/net/ipv4/vs"


def read_sysctls(root: str = SYSCTL_DIR) -> dict | None:
    """The IPVS sysctls the applier manages, as the kernel has them; None when they cannot be read
    (no ip_vs)."""
    out = {}
    try:
        for name in SYSCTLS:
            with open(os.path.join(root, name)) as f:
                out[name] = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return out


def write_sysctl(name: str, value: int, root: str = SYSCTL_DIR) -> tuple[int | None, str, int]:
    """Set one IPVS sysctl: (None, "", duration_us) done, or (errno, error, 0)."""
    t0 = time.monotonic_ns()
    if name not in SYSCTLS:  # the op names a file: only those the applier manages
        return errno.EINVAL, f"{name}: not an IPVS sysctl lvsbus manages", 0
    try:
        with open(os.path.join(root, name), "w") as f:
            f.write(f"{int(value)}\n")
    except OSError as exc:
        return exc.errno or 0, f"{os.path.join(root, name)}: {exc.strerror or exc}", 0
    return None, "", (time.monotonic_ns() - t0) // 1000


class ApplierShell:
    def __init__(self, state_dir: str, run_start_seq: int, flush_unmanaged: bool = False,
                 stats_interval: float = 0.0) -> None:
        self.dirs = StateDirs(state_dir).make()
        self.core = ApplierCore()
        self.runtime = ServiceRuntime(self.core, self.dirs, execute=self.execute, run_start_seq=run_start_seq)
        self.runtime.on_event = self.on_event
        self.stats_interval = stats_interval
        self.sampler = Sampler()
        self._stats_changed = asyncio.Event()
        self.flush_unmanaged = flush_unmanaged
        self.stop = asyncio.Event()
        self.ipvs = None
        self._modprobed = False
        self._urgent = 0  # applies and dumps asked for and not done: a stats read gives way
        self._prefer_until = 0.0  # monotonic: a desired table just came in, its apply is on its way
        # pyroute2's sync sockets run their own event loop: keep them off asyncio's thread
        self._netlink = ThreadPoolExecutor(1, thread_name_prefix="netlink")

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._netlink, fn, *args)

    # -- netlink ---------------------------------------------------------------------------

    def _open(self):
        from .netlink import Ipvs, Unavailable

        if self.ipvs is not None:
            return self.ipvs
        try:
            self.ipvs = Ipvs()
        except Unavailable:
            if self._modprobed:
                raise
            self._modprobed = True  # as keepalived does: load ip_vs once, then ask again
            subprocess.run(["modprobe", "ip_vs"], capture_output=True, timeout=30)
            self.ipvs = Ipvs()
        return self.ipvs

    def _close(self) -> None:
        if self.ipvs is not None:
            try:
                self.ipvs.close()
            except Exception:
                pass
            self.ipvs = None

    # -- effects ---------------------------------------------------------------------------

    def on_start(self) -> None:
        self.runtime.publish("ipvs.started", {
            "pid": os.getpid(), "flush_unmanaged": self.flush_unmanaged, "kernel": os.uname().release,
        })

    async def execute(self, eff: Effect, ev: Event) -> None:
        if eff.type == "ipvs.read_table":
            await self.read_table(eff.payload["request"])
        elif eff.type == "ipvs.apply":
            await self.apply(eff.payload)

    def _dump(self) -> tuple:
        ipvs = self._open()
        return ipvs.dump(), ipvs.timeouts(), ipvs.daemons(), read_sysctls()

    async def read_table(self, request: int) -> None:
        t0 = time.monotonic_ns()
        self._urgent += 1
        try:
            table, timeouts, daemons, sysctls = await self._call(self._dump)
        except Exception as exc:  # IpvsError, OSError, anything pyroute2 raises: IPVS is not usable
            await self._call(self._close)
            code = getattr(exc, "errno", 0) or 0
            log.error("ipvs_unavailable", errno=code, error=str(exc))
            self.runtime.publish("ipvs.unavailable", {"request": request, "errno": code,
                                                      "error": f"{type(exc).__name__}: {exc}"[:1024]})
            return
        finally:
            self._urgent -= 1
        self.runtime.publish("ipvs.table_read", table_read_payload(request, table, timeouts, daemons,
                                                                   (time.monotonic_ns() - t0) // 1000, sysctls))

    def _apply_chunk(self, ops: list) -> list:
        """Runs on the netlink thread: [(errno or None, error, duration_us)] per op. The IPVS
        sysctls are files, not netlink: each run of netlink ops goes in one send, in order."""
        if any(op["op"] == "set_sysctl" for op in ops):
            results: list = []
            run: list = []
            for op in [*ops, None]:
                if op is None or op["op"] == "set_sysctl":
                    if run:
                        results += self._netlink_chunk(run)
                        run = []
                    if op is not None:
                        results.append(write_sysctl(op["attrs"]["name"], op["attrs"]["value"]))
                else:
                    run.append(op)
            return results
        return self._netlink_chunk(ops)

    def _netlink_chunk(self, ops: list) -> list:
        try:
            ipvs = self._open()
        except Exception as exc:
            code = getattr(exc, "errno", 0) or 0
            return [(code, f"{type(exc).__name__}: {exc}", 0)] * len(ops)
        t1 = time.monotonic_ns()
        try:
            codes = ipvs.apply_many(ops)
        except Exception as exc:  # the socket itself failed: every op of the chunk is unknown
            self._close()
            code = getattr(exc, "errno", 0) or 0
            return [(code, f"{type(exc).__name__}: {exc}", 0)] * len(ops)
        us = (time.monotonic_ns() - t1) // 1000 // max(1, len(ops))  # per op, averaged over the send
        return [(None, "", us) if c == 0 else (c, os.strerror(c), 0) for c in codes]

    async def apply(self, payload: dict) -> None:
        was = gc.isenabled()
        # no cyclic GC while a batch runs: the heap holds the table three times over (desired,
        # expected, the batch's ops), and the netlink loop's small allocations set off collections
        # that walk all of it (in the VM the applying phase ran 4.3x the bare netlink layer's
        # time with it, 2.6x without); the batch makes no cycles, and it is bounded (4096 ops)
        gc.disable()
        try:
            await self._apply(payload)
        finally:
            if was:
                gc.enable()

    async def _apply(self, payload: dict) -> None:
        batch = payload["batch"]
        ops = payload["ops"]
        reported: list[tuple[str, dict]] = []
        t0 = time.monotonic_ns()
        publish = self.runtime.publish
        for i in range(0, len(ops), CHUNK):
            chunk = ops[i:i + CHUNK]
            self._urgent += 1
            try:
                results = await self._call(self._apply_chunk, chunk)
            finally:
                self._urgent -= 1
            for type_, p in applied_events(batch, i, chunk, results):
                if type_ == "ipvs.op_failed":
                    op = p["op"]
                    log.warning("op_failed", batch=batch, op=op["op"], service=op["service"], dest=op["dest"],
                                errno=p["errno"], error=p["error"])
                publish(type_, p)
                reported.append((type_, p))
        done = batch_applied(batch, reported, (time.monotonic_ns() - t0) // 1000)
        publish("ipvs.batch_applied", done)
        log.info("batch_applied", batch=batch, applied=done["applied"], failed=done["failed"], reason=payload["reason"])

    # -- traffic figures -------------------------------------------------------------------

    def on_event(self, ev: Event) -> None:
        if ev.type.startswith("lvsd.table_"):  # an apply is likely to follow once it is recorded
            self._prefer_until = time.monotonic() + 1.0
        if ev.type == "config.loaded":
            model = ev.payload.get("model")
            value = model.get("ipvs_stats_interval", DEFAULT_STATS_INTERVAL) if isinstance(model, dict) else None
            if isinstance(value, (int, float)) and value != self.stats_interval:
                self.stats_interval = float(value)
                self._stats_changed.set()

    def _read_stats(self) -> dict | None:
        """Runs on the netlink thread: the sample, or None when an apply or a dump came first
        (asked before each service's real servers are read: one dump request each)."""
        sample = {}
        for key, figures in self._open().stats_by_service():
            if self._give_way():
                return None
            sample[key] = figures
        return sample

    def _give_way(self) -> bool:
        """A stats read stops (before its next service) for an apply or a dump asked for, and for
        one about to be: a desired table came in within the last second (the stats thread holds the
        GIL in slices of sys.getswitchinterval(), and every step of the bus, the core and the
        write-ahead of the apply waits on it)."""
        return self._urgent > 0 or time.monotonic() < self._prefer_until

    async def stats_loop(self) -> None:
        """Read the figures every interval while IPVS is there; publish what the sampler says."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self.stop.is_set():
            interval = self.stats_interval
            if interval > 0 and self.core_ready():
                try:
                    sample = await self._call(self._read_stats)
                except Exception as exc:  # IPVS went away: read_table reports it; start over with a full sample
                    log.debug("stats_read_failed", error=str(exc))
                    self.sampler.reset()
                else:
                    if sample is None:  # gave way to an apply or a dump: the next tick reads again
                        log.debug("stats_read_gave_way")
                    try:
                        payload = None if sample is None else self.sampler.observe(sample, time.monotonic_ns(), int(round(interval * 1000)))
                        if payload is not None:
                            self.runtime.publish("ipvs.stats", payload)
                    except Exception:  # a bug here must not stop the figures for good, nor the applier
                        log.exception("stats_publish_failed")
                        self.sampler.reset()
            else:
                self.sampler.reset()
            if interval > 0:
                next_at = max(next_at + interval, loop.time())  # a slow read skips ticks, never bunches them
            else:
                next_at = loop.time() + 3600
            self._stats_changed.clear()
            waits = [asyncio.ensure_future(self.stop.wait()), asyncio.ensure_future(self._stats_changed.wait())]
            try:
                _done, _ = await asyncio.wait(waits, timeout=max(0.0, next_at - loop.time()),
                                              return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if self._stats_changed.is_set():
                self.sampler.reset()
                next_at = loop.time()

    def core_ready(self) -> bool:
        """IPVS is there and no batch or dump is under way (reconciling comes first: the figures
        wait for the next tick)."""
        st = self.runtime.state
        return (st is not None and st.started and st.available and not st.pending and not st.reads
                and self.runtime.client is not None)

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        stats = asyncio.ensure_future(self.stats_loop())
        try:
            await self.runtime.run(self.stop, on_start=self.on_start)
        finally:
            self.stop.set()
            try:
                await stats
            except Exception:
                log.exception("stats_loop_failed")
            await self._call(self._close)
            self._netlink.shutdown(wait=False)
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = service_arguments("ipvs", "ipvs: the IPVS applier")
    ap.add_argument("--flush-unmanaged", action="store_true",
                    help="also delete kernel services lvsbus does not manage (another tool's)")
    args = ap.parse_args(argv)
    logs.setup(service="ipvs")
    accepted = service_config("ipvs", args)
    if accepted is None:
        return 2
    return asyncio.run(ApplierShell(args.state_dir, args.run_start_seq, args.flush_unmanaged,
                                    accepted.config.ipvs_stats_interval).main())
