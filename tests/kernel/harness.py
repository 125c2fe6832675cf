"""In-VM helpers: a broker, the applier (and lvsd/nanny) as real processes, the log, the kernel."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.bus import BusClient
from lvsbus.config import load, to_dict
from lvsbus.wire.events import decode
from lvsbus.ipvs.table import Table
from lvsbus.log import LogReader
from tests.helpers.procs import BrokerProc

ROOT = Path(__file__).resolve().parent.parent.parent


def kernel_table() -> Table:
    from lvsbus_services.ipvs.netlink import Ipvs

    with Ipvs() as x:
        return x.dump()


class KernelRig:
    """A broker plus services started with ``python -m lvsbus_services.NAME``; the test plays the rest."""

    def __init__(self, tmp: Path, config: Path, local_router: str = "lvs1") -> None:
        self.tmp, self.config = tmp, config
        self.broker = BrokerProc(tmp / "state").start()
        self.dirs = self.broker.dirs
        loaded = load(str(config))
        self.client = BusClient(self.dirs.run, "test")
        self.run_start = self.client.publish_acked("config.loaded", {
            "path": str(config), "format": loaded.format, "digest": loaded.digest, "model": to_dict(loaded.config),
            "warnings": [], "local_router": local_router, "reload": False, "diff": {}})
        self.procs: dict[str, subprocess.Popen] = {}
        self.as_lvsd = BusClient(self.dirs.run, "lvsd")
        self.version = 0

    def publish_table(self, table: Table) -> int:
        self.version += 1
        return self.as_lvsd.publish_acked("lvsd.table_desired", {
            "version": self.version, "table": table.to_dict(), "reason": "started", "digest": "t",
            "services": len(table), "dests": sum(len(e.dests) for _k, e in table.items())})

    def publish(self, type_: str, payload: dict, source: str = "test") -> int:
        c = self.client if source == "test" else BusClient(self.dirs.run, source)
        seq = c.publish_acked(type_, payload)
        if c is not self.client:
            c.close()
        return seq

    def start(self, name: str, *extra: str) -> subprocess.Popen:
        p = subprocess.Popen(
            [sys.executable, "-m", f"lvsbus_services.{name}", "--state-dir", self.dirs.root, "--config", str(self.config),
             "--run-start-seq", str(self.run_start), *extra],
            cwd=ROOT, stderr=open(self.tmp / f"{name}.err", "ab"), env={**os.environ, "LVSBUS_LOG_FORMAT": "json"})
        self.procs[name] = p
        return p

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs.pop(name)
        if p.poll() is None:
            p.send_signal(sig)
            p.wait(30)

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM)
        self.client.close()
        self.as_lvsd.close()
        self.broker.kill()

    def stop_and_settle(self, *names: str) -> None:
        """SIGTERM these services and wait until the log stops growing: replay then reads a log
        that is complete (a live one can end between the reader's last record and the writer's
        mark, nanny writing a record every check)."""
        for name in names:
            self.kill(name, signal.SIGTERM)
        last = -1

        def still() -> bool:
            nonlocal last
            n = len(self.events())
            done, last = n == last, n
            return done

        self.wait(still, 30, "the log still", every=0.5)

    def events(self, prefix: str = "", after: int = 0):
        return [e for e in (decode(b, s) for s, b in LogReader(self.dirs.log).read(after + 1)) if e.type.startswith(prefix)]

    def verify_replay(self, *names: str) -> None:
        """Replay the log through these cores: every logged decision and effect must come out the same."""
        from lvsbus_tools.replay import make_cores, verify

        report = verify(self.dirs.root, cores=make_cores(names))
        assert report.ok and report.outputs > 0, report.format()

    def wait(self, pred, timeout: float, what: str, every: float = 0.1) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if pred():
                return time.monotonic() - t0
            time.sleep(every)  # one CPU in the VM: polling steals it from the processes under test
        errs = "".join(f"--- {p.name}\n" + p.read_text()[-2000:] for p in self.tmp.glob("*.err"))
        raise AssertionError(f"timed out ({timeout}s) waiting for {what}\n{errs}")
