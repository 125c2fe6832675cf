"""The config a service runs with is the one the router accepted and recorded, not what the file
holds now: an operator's typo whose reload was refused stays on disk, and a service restarted
later (a crash, SIGKILL, lvsd on a takeover, nanny after a capability change) must not read it.

* ``Router.reload`` moves ``--config-seq`` (every service's command line, restarts included) to the
  seq of the ``config.loaded`` it accepted, and only then (no fake processes: a fake bus client);
* a real ``lvsbus router`` in a network namespace: an accepted reload (new key file, the old one
  removed; a new metrics port), then a broken file refused on SIGHUP, then SIGKILL of every
  service: each comes back once with the accepted config, and the router does not step down.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvsbus import catalog  # noqa: F401
from lvsbus import netutil
from lvsbus.events import decode
from lvsbus.log import LogReader
from lvsbus.router import SERVICES, Child, Router
from tests.netns import VIP, json_lines, netns, router_toml, write_key  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
[router.lvs1]
address = "127.0.0.1"

[heartbeat]
key_file = "{key}"
garp_repeat = {garp}

[virtual.web]
address = "192.0.2.80"
port = 80

[virtual.web.server.a]
address = "10.0.0.11"
"""


class FakeClient:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict]] = []
        self.seq = 40
        self.down = False

    def publish_acked(self, type_, payload, timeout=None):
        if self.down:
            raise TimeoutError("no ack")
        self.seq += 1
        self.published.append((type_, payload))
        return self.seq

    def publish(self, type_, payload):
        self.seq += 1
        self.published.append((type_, payload))


def _config_seq(child: Child) -> int:
    return int(child.argv[child.argv.index("--config-seq") + 1])


def test_reload_moves_every_services_config_seq_only_when_accepted_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(netutil, "local_addresses", lambda: {"127.0.0.1"})
    key = write_key(tmp_path / "hb.key")
    path = tmp_path / "lvs.toml"
    path.write_text(CONFIG.format(key=key, garp=3))
    r = Router(str(path), str(tmp_path / "s"))
    assert r.prepare() == 0
    r.client = FakeClient()
    r.run_start_seq = r.config_seq = 40  # as run() does after publishing the run's config.loaded
    r.children = {name: r._service_child(name, module) for name, module, _w in SERVICES}
    assert {_config_seq(c) for c in r.children.values()} == {40}
    assert all(c.argv[c.argv.index("--config") + 1] == str(path) for c in r.children.values())

    path.write_text(CONFIG.format(key=key, garp=2))
    assert r.reload()
    assert r.client.published[-1][0] == "config.loaded" and r.config_seq == 41
    assert {_config_seq(c) for c in r.children.values()} == {41}  # every later (re)start uses it
    assert r.loaded.config.heartbeat.garp_repeat == 2

    path.write_text("[virtual.web\n")  # a typo: refused, the accepted config stays in force
    assert not r.reload()
    assert r.client.published[-1][0] == "config.reload_refused"
    assert {_config_seq(c) for c in r.children.values()} == {41} and r.loaded.config.heartbeat.garp_repeat == 2

    path.write_text(CONFIG.format(key=key, garp=4))
    r.client.down = True  # valid, but the bus did not acknowledge it: not in force (SIGHUP again)
    assert not r.reload()
    assert {_config_seq(c) for c in r.children.values()} == {41} and r.loaded.config.heartbeat.garp_repeat == 2
    r.client.down = False
    assert r.reload() and r.config_seq == r.client.seq
    assert {_config_seq(c) for c in r.children.values()} == {r.client.seq}


def test_a_missing_key_file_is_named_first_with_the_command_that_makes_one(tmp_path, monkeypatch, capsys):
    """At start and on a reload, the message starts with the key file's path (it said '<config>:'
    on a reload) and says how to make one."""
    monkeypatch.setattr(netutil, "local_addresses", lambda: {"127.0.0.1"})
    key = write_key(tmp_path / "hb.key")
    path = tmp_path / "lvs.toml"
    path.write_text(CONFIG.format(key=key, garp=3))
    r = Router(str(path), str(tmp_path / "s"))
    assert r.prepare() == 0
    r.client = FakeClient()
    r.run_start_seq = r.config_seq = 40
    gone = tmp_path / "gone.key"
    want = (f"{gone}: heartbeat key file: No such file or directory; create one with: lvsbus keys heartbeat --out {gone} "
            "(then copy that same file to every router)")
    path.write_text(CONFIG.format(key=gone, garp=3))
    assert not r.reload()
    kind, payload = r.client.published[-1]
    assert kind == "config.reload_refused" and payload["errors"] == [want]
    assert Router(str(path), str(tmp_path / "s2")).prepare() == 1
    assert capsys.readouterr().err.strip() == f"lvsbus router: {want}"
    gone.write_bytes(b"x" * 32)
    os.chmod(gone, 0o644)
    assert not r.reload()
    assert r.client.published[-1][1]["errors"][0].startswith(f"{gone}: heartbeat key file has mode 0644")


