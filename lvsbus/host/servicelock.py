"""One live process per service: an exclusive ``flock`` on ``RUN_DIR/<service>.lock``, held for life.

A warm spare (see lvsbus/router/supervisor.py, *Warm spares*) is a second process of the same service that
has started and imported everything, then blocks in ``acquire``. When the live one dies, even by
SIGKILL, the kernel drops its lock as it closes the dead process's files, and the spare's
``flock`` returns at once: it then recovers (log tail, snapshot), binds its sockets and serves.

The lock is taken on a file of its own, not on anything the service opens later (the log's
directory lock, sockets), so the spare waits before touching any of them.
"""
from __future__ import annotations

import fcntl
import os
from typing import Callable


def lock_path(run_dir: str, service: str) -> str:
    return os.path.join(run_dir, f"{service}.lock")


def try_acquire(run_dir: str, service: str) -> int | None:
    """The service's lock if nobody holds it (the fd, to keep open), else None."""
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    fd = os.open(lock_path(run_dir, service), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


def acquire(run_dir: str, service: str, on_wait: Callable[[], None] | None = None) -> int:
    """Take the service's lock, waiting as long as another process holds it. Returns the fd: keep
    it open (close-on-exec, so no program the service runs inherits it) for the process's life.
    ``on_wait`` is called once, just before blocking, when the lock is held by another process."""
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    fd = os.open(lock_path(run_dir, service), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        pass
    if on_wait is not None:
        on_wait()
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def holder(run_dir: str, service: str, proc_locks: str = "/proc/locks") -> int | None:
    """The PID holding the service's lock (from /proc/locks), or None when nobody holds it."""
    try:
        st = os.stat(lock_path(run_dir, service))
        with open(proc_locks) as fh:
            text = fh.read()
    except OSError:
        return None
    return parse_holder(text, st.st_dev, st.st_ino)


def parse_holder(text: str, dev: int, ino: int) -> int | None:
    """/proc/locks lines: ``1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF``; a waiter's line
    has ``->`` after the number. The holder is the non-waiting FLOCK line of that device:inode."""
    want = (os.major(dev), os.minor(dev), ino)
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[1] == "->" or parts[1] != "FLOCK":
            continue
        try:
            maj, mnr, inode = parts[5].split(":")
            if (int(maj, 16), int(mnr, 16), int(inode)) == want:
                return int(parts[4])
        except ValueError:
            continue
    return None
