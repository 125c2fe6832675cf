"""Failover groups on two real routers in network namespaces: the active/active pair. ``web``
(VIP 10.99.1.50) ranks r1 first, ``mail`` (VIP 10.99.1.51) r2 first: each router holds one group.
SIGKILL r1: r2 holds both, and mail's clients lose nothing meanwhile; r1 comes back and takes web
back, mail still undisturbed (no role change on r2, no lost probe).

Topology and routers as tests/netns/test_router_netns.py (tests/helpers/routers.py): a UDP
responder in each router namespace answers with its router's name whatever address is asked.
"""
from __future__ import annotations

import os
import select
import signal
import threading
import time

import pytest

from lvsbus.demo.netns import CLIENT, VIP
from lvsbus.wire import catalog  # noqa: F401
from tests.helpers.routers import DEADTIME, clusters, start_responders

pytestmark = [pytest.mark.netns, pytest.mark.slow]

MAIL_VIP = "10.99.1.51"
GROUPS = f"""
[group.web]
priority = {{r1 = 200, r2 = 100}}

[group.mail]
priority = {{r1 = 100, r2 = 200}}

[virtual.mail]
address = "{MAIL_VIP}"
device = "eth0"
port = 7
protocol = "udp"
scheduler = "rr"
forwarding = "direct"
group = "mail"

[virtual.mail.check]
kind = "udp"

[virtual.mail.server.s1]
address = "10.99.3.101"
"""


@pytest.fixture(scope="module")
def topo(netns_module):  # noqa: F811  (the fixture)
    t = netns_module(routers=2)
    start_responders(t, t.routers)
    return t


@pytest.fixture
def cluster(topo, tmp_path):
    with clusters(topo, tmp_path) as make:
        yield make


class Watch(threading.Thread):
    """Probes one VIP every 10 ms from the client, noting who answered each probe (None: lost)."""

    def __init__(self, topo, vip: str) -> None:
        super().__init__(daemon=True)
        self.sock = topo.socket("c")
        self.sock.bind((CLIENT, 0))
        self.sock.setblocking(False)
        self.vip, self.answers, self.halt = vip, [], threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            n += 1
            try:
                self.sock.sendto(b"w%d" % n, (self.vip, 7))
            except OSError:
                pass
            got = None
            end = time.monotonic() + 0.05
            while got is None and time.monotonic() < end:
                select.select([self.sock], [], [], 0.01)
                try:
                    data, _ = self.sock.recvfrom(2048)
                except BlockingIOError:
                    continue
                name, _, body = data.partition(b" ")
                if body == b"w%d" % n:
                    got = name.decode()
            self.answers.append(got)
            time.sleep(0.01)

    def stop(self) -> list:
        self.halt.set()
        self.join(5)
        self.sock.close()
        return self.answers


def unit_changes(c, r: str, group: str) -> list[tuple[str, str, str]]:
    return [(e.payload["old"], e.payload["new"], e.payload["reason"]) for e in c.events(r, ("router.role_changed",))
            if e.payload["group"] == group]


def test_the_active_active_pair_fails_over_one_group_and_never_disturbs_the_other(topo, cluster):
    c = cluster()
    text = c.config.read_text().replace('[virtual.echo]\n', '[virtual.echo]\ngroup = "web"\n')
    c.config.write_text(text + GROUPS)
    for r in topo.routers:
        topo.run(r, "ip", "addr", "del", f"{MAIL_VIP}/32", "dev", "eth0", check=False)
    try:
        c.start()
        c.wait(lambda: topo.has_address("r1", VIP) and topo.has_address("r2", MAIL_VIP), 20.0, "each its group")
        c.wait(lambda: unit_changes(c, "r1", "mail") and unit_changes(c, "r2", "web"), 5.0, "both backups")
        time.sleep(DEADTIME + 0.2)  # the backups have listened and heard the actives
        assert not topo.has_address("r1", MAIL_VIP) and not topo.has_address("r2", VIP)
        assert c.wait_answer("r1", timeout=3.0) is not None  # web's VIP (the Cluster's probe)

        mail = Watch(topo, MAIL_VIP)
        mail.start()
        time.sleep(0.5)
        mail_changes = unit_changes(c, "r2", "mail")
        t0 = time.monotonic()
        os.killpg(c.procs["r1"].pid, signal.SIGKILL)
        c.procs["r1"].wait(5)
        topo.run("r1", "ip", "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)  # a dead host holds nothing
        c.wait_answer("r2", timeout=DEADTIME * 8)
        web_failover = time.monotonic() - t0
        assert unit_changes(c, "r2", "web")[-1] == ("BACKUP", "ACTIVE", "peer_dead")
        time.sleep(0.5)

        # r1 returns: it takes web back (preempt), mail stays on r2
        c.start("r1")
        c.wait(lambda: c.probe(0.1) == "r1", 20.0, "web back on r1")
        time.sleep(0.5)
        answers = mail.stop()
        assert len(answers) > 50
        lost = answers.count(None)
        assert lost == 0 and set(answers) == {"r2"}, (lost, set(answers))
        assert unit_changes(c, "r2", "mail") == mail_changes  # mail never moved on r2
        assert unit_changes(c, "r2", "web")[-1][:2] == ("ACTIVE", "BACKUP")
        assert unit_changes(c, "r1", "web")[-1] == ("BACKUP", "ACTIVE", "preempt")
        fences = [e.payload for e in c.events("r1", ("pulse.send_fence",))]
        assert fences and all(p["groups"] == ["web"] for p in fences)
        starts = [e.payload["groups"] for e in c.events("r2", ("pulse.start_lvsd",))]
        assert starts[-3:] == [["mail"], ["web", "mail"], ["mail"]]  # lvsd followed: never stopped
        assert web_failover < DEADTIME + 1.0
    finally:
        for r in topo.routers:
            topo.run(r, "ip", "addr", "del", f"{MAIL_VIP}/32", "dev", "eth0", check=False)
