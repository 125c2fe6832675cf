"""What a client may send the broker, and what readers do with a record they cannot decode.

Found by fuzzing (issue 19): one frame stopped the broker; a version of true or 1.0 was acked and
logged, then refused by every reader; one frame of a million bad items held the bus back for
seconds; settings that break the broker were taken; ``events tail`` never noticed a stopped broker.
bench/fuzz_bus.py runs the same generators at a million frames.
"""
from __future__ import annotations

import importlib.util
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.bus import Broker, BusClient, PublishRefused
from lvsbus.bus.client import _ClientCore
from lvsbus.wire.events import REGISTRY, DecodeError, Event, decode
from lvsbus.log import Durability, EventLog, LogReader, frame
from lvsbus.host.paths import StateDirs
from lvsbus.wire.schema import Enum, Float, Int, Json, SchemaError
from tests.helpers.procs import BrokerProc, broker, client, wait_joined  # noqa: F401  (broker: the fixture)

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("fuzz_bus", ROOT / "bench" / "fuzz_bus.py")
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)

TIMER = {"service": "s", "deadline_ns": 1}


def raw_socket(b: BrokerProc, hello: bool = True) -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVHWM, 100_000)
    s.setsockopt(zmq.SNDTIMEO, 10_000)  # a dead broker fails the test, not hangs it
    s.connect("ipc://" + b.dirs.run + "/bus.sock")
    if hello:
        s.send_multipart([b"H", msgpack.packb({"name": "raw", "subs": [], "pid": 1})])
    return s


def replies(sock: zmq.Socket, until_ack: int | None = None, timeout: float = 10.0) -> list[list[bytes]]:
    """Messages from the broker, up to the A of ``until_ack`` (or until quiet for 0.3 s)."""
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sock.poll(300):
            if until_ack is None:
                break
            continue
        msg = sock.recv_multipart()
        out.append(msg)
        if until_ack is not None and msg[0] == b"A" and msgpack.unpackb(msg[1])[0] == until_ack:
            return out
    assert until_ack is None, f"no ack for {until_ack} within {timeout}s"
    return out


def acked_publish(sock: zmq.Socket, ack_id: int, payload=TIMER) -> list[list[bytes]]:
    sock.send_multipart([b"P", b"raw", msgpack.packb([ack_id, [["timer.fired", 1, None, payload]], b"nonce-ab"])])
    return replies(sock, until_ack=ack_id)


def every_reader_decodes(log_dir: str) -> int:
    n, bad = fuzz.check_log(log_dir)
    assert not bad, bad[:5]
    return n


# -- the registry and the schema: exact types ----------------------------------------------------

ODD = [None, True, False, 1.0, 1.5, "1", b"1", [], [1], {}, {"a": 1}, msgpack.ExtType(1, b""), fuzz._deep(900)]


@pytest.mark.parametrize("version", ODD, ids=lambda v: type(v).__name__)
def test_a_version_of_any_other_kind_is_a_decode_error_never_a_type_error(version):
    with pytest.raises(DecodeError) as e:
        REGISTRY.validate("timer.fired", version, TIMER)
    assert e.value.reason == "malformed" and "version" in e.value.detail


@pytest.mark.parametrize("type_", [v for v in ODD if v != "1"], ids=lambda v: type(v).__name__)
def test_a_type_of_any_other_kind_is_a_decode_error_never_a_type_error(type_):
    with pytest.raises(DecodeError) as e:
        REGISTRY.validate(type_, 1, TIMER)
    assert e.value.reason == "malformed"


def test_payload_checks_take_no_bool_for_an_int_nor_a_float_for_an_int():
    for bad in (True, False, 1.0, 2.5):
        with pytest.raises(DecodeError):
            REGISTRY.validate("timer.fired", 1, {"service": "s", "deadline_ns": bad})
        with pytest.raises(SchemaError):
            Int().check(bad, "x")
    with pytest.raises(SchemaError):
        Float().check(True, "x")
    Float().check(1, "x")  # documented: msgpack keeps 1 and 1.0 apart, JSON does not


def test_error_messages_of_deep_or_huge_values_are_short_and_never_recurse():
    deep = fuzz._deep(900)  # its repr recurses past Python's limit
    for check in (lambda: Enum("a", "b").check(deep, "p"), lambda: Json().check({"k": deep}, "p"),
                  lambda: Int().check(deep, "p")):
        with pytest.raises(SchemaError) as e:
            check()
        assert len(str(e.value)) < 300
    with pytest.raises(DecodeError) as e:
        REGISTRY.validate("x" * 1_000_000, 1, {})
    assert len(str(e.value)) < 400
    with pytest.raises(DecodeError):
        decode(msgpack.packb([1, 1, "n", "s", "timer.fired", deep, 1, 1, None, TIMER]), 1)


