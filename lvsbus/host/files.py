"""Files written all or nothing: a crash at any instant leaves the old content or the new, never a
mix, and a file that was replaced stays replaced after a power loss.

One way, for every file lvsbus replaces whole (core snapshots, the heartbeat key, pulse's epoch,
the BIRD configuration, the config and password files the console edits): a temporary file in the
same directory, written and fsynced, renamed over the target, then the directory fsynced so the
rename itself is durable. The temporary file is named ``.<name>.tmp.<pid>``: a leftover of a crash
is recognisable (snapshots clean theirs up), and two processes never share one.
"""
from __future__ import annotations

import os


def fsync_dir(directory: str) -> None:
    """Make the directory's entries (a file created, renamed or removed in it) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_path(path: str) -> str:
    """Where ``write_atomically`` writes before the rename: ``.<name>.tmp.<pid>`` beside ``path``."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.tmp.{os.getpid()}")


def write_atomically(path: str, data: bytes | str, mode: int | None = None) -> None:
    """``data`` (text is written as UTF-8) to ``path``, all or nothing, with ``mode`` (None: the
    file's own mode, 0644 for a new file). On any failure the temporary file is removed and
    ``path`` is as it was; the error propagates."""
    if isinstance(data, str):
        data = data.encode()
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    tmp = tmp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, mode)  # exactly this, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
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
    fsync_dir(os.path.dirname(os.path.abspath(path)))
