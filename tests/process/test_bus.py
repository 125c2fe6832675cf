"""The recorded bus against a real broker process: order, refusals, slow subscribers, SIGKILL, CurveZMQ."""
from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.bus import BusClient
from lvsbus.wire.events import decode
from lvsbus.host.paths import StateDirs
from tests.helpers.procs import broker, client, tmpfs, wait_joined  # noqa: F401  (broker: the fixture)


def test_events_are_numbered_recorded_and_delivered_in_log_order(broker):
    b = broker()
    sub = client(b, "sub", subs=("timer.",))
    p1, p2 = client(b, "p1"), client(b, "p2")
    for c in (sub, p1, p2):
        wait_joined(c)
    for i in range(200):
        (p1 if i % 3 else p2).publish("timer.fired", {"service": "s", "deadline_ns": i})
    last = p1.publish_acked("timer.fired", {"service": "s", "deadline_ns": 999})
    got = []
    while len(got) < 201:
        e = sub.recv(5)
        assert e is not None, f"only {len(got)} delivered"
        got.append(e)
    assert [e.seq for e in got] == sorted(e.seq for e in got)
    # p1's acknowledged publish is p1's last event; p2's may be numbered after it (no order holds
    # across two clients' connections: the broker reads each in turn)
    assert [e.seq for e in got if e.source == "p1"][-1] == last
    logged = [e for e in b.events() if e.type == "timer.fired"]
    assert logged == got  # the log is exactly what the subscriber saw
    # per-publisher order is kept
    assert [e.payload["deadline_ns"] for e in got if e.source == "p2"] == [i for i in range(200) if not i % 3]
    assert [e.payload["deadline_ns"] for e in got if e.source == "p1"] == [i for i in range(200) if i % 3] + [999]
    assert all(e.node == "t1" for e in got)
    assert all(e.mono_ns <= f.mono_ns for e, f in zip(got, got[1:]))


def test_garbage_from_a_peer_is_refused_counted_and_the_broker_runs_on(broker):
    b = broker()
    rnd = random.Random(7)
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect("ipc://" + b.dirs.run + "/bus.sock")
    garbage = [
        [b"P", b"evil", b"\xc1\xc1\xc1"],
        [b"P", b"evil", msgpack.packb([0, [["timer.fired", 1, None, {"service": 5}]]])],
        [b"P", b"evil", msgpack.packb([0, [["no.such", 1, None, {}]]])],
        [b"P", b"evil", msgpack.packb([0, [["timer.fired", 7, None, {}]]])],
        [b"P", b"evil", msgpack.packb([0, "x"])],
        [b"P", b"\xff\xfe", msgpack.packb([0, []])],
        [b"H", b"\x00"],
        [b"Q"],
        [],
    ] + [[rnd.randbytes(rnd.randint(0, 40)) for _ in range(rnd.randint(1, 4))] for _ in range(200)]
    for frames in garbage:
        if frames:
            raw.send_multipart(frames)
        else:
            raw.send(b"")
    # close only once the broker has them: LINGER 0 drops what is still queued (flaky before)
    deadline = time.monotonic() + 10
    while sum(e.type == "bus.frame_rejected" for e in b.events()) < 9 and time.monotonic() < deadline:
        time.sleep(0.05)
    raw.close()
    c = client(b, "good")
    c.publish_acked("timer.fired", {"service": "s", "deadline_ns": 1}, timeout=10)  # still serving
    assert b.proc.poll() is None
    rejected = [e for e in b.events() if e.type == "bus.frame_rejected"]
    reasons = {e.payload["reason"] for e in rejected}
    assert {"malformed", "bad_payload", "unknown_type", "unknown_version", "bad_name"} <= reasons
    assert rejected[-1].payload["count"] == len(rejected) >= 9
    assert any('"frame_rejected"' in line for line in b.lines)


