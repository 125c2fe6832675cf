"""An effect never runs without its record (issue 19): crash the broker, the service or both at
each step of a decision (its outputs sent, not acknowledged; acknowledged, no effect run; one
effect run of several), with real processes and SIGKILL, driven by the runtime's fault point
(``LVSBUS_FAULT``), then check the log against the world (the effects the shell ran)."""
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from lvsbus.bus import BusClient
from lvsbus.runtime.core import run_core
from lvsbus.wire.events import decode
from lvsbus.log import LogReader
from lvsbus.host.paths import StateDirs
from tests.helpers.procs import Proc
from tests.helpers.toy_service import Toy

@pytest.fixture
def procs():
    started: list[Proc] = []

    def make(argv, ready, env=None):
        p = Proc(argv, ready, env).start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.kill()


def _log(dirs):
    return [decode(b, s) for s, b in LogReader(dirs.log).read(1)]


def _check(dirs: StateDirs, effects_file: Path, probes: int, every_output_ran: bool) -> None:
    evs = _log(dirs)
    assert [e.seq for e in evs] == list(range(1, len(evs) + 1))
    # the log answers each input exactly once, with what the core computes (replay --verify's rule)
    inputs = [e for e in evs if e.type == "bus.probe"]
    assert len(inputs) == probes
    want = [(step.event.seq, eff.type, eff.payload) for _s, step in run_core(Toy(), Toy().initial(), inputs)
            for eff in step.effects]
    got = [(e.seq, e.cause, e.type, e.payload) for e in evs if e.source == "toy" and e.type.startswith("test.toy_")]
    assert [(c, t, p) for _s, c, t, p in got] == want, "each output recorded once, in order"
    for (seq, cause, _t, _p) in got:
        assert seq > cause
    # the world: every effect that ran is in the log, and ran once
    ran = [line.split(" ", 2) for line in effects_file.read_text().splitlines()]
    ran = [(int(c), t, json.loads(p)) for c, t, p in ran]
    assert len(ran) == len(set(map(repr, ran))), "an effect ran twice"
    logged = {(c, t, repr(p)) for c, t, p in want}
    missing = [r for r in ran if (r[0], r[1], repr(r[2])) not in logged]
    assert not missing, f"effects that ran without their record: {missing}"
    if every_output_ran:
        assert len(ran) == len(want)


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _probes_3_to_5_answered_and_run(pub: BusClient, dirs: StateDirs, effects: Path) -> None:
    """Publish probes 3..5 (acknowledged), wait for the service's answer to the last one in the
    log and for both of its effects in the world."""
    for i in range(3, 6):
        pub.publish_acked("bus.probe", {"sent_ns": 0, "n": i, "pad": ""}, timeout=15)

    def answered():
        evs = _log(dirs)
        probes = [e.seq for e in evs if e.type == "bus.probe"]
        return len(probes) == 6 and any(e.cause == probes[-1] and e.source == "toy" for e in evs)

    _wait(answered, 20, "the service never answered every probe")
    last = [e.seq for e in _log(dirs) if e.type == "bus.probe"][-1]
    _wait(lambda: sum(ln.startswith(f"{last} ") for ln in effects.read_text().splitlines()) >= 2, 10,
          "the last probe's effects never ran")


@pytest.mark.parametrize("point", ["published", "acked", "executed"])
@pytest.mark.parametrize("kill", ["broker", "service", "both"])
def test_a_crash_at_any_step_leaves_no_effect_without_its_record(procs, tmp_path, point, kill):
    dirs = StateDirs(str(tmp_path / "state")).make()
    effects = tmp_path / "effects"
    effects.touch()
    fault = tmp_path / "fault"
    broker_argv = [sys.executable, "-m", "tests.helpers.toy_service", "broker", dirs.root]
    svc_argv = [sys.executable, "-m", "tests.helpers.toy_service", "service", dirs.root, str(effects)]
    env = {"LVSBUS_FAULT": f"toy:test.toy_marked:{point}:{fault}"}
    broker = procs(broker_argv, "broker ready")
    svc = procs(svc_argv, "toy running", env)
    pub = BusClient(dirs.run, "prober")
    try:
        for i in range(3):
            pub.publish_acked("bus.probe", {"sent_ns": 0, "n": i, "pad": ""}, timeout=10)
        _wait(fault.exists, 20, "the fault point was never reached")
        if kill in ("broker", "both"):
            broker.kill()
        if kill in ("service", "both"):
            svc.kill()
        fault.unlink()
        time.sleep(0.1)
        if kill in ("broker", "both"):
            broker = procs(broker_argv, "broker ready")
        if kill in ("service", "both"):
            svc = procs(svc_argv, "toy running", env)
        _probes_3_to_5_answered_and_run(pub, dirs, effects)
        svc.stop()
    finally:
        pub.close()
    broker.stop()
    # with the service alive throughout, every recorded output's effect ran (exactly once); a
    # killed service leaves the outputs it had recorded and not run to its shell's reconciliation
    _check(dirs, effects, 6, every_output_ran=(kill == "broker"))


