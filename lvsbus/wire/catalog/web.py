"""The web console (docs/console.md): what it records of its own doing.

Observations published by the console: ``web.login`` (every login attempt, with its outcome) and
``web.request_refused`` (every request the console refused for a security reason). No core acts on
them: they are the audit trail, in the log with everything else. The console's actions themselves
are ``operator.*`` events (``lvsbus/wire/catalog/operator.py``) with ``via = web``.
"""
from lvsbus.wire.events import declare
from lvsbus.wire.schema import Bool, Enum, Nullable, Str

USER = Str(max_len=64, doc="the user name as given (clipped)")
REMOTE = Str(max_len=64, doc="the client's address")

declare(
    "web.login", 1,
    {
        "user": USER,
        "remote": REMOTE,
        "ok": Bool(),
        "reason": Enum("ok", "bad_password", "unknown_user", "rate_limited", "foreign_origin",
                       doc="rate_limited: too many failures from this address or for this user lately"),
    },
    doc="A login attempt at the web console and its outcome.",
)
declare(
    "web.request_refused", 1,
    {
        "user": Nullable(USER, doc="the session's user, None without a valid session"),
        "remote": REMOTE,
        "method": Str(max_len=16),
        "path": Str(max_len=256),
        "reason": Enum("no_session", "expired", "not_admin", "no_csrf", "bad_csrf", "foreign_origin",
                       doc="expired: the session timed out; not_admin: an action by a viewer"),
    },
    doc="The web console refused a request (and changed nothing).",
)