def test_a_slow_subscriber_is_dropped_live_and_catches_up_from_the_log(broker):
    b = broker("--sndhwm", "4")
    slow = client(b, "slow", subs=("timer.",), rcvhwm=4)
    pub = client(b, "pub")
    wait_joined(slow)
    wait_joined(pub)
    n = 100_000
    for start in range(0, n, 10):
        pub.publish_many([("timer.fired", {"service": "s", "deadline_ns": i}) for i in range(start, start + 10)])
    pub.publish_acked("timer.fired", {"service": "s", "deadline_ns": n}, timeout=20)
    got = []
    deadline = time.monotonic() + 60
    while len(got) < n + 1 and time.monotonic() < deadline:
        got.extend(slow.recv_batch(1.0))
    values = [e.payload["deadline_ns"] for e in got]
    assert values == list(range(n + 1)), "gap or duplicate after catching up"
    assert slow.core.lags >= 1, "the subscriber was never over its high-water mark: the test proves nothing"
    lagged = [e for e in b.events() if e.type == "bus.subscriber_lagged"]
    assert lagged and lagged[0].payload["subscriber"] == "slow"
    assert b.proc.poll() is None


def test_broker_killed_and_restarted_resumes_the_sequence_and_clients_reconnect(broker, tmp_path):
    b = broker()
    sub = client(b, "sub", subs=("timer.",))
    pub = client(b, "pub")
    wait_joined(sub)
    acked = [pub.publish_acked("timer.fired", {"service": "s", "deadline_ns": i}) for i in range(50)]
    for i in range(50, 80):
        pub.publish("timer.fired", {"service": "s", "deadline_ns": i})
    time.sleep(0.1)
    b.kill()
    before = b.events()
    assert {e.seq for e in before} >= set(acked)  # every acknowledged event survived SIGKILL
    b2 = broker(state=tmp_path / "state")
    started = [e for e in b2.events() if e.type == "bus.broker_started"]
    assert started[-1].payload["resumed_from"] == before[-1].seq
    assert started[-1].seq == before[-1].seq + 1
    # the same client objects go on, with no manual help
    seq = pub.publish_acked("timer.fired", {"service": "s", "deadline_ns": 1000}, timeout=10)
    got = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not got or got[-1].seq < seq):
        got.extend(sub.recv_batch(0.5))
    values = [e.payload["deadline_ns"] for e in got]
    # no gap, in order, and the resend of the in-flight publish was recognised (nonce): no duplicate
    assert values == list(range(80)) + [1000], values[75:]
    seqs = [e.seq for e in b2.events()]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_client_that_publishes_before_its_hello_to_a_new_broker_misses_nothing(tmp_path):
    """A client reconnecting to a restarted broker sends what it queued (publishes of its own
    subscribed types: pulse's heartbeat_received) before its hello. What the broker recorded of
    it before the hello is not forwarded to it (unknown then): it must come from the log, by the
    catch-up the answer to the hello starts. Before: when the hello came in one drain with a later
    publish, that publish was forwarded (D) before the answer (T), so the client's catch-up began
    after it and the earlier records were never delivered (r1's pulse lost two heartbeats of its
    peer across a broker kill; replay found a heartbeat 'no input explains')."""
    from lvsbus.bus import Broker, endpoint
    from lvsbus.bus.client import _ClientCore
    from lvsbus.log import Durability

    dirs = StateDirs(str(tmp_path / "s")).make()
    br = Broker("n1", dirs.run, dirs.log, Durability("none"))
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(endpoint(dirs.run))
        core = _ClientCore("c", ("timer.fired",), dirs.log, None)
        core.epoch, core.last_delivered = "the broker before", br._seq  # everything up to here delivered

        def publish(n: int) -> None:
            dealer.send_multipart(core.publish_frames([["timer.fired", 1, None, {"service": "s", "deadline_ns": n}]], n))

        def drain() -> None:
            assert br.sock.poll(2000)
            time.sleep(0.05)  # all that was sent is queued: one drain takes it
            br._drain(br.sock, remote=False)

        publish(1)
        drain()  # recorded and flushed; the client is unknown, so it gets W only
        publish(2)
        dealer.send_multipart(core.hello())
        drain()  # the publish and the hello in one drain
        got = []
        while dealer.poll(300):
            events, _ = core.handle(dealer.recv_multipart())
            got.extend(e.payload["deadline_ns"] for e in events)
        assert got == [1, 2]
    finally:
        dealer.close(0)
        br.close()