@pytest.mark.parametrize("point", ["before_write", "after_write"])
def test_a_broker_killed_with_a_decision_half_recorded_loses_nothing_and_repeats_nothing(procs, tmp_path, point):
    """The broker dies (its own fault point) having received a step's outputs and not written them
    (they are lost: the service sends them again) or written them and not acknowledged them (the
    service finds them in the log: not sent again). Either way each is recorded once, and runs
    once, after its record."""
    dirs = StateDirs(str(tmp_path / "state")).make()
    effects = tmp_path / "effects"
    effects.touch()
    broker_argv = [sys.executable, "-m", "tests.helpers.toy_service", "broker", dirs.root]
    broker = procs(broker_argv, "broker ready", {"LVSBUS_BROKER_FAULT": f"{point}:test.toy_marked"})
    svc = procs([sys.executable, "-m", "tests.helpers.toy_service", "service", dirs.root, str(effects)], "toy running")
    pub = BusClient(dirs.run, "prober")
    try:
        for i in range(2):
            pub.publish_acked("bus.probe", {"sent_ns": 0, "n": i, "pad": ""}, timeout=10)
        # not waited for: the broker may die before it acknowledges this one (it is written)
        pub.publish("bus.probe", {"sent_ns": 0, "n": 2, "pad": ""})
        _wait(lambda: broker.proc.poll() is not None, 10, "the broker's fault point was never reached")
        assert broker.proc.returncode == -signal.SIGKILL
        third = [e.seq for e in _log(dirs) if e.type == "bus.probe"][2]
        time.sleep(0.3)
        ran = effects.read_text()
        assert not [ln for ln in ran.splitlines() if ln.startswith(f"{third} ")], "an effect ran without its ack"
        broker = procs(broker_argv, "broker ready")
        _probes_3_to_5_answered_and_run(pub, dirs, effects)
        svc.stop()
    finally:
        pub.close()
    broker.stop()
    _check(dirs, effects, 6, every_output_ran=True)
    lines = "".join(svc.lines)
    assert "publishes_reconciled" in lines
    import re

    line = next(x for x in lines.splitlines() if "publishes_reconciled" in x)
    recorded, resent = (int(re.search(rf'"?{k}"?[=:] ?(\d+)', line).group(1)) for k in ("recorded", "resent"))
    if point == "before_write":
        assert recorded == 0 and resent >= 3, line  # lost with the broker: sent again
    else:
        assert recorded >= 3 and resent == 0, line  # in the log already: not sent again


def test_no_effect_of_a_step_runs_before_its_batch_is_acknowledged(procs, tmp_path):
    """The fault point at ``published`` comes before any effect: nothing of that step has run."""
    dirs = StateDirs(str(tmp_path / "state")).make()
    effects = tmp_path / "effects"
    effects.touch()
    fault = tmp_path / "fault"
    procs([sys.executable, "-m", "tests.helpers.toy_service", "broker", dirs.root], "broker ready")
    procs([sys.executable, "-m", "tests.helpers.toy_service", "service", dirs.root, str(effects)], "toy running",
          {"LVSBUS_FAULT": f"toy:test.toy_marked:published:{fault}"})
    pub = BusClient(dirs.run, "prober")
    try:
        for i in range(3):
            pub.publish_acked("bus.probe", {"sent_ns": 0, "n": i, "pad": ""}, timeout=10)
        _wait(fault.exists, 20, "the fault point was never reached")
        third = [e.seq for e in _log(dirs) if e.type == "bus.probe"][2]
        time.sleep(0.3)
        assert not [ln for ln in effects.read_text().splitlines() if ln.startswith(f"{third} ")], \
            "an effect of the step ran before its batch was acknowledged"
        fault.unlink()
    finally:
        pub.close()