# -- the broker: nothing a client sends stops it; what it stores, every reader takes --------------

def test_no_type_or_version_of_any_msgpack_kind_stops_the_broker_or_reaches_the_log(broker):
    b = broker()
    sock = raw_socket(b)
    sent = 0
    for v in ODD + [2**64 - 1, -(2**63), float("nan"), "timer.fired"]:
        for item in (["timer.fired", v, None, TIMER], [v, 1, None, TIMER], ["timer.fired", 1, v, TIMER]):
            if item[:2] == ["timer.fired", 1] and (item[2] is None or (type(item[2]) is int and item[2] >= 1)):
                continue  # a valid item (a cause of 2**64 - 1 is one)
            sock.send_multipart([b"P", b"raw", msgpack.packb([7, [item]])])
            sent += 1
    got = acked_publish(sock, 8)
    refusals = [msgpack.unpackb(m[1]) for m in got if m[0] == b"R"]
    assert b.proc.poll() is None, "the broker stopped"
    assert len(refusals) == sent, f"{sent - len(refusals)} odd items were not refused"
    assert all(r[0] == 7 for r in refusals)
    events = b.events()  # decodes every record, carefully
    assert [e.payload for e in events if e.type == "timer.fired"] == [TIMER]  # only the legitimate one
    every_reader_decodes(b.dirs.log)


def test_a_version_of_true_or_one_point_zero_is_refused_not_acked(broker):
    b = broker()
    c = client(b, "c")
    for version in (True, 1.0):
        with pytest.raises(PublishRefused) as e:
            c.publish_acked("timer.fired", TIMER, version=version, timeout=5)
        assert e.value.reason == "malformed"
    with pytest.raises(PublishRefused):
        c.publish_acked("timer.fired", {"service": "s", "deadline_ns": True}, timeout=5)
    with pytest.raises(PublishRefused):
        c.publish_acked("timer.fired", TIMER, cause=True, timeout=5)
    assert c.publish_acked("timer.fired", TIMER, timeout=5) >= 1
    every_reader_decodes(b.dirs.log)


def test_one_frame_of_many_bad_items_costs_one_refusal_and_the_bus_stays_prompt(broker):
    from lvsbus.bus import MAX_BAD_ITEMS

    b = broker()
    sock = raw_socket(b)
    n = 200_000
    body = msgpack.packb([5, [["timer.fired", 1, None, TIMER]] + [["timer.fired", 1, None, {}]] * (n - 1)])
    assert len(body) > 1_000_000
    t0 = time.monotonic()
    sock.send_multipart([b"P", b"raw", body])
    got = acked_publish(sock, 6)
    took = time.monotonic() - t0
    refusals = [msgpack.unpackb(m[1]) for m in got if m[0] == b"R"]
    assert len(refusals) == 1, f"{len(refusals)} replies for one frame"
    ack_id, reason, detail = refusals[0]
    assert (ack_id, reason) == (5, "bad_payload")
    assert f"item 1 of {n}" in detail and f"{n - 2} more" in detail and f"{n - 1 - MAX_BAD_ITEMS} past" in detail, detail
    assert [msgpack.unpackb(m[1])[0] for m in got if m[0] == b"A"] == [5, 6]  # its good item was recorded and acked
    events = b.events()
    rejected = [e for e in events if e.type == "bus.frame_rejected"]
    assert len(rejected) == 1 and rejected[0].payload["count"] == n - 1
    deadline = time.monotonic() + 5  # the broker's stderr is read by a thread: its line may still be on its way
    while not any("frame_rejected" in line for line in b.lines) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # and no second one follows
    assert sum(1 for line in b.lines if "frame_rejected" in line) == 1
    assert took < 3, f"an acked publish behind the frame took {took:.1f}s"
    every_reader_decodes(b.dirs.log)


