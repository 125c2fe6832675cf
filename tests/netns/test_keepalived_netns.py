"""Two real ``lvsbus router`` processes in network namespaces, each run on its own keepalived.conf
as a keepalived pair would be (docs/keepalived.md): the MASTER's file on r1, the BACKUP's on r2,
unicast peers, one vrrp_instance, a virtual_server with a MISC_CHECK. r1 holds the VIP; SIGKILL
r1: r2 takes the VIP within a few adverts."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lvsbus.demo.netns import NAT, VIP
from lvsbus.wire import catalog  # noqa: F401
from tests.helpers.routers import ROOT, clusters, start_responders

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ADVERT = 0.2

CONF = """! {name}'s keepalived.conf (lvsbus reads it unchanged)
global_defs {{
    router_id {name}
}}
vrrp_instance VI_ECHO {{
    state {state}
    interface eth0
    virtual_router_id 50
    priority {priority}
    advert_int {advert}
    unicast_src_ip {me}
    unicast_peer {{
        {peer}
    }}
    virtual_ipaddress {{
        {vip}/32 dev eth0
    }}
}}
virtual_server {vip} 7 {{
    delay_loop 1
    lb_algo rr
    lb_kind DR
    protocol UDP
    real_server {server} 7 {{
        MISC_CHECK {{
            misc_path /bin/true
            misc_timeout 1
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def topo(netns_module):  # noqa: F811  (the fixture)
    t = netns_module(routers=2)
    start_responders(t, t.routers)
    return t


def test_a_keepalived_pair_fails_over(topo, tmp_path):
    with clusters(topo, tmp_path) as make:
        c = make()
        addr = {r: topo.router_address(i) for i, r in enumerate(topo.routers, 1)}
        for i, r in enumerate(topo.routers):
            other = topo.routers[1 - i]
            conf = tmp_path / f"{r}-keepalived.conf"
            conf.write_text(CONF.format(name=r.upper(), state="MASTER" if i == 0 else "BACKUP",
                                        priority=200 if i == 0 else 100, advert=ADVERT, me=addr[r],
                                        peer=addr[other], vip=VIP, server=f"{NAT}.101"))
            c.procs[r] = topo.popen(
                r, [sys.executable, "-m", "lvsbus.cli", "router", "--config", str(conf), "--state-dir", str(c.state(r))],
                stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{r}.err", "ab"), cwd=str(ROOT),
                env={**os.environ, "LVSBUS_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT),
                     "LVSBUS_HEARTBEAT_KEY_FILE": str(tmp_path / "hb.key")},
            )
        # routers are named by address in a keepalived.conf (lvs-10-99-1-1): the helper's steady wait names r1
        r1_name = "lvs-" + addr["r1"].replace(".", "-")
        c.wait(lambda: c.roles() == {"r1": "ACTIVE", "r2": "BACKUP"} and topo.has_address("r1", VIP), 20.0, "r1 active")
        c.wait(lambda: [e for e in c.events("r2", ("pulse.heartbeat_received",))
                        if e.payload["peer"] == r1_name and e.payload["role"] == "ACTIVE"], 3.0, "r2 hears r1 as ACTIVE")
        time.sleep(max(0.0, c.events("r2", ("router.role_changed",))[-1].wall_ns / 1e9 + 3 * ADVERT + 0.05 - time.time()))
        assert c.probe(1.0) == "r1"
        (loaded,) = c.events("r1", ("config.loaded",))[:1]
        assert loaded.payload["format"] == "keepalived"
        assert [g["name"] for g in loaded.payload["model"]["groups"]] == ["VI_ECHO"]

        t0 = time.monotonic()
        os.killpg(c.procs["r1"].pid, signal.SIGKILL)  # the whole router
        c.procs["r1"].wait(5)
        topo.run("r1", "ip", "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)  # the dead host holds nothing
        c.wait_answer("r2", timeout=3 * ADVERT * 8)
        elapsed = time.monotonic() - t0
        c.wait(lambda: c.role("r2") == "ACTIVE", 3.0, "r2 ACTIVE in its log")
        took = [e for e in c.events("r2", ("router.role_changed",)) if e.payload["new"] == "ACTIVE"][-1]
        assert took.payload["group"] == "VI_ECHO" and took.payload["reason"] == "peer_dead"
        print(f"keepalived pair: r2 answered {elapsed * 1000:.0f} ms after r1's SIGKILL")
        assert elapsed < 3 * ADVERT * 4
