"""lvsd's I/O shell: the core on the bus, nothing else (its outputs are decisions the runtime
publishes: ``lvsd.table_desired`` and ``lvsd.table_delta``; the IPVS applier acts on them).

    python -m lvsbus_services.lvsd --state-dir DIR --config FILE --run-start-seq N [--config-seq M]

The supervisor runs lvsd only while pulse says so (``pulse.start_lvsd``). On start the runtime
folds the log (config and every health event nanny published on this router, also while it was
the backup), then the shell publishes ``lvsd.started`` and the core answers it with the whole
desired table: a warm start, with health already known. On a backup the supervisor keeps one
``--standby``: it has folded all that already (following the bus, publishing nothing), and starts
on a line ``go`` on stdin, so a takeover does not wait for a process to start and a log to fold. The config in force is the one in the
log: at start the shell checks the ``config.loaded`` the router accepted (``--config-seq``), not
``FILE`` (read only when the log holds no such event: lvsd started by hand).
"""
from __future__ import annotations

import asyncio
import os
import signal
import time

import structlog

from lvsbus.host import logs
from lvsbus.host.paths import StateDirs
from lvsbus.runtime.engine import ServiceRuntime, service_arguments, service_config

from .core import LvsdCore

log = structlog.get_logger("lvsd")


class LvsdShell:
    def __init__(self, state_dir: str, run_start_seq: int) -> None:
        self.dirs = StateDirs(state_dir).make()
        self.core = LvsdCore()
        self.runtime = ServiceRuntime(self.core, self.dirs, run_start_seq=run_start_seq)
        self.stop = asyncio.Event()

    def on_start(self) -> None:
        st = self.runtime.state
        log.info("lvsd_started", version=st.version, health=len(st.health), services=len(st.table))
        self.runtime.publish("lvsd.started", {"pid": os.getpid(), "epoch": time.monotonic_ns()})

    async def main(self, standby: bool = False) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        go = None
        if standby:
            go = asyncio.Event()
            loop.add_reader(0, self._on_stdin, go)
        await self.runtime.run(self.stop, on_start=self.on_start, go=go)
        return 0

    def _on_stdin(self, go: asyncio.Event) -> None:
        """A standby starts on a line on stdin (the supervisor's pipe); EOF: the supervisor is gone."""
        try:
            data = os.read(0, 64)
        except OSError:
            data = b""
        if data.startswith(b"go"):
            go.set()
        elif not data:
            asyncio.get_running_loop().remove_reader(0)
            if not go.is_set():
                self.stop.set()


def main(argv: list[str] | None = None) -> int:
    ap = service_arguments("lvsd", "lvsd: the desired IPVS table")
    ap.add_argument("--standby", action="store_true",
                    help="follow the bus and keep the desired table current without publishing anything, "
                         "until a line 'go' arrives on stdin (the router keeps one ready on a backup, so a "
                         "takeover starts lvsd without folding the log: see docs/router.md)")
    args = ap.parse_args(argv)
    logs.setup(service="lvsd")
    if service_config("lvsd", args) is None:
        return 2
    return asyncio.run(LvsdShell(args.state_dir, args.run_start_seq).main(standby=args.standby))
