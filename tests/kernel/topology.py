"""The datapath tests' shared topology, in the VM: three busybox httpd real servers in
namespaces on a bridge, a client namespace, the VIP on the router (the VM's root namespace), by NAT
or by direct routing (the ``topology`` fixture's parameter); ``requests(n)`` makes n HTTP requests
from the client and returns who answered. Used by test_datapath and test_stats."""
from __future__ import annotations

import subprocess
import sys

import pytest

VIP = "10.40.0.1"
RS = {"rs1": "10.20.0.11", "rs2": "10.20.0.12", "rs3": "10.20.0.13"}

CONFIG = f"""
[router.lvs1]
address = "10.30.0.1"

[virtual.web]
address = "{VIP}"
port = 80
scheduler = "rr"
forwarding = "FORWARDING"

[virtual.web.check]
kind = "tcp_connect"
interval = 0.5
timeout = 0.5
rise = 1
fall = 2
""" + "".join(f"""
[virtual.web.server.{n}]
address = "{a}"
""" for n, a in RS.items())

CLIENT = """
import http.client, sys
out = []
for i in range(int(sys.argv[1])):
    try:
        c = http.client.HTTPConnection(sys.argv[2], 80, timeout=5)
        c.request("GET", "/")
        out.append(c.getresponse().read().decode().strip())
        c.close()
    except OSError as e:
        out.append("ERR:" + type(e).__name__)
print(" ".join(out))
"""


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(params=["nat", "direct"])
def topology(request, tmp_path):
    # NAT: the real servers' gateway is the router. Direct routing: each real server also holds
    # the VIP on lo (ARP silenced) and answers the client itself, through its gateway's routing.
    forwarding = request.param
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "link", "add", "br-rs", "type", "bridge")
    sh("ip", "addr", "add", "10.20.0.1/24", "dev", "br-rs")
    sh("ip", "link", "set", "br-rs", "up")
    httpd = {}
    for n, a in RS.items():
        sh("ip", "netns", "add", n)
        sh("ip", "link", "add", f"v-{n}", "type", "veth", "peer", "name", "eth0", "netns", n)
        sh("ip", "link", "set", f"v-{n}", "master", "br-rs", "up")
        sh("ip", "-n", n, "addr", "add", f"{a}/24", "dev", "eth0")
        sh("ip", "-n", n, "link", "set", "eth0", "up")
        sh("ip", "-n", n, "link", "set", "lo", "up")
        sh("ip", "-n", n, "route", "add", "default", "via", "10.20.0.1")
        if forwarding == "direct":
            sh("ip", "-n", n, "addr", "add", f"{VIP}/32", "dev", "lo")
            for k, v in (("arp_ignore", "1"), ("arp_announce", "2")):
                sh("ip", "netns", "exec", n, "sysctl", "-qw", f"net.ipv4.conf.all.{k}={v}")
        www = tmp_path / n
        www.mkdir()
        (www / "index.html").write_text(n + "\n")
        httpd[n] = subprocess.Popen(["ip", "netns", "exec", n, "busybox", "httpd", "-f", "-p", "80", "-h", str(www)])
    sh("ip", "netns", "add", "client")
    sh("ip", "link", "add", "v-client", "type", "veth", "peer", "name", "eth0", "netns", "client")
    sh("ip", "-n", "client", "link", "set", "eth0", "up")
    if forwarding == "nat":  # the client on its own network, routed through the router
        sh("ip", "addr", "add", "10.30.0.1/24", "dev", "v-client")
        sh("ip", "link", "set", "v-client", "up")
        sh("ip", "-n", "client", "addr", "add", "10.30.0.2/24", "dev", "eth0")
        sh("ip", "-n", "client", "route", "add", "default", "via", "10.30.0.1")
    else:  # direct routing: the real servers answer the client themselves, on the shared LAN
        # (a reply with the VIP as source coming back through the router would be a martian there)
        sh("ip", "link", "set", "v-client", "master", "br-rs", "up")
        sh("ip", "-n", "client", "addr", "add", "10.20.0.100/24", "dev", "eth0")
        sh("ip", "-n", "client", "route", "add", f"{VIP}/32", "via", "10.20.0.1")
    sh("ip", "addr", "add", f"{VIP}/32", "dev", "lo")  # the VIP (pulse's job on a real router)
    yield forwarding, httpd
    for p in httpd.values():
        p.kill()
    for n in [*RS, "client"]:
        subprocess.run(["ip", "netns", "del", n], capture_output=True)
    subprocess.run(["ip", "link", "del", "br-rs"], capture_output=True)
    subprocess.run(["ip", "addr", "del", f"{VIP}/32", "dev", "lo"], capture_output=True)


def requests(n: int) -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", "client", sys.executable, "-c", CLIENT, str(n), VIP],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    return out.split()
