"""A refused reload on a real router: services killed afterwards come back with the accepted config (network namespaces)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.wire.events import decode
from lvsbus.log import LogReader
from lvsbus.demo.netns import VIP, router_toml, write_key
from tests.helpers.procs import json_lines

METRICS_1, METRICS_2 = 9539, 9541
ROOT = Path(__file__).resolve().parents[2]


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
    """A service's command line: NUL-separated when exec'd, one title with spaces when forked from
    the router's zygote (setproctitle; lvsbus/router/zygote.py)."""
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().decode().rstrip("\0").replace("\0", " ").split()


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
