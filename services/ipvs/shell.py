"""The applier's I/O shell: carries out the core's ``ipvs.read_table`` and ``ipvs.apply`` effects
through ``lvsbus_services.ipvs.netlink`` and publishes what the kernel said.

    python -m lvsbus_services.ipvs --state-dir DIR --config FILE --run-start-seq N [--config-seq M] [--flush-unmanaged]

* start: publish ``ipvs.started``; the core answers with ``ipvs.read_table``; the shell dumps the
  kernel (``ipvs.table_read``) and the core plans the ops that make it exact (``ipvs.apply``);
* every op: ``ipvs.op_applied`` or ``ipvs.op_failed`` {errno, error}; every batch:
  ``ipvs.batch_applied``. A failed op makes the core ask for a new dump and reconcile;
* no IPVS (a kernel without IP_VS, as on this project's CI hosts): ``ipvs.unavailable`` (an error
  event); the core retries with backoff (1 s doubling to 60 s) and the router runs on.

The config in force is the one in the log: at start the shell checks the ``config.loaded`` the
router accepted (``--config-seq``), not ``FILE`` (read only when the log holds no such event).
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

from concurrent.futures import ThreadPoolExecutor

import structlog

from lvsbus import logs
from lvsbus.core import Effect
from lvsbus.events import Event
from lvsbus.paths import StateDirs
from lvsbus.runtime import ServiceRuntime, service_arguments, service_config

from .core import ApplierCore

log = structlog.get_logger("ipvs")

CHUNK = 256  # ops per trip to the netlink thread (the bus keeps flowing during a big batch)


class ApplierShell:
    def __init__(self, state_dir: str, run_start_seq: int, flush_unmanaged: bool = False) -> None:
        self.dirs = StateDirs(state_dir).make()
        self.core = ApplierCore()
        self.runtime = ServiceRuntime(self.core, self.dirs, execute=self.execute, run_start_seq=run_start_seq)
        self.flush_unmanaged = flush_unmanaged
        self.stop = asyncio.Event()
        self.ipvs = None
        self._modprobed = False
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
        return ipvs.dump(), ipvs.timeouts(), ipvs.daemons()

    async def read_table(self, request: int) -> None:
        t0 = time.monotonic_ns()
        try:
            table, timeouts, daemons = await self._call(self._dump)
        except Exception as exc:  # IpvsError, OSError, anything pyroute2 raises: IPVS is not usable
            await self._call(self._close)
            code = getattr(exc, "errno", 0) or 0
            log.error("ipvs_unavailable", errno=code, error=str(exc))
            self.runtime.publish("ipvs.unavailable", {"request": request, "errno": code,
                                                      "error": f"{type(exc).__name__}: {exc}"[:1024]})
            return
        self.runtime.publish("ipvs.table_read", {
            "request": request, "table": table.to_dict(), "timeouts": timeouts, "daemons": daemons,
            "services": len(table), "dests": sum(len(e.dests) for _k, e in table.items()),
            "duration_us": (time.monotonic_ns() - t0) // 1000,
        })

    def _apply_chunk(self, ops: list) -> list:
        """Runs on the netlink thread: [(errno or None, error, duration_us)] per op."""
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
        batch = payload["batch"]
        ops = payload["ops"]
        applied = failed = 0
        t0 = time.monotonic_ns()
        publish = self.runtime.publish
        for i in range(0, len(ops), CHUNK):
            chunk = ops[i:i + CHUNK]
            results = await self._call(self._apply_chunk, chunk)
            for op, (code, error, us) in zip(chunk, results):
                if code is None:
                    applied += 1
                    publish("ipvs.op_applied", {"batch": batch, "op": op, "duration_us": us})
                else:
                    failed += 1
                    log.warning("op_failed", batch=batch, op=op["op"], service=op["service"], dest=op["dest"], errno=code, error=error)
                    publish("ipvs.op_failed", {"batch": batch, "op": op, "errno": code, "error": error[:1024]})
        publish("ipvs.batch_applied", {"batch": batch, "applied": applied, "failed": failed,
                                       "duration_us": (time.monotonic_ns() - t0) // 1000})
        log.info("batch_applied", batch=batch, applied=applied, failed=failed, reason=payload["reason"])

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        try:
            await self.runtime.run(self.stop, on_start=self.on_start)
        finally:
            await self._call(self._close)
            self._netlink.shutdown(wait=False)
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = service_arguments("ipvs", "ipvs: the IPVS applier")
    ap.add_argument("--flush-unmanaged", action="store_true",
                    help="also delete kernel services lvsbus does not manage (another tool's)")
    args = ap.parse_args(argv)
    logs.setup(service="ipvs")
    if service_config("ipvs", args) is None:
        return 2
    return asyncio.run(ApplierShell(args.state_dir, args.run_start_seq, args.flush_unmanaged).main())
