"""Checking a log directory without writing to it: ``check`` (what ``lvsbus log check`` prints)
and ``check_segment``, the record-level check of one segment, which the writer's start-up scan of
sealed segments uses too; ``open_log_dir``, ``NotALog`` and ``describe_error`` for the tools that
read logs.
"""
from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass, field

from lvsbus.log.framing import CorruptRecord, _resync, _valid_at, _validate_run
from lvsbus.log.segments import (
    _SEG_RE,
    CUT_SUFFIX,
    FLAG_GAP_BEFORE,
    INDEX_ENTRY,
    SEGMENT_HEADER_SIZE,
    _check_segment_header,
    _classify_tail,
    _index_path,
    _read_hwm,
    _read_index,
    list_segments,
)


@dataclass
class SegmentCheck:
    path: str
    first_seq: int
    last_seq: int | None = None  # highest valid seq found
    records: int = 0
    bytes: int = 0
    corrupt: list[tuple[int, str]] = field(default_factory=list)  # (offset, reason)
    torn_tail: tuple[int, int] | None = None  # (offset, bytes) of an incomplete last record
    index: str = "ok"  # ok | missing | stale (n bad entries)

    @property
    def ok(self) -> bool:
        return not self.corrupt


def check_segment(path: str, first: int, is_last: bool = False) -> "SegmentCheck":
    """Record-level check of one segment (see ``check``)."""
    with open(path, "rb") as f:
        data = f.read()
    return _check_data(path, first, data, is_last)[0]


@dataclass
class CheckReport:
    directory: str
    segments: list[SegmentCheck] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    declared_gaps: list[tuple[int, int]] = field(default_factory=list)  # seqs handed out, never written: not errors
    first_seq: int | None = None
    last_seq: int | None = None
    records: int = 0
    hwm: int = 0  # the assigned-seq high-water mark (0: none)
    cut_files: list[str] = field(default_factory=list)  # bytes cut at recovery, kept beside their segment

    @property
    def missing(self) -> tuple[int, int] | None:
        """Seqs the writer's mark says were handed out that the log does not hold: a truncated
        log, or a writer with a backlog (the disk refused it)."""
        last = self.last_seq if self.last_seq is not None else (self.segments[-1].first_seq - 1 if self.segments else 0)
        if self.declared_gaps:
            last = max(last, self.declared_gaps[-1][1])
        return (last + 1, self.hwm) if self.hwm > last else None

    @property
    def ok(self) -> bool:
        return not self.gaps and all(s.ok for s in self.segments) and self.missing is None

    def corrupt_offsets(self) -> list[tuple[str, int, str]]:
        return [(s.path, off, why) for s in self.segments for off, why in s.corrupt]

    def format(self) -> str:
        lines = [f"log {self.directory}: {len(self.segments)} segments, {self.records} records, "
                 f"seq {self.first_seq}..{self.last_seq}: {'OK' if self.ok else 'PROBLEMS'}"]
        for s in self.segments:
            line = (f"  {os.path.basename(s.path)}: seq {s.first_seq}..{s.last_seq} {s.records} records "
                    f"{s.bytes} bytes, index {s.index}")
            lines.append(line)
            for off, why in s.corrupt:
                lines.append(f"    CORRUPT at offset {off}: {why}")
            if s.torn_tail:
                lines.append(f"    torn tail at offset {s.torn_tail[0]} ({s.torn_tail[1]} bytes; the writer cuts it "
                             "when it opens the log)")
        for g in self.gaps:
            lines.append(f"  GAP: {g}")
        for a, b in self.declared_gaps:
            lines.append(f"  declared gap: seqs {a}..{b} were handed out but never written (lost at a stop or "
                         "crash while the disk refused them; log.gap says so); not reused")
        if self.missing is not None:
            a, b = self.missing
            lines.append(f"  MISSING: seqs {a}..{b} were handed out (the writer's mark) but are not in the log: "
                         "a truncated log, or a writer whose disk refuses them (it declares them lost if it stops "
                         "before writing them)")
        for c in self.cut_files:
            lines.append(f"  note: {os.path.basename(c)} holds bytes cut from its segment at recovery")
        return "\n".join(lines)


class NotALog(ValueError):
    """A path given as a log directory is not one (no segment file in it)."""


def open_log_dir(directory: str) -> list[str]:
    """The names in a log directory; one clear error (OSError or NotALog) when it is not one."""
    if not os.path.exists(directory):
        raise FileNotFoundError(_errno.ENOENT, "no such directory", directory)
    if not os.path.isdir(directory):
        raise NotADirectoryError(_errno.ENOTDIR, "not a directory (a log is a directory of segment files)", directory)
    names = os.listdir(directory)  # PermissionError when unreadable
    if not any(_SEG_RE.match(n) for n in names):
        raise NotALog(f"{directory}: not an lvsbus log (no segment files NNNNNNNNNNNNNNNNNNNN.seg in it)")
    return names


