"""nanny's check engine at scale, beside keepalived's checker (issue 18, goal 4: "checks as cheap
as keepalived's").

    python bench/checks.py [--servers 10000] [--http-servers 1000] [--seconds 30] [--interval 1.0]
                           [--warmup 3] [--ports 100] [--no-keepalived] [--no-netns]

N real servers (default 10,000) checked every --interval (1 s) by TCP connect, sustained, with the
results folded into NannyCore as the shell does (batches every 50 ms); then keepalived 2.x's
checker (TCP_CHECK, delay_loop = the interval) on the same real servers; then the same two at
--http-servers (1,000) HTTP checks a second: nanny's ``http`` check (the Scheduler's coroutine
path: ``run_check`` -> ``http_get``, a GET per check on its own connection) against keepalived's
HTTP_GET (``url { path / status_code 200 }``). The four phases run back to back in one process
tree (warm-up, then a --seconds window each), so the listeners and the machine are the same.

The real servers are (address, port) pairs on loopback: --ports TCP listeners and --ports HTTP
listeners (read a request, answer ``200``, close) bound to the wildcard address of a private
network namespace (``unshare -n``, when root; --no-netns binds 127.0.0.1 only, needs servers <=
ports, and skips keepalived), times 127.0.x.y addresses, in a separate listener process (its CPU is
not counted). That process counts the connections it accepts and the requests it answers: every
check per second and CPU per check below is divided by what the listener saw, for both checkers.

keepalived runs as ``keepalived -n -l -D -C --no-syslog -f CONF -p PIDFILE -c CHECKERPIDFILE``
(checkers only, no VRRP; its log to a file, removed at the end) in the same namespace; the CPU
counted is its checker process's (utime + stime from /proc/PID/stat over the window; start-up
excluded: the window opens --warmup seconds after its check rate at the listener has settled).
``--no-syslog``: with no syslog daemon, glibc's syslog writes each log line to /dev/console.

Its checker refuses to start without IPVS in the kernel (``ipvs_start()`` failing is fatal in
keepalived's check_daemon.c, after a ``modprobe ip_vs``; no option turns it off): where
/proc/net/ip_vs is missing, keepalived is run with a small LD_PRELOAD library, compiled here with
``cc``, that answers keepalived's IPVS socket options (IPPROTO_IP, 1152..1170: GET_INFO and the
SET_* commands) with success and passes every other call through (its generic-netlink lookup of
"IPVS" still fails, so keepalived falls back to those socket options). IPVS is only touched at
start-up and when a real server changes state, never per check, so the steady-state figures are
the checker's own. Without keepalived (or cc, or a namespace) its figures are skipped with a note
on stderr.

Prints one figure a line, ``name=value unit``:

* nanny, TCP: checks_per_s, cpu_share (of one core, this process: scheduler + checks + batching
  + core fold), cpu_per_check, lateness_p50/p99/max (check start against its schedule), failed,
  skipped, health_memory_per_server (10,000 NannyCore machines, tracemalloc) and the same for one
  transitions.Machine model per server, for comparison;
* keepalived, TCP: keepalived_checks_per_s, keepalived_cpu_share (its checker process),
  keepalived_parent_cpu_share, keepalived_rs_removed (real servers it took down: 0 when no check
  failed);
* side by side: lvsbus_cpu_us_per_check, keepalived_cpu_us_per_check,
  cpu_ratio_lvsbus_over_keepalived (each CPU over the checks the listener counted for it), then
  lvsbus_listener_cpu_us_per_check and keepalived_listener_cpu_us_per_check: the listener's CPU in
  each window, per check (not in the ratio; on loopback the kernel's TCP work of both ends runs in
  whichever process's system call set it off, so a checker closing with RST, as nanny, and one
  closing with FIN, as keepalived, leave different shares of it to the listener);
* HTTP: lvsbus_http_checks_per_s, lvsbus_http_cpu_share, lvsbus_http_failed, keepalived_http_*,
  then lvsbus_http_cpu_us_per_check, keepalived_http_cpu_us_per_check,
  http_cpu_ratio_lvsbus_over_keepalived, and the listener's per check for each.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack  # noqa: E402

from lvsbus.config import Check, CheckKind, Config, RealServer, Router, VirtualService, to_dict  # noqa: E402
from lvsbus.wire.events import Event  # noqa: E402
from lvsbus_services.nanny.checks import Scheduler, new_loop, raise_nofile  # noqa: E402
from lvsbus_services.nanny.core import NannyCore  # noqa: E402

BASE_PORT = 20000
HTTP_REPLY = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: LD_PRELOAD for keepalived where the kernel has no IPVS: its IPVS socket options (level
#: IPPROTO_IP, IP_VS_BASE_CTL = 1152 .. 1170) succeed, GET_INFO answers version 1.2.1; every other
#: getsockopt/setsockopt (SO_ERROR after each connect, ...) goes to libc's.
IPVS_STUB_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#define VS_LO 1152
#define VS_HI 1170
static int (*real_get)(int, int, int, void *, socklen_t *);
static int (*real_set)(int, int, int, const void *, socklen_t);
int getsockopt(int fd, int level, int name, void *val, socklen_t *len) {
    if (level == IPPROTO_IP && name >= VS_LO && name <= VS_HI) {
        if (val && len) memset(val, 0, *len);
        if (name == VS_LO + 1 && val && len && *len >= 3 * sizeof(unsigned)) {
            unsigned *info = val;  /* struct ip_vs_getinfo: version, size, num_services */
            info[0] = 0x010201; info[1] = 4096; info[2] = 0;
        }
        return 0;
    }
    if (!real_get) real_get = (int (*)(int, int, int, void *, socklen_t *))dlsym(RTLD_NEXT, "getsockopt");
    return real_get(fd, level, name, val, len);
}
int setsockopt(int fd, int level, int name, const void *val, socklen_t len) {
    if (level == IPPROTO_IP && name >= VS_LO && name <= VS_HI) return 0;
    if (!real_set) real_set = (int (*)(int, int, int, const void *, socklen_t))dlsym(RTLD_NEXT, "setsockopt");
    return real_set(fd, level, name, val, len);
}
"""


_LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def term_with_parent() -> None:
    """Between fork and exec: SIGTERM when this process dies, however it dies (keepalived then
    stops its checker, which has its own PR_SET_PDEATHSIG)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def note(msg: str) -> None:
    print(f"checks: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# the listener process (the real servers)


def serve(ports: int, http_ports: int, host: str) -> None:
    """Listener process: TCP listeners accept and close; HTTP listeners read a request, answer 200
    and close; both as fast as possible. Each line on stdin is answered on stdout with the counts:
    ``tcp_accepted http_accepted http_answered``. EOF on stdin ends it."""
    raise_nofile(65536)
    sel = selectors.DefaultSelector()
    for i in range(ports + http_ports):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, BASE_PORT + i))
        s.listen(4096)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, "tcp" if i < ports else "http")
    sel.register(0, selectors.EVENT_READ, "ctl")
    counts = [0, 0, 0]
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            kind = key.data
            if isinstance(kind, bytearray):  # an HTTP client: its request, then the answer
                c = key.fileobj
                try:
                    chunk = c.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                kind += chunk
                if chunk and b"\r\n\r\n" not in kind and b"\n\n" not in kind and len(kind) < 65536:
                    continue
                if chunk:
                    try:
                        c.send(HTTP_REPLY)
                        counts[2] += 1
                    except OSError:
                        pass
                sel.unregister(c)
                c.close()
            elif kind == "ctl":
                data = os.read(0, 4096)
                if not data:
                    return
                for _ in range(data.count(b"\n")):
                    sys.stdout.write(f"{counts[0]} {counts[1]} {counts[2]}\n")
                sys.stdout.flush()
            else:
                ls = key.fileobj
                for _ in range(256):
                    try:
                        c, _a = ls.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        continue
                    if kind == "tcp":
                        counts[0] += 1
                        c.close()
                    else:
                        counts[1] += 1
                        c.setblocking(False)
                        sel.register(c, selectors.EVENT_READ, bytearray())


class Listener:
    """The listener process, and its counts."""

    def __init__(self, ports: int, http_ports: int, host: str) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(ports), "--serve-http", str(http_ports),
                                      "--host", host], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError("the listener process did not start")

    def counts(self) -> tuple[int, int, int]:
        """(TCP connections accepted, HTTP connections accepted, HTTP requests answered) so far."""
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        a, b, c = self.proc.stdout.readline().split()
        return int(a), int(b), int(c)

    def snapshot(self) -> tuple[int, int, int, float]:
        """The counts, and the listener's CPU seconds so far (the real servers' side: on loopback
        the kernel's TCP work of both ends runs in whichever process's system call set it off, so
        a checker that closes with RST and one that closes with FIN split it differently)."""
        st = proc_stat(self.proc.pid)
        return (*self.counts(), st[1] / CLK_TCK if st else float("nan"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


# ---------------------------------------------------------------------------------------------
# lvsbus (nanny's Scheduler and NannyCore, in this process)


def make_config(n: int, ports: int, interval: float, multi_addr: bool, kind: CheckKind = CheckKind.TCP_CONNECT,
                base: int = BASE_PORT) -> Config:
    per_vs = 100
    vss = []
    i = 0
    for v in range((n + per_vs - 1) // per_vs):
        servers = []
        for _ in range(min(per_vs, n - i)):
            addr = f"127.0.{1 + (i // ports) // 250}.{1 + (i // ports) % 250}" if multi_addr else "127.0.0.1"
            servers.append(RealServer(name=f"rs{i}", address=addr, port=base + i % ports))
            i += 1
        vss.append(VirtualService(name=f"vs{v}", address=f"10.1.{v // 250}.{v % 250 + 1}", port=80,
                                  check=Check(kind=kind, interval=interval, timeout=min(1.0, interval), rise=2, fall=3),
                                  servers=tuple(servers)))
    return Config(routers=(Router(name="lvs1", address="10.0.0.1"),), virtual_services=tuple(vss))


def ev(seq: int, type_: str, payload: dict) -> Event:
    return Event(seq, "bench", "nanny", type_, 1, time.monotonic_ns(), time.time_ns(), None, payload)


def memory_figures(cfg: Config) -> tuple[float, float]:
    core = NannyCore()
    model = to_dict(cfg)
    st = core.initial()
    tracemalloc.start()
    a = tracemalloc.take_snapshot()
    st, _ = core.decide(st, ev(1, "config.loaded", {"model": model, "digest": "d", "reload": False, "diff": {}}))
    b = tracemalloc.take_snapshot()
    used = sum(s.size_diff for s in b.compare_to(a, "filename"))
    tracemalloc.stop()
    n = len(st.machines)
    # the other way, for comparison: one transitions model object per server on a shared Machine
    from transitions import Machine

    from lvsbus_services.nanny.core import HEALTH_STATES, HEALTH_TRANSITIONS

    class M:
        pass

    m = Machine(model=[], states=list(HEALTH_STATES), initial="INIT", auto_transitions=False,
                transitions=[{"trigger": t, "source": list(s), "dest": d} for t, s, d, _r, _x in HEALTH_TRANSITIONS])
    k = 2000
    tracemalloc.start()
    a = tracemalloc.take_snapshot()
    models = [M() for _ in range(k)]
    for x in models:
        m.add_model(x)
    b = tracemalloc.take_snapshot()
    per_model = sum(s.size_diff for s in b.compare_to(a, "filename")) / k
    tracemalloc.stop()
    return used / n / 1024, per_model / 1024


def run_lvsbus(args, cfg: Config, lst: Listener) -> dict:
    """One phase: nanny's Scheduler on ``cfg``'s checks, results folded into NannyCore every 50 ms;
    warm-up, then the measured window."""
    loop = new_loop()
    asyncio.set_event_loop(loop)
    core = NannyCore()
    st = core.initial()
    st, _ = core.decide(st, ev(1, "config.loaded", {"model": to_dict(cfg), "digest": "d", "reload": False, "diff": {}}))
    seq = [1]
    batch = {"ids": [], "ok": [], "latency_us": [], "detail": []}
    counts = {"results": 0, "failed": 0, "events": 0, "batches": 0}
    max_late = [0]

    def on_result(id_, ok, latency_us, detail, late_us, weight=None):
        batch["ids"].append(id_)
        batch["ok"].append(ok)
        batch["latency_us"].append(latency_us)
        batch["detail"].append(detail)
        if late_us > max_late[0]:
            max_late[0] = late_us
        counts["results"] += 1
        if not ok:
            counts["failed"] += 1

    def flush():
        nonlocal st
        loop.call_later(0.05, flush)
        if not batch["ids"]:
            return
        payload = {"digest": "d", **batch, "late_us": max_late[0]}
        body = msgpack.packb(payload)  # what publishing costs (the broker and bus are bench/bus.py's)
        payload = msgpack.unpackb(body)  # what the core's runtime decodes
        seq[0] += 1
        st, effects = core.decide(st, ev(seq[0], "health.check_results", payload))
        counts["events"] += len(effects)
        counts["batches"] += 1
        for k in batch:
            batch[k] = []
        max_late[0] = 0

    sched = Scheduler(on_result, loop)
    plan = [(h.id, h.address, h.check[1], h.check[2]) for h in st.machines.values()]
    sched.set_checks(plan)

    async def go() -> dict:
        sched.start()
        loop.call_later(0.05, flush)
        await asyncio.sleep(args.warmup)
        r0, u0, c0 = counts["results"], resource.getrusage(resource.RUSAGE_SELF), lst.snapshot()
        f0, b0, e0 = counts["failed"], counts["batches"], counts["events"]
        sched.lateness = []
        t0 = time.monotonic()
        await asyncio.sleep(args.seconds)
        t1 = time.monotonic()
        u1, c1 = resource.getrusage(resource.RUSAGE_SELF), lst.snapshot()
        out = {"wall": t1 - t0, "utime": u1.ru_utime - u0.ru_utime, "stime": u1.ru_stime - u0.ru_stime,
               "results": counts["results"] - r0, "failed": counts["failed"] - f0, "skipped": sched.skipped,
               "batches": counts["batches"] - b0, "events": counts["events"] - e0,
               "lateness": sorted(sched.lateness), "listener": [b - a for a, b in zip(c0, c1)],
               "loop": type(loop).__module__.split(".")[0]}
        sched.stop()
        sched.lateness = None
        deadline = time.monotonic() + 2.0  # the checks still running end before the loop closes
        while sched.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return out

    try:
        return loop.run_until_complete(go())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


# ---------------------------------------------------------------------------------------------
# keepalived (its checker process, on the same real servers)


def keepalived_conf(cfg: Config, http: bool) -> str:
    """``cfg``'s virtual services for keepalived: NAT (DR would reset each real server's port to
    the virtual server's), a TCP_CHECK or HTTP_GET per real server, delay_loop = the interval."""
    out = ["global_defs {", "    router_id LVSBUS_BENCH", "}", ""]
    for vs in cfg.virtual_services:
        chk = vs.check
        out += [f"virtual_server {vs.address} {vs.port} {{", f"    delay_loop {chk.interval:g}", "    lb_algo rr",
                "    lb_kind NAT", "    protocol TCP"]
        for rs in vs.servers:
            out += [f"    real_server {rs.address} {rs.port} {{", "        weight 1"]
            if http:
                out += ["        HTTP_GET {", "            url {", "                path /",
                        "                status_code 200", "            }",
                        f"            connect_timeout {chk.timeout:g}", "        }"]
            else:
                out += ["        TCP_CHECK {", f"            connect_timeout {chk.timeout:g}", "        }"]
            out.append("    }")
        out += ["}", ""]
    return "\n".join(out)


def proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime + stime in clock ticks, start time) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = text[text.rindex(")") + 2:].split()
    return int(f[1]), int(f[11]) + int(f[12]), int(f[19])


def build_ipvs_stub(tmp: Path) -> Path | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        note("no C compiler: keepalived's IPVS stub cannot be built, keepalived's figures skipped")
        return None
    src, so = tmp / "ipvs_stub.c", tmp / "ipvs_stub.so"
    src.write_text(IPVS_STUB_C)
    r = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(so), str(src), "-ldl"], capture_output=True,
                       text=True)
    if r.returncode != 0:
        note(f"keepalived's IPVS stub did not build, keepalived's figures skipped:\n{r.stderr[-2000:]}")
        return None
    return so


def run_keepalived(args, keepalived: str, cfg: Config, lst: Listener, tmp: Path, stub: Path | None,
                   label: str) -> dict:
    """One phase: keepalived's checker on ``cfg``'s real servers; warm-up, then the window. Every
    process started here is stopped here (by PID), also on failure."""
    http = label == "http"
    conf = tmp / f"keepalived-{label}.conf"
    conf.write_text(keepalived_conf(cfg, http))
    logpath = tmp / f"keepalived-{label}.log"
    cpidf = tmp / f"keepalived-{label}-checkers.pid"
    env = dict(os.environ)
    if stub is not None:
        env["LD_PRELOAD"] = str(stub)
    checker: tuple[int, int] | None = None  # (pid, start time): never kill another process by that PID
    with open(logpath, "w") as log:
        # --no-syslog: with no syslog daemon, glibc's syslog writes every line to /dev/console
        k = subprocess.Popen([keepalived, "-n", "-l", "-D", "-C", "--no-syslog", "-f", str(conf),
                              "-p", str(tmp / f"keepalived-{label}.pid"), "-c", str(cpidf)],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                             preexec_fn=term_with_parent)
    try:
        deadline = time.monotonic() + 30
        while checker is None:
            if k.poll() is not None:
                raise RuntimeError(f"keepalived exited ({k.returncode}) before its checker started:\n"
                                   + logpath.read_text()[-3000:])
            if time.monotonic() > deadline:
                raise RuntimeError("keepalived's checker did not start in 30 s:\n" + logpath.read_text()[-3000:])
            try:
                pid = int(cpidf.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pid = 0
            st = proc_stat(pid) if pid else None
            if st is not None and st[0] == k.pid:
                checker = (pid, st[2])
            else:
                time.sleep(0.05)
        # keepalived starts each checker after 1 s plus a random part of delay_loop, and then checks
        # each real server delay_loop after its last check ended (a little under N/interval a
        # second): the window opens --warmup seconds after the listener's count a second reaches 80%
        # of N/interval, or stops growing (two seconds within 5% of each other, over half of it)
        idx = 2 if http else 0
        expected = sum(len(vs.servers) / vs.check.interval for vs in cfg.virtual_services)
        deadline = time.monotonic() + 30 + expected / 500
        prev, last = lst.counts()[idx], -1
        while True:
            time.sleep(1.0)
            cur = lst.counts()[idx]
            rate, prev = cur - prev, cur
            if rate >= 0.8 * expected or (rate >= 0.5 * expected and abs(rate - last) <= 0.05 * rate):
                break
            if k.poll() is not None:
                raise RuntimeError(f"keepalived exited ({k.returncode}):\n" + logpath.read_text()[-3000:])
            if time.monotonic() > deadline:
                note(f"keepalived ({label}): {rate} checks in the last second of its start-up, "
                     f"{expected:.0f} expected; measured anyway")
                break
            last = rate
        time.sleep(args.warmup)
        s0, p0, c0, t0 = proc_stat(checker[0]), proc_stat(k.pid), lst.snapshot(), time.monotonic()
        time.sleep(args.seconds)
        s1, p1, c1, t1 = proc_stat(checker[0]), proc_stat(k.pid), lst.snapshot(), time.monotonic()
        if None in (s0, s1, p0, p1) or k.poll() is not None:
            raise RuntimeError("keepalived or its checker stopped during the window:\n" + logpath.read_text()[-3000:])
        return {"wall": t1 - t0, "cpu": (s1[1] - s0[1]) / CLK_TCK, "parent_cpu": (p1[1] - p0[1]) / CLK_TCK,
                "listener": [b - a for a, b in zip(c0, c1)]}
    finally:
        if k.poll() is None:
            k.send_signal(signal.SIGTERM)
            try:
                k.wait(10)
            except subprocess.TimeoutExpired:
                k.kill()
                k.wait()
        if checker is not None:
            st = proc_stat(checker[0])
            if st is not None and st[2] == checker[1]:  # still there after its parent: ours, same start time
                os.kill(checker[0], signal.SIGKILL)
                for _ in range(100):
                    if proc_stat(checker[0]) is None:
                        break
                    time.sleep(0.02)


def removed(tmp: Path, label: str) -> int:
    """Real servers keepalived took out (its log): 0 when none of its checks failed."""
    try:
        return (tmp / f"keepalived-{label}.log").read_text(errors="replace").count("Removing service")
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", type=int, default=10000, help="TCP real servers (default 10000)")
    ap.add_argument("--http-servers", type=int, default=1000,
                    help="HTTP real servers, i.e. HTTP checks per --interval (default 1000; 0: no HTTP figures)")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window of each phase (default 30)")
    ap.add_argument("--interval", type=float, default=1.0,
                    help="check interval, nanny's and keepalived's delay_loop (default 1.0 s)")
    ap.add_argument("--ports", type=int, default=100, help="TCP listeners, and as many HTTP listeners (default 100)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of each phase before its window (default 3)")
    ap.add_argument("--keepalived", action=argparse.BooleanOptionalAction, default=True,
                    help="also run keepalived's checker on the same real servers, back to back with nanny's "
                         "(default: on; skipped with a note on stderr when keepalived is not installed, under "
                         "--no-netns or when not root, or when the kernel has no IPVS and cc cannot build the stub)")
    ap.add_argument("--no-netns", action="store_true",
                    help="no private network namespace: listeners on 127.0.0.1 only (needs servers <= ports); "
                         "keepalived skipped")
    ap.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default="", help=argparse.SUPPRESS)
    ap.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--serve-http", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--host", default="0.0.0.0", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve or args.serve_http:
        serve(args.serve, args.serve_http, args.host)
        return 0
    if not args.no_netns and not args.in_netns:
        if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
            # the temporary directory is this process's: removed even when the inner one is SIGKILLed
            tmp = tempfile.mkdtemp(prefix="lvsbus-bench-checks-")
            try:
                cmd = " ".join([sys.executable, *map(str, sys.argv), "--in-netns", "--tmp", tmp])
                inner = subprocess.Popen(["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {cmd}"])
                signal.signal(signal.SIGTERM, lambda *_: inner.send_signal(signal.SIGTERM))  # it cleans up, then exits
                while True:
                    try:
                        return inner.wait()
                    except KeyboardInterrupt:  # ^C reaches the inner process too: wait for its clean-up
                        continue
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        args.no_netns = True
    multi = not args.no_netns
    # SIGTERM unwinds like ^C: the listener, keepalived and the temporary directory are removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    keepalived = None
    if args.keepalived:
        keepalived = shutil.which("keepalived") or (
            "/usr/sbin/keepalived" if os.access("/usr/sbin/keepalived", os.X_OK) else None)
        if keepalived is None:
            note("keepalived is not installed: its figures are skipped")
        elif not args.in_netns:
            note("no private network namespace (--no-netns, or not root): keepalived's figures are skipped")
            keepalived = None
    raise_nofile(65536)
    host = "0.0.0.0" if multi else "127.0.0.1"
    http_ports = args.ports if args.http_servers > 0 else 0
    lst = Listener(args.ports, http_ports, host)
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="lvsbus-bench-checks-"))
    try:
        cfg = make_config(args.servers, args.ports, args.interval, multi)
        kb_core, kb_model = memory_figures(cfg)
        return run(args, cfg, lst, keepalived, tmp, kb_core, kb_model, multi)
    finally:
        lst.close()
        shutil.rmtree(tmp, ignore_errors=True)


