"""nanny's check engine: every check of a router in one asyncio loop (uvloop when installed).

* ``Scheduler`` runs each check when ``schedule.Schedule`` says (pure, the clock an argument; the
  simulator runs it too): every ``interval`` seconds, at a phase given by a hash of its id (crc32:
  deterministic, spread evenly over the interval, so 10,000 checks never fire at once); a check
  still running when it is due again is skipped (counted), never run twice at once.
* TCP connect checks, the bulk, run on a callback fast path (non-blocking socket, ``add_writer``,
  one timer), not as tasks: ~a third of the cost. They close with SO_LINGER 0 (RST): no TIME_WAIT
  on the router for 10,000 connections a second.
* The other kinds are coroutines (``run_check``) under one hard total timeout (``asyncio.timeout``),
  which also bounds a server that accepts and then trickles bytes.

Every outcome is ``(ok, detail)`` with ``detail`` one of ``lvsbus.wire.catalog.health.DETAIL``.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import shlex
import signal
import socket
import ssl
import struct
import time
from typing import Callable

from lvsbus.config.model import DNS_TYPES, Check, HttpUrl

from .schedule import Schedule, phase_of, wake_delay

READ_LIMIT = 1 << 20  # bytes read from a reply at most (http body, expect search)
OUTPUT_LIMIT = 1 << 16  # program output kept

_LINGER0 = struct.pack("ii", 1, 0)
_ERRNO_DETAIL = {
    errno.ECONNREFUSED: "refused",
    errno.ECONNRESET: "reset",
    errno.ECONNABORTED: "reset",
    errno.EPIPE: "reset",
    errno.ETIMEDOUT: "timeout",
    errno.ENETUNREACH: "unreachable",
    errno.EHOSTUNREACH: "unreachable",
    errno.EHOSTDOWN: "unreachable",
}


def _detail_of(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return "tls_error"
    if isinstance(exc, (asyncio.IncompleteReadError, EOFError)):
        return "reset"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_DETAIL:
        return _ERRNO_DETAIL[exc.errno]
    if isinstance(exc, ConnectionError):
        return "reset"
    return "error"


class Matcher:
    """``expect`` as Piranha/keepalived read it: a substring, or a regex searched (use_regex)."""

    __slots__ = ("text", "rx")

    def __init__(self, expect: str, regex: bool, encoding: str = "utf-8") -> None:
        self.text = expect.encode(encoding)
        self.rx = re.compile(self.text) if regex and expect else None

    def __call__(self, data: bytes) -> bool:
        if self.rx is not None:
            return self.rx.search(data) is not None
        return self.text in data


# ---------------------------------------------------------------------------------------------
# the coroutine kinds


async def tcp_send_expect(address: str, port: int, chk: Check, m: Matcher) -> tuple[bool, str]:
    reader, writer = await asyncio.open_connection(address, port, local_addr=_local(chk))
    try:
        if chk.send:
            writer.write(chk.send.encode(chk.encoding))
            await writer.drain()
        if not chk.expect:
            return True, "ok"
        buf = b""
        while len(buf) < READ_LIMIT:
            chunk = await reader.read(65536)
            if not chunk:
                break
            buf += chunk
            if m(buf):
                return True, "ok"
        return False, "no_match"
    finally:
        writer.transport.abort()


_STATUS = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?: [^\r\n]*)?\r?\n")


def _dechunk(body: bytes) -> bytes | None:
    out = []
    pos = 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            return None
        try:
            size = int(body[pos:end].split(b";")[0], 16)
        except ValueError:
            return None
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2:end + 2 + size])
        pos = end + 2 + size + 2
        if pos > len(body):
            return None


_TLS_CONTEXTS: dict[tuple, ssl.SSLContext] = {}


def tls_context(chk: Check) -> ssl.SSLContext:
    """One context per TLS setting (loading a CA bundle per probe would cost more than the probe)."""
    key = (chk.tls_verify, chk.tls_ca, chk.tls_cert, chk.tls_key)
    ctx = _TLS_CONTEXTS.get(key)
    if ctx is None:
        ctx = ssl.create_default_context(cafile=chk.tls_ca) if chk.tls_verify else ssl.create_default_context()
        if not chk.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # as keepalived's SSL_GET: no verification unless asked
        if chk.tls_cert:
            ctx.load_cert_chain(chk.tls_cert, chk.tls_key)
        _TLS_CONTEXTS[key] = ctx
    return ctx


def _local(chk: Check) -> tuple[str, int] | None:
    return (chk.bind, 0) if chk.bind else None


def http_urls(chk: Check) -> tuple[HttpUrl, ...]:
    """What an http(s) check fetches: its ``urls``, else its one path."""
    return chk.urls or (HttpUrl(chk.path, chk.status, chk.digest, chk.body_regex),)


async def http_get(address: str, port: int, chk: Check, tls: bool) -> tuple[bool, str]:
    """Every URL of the check in turn, each on its own connection (as keepalived); the first
    failure is the verdict."""
    for url in http_urls(chk):
        ok, detail = await _http_one(address, port, chk, tls, url)
        if not ok:
            return ok, detail
    return True, "ok"


async def _http_one(address: str, port: int, chk: Check, tls: bool, url: HttpUrl) -> tuple[bool, str]:
    host = chk.host or (f"[{address}]" if ":" in address else address)
    ctx = tls_context(chk) if tls else None
    sni = None
    if tls:
        sni = (chk.host or address) if chk.tls_verify else (chk.host if chk.tls_sni and chk.host else None)
    reader, writer = await asyncio.open_connection(address, port, ssl=ctx, server_hostname=sni,
                                                   local_addr=_local(chk))
    try:
        writer.write(f"GET {url.path} HTTP/{chk.http_version}\r\nHost: {host}\r\nUser-Agent: lvsbus-nanny\r\n"
                     "Accept: */*\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        buf = b""
        while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
            chunk = await reader.read(65536)
            if not chunk:
                return False, "bad_response" if buf else "reset"
            buf += chunk
            if len(buf) > 65536:
                return False, "bad_response"  # headers larger than 64 KB
        m = _STATUS.match(buf)
        if m is None:
            return False, "bad_response"
        if int(m.group(3)) not in url.status:
            return False, "bad_status"
        if url.body_regex is None and url.digest is None:
            return True, "ok"
        sep = buf.find(b"\r\n\r\n")
        head, body = (buf[:sep], buf[sep + 4:]) if sep >= 0 else buf.split(b"\n\n", 1)
        while len(body) < READ_LIMIT:
            chunk = await reader.read(65536)
            if not chunk:
                break
            body += chunk
        if b"transfer-encoding: chunked" in head.lower():
            body = _dechunk(body)
            if body is None:
                return False, "bad_response"
        if url.body_regex is not None and not re.search(url.body_regex.encode(), body):
            return False, "bad_body"
        if url.digest is not None and hashlib.md5(body).hexdigest() != url.digest.lower():
            return False, "bad_digest"
        return True, "ok"
    finally:
        writer.transport.abort()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _udp_sent(address: str, port: int, chk: Check, data: bytes) -> tuple[asyncio.DatagramTransport, _Udp]:
    """A UDP socket connected to the server (bound to ``chk.bind`` when set) that has sent ``data``,
    and the protocol whose ``reply`` is the first answer (or the ICMP error). The caller closes the
    transport."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if chk.bind:
            sock.bind((chk.bind, 0))
        sock.connect((address, port))
        # sent by the socket itself: asyncio's transport silently drops an empty datagram, and with
        # no payload configured every check timed out (found by a real router pair in namespaces)
        sock.send(data)
    except OSError:
        sock.close()
        raise
    return await asyncio.get_running_loop().create_datagram_endpoint(_Udp, sock=sock)  # type: ignore[return-value]