def test_a_frame_of_four_million_tiny_bad_items_is_walked_not_built(broker):
    """msgpack builds 4M empty lists in seconds (8 s measured here under load); the broker walks
    the frame in C and builds only the items it examines."""
    from lvsbus.bus import MAX_FRAME

    b = broker()
    sock = raw_socket(b)
    body = msgpack.packb([3, [[]] * 4_000_000, b"nonce-xy"])
    assert len(body) < MAX_FRAME
    acked_publish(sock, 1)  # the broker is there and knows us
    t0 = time.monotonic()
    sock.send_multipart([b"P", b"raw", body])
    got = acked_publish(sock, 4)
    took = time.monotonic() - t0
    refusals = [msgpack.unpackb(m[1]) for m in got if m[0] == b"R"]
    assert len(refusals) == 1 and refusals[0][0] == 3 and "item 0 of 4000000" in refusals[0][2]
    assert took < 2.5, f"an acked publish behind the frame took {took:.1f}s"


def test_a_flood_of_bad_frames_is_counted_but_its_events_are_rate_limited(broker):
    from lvsbus.bus import REJECT_EVENTS_PER_S

    b = broker()
    sock = raw_socket(b)
    n = 3 * REJECT_EVENTS_PER_S
    t0 = time.monotonic()
    for _ in range(n):
        sock.send_multipart([b"P", b"raw", msgpack.packb([0, [["no.such", 1, None, {}]]])])
    got = acked_publish(sock, 1)
    took = time.monotonic() - t0
    assert sum(1 for m in got if m[0] == b"R") == n  # every sender is told
    rejected = [e for e in b.events() if e.type == "bus.frame_rejected"]
    assert len(rejected) <= REJECT_EVENTS_PER_S * (math.ceil(took) + 1) and len(rejected) < n
    time.sleep(1.1)  # the next refusal carries the count of all, also those left unrecorded
    sock.send_multipart([b"P", b"raw", msgpack.packb([0, [["no.such", 1, None, {}]]])])
    acked_publish(sock, 2)
    last = [e for e in b.events() if e.type == "bus.frame_rejected"][-1]
    assert last.payload["count"] == n + 1


def test_a_storm_of_malformed_frames_then_a_prompt_ack_and_every_reader_decodes_the_log(broker):
    """Seeded generator (bench/fuzz_bus.py): thousands of malformed frames of every shape at a real
    broker, with a live subscriber; after the storm a legitimate acked publish goes through at once,
    and every record of the log decodes for the subscriber, a late subscriber's catch-up and replay's path."""
    b = broker()
    live = client(b, "live", subs=("",))
    wait_joined(live)
    sock = raw_socket(b)
    rnd = random.Random(19)
    seeds = fuzz.SEEDS + fuzz.golden_seeds(str(ROOT / "tests" / "fixtures" / "logs"))[:40]
    seeds = [s for s in seeds if fuzz._valid(REGISTRY, s)]
    for i in range(4000):
        sock.send_multipart(fuzz.frames(rnd, seeds))
        if i % 1000 == 999:
            sock.send_multipart([b"P", b"evil", fuzz.big_publish_body(rnd, seeds, 300_000)])
    replies(sock)
    assert b.proc.poll() is None
    pub = client(b, "pub")
    t0 = time.monotonic()
    last = pub.publish_acked("timer.fired", TIMER, timeout=10)
    assert time.monotonic() - t0 < 2.0, "the acked publish waited behind the storm"
    got: list[Event] = []
    deadline = time.monotonic() + 20
    while (not got or got[-1].seq < last) and time.monotonic() < deadline:
        got.extend(live.recv_batch(0.5))
    assert got and got[-1].seq == last and live.core.undecodable == 0
    n = every_reader_decodes(b.dirs.log)
    late = BusClient(b.dirs.run, "late", subs=("",), log_dir=b.dirs.log, from_seq=1)
    caught: list[Event] = []
    deadline = time.monotonic() + 20
    while (not caught or caught[-1].seq < last) and time.monotonic() < deadline:
        caught.extend(late.recv_batch(0.5))
    assert [e.seq for e in caught][:last] == list(range(1, last + 1)) and late.core.undecodable == 0
    assert n >= last
    assert not any("Traceback" in line or "frame_failed" in line for line in b.lines)


def test_a_raise_while_handling_a_frame_refuses_it_and_the_broker_goes_on(tmp_path, monkeypatch):
    dirs = StateDirs(str(tmp_path / "s")).make()
    br = Broker("n1", dirs.run, dirs.log, Durability("none"))
    try:
        def boom(*a, **k):
            raise TypeError("unhashable type: 'list'")

        monkeypatch.setattr(br, "_on_message", boom)
        br._draining = True
        br._on_message_guarded(br.sock, [b"\0abc", b"P", b"x", b"y"], False)
        br._draining = False
        br._flush()
        assert br.stats.failed_frames == 1 and br.stats.rejected == 1
    finally:
        br.close()
    evs = [decode(body, seq) for seq, body in LogReader(dirs.log).read(1)]
    assert [e.type for e in evs] == ["bus.broker_started", "bus.frame_rejected", "bus.broker_stopping"]
    assert "failed on this frame (TypeError)" in evs[1].payload["detail"]
    assert evs[2].payload["reason"] == "stop requested"