def per_check(cpu: float, n: int) -> float:
    return 1e6 * cpu / n if n > 0 else float("nan")


def run(args, cfg: Config, lst: Listener, keepalived: str | None, tmp: Path, kb_core: float, kb_model: float,
        multi: bool) -> int:
    def out(line: str) -> None:
        print(line, flush=True)

    rc = 0
    res = run_lvsbus(args, cfg, lst)
    wall, cpu = res["wall"], res["utime"] + res["stime"]
    n, lat = res["results"], res["lateness"]
    seen = res["listener"][0]

    def q(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else 0.0

    out(f"loop={res['loop']}")
    out(f"servers={args.servers} count")
    out(f"interval={args.interval} s")
    out(f"seconds={wall:.1f} s")
    out(f"checks_per_s={n / wall:.0f} checks/s")
    out(f"cpu_share={100 * cpu / wall:.1f} % of one core")
    out(f"cpu_user={100 * res['utime'] / wall:.1f} % of one core")
    out(f"cpu_sys={100 * res['stime'] / wall:.1f} % of one core")
    out(f"cpu_per_check={per_check(cpu, n):.1f} us")
    out(f"lateness_p50={q(0.5):.2f} ms")
    out(f"lateness_p99={q(0.99):.2f} ms")
    out(f"lateness_max={lat[-1] * 1000 if lat else 0:.2f} ms")
    out(f"failed={res['failed']} checks")
    out(f"skipped={res['skipped']} checks")
    out(f"batches={res['batches']} count")
    out(f"health_events={res['events']} count")
    out(f"health_memory_per_server={kb_core:.2f} KB (NannyCore: slotted Health + one shared Machine)")
    out(f"transitions_model_per_server={kb_model:.2f} KB (for comparison: one Machine model per server)")
    out(f"health_memory_10000={kb_core * 10000 / 1024:.1f} MB")
    out(f"lvsbus_listener_checks_per_s={seen / wall:.0f} checks/s (connections the listener accepted)")

    stub = None
    if keepalived is not None:
        ver = subprocess.run([keepalived, "--version"], capture_output=True, text=True)
        out(f"keepalived_version={(ver.stderr or ver.stdout).split()[1]}")
        if os.path.exists("/proc/net/ip_vs"):
            out("keepalived_ipvs=kernel")
        else:
            stub = build_ipvs_stub(tmp)
            if stub is None:
                keepalived = None
            else:
                out("keepalived_ipvs=stubbed (no IPVS in this kernel: its IPVS socket options answered by an "
                    "LD_PRELOAD stub; none are used per check)")

    def side_by_side(kind: str, cfg, lv_cpu: float, lv_seen: int, lv_listener_cpu: float) -> int:
        """keepalived on ``cfg`` (``kind``: tcp or http), then both sides' figures, per check counted
        at the listener (connections accepted for TCP, requests answered for HTTP). 1: it failed."""
        p = "" if kind == "tcp" else f"{kind}_"
        counted = 0 if kind == "tcp" else 2  # the listener's counter of this kind
        kres, failed = None, 0
        if keepalived is not None:
            try:
                kres = run_keepalived(args, keepalived, cfg, lst, tmp, stub, kind)
            except RuntimeError as exc:
                note(f"keepalived ({kind.upper()}): {exc}")
                failed = 1
        if kres is not None:
            kw, kn = kres["wall"], kres["listener"][counted]
            out(f"keepalived_{p}checks_per_s={kn / kw:.0f} checks/s (counted by the listener)")
            out(f"keepalived_{p}cpu_share={100 * kres['cpu'] / kw:.1f} % of one core (its checker process)")
            out(f"keepalived_{p}parent_cpu_share={100 * kres['parent_cpu'] / kw:.1f} % of one core")
            out(f"keepalived_{p}rs_removed={removed(tmp, kind)} count")
        lv_us = per_check(lv_cpu, lv_seen)
        out(f"lvsbus_{p}cpu_us_per_check={lv_us:.1f} us")
        if kres is not None:
            ka_us = per_check(kres["cpu"], kres["listener"][counted])
            out(f"keepalived_{p}cpu_us_per_check={ka_us:.1f} us")
            out(f"{p}cpu_ratio_lvsbus_over_keepalived={lv_us / ka_us:.2f}")
        out(f"lvsbus_{p}listener_cpu_us_per_check={per_check(lv_listener_cpu, lv_seen):.1f} us (the real servers' side)")
        if kres is not None:
            out(f"keepalived_{p}listener_cpu_us_per_check="
                f"{per_check(kres['listener'][3], kres['listener'][counted]):.1f} us")
        return failed

    rc |= side_by_side("tcp", cfg, cpu, seen, res["listener"][3])
    if args.http_servers > 0:
        hcfg = make_config(args.http_servers, args.ports, args.interval, multi, CheckKind.HTTP, BASE_PORT + args.ports)
        hres = run_lvsbus(args, hcfg, lst)
        hw, hcpu = hres["wall"], hres["utime"] + hres["stime"]
        hseen = hres["listener"][2]
        out(f"http_servers={args.http_servers} count")
        out(f"lvsbus_http_checks_per_s={hres['results'] / hw:.0f} checks/s")
        out(f"lvsbus_http_listener_checks_per_s={hseen / hw:.0f} checks/s (requests the listener answered)")
        out(f"lvsbus_http_cpu_share={100 * hcpu / hw:.1f} % of one core")
        out(f"lvsbus_http_failed={hres['failed']} checks")
        rc |= side_by_side("http", hcfg, hcpu, hseen, hres["listener"][3])
    out(f"loadavg_1m={os.getloadavg()[0]:.2f} (the machine's: other work competes for its {os.cpu_count()} cores)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
