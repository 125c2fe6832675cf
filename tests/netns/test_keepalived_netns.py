"""Two real ``lvsbus router`` processes in network namespaces, each run on its own keepalived.conf
as a keepalived pair would be (docs/keepalived.md): unicast peers, two vrrp_instances run
active/active (VI_WEB: r1 MASTER, r2 BACKUP; VI_MAIL the other way round), a virtual_server on
each VIP with a MISC_CHECK. r1 holds the web VIP, r2 the mail VIP; SIGKILL r1: r2 takes the web VIP
within a few adverts, and its mail instance is not disturbed (no role change, every probe answered)."""
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

MAIL_VIP = "10.99.1.51"
CONF = """! {name}'s keepalived.conf (lvsbus reads it unchanged)
global_defs {{
    router_id {name}
}}
vrrp_instance VI_WEB {{
    state {web_state}
    interface eth0
    virtual_router_id 50
    priority {web_priority}
    advert_int {advert}
    unicast_src_ip {me}
    unicast_peer {{
        {peer}
    }}
    virtual_ipaddress {{
        {vip}/32 dev eth0
    }}
}}
vrrp_instance VI_MAIL {{
    state {mail_state}
    interface eth0
    virtual_router_id 51
    priority {mail_priority}
    advert_int {advert}
    unicast_src_ip {me}
    unicast_peer {{
        {peer}
    }}
    virtual_ipaddress {{
        {mail_vip}/32 dev eth0
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
virtual_server {mail_vip} 7 {{
    delay_loop 1
    lb_algo rr
    lb_kind DR
    protocol UDP
    real_server {server} 7 {{
        MISC_CHECK {{
            misc_path /bin/true
        }}
    }}
}}
"""


def group_roles(c, r: str) -> dict[str, str]:
    """Each instance's last role on router ``r``, from its log."""
    return {e.payload["group"]: e.payload["new"] for e in c.events(r, ("router.role_changed",))}


@pytest.fixture(scope="module")
def topo(netns_module):  # noqa: F811  (the fixture)
    t = netns_module(routers=2)
    start_responders(t, t.routers)
    return t


def test_a_keepalived_active_active_pair_fails_over_one_instance(topo, tmp_path):
    with clusters(topo, tmp_path) as make:
        c = make()
        addr = {r: topo.router_address(i) for i, r in enumerate(topo.routers, 1)}
        for i, r in enumerate(topo.routers):
            other = topo.routers[1 - i]
            conf = tmp_path / f"{r}-keepalived.conf"
            first = i == 0
            conf.write_text(CONF.format(name=r.upper(), web_state="MASTER" if first else "BACKUP",
                                        web_priority=200 if first else 100, mail_state="BACKUP" if first else "MASTER",
                                        mail_priority=100 if first else 200, advert=ADVERT, me=addr[r],
                                        peer=addr[other], vip=VIP, mail_vip=MAIL_VIP, server=f"{NAT}.101"))
            c.procs[r] = topo.popen(
                r, [sys.executable, "-m", "lvsbus.cli", "router", "--config", str(conf), "--state-dir", str(c.state(r))],
                stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{r}.err", "ab"), cwd=str(ROOT),
                env={**os.environ, "LVSBUS_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT),
                     "LVSBUS_HEARTBEAT_KEY_FILE": str(tmp_path / "hb.key")},
            )
        # routers are named by address in a keepalived.conf (lvs-10-99-1-1): the helper's steady wait names r1
        r1_name = "lvs-" + addr["r1"].replace(".", "-")
        steady = {"r1": {"VI_WEB": "ACTIVE", "VI_MAIL": "BACKUP"}, "r2": {"VI_WEB": "BACKUP", "VI_MAIL": "ACTIVE"}}
        c.wait(lambda: {r: group_roles(c, r) for r in topo.routers} == steady and topo.has_address("r1", VIP)
               and topo.has_address("r2", MAIL_VIP), 20.0, "r1 active for web, r2 for mail")
        c.wait(lambda: [e for e in c.events("r2", ("pulse.heartbeat_received",))
                        if e.payload["peer"] == r1_name and e.payload["role"] == "ACTIVE"], 3.0, "r2 hears r1 as ACTIVE")
        time.sleep(max(0.0, c.events("r2", ("router.role_changed",))[-1].wall_ns / 1e9 + 3 * ADVERT + 0.05 - time.time()))
        assert not topo.has_address("r1", MAIL_VIP) and not topo.has_address("r2", VIP)
        assert c.probe(1.0) == "r1" and c.probe(1.0, vip=MAIL_VIP) == "r2"
        (loaded,) = c.events("r1", ("config.loaded",))[:1]
        assert loaded.payload["format"] == "keepalived"
        assert [g["name"] for g in loaded.payload["model"]["groups"]] == ["VI_WEB", "VI_MAIL"]
        mail_changes = len([e for e in c.events("r2", ("router.role_changed",)) if e.payload["group"] == "VI_MAIL"])

        t0 = time.monotonic()
        os.killpg(c.procs["r1"].pid, signal.SIGKILL)  # the whole router
        c.procs["r1"].wait(5)
        topo.run("r1", "ip", "addr", "del", f"{VIP}/32", "dev", "eth0", check=False)  # the dead host holds nothing
        lost_mail = 0
        deadline = t0 + 3 * ADVERT * 8
        while c.probe(0.05) != "r2":  # web fails over; the mail VIP answers from r2 all along
            lost_mail += c.probe(0.2, vip=MAIL_VIP) != "r2"
            assert time.monotonic() < deadline, "r2 never answered for the web VIP"
        elapsed = time.monotonic() - t0
        c.wait(lambda: group_roles(c, "r2") == {"VI_WEB": "ACTIVE", "VI_MAIL": "ACTIVE"}, 3.0, "r2 ACTIVE for both")
        took = [e for e in c.events("r2", ("router.role_changed",)) if e.payload["new"] == "ACTIVE"][-1]
        assert took.payload["group"] == "VI_WEB" and took.payload["reason"] == "peer_dead"
        assert c.probe(1.0, vip=MAIL_VIP) == "r2"
        assert lost_mail == 0
        assert len([e for e in c.events("r2", ("router.role_changed",)) if e.payload["group"] == "VI_MAIL"]) == mail_changes
        print(f"keepalived active/active pair: r2 answered for web {elapsed * 1000:.0f} ms after r1's SIGKILL, "
              "mail undisturbed")
        assert elapsed < 3 * ADVERT * 4
