"""keepalived's checkers as nanny runs them, from a router's namespace to real servers of their kind
in theirs: PING_CHECK (ICMP and ICMPv6; a raw socket, and a ping socket when ping_group_range
allows it), SMTP_CHECK against aiosmtpd, DNS_CHECK against dnsmasq, SSL_GET with a test CA; then
the failure each is meant to detect (echo ignored, a host gone, the mail server killed, a name
the resolver refuses, a certificate for another name)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
S1, S2, GONE = "10.99.3.101", "10.99.3.102", "10.99.3.150"
S1_6 = "fd99:3::101"

TLS_SERVER = r"""
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"secure and well"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.HTTPServer((sys.argv[1], 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"""


def run_checks(topo, items: list) -> tuple[list, bool]:
    r = topo.run("r1", "env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "tests.helpers.run_checks", json.dumps(items),
                 check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    return [tuple(x) for x in out["results"]], out["raw_icmp"]


def pki(d: Path) -> None:
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")

    def sh(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=d)
    sh("req", "-x509", *ec, "-days", "1", "-subj", "/CN=lvsbus test CA", "-keyout", "ca.key", "-out", "ca.pem")
    sh("req", *ec, "-subj", "/CN=rs1", "-keyout", "srv.key", "-out", "srv.csr")
    (d / "srv.ext").write_text(f"subjectAltName=DNS:www.test,IP:{S1}\n")
    sh("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
       "-extfile", "srv.ext", "-out", "srv.pem")


@pytest.mark.netns
def test_keepalived_checkers_against_real_servers_in_namespaces(netns, tmp_path):
    for exe in ("dnsmasq", "openssl"):
        if shutil.which(exe) is None:
            pytest.skip(f"{exe} is not installed (scripts/setup.sh installs it)")
    topo = netns(routers=1, servers=2, private=False)
    topo.run("r1", "ip", "addr", "add", "fd99:3::11/64", "dev", "eth2", "nodad")
    topo.run("s1", "ip", "addr", "add", f"{S1_6}/64", "dev", "eth0", "nodad")
    pki(tmp_path)
    smtp = topo.popen("s1", [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"{S1}:25"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    topo.popen("s1", [sys.executable, "-c", TLS_SERVER, S1, str(tmp_path / "srv.pem"), str(tmp_path / "srv.key")],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    topo.popen("s2", ["dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
                      f"--listen-address={S2}", "--pid-file=", "--user=root", "--address=/ok.test/10.1.2.3",
                      "--address=/gone.test/"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = {"interval": 2.0, "timeout": 1.0}
    ca = str(tmp_path / "ca.pem")
    ping4 = [S1, 0, {"kind": "ping", **t}]
    ping6 = [S1_6, 0, {"kind": "ping", **t}]
    smtp_chk = [S1, 25, {"kind": "smtp", "helo_name": "lvs1.test", **t}]
    dns_ok = [S2, 53, {"kind": "dns", "dns_type": "A", "dns_name": "ok.test", **t}]
    https_ok = [S1, 443, {"kind": "https", "tls_verify": True, "tls_ca": ca, "host": "www.test", "body_regex": "well", **t}]
    deadline = time.monotonic() + 15  # the servers start
    while True:
        results, raw = run_checks(topo, [ping4, ping6, smtp_chk, dns_ok, https_ok])
        if all(ok for ok, _ in results) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert results == [(True, "ok")] * 5
    assert raw is True  # as root with ping_group_range "1 0" (the default): a raw socket

    # the failure each check is there to find
    topo.run("s1", "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1")
    smtp.kill()
    smtp.wait()
    results, _ = run_checks(topo, [
        ping4, [GONE, 0, {"kind": "ping", **t}], smtp_chk,
        [S2, 53, {"kind": "dns", "dns_type": "A", "dns_name": "gone.test", **t}],
        [S1, 443, {"kind": "https", "tls_verify": True, "tls_ca": ca, "host": "evil.test", **t}],
        [S1, 443, {"kind": "https", "tls_verify": True, "host": "www.test", **t}],  # not signed by a system CA
        ping6,
    ])
    assert results[0] == (False, "timeout")  # echo ignored
    assert results[1][0] is False and results[1][1] in ("timeout", "unreachable")  # no such host
    assert results[2] == (False, "refused")
    assert results[3] == (False, "bad_status")  # NXDOMAIN
    assert results[4] == (False, "tls_error") and results[5] == (False, "tls_error")
    assert results[6] == (True, "ok")  # ICMPv6 echo is another switch

    # a ping socket, with no privilege, where the namespace allows nanny's group one
    topo.run("r1", "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
    topo.run("s1", "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=0")
    results, raw = run_checks(topo, [ping4, ping6])
    assert raw is False and results == [(True, "ok"), (True, "ok")]


# keepalived's HTTP_GET (two urls, an MD5 digest as genhash prints it, a 404 expected) and its
# UDP_CHECK (a DNS query as payload, the reply's first bytes, the query's ID, required), as an
# operator writes them, against a real HTTP server (Python's http.server) and a real resolver (dnsmasq)
KA_CHECKS = """vrrp_instance VI_1 {{
    interface eth1
    priority 150
    unicast_src_ip 10.99.1.11
    unicast_peer {{ 10.99.1.12 }}
    virtual_ipaddress {{ 10.99.2.100/24 }}
}}
virtual_server 10.99.2.100 80 {{
    lb_kind NAT
    delay_loop 2
    real_server {s1} 80 {{
        HTTP_GET {{
            url {{
                path /health
                digest {digest}
            }}
            url {{
                path /nothing-here
                status_code 404
            }}
            connect_timeout 1
        }}
    }}
}}
virtual_server 10.99.2.100 53 {{
    protocol UDP
    lb_kind NAT
    delay_loop 2
    real_server {s2} 53 {{
        UDP_CHECK {{
            payload {query}
            require_reply {reply}
            connect_timeout 1
        }}
    }}
}}
"""


def dns_query(qid: bytes, name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return qid + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x00\x01\x00\x01"


@pytest.mark.netns
def test_keepalived_http_get_and_udp_check_from_a_keepalived_conf_against_real_servers(netns, tmp_path):
    import dataclasses
    import hashlib

    from lvsbus.config import loads

    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq is not installed (scripts/setup.sh installs it)")
    topo = netns(routers=1, servers=2, private=False)
    www = tmp_path / "www"
    www.mkdir()
    (www / "health").write_bytes(b"healthy\n")
    http = topo.popen("s1", [sys.executable, "-m", "http.server", "--bind", S1, "--directory", str(www), "80"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dns = topo.popen("s2", ["dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
                            f"--listen-address={S2}", "--pid-file=", "--user=root", "--address=/ok.test/10.1.2.3"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def checks(digest: str, reply: bytes) -> list:
        text = KA_CHECKS.format(s1=S1, s2=S2, digest=digest, query=dns_query(b"\xbe\xef", "ok.test").hex(),
                                reply=reply.hex())
        cfg = loads(text, "keepalived.conf", format="keepalived").config
        return [[vs.servers[0].address, vs.port, dataclasses.asdict(vs.check)] for vs in cfg.virtual_services]

    good = checks(hashlib.md5(b"healthy\n").hexdigest(), b"\xbe\xef")
    assert [c[2]["kind"] for c in good] == ["http", "udp"] and len(good[0][2]["urls"]) == 2
    deadline = time.monotonic() + 15  # the servers start
    while True:
        results, _ = run_checks(topo, good)
        if all(ok for ok, _ in results) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert results == [(True, "ok"), (True, "ok")]

    # what each is there to find: a page that changed, a reply that is not the answer to the query
    bad = checks(hashlib.md5(b"sick\n").hexdigest(), b"\xde\xad")
    assert run_checks(topo, bad)[0] == [(False, "bad_digest"), (False, "no_match")]
    (www / "health").unlink()  # the page gone: 404 where 200 is wanted
    assert run_checks(topo, good)[0][0] == (False, "bad_status")
    # and the servers gone: refused, and ICMP port unreachable for the datagram
    for p in (http, dns):
        p.kill()
        p.wait()
    assert run_checks(topo, good)[0] == [(False, "refused"), (False, "refused")]
