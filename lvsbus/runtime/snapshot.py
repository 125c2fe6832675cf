"""Snapshots of a service core's state, so a restart reads the latest snapshot plus the log after it.

Layout: ``<directory>/<name>/<seq:020d>.snap``; each file is a 32-byte header then the body::

    <8sIIQQ  magic b"LVSBSNP\\0", file format, crc32(body), seq, body length

File format 2 (written now): the body is msgpack ``{"core": name, "v": version, "state": data}``,
the core's own snapshot version beside its data (``encode_state`` / ``decode_state``). File
format 1 (written before snapshots were versioned) holds the core's data alone: it is read as that
core's snapshot version 1. ``decode_state`` upcasts an older version with the core's
``snapshot_upcasters`` and refuses a version it does not know (``SnapshotVersionError``): a
snapshot is never guessed at; the runtime then starts from an older snapshot or the log.

``save`` is atomic (write a temporary file in the same directory, fsync, rename, fsync the
directory) and keeps the newest ``keep`` snapshots. ``latest`` returns the newest snapshot that
validates; a corrupt one is reported through the logger and skipped in favour of the previous.
"""
from __future__ import annotations

import os
import re
import struct
import zlib

from typing import Any

import msgpack
import structlog

from lvsbus.runtime.core import Core
from lvsbus.host.files import write_atomically

__all__ = ["SnapshotStore", "SnapshotCorrupt", "SnapshotVersionError", "SNAPSHOT_MAGIC", "encode_state", "decode_state"]

SNAPSHOT_MAGIC = b"LVSBSNP\0"
SNAPSHOT_VERSION = 2  # the file format written; 1 is still read (see the module doc)
_READABLE = (1, 2)
_HEADER = struct.Struct("<8sIIQQ")
_SNAP_RE = re.compile(r"^(\d{20})\.snap$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class SnapshotCorrupt(Exception):
    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"snapshot {path} is corrupt: {reason}")


class SnapshotVersionError(ValueError):
    """A snapshot this code must not restore: another core's, or a version it does not know."""


def encode_state(core: Core, state: Any) -> bytes:
    """The body of a file-format-2 snapshot of ``core`` in ``state``."""
    return msgpack.packb({"core": core.name, "v": core.snapshot_version, "state": core.snapshot(state)},
                         use_bin_type=True)


def decode_state(core: Core, body: bytes, file_format: int = SNAPSHOT_VERSION) -> Any:
    """The core's state from a snapshot body, upcast to ``core.snapshot_version``; raises
    SnapshotVersionError for another core's snapshot or an unknown version."""
    data = msgpack.unpackb(body, raw=False, strict_map_key=False)
    if file_format == 1:  # before versioning: the core's data alone, its version 1
        version, state = 1, data
    else:
        if type(data) is not dict or set(data) != {"core", "v", "state"}:
            raise SnapshotVersionError("not a versioned snapshot body")
        if data["core"] != core.name:
            raise SnapshotVersionError(f"a snapshot of {data['core']!r}, not of {core.name!r}")
        version, state = data["v"], data["state"]
        if type(version) is not int:
            raise SnapshotVersionError(f"snapshot version {version!r} is not an integer")
    if version > core.snapshot_version or version < 1:
        raise SnapshotVersionError(f"{core.name} snapshot version {version}: this code reads versions "
                                   f"1..{core.snapshot_version} (a newer lvsbus wrote it?)")
    while version < core.snapshot_version:
        up = core.snapshot_upcasters.get(version)
        if up is None:
            raise SnapshotVersionError(f"{core.name} snapshot version {version}: no upcaster to {version + 1}")
        state, version = up(state), version + 1
    return core.restore(state)


class SnapshotStore:
    """Snapshots of named states, each at a log seq."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3, logger=None):
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.directory = os.fspath(directory)
        self.keep = keep
        self.log = logger if logger is not None else structlog.get_logger("lvsbus.runtime.snapshot")

    def _dir(self, name: str) -> str:
        if not _NAME_RE.match(name):
            raise ValueError(f"bad snapshot name {name!r}")
        return os.path.join(self.directory, name)

    def save(self, name: str, seq: int, body: bytes, file_format: int = SNAPSHOT_VERSION) -> str:
        """Write the snapshot of ``name`` at ``seq`` atomically; returns its path. ``body``: from
        ``encode_state`` (``file_format`` 1 is for tests that need a snapshot of an old release)."""
        if file_format not in _READABLE:
            raise ValueError(f"file format {file_format} is not one this code reads")
        if seq < 0:
            raise ValueError("seq must be >= 0")
        d = self._dir(name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"{seq:020d}.snap")
        header = _HEADER.pack(SNAPSHOT_MAGIC, file_format, zlib.crc32(body), seq, len(body))
        write_atomically(path, header + bytes(body))  # .<name>.tmp.<pid> until the rename: _prune
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
        return self.read(name, seq)[1]

    def read(self, name: str, seq: int) -> tuple[int, bytes]:
        """``(file format, body)`` of one snapshot; raises SnapshotCorrupt if it does not validate."""
        path = os.path.join(self._dir(name), f"{seq:020d}.snap")
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < _HEADER.size:
            raise SnapshotCorrupt(path, f"truncated header ({len(data)} bytes)")
        magic, version, crc, hseq, length = _HEADER.unpack_from(data)
        if magic != SNAPSHOT_MAGIC:
            raise SnapshotCorrupt(path, f"bad magic {magic!r}")
        if version not in _READABLE:
            raise SnapshotCorrupt(path, f"unsupported file format {version}")
        if hseq != seq:
            raise SnapshotCorrupt(path, f"header seq {hseq} does not match the file name")
        body = data[_HEADER.size:]
        if len(body) != length:
            raise SnapshotCorrupt(path, f"body is {len(body)} bytes, header says {length}")
        if zlib.crc32(body) != crc:
            raise SnapshotCorrupt(path, "crc mismatch")
        return version, body

    def latest(self, name: str) -> tuple[int, bytes] | None:
        """``(seq, body)`` of the newest valid snapshot of ``name``, or None."""
        entry = next(self.valid(name), None)
        return None if entry is None else (entry[0], entry[2])

    def valid(self, name: str):
        """``(seq, file format, body)`` of each valid snapshot of ``name``, newest first; a corrupt
        one is reported and skipped."""
        for seq in reversed(self.seqs(name)):
            try:
                fmt, body = self.read(name, seq)
                yield seq, fmt, body
            except SnapshotCorrupt as exc:
                self.log.error("snapshot.corrupt_skipped", snapshot=name, seq=seq, path=exc.path, reason=exc.reason)
            except FileNotFoundError:  # pruned meanwhile
                continue

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
