"""nanny's checks against real servers on loopback: TCP, send/expect, HTTP(S), UDP, programs,
timeouts (silent and trickling servers), malformed replies; and the scheduler."""
from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import zlib

import pytest

from lvsbus.config import Check, CheckKind
from lvsbus_services.nanny.checks import Scheduler, Spec, run_check
from lvsbus_services.nanny.schedule import FLUSH_N, TICK, ResultBatch, Schedule, next_flush

T = 0.5  # the checks' total timeout in these tests


def chk(kind: str, **kw) -> Check:
    return Check(kind=CheckKind(kind), interval=1.0, timeout=kw.pop("timeout", T), **kw)


def run(coro):
    return asyncio.run(coro)


async def serve(handler, ssl_ctx=None):
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_ctx)
    return server, server.sockets[0].getsockname()[1]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def check_against(handler, c: Check, ssl_ctx=None):
    server, port = await serve(handler, ssl_ctx)
    try:
        t0 = time.monotonic()
        res = await run_check("127.0.0.1", port, c)
        return res, time.monotonic() - t0
    finally:
        server.close()


def reply(data: bytes, then_close: bool = True):
    async def handler(r, w):
        try:
            await r.read(1024)
            w.write(data)
            await w.drain()
            if then_close:
                w.close()
            else:
                await asyncio.sleep(10)
        except (ConnectionError, asyncio.CancelledError):
            pass
    return handler


async def silent(r, w):
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        pass


async def trickle(r, w):
    """Accepts, then sends one byte every 50 ms forever: never a whole reply."""
    try:
        while True:
            w.write(b"x")
            await w.drain()
            await asyncio.sleep(0.05)
    except (ConnectionError, asyncio.CancelledError):
        pass


# -- TCP -------------------------------------------------------------------------------------


def test_tcp_connect_ok_and_refused():
    (res, _), = [run(check_against(silent, chk("tcp_connect")))]
    assert res == (True, "ok")
    assert run(run_check("127.0.0.1", free_port(), chk("tcp_connect"))) == (False, "refused")


@pytest.mark.parametrize("expect,regex,data,want", [
    ("220", False, b"220 ready\r\n", (True, "ok")),
    (r"^2\d\d ", True, b"250 ok\r\n", (True, "ok")),
    ("220", False, b"500 no\r\n", (False, "no_match")),
    ("", False, b"", (True, "ok")),  # no expect: connect and send are the check
])
def test_tcp_send_expect(expect, regex, data, want):
    (res, _) = run(check_against(reply(data), chk("tcp_send_expect", send="HELO x\r\n", expect=expect, regex=regex)))
    assert res == want


def test_tcp_expect_split_over_reads():
    async def handler(r, w):
        w.write(b"22")
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"0 hi")
        await w.drain()
        w.close()
    (res, _) = run(check_against(handler, chk("tcp_send_expect", expect="220")))
    assert res == (True, "ok")


@pytest.mark.parametrize("handler", [silent, trickle], ids=["silent", "trickle"])
def test_a_server_that_accepts_and_never_answers_fails_by_the_total_timeout(handler):
    (res, took) = run(check_against(handler, chk("tcp_send_expect", send="x", expect="OK")))
    assert res == (False, "timeout")
    assert T - 0.05 <= took <= T + 0.3


# -- HTTP(S) ---------------------------------------------------------------------------------


def http(status: int, body: bytes = b"all good", headers: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), headers, body)


@pytest.mark.parametrize("data,kw,want", [
    (http(200), {}, (True, "ok")),
    (http(204, b""), {"status": (200, 204)}, (True, "ok")),
    (http(500), {}, (False, "bad_status")),
    (http(200, b"all good"), {"body_regex": "good$"}, (True, "ok")),
    (http(200, b"all bad"), {"body_regex": "good"}, (False, "bad_body")),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ngood\r\n0\r\n\r\n", {"body_regex": "^good$"}, (True, "ok")),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", {"body_regex": "x"}, (False, "bad_response")),
    (b"garbage that is not http\r\n\r\n", {}, (False, "bad_response")),
    (b"HTTP/1.1 2x0 OK\r\n\r\n", {}, (False, "bad_response")),
    (b"HTTP/1.1 200 OK\r\nno end of headers", {}, (False, "bad_response")),
    (b"", {}, (False, "reset")),
], ids=["200", "204", "500", "body", "body-mismatch", "chunked", "bad-chunks", "garbage", "bad-status-line",
        "truncated-headers", "closed"])