async def udp_send_expect(address: str, port: int, chk: Check, m: Matcher) -> tuple[bool, str]:
    transport, proto = await _udp_sent(address, port, chk, (chk.payload or chk.send).encode(chk.encoding))
    try:
        if not chk.reply_required:
            # keepalived's UDP_CHECK without require_reply: silence passes, an ICMP error fails;
            # the verdict is taken a little before the check's hard timeout
            try:
                data = await asyncio.wait_for(proto.reply, chk.timeout * 0.9)
            except (TimeoutError, asyncio.TimeoutError):
                return True, "ok"
            return (True, "ok") if not chk.expect or m(data) else (False, "no_match")
        data = await proto.reply
        return (True, "ok") if m(data) else (False, "no_match")
    finally:
        transport.close()


async def smtp(address: str, port: int, chk: Check, m: Matcher) -> tuple[bool, str]:
    """keepalived's SMTP_CHECK: the banner is 220, ``HELO helo_name`` is answered 250, then QUIT
    (its answer read but not judged, as keepalived)."""
    reader, writer = await asyncio.open_connection(address, port, local_addr=_local(chk))
    try:
        if await _smtp_reply(reader) != 220:
            return False, "bad_status"
        writer.write(f"HELO {chk.helo_name}\r\n".encode())
        await writer.drain()
        if await _smtp_reply(reader) != 250:
            return False, "bad_status"
        writer.write(b"QUIT\r\n")
        await writer.drain()
        try:
            await _smtp_reply(reader)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        return True, "ok"
    finally:
        writer.transport.abort()


