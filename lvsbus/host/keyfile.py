"""The heartbeat key file: what makes one usable, and how to make one (``lvsbus keys heartbeat``).

pulse authenticates every heartbeat and fence with an HMAC keyed from this file's content
(``lvsbus_services.pulse.wire.key_from_secret``: surrounding whitespace ignored, at least
``MIN_SECRET`` bytes), so every router of a cluster needs the same file, readable by root only.
The router refuses to start without a usable one; ``lvsbus check-config`` on a router host says
so before; ``lvsbus keys heartbeat`` writes a fresh one. ``load_key`` is the one reader of the file
for all of them (the rules themselves are pure, in ``lvsbus.config.keyrules``).
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
from typing import NamedTuple

from lvsbus.host.files import write_atomically
from lvsbus.config.keyrules import GENERATED_BYTES, MIN_SECRET, create_hint, mode_problem, secret_problem  # noqa: F401


class KeyFile(NamedTuple):
    """What ``load_key`` found: the file's ``secret`` (its whole content) when usable, else None and
    the ``problem`` (a line that starts with the file's path and says what to do); ``certain`` is
    False only when this user may not read the file (check-config as a non-root user), so whether
    root could use it is not known."""

    secret: bytes | None
    problem: str | None
    certain: bool = True

_KINDS = {stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device"}


def load_key(path: str) -> KeyFile:
    """Read the heartbeat key file at ``path`` and judge it with ``lvsbus.config.keyrules``: the
    one reader of it (pulse keys its HMAC from the secret, the router's start and reload checks and
    ``check-config`` report the problem). Missing, group- or other-accessible, too short: a problem
    with the command that mends it."""
    what = f"{path}: heartbeat key file"
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return KeyFile(None, f"{what}: {exc.strerror}; {create_hint(path)}")
        if exc.errno in (errno.EACCES, errno.EPERM):
            return KeyFile(None, f"{what}: not reachable by this user ({exc.strerror}), its mode and content "
                                 "were not checked (run as root)", certain=False)
        return KeyFile(None, f"{what}: {exc.strerror}")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):  # a FIFO would block the read forever
        return KeyFile(None, f"{what}: not a regular file (a {_KINDS.get(stat.S_IFMT(st.st_mode), 'special file')}); "
                             f"{create_hint(path, exists=True)}")
    bad_mode = mode_problem(st.st_mode)
    if bad_mode:
        return KeyFile(None, f"{what} {bad_mode} (chmod 600 {path})")
    try:
        with open(path, "rb") as fh:
            secret = fh.read()
    except PermissionError:
        return KeyFile(None, f"{what}: not readable by this user, its content was not checked (run as root)",
                       certain=False)
    except OSError as exc:
        return KeyFile(None, f"{what}: {exc.strerror}")
    bad_secret = secret_problem(secret)
    if bad_secret:
        return KeyFile(None, f"{what} {bad_secret}; {create_hint(path, exists=True)}")
    return KeyFile(secret, None)


def write_heartbeat_key(path: str, force: bool = False) -> str:
    """Write a fresh random key (hex, one line) to ``path`` with mode 0600; returns the text.
    Refuses (FileExistsError) to replace an existing file unless ``force``; a replacement is
    atomic (``lvsbus.host.files.write_atomically``). A missing parent directory is made 0755."""
    text = secrets.token_hex(GENERATED_BYTES) + "\n"
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o755, exist_ok=True)
    if not force:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return text
    write_atomically(path, text, 0o600)
    return text
