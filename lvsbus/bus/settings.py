"""The settings the broker refuses at start, checked before anything is created."""
from __future__ import annotations

from typing import Any

from lvsbus.wire.events import MAX_NAME


class BrokerSettingsError(ValueError):
    """A setting the broker refuses at start (one line, for the command line)."""


#: the smallest segment the broker accepts (a segment holds its header and at least one batch)
MIN_SEGMENT_BYTES = 4096


def check_broker_settings(node: Any, log_dir: str, segment_bytes: Any = None) -> None:
    """Refuse, before anything is created, settings that would break the broker: a node name no
    reader accepts on a record, a segment size that never records, and a last segment file in the
    log directory that is not a segment of a log (the log's recovery would overwrite it)."""
    if type(node) is not str or not 0 < len(node) <= MAX_NAME:
        shown = f"{len(node)} characters" if type(node) is str else type(node).__name__
        raise BrokerSettingsError(f"node name must be 1-{MAX_NAME} characters (got {shown})")
    if segment_bytes is not None and (type(segment_bytes) is not int or segment_bytes < MIN_SEGMENT_BYTES):
        raise BrokerSettingsError(f"segment size must be at least {MIN_SEGMENT_BYTES} bytes (got {segment_bytes!r})")
    foreign = _foreign_last_segment(log_dir)
    if foreign is not None:
        raise BrokerSettingsError(foreign)


def _foreign_last_segment(log_dir: str) -> str | None:
    """What is wrong with the last segment file, if it is not a segment of a log at all: not a
    header, not a torn creation (a prefix of the header, or zeros), no valid record anywhere in it.
    The log's recovery would rewrite such a file as an empty segment."""
    from lvsbus.log.framing import _resync
    from lvsbus.log.segments import _SEGMENT_HEADER_BYTES, SEGMENT_HEADER_SIZE, list_segments

    try:
        segs = list_segments(log_dir)
    except FileNotFoundError:
        return None
    if not segs:
        return None
    first, path = segs[-1]
    try:
        with open(path, "rb") as f:
            head = f.read(SEGMENT_HEADER_SIZE)
            if head == _SEGMENT_HEADER_BYTES[:len(head)] or not head.strip(b"\0"):
                return None  # a segment (or one whose creation was torn): the rest is not read (a restart's time)
            data = head + f.read()
    except OSError as exc:
        return f"{path}: cannot read it: {exc.strerror or exc}"
    if len(data) > SEGMENT_HEADER_SIZE and _resync(data, SEGMENT_HEADER_SIZE, len(data), first) is not None:
        return None  # a damaged header before valid records: the log's recovery deals with it
    return (f"{path} is not a segment of an lvsbus log (it starts with {data[:8]!r}): "
            "move it out of the log directory")
