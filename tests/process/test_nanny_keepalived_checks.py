"""The check kinds keepalived users have, against real servers on loopback: SMTP (aiosmtpd, a real
SMTP speaker), DNS (dnsmasq, a real resolver), HTTP with several URLs and MD5 digests, TLS with a
test CA (chain, name and client certificate), UDP with and without a required reply, FILE,
connect_ip and bindto; each with the failure it is meant to detect. PING needs namespaces:
tests/netns/test_checks_netns.py."""
from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from lvsbus.config import Check, CheckKind, HttpUrl
from lvsbus_services.nanny.checks import dns_query, dns_verdict, echo_reply_of, echo_request, file_verdict, run_check

T = 1.0


def chk(kind: str, **kw) -> Check:
    return Check(kind=CheckKind(kind), interval=2.0, timeout=kw.pop("timeout", T), **kw)


def check(address: str, port: int, c: Check) -> tuple[bool, str]:
    return asyncio.run(run_check(address, port, c))


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- SMTP ------------------------------------------------------------------------------------


class _Helo:
    def __init__(self, answer: str | None = None):
        self.seen: list[str] = []
        self.answer = answer

    async def handle_HELO(self, server, session, envelope, hostname):
        self.seen.append(hostname)
        session.host_name = hostname
        return self.answer or f"250 {server.hostname}"


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    made = []

    def start(answer: str | None = None):
        handler = _Helo(answer)
        ctl = Controller(handler, hostname="127.0.0.1", port=free_port(), server_hostname="mx.test")
        ctl.start()
        made.append(ctl)
        return ctl, handler

    yield start
    for ctl in made:
        if ctl._thread is not None:  # not stopped by the test already
            ctl.stop()


def test_smtp_check_passes_on_a_real_smtp_server_and_says_its_helo_name(smtp_server):
    ctl, handler = smtp_server()
    assert check("127.0.0.1", ctl.port, chk("smtp", helo_name="lvs1.example.org")) == (True, "ok")
    assert handler.seen == ["lvs1.example.org"]


def test_smtp_check_fails_on_a_refused_helo_a_bad_banner_and_no_server(smtp_server):
    ctl, _ = smtp_server(answer="550 go away")
    assert check("127.0.0.1", ctl.port, chk("smtp")) == (False, "bad_status")
    ctl.stop()
    assert check("127.0.0.1", ctl.port, chk("smtp")) == (False, "refused")

    async def banner_554():
        async def h(r, w):
            w.write(b"554 5.3.2 no service here\r\n")
            await w.drain()
            await r.read()  # until the checker closes
            w.close()
        srv = await asyncio.start_server(h, "127.0.0.1", 0)
        try:
            return await run_check("127.0.0.1", srv.sockets[0].getsockname()[1], chk("smtp"))
        finally:
            srv.close()
    assert asyncio.run(banner_554()) == (False, "bad_status")


def test_smtp_multi_line_banner_is_read_through():
    async def go():
        async def h(r, w):
            w.write(b"220-mx.test ESMTP\r\n220-more words\r\n220 ready\r\n")
            line = await r.readline()
            assert line.startswith(b"HELO ")
            w.write(b"250-mx.test\r\n250 SIZE 1000\r\n")
            await r.readline()
            w.write(b"221 bye\r\n")
            await w.drain()
            w.close()
        srv = await asyncio.start_server(h, "127.0.0.1", 0)
        try:
            return await run_check("127.0.0.1", srv.sockets[0].getsockname()[1], chk("smtp"))
        finally:
            srv.close()
    assert asyncio.run(go()) == (True, "ok")


# -- DNS -------------------------------------------------------------------------------------