def test_a_hello_again_keeps_what_the_broker_dropped_for_that_client(tmp_path):
    """A client whose deliveries the broker dropped (over its high-water mark) and that says hello
    again on the same connection (its watchdog heard no tick: the ticks were dropped too) is still
    told the dropped range (L) and catches up. Before: the hello replaced the broker's record of
    the client with a fresh one, the range was forgotten, and the client (same epoch: no gap it
    could know of) never received those events (the slow-subscriber test stalled under load)."""
    from lvsbus.bus import Broker, endpoint
    from lvsbus.bus.client import _ClientCore
    from lvsbus.log import Durability

    dirs = StateDirs(str(tmp_path / "s")).make()
    br = Broker("n1", dirs.run, dirs.log, Durability("none"), sndhwm=1)
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.DEALER)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 1)
    pub = ctx.socket(zmq.DEALER)
    pub.setsockopt(zmq.LINGER, 0)
    try:
        sub.connect(endpoint(dirs.run))
        pub.connect(endpoint(dirs.run))
        core = _ClientCore("slow", ("timer.",), dirs.log, None)
        sender = _ClientCore("pub", (), None, None)
        sub.send_multipart(core.hello())
        assert br.sock.poll(2000)
        br._drain(br.sock, remote=False)
        (c,) = [c for c in br._clients.values() if c.name == "slow"]
        n = 0
        while not c.lag_from and n < 1_000_000:  # the subscriber reads nothing: the broker drops for it
            batch = [["timer.fired", 1, None, {"service": "s", "deadline_ns": n + i}] for i in range(50)]
            n += 50
            pub.send_multipart(sender.publish_frames(batch))
            assert br.sock.poll(2000)
            br._drain(br.sock, remote=False)
        assert c.lag_from, "nothing dropped for the subscriber: the test proves nothing"
        sub.send_multipart(core.hello())  # its watchdog saw no tick for a while: hello again
        assert br.sock.poll(2000)
        br._drain(br.sock, remote=False)
        got = []
        deadline = time.monotonic() + 10
        while len(got) < n and time.monotonic() < deadline:
            br._tick()
            while sub.poll(50):
                events, _ = core.handle(sub.recv_multipart())
                got.extend(e.payload["deadline_ns"] for e in events)
        assert got == list(range(n))
    finally:
        sub.close(0)
        pub.close(0)
        br.close()


def test_a_silent_client_says_hello_to_a_restarted_broker_as_soon_as_it_connects(broker, tmp_path, monkeypatch):
    """A client that publishes nothing learns of a new broker when its connection is made (socket
    monitor), not at its 1 s watchdog: what it sent that the old broker lost (pulse's timer.fired)
    is found missing and sent again, and what it missed is caught up, at once. Here the watchdog
    is off: before, the client never said hello to the new broker."""
    import asyncio

    import lvsbus.bus.async_client as bus

    monkeypatch.setattr(bus, "TICK_S", 3600.0)  # this process's client only (the broker is another)
    b = broker()

    async def main() -> tuple[str | None, str | None, list[int]]:
        c = bus.AsyncBusClient(b.dirs.run, "silent", subs=("timer.",), log_dir=b.dirs.log)
        await c.start()
        try:
            for _ in range(100):
                if c.core.epoch is not None:
                    break
                await asyncio.sleep(0.05)
            first = c.core.epoch
            b.kill()
            pub = BusClient  # the event the client missed while it was away, published by another
            b2 = broker(state=tmp_path / "state")
            other = pub(b2.dirs.run, "other", log_dir=b2.dirs.log)
            other.publish_acked("timer.fired", {"service": "s", "deadline_ns": 7}, timeout=10)
            other.close()
            got: list[int] = []
            for _ in range(100):
                got += [e.payload["deadline_ns"] for e in c.take()]
                if c.core.epoch != first and got:
                    break
                await asyncio.sleep(0.05)
            return first, c.core.epoch, got
        finally:
            c.close()

    first, now, got = asyncio.run(main())
    assert first is not None and now is not None and now != first
    assert got == [7]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_curve_endpoint_serves_authorized_keys_only(broker, tmp_path):
    from lvsbus.cli import main

    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    for name in ("broker", "ops", "intruder"):
        assert main(["keys", "generate", "--dir", str(keys), "--name", name]) == 0
    assert (keys / "ops.key_secret").stat().st_mode & 0o777 == 0o600
    allowed.mkdir()
    (allowed / "ops.key").write_bytes((keys / "ops.key").read_bytes())
    port = _free_port()
    ep = f"tcp://127.0.0.1:{port}"
    b = broker("--curve-endpoint", ep, "--curve-secret", str(keys / "broker.key_secret"), "--curve-authorized", str(allowed))
    import zmq.auth

    server_pub, _ = zmq.auth.load_certificate(str(keys / "broker.key"))

    def remote(name):
        pub, sec = zmq.auth.load_certificate(str(keys / f"{name}.key_secret"))
        return BusClient("", name, subs=("timer.",), connect=ep, curve=(pub, sec, server_pub))

    ok, bad = remote("ops"), remote("intruder")
    wait_joined(ok)
    local = client(b, "local")
    local.publish_acked("timer.fired", {"service": "s", "deadline_ns": 5})
    e = ok.recv(5)
    assert e is not None and e.payload["deadline_ns"] == 5
    assert bad.recv(1.5) is None and bad.core.epoch is None  # refused: not even a tick
    # remote clients may not publish
    ok.publish("timer.fired", {"service": "s", "deadline_ns": 6})
    time.sleep(0.3)
    ok._pump(0.5)
    assert any(r[1] == "not_allowed" for r in ok.core.rejections)
    assert not any(e.type == "timer.fired" and e.payload["deadline_ns"] == 6 for e in b.events())
    assert any(e.type == "bus.client_joined" and e.payload["client"] == "ops" for e in b.events())
    assert not any(e.type == "bus.client_joined" and e.payload["client"] == "intruder" for e in b.events())


