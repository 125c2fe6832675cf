"""The event log: an append-only, segmented store of ``(seq, body)`` records.

The log does not know the event format; it stores opaque bodies with their sequence numbers.
By concern, lowest first (a module imports only those before it):

- ``framing``: the record framing (``<IIQ`` length, crc32, seq, then the body) and parsing runs
  of records from bytes; ``CorruptRecord``.
- ``segments``: segment files (``<first_seq:020d>.seg``, a 16-byte file header), their index and
  ``.sum`` files, the assigned-seq mark ``assigned.hwm``, the cut copies, file helpers.
- ``check``: checking a log directory without writing it (``check``, ``check_segment``).
- ``writer``: ``EventLog`` (appends, durability, rotation, retention, recovery at open).
- ``reader``: ``LogReader`` (``skip_corrupt=True`` goes past corrupt records and says so).

docs/log.md tells the whole story. This package re-exports the public API: ``frame``,
``iter_frames``, ``parse_frames``, ``EventLog`` (writer), ``LogReader``, ``Durability``,
``Retention``, ``check``, ``check_segment``, ``open_log_dir``, and the errors ``CorruptRecord``,
``SeqUnavailable``, ``LogWriteError``, ``NotALog``.
"""
from __future__ import annotations

from lvsbus.log.check import CheckReport, NotALog, SegmentCheck, check, check_segment, describe_error, open_log_dir
from lvsbus.log.framing import HEADER, HEADER_SIZE, MAX_BODY_BYTES, CorruptRecord, frame, frame_batch, iter_frames, parse_frames
from lvsbus.log.reader import LogReader, SeqUnavailable
from lvsbus.log.segments import (
    FLAG_GAP_BEFORE,
    HWM_NAME,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    list_segments,
    rebuild_index,
    segment_name,
)
from lvsbus.log.writer import Durability, EventLog, LogWriteError, Recovery, Retention, SealedScan

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "MAX_BODY_BYTES",
    "SEGMENT_MAGIC",
    "SEGMENT_HEADER_SIZE",
    "CorruptRecord",
    "SeqUnavailable",
    "LogWriteError",
    "Durability",
    "Retention",
    "Recovery",
    "EventLog",
    "LogReader",
    "CheckReport",
    "SegmentCheck",
    "frame",
    "frame_batch",
    "iter_frames",
    "parse_frames",
    "check",
    "check_segment",
    "open_log_dir",
    "describe_error",
    "FLAG_GAP_BEFORE",
    "HWM_NAME",
    "SealedScan",
    "NotALog",
    "rebuild_index",
    "segment_name",
    "list_segments",
]
