"""End to end through the real IPVS datapath, in the VM: a client namespace, a VIP on the router
(the VM's root namespace), three real servers in namespaces serving HTTP, by NAT and by direct routing. nanny, lvsd
and the applier run as real processes on a real bus. Traffic spreads by the scheduler (rr); a real
server stops, nanny marks it DOWN, lvsd drops it, the applier removes it from the kernel, and no
client request goes to it afterwards. And one firewall mark grouping two ports under NAT, from
lvs.cf: each connection keeps its port on the real server."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from lvsbus.ipvs.table import ServiceKey

from .conftest import ipvsadm
from .topology import CONFIG, RS, VIP, requests, sh, topology  # noqa: F401  (topology: the fixture)
from .harness import KernelRig, kernel_table

def test_spread_down_removed_no_traffic(tmp_path, topology, ipvs):
    forwarding, httpd = topology
    cfg = tmp_path / "lvs.toml"
    cfg.write_text(CONFIG.replace("FORWARDING", forwarding))
    r = KernelRig(tmp_path, cfg)
    try:
        r.start("ipvs")
        r.start("nanny")
        r.start("lvsd")
        key = ServiceKey.tcp(VIP, 80)

        def dests():
            t = kernel_table()
            return set(t[key].dests) if key in t else set()

        r.wait(lambda: dests() == {f"{a}:80" for a in RS.values()}, 120, "three real servers in the kernel", every=0.5)
        got = Counter(requests(30))
        assert got == Counter({"rs1": 10, "rs2": 10, "rs3": 10}), got  # rr: an exact third each

        assert {d.forwarding for d in kernel_table()[key].dests.values()} == {forwarding}
        httpd["rs2"].kill()  # rs2 stops serving
        took = r.wait(lambda: f"{RS['rs2']}:80" not in dests(), 60, "rs2 removed from the kernel", every=0.25)
        down = [e for e in r.events("health.real_server_down") if e.payload["server"] == "rs2"]
        assert down, "nanny marked rs2 DOWN"
        batches = {e.payload["batch"]: e.payload["ops"] for e in r.events("ipvs.apply")}
        applied = [op for e in r.events("ipvs.ops_applied")
                   for op in batches[e.payload["batch"]][e.payload["first"]:e.payload["first"] + e.payload["count"]]
                   if op["op"] == "del_dest"]
        assert applied and applied[-1]["dest"] == f"{RS['rs2']}:80"
        got = Counter(requests(30))
        assert got == Counter({"rs1": 15, "rs3": 15}), got  # nothing to rs2, no failed request
        print(f"rs2 out of the kernel {took:.1f}s after it stopped")
        r.verify_replay("nanny", "lvsd", "ipvs")
    finally:
        r.close()


# -- one firewall mark for two ports under NAT, written in lvs.cf --------------------------------

FW_VIP, FW_RS, FW_MARK = "10.41.0.1", "10.21.0.11", 80
# Piranha's lvs.cf, with lvsbus's `port = 0` in the server block: keep the client's port (the
# real server's port 0 in IPVS); nanny checks the virtual's `port` (80). The router's address is
# its side of the client link.
FW_LVSCF = f"""
primary = 10.31.0.1
network = nat
keepalive = 0.5
deadtime = 2
virtual web {{
    address = {FW_VIP} lo
    fwmark = {FW_MARK}
    port = 80
    scheduler = rr
    timeout = 1
    server fw1 {{
        address = {FW_RS}
        port = 0
    }}
}}
"""

FW_CLIENT = """
import http.client, sys
out = []
for port in sys.argv[2:]:
    try:
        c = http.client.HTTPConnection(sys.argv[1], int(port), timeout=5)
        c.request("GET", "/")
        out.append(port + "=" + c.getresponse().read().decode().strip())
        c.close()
    except OSError as e:
        out.append(port + "=ERR:" + type(e).__name__)