async def _smtp_reply(reader: asyncio.StreamReader) -> int:
    """The code of one SMTP reply (its continuation lines ``250-...`` read through); -1 when it is
    not a reply."""
    for _ in range(100):
        line = await reader.readuntil(b"\n")
        if len(line) < 4 or not line[:3].isdigit():
            return -1
        if line[3:4] != b"-":
            return int(line[:3])
    return -1


def dns_query(qid: int, name: str, qtype: str) -> bytes:
    """A DNS query, recursion desired (as keepalived's DNS_CHECK), one question, class IN."""
    q = b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.rstrip(".").split(".") if label)
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + b"\0" + struct.pack("!HH", DNS_TYPES[qtype.upper()], 1)


def dns_verdict(query: bytes, reply: bytes) -> tuple[bool, str]:
    """keepalived's: the reply has the query's id, is a response, and its rcode is NOERROR."""
    if len(reply) < 12 or reply[:2] != query[:2] or not reply[2] & 0x80:
        return False, "bad_response"
    return (True, "ok") if reply[3] & 0x0F == 0 else (False, "bad_status")


async def dns(address: str, port: int, chk: Check, m: Matcher) -> tuple[bool, str]:
    query = dns_query(int.from_bytes(os.urandom(2), "big"), chk.dns_name, chk.dns_type)
    transport, proto = await _udp_sent(address, port, chk, query)
    try:
        return dns_verdict(query, await proto.reply)
    finally:
        transport.close()


def _inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_socket(v6: bool) -> tuple[socket.socket, bool]:
    """A ping socket (no privilege, when net.ipv4.ping_group_range holds our group), else a raw
    one (CAP_NET_RAW): (socket, raw?)."""
    family, proto = (socket.AF_INET6, socket.IPPROTO_ICMPV6) if v6 else (socket.AF_INET, socket.IPPROTO_ICMP)
    try:
        return socket.socket(family, socket.SOCK_DGRAM, proto), False
    except PermissionError:
        return socket.socket(family, socket.SOCK_RAW, proto), True


def echo_request(v6: bool, ident: int, seq: int, payload: bytes) -> bytes:
    head = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, ident, seq)
    if v6:
        return head + payload  # the kernel sums ICMPv6 (it needs the addresses)
    csum = _inet_checksum(head + payload)
    return struct.pack("!BBHHH", 8, 0, csum, ident, seq) + payload


def echo_reply_of(data: bytes, v6: bool, raw: bool, ident: int | None, seq: int, payload: bytes) -> bool:
    """Is ``data`` the answer to our request? (A raw IPv4 socket sees the IP header and every ICMP
    message to this host; a ping socket only its own replies, the id rewritten by the kernel.)"""
    if raw and not v6:
        data = data[(data[0] & 0x0F) * 4:] if data else data
    if len(data) < 8:
        return False
    typ, _code, _c, rid, rseq = struct.unpack("!BBHHH", data[:8])
    if typ != (129 if v6 else 0) or rseq != seq or data[8:] != payload:
        return False
    return ident is None or rid == ident


async def ping(address: str, port: int, chk: Check, m: Matcher) -> tuple[bool, str]:
    """keepalived's PING_CHECK: one ICMP echo (ICMPv6 for a v6 address), answered in time."""
    loop = asyncio.get_running_loop()
    v6 = ":" in address
    sock, raw = icmp_socket(v6)
    try:
        sock.setblocking(False)
        if chk.bind:
            sock.bind((chk.bind, 0))
        ident = int.from_bytes(os.urandom(2), "big")
        seq = int.from_bytes(os.urandom(2), "big")
        payload = b"lvsbus-nanny" + os.urandom(8)
        await loop.sock_sendto(sock, echo_request(v6, ident, seq, payload), (address, 0))
        while True:
            data, peer = await loop.sock_recvfrom(sock, 65536)
            if peer[0] == address and echo_reply_of(data, v6, raw, ident if raw else None, seq, payload):
                return True, "ok"
    finally:
        sock.close()


