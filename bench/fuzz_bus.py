"""Fuzzing of the bus's inputs: malformed frames at a real broker, heartbeat and fence datagrams at pulse.

One function a target (``fuzz_bus``, ``fuzz_pulse``), each returning its counts; other targets
(config readers, log segments) live in their own modules (bench/fuzz_config.py, bench/fuzz_log.py).
tests/process/test_bus_input.py runs the same generators at a bounded size.

bus: a broker process (``lvsbus broker``) and raw ZeroMQ sockets that send seeded malformed messages
(type and version of every msgpack kind, wrong arity, bad causes, payloads with a field of the wrong
type, missing or unknown fields, bytes keys, frames of thousands of bad items, frames over the
size limit, garbage hellos and kinds). Every window of frames ends with a legitimate acknowledged
publish: it must be acknowledged, promptly, and be in the log at the end. Then every record of the
log must decode, by the careful and the fast path, validated and not.

pulse: datagrams through ``lvsbus_services.pulse.wire.decode_datagram`` and pulse's shell (``_datagram``,
whose observations are checked against the catalog): random bytes, bit flips of valid datagrams
(every one must be refused: 100% detection), cuts and extensions, and bodies under a valid MAC
(a buggy or compromised peer): field values of every kind, missing or extra fields.

Prints ``name=value`` lines: frames, refused, accepted, crashes, acked, acked_lost, ack_max_ms,
records, undecodable (bus); datagrams, datagram_refused, datagram_accepted, datagram_crashes,
flips_undetected, bad_observations (pulse). Exit 1 when a crash, a loss, an undecodable record
or an undetected flip was seen.

Usage: python bench/fuzz_bus.py [--target bus|pulse|all] [--frames N] [--datagrams N] [--seed S]
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

if __name__ == "__main__":  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import msgpack

# -------------------------------------------------------------------------------------------------
# values of every msgpack kind


def _deep(n: int):
    v: object = 0
    for _ in range(n):
        v = [v]
    return v


KINDS: list = [
    None, True, False, 0, 1, 2, -1, 7, 2**31, 2**63 - 1, 2**64 - 1, -(2**63), 1.0, 0.0, -0.5, 1e300,
    float("nan"), float("inf"), "", "x", "timer.fired", "bus.probe", "no.such_type", "Timer.Fired", "x" * 300,
    "\u00e9\u4e2d", b"", b"timer.fired", b"\xff" * 40, [], [1], ["timer.fired"], [[[]]], {}, {"a": 1},
    {b"k": 1}, {"service": "s"}, msgpack.ExtType(5, b"x"), msgpack.Timestamp(1, 0), _deep(40),
]


def any_value(rnd: random.Random, depth: int = 0):
    r = rnd.random()
    if depth < 3 and r < 0.12:
        return [any_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    if depth < 3 and r < 0.2:
        return {rnd.choice(["a", "service", "n", b"b", "pad", ""]): any_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))}
    if r < 0.3:
        return rnd.randint(-(2**63), 2**64 - 1)
    return rnd.choice(KINDS)


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# -------------------------------------------------------------------------------------------------
# bus frames

#: valid items [type, version, cause, payload]: mutated into malformed ones
SEEDS: list[list] = [
    ["timer.fired", 1, None, {"service": "s", "deadline_ns": 5}],
    ["bus.probe", 1, None, {"sent_ns": 1, "n": 2, "pad": "p"}],
    ["bus.client_joined", 1, None, {"client": "c", "subscriptions": "a,b", "pid": None}],
    ["bus.client_joined", 2, 3, {"client": "c", "subscriptions": ["a"], "pid": 4}],
    ["bus.frame_rejected", 1, None, {"reason": "malformed", "detail": "d", "peer": "p", "size": 1, "count": 1}],
    ["pulse.heartbeat_received", 1, None, {"link": "public", "peer": "r2", "address": "10.0.0.2", "role": "BACKUP",
                                           "priority": 100, "epoch": 1, "seq": 1, "leaving": False}],
]


def golden_seeds(root: str) -> list[list]:
    """Items (type, version, cause, payload) of the golden logs under ``root`` (more kinds of payload)."""
    from lvsbus.wire.events import unpack
    from lvsbus.log import LogReader

    out: list[list] = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return out
    for name in names:
        d = os.path.join(root, name)
        if not os.path.isdir(d):
            continue
        seen = set()
        try:
            for _seq, body in LogReader(d).read(1):
                raw = unpack(body)
                key = (raw[4], raw[5])
                if key not in seen:
                    seen.add(key)
                    out.append([raw[4], raw[5], raw[8], raw[9]])
        except Exception:  # an odd golden log (one kept corrupt on purpose): its readable records do
            pass
    return out


def mutate_payload(rnd: random.Random, payload):
    if type(payload) is not dict or not payload or rnd.random() < 0.1:
        return any_value(rnd)
    p = dict(payload)
    k = rnd.choice(list(p))
    r = rnd.random()
    if r < 0.45:
        v = p[k]
        if type(v) is int and rnd.random() < 0.5:  # the classic: a bool or a float for an int
            p[k] = rnd.choice([True, False, float(v), v + 0.5])
        else:
            p[k] = any_value(rnd)
    elif r < 0.6:
        del p[k]
    elif r < 0.75:
        p[rnd.choice(["extra", "x" * 70, "\0"])] = any_value(rnd)
    elif r < 0.85:
        p[k.encode()] = p.pop(k)  # a bytes key
    else:
        p[k] = [p[k]] * rnd.randint(0, 3)
    return p


def bad_item(rnd: random.Random, seeds: list[list]):
    item = list(rnd.choice(seeds))
    r = rnd.random()
    if r < 0.15:
        item[0] = any_value(rnd)  # type
    elif r < 0.35:
        item[1] = any_value(rnd)  # version
    elif r < 0.45:
        item[2] = any_value(rnd)  # cause
    elif r < 0.8:
        item[3] = mutate_payload(rnd, item[3])
    elif r < 0.9:
        n = rnd.choice([0, 1, 2, 3, 5, 6])
        item = (item + [any_value(rnd) for _ in range(3)])[:n]  # wrong arity
    else:
        return any_value(rnd)  # not a list at all
    return item


def publish_body(rnd: random.Random, seeds: list[list]) -> bytes:
    r = rnd.random()
    if r < 0.7:
        items = [bad_item(rnd, seeds) for _ in range(rnd.choice([1, 1, 1, 2, 3, 8]))]
        if rnd.random() < 0.3:
            items.insert(rnd.randint(0, len(items)), list(rnd.choice(seeds)))  # good items among bad ones
        msg: list = [rnd.choice([0, 0, rnd.randint(1, 2**32)]), items]
        if rnd.random() < 0.3:
            msg.append(rnd.choice([b"12345678", b"", b"n" * 40, "str", 5]))
        return _pack(msg)
    if r < 0.8:
        return _pack(any_value(rnd))  # not [ack_id, items]
    if r < 0.9:  # [ack_id, items, nonce] with a bad shape
        return _pack([any_value(rnd), any_value(rnd), any_value(rnd)][: rnd.randint(0, 3)] + [any_value(rnd)] * rnd.randint(0, 2))
    return rnd.randbytes(rnd.randint(0, 64))  # not msgpack


def big_publish_body(rnd: random.Random, seeds: list[list], target_bytes: int = 1 << 20) -> bytes:
    """One frame of about ``target_bytes``: a great many bad items (and one good one at the end)."""
    small = [_pack(bad_item(rnd, seeds)) for _ in range(16)]
    small = [s for s in small if len(s) < 200] or [b"\x00"]
    parts, size = [], 0
    while size < target_bytes:
        s = rnd.choice(small)
        parts.append(s)
        size += len(s)
    good = _pack(list(seeds[0]))
    n = len(parts) + 1
    header = b"\xdd" + n.to_bytes(4, "big")  # array 32
    return b"\x92\x00" + header + b"".join(parts) + good


def frames(rnd: random.Random, seeds: list[list]) -> list[bytes]:
    """A random malformed message (its parts, without the routing identity)."""
    r = rnd.random()
    if r < 0.75:
        name = b"evil" if rnd.random() < 0.9 else rnd.choice([b"", b"\xff\xfe", b"n" * 65, "\u00e9".encode() * 40])
        return [b"P", name, publish_body(rnd, seeds)]
    if r < 0.85:
        hello = rnd.choice([
            any_value(rnd),
            {"name": any_value(rnd), "subs": any_value(rnd), "pid": any_value(rnd)},
            {"name": "h", "subs": ["x"] * rnd.choice([65, 1000]), "pid": 1},
            {"name": "h", "subs": ["y" * 200], "pid": -1},
        ])
        return [b"H", _pack(hello)]
    if r < 0.95:  # wrong arity or kind
        kind = rnd.choice([b"P", b"H", b"B", b"Q", b"", b"PP", rnd.randbytes(3)])
        return [kind] + [rnd.randbytes(rnd.randint(0, 20)) for _ in range(rnd.choice([0, 1, 3, 4, 6]))]
    return [rnd.randbytes(rnd.randint(0, 40)) for _ in range(rnd.randint(1, 5))]


class BrokerProc:
    def __init__(self, state: str, node: str = "fz1") -> None:
        self.state, self.node = state, node
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.tracebacks = 0
        self.failed_frames = 0

    def start(self) -> "BrokerProc":
        env = {**os.environ, "LVSBUS_LOG_FORMAT": "json"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lvsbus.cli", "broker", "--node", self.node, "--state-dir", self.state],
            stderr=subprocess.PIPE, env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            line = self.proc.stderr.readline().decode(errors="replace")
            if "broker ready" in line:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"broker did not start: {line}")
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        for raw in self.proc.stderr:  # type: ignore[union-attr]
            line = raw.decode(errors="replace")
            if "Traceback" in line:
                self.tracebacks += 1
            if "frame_failed" in line:
                self.failed_frames += 1
            if "frame_rejected" not in line and len(self.lines) < 1000:
                self.lines.append(line)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            try:
                self.proc.wait(20)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                self.proc.kill()  # type: ignore[union-attr]
                self.proc.wait(10)  # type: ignore[union-attr]
        return self.proc.returncode if self.proc else None


def _endpoint(state: str) -> str:
    return "ipc://" + os.path.join(state, "run", "bus.sock")


def check_log(log_dir: str) -> tuple[int, list[tuple[int, str]]]:
    """(records, [(seq, why)] of those that do not decode by every path a reader takes)."""
    from lvsbus.wire.events import DecodeError, decode, decode_records
    from lvsbus.log import LogReader

    bad: list[tuple[int, str]] = []
    n = 0
    for batch in LogReader(log_dir).read_batches(1):
        n += len(batch)
        for validate in (True, False):
            rest = list(batch)
            while rest:
                evs, b = decode_records(rest, validate=validate)
                if b is None:
                    break
                bad.append((b[0], f"decode_records(validate={validate}): {b[1]}"))
                rest = rest[len(evs) + 1:]
        for seq, body in batch:
            try:
                decode(body, seq)
            except DecodeError as exc:
                bad.append((seq, f"decode: {exc}"))
    return n, bad


def fuzz_bus(n_frames: int, seed: int = 1, window: int = 200, big_every: int = 20_000, state: str | None = None,
             progress=None, golden: str | None = None) -> dict:
    """Send ``n_frames`` malformed messages to a broker; returns the counts (see the module doc)."""
    import zmq

    from lvsbus.wire import catalog  # noqa: F401
    from lvsbus.wire.events import REGISTRY

    rnd = random.Random(seed)
    seeds = list(SEEDS)
    if golden:
        seeds += [s for s in golden_seeds(golden) if s[0] in REGISTRY and _valid(REGISTRY, s)]
    own_tmp = None
    if state is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="lvsbus-fuzz-")
        state = own_tmp.name
    counts = {"frames": 0, "refused": 0, "accepted": 0, "crashes": 0, "acked": 0, "acked_lost": 0,
              "ack_max_ms": 0.0, "records": 0, "undecodable": 0, "seconds": 0.0}
    broker = BrokerProc(state).start()
    ctx = zmq.Context.instance()

    def dealer():
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, 100_000)
        s.setsockopt(zmq.SNDTIMEO, 10_000)  # a dead broker: zmq.Again, then counted as a crash below
        s.connect(_endpoint(state))
        return s

    sock = dealer()
    sock.send_multipart([b"H", _pack({"name": "fuzz", "subs": [], "pid": os.getpid()})])
    nonce = os.urandom(8)
    ack_id = 0
    acked: dict[int, dict] = {}  # ack_id -> payload of the legitimate publish
    acked_seq: dict[int, int] = {}
    t0 = time.monotonic()
    sent = 0
    try:
        while sent < n_frames:
            k = min(window, n_frames - sent)
            try:
                for _ in range(k):
                    if big_every and sent and sent % big_every == 0:
                        sock.send_multipart([b"P", b"evil", big_publish_body(rnd, seeds)])
                    else:
                        sock.send_multipart(frames(rnd, seeds))
                    sent += 1
            except zmq.Again:  # the broker is gone: its crash is counted below
                pass
            # a legitimate acknowledged publish ends the window; its A comes after the window's R's
            ack_id += 1
            payload = {"service": "fuzz", "deadline_ns": ack_id}
            body = _pack([ack_id, [["timer.fired", 1, None, payload]], nonce])
            ts = time.monotonic()
            try:
                sock.send_multipart([b"P", b"fuzz", body])
            except zmq.Again:
                pass
            deadline = ts + 30
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not broker.alive():
                    break
                if not sock.poll(int(min(left, 0.5) * 1000)):
                    continue
                msg = sock.recv_multipart()
                if msg[0] == b"R":
                    counts["refused"] += 1
                elif msg[0] == b"A":
                    aid, first, last = msgpack.unpackb(msg[1])
                    if aid == ack_id:
                        acked[ack_id] = payload
                        acked_seq[ack_id] = last
                        counts["ack_max_ms"] = max(counts["ack_max_ms"], (time.monotonic() - ts) * 1000)
                        break
                elif msg[0] == b"W":
                    sock.send_multipart([b"H", _pack({"name": "fuzz", "subs": [], "pid": os.getpid()})])
            if not broker.alive():
                counts["crashes"] += 1
                broker = BrokerProc(state).start()
                sock.close(0)
                sock = dealer()
                sock.send_multipart([b"H", _pack({"name": "fuzz", "subs": [], "pid": os.getpid()})])
            if progress is not None:
                progress(sent, counts)
    finally:
        counts["frames"] = sent
        counts["seconds"] = round(time.monotonic() - t0, 1)
        sock.close(0)
        rc = broker.stop()
        if rc not in (0, None):
            counts["crashes"] += 1
        counts["crashes"] += broker.tracebacks + broker.failed_frames
        counts["acked"] = len(acked)
        log_dir = os.path.join(state, "log")
        from lvsbus.wire.events import decode
        from lvsbus.log import LogReader

        logged = {}
        for seq, body in LogReader(log_dir).read(1):
            try:
                ev = decode(body, seq)
            except Exception:
                continue
            if ev.type == "timer.fired" and ev.source == "fuzz":
                logged[seq] = ev.payload
        counts["acked_lost"] = sum(1 for a, s in acked_seq.items() if logged.get(s) != acked[a])
        counts["records"], bad = check_log(log_dir)
        counts["undecodable"] = len(bad)
        counts["undecodable_first"] = bad[:3]
        counts["accepted"] = sent - counts["refused"]
        counts["ack_max_ms"] = round(counts["ack_max_ms"], 1)
        if own_tmp is not None:
            own_tmp.cleanup()
    return counts


def _valid(registry, item) -> bool:
    try:
        registry.validate(item[0], item[1], item[3])
        return True
    except Exception:
        return False


# -------------------------------------------------------------------------------------------------
# pulse datagrams


class _CheckingRuntime:
    """What pulse's shell publishes, each payload checked against the catalog as the broker will."""

    def __init__(self) -> None:
        self.published = 0
        self.bad: list[str] = []
        self.client = object()

    def publish(self, type_, payload):
        from lvsbus.wire.events import REGISTRY, DecodeError

        try:
            REGISTRY.validate(type_, REGISTRY.latest(type_).version, payload)
        except DecodeError as exc:
            if len(self.bad) < 10:
                self.bad.append(f"{type_}: {exc}")
            else:
                self.bad.append("")
        self.published += 1


