"""The reader of a log directory: ``LogReader`` (read, follow, skip past corruption and say so)
and its per-segment ``_Cursor``.
"""
from __future__ import annotations

import bisect
import os
import time
from typing import Callable, Iterator

from lvsbus.log.framing import HEADER, HEADER_SIZE, MAX_BODY_BYTES, CorruptRecord, _crc32, _resync, _scan, _unpack_header, _valid_at
from lvsbus.log.segments import (
    FLAG_GAP_BEFORE,
    INDEX_ENTRY,
    SEGMENT_HEADER_SIZE,
    _check_segment_header,
    _read_hwm,
    _read_index,
    list_segments,
)

READ_CHUNK = 1024 * 1024


class SeqUnavailable(LookupError):
    """The requested seq is older than the oldest retained record."""

    def __init__(self, seq: int, first_available: int):
        self.seq = seq
        self.first_available = first_available
        super().__init__(f"seq {seq} is no longer in the log; first available seq is {first_available}")


class _Cursor:
    """Reads one segment forward from a file offset, in big chunks."""

    def __init__(self, reader: "LogReader", first_seq: int, path: str):
        self.reader = reader
        self.first_seq = first_seq
        self.path = path
        self.gap_before = False  # the header declares a gap before this segment
        self.dead = False  # skipping: nothing valid after a corrupt record, up to the end of the segment
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.expect = first_seq
        self.leftover = 0  # bytes after pos at the last read (an incomplete record)
        head = os.pread(self.fd, SEGMENT_HEADER_SIZE, 0)
        reader.bytes_read += len(head)
        if len(head) < SEGMENT_HEADER_SIZE:
            # A segment being created right now: treat it as empty until its header appears.
            self.pos = 0
            return
        self.pos = SEGMENT_HEADER_SIZE  # file offset of the first unconsumed byte
        self._header(head)

    def _header(self, head: bytes) -> None:
        try:
            self.gap_before = bool(_check_segment_header(head, self.path) & FLAG_GAP_BEFORE)
        except CorruptRecord as exc:
            if not self.reader.skip_corrupt:
                self.close()
                raise exc
            self.reader._problem(CorruptRecord(self.path, 0, exc.reason, None))

    def seek_seq(self, seq: int) -> None:
        """Position at the record ``seq`` (or before it) using the index when it checks out."""
        if seq <= self.first_seq or self.pos < SEGMENT_HEADER_SIZE:
            return
        entries = _read_index(self.path)
        self.reader.bytes_read += len(entries) * INDEX_ENTRY.size
        if not entries:
            return
        keys = [e[0] for e in entries]
        i = bisect.bisect_right(keys, seq) - 1
        tried = 0
        while i >= 0 and tried < 3:
            eseq, eoff = entries[i]
            if self.first_seq < eseq <= seq and eoff >= SEGMENT_HEADER_SIZE and self._verify(eseq, eoff):
                self.pos = eoff
                self.expect = eseq
                return
            tried += 1
            i -= 1
        self.reader.index_misses += 1

    def _verify(self, seq: int, off: int) -> bool:
        head = os.pread(self.fd, HEADER_SIZE, off)
        self.reader.bytes_read += len(head)
        if len(head) < HEADER_SIZE:
            return False
        length, crc, hseq = HEADER.unpack(head)
        if hseq != seq or length > MAX_BODY_BYTES:
            return False
        rest = os.pread(self.fd, length, off + HEADER_SIZE)
        self.reader.bytes_read += len(rest)
        if len(rest) != length:
            return False
        return _crc32(rest, _crc32(head[8:])) == crc

    def read_some(self) -> list:
        """Complete records after the current position (possibly empty at the end). Raises
        CorruptRecord at a bad record, after nothing of it is returned."""
        if self.pos < SEGMENT_HEADER_SIZE:
            head = os.pread(self.fd, SEGMENT_HEADER_SIZE, 0)
            if len(head) < SEGMENT_HEADER_SIZE:
                return []
            self.pos = SEGMENT_HEADER_SIZE
            self._header(head)
        # Always read from the first unconsumed byte: an incomplete tail is re-read rather than
        # cached, since a recovering writer may cut it and write different records there.
        size = READ_CHUNK
        while True:
            data = os.pread(self.fd, size, self.pos)
            self.reader.bytes_read += len(data)
            if not data:
                self.leftover = 0
                return []
            records, stop, error = _scan(data, 0, len(data))
            if records:
                if self.dead:  # the first valid record after a dead end: go on from its seq
                    self.dead = False
                    self.expect = records[0][0]
                if records[0][0] != self.expect or records[-1][0] != self.expect + len(records) - 1:
                    if not self.reader.skip_corrupt:
                        self._seq_error(records)
                    records = self._chain(records, data)
                else:
                    self.expect += len(records)
            self.pos += stop
            self.leftover = len(data) - stop
            if error is not None:
                if records:
                    return records  # the next call raises (or skips)
                if not self.reader.skip_corrupt:
                    raise CorruptRecord(self.path, self.pos, error)
                self._skip(error)
                continue
            if records:
                return records
            if len(data) < size:
                return []  # an incomplete record at the end: not written yet
            # a record bigger than the chunk: read all of it
            length = _unpack_header(data, 0)[0]
            size = max(size, HEADER_SIZE + length)

    def _chain(self, records: list, data: bytes) -> list:
        """Skipping: records with valid CRCs whose seqs do not follow. A seq ahead of the expected
        one: the seqs between are unreadable (said); a seq behind it: the record is dropped (said)."""
        out = []
        for seq, body in records:
            if seq == self.expect:
                out.append((seq, body))
                self.expect += 1
            elif seq > self.expect:
                self.reader._problem(CorruptRecord(self.path, -1, f"seq {seq} where {self.expect} was expected",
                                                   (self.expect, seq - 1)))
                out.append((seq, body))
                self.expect = seq + 1
            else:
                self.reader._problem(CorruptRecord(self.path, -1, f"seq {seq} where {self.expect} was expected "
                                                   "(out of order: not returned)", None))
        return out

    def _skip(self, reason: str) -> None:
        """Skipping: go past the bad record at ``pos`` to the next valid one in this segment (or
        to its end), saying which seqs could not be read."""
        size = os.fstat(self.fd).st_size
        data = os.pread(self.fd, max(0, size - self.pos), self.pos)
        self.reader.bytes_read += len(data)
        nxt = _resync(data, 1, len(data), self.expect) if len(data) > 1 else None
        if nxt is None:
            self.reader._problem(CorruptRecord(self.path, self.pos, reason, (self.expect, None)))
            self.pos += len(data)
            self.leftover = 0
            self.dead = True
            return
        seq = _valid_at(data, nxt, len(data))
        assert seq is not None  # _resync found a valid record there
        self.reader._problem(CorruptRecord(self.path, self.pos, reason,
                                           (self.expect, seq - 1) if seq > self.expect else None))
        self.pos += nxt
        self.expect = seq

    def past_tail(self, sealed: bool = False) -> bool:
        """At the end of the log with bytes left that are no complete record: if valid records
        follow them, the record there has a bad length (corruption, said; True: read on);
        otherwise it is a torn tail (``reader.torn_tail``; False)."""
        size = os.fstat(self.fd).st_size
        data = os.pread(self.fd, max(0, size - self.pos), self.pos)
        nxt = _resync(data, 1, len(data), self.expect) if len(data) > 1 else None
        if nxt is None:
            if not sealed:
                self.reader.torn_tail = (self.path, self.pos, len(data))
            return False
        seq = _valid_at(data, nxt, len(data))
        assert seq is not None  # _resync found a valid record there
        self.reader._problem(CorruptRecord(self.path, self.pos, "bad length (the record runs past its segment's end)",
                                           (self.expect, seq - 1) if seq > self.expect else None))
        self.pos += nxt
        self.expect = seq
        self.leftover = 0
        return True

    def _seq_error(self, records: list) -> None:
        expect = self.expect
        for seq, _ in records:
            if seq != expect:
                raise CorruptRecord(self.path, -1, f"seq {seq} where {expect} was expected")
            expect += 1

    @property
    def has_leftover(self) -> bool:
        return self.leftover > 0

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None  # type: ignore[assignment]  # closed: every use above is before close


