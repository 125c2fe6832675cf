"""A small core for runtime tests: counts ``bus.probe`` inputs (``test.counted`` {count: n}) and, at
the third, sets a 50 ms deadline whose timer answers ``test.counted`` {count: -1}."""
from __future__ import annotations

from lvsbus.runtime.core import Core, Effect
from lvsbus.wire.events import REGISTRY
from lvsbus.wire.schema import Int

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
