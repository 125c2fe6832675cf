"""The broker: validates what clients send, numbers it, records it in the log, then forwards it to
the subscribers and acknowledges it once durable (see the package's docstring)."""
from __future__ import annotations

import errno
import os
import secrets
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import msgpack
import structlog
import zmq

from lvsbus.wire.events import REGISTRY, DecodeError, decode, matches
from lvsbus.host.files import write_atomically
from lvsbus.log import CorruptRecord, Durability, EventLog, LogWriteError, frame, frame_batch
from lvsbus.bus.protocol import (
    HELLO_FORMAT,
    MAX_NONCE,
    TICK_S,
    endpoint,
    pack,
    parse_hello,
    parse_publish,
    publisher_name,
    socket_path,
    take_items,
)
from lvsbus.bus.settings import check_broker_settings
from lvsbus.bus.sockets import CurveServer, bind_curve, bind_ipc, router_socket
from lvsbus.bus.stats import BrokerStats, LogStats, ReportLimit

log = structlog.get_logger("lvsbus.bus")

#: bus.frame_rejected events (and warnings) at most this many a second; the rest are counted
REJECT_EVENTS_PER_S = 200
DEDUP_PER_CLIENT = 4096  # acknowledged batches remembered per client nonce (to drop a copy sent again)
MAX_BATCH = 1024  # records recorded and forwarded together (one write, one delivery frame a subscriber)
DEFAULT_SNDHWM = 2000  # delivery messages (each a batch) queued per subscriber before dropping
LOG_STATS_S = 10.0  # bus.log_stats at most this often (0: never)
BACKLOG_NAME = "log-backlog.spill"  # in the spill directory (the run directory unless told otherwise)
STOP_FLUSH_S = 5.0  # a clean stop with a backlog keeps trying to write it this long, then spills it


def _fault_point() -> tuple[str, str] | None:
    """Crash tests: LVSBUS_BROKER_FAULT=before_write:TYPE or after_write:TYPE: SIGKILL this broker
    when it records a batch holding an event of TYPE, before or after the write."""
    point, _, ftype = os.environ.get("LVSBUS_BROKER_FAULT", "").partition(":")
    return (point, ftype) if point in ("before_write", "after_write") and ftype else None


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