def file_verdict(text: str, weight: int = 0) -> tuple:
    """keepalived's FILE_CHECK: with weight 0 the file's number 0 passes, another number fails;
    with a weight any number passes, and the number times the weight is the third value (an offset
    to the real server's configured weight: nanny's core adds it)."""
    try:
        value = int(text.split()[0]) if text.split() else 0
    except ValueError:
        return False, "bad_response"
    if weight:
        return True, "ok", max(-(2**31), min(2**31 - 1, value * weight))
    return (True, "ok") if value == 0 else (False, "nonzero")


async def file_check(address: str, port: int, chk: Check, m: Matcher) -> tuple:
    with open(chk.file, "rb") as f:  # a small local file: read at once, as keepalived
        text = f.read(4096).decode("ascii", "replace")
    return file_verdict(text, chk.file_weight)


async def program(address: str, port: int, chk: Check, m: Matcher) -> tuple[bool, str]:
    """Piranha's send_program / keepalived's MISC_CHECK: %h and %p substituted (shell-quoted)."""
    cmd = chk.command.replace("%h", shlex.quote(address)).replace("%p", str(port))
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    try:
        out = b""
        while len(out) < OUTPUT_LIMIT:
            chunk = await proc.stdout.read(65536)
            if not chunk:
                break
            out += chunk
        code = await proc.wait()
    finally:
        if proc.returncode is None:  # the timeout: kill the whole process group
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
    if chk.expect:
        if not m(out):
            return False, "no_match"
        if chk.exit_code is not None and code != chk.exit_code:
            return False, "exit_code"
        return True, "ok"
    if chk.dynamic_weight and 2 <= code <= 255:  # keepalived's misc_dynamic: passes, weight = status - 2
        return True, "ok", code - 2  # type: ignore[return-value]  (run_check's callers read a third value)
    return (True, "ok") if code == (chk.exit_code or 0) else (False, "exit_code")


async def tcp_connect(address: str, port: int, chk: Check, m: Matcher) -> tuple[bool, str]:
    """The coroutine form (the scheduler's fast path does the same without a task): a check with
    ``bind`` comes here."""
    _r, writer = await asyncio.open_connection(address, port, local_addr=_local(chk))
    writer.transport.abort()
    return True, "ok"


async def run_check(address: str, port: int, chk: Check, matcher: Matcher | None = None) -> tuple[bool, str]:
    """One check of any kind under its hard total timeout (chk.timeout seconds)."""
    m = matcher or Matcher(chk.expect, chk.regex, chk.encoding)
    kind = chk.kind.value
    try:
        async with asyncio.timeout(chk.timeout):
            if kind == "tcp_connect":
                return await tcp_connect(address, port, chk, m)
            if kind == "tcp_send_expect":
                return await tcp_send_expect(address, port, chk, m)
            if kind in ("http", "https"):
                return await http_get(address, port, chk, kind == "https")
            if kind == "udp":
                return await udp_send_expect(address, port, chk, m)
            if kind == "program":
                return await program(address, port, chk, m)
            if kind == "smtp":
                return await smtp(address, port, chk, m)
            if kind == "dns":
                return await dns(address, port, chk, m)
            if kind == "ping":
                return await ping(address, port, chk, m)
            if kind == "file":
                return await file_check(address, port, chk, m)
            return False, "error"
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # every failure of a check is a result, never a crash
        return False, _detail_of(exc)


# ---------------------------------------------------------------------------------------------
# the scheduler

#: on_result(id, ok, latency_us, detail, late_us)
#: (id, ok, latency_us, detail, late_us, weight): weight None unless the check gave one
OnResult = Callable[[str, bool, int, str, int, "int | None"], None]


class Spec:
    """One check to run: id, address, probed port, Check."""

    __slots__ = ("id", "address", "port", "check", "matcher", "interval", "phase", "due", "running", "alive",
                 "family", "retry_delay")

    def __init__(self, id: str, address: str, port: int, check: Check) -> None:
        # keepalived's connect_ip: probe another address than the one IPVS forwards to
        self.id, self.address, self.port, self.check = id, check.connect_ip or address, port, check
        self.matcher = Matcher(check.expect, check.regex, check.encoding)
        self.interval = check.interval
        self.retry_delay = check.retry_delay
        self.phase = phase_of(id, check.interval)
        self.due = 0.0
        self.running = False
        self.alive = True
        self.family = socket.AF_INET6 if ":" in address else socket.AF_INET

    def same(self, other: "Spec") -> bool:
        return self.address == other.address and self.port == other.port and self.check == other.check


