"""Record framing: the bytes of one ``(seq, body)`` record, and reading runs of them.

Record framing (also used by the broker to forward batches over ZeroMQ)::

    <IIQ  body length (u32), crc32 (u32), seq (u64)   then   body

The CRC is ``zlib.crc32`` over the 8 little-endian seq bytes followed by the body, which are the
contiguous bytes ``frame[8:]``.

Pure functions over bytes (no file here): the writer, the readers, the checker and the broker's
batch decoding all parse with them.
"""
from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import Generator, Iterable

HEADER = struct.Struct("<IIQ")
HEADER_SIZE = HEADER.size  # 16
MAX_BODY_BYTES = 64 * 1024 * 1024  # a length above this is "impossible": corruption, not a partial write

#: the sparse index's spacing: an entry at most every this many records or bytes (``_validate_run``
#: builds the entries while it checks; segments.py keeps the index files)
INDEX_EVERY_RECORDS = 1024
INDEX_EVERY_BYTES = 256 * 1024

_NONZERO = re.compile(rb"[^\x00]")
_crc32 = zlib.crc32
_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack


class CorruptRecord(Exception):
    """A record (or segment header) that fails its CRC, has an impossible length or breaks seq
    continuity. Never returned as data."""

    def __init__(self, segment: str | None, offset: int, reason: str, lost: tuple[int, int | None] | None = None):
        self.segment = segment
        self.offset = offset
        self.reason = reason
        #: the seqs a reader that went past it could not read: (first, last), last None when unknown
        #: (nothing valid after it in its segment and no next segment)
        self.lost = lost
        where = f"{segment}@{offset}" if segment is not None else f"offset {offset}"
        msg = f"corrupt record at {where}: {reason}"
        if lost is not None:
            msg += f" (seqs {lost[0]}..{'?' if lost[1] is None else lost[1]} unreadable)"
        super().__init__(msg)


def frame(seq: int, body: bytes) -> bytes:
    """One framed record: header + body."""
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"body of {len(body)} bytes exceeds MAX_BODY_BYTES")
    return _pack_header(len(body), _crc32(body, _crc32(seq.to_bytes(8, "little"))), seq) + bytes(body)


def frame_batch(records: Iterable[tuple[int, bytes]]) -> bytes:
    """Many framed records concatenated (the broker's forwarding batch)."""
    parts: list = []
    ap = parts.append
    for seq, body in records:
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(f"body of {len(body)} bytes exceeds MAX_BODY_BYTES")
        ap(_pack_header(len(body), _crc32(body, _crc32(seq.to_bytes(8, "little"))), seq))
        ap(body)
    return b"".join(parts)


def _scan(buf: bytes, pos: int, n: int) -> tuple[list, int, str | None]:
    """Parse complete records in ``buf[pos:n]``.

    Returns (records, stop, error): ``stop`` is the offset of the first byte not consumed (a
    partial record, the end, or the bad record); ``error`` is None or why the record at ``stop``
    is bad. The hot loop of the reader and of the broker's batch decoding.
    """
    out: list = []
    ap = out.append
    unpack = _unpack_header
    crc32 = _crc32
    mv = memoryview(buf)
    limit = n - HEADER_SIZE
    while pos <= limit:
        length, crc, seq = unpack(buf, pos)
        end = pos + HEADER_SIZE + length
        if end > n:
            if length > MAX_BODY_BYTES:
                return out, pos, f"impossible length {length}"
            break
        if crc32(mv[pos + 8:end]) != crc:
            if length > MAX_BODY_BYTES:
                return out, pos, f"impossible length {length}"
            return out, pos, "crc mismatch"
        ap((seq, buf[pos + HEADER_SIZE:end]))
        pos = end
    return out, pos, None