def _pulse_shell(tmp: str):
    from lvsbus.config import loads
    from lvsbus_services.pulse import shell
    from lvsbus_services.pulse.core import _settings_from_model
    from lvsbus.demo.netns import router_toml

    class T:  # enough of a Topology for router_toml
        n_routers, private = 2, True

        @staticmethod
        def router_address(i, link="public"):
            return f"10.99.{1 if link == 'public' else 2}.{10 + i}"

    cfg = loads(router_toml(T, os.path.join(tmp, "k")), "x.toml").config
    sh = shell.PulseShell(tmp, "x.toml", 1)
    sh.settings = _settings_from_model(cfg, "r1")
    sh.key = b"k" * 32
    sh.runtime = _CheckingRuntime()
    return sh


def datagram(rnd: random.Random, key: bytes) -> tuple[bytes, bool]:
    """A random datagram, and whether it is a corruption (a changed copy of a valid one) that must be refused."""
    from lvsbus_services.pulse import wire

    hb = {"node": rnd.choice(["r2", "r1", "x"]), "role": rnd.choice(sorted(wire.ROLES)),
          "priority": rnd.randint(0, 65535), "epoch": rnd.randint(0, 2**64 - 1), "seq": rnd.randint(0, 2**64 - 1),
          "leaving": rnd.random() < 0.1}
    fence = {"node": "r2", "target": rnd.choice(["r1", "r3"]), "epoch": rnd.randint(0, 2**64 - 1),
             "seq": rnd.randint(0, 2**64 - 1), "reason": rnd.choice(["", "peer_dead", "x" * 64])}
    good = wire.encode_heartbeat(key, hb) if rnd.random() < 0.7 else wire.encode_fence(key, fence)
    r = rnd.random()
    if r < 0.15:
        return rnd.randbytes(rnd.randint(0, wire.MAX_DATAGRAM + 64)), False
    if r < 0.5:
        data = bytearray(good)
        for _ in range(rnd.randint(1, 8)):
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
        return bytes(data), bytes(data) != good
    if r < 0.6:
        cut = rnd.randrange(len(good))
        data = good[:cut] + rnd.randbytes(rnd.randint(0, 16))
        return data, data != good
    if r < 0.95:  # a body under a valid MAC: only the body checks stand between it and the core
        body = dict(hb if rnd.random() < 0.6 else fence)
        k = rnd.choice(list(body))
        x = rnd.random()
        if x < 0.5:
            body[k] = any_value(rnd)
        elif x < 0.65:
            del body[k]
        elif x < 0.8:
            body[rnd.choice(["extra", b"node", ""])] = any_value(rnd)
        else:
            body = any_value(rnd)
        kind = rnd.choice([1, 2, 1, 2, 0, 3, 255])
        try:
            packed = msgpack.packb(body, use_bin_type=True)
        except Exception:
            packed = b"\xc1"
        return _forge(key, kind, packed, version=rnd.choice([1, 1, 1, 0, 2])), False
    return good, False


