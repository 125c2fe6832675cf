"""Operator actions against two real ``lvsbus router`` processes in network namespaces (issue 16):
``lvsbus server drain`` changes the active router's desired table (weight 0), ``enable`` gives the
weight back, a drain given on the backup is answered when it becomes active, and ``lvsbus
handover`` moves the active role (and the VIP) to the peer; both logs replay identically."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.routers import RESPONDER, ROOT, Cluster, start_responders

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def lvsbus(*argv: str) -> subprocess.CompletedProcess:
    """The CLI as an operator runs it (outside the namespaces: the bus is an ipc socket in the state dir)."""
    return subprocess.run([sys.executable, "-m", "lvsbus.cli", *argv], capture_output=True, text=True, timeout=30,
                          cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_drain_enable_and_handover_from_the_cli(netns_module, tmp_path):  # noqa: F811  (the fixture)
    t = netns_module(routers=2, servers=1)
    start_responders(t, t.routers)
    c = Cluster(t, tmp_path)
    c.config.write_text(c.config.read_text().replace(
        '[virtual.echo.check]\nkind = "udp"', '[virtual.echo.check]\nkind = "udp"\ninterval = 0.2\ntimeout = 0.2\nrise = 1\nfall = 2'))
    server = t.popen("s1", [sys.executable, "-c", RESPONDER, "s1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def weights(r: str) -> list[int]:
        """s1's weight in each desired table or delta of r's lvsd, in log order (None: out)."""
        out = []
        for e in c.events(r, ("lvsd.table_desired", "lvsd.table_delta")):
            if e.type == "lvsd.table_desired":
                dests = [d for svc in e.payload["table"].values() for d in svc["dests"].values()]
                out.append(dests[0]["weight"] if dests else None)
            else:
                out += [op["attrs"].get("weight") for op in e.payload["ops"] if op["dest"]]
        return out

    try:
        c.start()
        c.wait_steady("r1")
        c.wait(lambda: weights("r1")[-1:] == [1], 5.0, "s1 in r1's desired table")
        r1, r2 = str(c.state("r1")), str(c.state("r2"))

        res = lvsbus("server", "drain", "echo", "s1", "--state-dir", r1, "--reason", "kernel upgrade")
        assert res.returncode == 0 and "echo/s1 now drained" in res.stdout, res
        (req,) = c.events("r1", ("operator.server_action",))
        assert req.payload["action"] == "drain" and req.payload["via"] == "cli" and req.payload["by"]
        (delta,) = [e for e in c.events("r1", ("lvsd.table_delta",)) if e.cause == req.seq]
        assert [(o["op"], o["attrs"]["weight"]) for o in delta.payload["ops"]] == [("edit_dest", 0)]
        assert weights("r1")[-1] == 0
        res = lvsbus("server", "drain", "echo", "s1", "--state-dir", r1)
        assert res.returncode == 0 and "already drained" in res.stdout, res
        res = lvsbus("server", "disable", "echo", "nope", "--state-dir", r1)
        assert res.returncode == 1 and "no active real server echo/nope" in res.stderr, res
        res = lvsbus("server", "enable", "echo", "s1", "--state-dir", r1)
        assert res.returncode == 0 and "now enabled" in res.stdout, res
        assert weights("r1")[-1] == 1

        # on the backup lvsd is a standby: the drain is recorded, answered when r2 becomes active
        res = lvsbus("server", "drain", "echo", "s1", "--state-dir", r2, "--wait", "1")
        assert res.returncode == 0 and "has not answered" in res.stdout, res
        assert not c.events("r2", ("lvsd.server_action_taken",))

        res = lvsbus("handover", "--state-dir", r2)  # r2 is not active: refused
        assert res.returncode == 1 and "refused: this router is BACKUP" in res.stderr, res
        res = lvsbus("handover", "--state-dir", r1, "--hold", "60")
        assert res.returncode == 0 and "ACTIVE -> BACKUP (handover)" in res.stdout, res
        c.wait(lambda: c.roles() == {"r1": "BACKUP", "r2": "ACTIVE"}, 3.0, "r2 active after the handover")
        assert c.events("r2", ("router.role_changed",))[-1].payload["reason"] == "peer_stepped_down"
        c.wait_answer("r2")
        c.wait(lambda: c.events("r2", ("lvsd.server_action_taken",)), 5.0, "r2's lvsd answers the drain")
        c.wait(lambda: weights("r2")[-1:] == [0], 5.0, "s1 drained in r2's desired table")
    finally:
        c.stop()
        if server.poll() is None:
            server.kill()  # by PID: the responder this test started
            server.wait(5)
    from lvsbus_tools.replay import verify

    for r in t.routers:
        rep = verify(str(c.state(r) / "log"))
        assert rep.ok, rep.format()
    from lvsbus_tools.timeline import describe, read_events

    text = [describe(e) for e in read_events(str(c.state("r1") / "log")) if e.type.startswith("operator.")]
    assert any("asks: drain echo/s1 (kernel upgrade)" in line for line in text), text