class FakeLvsd(Child):
    """lvsd's child without a process: what the supervisor asks of it."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__("lvsd", argv)
        self.up = False
        self.starts: list[list[str]] = []
        self.told: list[bytes] = []
        self.reachable = True

    def alive(self) -> bool:
        return self.up

    def start(self) -> None:
        self.wanted, self.up = True, True
        self.starts.append(list(self.argv))

    def tell(self, line: bytes) -> bool:
        if self.up and self.reachable:
            self.told.append(line)
            return True
        return False

    def stop(self, timeout: float = 0) -> None:
        self.wanted, self.up, self.kill_at = False, False, None

    def terminate(self) -> None:  # and it exits at once
        self.stop()


def test_the_backup_keeps_a_standby_lvsd_that_a_takeover_tells_to_go(tmp_path, monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(netutil, "local_addresses", lambda: {"127.0.0.1"})
    path = tmp_path / "lvs.toml"
    path.write_text(CONFIG.format(key=write_key(tmp_path / "hb.key"), garp=3))
    r = Router(str(path), str(tmp_path / "s"))
    assert r.prepare() == 0
    r.client = FakeClient()
    r.run_start_seq = r.config_seq = 40
    lvsd = r.children["lvsd"] = FakeLvsd(r._service_argv("lvsbus_services.lvsd"))
    ev = lambda t: SimpleNamespace(type=t, seq=50, payload={})  # noqa: E731

    r._start_lvsd(standby=True)  # as run() does: the router starts as a backup
    assert lvsd.starts[-1][-1] == "--standby" and lvsd.stdin_pipe and r.lvsd_standby
    r._on_event(ev("pulse.start_lvsd"))  # the takeover: no new process, a line on its stdin
    assert lvsd.told == [b"go\n"] and len(lvsd.starts) == 1 and not r.lvsd_standby
    assert "--standby" not in lvsd.argv  # a crash from now on restarts it active
    r._on_event(ev("pulse.stop_lvsd"))  # stepping down: it stops, and a new standby follows
    assert not lvsd.alive()
    assert r._supervise()
    assert len(lvsd.starts) == 2 and lvsd.starts[-1][-1] == "--standby" and r.lvsd_standby
    lvsd.reachable = False  # a standby that cannot be told: stopped, and an active one started
    r._on_event(ev("pulse.start_lvsd"))
    assert len(lvsd.starts) == 3 and "--standby" not in lvsd.starts[-1] and not r.lvsd_standby
    r.stopping = True  # no standby while the router stops
    r._on_event(ev("pulse.stop_lvsd"))
    assert r._supervise() and len(lvsd.starts) == 3


# -- a real router in a namespace -------------------------------------------------------------

METRICS_1, METRICS_2 = 9539, 9541


class RouterProc:
    def __init__(self, topo, tmp: Path) -> None:
        self.topo, self.tmp = topo, tmp
        self.state = tmp / "s"
        self.err = tmp / "router.err"

    def start(self, config: Path) -> None:
        self.proc = self.topo.popen(
            "r1", [sys.executable, "-m", "lvsbus.cli", "router", "--config", str(config), "--state-dir", str(self.state)],
            stdout=subprocess.DEVNULL, stderr=open(self.err, "ab"), cwd=str(ROOT),
            env={**os.environ, "LVSBUS_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)})

    def events(self, *types: str) -> list:
        try:
            evs = [decode(b, s) for s, b in LogReader(self.state / "log").read(1)]
        except FileNotFoundError:
            return []
        return [e for e in evs if not types or e.type in types]

    def lines(self) -> list[dict]:
        return json_lines(self.err)

    def pids(self, service: str) -> list[int]:
        return [l["pid"] for l in self.lines() if l.get("event") == "service_started" and l.get("service") == service]

    def wait(self, cond, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = cond()
            if v:
                return v
            if self.proc.poll() is not None:
                raise AssertionError(f"the router exited ({self.proc.returncode}) waiting for {what}:\n"
                                     + self.err.read_text(errors="replace")[-3000:])
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n" + self.err.read_text(errors="replace")[-3000:])

    def metrics(self, port: int) -> bytes | None:
        s = self.topo.socket("r1", type=socket.SOCK_STREAM)
        s.settimeout(2.0)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return data
        except OSError:
            return None
        finally:
            s.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().decode().split("\0")


@pytest.mark.netns
@pytest.mark.slow
def test_services_killed_after_a_refused_reload_come_back_with_the_accepted_config(netns, tmp_path):  # noqa: F811  (the fixture)
    topo = netns(routers=1, private=False)
    key1 = write_key(tmp_path / "hb1.key")
    key2 = write_key(tmp_path / "hb2.key")
    config = tmp_path / "lvs.toml"

    def text(key: Path, metrics_port: int) -> str:
        body = router_toml(topo, key, keepalive=0.2, deadtime=1.0, private_link=False, priorities=(200,))
        return f'metrics_address = "127.0.0.1:{metrics_port}"\n' + body

    config.write_text(text(key1, METRICS_1))
    r = RouterProc(topo, tmp_path)
    r.start(config)
    try:
        r.wait(lambda: [e for e in r.events("router.role_changed") if e.payload["new"] == "ACTIVE"], 30, "r1 ACTIVE")
        r.wait(lambda: r.pids("lvsd"), 10, "lvsd started on ACTIVE")
        r.wait(lambda: r.metrics(METRICS_1), 10, "metrics on the first port")

        # an accepted reload: a new key file (the old one removed afterwards) and a new metrics port
        config.write_text(text(key2, METRICS_2))
        r.proc.send_signal(signal.SIGHUP)
        accepted = r.wait(lambda: [e for e in r.events("config.loaded") if e.payload["reload"]], 10, "the reload")[-1]
        assert accepted.payload["model"]["metrics_address"] == f"127.0.0.1:{METRICS_2}"
        os.unlink(key1)  # a pulse restarted with the run start's config would now exit 2
        r.wait(lambda: r.metrics(METRICS_2), 10, "metrics moved to the new port by the reload")

        # then a typo: the reload is refused and the broken file stays on disk
        config.write_text("[heartbeat\nkeepalive = 'oops'\n")
        r.proc.send_signal(signal.SIGHUP)
        refused = r.wait(lambda: r.events("config.reload_refused"), 10, "config.reload_refused")[-1]
        assert refused.payload["kept_digest"] == accepted.payload["digest"]

        # every service dies: each comes back once, with the accepted config (not the file)
        killed_at = r.events()[-1].seq
        services = ("nanny", "pulse", "lvsd", "ipvs", "metrics")
        old = {s: r.pids(s)[-1] for s in services}
        for s in services:
            os.kill(old[s], signal.SIGKILL)
            r.wait(lambda s=s: r.pids(s)[-1] != old[s], 10, f"{s} restarted")
        time.sleep(3.0)  # a service refusing its config exits within this, and again after each backoff
        assert r.proc.poll() is None, r.err.read_text(errors="replace")[-3000:]
        restarted = [e.payload for e in r.events("router.service_restarted") if e.seq > killed_at]
        assert sorted(p["service"] for p in restarted) == sorted(services), restarted
        assert all(p["exit"] == "killed by SIGKILL" for p in restarted), restarted
        for s in services:
            pid = r.pids(s)[-1]
            assert os.path.exists(f"/proc/{pid}"), f"{s} ({pid}) is not running"
            argv = _cmdline(pid)
            assert argv[argv.index("--config-seq") + 1] == str(accepted.seq), (s, argv)
            assert argv[argv.index("--config") + 1] == str(config)  # named for messages only
        assert "cannot use the configuration" not in r.err.read_text(errors="replace")
        assert not r.events("router.shutdown_requested")

        # pulse came back with the accepted key file, the router is still ACTIVE with its VIP
        started = [e for e in r.events("pulse.started") if e.seq > killed_at]
        assert started and started[-1].payload["key_loaded"] is True
        assert [e.payload["new"] for e in r.events("router.role_changed")][-1] == "ACTIVE"
        assert topo.has_address("r1", VIP)
        # metrics came back on the accepted port, not on the file's (broken) nor the first one
        body = r.wait(lambda: r.metrics(METRICS_2), 10, "metrics on the accepted port after its restart")
        assert body.startswith(b"HTTP/1.0 200") and r.metrics(METRICS_1) is None
    finally:
        r.stop()
    assert r.proc.returncode == 0, r.err.read_text(errors="replace")[-3000:]


def test_a_router_refuses_to_start_without_one_of_its_services(monkeypatch):
    """Every service module is part of lvsbus: one missing is a broken installation, said at start
    (the router once skipped a missing one silently: scaffolding from when services were written
    one by one)."""
    from lvsbus import router as routermod

    assert routermod._missing_services() == []  # this installation has them all
    monkeypatch.setattr(routermod, "SERVICES", routermod.SERVICES + (("gone", "lvsbus_services.gone", "always"),))
    assert routermod._missing_services() == ["lvsbus_services.gone"]
