"""Segment files and the files beside them, in one log directory.

Segment files ``<first_seq:020d>.seg``, each starting with a 16-byte file header
(``b"LVSBLOG\\0"``, u32 version 1, u32 flags), then records (framing.py) with contiguous seqs.
Beside each segment a sparse index ``<first_seq:020d>.idx`` of ``<QQ`` (seq, offset) entries, a
hint verified on use, and once sealed a ``.sum`` (size, whole-file CRC32) for the start-up scan.
``assigned.hwm`` holds the highest seq ever handed out. Bytes recovery cuts are kept as
``<segment>.cut-<offset>``. Names, headers, these side files and the file-level helpers (cut,
fsync) are here; what the writer and the readers do with them is in writer.py and reader.py.
"""
from __future__ import annotations

import os
import re
import struct
from typing import Sequence

from lvsbus.log.framing import (
    HEADER_SIZE,
    MAX_BODY_BYTES,
    CorruptRecord,
    _crc32,
    _unpack_header,
    _validate_run,
)

SEGMENT_MAGIC = b"LVSBLOG\0"
SEGMENT_VERSION = 1
SEGMENT_HEADER = struct.Struct("<8sII")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size  # 16
#: segment header flag: the seqs between the previous segment's last record and this segment's first
#: were handed out (delivered live) but never written: a declared gap, not corruption
FLAG_GAP_BEFORE = 1
_SEGMENT_HEADER_BYTES = SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0)
_SEGMENT_HEADER_GAP_BYTES = SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, FLAG_GAP_BEFORE)

#: the high-water mark of assigned seqs: ``<4sQI`` (magic, seq, crc32 of the first 12 bytes) at
#: offset 0 of a file preallocated to HWM_FILE_BYTES, overwritten in place (so it can be updated
#: when the disk is full)
HWM_NAME = "assigned.hwm"
HWM_MAGIC = b"LHWM"
HWM_RECORD = struct.Struct("<4sQI")
HWM_FILE_BYTES = 4096
#: bytes cut from a segment's tail at recovery are kept beside it as ``<segment>.cut-<offset>``
CUT_SUFFIX = ".cut-"

INDEX_ENTRY = struct.Struct("<QQ")

_SEG_RE = re.compile(r"^(\d{20})\.seg$")


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.seg"


def _index_path(seg_path: str) -> str:
    return seg_path[:-4] + ".idx"


def list_segments(directory: str) -> list[tuple[int, str]]:
    """Sorted ``(first_seq, path)`` of the segment files in ``directory``."""
    out = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        m = _SEG_RE.match(name)
        if m:
            out.append((int(m.group(1)), os.path.join(directory, name)))
    out.sort()
    return out


def _check_segment_header(data: bytes, path: str) -> int:
    """Raises CorruptRecord on a bad header; returns its flags."""
    if len(data) < SEGMENT_HEADER_SIZE:
        raise CorruptRecord(path, 0, f"segment header truncated ({len(data)} bytes)")
    magic, version, flags = SEGMENT_HEADER.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        raise CorruptRecord(path, 0, f"bad segment magic {magic[:8]!r}: not an lvsbus log segment")
    if version != SEGMENT_VERSION:
        raise CorruptRecord(path, 0, f"unsupported segment format version {version}")
    if flags & ~FLAG_GAP_BEFORE:
        raise CorruptRecord(path, 0, f"unknown segment header flags {flags:#x}")
    return flags


def _read_hwm(directory: str) -> int:
    """The assigned-seq high-water mark stored in ``directory`` (0: none, or unreadable)."""
    try:
        with open(os.path.join(directory, HWM_NAME), "rb") as f:
            data = f.read(HWM_RECORD.size)
    except OSError:
        return 0
    if len(data) < HWM_RECORD.size:
        return 0
    magic, seq, crc = HWM_RECORD.unpack(data)
    if magic != HWM_MAGIC or _crc32(data[:12]) != crc:
        return 0
    return seq


def _pack_hwm(seq: int) -> bytes:
    head = HWM_MAGIC + seq.to_bytes(8, "little")
    return head + _crc32(head).to_bytes(4, "little")


def _cut_copy_name(seg_path: str, offset: int) -> str:
    return f"{seg_path}{CUT_SUFFIX}{offset}"