def test_disk_full_is_reported_and_survived(broker, tmp_path):
    """The log's disk fills up: events are still delivered, the failure is an event, no ack is
    given for what is not durable; when space returns, the backlog is written and acks flow."""
    with tmpfs(tmp_path / "small") as state:
        b = broker(state=state)
        sub = client(b, "sub", subs=("bus.", "log."))
        pub = client(b, "pub")
        wait_joined(sub)
        filler = state / "filler"
        _fill(filler)
        for i in range(300):
            pub.publish("bus.probe", {"sent_ns": 0, "n": i, "pad": "y" * 200})
        with pytest.raises(TimeoutError):
            pub.publish_acked("bus.probe", {"sent_ns": 0, "n": 300, "pad": ""}, timeout=1.0)
        got = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(e.type == "log.write_failed" for e in got):
            got.extend(sub.recv_batch(0.3))
        assert any(e.type == "log.write_failed" for e in got), "the failure was not delivered as an event"
        probes = [e.payload["n"] for e in got if e.type == "bus.probe"]
        assert probes[:300] == list(range(300)), "events were not delivered while the disk was full"
        assert b.proc.poll() is None
        filler.unlink()  # space comes back
        seq = pub.publish_acked("bus.probe", {"sent_ns": 0, "n": 301, "pad": ""}, timeout=10)
        logged = b.events()
        seqs = [e.seq for e in logged]
        assert seqs == list(range(1, len(seqs) + 1)) and seq in seqs, "a seq is missing from the log"
        assert any(e.type == "log.write_recovered" for e in logged)
        assert [e.payload["n"] for e in logged if e.type == "bus.probe"][:300] == list(range(300))
        b.stop()


def _fill(filler: Path) -> None:
    """Write ``filler`` until its filesystem has not one byte left."""
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (65536, 4096, 512, 16, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)