def _check_data(path: str, first: int, data: bytes, is_last: bool) -> tuple["SegmentCheck", int, int]:
    """Check one segment's bytes: (its SegmentCheck, header flags, highest valid seq)."""
    sc = SegmentCheck(path, first)
    n = len(data)
    sc.bytes = n
    flags = 0
    try:
        flags = _check_segment_header(data, path)
    except CorruptRecord as exc:
        sc.corrupt.append((0, exc.reason))
        if n <= SEGMENT_HEADER_SIZE or _resync(data, SEGMENT_HEADER_SIZE, n, first) is None:
            return sc, 0, first - 1
    pos, expect = SEGMENT_HEADER_SIZE, first
    if sc.corrupt:  # a bad header with records behind it
        pos = _resync(data, SEGMENT_HEADER_SIZE, n, first)  # type: ignore[assignment]
        expect = _valid_at(data, pos, n)  # type: ignore[assignment]
    highest, index = _check_records(sc, data, pos, expect, is_last)
    sc.last_seq = highest if highest >= first else None
    sc.index = _check_index(path, data, index)
    return sc, flags, highest


def _check_records(sc: SegmentCheck, data: bytes, pos: int, expect: int, is_last: bool) -> tuple[int, list]:
    """Check the records from ``pos`` (seq ``expect``) to the end, into ``sc`` (records, corrupt,
    torn tail): (the highest valid seq, the index entries the records from the header make)."""
    n = len(data)
    highest = sc.first_seq - 1
    index: list = []
    while True:
        run = _validate_run(data, pos, n, expect, [expect, pos] if pos == SEGMENT_HEADER_SIZE else None)
        if pos == SEGMENT_HEADER_SIZE:
            index = run.index
        sc.records += run.count
        if run.count:
            highest = run.next_seq - 1
        if run.end >= n:
            break
        nxt = _resync(data, run.end + 1, n, highest + 1)
        if nxt is None:
            if is_last and _classify_tail(data, run.end, n) == "torn":
                sc.torn_tail = (run.end, n - run.end)  # an incomplete last write (or zeros)
            elif run.error is None:
                sc.corrupt.append((run.end, "truncated record at the end of a sealed segment"))
            else:  # a complete record that fails its check, with nothing valid after it
                sc.corrupt.append((run.end, run.error))
            break
        sc.corrupt.append((run.end, run.error or "truncated record"))
        pos = nxt
        expect = _valid_at(data, nxt, n)  # type: ignore[assignment]
    return highest, index


def _check_index(path: str, data: bytes, index: list) -> str:
    """The state of a segment's index file: ``ok``, ``missing`` (when its records make entries)
    or ``stale (n bad entries)``."""
    idx_path = _index_path(path)
    if not os.path.exists(idx_path):
        return "missing" if index else "ok"
    n = len(data)
    bad = 0
    entries = _read_index(path)
    for eseq, eoff in entries:
        if eoff < SEGMENT_HEADER_SIZE or _valid_at(data, eoff, n, eseq, eseq) is None:
            bad += 1
    if os.path.getsize(idx_path) % INDEX_ENTRY.size:
        bad += 1
    return "ok" if not bad else f"stale ({bad} bad entries)"


def check(directory: str | os.PathLike) -> CheckReport:
    """Verify every segment: record CRCs, seq continuity within and across segments, indexes.
    Raises OSError or NotALog when ``directory`` is not a readable log directory."""
    directory = os.fspath(directory)
    names = open_log_dir(directory)
    report = CheckReport(directory)
    report.hwm = _read_hwm(directory)
    report.cut_files = sorted(os.path.join(directory, n) for n in names if CUT_SUFFIX in n)
    segs = list_segments(directory)
    prev_last: int | None = None
    for i, (first, path) in enumerate(segs):
        with open(path, "rb") as f:
            data = f.read()
        sc, flags, highest = _check_data(path, first, data, i == len(segs) - 1)
        report.segments.append(sc)
        if prev_last is not None and first != prev_last + 1 and not (sc.corrupt and sc.corrupt[0][0] == 0
                                                                     and not sc.records):
            if flags & FLAG_GAP_BEFORE and first > prev_last + 1:
                report.declared_gaps.append((prev_last + 1, first - 1))
            else:
                report.gaps.append(f"{os.path.basename(path)} starts at seq {first}, previous segment ends at {prev_last}")
        report.records += sc.records
        if report.first_seq is None and sc.records:
            report.first_seq = first
        if sc.records:
            report.last_seq = highest
        prev_last = max(highest, prev_last) if prev_last is not None else highest
    return report


def describe_error(exc: BaseException) -> str:
    """One line for an error about a path (no traceback)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)
