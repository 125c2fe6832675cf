"""Processes, mounts and bus clients the tests start, each removed again by the test that made it.

    from tests.helpers.procs import broker  # noqa: F401  (the fixture)
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lvsbus.bus import BusClient
from lvsbus.wire.events import decode
from lvsbus.log import LogReader
from lvsbus.host.paths import StateDirs

ROOT = str(Path(__file__).resolve().parents[2])

class Proc:
    """A child process, ready once a line containing ``ready`` appears on its stdout (stderr merged
    into it) or, with ``stream="stderr"``, on its stderr; its lines are drained into ``lines`` so
    that it never blocks on a full pipe. Stopped by its own PID only."""

    def __init__(self, argv: list[str], ready: str, env: dict | None = None, stream: str = "stdout",
                 timeout: float = 20.0) -> None:
        self.argv, self.ready, self.env, self.stream, self.timeout = argv, ready, env, stream, timeout
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []

    def start(self) -> "Proc":
        env = {**os.environ, "PYTHONPATH": ROOT, "LVSBUS_LOG_FORMAT": "json", **(self.env or {})}
        if self.stream == "stdout":
            self.proc = subprocess.Popen(self.argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            pipe = self.proc.stdout
        else:
            self.proc = subprocess.Popen(self.argv, env=env, cwd=ROOT, stderr=subprocess.PIPE)
            pipe = self.proc.stderr
        assert pipe is not None
        deadline = time.monotonic() + self.timeout
        while True:
            line = pipe.readline().decode()
            self.lines.append(line)
            if self.ready in line:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.argv} did not start: {''.join(self.lines)[-2000:]}")
        threading.Thread(target=self._drain, args=(pipe,), daemon=True).start()
        return self

    def _drain(self, pipe) -> None:
        for line in pipe:
            self.lines.append(line.decode())

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class BrokerProc(Proc):
    """``lvsbus broker`` on the state directory ``state``."""

    def __init__(self, state: Path, *extra: str) -> None:
        self.dirs = StateDirs(str(state))
        super().__init__([sys.executable, "-m", "lvsbus.cli", "broker", "--node", "t1", "--state-dir", self.dirs.root,
                          *extra], "broker ready", stream="stderr", timeout=15.0)

    def start(self) -> "BrokerProc":
        super().start()
        assert (Path(self.dirs.run) / "bus.sock").exists()
        return self

    def events(self):
        return [decode(body, seq) for seq, body in LogReader(self.dirs.log).read(1)]

    def events_skipping(self):
        return [decode(body, seq) for seq, body in LogReader(self.dirs.log, skip_corrupt=True).read(1)]


@pytest.fixture
def broker(tmp_path):
    """Factory: ``broker(*extra, state=None)`` starts a BrokerProc; all are SIGKILLed at teardown."""
    procs: list[BrokerProc] = []

    def make(*extra, state=None):
        b = BrokerProc(state or tmp_path / "state", *extra)
        procs.append(b)
        return b.start()

    yield make
    for b in procs:
        b.kill()


def client(b: BrokerProc, name: str, subs=(), **kw) -> BusClient:
    return BusClient(b.dirs.run, name, subs=subs, log_dir=b.dirs.log, **kw)


def wait_joined(c: BusClient, timeout=5.0):
    """Wait until the broker has answered our hello (its first tick)."""
    deadline = time.monotonic() + timeout
    while c.core.epoch is None:
        assert time.monotonic() < deadline, "broker never answered hello"
        c._pump(0.05)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "2m"):
    """A tmpfs of ``size`` mounted on ``path`` (made if missing), unmounted afterwards, also on
    failure; skips the test where no tmpfs can be mounted (needs root / CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie counts)."""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def ppid(pid: int) -> int | None:
    """``pid``'s parent PID (from /proc), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def children_of(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid`` (from /proc)."""
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and ppid(int(d)) == pid]


def task_sets(pid: int) -> list:
    """The capability sets of every thread of ``pid`` (``/proc/PID/task/*/status``)."""
    from lvsbus.host.privileges import parse_status

    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as fh:
            out.append(parse_status(fh.read()))
    return out


def json_lines(path) -> list[dict]:
    """The JSON lines of a process's stderr (LVSBUS_LOG_FORMAT=json), other lines skipped."""
    import json

    out = []
    for line in open(path, errors="replace").read().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


class Listener:
    """A real server: a TCP listener on 127.0.0.1 that accepts and closes; stop() closes it."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def start(self) -> "Listener":
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self.sock = s
        threading.Thread(target=self._serve, args=(s,), daemon=True).start()
        return self

    def _serve(self, s: socket.socket) -> None:
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            c.close()

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class ServiceRig:
    """A broker whose log starts with the run's ``config.loaded`` (as the supervisor publishes it),
    and services the test starts with ``python -m lvsbus_services.NAME`` (stopped by their PIDs);
    the test plays the rest of the router. Each service's stderr is ``tmp/NAME.err``."""

    #: the services whose stderr tails a timed-out wait shows
    shown = ("nanny", "lvsd", "alerts")

    def __init__(self, tmp: Path, config: Path, local: str = "lvs1") -> None:
        from lvsbus.config import load, to_dict

        self.tmp, self.config = tmp, config
        self.broker = BrokerProc(tmp / "state").start()
        self.dirs = self.broker.dirs
        loaded = load(str(config))
        self.client = BusClient(self.dirs.run, "supervisor")
        self.run_start = self.client.publish_acked("config.loaded", {
            "path": str(config), "format": loaded.format, "digest": loaded.digest, "model": to_dict(loaded.config),
            "warnings": [], "local_router": local, "reload": False, "diff": {}})
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"lvsbus_services.{name}", "--state-dir", self.dirs.root, "--config", str(self.config),
             "--run-start-seq", str(self.run_start)],
            cwd=ROOT, stderr=open(self.tmp / f"{name}.err", "ab"),
            env={**os.environ, "PYTHONPATH": ROOT, "LVSBUS_LOG_FORMAT": "json"})

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int | None:
        p = self.procs.pop(name)
        if p.poll() is None:
            p.send_signal(sig)
            p.wait(10)
        return p.returncode

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name, signal.SIGKILL)
        self.client.close()
        self.broker.kill()

    def events(self, prefix: str = "") -> list:
        return [e for e in (decode(b, s) for s, b in LogReader(self.dirs.log).read(1)) if e.type.startswith(prefix)]

    def describe(self) -> str:
        """What a timed-out wait adds to its message (the services' stderr tails)."""
        return "".join((self.tmp / f"{n}.err").read_text()[-1500:] for n in self.shown if (self.tmp / f"{n}.err").exists())

    def wait(self, pred, timeout: float, what: str) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if pred():
                return time.monotonic() - t0
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}\n{self.describe()}")


@pytest.fixture
def rigs(tmp_path):
    """``make(config, cls=ServiceRig)``: a rig closed (its processes killed by PID) at the test's end."""
    made: list[ServiceRig] = []

    def make(config: Path, cls: type = ServiceRig) -> ServiceRig:
        r = cls(tmp_path, config)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