def _forge(key: bytes, kind: int, packed: bytes, version: int = 1) -> bytes:
    import hashlib
    import hmac

    from lvsbus_services.pulse import wire

    msg = wire._HEADER.pack(wire.MAGIC, version, kind) + packed
    return msg + hmac.new(key, msg, hashlib.sha256).digest()


def fuzz_pulse(n: int, seed: int = 1, progress=None) -> dict:
    """``n`` datagrams through decode_datagram and pulse's shell; returns the counts."""
    from lvsbus.wire import catalog  # noqa: F401
    from lvsbus_services.pulse import wire

    import logging

    import structlog

    before = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))  # not 1M warnings
    try:
        rnd = random.Random(seed)
        counts = {"datagrams": 0, "datagram_refused": 0, "datagram_accepted": 0, "datagram_crashes": 0,
                  "flips_undetected": 0, "bad_observations": 0, "datagram_crash_first": []}
        with tempfile.TemporaryDirectory(prefix="lvsbus-fuzz-pulse-") as tmp:
            sh = _pulse_shell(tmp)
            key = sh.key
            for i in range(n):
                data, corrupt = datagram(rnd, key)
                try:
                    wire.decode_datagram(key, data)
                    counts["datagram_accepted"] += 1
                    if corrupt:
                        counts["flips_undetected"] += 1
                except wire.WireError:
                    counts["datagram_refused"] += 1
                except Exception as exc:  # noqa: BLE001 - that is what is counted
                    counts["datagram_crashes"] += 1
                    if len(counts["datagram_crash_first"]) < 3:
                        counts["datagram_crash_first"].append(f"decode: {type(exc).__name__}: {exc}"[:200])
                try:
                    sh._datagram(rnd.choice(["public", "private"]), data, rnd.choice(["10.99.1.12", "10.99.2.12", "10.9.9.9", "::1"]))
                except Exception as exc:  # noqa: BLE001
                    counts["datagram_crashes"] += 1
                    if len(counts["datagram_crash_first"]) < 3:
                        counts["datagram_crash_first"].append(f"shell: {type(exc).__name__}: {exc}"[:200])
                counts["datagrams"] = i + 1
                if progress is not None and (i + 1) % 100_000 == 0:
                    progress(i + 1, counts)
            counts["bad_observations"] = len(sh.runtime.bad)
            counts["bad_observation_first"] = [b for b in sh.runtime.bad if b][:3]
    finally:
        structlog.configure(**before)  # a test that calls this in-process leaves logging as it was
    return counts


