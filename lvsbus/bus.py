"""The recorded bus: one broker per router, which numbers, records, then forwards every event.

    service --P--> broker: validate -> assign seq + stamp clocks -> append to log -> forward --D--> subscribers
                              (ack --A--> publisher once the record is durable, if it asked)

Sockets: one ZeroMQ ROUTER socket at ``ipc://RUN_DIR/bus.sock``; RUN_DIR is created 0700, so only
root reaches it (directory permissions are the authentication over ipc). Optionally a second
ROUTER socket on tcp:// with CurveZMQ (encrypted and authenticated with allowed client keys):
remote clients there may only subscribe (``lvsbus events tail --connect``); a publish from them is
refused and counted.

Wire protocol (multipart frames; bodies msgpack):

    client -> broker
      H  {"name", "subs": [prefix...], "pid"}      hello: who I am, what I want delivered
      P  name, [ack_id, [[type, version, cause, payload], ...], nonce]
                                                 publish a batch; ack_id 0 = no ack wanted (then no nonce)
      B                                          bye
    broker -> client
      D  framed records (the log's framing)      delivery, in log order
      A  [ack_id, first_seq, last_seq]           these seqs are durable in the log
      R  [ack_id, reason, detail]                an event of that batch was refused
      L  [first_dropped, last_dropped]           you were over the high-water mark: read those from the log
      T  [epoch, last_seq]                       tick (liveness; a new epoch = a restarted broker)
      W                                          who are you? (I do not know you: send H again)

Slow subscribers: the broker never blocks on one. A delivery that would exceed a subscriber's
high-water mark is dropped for that subscriber only; the broker remembers the dropped range, tells
the subscriber with an L frame as soon as it can, and records ``bus.subscriber_lagged``. The client
library then reads the missing range from the log (same machine) and resumes live delivery with no
gap and no duplicate. A restarted broker resumes the sequence from the log; clients notice the new
epoch in its ticks (or its W), say hello again and catch up from the log the same way, and resend
publishes that were never acknowledged.

Delivery guarantees: every recorded event reaches every subscriber whose prefixes match, once and
in log order (live, or from the log after a lag or a broker restart). A publish acknowledged with
A is durable and never lost. A publish awaiting its ack when the broker dies is resent by the
client after the restart with the same (nonce, ack_id), and the new broker drops it if the copy
sent before the crash reached it (it remembers each client's recorded ack ids). The asyncio client
(services) first looks its unacknowledged batches up in the log (the new broker writes what a
client sent before its hello before answering it) and sends again only what is not there: each
item is recorded exactly once. The blocking client resends without looking, so a publish the old
broker had recorded but not yet acked can be recorded twice by it (at-least-once: the
supervisor's and the CLI's events). Services run their effects only once their outputs are
acknowledged (``lvsbus.runtime``: write-ahead).
"""
from __future__ import annotations

import bisect
import errno
import os
import secrets
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import msgpack
import structlog
import zmq

from . import catalog  # noqa: F401  (fills the registry)
from .events import MAX_NAME, MAX_TYPE, REGISTRY, DecodeError, Event, decode, decode_records, matches
from .schema import _shown
from .log import CorruptRecord, Durability, EventLog, LogReader, LogWriteError, frame, frame_batch, parse_frames

log = structlog.get_logger("lvsbus.bus")

MAX_FRAME = 4 * 1024 * 1024
#: bus.frame_rejected events (and warnings) at most this many a second; the rest are counted
REJECT_EVENTS_PER_S = 200
#: bad items of one frame examined; past that its other items are refused without a look (a
#: frame of a million bad items held an acked publish back 26 s)
MAX_BAD_ITEMS = 64
MAX_NONCE = 32  # bytes of a publisher's nonce (the broker keeps the last 10,000)
MAX_SUBS = 64  # prefixes a client may subscribe to (each at most MAX_TYPE characters)
TICK_S = 0.2
DEDUP_PER_CLIENT = 4096  # acknowledged batches remembered per client nonce (to drop a copy sent again)
MAX_BATCH = 1024  # records recorded and forwarded together (one write, one delivery frame a subscriber)
DEFAULT_SNDHWM = 2000  # delivery messages (each a batch) queued per subscriber before dropping
LOG_STATS_S = 10.0  # bus.log_stats at most this often (0: never)
#: bucket upper bounds of the log latency histograms in bus.log_stats, nanoseconds
LOG_BOUNDS_NS = (10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
                 10_000_000, 25_000_000, 50_000_000, 100_000_000, 250_000_000, 500_000_000, 1_000_000_000,
                 2_500_000_000)


BACKLOG_NAME = "log-backlog.spill"  # in the spill directory (the run directory unless told otherwise)
STOP_FLUSH_S = 5.0  # a clean stop with a backlog keeps trying to write it this long, then spills it


def _recovery_summary(log_: EventLog) -> str:
    r = getattr(log_, "recovery", None)
    if r is None:
        return ""
    parts = [f"records={r.records}"]
    summary = r.summary()
    if summary:
        parts.append(summary)
    if r.new_segment:
        parts.append(f"new_segment={os.path.basename(r.new_segment)}")
    return "; ".join(parts)[:1024]


def socket_path(run_dir: str) -> str:
    return os.path.join(run_dir, "bus.sock")


def endpoint(run_dir: str) -> str:
    return "ipc://" + socket_path(run_dir)


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)


def _parse_publish(body: bytes) -> tuple[int, int, msgpack.Unpacker, bytes]:
    """A publish body ``[ack_id, [item...]]`` or ``[ack_id, [item...], nonce]``: (ack_id, the number
    of items, an Unpacker positioned at the first item, nonce). Raises on anything else.

    The items are walked over by msgpack's C code without building them (a frame of four million
    empty lists takes seconds to build, 60 ms to walk); the broker builds them one at a time, and
    stops after MAX_BAD_ITEMS bad ones."""
    u = msgpack.Unpacker(raw=False, strict_map_key=True, use_list=True, max_buffer_size=max(len(body), 1))
    u.feed(body)
    n = u.read_array_header()
    if n not in (2, 3):
        raise ValueError("a publish is a 2- or 3-item array")
    ack_id = u.unpack()
    items_at = u.tell()
    u.skip()
    nonce = u.unpack() if n == 3 else b""
    if u.tell() != len(body):
        raise ValueError("extra data after the publish")
    if type(ack_id) is not int or type(nonce) is not bytes or len(nonce) > MAX_NONCE:
        raise ValueError("bad ack_id or nonce")
    items = msgpack.Unpacker(raw=False, strict_map_key=True, use_list=True, max_buffer_size=max(len(body), 1))
    items.feed(body[items_at:])
    n_items = items.read_array_header()  # raises unless the items are an array
    return ack_id, n_items, items, nonce


@dataclass
class _Client:
    ident: bytes
    name: str
    subs: tuple[str, ...]
    remote: bool
    lag_from: int = 0  # first seq dropped and not yet told (0: not lagging)
    lag_to: int = 0
    dropped: int = 0


@dataclass
class BrokerStats:
    received: int = 0
    recorded: int = 0
    rejected: int = 0
    lagged: int = 0
    write_failures: int = 0
    failed_frames: int = 0  # frames _on_message raised on (a bug), refused


class _Latency:
    """One histogram of nanosecond latencies (count, sum, max, bucket counts over LOG_BOUNDS_NS)."""

    __slots__ = ("count", "sum", "max", "buckets")

    def __init__(self) -> None:
        self.count = self.sum = self.max = 0
        self.buckets = [0] * (len(LOG_BOUNDS_NS) + 1)

    def observe(self, ns: int) -> None:
        self.count += 1
        self.sum += ns
        if ns > self.max:
            self.max = ns
        self.buckets[bisect.bisect_left(LOG_BOUNDS_NS, ns)] += 1