def test_http(data, kw, want):
    (res, _) = run(check_against(reply(data), chk("http", **kw)))
    assert res == want


def test_http_request_line_and_host():
    seen = []

    async def handler(r, w):
        seen.append(await r.readuntil(b"\r\n\r\n"))
        w.write(http(200))
        await w.drain()
        w.close()
    (res, _) = run(check_against(handler, chk("http", path="/healthz", host="www.example.org")))
    assert res == (True, "ok")
    assert seen[0].startswith(b"GET /healthz HTTP/1.0\r\n") and b"\r\nHost: www.example.org\r\n" in seen[0]


def test_http_trickling_headers_time_out():
    (res, took) = run(check_against(trickle, chk("http")))
    assert res == (False, "timeout") and took <= T + 0.3


@pytest.fixture(scope="module")
def tls_ctx(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("no openssl")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=rs",
                    "-keyout", d / "k.pem", "-out", d / "c.pem"], check=True, capture_output=True)
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "c.pem", d / "k.pem")
    return ctx


def test_https(tls_ctx):
    (res, _) = run(check_against(reply(http(200, b"secure ok")), chk("https", body_regex="ok"), tls_ctx))
    assert res == (True, "ok")
    (res, _) = run(check_against(reply(http(503)), chk("https"), tls_ctx))
    assert res == (False, "bad_status")
    # plain HTTP where TLS is expected: a TLS error (or the server closing), never a pass
    (res, _) = run(check_against(reply(http(200)), chk("https")))
    assert res[0] is False and res[1] in ("tls_error", "reset", "bad_response")


# -- UDP -------------------------------------------------------------------------------------


class Echo(asyncio.DatagramProtocol):
    def __init__(self, answer=None):
        self.answer = answer

    def connection_made(self, transport):
        self.t = transport

    def datagram_received(self, data, addr):
        if self.answer is not False:
            self.t.sendto(self.answer or data, addr)


async def udp_against(c: Check, answer=None):
    loop = asyncio.get_running_loop()
    t, _ = await loop.create_datagram_endpoint(lambda: Echo(answer), local_addr=("127.0.0.1", 0))
    port = t.get_extra_info("sockname")[1]
    try:
        t0 = time.monotonic()
        return await run_check("127.0.0.1", port, c), time.monotonic() - t0
    finally:
        t.close()


def test_udp():
    assert run(udp_against(chk("udp", payload="ping", expect="ping")))[0] == (True, "ok")
    assert run(udp_against(chk("udp", payload="ping", expect="pong")))[0] == (False, "no_match")
    assert run(udp_against(chk("udp", payload="q", expect=r"^v\d", regex=True), answer=b"v2"))[0] == (True, "ok")
    (res, took) = run(udp_against(chk("udp", payload="ping", expect="ping"), answer=False))
    assert res == (False, "timeout") and took <= T + 0.3
    assert run(run_check("127.0.0.1", free_port(), chk("udp", payload="ping")))[1] == "refused"
    # no payload configured: a zero-length datagram goes out (asyncio's transport would drop it,
    # and every such check timed out: found by a real router pair in namespaces)
    assert run(udp_against(chk("udp"), answer=b"here"))[0] == (True, "ok")
    assert run(run_check("127.0.0.1", free_port(), chk("udp")))[1] == "refused"


# -- programs --------------------------------------------------------------------------------


@pytest.mark.parametrize("kw,want", [
    ({"command": "exit 0"}, (True, "ok")),
    ({"command": "exit 3"}, (False, "exit_code")),
    ({"command": "exit 3", "exit_code": 3}, (True, "ok")),
    ({"command": "echo %h:%p", "expect": "127.0.0.1:8080"}, (True, "ok")),
    ({"command": "echo %h:%p", "expect": "^10\\.", "regex": True}, (False, "no_match")),
    ({"command": "echo up; exit 1", "expect": "up"}, (True, "ok")),  # expect set: exit status not checked
    ({"command": "/nonexistent/check"}, (False, "exit_code")),
])
def test_program(kw, want):
    assert run(run_check("127.0.0.1", 8080, chk("program", **kw))) == want


