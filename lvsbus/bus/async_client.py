"""The asyncio bus client of the service shells: batches per loop turn, durable publishes, and the
resend of what a broker restart lost (each item recorded exactly once)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Iterable

import msgpack
import structlog
import zmq

from lvsbus.wire.events import Event
from lvsbus.log import LogReader
from lvsbus.bus.client import PublishRefused, _ClientCore
from lvsbus.bus.protocol import TICK_S, endpoint, publish_item
from lvsbus.bus.sockets import close_dealer, dealer, log_send_error

log = structlog.get_logger("lvsbus.bus")


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
        self.sock = dealer(self.ctx, endpoint(run_dir), rcvhwm)
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
            self.sock.send_multipart(frames).add_done_callback(log_send_error)

    def _send_batch(self, items: list[list], future: Any = None) -> None:
        self._ack_id += 1
        floor = max(self.core.broker_seq, self.core.last_delivered, self._acked_to)
        out = _Outgoing(self._ack_id, items, floor, self.core.epoch, future)
        self._unacked[out.ack_id] = out
        self._send(self.core.publish_frames(items, out.ack_id))

    def publish_nowait(self, type_: str, payload: dict, cause: int | None = None, version: int | None = None) -> None:
        self._outbox.append(publish_item(type_, payload, cause, version))
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
        self._send_batch([publish_item(t, p, c, None) for t, p, c in items], fut)
        return fut

    async def publish(self, type_: str, payload: dict, cause: int | None = None, version: int | None = None) -> None:
        self._flush()
        self._send_batch([publish_item(type_, payload, cause, version)])

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
        close_dealer(self.sock)