@pytest.fixture
def dnsmasq(tmp_path):
    exe = shutil.which("dnsmasq")
    if exe is None:
        pytest.skip("dnsmasq is not installed (scripts/setup.sh installs dnsmasq-base)")
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen([exe, "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
                             "--listen-address=127.0.0.1", f"--port={port}", "--pid-file=", "--user=root",
                             "--address=/ok.test/10.1.2.3", "--address=/gone.test/", "--log-facility=-"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while check("127.0.0.1", port, chk("dns", dns_type="A", dns_name="ok.test", timeout=0.2))[0] is False:
            assert time.monotonic() < deadline and proc.poll() is None, "dnsmasq did not start"
            time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait()


def test_dns_check_against_dnsmasq(dnsmasq):
    assert check("127.0.0.1", dnsmasq, chk("dns", dns_type="A", dns_name="ok.test")) == (True, "ok")
    assert check("127.0.0.1", dnsmasq, chk("dns", dns_type="A", dns_name="ok.test.")) == (True, "ok")
    # NXDOMAIN (a name the server says does not exist) and REFUSED (it answers for nothing else)
    assert check("127.0.0.1", dnsmasq, chk("dns", dns_type="A", dns_name="gone.test")) == (False, "bad_status")
    assert check("127.0.0.1", dnsmasq, chk("dns", dns_type="SOA", dns_name="")) == (False, "bad_status")


def test_dns_check_fails_with_no_server_and_a_server_that_answers_garbage():
    assert check("127.0.0.1", free_port(socket.SOCK_DGRAM), chk("dns")) == (False, "refused")

    async def garbage():
        loop = asyncio.get_running_loop()

        class P(asyncio.DatagramProtocol):
            def connection_made(self, t):
                self.t = t

            def datagram_received(self, data, addr):
                self.t.sendto(b"\x00\x00" + data[2:], addr)  # another id: not our answer

        t, _ = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
        try:
            return await run_check("127.0.0.1", t.get_extra_info("sockname")[1], chk("dns"))
        finally:
            t.close()
    assert asyncio.run(garbage()) == (False, "bad_response")


def test_dns_wire_format():
    q = dns_query(0x1234, "www.example.org.", "AAAA")
    assert q == (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                 b"\x03www\x07example\x03org\x00\x00\x1c\x00\x01")
    assert dns_query(1, "", "SOA").endswith(b"\x00\x00\x06\x00\x01")  # the root
    ok = b"\x12\x34\x81\x80" + q[4:]
    assert dns_verdict(q, ok) == (True, "ok")
    assert dns_verdict(q, b"\x12\x34\x81\x83" + q[4:]) == (False, "bad_status")  # NXDOMAIN
    assert dns_verdict(q, b"\x12\x35\x81\x80" + q[4:]) == (False, "bad_response")  # another id
    assert dns_verdict(q, b"\x12\x34\x01\x00" + q[4:]) == (False, "bad_response")  # a query, not a reply
    assert dns_verdict(q, b"\x12") == (False, "bad_response")


# -- HTTP: several URLs and digests ------------------------------------------------------------


PAGES = {"/": (200, b"home page"), "/health": (200, b"healthy\n"), "/missing": (404, b"no"),
         "/chunked": (200, None)}


async def _pages(reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ")[1].decode()
        status, body = PAGES.get(path, (404, b"no"))
        if body is None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.0 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
        await writer.drain()
    finally:
        writer.close()


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def http_check(c: Check, ssl_ctx=None) -> tuple[bool, str]:
    async def go():
        srv = await asyncio.start_server(_pages, "127.0.0.1", 0, ssl=ssl_ctx)
        try:
            return await run_check("127.0.0.1", srv.sockets[0].getsockname()[1], c)
        finally:
            srv.close()
    return asyncio.run(go())


def test_http_digest_and_several_urls():
    assert http_check(chk("http", path="/health", digest=md5(b"healthy\n"))) == (True, "ok")
    assert http_check(chk("http", path="/health", digest=md5(b"healthy\n").upper())) == (True, "ok")
    assert http_check(chk("http", path="/health", digest=md5(b"sick\n"))) == (False, "bad_digest")
    assert http_check(chk("http", path="/chunked", digest=md5(b"hello world"))) == (True, "ok")
    both = (HttpUrl("/", digest=md5(b"home page")), HttpUrl("/health", body_regex="heal"))
    assert http_check(chk("http", urls=both)) == (True, "ok")
    # any URL failing fails the check, with its own reason
    assert http_check(chk("http", urls=(*both, HttpUrl("/missing")))) == (False, "bad_status")
    assert http_check(chk("http", urls=(*both, HttpUrl("/missing", status=(404,), digest=md5(b"yes"))))) == \
        (False, "bad_digest")
    assert http_check(chk("http", urls=(HttpUrl("/missing", status=(404,)),))) == (True, "ok")


def test_http_1_1_request_has_host_and_connection_close():
    seen = []

    async def go():
        async def h(r, w):
            seen.append(await r.readuntil(b"\r\n\r\n"))
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await w.drain()
            w.close()
        srv = await asyncio.start_server(h, "127.0.0.1", 0)
        try:
            return await run_check("127.0.0.1", srv.sockets[0].getsockname()[1],
                                   chk("http", http_version="1.1", host="www.test"))
        finally:
            srv.close()
    assert asyncio.run(go()) == (True, "ok")
    assert seen[0].startswith(b"GET / HTTP/1.1\r\n") and b"\r\nHost: www.test\r\n" in seen[0]
    assert b"\r\nConnection: close\r\n" in seen[0]


# -- TLS with a test CA ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA, a server certificate for www.test and 127.0.0.1, a client certificate, and an
    unrelated self-signed certificate (all EC P-256, one day)."""
    if not shutil.which("openssl"):
        pytest.skip("no openssl")
    d = tmp_path_factory.mktemp("pki")

    def sh(*a):
        subprocess.run(["openssl", *map(str, a)], check=True, capture_output=True, cwd=d)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    sh("req", "-x509", *ec, "-days", "1", "-subj", "/CN=lvsbus test CA", "-keyout", "ca.key", "-out", "ca.pem")
    for name, san in (("srv", "DNS:www.test,IP:127.0.0.1"), ("cli", "DNS:lvs1.test")):
        sh("req", *ec, "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        sh("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
           "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    sh("req", "-x509", *ec, "-days", "1", "-subj", "/CN=other", "-keyout", "other.key", "-out", "other.pem",
       "-addext", "subjectAltName=DNS:www.test,IP:127.0.0.1")
    return d


def server_ctx(pki, cert="srv", want_client=False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / f"{cert}.pem", pki / f"{cert}.key")
    if want_client:
        ctx.load_verify_locations(pki / "ca.pem")
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def test_tls_verification_of_the_chain_and_the_name(pki):
    ca = str(pki / "ca.pem")
    good = server_ctx(pki)
    assert http_check(chk("https", tls_verify=True, tls_ca=ca, host="www.test"), good) == (True, "ok")
    assert http_check(chk("https", tls_verify=True, tls_ca=ca), good) == (True, "ok")  # the name: 127.0.0.1
    assert http_check(chk("https", tls_verify=True, tls_ca=ca, host="evil.test"), good) == (False, "tls_error")
    # a certificate the CA did not sign: refused when verifying, accepted as keepalived does when not
    other = server_ctx(pki, "other")
    assert http_check(chk("https", tls_verify=True, tls_ca=ca, host="www.test"), other) == (False, "tls_error")
    assert http_check(chk("https", host="www.test"), other) == (True, "ok")
    assert http_check(chk("https", tls_verify=True, host="www.test"), good) == (False, "tls_error")  # system CAs


def test_tls_client_certificate(pki):
    strict = server_ctx(pki, want_client=True)
    res = http_check(chk("https"), strict)
    assert res[0] is False and res[1] in ("tls_error", "reset", "bad_response"), res
    assert http_check(chk("https", tls_cert=str(pki / "cli.pem"), tls_key=str(pki / "cli.key")), strict) == (True, "ok")


# -- UDP as keepalived's UDP_CHECK -----------------------------------------------------------


def udp_check(c: Check, answer: bytes | None) -> tuple[bool, str]:
    async def go():
        loop = asyncio.get_running_loop()

        class P(asyncio.DatagramProtocol):
            def connection_made(self, t):
                self.t = t

            def datagram_received(self, data, addr):
                if answer is not None:
                    self.t.sendto(answer, addr)

        t, _ = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
        try:
            return await run_check("127.0.0.1", t.get_extra_info("sockname")[1], c)
        finally:
            t.close()
    return asyncio.run(go())


def test_udp_without_a_required_reply_passes_on_silence_and_fails_on_port_unreachable():
    c = chk("udp", payload="\x01\x02", encoding="latin-1", reply_required=False, timeout=0.4)
    t0 = time.monotonic()
    assert udp_check(c, None) == (True, "ok")
    assert time.monotonic() - t0 < 0.6
    assert check("127.0.0.1", free_port(socket.SOCK_DGRAM), c) == (False, "refused")
    assert udp_check(chk("udp", payload="x", timeout=0.3), None) == (False, "timeout")  # a reply required


def test_udp_require_reply_is_a_prefix_of_the_reply():
    c = chk("udp", payload="\x00", encoding="latin-1", expect="\\A\\\xbe\\\xef", regex=True)
    assert udp_check(c, b"\xbe\xef\x00rest") == (True, "ok")
    assert udp_check(c, b"\x00\xbe\xef") == (False, "no_match")


# -- FILE, connect_ip and bindto -------------------------------------------------------------


def test_file_check(tmp_path):
    f = tmp_path / "state"
    c = chk("file", file=str(f))
    assert check("10.9.9.9", 80, c) == (False, "error")  # missing
    for text, want in (("0\n", (True, "ok")), ("  0  ", (True, "ok")), ("", (True, "ok")), ("3\n", (False, "nonzero")),
                       ("-1", (False, "nonzero")), ("up", (False, "bad_response"))):
        f.write_text(text)
        assert check("10.9.9.9", 80, c) == want, text
    assert file_verdict("12 extra words") == (False, "nonzero")
    # a FILE_CHECK weight: any number passes, times the weight (nanny's core adds the configured weight)
    assert file_verdict("3\n", 5) == (True, "ok", 15) and file_verdict("-2", -10) == (True, "ok", 20)
    assert file_verdict("x", 5) == (False, "bad_response")
    f.write_text("7")
    assert check("10.9.9.9", 80, chk("file", file=str(f), file_weight=2)) == (True, "ok", 14)


def test_connect_ip_probes_another_address_and_bind_sets_the_source():
    seen = []

    async def go(c: Check, address: str):
        async def h(r, w):
            seen.append(w.get_extra_info("peername")[0])
            w.close()
        srv = await asyncio.start_server(h, "127.0.0.1", 0)
        try:
            from lvsbus_services.nanny.checks import Spec
            spec = Spec("x", address, srv.sockets[0].getsockname()[1], c)
            return await run_check(spec.address, spec.port, c)
        finally:
            srv.close()
            await asyncio.sleep(0.05)
    # the real server's address is unroutable here: the check goes to connect_ip
    assert asyncio.run(go(chk("tcp_connect", connect_ip="127.0.0.1"), "192.0.2.1")) == (True, "ok")
    assert asyncio.run(go(chk("tcp_connect", connect_ip="127.0.0.1", bind="127.0.0.7"), "192.0.2.1")) == (True, "ok")
    assert asyncio.run(go(chk("tcp_send_expect", send="x", bind="127.0.0.9"), "127.0.0.1")) == (True, "ok")
    assert seen[1:] == ["127.0.0.7", "127.0.0.9"]


def test_icmp_echo_format():
    req = echo_request(False, 0x1111, 7, b"abc")
    assert req[0] == 8 and req[4:8] == b"\x11\x11\x00\x07" and req[8:] == b"abc"
    # the checksum of a valid message sums to 0
    s = sum(int.from_bytes(req[i:i + 2] + (b"\0" if i + 1 == len(req) else b""), "big") for i in range(0, len(req), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    assert s == 0xFFFF
    reply = b"\x00\x00\x00\x00\x11\x11\x00\x07abc"
    ip = bytes([0x45]) + b"\0" * 19
    assert echo_reply_of(ip + reply, False, True, 0x1111, 7, b"abc")
    assert not echo_reply_of(ip + reply, False, True, 0x2222, 7, b"abc")  # another pinger's
    assert echo_reply_of(reply, False, False, None, 7, b"abc")  # a ping socket: the kernel's id
    assert not echo_reply_of(reply, False, False, None, 8, b"abc")
    assert echo_reply_of(b"\x81\x00\x00\x00\x11\x11\x00\x07abc", True, True, 0x1111, 7, b"abc")