def test_a_crash_of_the_broker_is_recorded_as_a_crash_with_its_reason(tmp_path, monkeypatch):
    dirs = StateDirs(str(tmp_path / "s")).make()
    br = Broker("n1", dirs.run, dirs.log, Durability("none"))

    def boom():
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(br, "_tick", boom)
    with pytest.raises(RuntimeError):
        br.run()
    evs = [decode(body, seq) for seq, body in LogReader(dirs.log).read(1)]
    assert evs[-1].type == "bus.broker_stopping"
    assert evs[-1].payload["reason"] == "crashed: RuntimeError: disk on fire"
    assert not os.path.exists(os.path.join(dirs.run, "bus.sock"))


# -- readers and a record they cannot decode (written by an older broker) --------------------------

def _poison_log(log_dir: str) -> None:
    """seq 1 good, seq 2 poison (version true: an old broker took it), seq 3 good."""
    def body(seq, version):
        return msgpack.packb([1, seq, "n1", "evil", "timer.fired", version, seq, seq, None, TIMER])

    with EventLog(log_dir, durability=Durability("none")) as log:
        log.append_batch([(1, body(1, 1)), (2, body(2, True)), (3, body(3, 1))])


def test_a_subscriber_skips_an_undecodable_record_by_seq_live_and_in_catch_up(tmp_path):
    log_dir = str(tmp_path / "log")
    _poison_log(log_dir)
    records = list(LogReader(log_dir).read(1))
    with pytest.raises(DecodeError):
        decode(records[1][1], 2)
    # live: one delivery frame holding all three
    core = _ClientCore("c", ("",), log_dir, None)
    evs, _ = core.handle([b"D", b"".join(frame(s, body) for s, body in records)])
    assert [e.seq for e in evs] == [1, 3] and core.undecodable == 1 and core.skipped[0][0] == 2
    assert core.last_delivered == 3
    # catch-up from the log
    core = _ClientCore("late", ("",), log_dir, 1)
    evs, _ = core.handle([b"T", msgpack.packb(["e", 3])])
    assert [e.seq for e in evs] == [1, 3] and core.undecodable == 1 and core.gap_from is None