@dataclass
class _Client:
    ident: bytes
    name: str
    subs: tuple[str, ...]
    remote: bool
    lag_from: int = 0  # first seq dropped and not yet told (0: not lagging)
    lag_to: int = 0
    dropped: int = 0


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
        self._refusals = ReportLimit(REJECT_EVENTS_PER_S)
        # client nonce -> {ack_id: (first, last seq)} of the batches this broker recorded (the latest
        # DEDUP_PER_CLIENT a client): a copy of one sent again is dropped and acknowledged
        self._dedup: dict[bytes, dict[int, tuple[int, int]]] = {}
        self.log_stats_s = log_stats_s
        self._log_stats = LogStats(time.monotonic_ns())
        self._next_log_stats = time.monotonic() + log_stats_s
        self._committing: deque[tuple[int, int]] = deque(maxlen=100_000)  # (last seq of an append, monotonic ns it started)
        self._fault = _fault_point()

        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        os.chmod(run_dir, 0o700)
        self._open_log(log_dir, durability, segment_bytes, retention, spill_dir)
        self.ctx = context or zmq.Context.instance()
        self.sock = router_socket(self.ctx, sndhwm)
        bind_ipc(self.sock, run_dir)
        self.remote: zmq.Socket | None = None
        self._auth = None
        if curve is not None:
            self.remote = router_socket(self.ctx, sndhwm)
            self._auth = bind_curve(self.ctx, self.remote, curve)
        self._announce_start()

    def _open_log(self, log_dir: str, durability: Durability | None, segment_bytes: int | None, retention,
                  spill_dir: str | None) -> None:
        kwargs: dict[str, Any] = {"durability": durability or Durability("group")}
        if segment_bytes is not None:
            kwargs["segment_bytes"] = segment_bytes
        if retention is not None:
            kwargs["retention"] = retention
        # A backlog spilled at the last stop (the log's disk was full) is written first, when it follows the log.
        self.spill_path = os.path.join(spill_dir or self.run_dir, BACKLOG_NAME)
        self.log = EventLog(log_dir, backlog_file=self.spill_path, **kwargs)
        self._seq = self.log.last_seq
        self._spill_pending = False
        if self.log.recovery.backlog_pending:
            self._resume_spilled_backlog(self.log.recovery.backlog_pending)
        if self.log.recovery.backlog_left:  # not usable: keep it for the operator, out of the next spill's way
            kept = f"{self.spill_path}.unused-{time.strftime('%Y%m%dT%H%M%S')}"
            try:
                os.replace(self.spill_path, kept)
                log.error("log_backlog_file_not_used", path=kept)
            except OSError:
                pass

    def _resume_spilled_backlog(self, pending: list[tuple[int, bytes]]) -> None:
        """The disk still refuses the spilled records: they are the backlog, written when it can."""
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

    def _announce_start(self) -> None:
        """bus.broker_started and what opening the log found, as the first records of this broker;
        then the background check of the sealed segments."""
        resumed = self._seq
        self._emit(
            "bus.broker_started",
            {"epoch": self.epoch, "resumed_from": resumed, "recovery": _recovery_summary(self.log)},
        )
        self._emit_recovery()
        log.info("broker_started", node=self.node, epoch=self.epoch, resumed_from=resumed,
                 endpoint=endpoint(self.run_dir))
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
        source = publisher_name(frames[2])
        if source is None:
            self._reject(sock, ident, 0, "bad_name", "publisher name must be 1-64 bytes of UTF-8", len(frames[3]))
            return
        try:
            ack_id, n_items, items, nonce = parse_publish(frames[3])
        except Exception:
            self._reject(sock, ident, 0, "malformed", f"a publish is [ack_id, [items], nonce of at most {MAX_NONCE} bytes]",
                         len(frames[3]))
            return
        if ack_id and nonce and self._ack_resent(ident, nonce, ack_id):
            return
        first_index = len(batch)
        refusal = take_items(items, n_items, source, batch)
        if refusal is not None:
            self._reject(sock, ident, ack_id, refusal.reason, refusal.detail, len(frames[3]), refusal.items)
        if ack_id and len(batch) > first_index:
            acks.append((ident, ack_id, first_index, len(batch) - 1))
            if nonce:
                self._remember_batch(nonce, ack_id, first_index, len(batch))
        if client is None:
            self._send(sock, ident, [b"W"])

    def _ack_resent(self, ident: bytes, nonce: bytes, ack_id: int) -> bool:
        """A resend (after a broker restart) of a batch this broker already recorded (a copy queued
        in the client's socket reached it first): acknowledged again, not recorded again."""
        seen = self._dedup.get(nonce)
        done = seen.get(ack_id) if seen is not None else None
        if done is None:
            return False
        self._pending_acks.append((done[1], ident, ack_id, done[0]))
        return True

    def _remember_batch(self, nonce: bytes, ack_id: int, first_index: int, end_index: int) -> None:
        """Remember the seqs of an acknowledged batch (items ``first_index`` to ``end_index - 1`` of
        the batch being drained), to drop a copy sent again. Seqs are assigned at flush: this
        broker's seq + position in the batch."""
        seen = self._dedup.get(nonce)
        if seen is None:
            seen = self._dedup[nonce] = {}
            if len(self._dedup) > 10_000:
                self._dedup.pop(next(iter(self._dedup)))
        seen[ack_id] = (self._seq + first_index + 1, self._seq + end_index)
        if len(seen) > DEDUP_PER_CLIENT:
            seen.pop(next(iter(seen)))

    def _on_hello(self, sock, ident: bytes, frames: list[bytes], remote: bool) -> None:
        """A hello: the client is known from now on, and answered with the epoch and the last seq."""
        try:
            name, subs, pid = parse_hello(frames[2])
        except Exception:
            self._reject(sock, ident, 0, "malformed", HELLO_FORMAT, len(frames[2]))
            return
        # what this client sent before its hello is written before the answer: a client that
        # finds a new epoch there reads the log to tell its lost publishes from recorded ones.
        # Written before the client is known, so none of it is forwarded to it: the answer (T)
        # comes first and its catch-up from the log delivers all of it, in order. (Forwarded
        # ahead of T, a publish of the same drain made the client's catch-up start after it,
        # and what was written in an earlier drain was never delivered to it.)
        self._flush()
        known = self._clients.get(ident)
        c = self._clients[ident] = _Client(ident, name, subs, remote)
        if known is not None:
            # a hello again on the same connection (the client's watchdog heard no tick: they were
            # dropped with its deliveries): what was dropped for it is still to be told (L). Forgotten
            # here, the client never caught up: it knows of no gap in the same epoch.
            c.lag_from, c.lag_to, c.dropped = known.lag_from, known.lag_to, known.dropped
        self._route_cache.clear()
        self._send(sock, ident, [b"T", pack([self.epoch, self._seq])])
        self._emit(
            "bus.client_joined",
            {"client": name, "subscriptions": [x[:96] for x in subs[:64]], "pid": pid},
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
        self._send(sock, ident, [b"R", pack([ack_id, reason, detail[:1024]])])
        report, unreported = self._refusals.admit(time.monotonic())
        if unreported:
            log.warning("frames_rejected_unreported", frames=unreported, count=self.stats.rejected)
        if not report:
            return
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
        try:
            write_atomically(self.spill_path, frame_batch(self._unrecorded), 0o600)
        except OSError as exc:
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
        if not self._send(sock, c.ident, [b"L", pack([c.lag_from, c.lag_to])]):
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
                self._send(sock, ident, [b"A", pack([ack_id, first, last])])
            else:
                keep.append(item)
        self._pending_acks = keep

    def _tick(self) -> None:
        if self._scan_found:
            self._report_scan()
        msg = [b"T", pack([self.epoch, self._seq])]
        for c in list(self._clients.values()):
            sock = self.remote if c.remote else self.sock
            if c.lag_from:
                self._tell_lag(sock, c)
            self._send(sock, c.ident, msg)
        self.log.apply_retention()
        if self.log_stats_s > 0 and time.monotonic() >= self._next_log_stats:
            self._publish_log_stats(time.monotonic())