# -------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=("bus", "pulse", "all"), default="all")
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--datagrams", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    t_start = time.monotonic()

    def progress(what):
        def show(n, c):
            if not args.quiet and n % 100_000 < 200:
                print(f"[{time.monotonic() - t_start:7.0f}s] {what} {n} {c}", file=sys.stderr, flush=True)
        return show

    failed = False
    if args.target in ("pulse", "all"):
        c = fuzz_pulse(args.datagrams, args.seed, progress=progress("datagrams"))
        for k in ("datagrams", "datagram_refused", "datagram_accepted", "datagram_crashes", "flips_undetected",
                  "bad_observations"):
            print(f"{k}={c[k]}", flush=True)
        for line in c["datagram_crash_first"] + c["bad_observation_first"]:
            print(f"# {line}")
        failed |= bool(c["datagram_crashes"] or c["flips_undetected"] or c["bad_observations"])
    if args.target in ("bus", "all"):
        c = fuzz_bus(args.frames, args.seed, progress=progress("frames"),
                     golden=os.path.join(root, "tests", "fixtures", "logs"))
        for k in ("frames", "refused", "accepted", "crashes", "acked", "acked_lost", "ack_max_ms", "records",
                  "undecodable", "seconds"):
            print(f"{k}={c[k]}", flush=True)
        for seq, why in c["undecodable_first"]:
            print(f"# undecodable #{seq}: {why}")
        failed |= bool(c["crashes"] or c["acked_lost"] or c["undecodable"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
