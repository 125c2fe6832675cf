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