def test_program_timeout_kills_the_process_group(tmp_path):
    marker = tmp_path / "still-running"
    t0 = time.monotonic()
    res = run(run_check("127.0.0.1", 80, chk("program", command=f"sleep 3; touch {marker}")))
    assert res == (False, "timeout") and time.monotonic() - t0 <= T + 0.5
    time.sleep(3.2)
    assert not marker.exists()


# -- the scheduler ---------------------------------------------------------------------------


def test_schedule_spreads_checks_by_a_hash_of_the_id_and_runs_each_every_interval():
    """The schedule is pure (services/nanny/schedule.py): the clock is an argument, no sleeping."""
    sch = Schedule()
    c = Check(interval=0.2, timeout=0.1)
    sch.set_checks([Spec(f"v/s{i}", "127.0.0.1", 80, c) for i in range(50)], now=100.0)
    phases = sorted(s.phase for s in sch.specs.values())
    assert phases == sorted((zlib.crc32(f"v/s{i}".encode()) / 2**32) * 0.2 for i in range(50))
    assert phases[-1] - phases[0] > 0.15  # spread over the interval
    runs: dict[str, list[float]] = {}
    now = 100.0
    while now < 101.0:  # an event loop waking when the schedule says
        for s, late in sch.take_due(now):
            assert 0 <= late < TICK
            runs.setdefault(s.id, []).append(now)
        now = max(sch.next_deadline(), now + TICK)
    assert len(runs) == 50 and sch.skipped == 0
    for id_, times in runs.items():
        assert len(times) == 5  # every 0.2 s, at its phase
        assert all(abs((t - 100.0) % 0.2 - sch.specs[id_].phase) < TICK for t in times)


def test_schedule_skips_a_check_still_running_and_resumes_at_its_phase_after_a_stall():
    sch = Schedule()
    s = Spec("v/a", "127.0.0.1", 80, Check(interval=1.0, timeout=0.5))
    sch.set_checks([s], now=0.0)
    first = sch.next_deadline()
    assert first == pytest.approx(s.phase) and sch.take_due(first) == [(s, 0.0)]
    s.running = True  # its run goes on past the next due time
    assert sch.take_due(first + 1.0) == [] and sch.skipped == 1
    s.running = False
    # a stall of 10 s: the check runs once, late, then at its phase again (no burst of ten)
    got = sch.take_due(first + 12.0)
    assert got == [(s, pytest.approx(10.0))]
    assert sch.next_deadline() == pytest.approx(first + 13.0)


def test_a_failed_probe_is_retried_after_retry_delay_then_every_interval():
    """keepalived's delay_before_retry (``retry_delay``): a failure is probed again sooner; a pass
    is not; the retry's old slot does not run twice."""
    sch = Schedule()
    s = Spec("v/a", "127.0.0.1", 80, Check(interval=5.0, timeout=1.0, fall=3, retry_delay=0.5))
    sch.set_checks([s], now=0.0)
    first = sch.next_deadline()
    assert sch.take_due(first) == [(s, 0.0)]
    s.running = True
    sch.finished(s, False, first + 0.1)  # failed: again at +0.6, not at +5
    assert not s.running and sch.next_deadline() == pytest.approx(first + 0.6)
    assert sch.take_due(first + 0.6) == [(s, 0.0)]
    sch.finished(s, True, first + 0.7)  # passed: the interval from the retry on
    runs = []
    now = first + 0.7
    while now < first + 12:
        runs += [now for _s, _late in sch.take_due(now)]
        now = max(sch.next_deadline(), now + TICK)
    assert runs == [pytest.approx(first + 5.6), pytest.approx(first + 10.6)]  # the old slot (first + 5) is gone
    plain = Spec("v/b", "127.0.0.1", 80, Check(interval=5.0, timeout=1.0))
    sch.set_checks([plain], now=0.0)
    due = plain.due
    sch.finished(plain, False, 0.1)
    assert sch.next_deadline() == due  # no retry_delay: at its interval


def test_set_checks_keeps_the_schedule_of_unchanged_checks_and_drops_the_rest():
    sch = Schedule()
    a, b = Spec("v/a", "10.0.0.1", 80, Check(interval=1.0)), Spec("v/b", "10.0.0.2", 80, Check(interval=1.0))
    sch.set_checks([a, b], now=0.0)
    sch.take_due(sch.next_deadline())
    due = a.due
    dropped = sch.set_checks([Spec("v/a", "10.0.0.1", 80, Check(interval=1.0)),
                              Spec("v/c", "10.0.0.3", 80, Check(interval=1.0))], now=5.5)
    assert sch.specs["v/a"] is a and a.due == due and dropped == [b] and not b.alive
    assert sch.specs["v/c"].due > 5.5