class Scheduler:
    """Runs the checks when ``schedule.Schedule`` says (its decisions are pure: the clock is read
    here, and given to it)."""

    def __init__(self, on_result: OnResult, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.on_result = on_result
        self.loop = loop or asyncio.get_event_loop()
        self.schedule = Schedule()
        self._wake: asyncio.TimerHandle | None = None
        self.started = 0
        self.inflight = 0
        self.lateness: list[float] | None = None  # seconds, when measuring (bench)
        self.running = False

    @property
    def specs(self) -> dict[str, Spec]:
        return self.schedule.specs

    @property
    def skipped(self) -> int:
        """Checks due while their previous run was still going (skipped)."""
        return self.schedule.skipped

    def set_checks(self, specs: list[tuple[str, str, int, Check]]) -> None:
        """Replace the checks: unchanged ones keep their schedule, new ones start at their phase."""
        self.schedule.set_checks([Spec(*x) for x in specs], time.monotonic())
        if self.running:
            self._arm()

    def start(self) -> None:
        self.running = True
        self._arm()

    def stop(self) -> None:
        self.running = False
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None

    def _arm(self) -> None:
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        due = self.schedule.next_deadline()
        if due is None or not self.running:
            return
        self._wake = self.loop.call_later(wake_delay(due, time.monotonic()), self._tick)

    def _tick(self) -> None:
        self._wake = None
        now = time.monotonic()
        lat = self.lateness
        for s, late in self.schedule.take_due(now):
            if lat is not None:
                lat.append(late)
            self._start(s, now, late)
        self._arm()

    def _start(self, s: Spec, now: float, late: float) -> None:
        self.started += 1
        self.inflight += 1
        s.running = True
        if s.check.kind.value == "tcp_connect" and not s.check.bind:
            self._tcp_connect(s, now, late)
        else:
            self.loop.create_task(self._coro(s, now, late))

    def _done(self, s: Spec, started: float, late: float, ok: bool, detail: str, weight: int | None = None) -> None:
        self.schedule.finished(s, ok, time.monotonic())  # a failure may be retried sooner
        if self.running and not ok and s.retry_delay is not None:
            self._arm()
        self.inflight -= 1
        if s.alive:
            self.on_result(s.id, ok, int((time.monotonic() - started) * 1e6), detail, int(late * 1e6), weight)

    async def _coro(self, s: Spec, started: float, late: float) -> None:
        res = await run_check(s.address, s.port, s.check, s.matcher)
        # a program check with dynamic_weight may give a weight too (keepalived's misc_dynamic)
        self._done(s, started, late, res[0], res[1], res[2] if len(res) > 2 else None)  # type: ignore[misc]

    # -- the TCP connect fast path ---------------------------------------------------------------

    def _tcp_connect(self, s: Spec, started: float, late: float) -> None:
        try:
            sock = socket.socket(s.family, socket.SOCK_STREAM)
        except OSError as exc:
            self._done(s, started, late, False, _detail_of(exc))
            return
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
        err = sock.connect_ex((s.address, s.port))
        if err == 0:
            sock.close()
            self._done(s, started, late, True, "ok")
            return
        if err != errno.EINPROGRESS:
            sock.close()
            self._done(s, started, late, False, _ERRNO_DETAIL.get(err, "error"))
            return
        fd = sock.fileno()
        ctx = [s, sock, started, late, None]
        ctx[4] = self.loop.call_later(s.check.timeout, self._tcp_timeout, fd, ctx)
        self.loop.add_writer(fd, self._tcp_writable, fd, ctx)

    def _tcp_writable(self, fd: int, ctx: list) -> None:
        s, sock, started, late, timer = ctx
        self.loop.remove_writer(fd)
        timer.cancel()
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        sock.close()
        if err == 0:
            self._done(s, started, late, True, "ok")
        else:
            self._done(s, started, late, False, _ERRNO_DETAIL.get(err, "error"))

    def _tcp_timeout(self, fd: int, ctx: list) -> None:
        s, sock, started, late, _t = ctx
        self.loop.remove_writer(fd)
        sock.close()
        self._done(s, started, late, False, "timeout")


def raise_nofile(want: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``want`` (at most the hard limit); returns it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (about twice the connects a second of asyncio's loop), else asyncio's."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is optional
        return asyncio.new_event_loop()