def test_a_batch_sent_twice_under_its_ack_id_is_recorded_once_whatever_came_between(procs, tmp_path):
    """A client's batch queued in its socket reaches a new broker, then the client's resend of it
    (same nonce and ack id): the broker records it once and acknowledges both with its seqs, also
    when a later batch of the same client came in between (it remembers ack ids, not the highest)."""
    import msgpack
    import zmq

    dirs = StateDirs(str(tmp_path / "state")).make()
    procs([sys.executable, "-m", "tests.helpers.toy_service", "broker", dirs.root], "broker ready")
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"ipc://{dirs.run}/bus.sock")
    nonce = os.urandom(8)

    def send(ack_id, n):
        item = ["bus.probe", 1, None, {"sent_ns": 0, "n": n, "pad": ""}]
        s.send_multipart([b"P", b"t", msgpack.packb([ack_id, [item], nonce], use_bin_type=True)])

    def acks(k):
        got = {}
        deadline = time.monotonic() + 10
        while len(got) < k and time.monotonic() < deadline:
            if s.poll(100):
                frames = s.recv_multipart()
                if frames[0] == b"A":
                    a, first, last = msgpack.unpackb(frames[1])
                    got.setdefault(a, []).append((first, last))
        return got

    try:
        send(5, 5)
        send(6, 6)
        send(5, 5)  # the resend of 5 after 6 was recorded
        got = acks(2)
        time.sleep(0.2)
        got2 = acks(1) if len(got.get(5, [])) < 2 else {}
        for a, v in got2.items():
            got.setdefault(a, []).extend(v)
    finally:
        s.close()
    probes = [e for e in _log(dirs) if e.type == "bus.probe"]
    assert [e.payload["n"] for e in probes] == [5, 6]
    assert got[5] == [(probes[0].seq, probes[0].seq)] * 2 and got[6] == [(probes[1].seq, probes[1].seq)]


def test_a_publish_lost_with_the_old_broker_is_sent_again_though_a_later_one_reached_the_new_broker(tmp_path):
    """The old broker recorded A (and two items of three of a batch), then died with B unread; C
    was sent after it died and the new broker recorded it before our hello. On the new epoch, B
    alone is sent again, and of the batch only its missing item. Before: 'a crash loses a suffix', so
    every item up to the last one found (C) counted as recorded: B was never recorded, its future
    resolved as durable (an effect would run without its record), and a lost ``timer.fired``
    stalled pulse until its next input (a heartbeat 100 ms late across a broker kill)."""
    import asyncio

    import msgpack

    from lvsbus.bus import AsyncBusClient
    from lvsbus.bus.async_client import _Outgoing
    from lvsbus.log import Durability, EventLog

    dirs = StateDirs(str(tmp_path / "s")).make()

    def timer(n: int) -> list:
        return ["timer.fired", 1, None, {"service": "pulse", "deadline_ns": n}]

    def rec(seq: int, source: str, item: list) -> tuple[int, bytes]:
        return seq, msgpack.packb([1, seq, "n1", source, item[0], item[1], seq, seq, item[2], item[3]])

    with EventLog(dirs.log, durability=Durability("none")) as log:
        log.append_batch([rec(1, "pulse", timer(1)), rec(2, "pulse", timer(11)), rec(3, "pulse", timer(13)),
                          rec(4, "broker", ["bus.client_joined", 1, None, {"client": "x", "subscriptions": [], "pid": 1}]),
                          rec(5, "pulse", timer(3))])

    async def main():
        c = AsyncBusClient(dirs.run, "pulse", log_dir=dirs.log)
        sent: list[list] = []
        c._send = lambda frames: sent.append(msgpack.unpackb(frames[2])[:2])
        loop = asyncio.get_running_loop()
        batches = [[timer(1)], [timer(11), timer(12), timer(13)], [timer(2)], [timer(3)]]
        outs = [_Outgoing(i + 1, items, 0, "old", loop.create_future()) for i, items in enumerate(batches)]
        c._unacked = {o.ack_id: o for o in outs}
        c.core.epoch = "new"
        c._reconcile()
        c.close()
        return sent, outs

    sent, outs = asyncio.run(main())
    assert sent == [[2, [timer(12)]], [3, [timer(2)]]]
    assert [o.future.done() for o in outs] == [True, False, False, True]
    assert outs[0].future.result() == (1, 1) and outs[3].future.result() == (5, 5)
    assert outs[1].found == (2, 3)  # its ack, for 12 alone, will resolve it as (2, its seq)
