"""The writer of a log directory: ``EventLog`` (append, group commit, rotation, retention, the
assigned-seq mark, and recovery of the last segment at open), with its policies ``Durability`` and
``Retention`` and what opening found, ``Recovery``.

``assigned.hwm`` holds the highest seq ever handed out: seqs it covers that are not in the log are
declared lost at open (the next segment has ``FLAG_GAP_BEFORE``) and never reused. Bytes recovery
cuts are kept as ``<segment>.cut-<offset>``. docs/log.md tells the whole story.
"""
from __future__ import annotations

import errno as _errno
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from lvsbus.host.files import fsync_dir
from lvsbus.log.check import _check_data, check_segment
from lvsbus.log.framing import (
    _NONZERO,
    HEADER_SIZE,
    INDEX_EVERY_BYTES,
    INDEX_EVERY_RECORDS,
    MAX_BODY_BYTES,
    CorruptRecord,
    _crc32,
    _pack_header,
    _resync,
    _Run,
    _scan,
    _valid_at,
    _validate_run,
)
from lvsbus.log.segments import (
    _SEGMENT_HEADER_BYTES,
    _SEGMENT_HEADER_GAP_BYTES,
    HWM_FILE_BYTES,
    HWM_NAME,
    INDEX_ENTRY,
    SEGMENT_HEADER_SIZE,
    _check_segment_header,
    _classify_tail,
    _cut_copy_name,
    _cut_file,
    _file_crc,
    _index_path,
    _pack_hwm,
    _read_hwm,
    _read_index,
    _read_sum,
    _sum_path,
    _walk_count,
    _write_index_file,
    _write_sum,
    list_segments,
    segment_name,
)

#: appends write the mark when it is this many seqs behind (and rotation and close always do): a
#: record still in the log needs no mark; the mark matters for records cut later or never written
HWM_EVERY = 256

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024


class LogWriteError(OSError):
    """Writing to the log failed (ENOSPC, EIO, ...). The log was left consistent: nothing of the
    failed call is in it (unless the error came from fsync, see ``durable_seq``)."""

    def __init__(self, errno: int, message: str, filename: str | None = None):
        super().__init__(errno, message, filename)


@dataclass
class SealedScan:
    """What ``EventLog.scan_sealed`` found."""

    segments: int = 0
    bytes: int = 0
    by_sum: int = 0  # segments checked by their whole-file CRC alone
    by_records: int = 0  # segments checked record by record (no or stale .sum, or a mismatch)
    problems: list[CorruptRecord] = field(default_factory=list)
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# policies


_DURABILITY_MODES = ("always", "group", "none")


@dataclass(frozen=True)
class Durability:
    """When appended records are fsynced.

    ``always``: fsync in every append call. ``group``: a background thread fsyncs at most every
    ``interval_ms`` (sooner when ``max_records`` are pending). ``none``: never fsync (a killed
    process loses nothing already written; a machine crash may).
    """

    mode: str = "group"
    interval_ms: float = 1.0
    max_records: int = 1000

    def __post_init__(self):
        if self.mode not in _DURABILITY_MODES:
            raise ValueError(f"durability mode must be one of {_DURABILITY_MODES}, not {self.mode!r}")
        if self.interval_ms < 0 or self.max_records < 1:
            raise ValueError("interval_ms must be >= 0 and max_records >= 1")


@dataclass(frozen=True)
class Retention:
    """Which sealed segments ``apply_retention`` deletes (oldest first)."""

    max_bytes: int | None = None
    max_age_s: float | None = None


@dataclass
class Recovery:
    """What opening the log found in its last segment, and what it did about it."""

    segment: str | None = None
    records: int = 0  # valid records found in the last segment
    torn_offset: int | None = None  # where bytes were cut
    torn_bytes_cut: int = 0
    cut_kind: str | None = None  # "torn" (an incomplete write, or zeros) or "corrupt" (complete records damaged)
    cut_copy: str | None = None  # the file keeping the cut bytes, beside the segment
    cut_last_seq: int = 0  # the last valid seq before the cut
    corruption: list[CorruptRecord] = field(default_factory=list)
    new_segment: str | None = None  # started after corruption (the corrupt segment is sealed)
    header_repaired: bool = False
    hwm: int = 0  # the assigned-seq high-water mark found (0: none)
    lost: tuple[int, int] | None = None  # seqs handed out but not in the log: a declared gap, never reused
    backlog_restored: tuple[int, int] | None = None  # seqs written from a backlog file at open
    backlog_left: str | None = None  # a backlog file that could not be used (kept for the operator)
    backlog_pending: list = field(default_factory=list)  # spilled records the disk still refuses (the caller keeps them)
    backlog_error: tuple[int, str] | None = None  # (errno, message) of that refusal
    # (segment, first seq, offset): the last segment was reopened from its index, its records
    # before this offset not checked yet (scan_sealed checks them in the background)
    unchecked_prefix: tuple[str, int, int] | None = None

    @property
    def clean(self) -> bool:
        return (not self.torn_bytes_cut and not self.corruption and not self.header_repaired
                and self.lost is None)

    def summary(self) -> str:
        """One line for the broker's start event and log line (empty when clean)."""
        parts = []
        if self.torn_bytes_cut:
            parts.append(f"{self.cut_kind or 'torn'} tail cut: {self.torn_bytes_cut}B at "
                         f"{os.path.basename(self.segment or '')}@{self.torn_offset}"
                         + (f", kept in {os.path.basename(self.cut_copy)}" if self.cut_copy else ", NOT kept"))
        if self.corruption:
            c = self.corruption[0]
            parts.append(f"{len(self.corruption)} corrupt record(s), first at {os.path.basename(c.segment or '')}"
                         f"@{c.offset} (readers skip them and say so; see lvsbus log check)")
        if self.header_repaired:
            parts.append("segment header repaired")
        if self.backlog_restored:
            parts.append(f"backlog seqs {self.backlog_restored[0]}..{self.backlog_restored[1]} written from its spill file")
        if self.backlog_left:
            parts.append(f"backlog file {self.backlog_left} not used")
        if self.backlog_pending:
            parts.append(f"backlog seqs {self.backlog_pending[0][0]}..{self.backlog_pending[-1][0]} from its spill file "
                         "not written yet (the disk still refuses them)")
        if self.lost:
            parts.append(f"seqs {self.lost[0]}..{self.lost[1]} were handed out but are not in the log: "
                         "a declared gap, not reused")
        return "; ".join(parts)


