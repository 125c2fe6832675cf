"""service = fos with two real ``lvsbus router`` processes in network namespaces: the active router's
start_cmd starts a real TCP service in its namespace; killing that service makes the active give
up, the backup takes over (VIP, start_cmd), and a client reaches the service through the VIP on the
backup. See docs/config.md (failover) and docs/pulse.md (giving up).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvsbus.demo.netns import VIP, router_toml
from tests.helpers.routers import Cluster

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FOS_PORT = 8080
TIMEOUT = 2.0  # the failover service's timeout: unreachable this long = failed (and the time to come up)

# the service: a TCP server in the router's namespace, answering every connection with the router's
# name (pulse gives the commands LVSBUS_ROUTER), its PID in DIR/<router>.pid
SERVER = r"""
import os, socket, sys
name, piddir, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(16)
with open(os.path.join(piddir, name + ".pid"), "w") as f:
    f.write(str(os.getpid()))
while True:
    c, _ = s.accept()
    try:
        c.sendall(name.encode() + b"\n")
    except OSError:  # a connect check that went away at once (reset)
        pass
    finally:
        c.close()
"""


def fos_toml(topo, key: Path, tmp: Path) -> str:
    """router_toml's routers and heartbeat, service = fos, and one failover service on the VIP."""
    base = router_toml(topo, key, keepalive=0.1, deadtime=0.5, port=5390)
    base = base.replace('service = "lvs"', 'service = "fos"').split("[virtual.echo]")[0]
    server = tmp / "server.py"
    server.write_text(SERVER)
    piddir = tmp / "pids"
    piddir.mkdir(exist_ok=True)
    me = "$LVSBUS_ROUTER"
    start = f"{sys.executable} {server} {me} {piddir} {FOS_PORT} </dev/null >/dev/null 2>&1 & echo started {me} >&2"
    stop = f"kill $(cat {piddir}/{me}.pid) && rm -f {piddir}/{me}.pid"
    return base + "\n".join([
        "", "[failover.web]", f'address = "{VIP}"', 'device = "eth0"', f"port = {FOS_PORT}",
        f"timeout = {TIMEOUT}", "reentry = 60", f"start_cmd = {json.dumps(start)}", f"stop_cmd = {json.dumps(stop)}",
        "",
    ])