def _stop_while_full(broker, state: Path, *extra: str, free: bool = True):
    """Start a broker on ``state`` (a small tmpfs), fill the disk, publish 300 probes (delivered
    live, not written), stop the broker cleanly while the disk is still full, then free the disk
    (unless not ``free``). Returns (the stopped broker, subscriber still connected, publisher,
    the events it saw)."""
    b = broker("--stop-flush-s", "0.5", *extra, state=state)
    sub = client(b, "sub", subs=("bus.probe", "log."))
    pub = client(b, "pub")
    wait_joined(sub)
    _fill(state / "filler")
    for i in range(300):
        pub.publish("bus.probe", {"sent_ns": 0, "n": i, "pad": "y" * 200})
    got = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (len([e for e in got if e.type == "bus.probe"]) < 300
                                           or not any(e.type == "log.write_failed" for e in got)):
        got.extend(sub.recv_batch(0.3))
    assert [e.payload["n"] for e in got if e.type == "bus.probe"] == list(range(300))
    assert any(e.type == "log.write_failed" for e in got)
    b.stop()
    assert b.proc.returncode == 0
    if free:
        (state / "filler").unlink()  # space comes back before the next start
    return b, sub, pub, got


def test_a_stop_while_the_disk_is_full_loses_no_seq_to_reuse(broker, tmp_path):
    """Issue 19: a clean stop with delivered-but-unwritten events, and nowhere to spill them: the
    next broker declares their seqs lost (log.gap) instead of giving them to new events, so a
    subscriber that stayed connected receives every new acknowledged event."""
    with tmpfs(tmp_path / "small") as state:
        b, sub, pub, got = _stop_while_full(broker, state)  # the spill file would go to the same full disk
        assert any("log_backlog_lost_at_stop" in line for line in b.lines), "".join(b.lines)[-3000:]
        last_seen = max(e.seq for e in got)
        b2 = broker(state=state)
        acked = [pub.publish_acked("bus.probe", {"sent_ns": 0, "n": 1000 + i, "pad": ""}, timeout=10)
                 for i in range(20)]
        assert min(acked) > last_seen, "a seq already delivered was given to a new event"
        later = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len([e for e in later if e.type == "bus.probe"]) < 20:
            later.extend(sub.recv_batch(0.3))
        assert [e.payload["n"] for e in later if e.type == "bus.probe"] == [1000 + i for i in range(20)]
        gaps = [e for e in later if e.type == "log.gap"]
        assert gaps and gaps[0].payload["last_lost"] >= last_seen, [e.type for e in later]
        first_lost = gaps[0].payload["first_lost"]
        logged = b2.events()
        seqs = [e.seq for e in logged]
        assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)
        assert not [s for s in seqs if first_lost <= s <= gaps[0].payload["last_lost"]]
        assert seqs == list(range(1, first_lost)) + list(range(gaps[0].payload["last_lost"] + 1, seqs[-1] + 1))
        r = subprocess.run([sys.executable, "-m", "lvsbus.cli", "log", "check", b2.dirs.log], capture_output=True, text=True)
        assert r.returncode == 0 and "declared gap" in r.stdout, r.stdout + r.stderr
        b2.stop()


def test_a_stop_while_the_disk_is_full_spills_the_backlog_and_the_next_start_writes_it(broker, tmp_path):
    """With a spill directory on another filesystem, nothing delivered is lost at all."""
    spill = tmp_path / "spill"
    spill.mkdir()
    with tmpfs(tmp_path / "small") as state:
        b, sub, pub, got = _stop_while_full(broker, state, "--spill-dir", str(spill))
        assert (spill / "log-backlog.spill").exists(), "".join(b.lines)[-3000:]
        b2 = broker("--spill-dir", str(spill), state=state)
        assert not (spill / "log-backlog.spill").exists()
        seq = pub.publish_acked("bus.probe", {"sent_ns": 0, "n": 5000, "pad": ""}, timeout=10)
        logged = b2.events()
        seqs = [e.seq for e in logged]
        assert seqs == list(range(1, seqs[-1] + 1)) and seq in seqs
        assert [e.payload["n"] for e in logged if e.type == "bus.probe"] == list(range(300)) + [5000]
        assert {e.seq for e in got} <= set(seqs)  # every event delivered live is in the log, same seq
        by_seq = {e.seq: e for e in logged}
        assert all(by_seq[e.seq].payload == e.payload for e in got)
        assert not any(e.type == "log.gap" for e in logged)
        b2.stop()


