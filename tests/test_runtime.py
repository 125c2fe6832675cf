"""ServiceRuntime: a core on a real bus (broker thread, real sockets and log), timers, restart without repeats."""
import asyncio
import threading

import pytest

from lvsbus.bus import Broker, BusClient
from lvsbus.core import Core, Effect
from lvsbus.events import REGISTRY, decode
from lvsbus.log import Durability, LogReader
from lvsbus.paths import StateDirs
from lvsbus.runtime import ServiceRuntime
from lvsbus.schema import Int

if "test.counted" not in REGISTRY:
    REGISTRY.declare("test.counted", 1, {"count": Int()}, doc="test only")


class Counter(Core):
    name = "counter"
    inputs = ("bus.probe",)
    outputs = frozenset({"test.counted"})

    def initial(self):
        return {"count": 0, "deadline": None}

    def decide(self, state, ev):
        state = dict(state)
        if ev.type == "timer.fired":
            if state["deadline"] is not None and ev.mono_ns >= state["deadline"]:
                state["deadline"] = None
                return state, [Effect("test.counted", {"count": -1})]
            return state, []
        state["count"] += 1
        if state["count"] == 3:
            state["deadline"] = ev.mono_ns + 50_000_000
        return state, [Effect("test.counted", {"count": state["count"]})]

    def next_deadline(self, state):
        return state["deadline"]


@pytest.fixture
def bus(tmp_path):
    dirs = StateDirs(str(tmp_path / "s")).make()
    broker = Broker("n1", dirs.run, dirs.log, Durability("group"))
    t = threading.Thread(target=broker.run, daemon=True)
    t.start()
    yield dirs
    broker.stop()
    t.join(5)


def probe(dirs, n):
    c = BusClient(dirs.run, "prober")
    for i in range(n):
        c.publish_acked("bus.probe", {"sent_ns": 0, "n": i, "pad": ""})
    c.close()


def run_for(rt, seconds, during=None):
    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(rt.run(stop))
        await asyncio.sleep(0.3)
        if during:
            await asyncio.get_running_loop().run_in_executor(None, during)
        await asyncio.sleep(seconds)
        stop.set()
        await task

    asyncio.run(main())


def outputs(dirs):
    evs = [decode(b, s) for s, b in LogReader(dirs.log).read(1)]
    return evs, [e for e in evs if e.type == "test.counted"]


def test_outputs_timers_and_restart_without_repeats(bus):
    dirs = bus
    run_for(ServiceRuntime(Counter(), dirs), 0.3, during=lambda: probe(dirs, 5))
    evs, outs = outputs(dirs)
    assert sorted(o.payload["count"] for o in outs) == [-1, 1, 2, 3, 4, 5]
    by_seq = {e.seq: e for e in evs}
    for o in outs:
        assert o.source == "counter" and by_seq[o.cause].type in ("bus.probe", "timer.fired")
    timer = [e for e in evs if e.type == "timer.fired"]
    assert len(timer) == 1 and timer[0].payload["service"] == "counter"
    assert timer[0].mono_ns >= timer[0].payload["deadline_ns"]

    probe(dirs, 2)  # while the service is down
    run_for(ServiceRuntime(Counter(), dirs), 0.3)  # restarts from its snapshot
    _, outs2 = outputs(dirs)
    assert sorted(o.payload["count"] for o in outs2) == [-1, 1, 2, 3, 4, 5, 6, 7]


def test_crash_without_snapshot_recovers_from_the_log_and_repeats_nothing(bus):
    dirs = bus

    class NoSnap(ServiceRuntime):
        def save_snapshot(self):  # as if SIGKILLed: no snapshot ever written
            pass

    run_for(NoSnap(Counter(), dirs), 0.2, during=lambda: probe(dirs, 2))
    run_for(NoSnap(Counter(), dirs), 0.2, during=lambda: probe(dirs, 2))
    _, outs = outputs(dirs)
    assert sorted(o.payload["count"] for o in outs) == [-1, 1, 2, 3, 4]  # state carried over, nothing answered twice