def parse_frames(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[list[tuple[int, bytes]], int]:
    """Parse every complete record from ``offset``: returns ``(records, consumed)`` where
    ``consumed`` is the offset just after the last complete record (a trailing partial record is
    left unconsumed). Raises ``CorruptRecord`` on a bad CRC or an impossible length."""
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    records, stop, error = _scan(buf, offset, len(buf))
    if error is not None:
        raise CorruptRecord(None, stop, error)
    return records, stop


def iter_frames(buf: bytes | bytearray | memoryview, offset: int = 0) -> Generator[tuple[int, bytes, int], None, int]:
    """Yield ``(seq, body, next_offset)`` for each complete record; stops cleanly at a trailing
    partial record (the generator's return value is the offset where it stopped). Raises
    ``CorruptRecord`` on a bad CRC or an impossible length."""
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    n = len(buf)
    mv = memoryview(buf)
    pos = offset
    while pos + HEADER_SIZE <= n:
        length, crc, seq = _unpack_header(buf, pos)
        if length > MAX_BODY_BYTES:
            raise CorruptRecord(None, pos, f"impossible length {length}")
        end = pos + HEADER_SIZE + length
        if end > n:
            break
        if _crc32(mv[pos + 8:end]) != crc:
            raise CorruptRecord(None, pos, "crc mismatch")
        yield seq, buf[pos + HEADER_SIZE:end], end
        pos = end
    return pos


def _valid_at(buf: bytes, pos: int, n: int, min_seq: int = 0, max_seq: int | None = None) -> int | None:
    """If a complete, CRC-valid record starts at ``pos`` (with min_seq <= seq <= max_seq), return
    its seq, else None."""
    if pos + HEADER_SIZE > n:
        return None
    length, crc, seq = _unpack_header(buf, pos)
    if length > MAX_BODY_BYTES or pos + HEADER_SIZE + length > n:
        return None
    if seq < min_seq or (max_seq is not None and seq > max_seq):
        return None
    if _crc32(memoryview(buf)[pos + 8:pos + HEADER_SIZE + length]) != crc:
        return None
    return seq


def _resync(buf: bytes, pos: int, n: int, min_seq: int) -> int | None:
    """Scan forward from ``pos`` for the next offset holding a valid record with seq >= min_seq
    (plausible for this segment). Returns the offset or None."""
    max_seq = min_seq + (n - pos) // HEADER_SIZE + 1
    unpack = _unpack_header
    limit = n - HEADER_SIZE
    mv = memoryview(buf)
    p = pos
    while p <= limit:
        length, crc, seq = unpack(buf, p)
        if min_seq <= seq <= max_seq and length <= MAX_BODY_BYTES:
            end = p + HEADER_SIZE + length
            if end <= n and _crc32(mv[p + 8:end]) == crc:
                return p
        elif not (length or crc or seq):
            # 16 zero bytes (a zero-filled tail): skip the run; a record's header has a non-zero
            # byte (its seq), so none can start more than 15 bytes before the run ends.
            m = _NONZERO.search(buf, p + HEADER_SIZE)
            if m is None:
                return None
            p = max(p + 1, m.start() - (HEADER_SIZE - 1))
            continue
        p += 1
    return None


@dataclass
class _Run:
    """Result of validating a segment's records from some offset."""

    end: int  # offset after the last good record of the contiguous run
    next_seq: int  # seq expected after the run
    count: int
    error: str | None  # None: clean end or partial tail; else why the record at ``end`` is bad
    partial: bool  # stopped at an incomplete record (bytes after ``end``)
    index: list  # (seq, offset) entries built while scanning


def _validate_run(buf: bytes, pos: int, n: int, expect: int, index_state: list | None = None) -> _Run:
    unpack = _unpack_header
    crc32 = _crc32
    mv = memoryview(buf)
    limit = n - HEADER_SIZE
    count = 0
    index: list = []
    if index_state is None:
        index_state = [expect, pos]
    last_idx_seq, last_idx_off = index_state
    while pos <= limit:
        length, crc, seq = unpack(buf, pos)
        end = pos + HEADER_SIZE + length
        if length > MAX_BODY_BYTES:
            return _Run(pos, expect, count, f"impossible length {length}", False, index)
        if end > n:
            return _Run(pos, expect, count, None, True, index)
        if crc32(mv[pos + 8:end]) != crc:
            return _Run(pos, expect, count, "crc mismatch", False, index)
        if seq != expect:
            return _Run(pos, expect, count, f"seq {seq} where {expect} was expected", False, index)
        if seq - last_idx_seq >= INDEX_EVERY_RECORDS or pos - last_idx_off >= INDEX_EVERY_BYTES:
            index.append((seq, pos))
            last_idx_seq, last_idx_off = seq, pos
        expect += 1
        count += 1
        pos = end
    index_state[0], index_state[1] = last_idx_seq, last_idx_off
    return _Run(pos, expect, count, None, pos < n, index)
