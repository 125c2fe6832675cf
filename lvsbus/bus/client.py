"""The bus client: the message handling and gap repair both clients share (``_ClientCore``), and the
blocking client (the supervisor, the CLI, tests)."""
from __future__ import annotations

import os
import time
from collections import deque
from typing import Iterable, Iterator

import structlog
import zmq

from lvsbus.wire.events import DecodeError, Event, decode, decode_records, matches
from lvsbus.log import LogReader, parse_frames
from lvsbus.bus.protocol import TICK_S, endpoint, pack, publish_item, unpack
from lvsbus.bus.sockets import close_dealer, dealer

log = structlog.get_logger("lvsbus.bus")


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
        return [b"H", pack({"name": self.name, "subs": list(self.subs), "pid": os.getpid()})]

    def publish_frames(self, items: list[list], ack_id: int = 0) -> list[bytes]:
        if ack_id:  # the nonce lets the broker drop a resend of a batch it already recorded
            return [b"P", self.name.encode(), pack([ack_id, items, self.nonce])]
        return [b"P", self.name.encode(), pack([ack_id, items])]

    def handle(self, frames: list[bytes]) -> tuple[list[Event], bool]:
        """Returns (events to deliver in order, whether to send hello again)."""
        self.last_heard = time.monotonic()
        kind = frames[0]
        if kind == b"D":
            return self._on_delivery(frames[1]), False
        if kind == b"T":
            return self._on_tick(frames[1])
        if kind == b"L":
            return self._on_lag(frames[1]), False
        if kind == b"A":
            ack_id, first, last = unpack(frames[1])
            self.acked[ack_id] = (first, last)
            return [], False
        if kind == b"R":
            ack_id, reason, detail = unpack(frames[1])
            self.rejections.append((ack_id, reason, detail))
            return [], False
        if kind == b"W":
            return [], True
        raise BusError(f"unknown message kind {kind[:8]!r} from broker")

    def _on_delivery(self, body: bytes) -> list[Event]:
        records, used = parse_frames(body)
        if used != len(body):
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
        return out

    def _on_tick(self, body: bytes) -> tuple[list[Event], bool]:
        epoch, last = unpack(body)
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

    def _on_lag(self, body: bytes) -> list[Event]:
        first, last = unpack(body)
        self.lags += 1
        if self.gap_from is None or first < self.gap_from:
            self.gap_from = max(first, self.last_delivered + 1)
        return self._catch_up(last)

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
        self.sock = dealer(self.ctx, connect or endpoint(run_dir), rcvhwm, curve)
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
        self.sock.send_multipart(self.core.publish_frames([publish_item(type_, payload, cause, version)]))

    def publish_many(self, items: Iterable[tuple[str, dict]], ack: bool = False) -> int:
        batch = [publish_item(t, p, None, None) for t, p in items]
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
        frames = self.core.publish_frames([publish_item(type_, payload, cause, version)], ack_id)
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
        close_dealer(self.sock)