def ask(topo, timeout: float = 0.5) -> str | None:
    """Connect to the VIP's failover service from the client; the namespace that answered."""
    s = topo.socket("c", type=socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect((VIP, FOS_PORT))
        return s.recv(256).decode().strip() or None
    except OSError:
        return None
    finally:
        s.close()


def test_a_killed_failover_service_makes_the_backup_take_over_and_serve(netns, tmp_path):  # noqa: F811
    topo = netns(routers=2)
    c = Cluster(topo, tmp_path)
    c.config.write_text(fos_toml(topo, tmp_path / "hb.key", tmp_path))
    r1ns, r2ns = "r1", "r2"  # what each router's service answers
    piddir = tmp_path / "pids"
    try:
        c.start()
        c.wait_steady("r1")
        c.wait(lambda: ask(topo) == r1ns, 10.0, "the client served by r1's failover service through the VIP")
        done = c.events("r1", ("pulse.failover_cmd_finished",))
        assert [(e.payload["action"], e.payload["exit_code"], e.payload["error"]) for e in done][-1] == ("start", 0, "")
        assert f"started {r1ns}" in done[-1].payload["stderr_tail"]

        def spells(r: str) -> int:
            return sum(1 for e in c.events(r, ("router.role_changed",)) if e.payload["new"] == "ACTIVE")

        def commands(r: str) -> list[str]:
            return [e.payload["action"] for e in c.events(r, ("pulse.run_failover",))]

        # the backup runs neither command (unless it was active for a moment while r1 started up
        # under load: then a start and a stop for each such spell)
        assert commands("r2") == ["start", "stop"] * spells("r2")
        # no IPVS table in fos mode: lvsd's desired table is empty
        assert all(e.payload["services"] == 0 for e in c.events("r1", ("lvsd.table_desired",)))
        assert not c.events("r1", ("ipvs.read_table", "ipvs.apply", "ipvs.unavailable"))  # the applier is idle
        c.wait(lambda: any(e.payload["new"] == "UP" for e in c.events("r1", ("health.failover_changed",))),
               5.0, "r1's nanny: web UP")

        # kill the service on the active router (by PID, not through its stop_cmd)
        pid = int((piddir / f"{r1ns}.pid").read_text())
        t0 = time.monotonic()
        os.kill(pid, 9)
        c.wait(lambda: c.role("r2") == "ACTIVE", 10.0, "r2 active after r1 gave up")
        c.wait(lambda: ask(topo) == r2ns, 10.0, "the client served by r2's failover service through the VIP")
        served = time.monotonic() - t0
        assert served > TIMEOUT * 0.9, f"r1 gave up after {served:.3f} s, before the service's timeout"
        assert served < TIMEOUT + 5.0, f"the backup served after {served:.3f} s"

        gave_up = [e for e in c.events("r1", ("router.role_changed",)) if e.payload["old"] == "ACTIVE"]
        assert [e.payload["reason"] for e in gave_up][-1] == "failover_service_failed"
        took = [e for e in c.events("r2", ("router.role_changed",)) if e.payload["new"] == "ACTIVE"]
        assert took[-1].payload["reason"] == "peer_stepped_down"
        c.wait(lambda: [e for e in c.events("r1", ("pulse.failover_cmd_finished",)) if e.payload["action"] == "stop"],
               5.0, "r1's stop_cmd finished")
        c.wait(lambda: c.events("r2", ("pulse.failover_cmd_finished",)), 5.0, "r2's start_cmd finished")
        starts = [e.payload for e in c.events("r2", ("pulse.failover_cmd_finished",))]
        assert [(p["action"], p["exit_code"]) for p in starts][-1] == ("start", 0)
        assert commands("r2")[-1] == "start" and commands("r1")[-1] == "stop"
        assert not topo.has_address("r1", VIP) and topo.has_address("r2", VIP)
        # r1 advertises priority 0 for reentry (60 s): it does not preempt back although it ranks higher
        time.sleep(1.0)
        assert c.roles() == {"r1": "BACKUP", "r2": "ACTIVE"}

        # r1's nanny saw the service go DOWN; now it checks it through the VIP on r2 (as Piranha's
        # backup did), as r2's nanny does locally: UP on both
        assert "DOWN" in [e.payload["new"] for e in c.events("r1", ("health.failover_changed",))]
        for r in ("r1", "r2"):
            c.wait(lambda: c.events(r, ("health.failover_changed",))[-1].payload["new"] == "UP", 5.0,
                   f"{r}'s nanny: web UP")
        # lvsbus status shows the failover service's health and the last command
        for r, health, running in (("r1", "UP", False), ("r2", "UP", True)):
            out = subprocess.run([sys.executable, "-m", "lvsbus.cli", "status", "--json", "--state-dir",
                                  str(c.state(r))], capture_output=True, text=True, timeout=60, cwd=str(ROOT),
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
            st = json.loads(out.stdout)
            web = st["failover"]["web"]
            assert st["service"] == "fos" and web["health"] == health and web["running"] is running, (r, web)
        text = subprocess.run([sys.executable, "-m", "lvsbus.cli", "status", "--state-dir", str(c.state("r2"))],
                              capture_output=True, text=True, timeout=60, cwd=str(ROOT),
                              env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
        assert f"failover web {VIP}:{FOS_PORT}: health UP, started here; last start_cmd: exit 0" in text
        c.stop()
        # replay re-runs both logs through the cores: every decision (giving up, start/stop) the same
        from lvsbus_tools.replay import verify
        for r in ("r1", "r2"):
            rep = verify(str(c.state(r) / "log"))
            assert rep.ok, rep.format()
        assert commands("r2") == ["start", "stop"] * spells("r2")  # paired: the shutdown stopped it
        assert commands("r1") == ["start", "stop"] * spells("r1")
    finally:
        c.stop()
        for f in piddir.glob("*.pid"):  # a service left behind by a failed run
            try:
                os.kill(int(f.read_text()), 9)
            except (ValueError, ProcessLookupError):
                pass