def test_a_spilled_backlog_waits_while_the_disk_is_still_full_at_the_next_start(broker, tmp_path):
    """The next start finds the disk still full: the spilled records become its backlog (nothing
    declared lost), and are written, spill file removed, when space returns."""
    spill = tmp_path / "spill"
    spill.mkdir()
    with tmpfs(tmp_path / "small") as state:
        _b, sub, pub, _got = _stop_while_full(broker, state, "--spill-dir", str(spill), free=False)
        assert (spill / "log-backlog.spill").exists()
        b2 = broker("--spill-dir", str(spill), state=state)  # the disk is still full
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(e.type == "log.write_failed" for e in seen):
            seen.extend(sub.recv_batch(0.3))
        assert any(e.type == "log.write_failed" for e in seen), ([e.type for e in seen], b2.lines[-20:])
        assert (spill / "log-backlog.spill").exists()
        (state / "filler").unlink()
        seq = pub.publish_acked("bus.probe", {"sent_ns": 0, "n": 999, "pad": ""}, timeout=15)
        logged = b2.events()
        seqs = [e.seq for e in logged]
        assert seqs == list(range(1, seqs[-1] + 1)) and seq in seqs
        assert [e.payload["n"] for e in logged if e.type == "bus.probe"] == list(range(300)) + [999]
        assert not any(e.type == "log.gap" for e in logged)
        assert any(e.type == "log.write_recovered" for e in logged)
        assert not (spill / "log-backlog.spill").exists()
        b2.stop()


def test_what_opening_the_log_found_is_said_in_events(broker, tmp_path):
    """A corrupt record in an old sealed segment (found by the background scan at start) and a
    corrupt last record (cut, kept beside its segment, its seq not reused) become events."""
    from lvsbus.log import HEADER_SIZE, SEGMENT_HEADER_SIZE, list_segments, parse_frames

    b = broker("--segment-mb", "0.01")
    pub = client(b, "pub")
    for i in range(120):  # one at a time: a batch goes to one segment
        pub.publish_acked("bus.probe", {"sent_ns": 0, "n": i, "pad": "z" * 400}, timeout=10)
    b.stop()
    segs = list_segments(b.dirs.log)
    assert len(segs) > 4
    assert all(os.path.exists(p[:-4] + ".sum") for _, p in segs[:-1])  # sealed with their whole-file CRC
    old_first, old_seg = segs[1]
    with open(old_seg, "r+b") as f:
        f.seek(SEGMENT_HEADER_SIZE + HEADER_SIZE + 3)
        c = f.read(1)
        f.seek(SEGMENT_HEADER_SIZE + HEADER_SIZE + 3)
        f.write(bytes([c[0] ^ 0x10]))
    last_first, last_seg = segs[-1]
    data = open(last_seg, "rb").read()
    records, _ = parse_frames(data, SEGMENT_HEADER_SIZE)
    last_seq = records[-1][0]
    with open(last_seg, "r+b") as f:
        f.seek(len(data) - 2)
        f.write(b"\xff\xfe")
    b2 = broker("--segment-mb", "0.01", state=tmp_path / "state")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        evs = b2.events_skipping()
        if any(e.type == "log.corrupt_record" and e.payload["segment"] == old_seg for e in evs):
            break
        time.sleep(0.2)
    found = [e for e in evs if e.type == "log.corrupt_record"]
    assert [(e.payload["segment"], e.payload["offset"]) for e in found] == [(old_seg, SEGMENT_HEADER_SIZE)], found
    cut = [e for e in evs if e.type == "log.tail_cut"]
    assert len(cut) == 1 and cut[0].payload["kind"] == "corrupt" and os.path.exists(cut[0].payload["kept_in"])
    gap = [e for e in evs if e.type == "log.gap"]
    assert gap and gap[0].payload["first_lost"] <= last_seq <= gap[0].payload["last_lost"]
    started = [e for e in evs if e.type == "bus.broker_started"][-1]
    assert "corrupt tail cut" in started.payload["recovery"] and started.seq > last_seq
    b2.stop()


