"""The console's users, sessions and login limits.

* The password file (``[web] password_file``, managed by ``lvsbus web passwd``): one line a user,
  ``NAME:ROLE:HASH``, ROLE ``viewer`` or ``admin``, HASH an argon2id hash (argon2-cffi's defaults,
  RFC 9106's second recommended set); never a plain password. Mode 0600, written atomically.
* Sessions: a random token (the cookie) -> user, role, CSRF token, last use; they end after
  ``idle_s`` without a request and ``max_s`` after the login, whatever happens.
* Login limits: after ``LIMIT`` failures within ``WINDOW_S`` from one address, or for one user
  name, further attempts are refused (without checking the password) until the window moves on.

Time comes in as arguments (``now``: monotonic seconds), so the tests need no clock.
"""
from __future__ import annotations

import os
import re
import secrets
from collections import deque
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from lvsbus.host.files import write_atomically

ROLES = ("viewer", "admin")
USER_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
LIMIT = 5
WINDOW_S = 60.0

_hasher = PasswordHasher()
#: a hash to verify against for unknown users, so that a wrong user name costs the time of a wrong password
_DUMMY = _hasher.hash(secrets.token_hex(16))


class PasswdError(ValueError):
    """The password file cannot be used (said with its line)."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    hash: str


def read_passwd(path: str) -> dict[str, User]:
    try:
        text = open(path, encoding="utf-8").read()
    except FileNotFoundError:
        raise PasswdError(f"{path}: no such file (make it with `lvsbus web passwd --file {path} USER`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PasswdError(f"{path}: {exc}") from None
    users: dict[str, User] = {}
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":", 2)
        if len(parts) != 3 or not USER_RE.match(parts[0]) or parts[1] not in ROLES or not parts[2].startswith("$argon2"):
            raise PasswdError(f"{path}:{no}: not NAME:ROLE:ARGON2-HASH (ROLE viewer or admin)")
        users[parts[0]] = User(parts[0], parts[1], parts[2])
    return users


def set_password(path: str, user: str, role: str, password: str) -> None:
    """Add or change ``user`` in the password file (made if missing), atomically, mode 0600."""
    if not USER_RE.match(user):
        raise PasswdError(f"{user!r} is not a user name: 1-64 letters, digits, '_', '.' or '-'")
    if role not in ROLES:
        raise PasswdError(f"{role!r} is not a role: viewer or admin")
    users = read_passwd(path) if os.path.exists(path) else {}
    users[user] = User(user, role, _hasher.hash(password))
    _write(path, users)


def remove_user(path: str, user: str) -> bool:
    users = read_passwd(path)
    if users.pop(user, None) is None:
        return False
    _write(path, users)
    return True


def _write(path: str, users: dict[str, User]) -> None:
    write_atomically(path, "".join(f"{u.name}:{u.role}:{u.hash}\n" for u in users.values()), mode=0o600)


def verify(users: dict[str, User], name: str, password: str) -> User | None:
    """The user when the password is theirs; None otherwise (the same work either way)."""
    user = users.get(name)
    try:
        _hasher.verify(user.hash if user else _DUMMY, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    return user


@dataclass
class Session:
    user: str
    role: str
    csrf: str
    started: float
    last: float


@dataclass
class Sessions:
    idle_s: float = 1800.0
    max_s: float = 12 * 3600.0
    by_token: dict[str, Session] = field(default_factory=dict)

    def open(self, user: User, now: float) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        s = Session(user.name, user.role, secrets.token_urlsafe(32), now, now)
        self.by_token[token] = s
        return token, s

    def get(self, token: str | None, now: float, touch: bool = True) -> tuple[Session | None, bool]:
        """(the live session, False), or (None, True) when it has just expired, (None, False) if
        unknown. ``touch``: a request of the user's (it keeps the session alive); an open live stream
        checking its session does not."""
        s = self.by_token.get(token) if token else None
        if s is None:
            return None, False
        if now - s.last > self.idle_s or now - s.started > self.max_s:
            del self.by_token[token]  # type: ignore[arg-type]
            return None, True
        if touch:
            s.last = now
        return s, False

    def close(self, token: str | None) -> None:
        if token:
            self.by_token.pop(token, None)


@dataclass
class LoginLimiter:
    limit: int = LIMIT
    window_s: float = WINDOW_S
    failures: dict[str, deque] = field(default_factory=dict)

    def _recent(self, key: str, now: float) -> deque:
        q = self.failures.setdefault(key, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def allowed(self, remote: str, user: str, now: float) -> bool:
        return all(len(self._recent(k, now)) < self.limit for k in (f"addr:{remote}", f"user:{user}"))

    def failed(self, remote: str, user: str, now: float) -> None:
        for k in (f"addr:{remote}", f"user:{user}"):
            self._recent(k, now).append(now)
        if len(self.failures) > 10000:  # bounded: forget keys with no recent failure
            for k in [k for k, q in self.failures.items() if not q or now - q[-1] > self.window_s]:
                del self.failures[k]