def test_events_tail_names_an_undecodable_record_and_goes_on(tmp_path, broker):
    state = tmp_path / "state"
    _poison_log(str(StateDirs(str(state)).make().log))
    b = broker(state=state)
    r = subprocess.run([sys.executable, "-m", "lvsbus.cli", "events", "tail", "--state-dir", str(state), "--from", "1",
                        "--count", "3", "--timeout", "5"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "#2 does not decode, skipped" in r.stderr and "Traceback" not in r.stderr
    lines = r.stdout.splitlines()
    assert "#1 " in lines[0] and "#3 " in lines[1] and "bus.broker_started" in lines[2]
    b.stop()


def test_replay_goes_past_an_undecodable_record_and_names_it(tmp_path):
    from lvsbus_tools.replay import verify

    log_dir = str(tmp_path / "log")
    _poison_log(log_dir)
    rep = verify(log_dir)
    assert [d.seq for d in rep.divergences] == [2] and "undecodable record" in rep.divergences[0].reason
    assert rep.events == 2 and rep.last_seq == 3 and rep.undecodable == 1  # and on past it


# -- the command line ----------------------------------------------------------------------------

def _cli(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lvsbus.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("extra, says", [
    (["--node", ""], "node name must be 1-64 characters"),
    (["--node", "n" * 65], "node name must be 1-64 characters"),
    (["--node", "ok", "--segment-mb", "-1"], "--segment-mb -1.0: must be a positive number"),
    (["--node", "ok", "--segment-mb", "0"], "--segment-mb 0.0"),
    (["--node", "ok", "--segment-mb", "nan"], "--segment-mb nan"),
    (["--node", "ok", "--segment-mb", "0.0001"], "segment size must be at least 4096 bytes"),
    (["--node", "ok", "--retain-days", "-2"], "--retain-days -2.0"),
])
def test_the_broker_refuses_settings_that_break_it(tmp_path, extra, says):
    r = _cli("broker", "--state-dir", str(tmp_path / "s"), *extra)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and says in r.stderr, r.stderr


def test_the_broker_refuses_a_foreign_file_named_like_a_segment_and_leaves_it_alone(tmp_path):
    log_dir = StateDirs(str(tmp_path / "s")).make().log
    foreign = Path(log_dir) / "00000000000000000001.seg"
    foreign.write_bytes(b"my holiday photos " * 100)
    r = _cli("broker", "--node", "ok", "--state-dir", str(tmp_path / "s"))
    assert r.returncode == 2 and "is not a segment of an lvsbus log" in r.stderr and r.stderr.count("\n") == 1
    assert foreign.read_bytes() == b"my holiday photos " * 100
    # a torn creation (a prefix of the header) is still the log's to repair
    foreign.write_bytes(b"LVSB")
    from lvsbus.bus import check_broker_settings

    check_broker_settings("ok", log_dir, 1 << 20)


def test_events_tail_says_a_cleanly_stopped_broker_is_gone(broker):
    b = broker()
    tail = subprocess.Popen([sys.executable, "-m", "lvsbus.cli", "events", "tail", "--state-dir", b.dirs.root],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        b.stop()
        out, err = tail.communicate(timeout=20)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 1 and "the broker is gone" in err, err
    assert "Traceback" not in err
    r = _cli("events", "tail", "--state-dir", b.dirs.root, "--timeout", "1")
    assert r.returncode == 1 and "no broker at" in r.stderr


def test_events_tail_with_a_timeout_says_a_dead_broker_is_gone(broker):
    b = broker()
    b.kill()  # SIGKILL: the socket file stays
    assert os.path.exists(os.path.join(b.dirs.run, "bus.sock"))
    r = _cli("events", "tail", "--state-dir", b.dirs.root, "--timeout", "1")
    assert r.returncode == 1 and "the broker is gone" in r.stderr, (r.returncode, r.stderr)


def test_events_emit_refuses_an_unknown_type_or_bad_json_in_one_line(tmp_path):
    for args, says in ((["no.such", "{}"], "unknown event type 'no.such'"),
                       (["timer.fired", "{bad"], "the payload is not JSON"),
                       (["timer.fired", "[1]"], "must be a JSON object")):
        r = _cli("events", "emit", "--state-dir", str(tmp_path), *args)
        assert r.returncode == 2 and says in r.stderr and r.stderr.count("\n") == 1, r.stderr


# -- pulse: datagrams ------------------------------------------------------------------------------

def test_pulse_datagrams_of_every_kind_are_refused_with_a_reason_never_raised():
    """Seeded: random bytes, bit flips (all refused), cuts, and bodies under a valid MAC, through
    the wire decoder and pulse's shell, whose observations must pass the catalog."""
    c = fuzz.fuzz_pulse(20_000, seed=19)
    assert c["datagram_crashes"] == 0, c["datagram_crash_first"]
    assert c["flips_undetected"] == 0
    assert c["bad_observations"] == 0, c["bad_observation_first"]
    assert c["datagram_refused"] > 15_000 and c["datagram_accepted"] > 500


def test_a_restarting_service_recovers_past_an_undecodable_record(tmp_path):
    """A service restarting from the log (ServiceRuntime.recover) used to raise on it, every time:
    a restart loop, then the router steps down."""
    from lvsbus.runtime.engine import ServiceRuntime
    from tests.helpers.counter_core import Counter

    dirs = StateDirs(str(tmp_path / "s")).make()

    def body(seq, version, n):
        return msgpack.packb([1, seq, "n1", "p", "bus.probe", version, seq, seq, None, {"sent_ns": 0, "n": n, "pad": ""}])

    with EventLog(dirs.log, durability=Durability("none")) as log:
        log.append_batch([(1, body(1, 1, 0)), (2, body(2, True, 1)), (3, body(3, 1, 2))])
    rt = ServiceRuntime(Counter(), dirs)
    assert rt.recover() == 4
    assert rt.state["count"] == 2  # the two probes that decode; the one in between skipped


def test_log_check_names_a_record_that_does_not_decode(tmp_path):
    log_dir = str(tmp_path / "log")
    _poison_log(log_dir)
    r = _cli("log", "check", log_dir)
    assert r.returncode == 1 and "#2 does not decode" in r.stdout and "Traceback" not in r.stderr, (r.stdout, r.stderr)