class LogReader:
    """Reads a log directory (safe while a writer in another process appends and rotates).

    A corrupt record raises ``CorruptRecord`` (nothing of it is returned). With
    ``skip_corrupt=True`` the reader goes past it instead, to the next valid record, and says so:
    each problem (segment, offset, reason and the seqs it could not read) is appended to
    ``problems`` and passed to ``on_problem``. A declared gap (seqs handed out but never written,
    see ``EventLog``) is not corruption: readers cross it in both modes and list it in ``gaps``.
    """

    def __init__(self, directory: str | os.PathLike, skip_corrupt: bool = False,
                 on_problem: Callable[[CorruptRecord], None] | None = None,
                 on_gap: Callable[[int, int], None] | None = None):
        self.directory = os.fspath(directory)
        self.bytes_read = 0  # statistics, for tests and benchmarks
        self.index_misses = 0
        self.skip_corrupt = skip_corrupt
        self.on_problem = on_problem
        self.on_gap = on_gap
        self.problems: list[CorruptRecord] = []
        self.gaps: list[tuple[int, int]] = []  # declared gaps crossed: (first lost seq, last)
        #: skipping, at the end of a read: (segment, offset, bytes) of an incomplete last record
        self.torn_tail: tuple[str, int, int] | None = None

    def hwm(self) -> int:
        """The writer's assigned-seq high-water mark (0: none): seqs up to it were handed out."""
        return _read_hwm(self.directory)

    def _problem(self, exc: CorruptRecord) -> None:
        self.problems.append(exc)
        if self.on_problem is not None:
            self.on_problem(exc)

    def segments(self) -> list[tuple[int, str]]:
        return list_segments(self.directory)

    def first_seq(self) -> int | None:
        segs = self.segments()
        return segs[0][0] if segs else None

    def read(self, from_seq: int = 1, to_seq: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Records ``from_seq..to_seq`` (inclusive; to the current end when None). Raises
        SeqUnavailable now if ``from_seq`` is older than the oldest retained record."""
        batches = self.read_batches(from_seq, to_seq)
        return (rec for batch in batches for rec in batch)

    def follow(self, from_seq: int = 1, poll_interval: float = 0.05,
               stop: Callable[[], bool] | None = None) -> Iterator[tuple[int, bytes]]:
        """Records from ``from_seq`` as the log grows, until ``stop()`` returns true (checked when
        idle)."""
        batches = self.read_batches(from_seq, None, follow=True, poll_interval=poll_interval, stop=stop)
        return (rec for batch in batches for rec in batch)

    def read_batches(self, from_seq: int = 1, to_seq: int | None = None, follow: bool = False,
                     poll_interval: float = 0.05, stop: Callable[[], bool] | None = None) -> Iterator[list]:
        """Like ``read``/``follow`` but yields lists of records (cheaper per record)."""
        if from_seq < 1:
            raise ValueError("from_seq must be >= 1")
        segs = self.segments()
        if segs and from_seq < segs[0][0]:
            raise SeqUnavailable(from_seq, segs[0][0])
        return self._gen(from_seq, to_seq, follow, poll_interval, stop, segs)

    def _open_at(self, segs, from_seq) -> _Cursor | None:
        while True:
            if not segs:
                return None
            if from_seq < segs[0][0]:
                raise SeqUnavailable(from_seq, segs[0][0])
            i = bisect.bisect_right([s for s, _ in segs], from_seq) - 1
            first, path = segs[i]
            try:
                cur = _Cursor(self, first, path)
            except FileNotFoundError:  # deleted by retention meanwhile
                segs = self.segments()
                continue
            cur.seek_seq(from_seq)
            return cur

    def _gen(self, from_seq, to_seq, follow, poll_interval, stop, segs):
        known = [segs]
        cur = None
        try:
            while cur is None:
                cur = self._open_at(segs, from_seq)
                if cur is None:
                    if not follow or (stop is not None and stop()):
                        return
                    time.sleep(poll_interval)
                    segs = self.segments()
            while True:
                records = cur.read_some()
                if not records:
                    # At the end of this segment for now. Is there a next one?
                    nxt = self._next_segment(cur, known)
                    if nxt is None:
                        if not follow or (stop is not None and stop()):
                            if self.skip_corrupt and cur.has_leftover and cur.past_tail():
                                continue  # an impossible length, with valid records behind it
                            return
                        time.sleep(poll_interval)
                        continue
                    # The writer seals a segment before creating the next: read its rest once more.
                    records = cur.read_some()
                    if not records:
                        cur, from_seq = self._cross(cur, nxt, from_seq)
                        continue
                records, done = _clip(records, from_seq, to_seq)
                if records:
                    yield records
                if done:
                    return
        finally:
            if cur is not None:
                cur.close()

    def _cross(self, cur: _Cursor, nxt: tuple[int, str], from_seq: int) -> tuple[_Cursor, int]:
        """Go from ``cur``, read to its end, to the next segment ``nxt``; returns the cursor to
        read on with (``cur`` itself when skipping past a bad length in it) and ``from_seq``."""
        first, path = nxt
        if cur.has_leftover and self._truncated_at_end(cur, first):
            return cur, from_seq  # a bad length, with valid records behind it
        expect, dead, prev = cur.expect, cur.dead, cur.path
        cur.close()
        try:
            cur = _Cursor(self, first, path)
        except FileNotFoundError:
            segs = self.segments()
            raise SeqUnavailable(first, segs[0][0] if segs else first) from None
        if first != expect and not dead and not cur.has_leftover:
            from_seq = self._seq_jump(cur, expect, prev, from_seq)
        return cur, from_seq

    def _truncated_at_end(self, cur: _Cursor, first: int) -> bool:
        """``cur``'s segment, sealed (the next starts at ``first``), ends with bytes that are no
        complete record. True when skipping and they are a bad length with valid records behind
        them (read on in it); else it is said: raised, or when skipping a problem (False)."""
        if self.skip_corrupt and cur.past_tail(sealed=True):
            return True
        exc = CorruptRecord(cur.path, cur.pos, "truncated record at the end of a sealed segment",
                            (cur.expect, first - 1) if first > cur.expect else None)
        if not self.skip_corrupt:
            raise CorruptRecord(cur.path, cur.pos, exc.reason)
        self._problem(exc)
        cur.dead = True  # the seqs up to the next segment are said: no second report
        return False

    def _seq_jump(self, cur: _Cursor, expect: int, prev: str, from_seq: int) -> int:
        """``cur``'s segment does not start at ``expect``, the seq after the last of ``prev``: a
        declared gap is crossed (listed in ``gaps``); anything else is corruption, raised or when
        skipping said. Returns ``from_seq``, moved past what was read when segments overlap."""
        first, path = cur.first_seq, cur.path
        if cur.gap_before and first > expect:
            self.gaps.append((expect, first - 1))
            if self.on_gap is not None:
                self.on_gap(expect, first - 1)
            return from_seq
        exc = CorruptRecord(path, 0, f"segment starts at seq {first}, expected {expect} "
                                     f"after {prev}", (expect, first - 1) if first > expect else None)
        if not self.skip_corrupt:
            cur.close()
            raise CorruptRecord(path, 0, exc.reason)
        self._problem(exc)
        if first < expect:  # overlapping segments: drop what was read already
            from_seq = max(from_seq, expect)
        return from_seq

    def _next_segment(self, cur: _Cursor, known: list):
        """The segment after ``cur``: from the last listing ``known[0]``, else from a fresh one
        (the writer may have rotated since; the new listing is kept in ``known[0]``)."""
        i = bisect.bisect_right(known[0], (cur.first_seq, "\uffff"))
        if i < len(known[0]):
            return known[0][i]
        known[0] = self.segments()
        i = bisect.bisect_right(known[0], (cur.first_seq, "\uffff"))
        return known[0][i] if i < len(known[0]) else None


def _clip(records: list, from_seq: int, to_seq: int | None) -> tuple[list, bool]:
    """The records of a batch from ``from_seq`` to ``to_seq``, and whether ``to_seq`` is reached."""
    if records[0][0] < from_seq:
        records = records[from_seq - records[0][0]:]
        if not records:
            return records, False
    if to_seq is not None and records[-1][0] >= to_seq:
        keep = to_seq - records[0][0] + 1
        return (records[:keep] if keep > 0 else []), True
    return records, False