def _classify_tail(data: bytes, bad_at: int, n: int) -> str:
    """Bytes ``data[bad_at:n]`` with no valid record after them: ``torn`` when they are one
    incomplete record (a write cut short) or zeros (a file extended by a crash), ``corrupt`` when
    they hold a complete record that fails its CRC (bytes damaged after they were written)."""
    written = len(data[bad_at:n].rstrip(b"\0"))  # up to the last non-zero byte (zeros after: an extension)
    if written < HEADER_SIZE:
        return "torn"
    length = _unpack_header(data, bad_at)[0]
    if length <= MAX_BODY_BYTES and HEADER_SIZE + length > written:
        return "torn"  # an incomplete record (its last bytes missing or zeros)
    return "corrupt"


def _walk_count(data: bytes, pos: int, n: int, expect: int) -> int:
    """How many complete records, by their headers alone (CRC not checked), follow at ``pos`` with
    the seqs ``expect``, ``expect + 1``... : the records a damaged tail held, when it can tell."""
    count = 0
    while pos + HEADER_SIZE <= n:
        length, _crc, seq = _unpack_header(data, pos)
        if seq != expect + count or length > MAX_BODY_BYTES or pos + HEADER_SIZE + length > n:
            break
        count += 1
        pos += HEADER_SIZE + length
    return count


def _read_index(seg_path: str) -> list[tuple[int, int]]:
    try:
        with open(_index_path(seg_path), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    usable = len(data) - len(data) % INDEX_ENTRY.size
    return [e for e in INDEX_ENTRY.iter_unpack(data[:usable])]


def _write_index_file(seg_path: str, entries: Sequence[tuple[int, int]]) -> None:
    tmp = _index_path(seg_path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(b"".join(INDEX_ENTRY.pack(s, o) for s, o in entries))
    os.replace(tmp, _index_path(seg_path))


def rebuild_index(seg_path: str) -> int:
    """Rebuild the index of one segment from its records (up to the first bad one). Returns the
    number of entries written."""
    with open(seg_path, "rb") as f:
        data = f.read()
    _check_segment_header(data, seg_path)
    first = int(os.path.basename(seg_path)[:20])
    run = _validate_run(data, SEGMENT_HEADER_SIZE, len(data), first)
    _write_index_file(seg_path, run.index)
    return len(run.index)


def _cut_file(path: str, size: int, then: bytes = b"") -> None:
    """Truncate ``path`` to ``size`` bytes, append ``then``, and fsync it."""
    with open(path, "r+b") as f:
        f.truncate(size)
        if then:
            f.seek(size)
            f.write(then)
        f.flush()
        os.fsync(f.fileno())


SUM_ENTRY = struct.Struct("<4sQI")  # magic, segment size, crc32 of the whole segment file
SUM_MAGIC = b"LSUM"


def _sum_path(seg_path: str) -> str:
    return seg_path[:-4] + ".sum"


def _write_sum(seg_path: str, size: int, crc: int, logger=None) -> None:
    """A sealed segment's size and whole-file CRC, beside it: the start-up scan checks a sealed
    segment with one C-speed pass (zlib.crc32, which lets other threads run)."""
    tmp = _sum_path(seg_path) + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(SUM_ENTRY.pack(SUM_MAGIC, size, crc))
        os.replace(tmp, _sum_path(seg_path))
    except OSError as exc:
        if logger is not None:
            logger.warning("log.sum_write_failed", segment=seg_path, error=str(exc))


def _read_sum(seg_path: str) -> tuple[int, int] | None:
    try:
        with open(_sum_path(seg_path), "rb") as f:
            data = f.read(SUM_ENTRY.size + 1)
    except OSError:
        return None
    if len(data) != SUM_ENTRY.size:
        return None
    magic, size, crc = SUM_ENTRY.unpack(data)
    return (size, crc) if magic == SUM_MAGIC else None


def _file_crc(path: str, chunk: int = 1 << 20) -> tuple[int, int]:
    """(size, crc32) of a file, read in chunks (zlib.crc32 releases the GIL on big buffers)."""
    crc = 0
    size = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(chunk)
            if not b:
                return size, crc
            crc = _crc32(b, crc)
            size += len(b)