# --------------------------------------------------------------------------------------------
# writer


class EventLog:
    """The writer of one log directory (one writer per directory: an ``flock`` on ``.lock``).

    ``append``/``append_batch``/``apply_retention``/``close`` belong to one thread (the broker's);
    ``durable_seq``, ``wait_durable``, ``durable_fd``/``drain_durable_fd`` may be used from any
    thread. ``on_durable(seq)`` is called from the fsync thread in group mode (keep it short).
    A batch always goes to one segment, so a segment may exceed ``segment_bytes`` by one batch;
    rotation happens at the start of the next append.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        durability: Durability = Durability("group"),
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        retention: Retention = Retention(),
        logger=None,
        first_seq: int = 1,
        on_durable: Callable[[int], None] | None = None,
        backlog_file: str | None = None,
    ):
        if first_seq < 1:
            raise ValueError("first_seq must be >= 1")
        self.directory = os.fspath(directory)
        self.durability = durability
        self.segment_bytes = int(segment_bytes)
        self.retention = retention
        if logger is None:
            import structlog  # imported here: a process that passes its own logger starts faster

            logger = structlog.get_logger("lvsbus.log")
        self.log = logger
        self._initial_first_seq = first_seq
        self._on_durable = on_durable
        self._backlog_file = backlog_file
        self._hwm_fd: int | None = None
        self._fd: int | None = None
        self._idx_fd: int | None = None
        self._closed = True
        self._broken: str | None = None
        self._pipe: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self.recovery = Recovery()
        self.open()

    # ---- opening and recovery

    def open(self) -> None:
        if not self._closed:
            return
        os.makedirs(self.directory, exist_ok=True)
        self._lock_dir()
        self._durable_cond = threading.Condition()
        self._fd_lock = threading.Lock()
        self._sync_error: OSError | None = None
        self._stop = False
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._fd = self._idx_fd = None
        self._pending_gap = False
        segs = list_segments(self.directory)
        self.recovery = Recovery()
        hwm = _read_hwm(self.directory)
        self.recovery.hwm = hwm
        self._hwm = hwm
        self._open_hwm()
        self._assigned = 0  # seqs a damaged tail held, as far as its headers tell
        if not segs:
            self._next_seq = max(self._initial_first_seq, hwm + 1)
            self._create_segment(self._next_seq)
        else:
            self._recover(segs)
        self._written_seq = self._next_seq - 1
        self._durable_seq = self._next_seq - 1
        self._closed = False
        if self._backlog_file is not None:
            self._restore_backlog(self._backlog_file)
        assigned = max(hwm, self._assigned)
        pending = self.recovery.backlog_pending
        if pending and assigned > pending[-1][0]:
            # seqs beyond the spilled records are missing too: they cannot be declared lost before
            # the spilled ones are written, so those are given up (the file is kept) and all declared
            self.recovery.backlog_pending = []
            self.recovery.backlog_left = self._backlog_file
            pending = []
        if pending:
            pass  # the next seqs are the spilled records', which the caller writes first
        elif assigned > self._next_seq - 1:
            self._declare_gap(assigned)
        self._note_hwm(self._next_seq - 1)  # a log from before the mark gets one now
        if self._fd is None:
            try:
                self._start_segment()
            except OSError as exc:  # a full disk: the first append tries again (and fails loudly)
                self.log.warning("log.segment_create_deferred", next_seq=self._next_seq, error=str(exc))
        if self.durability.mode == "group":
            self._thread = threading.Thread(target=self._sync_loop, name="lvsbus-log-fsync", daemon=True)
            self._thread.start()

    # ---- the assigned-seq high-water mark

    def _open_hwm(self) -> None:
        """Open (and preallocate, when new) the high-water mark file. Written in place, it can be
        updated while the disk is full; a log without it (an older one) just has no mark."""
        self._hwm_fd = None
        self._hwm_failed = False
        self._hwm_lock = threading.Lock()
        path = os.path.join(self.directory, HWM_NAME)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self.log.warning("log.hwm_unavailable", path=path, error=str(exc))
            return
        self._hwm_fd = fd
        try:
            if os.fstat(fd).st_size < HWM_FILE_BYTES:
                os.pwrite(fd, _pack_hwm(self._hwm).ljust(HWM_FILE_BYTES, b"\0"), 0)
                if self.durability.mode != "none":
                    os.fsync(fd)
        except OSError as exc:
            self.log.warning("log.hwm_unavailable", path=path, error=str(exc))

    def _note_hwm(self, seq: int) -> None:
        if seq <= self._hwm or self._hwm_fd is None:
            return
        with self._hwm_lock:  # the appending thread and the fsync thread (group commit) both write it
            if seq <= self._hwm:
                return
            try:
                os.pwrite(self._hwm_fd, _pack_hwm(seq), 0)
            except OSError as exc:
                if not self._hwm_failed:
                    self._hwm_failed = True
                    self.log.error("log.hwm_write_failed", seq=seq, error=str(exc))
                return
            self._hwm = seq

    def note_assigned(self, seq: int, sync: bool = False) -> None:
        """Record that seqs up to ``seq`` were handed out (delivered live) although they are not
        in the log yet (a full disk): if they never get there, the next open declares them lost
        instead of giving them to new records. ``sync``: fsync the mark too."""
        self._note_hwm(seq)
        if sync and self._hwm_fd is not None and self.durability.mode != "none":
            try:
                os.fsync(self._hwm_fd)
            except OSError as exc:
                self.log.error("log.hwm_write_failed", seq=seq, error=str(exc))

    @property
    def assigned_hwm(self) -> int:
        return self._hwm

    def _declare_gap(self, last_lost: int) -> None:
        """Seqs ``next_seq..last_lost`` were handed out but are not in the log: seal the active
        segment and continue after them, in a segment whose header says the gap is declared."""
        first_lost = self._next_seq
        if self._fd is not None:
            with self._fd_lock:
                if self.durability.mode != "none":
                    try:
                        os.fsync(self._fd)
                    except OSError:
                        pass
                os.close(self._fd)
                if self._idx_fd is not None:
                    os.close(self._idx_fd)
                self._fd = self._idx_fd = None
        self._next_seq = last_lost + 1
        self._written_seq = self._durable_seq = last_lost
        self._pending_gap = True
        self.recovery.lost = (first_lost, last_lost)
        self.log.error("log.seqs_lost", first_lost=first_lost, last_lost=last_lost, next_seq=last_lost + 1,
                       note="handed out (delivered live) but not in the log; declared as a gap, never reused")

    def _start_segment(self) -> None:
        """Create the segment the next append goes to (after recovery sealed the last one, or a
        declared gap)."""
        self._create_segment(self._next_seq, gap=self._pending_gap)
        self._pending_gap = False
        if self.recovery.new_segment is None and self._seg_path != self.recovery.segment:
            self.recovery.new_segment = self._seg_path

    def _restore_backlog(self, path: str) -> None:
        """Write the records of a backlog file (spilled by a broker that stopped while its log's
        disk was full) when they follow the log; the file is removed once they are in it."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        except OSError as exc:
            self.recovery.backlog_left = path
            self.log.error("log.backlog_unreadable", path=path, error=str(exc))
            return
        records, stop, error = _scan(data, 0, len(data))
        ok = bool(records) and records[0][0] == self._next_seq and all(
            s == records[0][0] + i for i, (s, _) in enumerate(records))
        if not ok or error is not None or stop != len(data):
            self.recovery.backlog_left = path
            self.log.error("log.backlog_not_used", path=path, records=len(records), next_seq=self._next_seq,
                           first=records[0][0] if records else None, error=error or "",
                           note="kept for the operator; its seqs are declared lost if the mark covers them")
            return
        i = 0
        try:
            while i < len(records):
                self.append_batch(records[i:i + 1024])
                i += 1024
            if self.durability.mode != "none":
                self.sync()
        except (LogWriteError, OSError) as exc:
            # The disk still refuses them: the caller (the broker) keeps them as its backlog and
            # writes them when it can; the file stays until then.
            self.recovery.backlog_pending = records[i:]
            self.recovery.backlog_error = (exc.errno or 0, str(exc))
            self.log.error("log.backlog_not_written_yet", path=path, first_seq=records[i][0],
                           last_seq=records[-1][0], error=str(exc))
            return
        self.recovery.backlog_restored = (records[0][0], records[-1][0])
        self.log.warning("log.backlog_restored", path=path, first_seq=records[0][0], last_seq=records[-1][0])
        try:
            os.unlink(path)
        except OSError:
            pass

    def _lock_dir(self) -> None:
        import fcntl

        self._lock_fd = os.open(os.path.join(self.directory, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RuntimeError(f"log directory {self.directory} is open by another writer") from None

    def _recover(self, segs: list[tuple[int, str]]) -> None:
        first, path = segs[-1]
        rec = self.recovery
        rec.segment = path
        if self._recover_from_index(first, path):
            return
        with open(path, "rb") as f:
            data = f.read()
        data, header_bad = self._recover_header(path, first, data)
        n = len(data)
        if header_bad is None:
            run = _validate_run(data, SEGMENT_HEADER_SIZE, n, first)
        else:  # a damaged file header: treat it as a corrupt record (records behind it are kept)
            run = _Run(0, first, 0, header_bad, False, [])
        rec.records = run.count
        if run.end < n:
            # Either a damaged tail (nothing valid after it) or corruption in the middle.
            reason = run.error or "truncated record"
            resync = _resync(data, max(run.end + 1, SEGMENT_HEADER_SIZE), n, run.next_seq)
            if resync is not None or header_bad is not None:
                self._recover_past_corruption(path, data, run, reason, resync)
                return
            highest = run.next_seq - 1
            if not self._cut_tail(path, data, run.end, n, highest, reason, force=highest < first):
                self._seal_recovered(path, highest)  # the cut bytes could not be kept: leave them, seal the segment
                return
        self._reopen(path, first, run.next_seq, run.end, _crc32(memoryview(data)[:run.end]), list(run.index))

    def _recover_header(self, path: str, first: int, data: bytes) -> tuple[bytes, str | None]:
        """Look at the last segment's file header: ``(data, None)`` when it is good or was
        repaired (the segment's bytes then), ``(data, why)`` when it is damaged with valid records
        behind it."""
        if data[:SEGMENT_HEADER_SIZE] in (_SEGMENT_HEADER_BYTES, _SEGMENT_HEADER_GAP_BYTES):
            return data, None
        n = len(data)
        if n <= SEGMENT_HEADER_SIZE or _resync(data, SEGMENT_HEADER_SIZE, n, first) is None:
            self._repair_header(path, data)
            return _SEGMENT_HEADER_BYTES, None
        try:
            _check_segment_header(data, path)
            return data, "bad segment header"
        except CorruptRecord as exc:
            return data, exc.reason

    def _repair_header(self, path: str, data: bytes) -> None:
        """No valid record in the last segment. A segment whose creation was torn (a short, zeroed
        or partial header, then zeros) is started afresh; anything else in it is kept aside first
        (a foreign or damaged file is never dropped silently)."""
        rec = self.recovery
        n = len(data)
        torn_creation = (_SEGMENT_HEADER_BYTES.startswith(data[:SEGMENT_HEADER_SIZE].rstrip(b"\0"))
                         and _NONZERO.search(data, SEGMENT_HEADER_SIZE) is None)
        if not torn_creation:
            copy = self._keep_aside(path, 0, data)
            rec.cut_copy, rec.cut_kind, rec.torn_offset, rec.torn_bytes_cut = copy, "corrupt", 0, n
            rec.corruption.append(CorruptRecord(path, 0, "no valid record behind a bad segment header"))
            self.log.error("log.corrupt_tail_cut", segment=path, offset=0, bytes_cut=n, kept_in=copy,
                           reason="no valid record behind a bad segment header")
        self.log.warning("log.segment_header_repaired", segment=path, bytes=n)
        rec.header_repaired = True
        _cut_file(path, 0, then=_SEGMENT_HEADER_BYTES)

    def _recover_past_corruption(self, path: str, data: bytes, run: _Run, reason: str, resync: int | None) -> None:
        """Corruption in the middle of the last segment (valid records after the bad one at
        ``run.end``, first at ``resync``): keep everything valid, cut what follows the last valid
        record, seal the segment; the next append starts a new one."""
        rec = self.recovery
        n = len(data)
        highest = run.next_seq - 1
        rec.corruption.append(CorruptRecord(path, run.end, reason))
        self.log.error(
            "log.corrupt_record", segment=path, offset=run.end, reason=reason,
            next_valid_offset=resync, last_good_seq=highest,
        )
        highest, good_end = self._walk_valid(path, data, resync, highest, run.end)
        if good_end < n and good_end >= SEGMENT_HEADER_SIZE:
            self._cut_tail(path, data, good_end, n, highest, "after corruption")
        # Seal the corrupt segment; continue in a new one after the highest valid seq.
        self._seal_recovered(path, highest)

    def _walk_valid(self, path: str, data: bytes, pos: int | None, highest: int, good_end: int) -> tuple[int, int]:
        """Walk the rest of the segment from the valid record at ``pos`` (more corruption may
        follow, each said) to find the highest valid seq and the end of the last valid record."""
        n = len(data)
        while pos is not None:
            seq0 = _valid_at(data, pos, n)
            run2 = _validate_run(data, pos, n, seq0 if seq0 is not None else 0)
            if run2.count:
                highest = max(highest, run2.next_seq - 1)
                good_end = run2.end
            if run2.end >= n:
                break
            nxt = _resync(data, run2.end + 1, n, highest + 1)
            if nxt is None:
                break
            reason2 = run2.error or "truncated record"
            self.recovery.corruption.append(CorruptRecord(path, run2.end, reason2))
            self.log.error("log.corrupt_record", segment=path, offset=run2.end, reason=reason2,
                           next_valid_offset=nxt)
            pos = nxt
        return highest, good_end

    def _reopen(self, path: str, first: int, next_seq: int, size: int, crc: int | None,
                index: list[tuple[int, int]]) -> None:
        """Reopen the last segment for appending at ``size``, with a fresh index (``crc`` None:
        the whole-file sum is not known, the sealed scan makes it)."""
        self._seg_path = path
        self._seg_first = first
        self._next_seq = next_seq
        self._size = size
        self._seg_crc = crc or 0
        self._seg_crc_known = crc is not None
        try:
            _write_index_file(path, index)
        except OSError as exc:
            self.log.warning("log.index_write_failed", segment=path, error=str(exc))
        self._idx_last = index[-1] if index else (first, SEGMENT_HEADER_SIZE)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._idx_fd = os.open(_index_path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _recover_from_index(self, first: int, path: str) -> bool:
        """Reopen the last segment by checking only what follows its last index entry, when that
        entry points at a valid record and everything after it is valid to the end: the records
        before it were checked when this log was last opened or as they were appended, and what a
        crash can leave damaged is the tail. A broker restart then costs the tail (at most
        INDEX_EVERY_RECORDS records or INDEX_EVERY_BYTES), not the whole segment (64 MiB: 0.55 s
        of Python on this machine, with pulse's heartbeats paused behind it: its timers go through
        the bus). The rest is checked in the background (``scan_sealed``: ``unchecked_prefix``).
        False: anything unusual (no index, a bad header, a bad or partial tail), and ``_recover``
        reads and checks the whole segment as before."""
        index = _read_index(path)
        if not index:
            return False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            size = os.fstat(fd).st_size
            if os.pread(fd, SEGMENT_HEADER_SIZE, 0) not in (_SEGMENT_HEADER_BYTES, _SEGMENT_HEADER_GAP_BYTES):
                return False
            for k in range(len(index) - 1, -1, -1):
                seq_k, off_k = index[k]
                if SEGMENT_HEADER_SIZE < off_k < size and seq_k >= first:
                    break
            else:
                return False
            if off_k < INDEX_EVERY_BYTES:
                return False  # a small segment: the whole check costs little
            tail = os.pread(fd, size - off_k, off_k)
        finally:
            os.close(fd)
        if len(tail) != size - off_k or _valid_at(tail, 0, len(tail), seq_k, seq_k) != seq_k:
            return False
        run = _validate_run(tail, 0, len(tail), seq_k)
        if run.error is not None or run.end != len(tail):
            return False  # a torn or corrupt tail: the whole segment is looked at
        rec = self.recovery
        rec.records = run.next_seq - first
        rec.unchecked_prefix = (path, first, off_k)
        # the prefix was not read: no whole-file sum (the sealed scan makes it)
        self._reopen(path, first, run.next_seq, size, None, index[:k + 1] + [(q, off_k + o) for q, o in run.index])
        return True

    def _seal_recovered(self, path: str, highest: int) -> None:
        """Leave the last segment as it is (sealed); the next append starts a new one."""
        self._next_seq = highest + 1
        self._seg_path = path
        self._seg_first = int(os.path.basename(path)[:20])
        self._fd = self._idx_fd = None
        self.log.error("log.segment_sealed_after_corruption", segment=path, next_seq=highest + 1)

    def _cut_tail(self, path: str, data: bytes, bad_at: int, n: int, highest: int, reason: str,
                  force: bool = False) -> bool:
        """Cut ``data[bad_at:n]`` (nothing valid in it) off the segment, keeping a copy beside
        it (unless it is all zeros). False, and nothing cut, when the copy cannot be written
        (unless ``force``: a segment with no valid record cannot be sealed, it is cut anyway)."""
        rec = self.recovery
        kind = _classify_tail(data, bad_at, n)
        cut = n - bad_at
        walk = _walk_count(data, bad_at, n, highest + 1) if kind == "corrupt" else 0
        if walk:  # the headers say these seqs were written: never give them to new records
            self._assigned = max(self._assigned, highest + walk)
        copy: str | None = None
        if _NONZERO.search(data, bad_at, n) is not None:
            try:
                copy = self._keep_aside(path, bad_at, data[bad_at:n])
            except OSError as exc:
                if not force:
                    self.log.error("log.tail_not_cut", segment=path, offset=bad_at, bytes=cut, kind=kind,
                                   reason=reason, error=str(exc),
                                   note="the bytes could not be copied aside: left in place, segment sealed")
                    rec.cut_kind = kind
                    if kind == "corrupt":
                        rec.corruption.append(CorruptRecord(path, bad_at, reason))
                    return False
                self.log.error("log.tail_copy_failed", segment=path, offset=bad_at, bytes=cut, error=str(exc))
                copy = None
        event = "log.torn_tail_cut" if kind == "torn" else "log.corrupt_tail_cut"
        (self.log.warning if kind == "torn" else self.log.error)(
            event, segment=path, offset=bad_at, bytes_cut=cut, reason=reason, last_seq=highest,
            kept_in=copy or "(zeros, nothing kept)", records_in_cut=walk,
        )
        rec.torn_offset = bad_at
        rec.torn_bytes_cut = cut
        rec.cut_kind = kind
        rec.cut_copy = copy
        rec.cut_last_seq = highest
        _cut_file(path, bad_at)
        return True

    def _keep_aside(self, path: str, offset: int, blob: bytes) -> str:
        """Write ``blob`` (bytes about to be cut from ``path`` at ``offset``) to a new file beside
        it, never over an earlier copy, durably unless durability is none; its path. OSError
        (and no file left) when it cannot."""
        base = _cut_copy_name(path, offset)
        copy, k = base, 1
        while os.path.exists(copy):
            copy, k = f"{base}.{k}", k + 1
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            try:
                _write_all(fd, blob)
                if self.durability.mode != "none":
                    os.fsync(fd)
            finally:
                os.close(fd)
            if self.durability.mode != "none":
                fsync_dir(self.directory)
        except OSError:
            try:
                os.unlink(copy)
            except OSError:
                pass
            raise
        return copy

    def _create_segment(self, first_seq: int, gap: bool = False) -> None:
        path = os.path.join(self.directory, segment_name(first_seq))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        idx_fd = None
        try:
            _write_all(fd, _SEGMENT_HEADER_GAP_BYTES if gap else _SEGMENT_HEADER_BYTES)
            idx_fd = os.open(_index_path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            if self.durability.mode != "none":
                os.fsync(fd)
                fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            if idx_fd is not None:
                os.close(idx_fd)
            for p in (path, _index_path(path)):
                try:
                    os.unlink(p)
                except OSError:
                    pass
            raise
        self._fd = fd
        self._idx_fd = idx_fd
        self._seg_path = path
        self._seg_first = first_seq
        self._size = SEGMENT_HEADER_SIZE
        self._seg_crc = _crc32(_SEGMENT_HEADER_GAP_BYTES if gap else _SEGMENT_HEADER_BYTES)
        self._seg_crc_known = True
        self._idx_last = (first_seq, SEGMENT_HEADER_SIZE)

    # ---- properties

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def last_seq(self) -> int:
        """The last appended seq (0 for an empty log starting at 1)."""
        return self._next_seq - 1

    @property
    def durable_seq(self) -> int:
        return self._durable_seq

    @property
    def first_seq(self) -> int:
        """The oldest retained seq (``next_seq`` when the log holds no record)."""
        segs = list_segments(self.directory)
        if not segs:
            return self._next_seq
        return min(segs[0][0], self._next_seq)

    @property
    def active_segment(self) -> str:
        return self._seg_path

    # ---- appending

    def append(self, seq: int, body: bytes) -> None:
        self.append_batch(((seq, body),))

    def append_batch(self, records: Sequence[tuple[int, bytes]]) -> None:
        """Append records with contiguous seqs starting at ``next_seq``, in one ``os.write``.
        Raises ValueError (nothing written) on a wrong seq, LogWriteError on a write error
        (nothing of this batch remains in the log)."""
        if self._closed:
            raise ValueError("log is closed")
        if self._broken is not None or self._sync_error is not None:
            self._repair()
        if self._fd is None or self._size >= self.segment_bytes:
            self._start_or_rotate()
        data, pos, expect, idx_entries = _frame_records(records, self._next_seq, self._size, self._idx_last)
        if expect == self._next_seq:
            return
        fd = self._fd
        assert fd is not None  # _start_or_rotate made the active segment
        try:
            _write_all(fd, data)
        except OSError as exc:
            self._undo_partial_write(fd, exc)
        self._seg_crc = _crc32(data, self._seg_crc)
        self._size = pos
        self._next_seq = expect
        last = expect - 1
        self._written_seq = last
        if last - self._hwm >= HWM_EVERY:
            self._note_hwm(last)
        if idx_entries is not None:
            self._idx_last = idx_entries[-1]
            self._write_index_entries(idx_entries)
        self._written(fd, last)

    def _start_or_rotate(self) -> None:
        """Make the active segment one the next append can go to: start one (none yet after
        recovery sealed the last, or a declared gap) or rotate a full one."""
        if self._fd is None:
            try:
                self._start_segment()
            except OSError as exc:
                self.log.warning("log.write_failed", segment=os.path.join(self.directory, segment_name(self._next_seq)),
                                 offset=0, error=str(exc), errno=exc.errno)
                raise LogWriteError(exc.errno or _errno.EIO, f"could not start a segment: {exc.strerror or exc}",
                                    self.directory) from exc
        else:
            self._rotate()

    def _written(self, fd: int, last: int) -> None:
        """Records up to ``last`` are written: make them durable as the durability mode says."""
        mode = self.durability.mode
        if mode == "group":
            if last - self._durable_seq >= self.durability.max_records:
                if not self._urgent.is_set():
                    self._urgent.set()
            if not self._wake.is_set():
                self._wake.set()
        elif mode == "always":
            try:
                os.fsync(fd)
            except OSError as exc:
                self._sync_error = exc
                raise LogWriteError(exc.errno or _errno.EIO, f"fsync failed: {exc.strerror}", self._seg_path) from exc
            self._publish_durable(last)
        else:
            self._durable_seq = last
            if self._pipe is not None or self._on_durable is not None:
                self._publish_durable(last)

    def _undo_partial_write(self, fd: int, exc: OSError) -> None:
        try:
            os.ftruncate(fd, self._size)
        except OSError as exc2:
            self._broken = f"could not truncate back after a failed write: {exc2}"
            self.log.error("log.write_failed_truncate_failed", segment=self._seg_path, offset=self._size,
                           error=str(exc), truncate_error=str(exc2))
        else:
            self.log.warning("log.write_failed", segment=self._seg_path, offset=self._size, error=str(exc),
                             errno=exc.errno)
        raise LogWriteError(exc.errno or _errno.EIO, f"append failed: {exc.strerror or exc}", self._seg_path) from exc

    def _repair(self) -> None:
        if self._fd is None:
            self._broken = None
            return
        if self._sync_error is not None:
            exc = self._sync_error
            raise LogWriteError(exc.errno or _errno.EIO, f"an earlier fsync failed: {exc.strerror or exc}; "
                                "reopen the log", self._seg_path)
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as exc:
            raise LogWriteError(exc.errno or _errno.EIO, f"log is inconsistent and cannot be repaired: {exc}",
                                self._seg_path) from exc
        self._broken = None

    def _write_index_entries(self, entries: list) -> None:
        if self._idx_fd is None:
            return
        data = b"".join(INDEX_ENTRY.pack(s, o) for s, o in entries)
        try:
            _write_all(self._idx_fd, data)
        except OSError as exc:
            # The index is a hint: drop it for this segment rather than fail the append.
            self.log.warning("log.index_write_failed", segment=self._seg_path, error=str(exc))
            try:
                os.close(self._idx_fd)
                os.unlink(_index_path(self._seg_path))
            except OSError:
                pass
            self._idx_fd = None

    def _rotate(self) -> None:
        old_fd, old_idx, old_path = self._fd, self._idx_fd, self._seg_path
        assert old_fd is not None  # a full active segment
        old_sum = (self._size, self._seg_crc)
        old_crc_known = self._seg_crc_known
        with self._fd_lock:  # wait for an fsync of the old segment in progress
            if self.durability.mode != "none":
                try:
                    os.fsync(old_fd)
                    if old_idx is not None:
                        os.fsync(old_idx)
                except OSError as exc:
                    self._sync_error = exc
                    raise LogWriteError(exc.errno or _errno.EIO, f"fsync failed: {exc.strerror}", old_path) from exc
            try:
                self._create_segment(self._next_seq)
            except OSError as exc:
                self._fd, self._idx_fd, self._seg_path = old_fd, old_idx, old_path
                self.log.warning("log.rotate_failed", segment=old_path, error=str(exc))
                raise LogWriteError(exc.errno or _errno.EIO, f"could not start a new segment: {exc.strerror or exc}",
                                    old_path) from exc
            os.close(old_fd)
            if old_idx is not None:
                os.close(old_idx)
        if old_crc_known:  # else the sealed scan checks it record by record, and writes its sum
            _write_sum(old_path, *old_sum, self.log)
        self._note_hwm(self._written_seq)
        if self.durability.mode != "none":
            self._publish_durable(self._written_seq)
        self.log.info("log.segment_rotated", sealed=old_path, segment=self._seg_path, first_seq=self._seg_first)
        if self.retention.max_bytes is not None or self.retention.max_age_s is not None:
            self.apply_retention()

    # ---- durability

    def _publish_durable(self, seq: int) -> None:
        with self._durable_cond:
            if seq <= self._durable_seq and self.durability.mode != "none":
                return
            self._durable_seq = seq
            self._durable_cond.notify_all()
        if self._pipe is not None:
            try:
                os.write(self._pipe[1], b"\x01")
            except (BlockingIOError, OSError):
                pass
        if self._on_durable is not None:
            try:
                self._on_durable(seq)
            except Exception as exc:  # a callback must not break the fsync thread
                self.log.error("log.on_durable_failed", error=repr(exc))

    def _sync_loop(self) -> None:
        interval = self.durability.interval_ms / 1000.0
        max_records = self.durability.max_records
        wake, urgent = self._wake, self._urgent
        while True:
            wake.wait()
            wake.clear()
            if self._stop:
                return
            if interval > 0 and self._written_seq - self._durable_seq < max_records:
                urgent.wait(interval)
            urgent.clear()
            self._fsync_now()
            if self._stop:
                return

    def _fsync_now(self, force: bool = False) -> None:
        with self._fd_lock:
            seq = self._written_seq
            if self._fd is None or (seq <= self._durable_seq and not force):
                return
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._sync_error = exc
                self.log.error("log.fsync_failed", segment=self._seg_path, error=str(exc), errno=exc.errno)
                with self._durable_cond:
                    self._durable_cond.notify_all()
                return
        self._publish_durable(seq)
        self._note_hwm(seq)  # off the append path: the mark follows the commits

    def sync(self) -> int:
        """fsync now; returns the durable seq."""
        if self._closed:
            return self._durable_seq
        if self._sync_error is not None:
            self._repair()
        self._fsync_now(force=True)
        if self._sync_error is not None:
            self._repair()
        return self._durable_seq

    def wait_durable(self, seq: int, timeout: float | None = None) -> bool:
        """Block until ``durable_seq >= seq``; False on timeout (or a failed fsync)."""
        if self._durable_seq >= seq:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._durable_cond:
            while self._durable_seq < seq:
                if self._sync_error is not None or self._closed:
                    return False
                if deadline is None:
                    self._durable_cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._durable_cond.wait(left)
        return True

    def durable_fd(self) -> int:
        """A readable fd that becomes readable when ``durable_seq`` advances (a pipe: drain it
        with ``drain_durable_fd``), for a zmq poller."""
        if self._pipe is None:
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._pipe = (r, w)
        return self._pipe[0]

    def drain_durable_fd(self) -> int:
        """Empty the durable pipe; returns the current ``durable_seq``."""
        if self._pipe is not None:
            try:
                while os.read(self._pipe[0], 4096):
                    pass
            except BlockingIOError:
                pass
        return self._durable_seq

    # ---- the start-up scan of sealed segments

    def scan_sealed(self, on_problem: Callable[[CorruptRecord], None] | None = None,
                    stop: Callable[[], bool] | None = None) -> SealedScan:
        """Check every sealed segment (opening the log rescans only the last one). A segment
        sealed by this code has a ``.sum`` (size, whole-file CRC32): one C-speed pass that lets
        other threads run. Any other (an older log's, one sealed by recovery), or one whose sum
        does not match, is checked record by record, and gets its ``.sum`` when clean. Meant for
        a background thread at start (the broker runs it); safe while appends go on."""
        t0 = time.monotonic()
        out = SealedScan()
        prefix = self.recovery.unchecked_prefix  # (the last segment at the open: its part not checked then)
        for first, path in list_segments(self.directory):
            if (stop is not None and stop()) or first >= self._seg_first or path == self._seg_path:
                break
            if self._scan_segment(first, path, out, on_problem) and prefix is not None and path == prefix[0]:
                prefix = None  # sealed since the open: checked whole here
        if prefix is not None and not (stop is not None and stop()):
            self._scan_prefix(*prefix, out, on_problem)
        out.seconds = time.monotonic() - t0
        return out

    def _scan_segment(self, first: int, path: str, out: SealedScan,
                      on_problem: Callable[[CorruptRecord], None] | None) -> bool:
        """Check one sealed segment: by its ``.sum`` when that matches, else record by record (and
        write its sum when it is clean). False when it is gone (deleted by retention meanwhile)."""
        try:
            size, crc = _file_crc(path)
        except OSError:  # deleted by retention meanwhile
            return False
        out.segments += 1
        out.bytes += size
        if _read_sum(path) == (size, crc):
            out.by_sum += 1
            return True
        out.by_records += 1
        try:
            sc = check_segment(path, first)
        except OSError:
            return True
        self._report(out, path, sc.corrupt, "sealed scan", on_problem)
        if not sc.corrupt:
            _write_sum(path, size, crc, self.log)
        return True

    def _scan_prefix(self, path: str, first: int, upto: int, out: SealedScan,
                     on_problem: Callable[[CorruptRecord], None] | None) -> None:
        """Check the part before ``upto`` of the segment reopened from its index at the open (not
        checked then: ``Recovery.unchecked_prefix``)."""
        try:
            with open(path, "rb") as f:
                data = f.read(upto)
        except OSError:  # sealed and deleted by retention meanwhile
            return
        if len(data) == upto:
            out.bytes += upto
            self._report(out, path, _check_data(path, first, data, False)[0].corrupt,
                         "start-up scan of the last segment's checked-before part", on_problem)

    def _report(self, out: SealedScan, path: str, corrupt: list[tuple[int, str]], found_by: str,
                on_problem: Callable[[CorruptRecord], None] | None) -> None:
        for off, why in corrupt:
            exc = CorruptRecord(path, off, why)
            out.problems.append(exc)
            self.log.error("log.corrupt_record", segment=path, offset=off, reason=why, found_by=found_by)
            if on_problem is not None:
                on_problem(exc)

    # ---- retention

    def apply_retention(self, now_wall: float | None = None) -> list[str]:
        """Delete whole sealed segments, oldest first, while the log exceeds ``max_bytes`` or the
        segment is older than ``max_age_s``. Never the active segment. Returns the deleted paths."""
        max_bytes, max_age = self.retention.max_bytes, self.retention.max_age_s
        if max_bytes is None and max_age is None:
            return []
        now = time.time() if now_wall is None else now_wall
        segs = list_segments(self.directory)
        sizes = {}
        for _, p in segs:
            try:
                sizes[p] = os.path.getsize(p)
            except FileNotFoundError:
                sizes[p] = 0
        total = sum(sizes.values())
        deleted = []
        for first, path in segs:
            if path == self._seg_path or first >= self._seg_first:
                break
            too_big = max_bytes is not None and total > max_bytes
            too_old = False
            if max_age is not None:
                try:
                    too_old = os.path.getmtime(path) < now - max_age
                except FileNotFoundError:
                    too_old = True
            if not (too_big or too_old):
                break
            for p in (path, _index_path(path), _sum_path(path)):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
            total -= sizes[path]
            deleted.append(path)
            self.log.info("log.segment_deleted", segment=path, bytes=sizes[path],
                          reason="max_bytes" if too_big else "max_age")
        return deleted

    # ---- closing

    def close(self) -> None:
        if self._closed:
            return
        if self._thread is not None:
            self._stop = True
            self._wake.set()
            self._urgent.set()
            self._thread.join()
            self._thread = None
        self._note_hwm(self._written_seq)
        try:
            if self.durability.mode != "none" and self._sync_error is None:
                with self._fd_lock:
                    if self._fd is not None:
                        os.fsync(self._fd)
                    if self._idx_fd is not None:
                        os.fsync(self._idx_fd)
                    if self._hwm_fd is not None:
                        try:
                            os.fsync(self._hwm_fd)
                        except OSError:
                            pass
                self._publish_durable(self._written_seq)
        finally:
            self._closed = True
            with self._durable_cond:
                self._durable_cond.notify_all()
            for fd in (self._fd, self._idx_fd, self._hwm_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._idx_fd = self._hwm_fd = None
            if self._pipe is not None:
                os.close(self._pipe[0])
                os.close(self._pipe[1])
                self._pipe = None
            os.close(self._lock_fd)

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _frame_records(records: Sequence[tuple[int, bytes]], expect: int, pos: int,
                   idx_last: tuple[int, int]) -> tuple[bytes, int, int, list | None]:
    """Frame records for the active segment, where the next seq is ``expect`` and the next offset
    ``pos``: (their bytes, the offset after them, the seq after them, the index entries due since
    ``idx_last``, None when none). ValueError on a wrong seq or a body too big."""
    idx_seq, idx_off = idx_last
    parts: list = []
    ap = parts.append
    pack = _pack_header
    crc32 = _crc32
    idx_entries = None
    for seq, body in records:
        if seq != expect:
            raise ValueError(f"append of seq {seq}, but the next seq is {expect}")
        length = len(body)
        if length > MAX_BODY_BYTES:
            raise ValueError(f"body of {length} bytes exceeds MAX_BODY_BYTES")
        if seq - idx_seq >= INDEX_EVERY_RECORDS or pos - idx_off >= INDEX_EVERY_BYTES:
            if idx_entries is None:
                idx_entries = []
            idx_entries.append((seq, pos))
            idx_seq, idx_off = seq, pos
        ap(pack(length, crc32(body, crc32(seq.to_bytes(8, "little"))), seq))
        ap(body)
        pos += HEADER_SIZE + length
        expect += 1
    return b"".join(parts), pos, expect, idx_entries


def _write_all(fd: int, data: bytes) -> None:
    n = os.write(fd, data)
    if n < len(data):
        mv = memoryview(data)
        while n < len(data):
            w = os.write(fd, mv[n:])
            if w == 0:
                raise OSError(_errno.EIO, "write returned 0")
            n += w