class LogStats:
    """What the broker measures of its log between two ``bus.log_stats`` events."""

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.records = 0
        self.append = _Latency()
        self.commit = _Latency()
        self.own_records = 0  # records of the bus.log_stats event itself (an idle bus stays quiet)

    def payload(self, now_ns: int, durability: str) -> dict:
        a, c = self.append, self.commit
        return {
            "period_ms": max(0, now_ns - self.start_ns) // 1_000_000, "durability": durability,
            "records": self.records, "bounds_ns": list(LOG_BOUNDS_NS),
            "append_count": a.count, "append_sum_ns": a.sum, "append_max_ns": a.max, "append_buckets": a.buckets,
            "commit_count": c.count, "commit_sum_ns": c.sum, "commit_max_ns": c.max, "commit_buckets": c.buckets,
        }


@dataclass
class CurveServer:
    """A tcp:// endpoint with CurveZMQ: the broker's secret key and a directory of allowed client public keys."""

    endpoint: str
    server_secret_file: str
    authorized_dir: str


class BrokerSettingsError(ValueError):
    """A setting the broker refuses at start (one line, for the command line)."""


#: the smallest segment the broker accepts (a segment holds its header and at least one batch)
MIN_SEGMENT_BYTES = 4096


def check_broker_settings(node: Any, log_dir: str, segment_bytes: Any = None) -> None:
    """Refuse, before anything is created, settings that would break the broker: a node name no
    reader accepts on a record, a segment size that never records, and a last segment file in the
    log directory that is not a segment of a log (the log's recovery would overwrite it)."""
    if type(node) is not str or not 0 < len(node) <= MAX_NAME:
        shown = f"{len(node)} characters" if type(node) is str else type(node).__name__
        raise BrokerSettingsError(f"node name must be 1-{MAX_NAME} characters (got {shown})")
    if segment_bytes is not None and (type(segment_bytes) is not int or segment_bytes < MIN_SEGMENT_BYTES):
        raise BrokerSettingsError(f"segment size must be at least {MIN_SEGMENT_BYTES} bytes (got {segment_bytes!r})")
    foreign = _foreign_last_segment(log_dir)
    if foreign is not None:
        raise BrokerSettingsError(foreign)


def _foreign_last_segment(log_dir: str) -> str | None:
    """What is wrong with the last segment file, if it is not a segment of a log at all: not a
    header, not a torn creation (a prefix of the header, or zeros), no valid record anywhere in it.
    The log's recovery would rewrite such a file as an empty segment."""
    from .log.framing import _resync
    from .log.segments import _SEGMENT_HEADER_BYTES, SEGMENT_HEADER_SIZE, list_segments

    try:
        segs = list_segments(log_dir)
    except FileNotFoundError:
        return None
    if not segs:
        return None
    first, path = segs[-1]
    try:
        with open(path, "rb") as f:
            head = f.read(SEGMENT_HEADER_SIZE)
            if head == _SEGMENT_HEADER_BYTES[:len(head)] or not head.strip(b"\0"):
                return None  # a segment (or one whose creation was torn): the rest is not read (a restart's time)
            data = head + f.read()
    except OSError as exc:
        return f"{path}: cannot read it: {exc.strerror or exc}"
    if len(data) > SEGMENT_HEADER_SIZE and _resync(data, SEGMENT_HEADER_SIZE, len(data), first) is not None:
        return None  # a damaged header before valid records: the log's recovery deals with it
    return (f"{path} is not a segment of an lvsbus log (it starts with {data[:8]!r}): "
            "move it out of the log directory")