print(" ".join(out))
"""


@pytest.fixture
def fwmark_nat(tmp_path):
    """A real server serving HTTP on 80 and 443 (each says which port it is), a client on its own
    network routed through the router, and the router's mark: TCP to the VIP on 80 or 443 gets
    mark 80 (tc on the client link's ingress: the VM has no iptables; IPVS sees skb->mark)."""
    p = f"f{os.getpid() % 100000}"  # per-run names
    rs, cl, br = f"{p}rs", f"{p}cl", f"{p}br"
    names = {"rs": rs, "client": cl}
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
    httpd: list[subprocess.Popen] = []
    try:
        sh("ip", "link", "add", br, "type", "bridge")
        sh("ip", "addr", "add", "10.21.0.1/24", "dev", br)
        sh("ip", "link", "set", br, "up")
        sh("ip", "netns", "add", rs)
        sh("ip", "link", "add", f"v{rs}", "type", "veth", "peer", "name", "eth0", "netns", rs)
        sh("ip", "link", "set", f"v{rs}", "master", br, "up")
        sh("ip", "-n", rs, "addr", "add", f"{FW_RS}/24", "dev", "eth0")
        sh("ip", "-n", rs, "link", "set", "eth0", "up")
        sh("ip", "-n", rs, "link", "set", "lo", "up")
        sh("ip", "-n", rs, "route", "add", "default", "via", "10.21.0.1")
        for port in (80, 443):
            www = tmp_path / f"www{port}"
            www.mkdir()
            (www / "index.html").write_text(f"port{port}\n")
            httpd.append(subprocess.Popen(["ip", "netns", "exec", rs, "busybox", "httpd", "-f", "-p", str(port),
                                           "-h", str(www)]))
        sh("ip", "netns", "add", cl)
        sh("ip", "link", "add", f"v{cl}", "type", "veth", "peer", "name", "eth0", "netns", cl)
        sh("ip", "addr", "add", "10.31.0.1/24", "dev", f"v{cl}")
        sh("ip", "link", "set", f"v{cl}", "up")
        sh("ip", "-n", cl, "addr", "add", "10.31.0.2/24", "dev", "eth0")
        sh("ip", "-n", cl, "link", "set", "eth0", "up")
        sh("ip", "-n", cl, "route", "add", "default", "via", "10.31.0.1")
        sh("tc", "qdisc", "add", "dev", f"v{cl}", "clsact")
        for port in (80, 443):
            sh("tc", "filter", "add", "dev", f"v{cl}", "ingress", "protocol", "ip", "flower", "ip_proto", "tcp",
               "dst_ip", FW_VIP, "dst_port", str(port), "action", "skbedit", "mark", str(FW_MARK))
        sh("ip", "addr", "add", f"{FW_VIP}/32", "dev", "lo")  # the VIP (pulse's job on a real router)
        yield names
    finally:
        for h in httpd:
            h.kill()
            h.wait()
        for n in (rs, cl):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        subprocess.run(["ip", "link", "del", br], capture_output=True)
        subprocess.run(["ip", "addr", "del", f"{FW_VIP}/32", "dev", "lo"], capture_output=True)


def test_fwmark_nat_keeps_each_connections_port(tmp_path, fwmark_nat, ipvs):
    cfg = tmp_path / "lvs.cf"
    cfg.write_text(FW_LVSCF)
    r = KernelRig(tmp_path, cfg, local_router="primary")
    try:
        r.start("ipvs")
        r.start("nanny")
        r.start("lvsd")
        key = ServiceKey.mark(FW_MARK)

        def dests():
            t = kernel_table()
            return set(t[key].dests) if key in t else set()

        # nanny checked port 80 (the virtual's port) and the real server is in with port 0
        r.wait(lambda: dests() == {f"{FW_RS}:0"}, 120, "the real server in the kernel with port 0", every=0.5)
        up = [e for e in r.events("health.real_server_up") if e.payload["server"] == "fw1"]
        assert up, "nanny brought fw1 up"
        assert "-a -f 80 -r 10.21.0.11:0 -m -w 1" in ipvsadm("--save", "-n")
        out = subprocess.run(["ip", "netns", "exec", fwmark_nat["client"], sys.executable, "-c", FW_CLIENT, FW_VIP,
                              "80", "443", "443", "80"], check=True, capture_output=True, text=True, timeout=120).stdout
        # each connection reached the real server's port it was sent to, through the one mark
        assert out.split() == ["80=port80", "443=port443", "443=port443", "80=port80"], out
        r.stop_and_settle("nanny", "lvsd", "ipvs")
        r.verify_replay("nanny", "lvsd", "ipvs")
    finally:
        r.close()