def test_a_subscriber_catching_up_goes_past_a_corrupt_record(broker, tmp_path):
    """Issue 19: catch-up from the log used to stop for good at a corrupt record."""
    from lvsbus.log import HEADER_SIZE, SEGMENT_HEADER_SIZE, list_segments, parse_frames

    b = broker()
    pub = client(b, "pub")
    for i in range(30):
        pub.publish("bus.probe", {"sent_ns": 0, "n": i, "pad": "p" * 50})
    pub.publish_acked("bus.probe", {"sent_ns": 0, "n": 30, "pad": ""}, timeout=10)
    b.stop()
    (first, seg), = list_segments(b.dirs.log)
    records, _ = parse_frames(open(seg, "rb").read(), SEGMENT_HEADER_SIZE)
    off = SEGMENT_HEADER_SIZE
    for seq, body in records:
        ev = decode(body, seq)
        if ev.type == "bus.probe" and ev.payload["n"] == 10:
            break
        off += HEADER_SIZE + len(body)
    with open(seg, "r+b") as f:
        f.seek(off + HEADER_SIZE + 4)
        c = f.read(1)
        f.seek(off + HEADER_SIZE + 4)
        f.write(bytes([c[0] ^ 0x08]))
    b2 = broker(state=tmp_path / "state")
    sub = client(b2, "late", subs=("bus.probe",), from_seq=1)
    pub.publish_acked("bus.probe", {"sent_ns": 0, "n": 31, "pad": ""}, timeout=10)
    got = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not got or got[-1].payload["n"] != 31):
        got.extend(sub.recv_batch(0.3))
    assert [e.payload["n"] for e in got] == [n for n in range(32) if n != 10]
    b2.stop()


def test_log_stats_carry_the_append_and_commit_latency(broker):
    """bus.log_stats: histograms of the log's append (one write a batch) and commit (until fsynced)
    latency, recorded while the log is written, quiet while nothing else is; metrics folds them."""
    from lvsbus_services.metrics.fold import Metrics, render

    b = broker("--log-stats-s", "0.3")
    sub = client(b, "sub", subs=("bus.log_stats",))
    p = client(b, "p")
    for c in (sub, p):
        wait_joined(c)
    for i in range(40):  # acked one at a time: each its own append and its own wait for the fsync
        p.publish_acked("timer.fired", {"service": "s", "deadline_ns": i})
    p.publish_many([("timer.fired", {"service": "s", "deadline_ns": i}) for i in range(500)], ack=True)
    first = sub.recv(5)
    assert first is not None and first.type == "bus.log_stats" and first.source == "broker"
    time.sleep(1.0)  # three periods with nothing appended but the stats themselves
    stats = [e for e in b.events() if e.type == "bus.log_stats"]
    assert 1 <= len(stats) <= 3, [e.seq for e in stats]  # then quiet: an idle bus records nothing
    last_seq = b.events()[-1].seq
    for e in stats:
        s = e.payload
        assert s["durability"] == "group" and len(s["bounds_ns"]) + 1 == len(s["append_buckets"]) == len(s["commit_buckets"])
        assert sum(s["append_buckets"]) == s["append_count"] and sum(s["commit_buckets"]) == s["commit_count"]
        assert s["period_ms"] >= 250
    total = {k: sum(e.payload[k] for e in stats) for k in ("records", "append_count", "append_sum_ns", "commit_count",
                                                            "commit_sum_ns")}
    assert total["records"] >= 540 and total["records"] <= last_seq
    assert 41 <= total["append_count"] < total["records"]  # the 500 went in a few batches
    assert total["commit_count"] >= 41
    append_mean = total["append_sum_ns"] / total["append_count"]
    commit_mean = total["commit_sum_ns"] / total["commit_count"]
    assert 500 < append_mean < 50e6, append_mean  # a write: microseconds, not nothing, not seconds
    assert append_mean < commit_mean < 1e9, (append_mean, commit_mean)  # + the group fsync (~1 ms interval)
    print(f"log stats: {total}; append mean {append_mean / 1e3:.1f} us, commit mean {commit_mean / 1e3:.1f} us")
    # folded by metrics into Prometheus histograms
    m = Metrics()
    for e in b.events():
        m.apply(e)
    text = render(m.samples())
    assert f"lvsbus_log_append_seconds_count {total['append_count']:.1f}" in text
    assert f"lvsbus_log_commit_seconds_count {total['commit_count']:.1f}" in text
    assert f"lvsbus_log_records_total {total['records']:.1f}" in text
    assert "# TYPE lvsbus_log_append_seconds histogram" in text
