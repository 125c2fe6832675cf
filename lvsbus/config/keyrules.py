"""The heartbeat key file's rules, pure (no file access): what mode and content make one usable.
``lvsbus.host.keyfile.load_key`` (the I/O: pulse's key reading, the router's start and reload checks,
``check-config``) and pulse's ``key_from_secret`` (``lvsbus_services.pulse.wire``) decide with these."""
from __future__ import annotations

#: bytes a secret must hold after stripping whitespace (lvsbus_services.pulse.wire.key_from_secret)
MIN_SECRET = 16
#: random bytes in a generated key, written as hex
GENERATED_BYTES = 32


def create_hint(path: str, exists: bool = False) -> str:
    """The command that makes a usable key file at ``path``; one that ``exists`` is replaced only
    with ``--force`` (lvsbus keys heartbeat keeps an existing file otherwise)."""
    if exists:
        return (f"replace it with: lvsbus keys heartbeat --force --out {path} "
                "(then copy that same file to every router)")
    return (f"create one with: lvsbus keys heartbeat --out {path} "
            "(then copy that same file to every router)")


def mode_problem(mode: int) -> str | None:
    """Why a key file with this st_mode is not usable (group or others may access it), or None.
    Pure: ``lvsbus.host.keyfile.load_key`` decides with it."""
    if mode & 0o077:
        return f"has mode {mode & 0o777:04o}: it must be 0600 or stricter"
    return None


def secret_problem(secret: bytes) -> str | None:
    """Why a key file's content is not a usable secret (fewer than ``MIN_SECRET`` bytes once
    surrounding whitespace is stripped), or None. Pure: ``load_key`` and pulse's ``key_from_secret``
    decide with it."""
    n = len(secret.strip())
    if n < MIN_SECRET:
        return f"holds {n} bytes: at least {MIN_SECRET} bytes are needed"
    return None
