"""Logs for tests that read them: made by hand (ipvs show, status), and the golden incident logs."""
from __future__ import annotations

import os
from pathlib import Path

from lvsbus.wire.events import Event, encode
from lvsbus.log import EventLog
from lvsbus.host.paths import StateDirs


def write_events(state_dir, events) -> None:
    """Write ``events``, (type, source, payload) tuples, as records 1.. of a new log in the state
    directory ``state_dir`` (made if missing): node "n", version 1, seq i at mono/wall ns i."""
    dirs = StateDirs(str(state_dir)).make()
    log = EventLog(dirs.log)
    try:
        for i, (type_, source, payload) in enumerate(events, 1):
            log.append(i, encode(Event(i, "n", source, type_, 1, i, i, None, payload)))
        log.sync()
    finally:
        log.close()


#: the golden incident logs (``lvsbus simulate --golden``), one directory per incident
GOLDEN_DIR = Path(__file__).parent.parent / "fixtures" / "logs"


def golden_logs(name: str) -> list[str]:
    """The log directories of the golden incident ``name``, one per router, in router order."""
    d = GOLDEN_DIR / name
    return [str(d / r / "log") for r in sorted(os.listdir(d)) if (d / r / "log").is_dir()]


class Quiet:
    """A logger for EventLog that says nothing."""

    def _n(self, *a, **k):
        pass

    debug = info = warning = error = exception = _n
