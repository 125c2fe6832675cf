"""Logs made by hand for tests that read them (ipvs show, status)."""
from __future__ import annotations

from lvsbus.events import Event, encode
from lvsbus.log import EventLog
from lvsbus.paths import StateDirs


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
