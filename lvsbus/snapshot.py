"""Snapshots of a service core's state, so a restart reads the latest snapshot plus the log after it.

Layout: ``<directory>/<name>/<seq:020d>.snap``; each file is a 32-byte header then the body::

    <8sIIQQ  magic b"LVSBSNP\\0", format version 1, crc32(body), seq, body length

``save`` is atomic (write a temporary file in the same directory, fsync, rename, fsync the
directory) and keeps the newest ``keep`` snapshots. ``latest`` returns the newest snapshot that
validates; a corrupt one is reported through the logger and skipped in favour of the previous.
"""
from __future__ import annotations

import os
import re
import struct
import zlib

import structlog

from .log import _fsync_dir

__all__ = ["SnapshotStore", "SnapshotCorrupt", "SNAPSHOT_MAGIC"]

SNAPSHOT_MAGIC = b"LVSBSNP\0"
SNAPSHOT_VERSION = 1
_HEADER = struct.Struct("<8sIIQQ")
_SNAP_RE = re.compile(r"^(\d{20})\.snap$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class SnapshotCorrupt(Exception):
    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"snapshot {path} is corrupt: {reason}")


class SnapshotStore:
    """Snapshots of named states, each at a log seq."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3, logger=None):
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.directory = os.fspath(directory)
        self.keep = keep
        self.log = logger if logger is not None else structlog.get_logger("lvsbus.snapshot")

    def _dir(self, name: str) -> str:
        if not _NAME_RE.match(name):
            raise ValueError(f"bad snapshot name {name!r}")
        return os.path.join(self.directory, name)

    def save(self, name: str, seq: int, body: bytes) -> str:
        """Write the snapshot of ``name`` at ``seq`` atomically; returns its path."""
        if seq < 0:
            raise ValueError("seq must be >= 0")
        d = self._dir(name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"{seq:020d}.snap")
        tmp = os.path.join(d, f".{seq:020d}.snap.tmp.{os.getpid()}")
        header = _HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, zlib.crc32(body), seq, len(body))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            try:
                data = memoryview(header + bytes(body))
                while data:
                    n = os.write(fd, data)
                    data = data[n:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(d)
        self._prune(d)
        return path

    def seqs(self, name: str) -> list[int]:
        """The seqs of the stored snapshots of ``name``, oldest first (valid or not)."""
        d = self._dir(name)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in map(_SNAP_RE.match, names) if m)

    def load(self, name: str, seq: int) -> bytes:
        """The body of one snapshot; raises SnapshotCorrupt if it does not validate."""
        path = os.path.join(self._dir(name), f"{seq:020d}.snap")
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < _HEADER.size:
            raise SnapshotCorrupt(path, f"truncated header ({len(data)} bytes)")
        magic, version, crc, hseq, length = _HEADER.unpack_from(data)
        if magic != SNAPSHOT_MAGIC:
            raise SnapshotCorrupt(path, f"bad magic {magic!r}")
        if version != SNAPSHOT_VERSION:
            raise SnapshotCorrupt(path, f"unsupported version {version}")
        if hseq != seq:
            raise SnapshotCorrupt(path, f"header seq {hseq} does not match the file name")
        body = data[_HEADER.size:]
        if len(body) != length:
            raise SnapshotCorrupt(path, f"body is {len(body)} bytes, header says {length}")
        if zlib.crc32(body) != crc:
            raise SnapshotCorrupt(path, "crc mismatch")
        return body

    def latest(self, name: str) -> tuple[int, bytes] | None:
        """``(seq, body)`` of the newest valid snapshot of ``name``, or None."""
        for seq in reversed(self.seqs(name)):
            try:
                return seq, self.load(name, seq)
            except SnapshotCorrupt as exc:
                self.log.error("snapshot.corrupt_skipped", snapshot=name, seq=seq, path=exc.path, reason=exc.reason)
            except FileNotFoundError:  # pruned meanwhile
                continue
        return None

    def _prune(self, d: str) -> None:
        names = os.listdir(d)
        snaps = sorted(n for n in names if _SNAP_RE.match(n))
        for n in snaps[:-self.keep]:
            try:
                os.unlink(os.path.join(d, n))
            except FileNotFoundError:
                pass
        # Leftovers of a save that crashed before its rename (one writer per name).
        own = f".tmp.{os.getpid()}"
        for n in names:
            if n.startswith(".") and ".snap.tmp." in n and not n.endswith(own):
                try:
                    os.unlink(os.path.join(d, n))
                except FileNotFoundError:
                    pass