class Broker:
    """One router's broker. ``run()`` loops until ``stop()`` (or a signal handler calls it)."""

    def __init__(
        self,
        node: str,
        run_dir: str,
        log_dir: str,
        durability: Durability | None = None,
        sndhwm: int = DEFAULT_SNDHWM,
        curve: CurveServer | None = None,
        segment_bytes: int | None = None,
        retention=None,
        context: zmq.Context | None = None,
        log_stats_s: float = LOG_STATS_S,
        spill_dir: str | None = None,
        stop_flush_s: float = STOP_FLUSH_S,
    ) -> None:
        check_broker_settings(node, log_dir, segment_bytes)
        self.node = node
        self.stop_flush_s = stop_flush_s
        self.run_dir = run_dir
        self.epoch = secrets.token_hex(8)
        self.stats = BrokerStats()
        self._stop = False
        self._clients: dict[bytes, _Client] = {}
        self._route_cache: dict[str, tuple[_Client, ...]] = {}
        self._pending_acks: list[tuple[int, bytes, int, int]] = []  # (last_seq, ident, ack_id, first_seq)
        self._last_mono = 0
        self._unrecorded: list[tuple[int, bytes]] = []  # records delivered but not yet written (disk trouble)
        self._unrecorded_from = 0
        self._next_retry = 0.0
        self._batch: list[list] = []  # [type, version, cause, payload, source] waiting to be recorded
        self._acks: list[tuple[bytes, int, int, int]] = []  # (ident, ack_id, index of its first, last item in _batch)
        self._draining = False
        self._failure_note: dict | None = None
        self._reject_window = 0.0  # start (monotonic s) of the second REJECT_EVENTS_PER_S counts in
        self._rejects_in_window = 0
        self._rejects_unreported = 0  # refused frames past the limit in this window (no event, no warning)
        # client nonce -> {ack_id: (first, last seq)} of the batches this broker recorded (the latest
        # DEDUP_PER_CLIENT a client): a copy of one sent again is dropped and acknowledged
        self._dedup: dict[bytes, dict[int, tuple[int, int]]] = {}
        self.log_stats_s = log_stats_s
        self._log_stats = LogStats(time.monotonic_ns())
        self._next_log_stats = time.monotonic() + log_stats_s
        self._committing: deque[tuple[int, int]] = deque(maxlen=100_000)  # (last seq of an append, monotonic ns it started)
        # crash tests: LVSBUS_BROKER_FAULT=before_write:TYPE or after_write:TYPE: SIGKILL this
        # broker when it records a batch holding an event of TYPE, before or after the write
        point, _, ftype = os.environ.get("LVSBUS_BROKER_FAULT", "").partition(":")
        self._fault = (point, ftype) if point in ("before_write", "after_write") and ftype else None

        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        os.chmod(run_dir, 0o700)
        kwargs: dict[str, Any] = {"durability": durability or Durability("group")}
        if segment_bytes is not None:
            kwargs["segment_bytes"] = segment_bytes
        if retention is not None:
            kwargs["retention"] = retention
        # A backlog spilled at the last stop (the log's disk was full) is written first, when it follows the log.
        self.spill_path = os.path.join(spill_dir or run_dir, BACKLOG_NAME)
        self.log = EventLog(log_dir, backlog_file=self.spill_path, **kwargs)
        self._seq = self.log.last_seq
        self._spill_pending = False
        pending = self.log.recovery.backlog_pending
        if pending:  # the disk still refuses the spilled records: they are the backlog, written when it can
            self._unrecorded = list(pending)
            self._unrecorded_from = pending[0][0]
            self._seq = pending[-1][0]
            self._next_retry = time.monotonic() + 1.0
            self._spill_pending = True
            self.stats.write_failures += 1
            err = self.log.recovery.backlog_error or (0, "")
            log.error("log_write_failed", errno=err[0], error=err[1], first_seq=pending[0][0], spilled=len(pending))
            self._failure_note = {"errno": err[0], "error": err[1][:512], "first_seq": pending[0][0],
                                  "count": len(pending)}
        if self.log.recovery.backlog_left:  # not usable: keep it for the operator, out of the next spill's way
            kept = f"{self.spill_path}.unused-{time.strftime('%Y%m%dT%H%M%S')}"
            try:
                os.replace(self.spill_path, kept)
                log.error("log_backlog_file_not_used", path=kept)
            except OSError:
                pass

        self.ctx = context or zmq.Context.instance()
        self.sock = self._router_socket(sndhwm)
        path = socket_path(run_dir)
        if os.path.exists(path):
            os.unlink(path)  # a previous broker died; the directory lock is the log's
        self.sock.bind("ipc://" + path)
        os.chmod(path, 0o600)
        self.remote: zmq.Socket | None = None
        self._auth = None
        if curve is not None:
            self.remote = self._router_socket(sndhwm)
            self._setup_curve(self.remote, curve)
        resumed = self._seq
        self._emit(
            "bus.broker_started",
            {"epoch": self.epoch, "resumed_from": resumed, "recovery": _recovery_summary(self.log)},
        )
        self._emit_recovery()
        log.info("broker_started", node=node, epoch=self.epoch, resumed_from=resumed, endpoint=endpoint(run_dir))
        # Opening the log rescanned its last segment only: the sealed ones are checked in the
        # background (their whole-file CRCs, at C speed), and what it finds becomes events.
        self._scan_found: deque = deque()
        self._scan = threading.Thread(target=self._scan_sealed, name="lvsbus-log-scan", daemon=True)
        self._scan.start()

    def _scan_sealed(self) -> None:
        try:
            res = self.log.scan_sealed(on_problem=self._scan_found.append, stop=lambda: self._stop)
        except Exception as exc:  # a scan must not take the broker down
            log.error("log_sealed_scan_failed", error=repr(exc))
            return
        self._scan_found.append(res)

    def _report_scan(self) -> None:
        while self._scan_found:
            item = self._scan_found.popleft()
            if isinstance(item, CorruptRecord):
                lost = item.lost or (None, None)
                self._emit("log.corrupt_record", {
                    "segment": (item.segment or "")[-512:], "offset": max(-1, item.offset),
                    "reason": item.reason[:512], "first_unreadable": lost[0], "last_unreadable": lost[1],
                })
            elif item.segments:
                log.info("log_sealed_scan_done", segments=item.segments, bytes=item.bytes, by_sum=item.by_sum,
                         by_records=item.by_records, problems=len(item.problems), seconds=round(item.seconds, 3))

    def _emit_recovery(self) -> None:
        """What opening the log found, as events after bus.broker_started (each also a log line
        from lvsbus.log)."""
        r = self.log.recovery
        self._draining = True
        try:
            if r.torn_bytes_cut:
                self._emit("log.tail_cut", {
                    "segment": (r.segment or "")[-512:], "offset": r.torn_offset or 0, "bytes": r.torn_bytes_cut,
                    "kind": r.cut_kind or "torn", "kept_in": (r.cut_copy or "")[-512:],
                    "last_seq": max(0, r.cut_last_seq),
                })
            for c in r.corruption[:100]:
                lost = c.lost or (None, None)
                self._emit("log.corrupt_record", {
                    "segment": (c.segment or "")[-512:], "offset": max(-1, c.offset), "reason": c.reason[:512],
                    "first_unreadable": lost[0], "last_unreadable": lost[1],
                })
            if r.lost:
                if r.torn_bytes_cut and r.torn_offset is not None:
                    why = (f"cut from the damaged tail of {os.path.basename(r.segment or '')} at offset {r.torn_offset}"
                           + (f" (kept in {os.path.basename(r.cut_copy)})" if r.cut_copy else ""))
                else:
                    why = ("delivered live while the log's disk refused them; the broker stopped or died before "
                           "they could be written or spilled")
                self._emit("log.gap", {"first_lost": r.lost[0], "last_lost": r.lost[1],
                                       "reason": (why + "; never reused")[:512]})
        finally:
            self._draining = False
            self._flush()

    # -- sockets -------------------------------------------------------------------------------

    def _router_socket(self, sndhwm: int) -> zmq.Socket:
        s = self.ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.ROUTER_MANDATORY, 1)
        s.setsockopt(zmq.SNDHWM, sndhwm)
        s.setsockopt(zmq.RCVHWM, 100_000)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        return s

    def _setup_curve(self, sock: zmq.Socket, curve: CurveServer) -> None:
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        public, secret = zmq.auth.load_certificate(curve.server_secret_file)
        if secret is None:
            raise ValueError(f"{curve.server_secret_file} holds no secret key")
        self._auth = ThreadAuthenticator(self.ctx)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=curve.authorized_dir)
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True
        sock.bind(curve.endpoint)

    # -- main loop -----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop = True

    def run(self, ready: Callable[[], None] | None = None) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        if self.remote is not None:
            poller.register(self.remote, zmq.POLLIN)
        dfd = self.log.durable_fd()
        poller.register(dfd, zmq.POLLIN)
        next_tick = time.monotonic()
        if ready:
            ready()
        try:
            while not self._stop:
                timeout = max(0.0, next_tick - time.monotonic())
                events = dict(poller.poll(timeout * 1000))
                if self.sock in events:
                    self._drain(self.sock, remote=False)
                if self.remote is not None and self.remote in events:
                    self._drain(self.remote, remote=True)
                if dfd in events:
                    self._observe_durable(self.log.drain_durable_fd())
                if self._pending_acks:
                    self._send_acks()
                now = time.monotonic()
                if self._unrecorded and now >= self._next_retry:
                    self._retry_unrecorded(now)
                if now >= next_tick:
                    self._tick()
                    next_tick = now + TICK_S
        except BaseException as exc:
            # a crash (or an interrupt) is recorded and logged as what it is, never as a requested stop
            if isinstance(exc, Exception):
                reason = f"crashed: {type(exc).__name__}: {exc}"
                log.critical("broker_crashed", node=self.node, reason=reason[:300], exc_info=True)
            else:
                reason = f"interrupted: {type(exc).__name__}"
                log.warning("broker_interrupted", node=self.node, reason=reason)
            self.close(reason)
            raise
        self.close()

    def close(self, reason: str = "stop requested") -> None:
        if self.sock.closed:
            return
        self._batch.clear()  # a crash may leave a batch half made: not recorded (nothing of it was acked)
        self._acks.clear()
        self._draining = False
        try:
            self._emit("bus.broker_stopping", {"reason": reason[:256]})
        except Exception:  # closing must not fail on a full disk
            log.error("broker_stopping_not_recorded", reason=reason[:300])
        # the socket file goes (before the log's lock, which a successor takes before binding its
        # own): `events tail` and clients then see that no broker is there
        path = socket_path(self.run_dir)
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except OSError:
            pass
        if self._unrecorded:
            self._save_backlog_at_stop()
        self.log.close()
        self._send_acks()
        self.sock.close(0)
        if self.remote is not None:
            self.remote.close(0)
        if self._auth is not None:
            self._auth.stop()
        log.info("broker_stopped", node=self.node, last_seq=self._seq)

    def _drain(self, sock: zmq.Socket, remote: bool, budget: int = 512) -> None:
        """Take up to ``budget`` messages off the socket, record them as one batch, forward.

        Events the broker itself emits meanwhile (a rejection) join the same batch in arrival
        order, so the log order is the order things happened."""
        self._draining = True
        try:
            for _ in range(budget):
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
                except zmq.Again:
                    break
                self._on_message_guarded(sock, frames, remote)
                if len(self._batch) >= MAX_BATCH:
                    break
        finally:
            self._draining = False
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            batch, acks = self._batch, self._acks
            self._batch, self._acks = [], []
            self._record(batch, acks)

    def _on_message_guarded(self, sock, frames: list[bytes], remote: bool) -> None:
        """``_on_message``, and should it raise (a bug: it refuses everything a client may send
        with a reason), the frame is refused and nothing of it recorded: no frame stops the broker."""
        batch, acks = self._batch, self._acks
        nb, na, pending = len(batch), len(acks), len(self._pending_acks)
        try:
            self._on_message(sock, frames, remote, batch, acks)
        except Exception as exc:
            del batch[nb:], acks[na:], self._pending_acks[pending:]
            self.stats.failed_frames += 1
            ident = frames[0] if frames else b""
            log.exception("frame_failed", peer=ident.hex()[:32], error=f"{type(exc).__name__}: {exc}"[:300])
            self._reject(sock, ident, 0, "malformed",
                         f"the broker failed on this frame ({type(exc).__name__}); it was not recorded",
                         sum(map(len, frames)))

    def _on_message(self, sock, frames: list[bytes], remote: bool, batch: list, acks: list) -> None:
        """One message from a client: a publish (P), a hello (H), a goodbye (B); anything else is refused."""
        ident = frames[0]
        kind = frames[1] if len(frames) > 1 else b""
        if kind == b"P" and len(frames) == 4:
            self._on_publish(sock, ident, frames, remote, batch, acks)
        elif kind == b"H" and len(frames) == 3:
            self._on_hello(sock, ident, frames, remote)
        elif kind == b"B":
            if self._clients.pop(ident, None) is not None:
                self._route_cache.clear()
        else:
            self._reject(sock, ident, 0, "malformed", f"unknown frame kind {kind[:8]!r}", sum(map(len, frames)))

    def _on_publish(self, sock, ident: bytes, frames: list[bytes], remote: bool, batch: list, acks: list) -> None:
        """A publish: its valid items join ``batch`` (recorded at the next flush), its acknowledgement
        joins ``acks``, and its bad items cost one refusal for the whole frame."""
        client = self._clients.get(ident)
        if remote:
            self._reject(sock, ident, 0, "not_allowed", "remote clients may only subscribe", len(frames[3]))
            return
        self.stats.received += 1
        try:
            source = frames[2].decode()
            if not 0 < len(source) <= 64:
                raise ValueError
        except ValueError:
            self._reject(sock, ident, 0, "bad_name", "publisher name must be 1-64 bytes of UTF-8", len(frames[3]))
            return
        try:
            ack_id, n_items, items, nonce = _parse_publish(frames[3])
        except Exception:
            self._reject(sock, ident, 0, "malformed", f"a publish is [ack_id, [items], nonce of at most {MAX_NONCE} bytes]",
                         len(frames[3]))
            return
        if ack_id and nonce:
            # a resend (after a broker restart) of a batch this broker already recorded (a copy
            # queued in the client's socket reached it first)
            seen = self._dedup.get(nonce)
            done = seen.get(ack_id) if seen is not None else None
            if done is not None:
                self._pending_acks.append((done[1], ident, ack_id, done[0]))
                return
        first_index = len(batch)
        accepted = 0
        # Refusals cost a bounded amount a frame: one reply, one warning, one event for the
        # whole frame (the first bad item named, the others counted), however many items it holds.
        refused = 0
        first_bad: tuple[int, str, str] | None = None
        validate = REGISTRY.validate
        unexamined = 0
        for i in range(n_items):
            if refused >= MAX_BAD_ITEMS:  # a broken frame: the rest is refused unexamined (not even built)
                unexamined = n_items - i
                refused += unexamined
                break
            try:
                item = items.unpack()
            except Exception:  # cannot happen: _parse_publish walked the whole frame
                unexamined = n_items - i
                refused += unexamined
                first_bad = first_bad or (i, "malformed", "an item is not msgpack")
                break
            if item.__class__ is not list or len(item) != 4:
                problem = ("malformed", "an item is [type, version, cause, payload]")
            else:
                type_, version, cause, payload = item
                if cause is not None and (cause.__class__ is not int or cause < 1):
                    problem = ("malformed", f"bad cause {_shown(cause)}")
                else:
                    try:
                        validate(type_, version, payload)
                    except DecodeError as exc:
                        problem = (exc.reason, exc.detail)
                    else:
                        batch.append([type_, version, cause, payload, source])
                        accepted += 1
                        continue
            refused += 1
            if first_bad is None:
                first_bad = (i, *problem)
        if first_bad is not None:
            i, reason, detail = first_bad
            if n_items > 1:
                detail = f"item {i} of {n_items}: {detail[:800]}"
                if refused > 1:
                    detail += f" (and {refused - 1} more item(s) refused"
                    detail += f"; {unexamined} past the first {MAX_BAD_ITEMS} bad ones unexamined)" if unexamined else ")"
            self._reject(sock, ident, ack_id, reason, detail, len(frames[3]), refused)
        if ack_id and accepted:
            acks.append((ident, ack_id, first_index, len(batch) - 1))
            if nonce:  # seqs are assigned at flush: this broker's seq + position in the batch
                seen = self._dedup.get(nonce)
                if seen is None:
                    seen = self._dedup[nonce] = {}
                    if len(self._dedup) > 10_000:
                        self._dedup.pop(next(iter(self._dedup)))
                seen[ack_id] = (self._seq + first_index + 1, self._seq + len(batch))
                if len(seen) > DEDUP_PER_CLIENT:
                    seen.pop(next(iter(seen)))
        if client is None and not remote:
            self._send(sock, ident, [b"W"])

    def _on_hello(self, sock, ident: bytes, frames: list[bytes], remote: bool) -> None:
        """A hello: the client is known from now on, and answered with the epoch and the last seq."""
        try:
            hello = _unpack(frames[2])
            name = hello["name"]
            subs = tuple(hello.get("subs", ()))
            if (type(name) is not str or not 0 < len(name) <= 64 or len(subs) > MAX_SUBS
                    or not all(type(s) is str and len(s) <= MAX_TYPE for s in subs)):
                raise ValueError
        except Exception:
            self._reject(sock, ident, 0, "malformed",
                         f"hello is {{name (1-64 characters), subs (at most {MAX_SUBS} prefixes of at most "
                         f"{MAX_TYPE} characters), pid}}", len(frames[2]))
            return
        # what this client sent before its hello is written before the answer: a client that
        # finds a new epoch there reads the log to tell its lost publishes from recorded ones.
        # Written before the client is known, so none of it is forwarded to it: the answer (T)
        # comes first and its catch-up from the log delivers all of it, in order. (Forwarded
        # ahead of T, a publish of the same drain made the client's catch-up start after it,
        # and what was written in an earlier drain was never delivered to it.)
        self._flush()
        self._clients[ident] = _Client(ident, name, subs, remote)
        self._route_cache.clear()
        self._send(sock, ident, [b"T", _pack([self.epoch, self._seq])])
        pid = hello.get("pid")
        self._emit(
            "bus.client_joined",
            {"client": name, "subscriptions": [x[:96] for x in subs[:64]], "pid": pid if type(pid) is int and pid >= 0 else None},
        )
        if self._unrecorded and subs:
            # delivered but not written (the disk refuses them): a client that joins now cannot
            # read them from the log, so it gets them here (it drops what it already has by seq)
            self._send_backlog(sock, ident, subs)

    def _reject(self, sock, ident: bytes, ack_id: int, reason: str, detail: str, size: int, items: int = 1) -> None:
        """Refuse one frame (``items``: how many of its items): one reply to the sender; and, up to
        REJECT_EVENTS_PER_S a second, one warning and one ``bus.frame_rejected`` (its ``count``
        counts every refusal, also those past the limit)."""
        self.stats.rejected += items
        client = self._clients.get(ident)
        peer = client.name if client else ident.hex()[:32]
        self._send(sock, ident, [b"R", _pack([ack_id, reason, detail[:1024]])])
        now = time.monotonic()
        if now - self._reject_window >= 1.0:
            if self._rejects_unreported:
                log.warning("frames_rejected_unreported", frames=self._rejects_unreported, count=self.stats.rejected)
            self._reject_window, self._rejects_in_window, self._rejects_unreported = now, 0, 0
        if self._rejects_in_window >= REJECT_EVENTS_PER_S:
            self._rejects_unreported += 1
            return
        self._rejects_in_window += 1
        log.warning("frame_rejected", reason=reason, detail=detail[:200], peer=peer, count=self.stats.rejected)
        self._emit(
            "bus.frame_rejected",
            {"reason": reason, "detail": detail[:1024], "peer": peer, "size": size, "count": self.stats.rejected},
        )

    def _send(self, sock, ident: bytes, frames: list[bytes]) -> bool:
        try:
            sock.send_multipart([ident, *frames], zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if exc.errno == errno.EHOSTUNREACH:
                if self._clients.pop(ident, None) is not None:
                    self._route_cache.clear()
                return False
            raise

    # -- recording and forwarding --------------------------------------------------------------

    def _emit(self, type_: str, payload: dict, cause: int | None = None) -> None:
        """Record and forward an event of the broker's own (in the batch being drained, if any)."""
        version = REGISTRY.latest(type_).version
        REGISTRY.validate(type_, version, payload)
        self._batch.append([type_, version, cause, payload, "broker"])
        if not self._draining:
            self._flush()

    def _record(self, batch: list[list], acks: list[tuple[bytes, int, int, int]]) -> None:
        mono = time.monotonic_ns()
        if mono < self._last_mono:
            mono = self._last_mono
        self._last_mono = mono
        wall = time.time_ns()
        node = self.node
        packb = msgpack.packb
        seq = self._seq
        first = seq + 1
        records: list[tuple[int, bytes]] = []
        types: list[str] = []
        for type_, version, cause, payload, source in batch:
            seq += 1
            records.append((seq, packb([1, seq, node, source, type_, version, mono, wall, cause, payload], use_bin_type=True)))
            types.append(type_)
        self._seq = seq
        self.stats.recorded += len(records)
        fault = self._fault is not None and self._fault[1] in types
        if fault and self._fault[0] == "before_write":  # type: ignore[index]
            os.kill(os.getpid(), 9)
        self._append(records)
        if fault:
            os.kill(os.getpid(), 9)
        for ident, ack_id, i0, idx in acks:
            self._pending_acks.append((first + idx, ident, ack_id, first + i0))
        self._forward(records, types)
        if self._failure_note is not None:
            note, self._failure_note = self._failure_note, None
            self._emit_unrecorded("log.write_failed", note)

    def _save_backlog_at_stop(self) -> None:
        """A clean stop with records delivered but not written (the disk refused them): keep
        trying for ``stop_flush_s``, then spill them to a file beside the socket (written into the
        log at the next start); if that fails too, the assigned-seq mark makes the next start
        declare them lost (log.gap) rather than reuse their seqs."""
        deadline = time.monotonic() + self.stop_flush_s
        while self._unrecorded:
            now = time.monotonic()
            self._retry_unrecorded(now)
            if not self._unrecorded or now >= deadline:
                break
            time.sleep(min(0.2, max(0.0, deadline - now)))
        if not self._unrecorded:
            return
        first, last = self._unrecorded[0][0], self._unrecorded[-1][0]
        self.log.note_assigned(last, sync=True)
        tmp = self.spill_path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                data = frame_batch(self._unrecorded)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.spill_path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            log.error("log_backlog_lost_at_stop", first_seq=first, last_seq=last, records=len(self._unrecorded),
                      error=str(exc), note="the next start declares these seqs lost (log.gap); never reused")
            return
        log.error("log_backlog_spilled", path=self.spill_path, first_seq=first, last_seq=last,
                  records=len(self._unrecorded), note="written into the log at the next start")
        self._unrecorded = []

    def _append(self, records: list[tuple[int, bytes]]) -> None:
        if self._unrecorded:
            self._unrecorded.extend(records)
            self.log.note_assigned(records[-1][0])
            return
        try:
            self._timed_append(records)
        except LogWriteError as exc:
            self._on_write_failure(exc, records)

    def _timed_append(self, records: list[tuple[int, bytes]]) -> None:
        t0 = time.monotonic_ns()
        self.log.append_batch(records)
        t1 = time.monotonic_ns()
        st = self._log_stats
        st.records += len(records)
        st.append.observe(t1 - t0)
        self._committing.append((records[-1][0], t0))
        if self.log.durable_seq >= records[-1][0]:  # durability "always" (fsynced in the append) or "none"
            self._observe_durable(self.log.durable_seq, t1)

    def _observe_durable(self, durable: int, now_ns: int | None = None) -> None:
        """Appends up to ``durable`` are fsynced: their commit latency, as the broker sees it."""
        q = self._committing
        if not q or q[0][0] > durable:
            return
        now = time.monotonic_ns() if now_ns is None else now_ns
        commit = self._log_stats.commit
        while q and q[0][0] <= durable:
            commit.observe(now - q.popleft()[1])

    def _publish_log_stats(self, now: float) -> None:
        self._next_log_stats = now + self.log_stats_s
        st = self._log_stats
        if st.records <= st.own_records:
            return  # nothing appended but the previous bus.log_stats: an idle bus stays quiet (the period goes on)
        now_ns = time.monotonic_ns()
        self._log_stats = LogStats(now_ns)
        self._emit("bus.log_stats", st.payload(now_ns, self.log.durability.mode))
        self._log_stats.own_records = self._log_stats.records

    def _on_write_failure(self, exc: OSError, records: list[tuple[int, bytes]]) -> None:
        self.stats.write_failures += 1
        self._unrecorded = list(records)
        self._unrecorded_from = records[0][0]
        # these are delivered next: if they never reach the log, their seqs must never be reused
        self.log.note_assigned(records[-1][0], sync=True)
        self._next_retry = time.monotonic() + 1.0
        log.error("log_write_failed", errno=exc.errno, error=str(exc), first_seq=records[0][0])
        # Delivered live (the router keeps working), recorded when the disk takes it again. The
        # failure event itself goes out after these records (see _record), to keep seq order.
        self._failure_note = {"errno": exc.errno or 0, "error": str(exc)[:512], "first_seq": records[0][0], "count": len(records)}

    def _emit_unrecorded(self, type_: str, payload: dict) -> None:
        self._seq += 1
        body = msgpack.packb(
            [1, self._seq, self.node, "broker", type_, REGISTRY.latest(type_).version, time.monotonic_ns(), time.time_ns(), None, payload],
            use_bin_type=True,
        )
        self._unrecorded.append((self._seq, body))
        self.log.note_assigned(self._seq)
        self._forward([(self._seq, body)], [type_])

    def _retry_unrecorded(self, now: float) -> None:
        try:
            self._timed_append(self._unrecorded)
        except LogWriteError:
            self._next_retry = now + 1.0
            if len(self._unrecorded) > 1_000_000:
                log.error("log_backlog_large", records=len(self._unrecorded))
            return
        log.info("log_write_recovered", records=len(self._unrecorded), first_seq=self._unrecorded_from)
        lost_to = self._unrecorded[-1][0]
        self._unrecorded = []
        if self._spill_pending:  # its records are in the log now
            self._spill_pending = False
            try:
                os.unlink(self.spill_path)
            except OSError:
                pass
        self._emit("log.write_recovered", {"backlog_from": self._unrecorded_from, "backlog_to": lost_to})

    def _routes(self, type_: str) -> tuple[_Client, ...]:
        r = self._route_cache.get(type_)
        if r is None:
            r = tuple(c for c in self._clients.values() if c.subs and matches(type_, c.subs))
            self._route_cache[type_] = r
        return r

    def _forward(self, records: list[tuple[int, bytes]], types: list[str]) -> None:
        if not self._clients:
            return
        per: dict[bytes, list[bytes]] = {}
        seqs: dict[bytes, tuple[int, int]] = {}
        routes = self._routes
        for (seq, body), type_ in zip(records, types):
            for c in routes(type_):
                lst = per.get(c.ident)
                if lst is None:
                    per[c.ident] = [frame(seq, body)]
                    seqs[c.ident] = (seq, seq)
                else:
                    lst.append(frame(seq, body))
                    seqs[c.ident] = (seqs[c.ident][0], seq)
        for ident, frames in per.items():
            c = self._clients.get(ident)
            if c is None:
                continue
            sock = self.remote if c.remote else self.sock
            first, last = seqs[ident]
            if c.lag_from and not self._tell_lag(sock, c):
                c.lag_to = last
                c.dropped += len(frames)
                continue
            if not self._send(sock, ident, [b"D", b"".join(frames)]):
                if ident in self._clients:
                    if not c.lag_from:
                        c.lag_from = first
                    c.lag_to = last
                    c.dropped += len(frames)

    def _send_backlog(self, sock, ident: bytes, subs: tuple[str, ...]) -> None:
        frames = []
        for seq, body in self._unrecorded:
            try:
                type_ = decode(body, seq).type
            except DecodeError:  # the broker wrote it: cannot happen; never worth a crash
                continue
            if matches(type_, subs):
                frames.append(frame(seq, body))
        if frames:
            self._send(sock, ident, [b"D", b"".join(frames)])

    def _tell_lag(self, sock, c: _Client) -> bool:
        if not self._send(sock, c.ident, [b"L", _pack([c.lag_from, c.lag_to])]):
            return False
        first, last, dropped = c.lag_from, c.lag_to, c.dropped
        c.lag_from = c.lag_to = c.dropped = 0
        self.stats.lagged += 1
        log.warning("subscriber_lagged", subscriber=c.name, first_dropped=first, last_dropped=last, dropped=dropped)
        self._emit("bus.subscriber_lagged", {"subscriber": c.name, "first_dropped": first, "last_dropped": last, "dropped": dropped})
        return True

    def _send_acks(self) -> None:
        durable = self.log.durable_seq if not self._unrecorded else min(self.log.durable_seq, self._unrecorded_from - 1)
        keep = []
        for item in self._pending_acks:
            last, ident, ack_id, first = item
            if last <= durable:
                c = self._clients.get(ident)
                sock = self.remote if (c and c.remote) else self.sock
                self._send(sock, ident, [b"A", _pack([ack_id, first, last])])
            else:
                keep.append(item)
        self._pending_acks = keep

    def _tick(self) -> None:
        if self._scan_found:
            self._report_scan()
        msg = [b"T", _pack([self.epoch, self._seq])]
        for c in list(self._clients.values()):
            sock = self.remote if c.remote else self.sock
            if c.lag_from:
                self._tell_lag(sock, c)
            self._send(sock, c.ident, msg)
        self.log.apply_retention()
        if self.log_stats_s > 0 and time.monotonic() >= self._next_log_stats:
            self._publish_log_stats(time.monotonic())


# ---------------------------------------------------------------------------------------------
# clients


class BusError(RuntimeError):
    pass


class PublishRefused(BusError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class _ClientCore:
    """What the sync and the asyncio clients share: message handling, gap repair, resend state.

    It does file I/O (reading the log to catch up), but no socket I/O: the clients feed it the
    messages they receive and send what it returns.
    """

    def __init__(self, name: str, subs: Iterable[str], log_dir: str | None, from_seq: int | None) -> None:
        self.name = name
        self.subs = tuple(subs)
        self.log_dir = log_dir
        self.epoch: str | None = None
        self.last_delivered = 0 if from_seq is None else from_seq - 1
        self.gap_from = from_seq  # first seq that may be missing and must come from the log
        self.broker_seq = 0
        self.last_tick = time.monotonic()
        self.rejections: list[tuple[int, str, str]] = []
        self.acked: dict[int, tuple[int, int]] = {}
        self.lags = 0
        self.nonce = os.urandom(8)
        self.last_heard = 0.0  # monotonic time of the last message from the broker (0: none yet)
        self.undecodable = 0  # records skipped because they do not decode (see _skip)
        self.skipped: deque[tuple[int, str]] = deque(maxlen=100)

    def hello(self) -> list[bytes]:
        return [b"H", _pack({"name": self.name, "subs": list(self.subs), "pid": os.getpid()})]

    def publish_frames(self, items: list[list], ack_id: int = 0) -> list[bytes]:
        if ack_id:  # the nonce lets the broker drop a resend of a batch it already recorded
            return [b"P", self.name.encode(), _pack([ack_id, items, self.nonce])]
        return [b"P", self.name.encode(), _pack([ack_id, items])]

    def handle(self, frames: list[bytes]) -> tuple[list[Event], bool]:
        """Returns (events to deliver in order, whether to send hello again)."""
        self.last_heard = time.monotonic()
        kind = frames[0]
        if kind == b"D":
            records, used = parse_frames(frames[1])
            if used != len(frames[1]):
                raise BusError("broker sent a partial delivery frame")
            out: list[Event] = []
            if self.gap_from is not None and records:
                out.extend(self._catch_up(records[0][0] - 1))
            fresh = [r for r in records if r[0] > self.last_delivered]
            while fresh:
                evs, bad = decode_records(fresh)
                out.extend(evs)
                if evs:
                    self.last_delivered = evs[-1].seq
                if bad is None:
                    break
                self._skip(*bad)
                fresh = fresh[len(evs) + 1:]
            return out, False
        if kind == b"T":
            epoch, last = _unpack(frames[1])
            self.last_tick = time.monotonic()
            self.broker_seq = last
            rehello = False
            if self.epoch is not None and epoch != self.epoch:
                # a new broker: events recorded after our last one may never have reached us
                if self.gap_from is None and self.subs:
                    self.gap_from = self.last_delivered + 1
                rehello = True
            self.epoch = epoch
            if self.gap_from is not None:
                return self._catch_up(last), rehello
            return [], rehello
        if kind == b"L":
            first, last = _unpack(frames[1])
            self.lags += 1
            if self.gap_from is None or first < self.gap_from:
                self.gap_from = max(first, self.last_delivered + 1)
            return self._catch_up(last), False
        if kind == b"A":
            ack_id, first, last = _unpack(frames[1])
            self.acked[ack_id] = (first, last)
            return [], False
        if kind == b"R":
            ack_id, reason, detail = _unpack(frames[1])
            self.rejections.append((ack_id, reason, detail))
            return [], False
        if kind == b"W":
            return [], True
        raise BusError(f"unknown message kind {kind[:8]!r} from broker")

    def _skip(self, seq: int, exc: DecodeError) -> None:
        """A record no reader can decode (logged by a broker that let it through): skipped, with a
        warning naming its seq, and counted (``undecodable``; the last few in ``skipped``)."""
        self.last_delivered = max(self.last_delivered, seq)
        self.undecodable += 1
        self.skipped.append((seq, str(exc)[:300]))
        log.warning("undecodable_record_skipped", client=self.name, seq=seq, reason=exc.reason, detail=str(exc)[:300],
                    count=self.undecodable)

    def _catch_up(self, to_seq: int) -> list[Event]:
        """Deliver from the log everything we may have missed, up to ``to_seq``."""
        start = self.gap_from
        if start is None or not self.subs:
            self.gap_from = None
            return []
        if start > to_seq:
            return []
        if self.log_dir is None:
            raise BusError("lost events from the bus and no log_dir to catch up from")
        out = []
        reader = LogReader(self.log_dir, skip_corrupt=True, on_problem=lambda p: log.error(
            "log_record_unreadable", subscriber=self.name, error=str(p)))  # go past it, say so
        for seq, body in reader.read(max(start, self.last_delivered + 1), to_seq):
            try:
                ev = decode(body, seq)
            except DecodeError as exc:
                self._skip(seq, exc)
                continue
            if matches(ev.type, self.subs):
                out.append(ev)
            self.last_delivered = seq
        if self.last_delivered >= to_seq:
            self.gap_from = None
        else:
            self.gap_from = self.last_delivered + 1
        return out


def _item(type_: str, payload: dict, cause: int | None, version: int | None) -> list:
    return [type_, version if version is not None else REGISTRY.latest(type_).version, cause, payload]


def _dealer(ctx: zmq.Context, connect: str, rcvhwm: int, curve: tuple[bytes, bytes, bytes] | None = None) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    if connect.startswith("ipc://"):
        # a restarted broker is reconnected to within 10 ms, not zmq's default 100: timers go
        # through the bus, so the reconnection is part of pulse's pause during a broker restart
        sock.setsockopt(zmq.RECONNECT_IVL, 10)
    if curve is not None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = curve
    sock.connect(connect)
    return sock


def _close(sock: zmq.Socket) -> None:
    if sock.closed:
        return
    try:
        r = sock.send_multipart([b"B"], zmq.NOBLOCK)
        if hasattr(r, "add_done_callback"):
            r.add_done_callback(_log_send_error)
    except zmq.ZMQError:
        pass
    sock.close()


def _log_send_error(fut) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("bus_send_failed", error=str(fut.exception()))


class BusClient:
    """Blocking client: publish, and receive subscribed events in log order with no gap."""

    def __init__(
        self,
        run_dir: str,
        name: str,
        subs: Iterable[str] = (),
        log_dir: str | None = None,
        from_seq: int | None = None,
        context: zmq.Context | None = None,
        connect: str | None = None,
        curve: tuple[bytes, bytes, bytes] | None = None,
        rcvhwm: int = 1000,
    ) -> None:
        self.ctx = context or zmq.Context.instance()
        self.sock = _dealer(self.ctx, connect or endpoint(run_dir), rcvhwm, curve)
        self.core = _ClientCore(name, subs, log_dir, from_seq)
        self._queue: deque[Event] = deque()
        self._ack_id = 0
        self._last_hello = 0.0
        self._hello()

    def _hello(self) -> None:
        now = time.monotonic()
        if now - self._last_hello < 0.25:  # a W and a new epoch usually come together: one hello will do
            return
        self._last_hello = now
        try:
            self.sock.send_multipart(self.core.hello(), zmq.NOBLOCK)
        except zmq.Again:  # no broker connected (yet): the tick watchdog says hello again
            pass

    def publish(self, type_: str, payload: dict, cause: int | None = None, version: int | None = None) -> None:
        self.sock.send_multipart(self.core.publish_frames([_item(type_, payload, cause, version)]))

    def publish_many(self, items: Iterable[tuple[str, dict]], ack: bool = False) -> int:
        batch = [_item(t, p, None, None) for t, p in items]
        ack_id = 0
        if ack:
            self._ack_id += 1
            ack_id = self._ack_id
        self.sock.send_multipart(self.core.publish_frames(batch, ack_id))
        return ack_id

    def publish_acked(
        self, type_: str, payload: dict, cause: int | None = None, timeout: float = 5.0, version: int | None = None
    ) -> int:
        """Publish and wait until the broker says it is durable in the log. Returns its seq.

        Resent after a broker restart; raises TimeoutError when no broker acknowledges in time, and
        PublishRefused when the broker refuses the event."""
        self._ack_id += 1
        ack_id = self._ack_id
        frames = self.core.publish_frames([_item(type_, payload, cause, version)], ack_id)
        epoch = self.core.epoch
        self.sock.send_multipart(frames)
        deadline = time.monotonic() + timeout
        while True:
            if ack_id in self.core.acked:
                return self.core.acked.pop(ack_id)[1]
            for rid, reason, detail in self.core.rejections:
                if rid == ack_id:
                    raise PublishRefused(reason, detail)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no acknowledgement for {type_} within {timeout}s")
            self._pump(min(left, 0.1))
            if self.core.epoch != epoch and epoch is not None:
                epoch = self.core.epoch
                self.sock.send_multipart(frames)

    def _pump(self, timeout: float) -> bool:
        if not self.sock.poll(int(timeout * 1000)):
            if time.monotonic() - self.core.last_tick > 5 * TICK_S:
                self._hello()
                self.core.last_tick = time.monotonic()
            return False
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            events, rehello = self.core.handle(frames)
            self._queue.extend(events)
            if rehello:
                self._hello()

    def _wait(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._queue:
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                return False
            self._pump(left)
        return True

    def recv(self, timeout: float | None = None) -> Event | None:
        """The next subscribed event, or None after ``timeout`` seconds."""
        return self._queue.popleft() if self._wait(timeout) else None

    def recv_batch(self, timeout: float | None = None) -> list[Event]:
        """Everything available now (waiting up to ``timeout`` for the first)."""
        if not self._wait(timeout):
            return []
        out = list(self._queue)
        self._queue.clear()
        return out

    def iter(self, timeout: float | None = None) -> Iterator[Event]:
        while True:
            ev = self.recv(timeout)
            if ev is None:
                return
            yield ev

    def close(self) -> None:
        _close(self.sock)


@dataclass
class _Outgoing:
    """A batch published and not acknowledged yet."""

    ack_id: int
    items: list[list]
    floor: int  # every record of it gets a seq above this one
    epoch: str | None  # the broker epoch it was sent under
    future: Any = None  # resolved with (first_seq, last_seq) once durable (publish_durable)
    rejected: int = 0
    found: tuple[int, int] | None = None  # (first, last) seqs of its items found in the log after a broker restart


class AsyncBusClient:
    """asyncio client for service shells (zmq.asyncio).

    ``publish_nowait`` never blocks and never reorders: items published in one turn of the event
    loop go out together as one batch (one frame), in order, right after that turn.
    ``publish_durable`` sends a batch at once and returns a future resolved when the broker says
    it is durable in the log: a shell runs an effect only after that (write-ahead).

    A background task reads the socket all the time (also while the service awaits an
    acknowledgement): deliveries are queued in order for ``recv_batch``, acknowledgements resolve
    their futures. Every batch carries an ack id, so none is lost to a broker crash: on a new broker
    epoch, the batches not acknowledged are looked up in the log (the new broker writes what it
    received before it answers our hello) and only the items not recorded are sent again, so each
    is recorded exactly once."""

    def __init__(
        self,
        run_dir: str,
        name: str,
        subs: Iterable[str] = (),
        log_dir: str | None = None,
        from_seq: int | None = None,
        rcvhwm: int = 1000,
    ) -> None:
        import zmq.asyncio

        self.ctx = zmq.asyncio.Context.instance()
        self.sock = _dealer(self.ctx, endpoint(run_dir), rcvhwm)
        # a reconnection (a new broker) is seen at once and answered with a hello: the broker
        # knows a client only by its hello, and its answer starts the catch-up and the resend of
        # what the old broker lost (a silent client would wait for its 1 s watchdog: pulse's lost
        # timer.fired held its heartbeats that long across a broker restart)
        self._monitor = self.sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._disconnected = False
        self.core = _ClientCore(name, subs, log_dir, from_seq)
        self._queue: list[Event] = []
        self._outbox: list[list] = []
        self._flush_scheduled = False
        self._ack_id = 0
        self._unacked: dict[int, _Outgoing] = {}  # in the order sent
        self._acked_to = 0  # the highest seq acknowledged to us
        self._ready: Any = None  # asyncio.Event: something in _queue (or an error)
        self._reader: Any = None
        self._error: BaseException | None = None
        self.epochs = 0  # broker restarts seen
        self.resent = 0  # items sent again after a broker restart (not found in the log)
        self.found = 0  # items not acknowledged before a broker restart and found recorded

    async def start(self) -> None:
        import asyncio

        self._ready = asyncio.Event()
        await self.sock.send_multipart(self.core.hello())
        self._reader = asyncio.ensure_future(self._read_loop())

    # -- publishing ------------------------------------------------------------------------

    def _send(self, frames: list[bytes]) -> None:
        if not self.sock.closed:
            # pyzmq's asyncio socket queues sends in order when it cannot send at once
            self.sock.send_multipart(frames).add_done_callback(_log_send_error)

    def _send_batch(self, items: list[list], future: Any = None) -> None:
        self._ack_id += 1
        floor = max(self.core.broker_seq, self.core.last_delivered, self._acked_to)
        out = _Outgoing(self._ack_id, items, floor, self.core.epoch, future)
        self._unacked[out.ack_id] = out
        self._send(self.core.publish_frames(items, out.ack_id))

    def publish_nowait(self, type_: str, payload: dict, cause: int | None = None, version: int | None = None) -> None:
        self._outbox.append(_item(type_, payload, cause, version))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            import asyncio

            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        items, self._outbox = self._outbox, []
        if items:
            self._send_batch(items)

    def publish_durable(self, items: Iterable[tuple[str, dict, int | None]]):
        """Send ``(type, payload, cause)`` items now as one batch (after anything published with
        ``publish_nowait`` before); returns a future resolved with ``(first_seq, last_seq)`` once
        the broker says they are durable, or failed with PublishRefused when it refused them all
        (then none is recorded). After a broker restart the items not recorded are sent again."""
        import asyncio

        self._flush()
        fut = asyncio.get_running_loop().create_future()
        if self._error is not None:
            fut.set_exception(self._error)
            return fut
        self._send_batch([_item(t, p, c, None) for t, p, c in items], fut)
        return fut

    async def publish(self, type_: str, payload: dict, cause: int | None = None, version: int | None = None) -> None:
        self._flush()
        self._send_batch([_item(type_, payload, cause, version)])

    @property
    def unacked(self) -> int:
        return sum(len(o.items) for o in self._unacked.values())

    # -- reading ---------------------------------------------------------------------------

    async def recv_batch(self, timeout: float | None = None) -> list[Event]:
        """Wait for the next events (all that are ready), or [] after ``timeout``.

        Not to be cancelled: a task running it may finish with the events in the same loop turn as
        its cancellation (``wait_for`` then returns them), and they are lost to a caller that drops
        the cancelled task. To wait on the bus and on something else, ``wait_ready`` (it takes
        nothing) and then ``take``."""
        await self.wait_ready(timeout)
        return self.take()

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until events (or an error) are ready to ``take``; False after ``timeout``. Safe to
        cancel: it takes nothing from the queue."""
        import asyncio

        if self._queue or self._error is not None:
            return True
        self._ready.clear()
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def take(self) -> list[Event]:
        """The events delivered so far, in log order ([] if none); raises the client's error once
        the events before it are taken."""
        if self._error is not None and not self._queue:
            raise self._error
        out, self._queue = self._queue, []
        return out

    async def _read_loop(self) -> None:
        import asyncio

        import zmq.asyncio

        poller = zmq.asyncio.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        try:
            while not self.sock.closed:
                ready = dict(await poller.poll(100))
                if self._monitor in ready:
                    await self._on_monitor()
                if self.sock in ready:
                    while True:
                        try:
                            frames = await self.sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._on_frames(frames)
                elif time.monotonic() - self.core.last_tick > 5 * TICK_S:
                    self._send(self.core.hello())
                    self.core.last_tick = time.monotonic()
        except asyncio.CancelledError:
            raise
        except zmq.ZMQError as exc:
            if not self.sock.closed:
                self._fail(exc)
        except Exception as exc:  # a bad delivery (BusError, a decode error): the service's to see
            self._fail(exc)

    async def _on_monitor(self) -> None:
        from zmq.utils.monitor import parse_monitor_message

        while True:
            try:
                msg = await self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event = parse_monitor_message(msg)["event"]
            if event == zmq.EVENT_DISCONNECTED:
                self._disconnected = True
            elif event == zmq.EVENT_CONNECTED and self._disconnected:
                self._disconnected = False
                self._send(self.core.hello())

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        for out in self._unacked.values():
            if out.future is not None and not out.future.done():
                out.future.set_exception(exc)
        self._unacked.clear()
        self._ready.set()

    def _on_frames(self, frames: list[bytes]) -> None:
        core = self.core
        epoch = core.epoch
        events, rehello = core.handle(frames)
        kind = frames[0]
        if kind == b"A":
            for ack_id, (first, last) in core.acked.items():
                self._acked_to = max(self._acked_to, last)
                out = self._unacked.pop(ack_id, None)
                if out is not None and out.future is not None and not out.future.done():
                    if out.found is not None:  # the rest was recorded before a broker restart
                        first, last = min(first, out.found[0]), max(last, out.found[1])
                    out.future.set_result((first, last))
            core.acked.clear()
        elif kind == b"R":
            for ack_id, reason, detail in core.rejections:
                log.error("publish_refused", client=core.name, reason=reason, detail=str(detail)[:200])
                out = self._unacked.get(ack_id)
                if out is None:
                    continue
                out.rejected += 1
                if out.rejected >= len(out.items):  # nothing of it was recorded: no ack will come
                    del self._unacked[ack_id]
                    if out.future is not None and not out.future.done():
                        if out.found is not None:  # a part was recorded (before a broker restart): as a partial refusal
                            out.future.set_result(out.found)
                        else:
                            out.future.set_exception(PublishRefused(reason, detail))
            core.rejections.clear()
        if events:
            self._queue.extend(events)
            self._ready.set()
        if rehello:
            self._send(core.hello())
        if epoch is not None and core.epoch != epoch:
            self.epochs += 1
            self._reconcile()

    def _reconcile(self) -> None:
        """A new broker: each batch sent under an older one and not acknowledged is either in the
        log (the old broker wrote it, or the new one took it off our queue before our hello) or was
        lost with the old broker. The log tells which, item by item; the lost items are sent again,
        in order."""
        stale = [o for o in self._unacked.values() if o.epoch != self.core.epoch]
        if not stale:
            return
        recorded = self._recorded(stale)
        resent = 0
        for out, seqs in zip(stale, recorded):
            del self._unacked[out.ack_id]
            self.found += sum(1 for q in seqs if q)
            if seqs and all(seqs):
                if out.future is not None and not out.future.done():
                    out.future.set_result((min(seqs), max(seqs)))
                continue
            found = [q for q in seqs if q]
            if found:
                out.found = (min(found), max(found)) if out.found is None else (
                    min(found[0], out.found[0]), max(found[-1], out.found[1]))
            # under its own ack id: if a copy of it still queued in our socket reaches the new broker
            # before this one (it was sent before), the broker records that one and drops this one
            out.items = [it for it, q in zip(out.items, seqs) if not q]
            out.epoch, out.rejected = self.core.epoch, 0
            resent += len(out.items)
            out.floor = max(self.core.broker_seq, self.core.last_delivered, self._acked_to)
            self._unacked[out.ack_id] = out
            self._send(self.core.publish_frames(out.items, out.ack_id))
        self.resent += resent
        log.info("publishes_reconciled", client=self.core.name, epoch=self.core.epoch, batches=len(stale),
                 recorded=sum(1 for seqs in recorded for q in seqs if q), resent=resent)

    def _recorded(self, stale: list[_Outgoing]) -> list[list[int]]:
        """For each batch, for each of its items: its seq in the log, or 0 when it is not there.

        Our records are in the log in the order we sent them (one connection to each broker, and
        everything sent to the old broker before anything to the new one), but not necessarily a
        prefix of it: the old broker may have lost a batch that a later one, sent after it died,
        follows into the new broker's log. So each item is looked for, in order (an item the
        old broker refused is not found: sent again, the new broker refuses it again)."""
        flat: list[tuple] = []
        for o in stale:
            for it in o.items:
                flat.append((it[0], it[1], it[2], msgpack.packb(it[3], use_bin_type=True)))
        seqs = [0] * len(flat)
        if self.log_dir_usable():
            try:
                p = 0
                for seq, body in LogReader(self.core.log_dir).read(min(o.floor for o in stale) + 1):  # type: ignore[arg-type]
                    if p >= len(flat):
                        break
                    rec = msgpack.unpackb(body, raw=False, strict_map_key=False)
                    if rec[3] != self.core.name:
                        continue
                    key = (rec[4], rec[5], rec[8], msgpack.packb(rec[9], use_bin_type=True))
                    for q in range(p, min(len(flat), p + 256)):
                        if flat[q] == key:
                            seqs[q] = seq
                            p = q + 1
                            break
            except Exception as exc:  # a log we cannot read: send again (at least once)
                log.error("publish_reconcile_failed", client=self.core.name, error=str(exc))
                seqs = [0] * len(flat)
        per_batch: list[list[int]] = []
        q = 0
        for o in stale:
            per_batch.append(seqs[q:q + len(o.items)])
            q += len(o.items)
        return per_batch

    def log_dir_usable(self) -> bool:
        return self.core.log_dir is not None and os.path.isdir(self.core.log_dir)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if not self.sock.closed:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
        self._monitor.close(0)
        _close(self.sock)
