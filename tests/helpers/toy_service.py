"""A toy service and a broker that knows its event types, as separate processes, for the
write-ahead crash tests (tests/process/test_write_ahead.py).

    python -m tests.helpers.toy_service broker STATE_DIR
    python -m tests.helpers.toy_service service STATE_DIR EFFECTS_FILE

The core answers each ``bus.probe`` n with ``test.toy_counted`` {count: n} and {count: -n} (two effects
a step), and the third probe also with ``test.toy_marked``; the shell "executes" an effect by appending
``cause type payload`` to EFFECTS_FILE (fsynced): the world the test compares with the log.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from lvsbus.runtime.core import Core, Effect
from lvsbus.wire.events import REGISTRY
from lvsbus.wire.schema import Int

for _t in ("test.toy_counted", "test.toy_marked"):
    if _t not in REGISTRY:
        REGISTRY.declare(_t, 1, {"count": Int()}, doc="test only")


class Toy(Core):
    name = "toy"
    inputs = ("bus.probe",)
    outputs = frozenset({"test.toy_counted", "test.toy_marked"})

    def initial(self):
        return {"count": 0}

    def decide(self, state, ev):
        n = state["count"] + 1
        effects = [Effect("test.toy_counted", {"count": n}), Effect("test.toy_counted", {"count": -n})]
        if n == 3:
            effects.append(Effect("test.toy_marked", {"count": n}))
        return {"count": n}, effects


def _service(state_dir: str, effects_file: str) -> int:
    from lvsbus.host.paths import StateDirs
    from lvsbus.runtime.engine import ServiceRuntime

    fd = os.open(effects_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def execute(eff, ev):
        os.write(fd, f"{ev.seq} {eff.type} {json.dumps(eff.payload, sort_keys=True)}\n".encode())
        os.fsync(fd)

    rt = ServiceRuntime(Toy(), StateDirs(state_dir).make(), execute=execute, run_start_seq=1)

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("toy running", file=sys.stderr, flush=True)
        await rt.run(stop)

    asyncio.run(main())
    return 0


def main(argv: list[str]) -> int:
    if argv[0] == "broker":
        from lvsbus.cli import main as cli

        return cli(["broker", "--node", "t1", "--state-dir", argv[1]])
    return _service(argv[1], argv[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