def test_result_batches_leave_full_or_on_the_flush():
    batch = ResultBatch()
    assert batch.take("d") is None
    for i in range(FLUSH_N - 1):
        assert not batch.add(f"v/{i}", True, 10, "ok", i)
    assert batch.add("v/last", False, 20, "refused", 0)  # full: it leaves now
    p = batch.take("digest")
    assert p["digest"] == "digest" and len(p["ids"]) == FLUSH_N and p["late_us"] == FLUSH_N - 2
    assert p["ok"][-1] is False and p["detail"][-1] == "refused" and len(batch) == 0
    assert next_flush(started=10.0, now=10.07) == pytest.approx(10.1)


def test_scheduler_never_runs_a_check_twice_at_once_and_keeps_unchanged_schedules():
    async def go():
        server, port = await serve(trickle)
        seen = []
        sched = Scheduler(lambda *a: seen.append(a))
        slow = Check(kind=CheckKind.TCP_SEND_EXPECT, interval=0.1, timeout=0.25, expect="never")
        sched.set_checks([("v/a", "127.0.0.1", port, slow), ("v/b", "127.0.0.1", port, Check(interval=0.1, timeout=0.1))])
        b = sched.specs["v/b"]
        sched.start()
        await asyncio.sleep(0.6)
        sched.set_checks([("v/b", "127.0.0.1", port, Check(interval=0.1, timeout=0.1))])
        assert sched.specs["v/b"] is b and not sched.specs.get("v/a")
        await asyncio.sleep(0.3)
        sched.stop()
        server.close()
        return seen, sched
    seen, sched = run(go())
    assert sched.skipped >= 2
    a = [x for x in seen if x[0] == "v/a"]
    assert a and all(x[3] == "timeout" for x in a)


def test_the_scheduler_retries_a_refused_server_after_retry_delay():
    """The real scheduler on a real refused connection: with retry_delay 0.1 s the three failures of
    fall = 3 come within a few tenths of a second, at an interval of 5 s (keepalived's retry and
    delay_before_retry)."""
    async def go():
        with socket.socket() as probe:  # a port nobody listens on: connections refused
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        seen: list[float] = []
        sched = Scheduler(lambda *a: seen.append(time.monotonic()) if not a[1] else None)
        sched.set_checks([("v/a", "127.0.0.1", port, Check(interval=5.0, timeout=1.0, fall=3, retry_delay=0.1))])
        sched.start()
        deadline = time.monotonic() + 12
        while len(seen) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        sched.stop()
        return seen
    seen = run(go())
    assert len(seen) >= 3
    assert seen[2] - seen[0] < 1.0, seen  # retried, not at the 5 s interval


# -- binary protocols: lvs.cf escapes reach the wire byte for byte -----------------------------


class DnsLike(asyncio.DatagramProtocol):
    """Answers only the exact query bytes, with a reply whose first bytes are the query's ID and
    the response flags (what a DNS server would send)."""

    def __init__(self, query: bytes):
        self.query = query
        self.seen: list[bytes] = []

    def connection_made(self, transport):
        self.t = transport

    def datagram_received(self, data, addr):
        self.seen.append(data)
        if data == self.query:
            self.t.sendto(data[:2] + b"\x81\x80" + data[4:], addr)


def test_a_dns_query_written_with_escapes_in_lvs_cf_is_sent_byte_for_byte():
    from lvsbus.config import loads_lvscf
    from tests.helpers.lvscf import DNS_QUERY, dns_cf, escaped

    cfg = loads_lvscf(dns_cf(escaped(DNS_QUERY), "\\xbe\\xef\\x81\\x80"), "dns.cf").config
    c = cfg.virtual_services[0].check

    async def go():
        loop = asyncio.get_running_loop()
        t, proto = await loop.create_datagram_endpoint(lambda: DnsLike(DNS_QUERY), local_addr=("127.0.0.1", 0))
        try:
            return await run_check("127.0.0.1", t.get_extra_info("sockname")[1], c), proto.seen
        finally:
            t.close()

    res, seen = run(go())
    assert seen == [DNS_QUERY] and res == (True, "ok")
