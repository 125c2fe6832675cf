"""The heartbeat key file: what makes one usable, and how to make one (``lvsbus keys heartbeat``).

pulse authenticates every heartbeat and fence with an HMAC keyed from this file's content
(``lvsbus_services.pulse.wire.key_from_secret``: surrounding whitespace ignored, at least
``MIN_SECRET`` bytes), so every router of a cluster needs the same file, readable by root only.
The router refuses to start without a usable one; ``lvsbus check-config`` on a router host says
so before; ``lvsbus keys heartbeat`` writes a fresh one.
"""
from __future__ import annotations

import os
import secrets

from lvsbus.host.files import write_atomically
from lvsbus.config.keyrules import GENERATED_BYTES, MIN_SECRET, create_hint, mode_problem, secret_problem  # noqa: F401


def key_file_problem(path: str) -> tuple[str | None, bool]:
    """(why the heartbeat key file at ``path`` is not usable, or None; whether that is certain).

    Missing, group- or other-accessible, or too short: certain. A file this user may not read
    (check-config as a non-root user) is only stat'ed: its length is not known (not certain)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"heartbeat key file {path}: {exc.strerror}; {create_hint(path)}", True
    bad_mode = mode_problem(st.st_mode)
    if bad_mode:
        return f"heartbeat key file {path} {bad_mode} (chmod 600 {path})", True
    try:
        with open(path, "rb") as fh:
            secret = fh.read(1 << 20)
    except PermissionError:
        return f"heartbeat key file {path}: not readable by this user, its content was not checked (run as root)", False
    except OSError as exc:
        return f"heartbeat key file {path}: {exc.strerror}", True
    bad_secret = secret_problem(secret)
    if bad_secret:
        return f"heartbeat key file {path} {bad_secret}; {create_hint(path, exists=True)}", True
    return None, True


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
