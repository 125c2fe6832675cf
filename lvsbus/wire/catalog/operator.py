"""Operator actions: what a person asked of this router, recorded as inputs like any observation.

* observations, published by ``lvsbus server drain|disable|enable`` and ``lvsbus handover`` (and
  the web console): ``operator.server_action``, ``operator.handover_requested``; and by the web
  console's config editor: ``operator.config_written`` (no core takes it: the reload it asks for
  is the router's ``config.loaded``). Each names who
  asked (``by``) and through what (``via``), so replay, the timeline and the what-if see operator
  actions as the inputs they are;
* decisions of the cores that take them: ``lvsd.server_action_taken`` (lvsd's answer to a server
  action: done, already so, or no such real server) and ``pulse.handover_refused`` (pulse was not
  active, or no live peer could take over). A handover that happens is ``router.role_changed``
  with the reason ``handover``. See docs/console.md.
"""
from lvsbus.wire.events import declare
from lvsbus.wire.schema import Enum, Int, Str

NAME = Str(max_len=64, min_len=1)
BY = Str(max_len=128, min_len=1, doc="who asked: the console user, or the Unix user (and the sudo user) of the CLI")
VIA = Enum("cli", "web", doc="through what the operator asked")
ADMIN = Enum("enabled", "drained", "disabled", doc="a real server's administrative state")

declare(
    "operator.server_action", 1,
    {
        "virtual": NAME,
        "server": NAME,
        "action": Enum("drain", "disable", "enable",
                       doc="drain: weight 0, its connections finish; disable: out of the table; enable: back"),
        "by": BY,
        "via": VIA,
        "reason": Str(max_len=256, doc="free text the operator gave (may be empty)"),
    },
    doc="An operator asked lvsd to drain, disable or enable one real server of one virtual service.",
)
declare(
    "operator.handover_requested", 1,
    {
        "by": BY,
        "via": VIA,
        "reason": Str(max_len=256, doc="free text the operator gave (may be empty)"),
        "hold_s": Int(min=1, max=86400, doc="after stepping down, this router advertises priority 0 this long, "
                                            "so it does not preempt the role back"),
    },
    doc="An operator asked this router, if active, to hand the active role over to a live peer (graceful: "
    "it steps down to BACKUP and tells its peers at once, as a shutdown does, without stopping).",
)
declare(
    "lvsd.server_action_taken", 1,
    {
        "virtual": NAME,
        "server": NAME,
        "action": Enum("drain", "disable", "enable"),
        "by": BY,
        "outcome": Enum("applied", "unchanged", "unknown_server",
                        doc="applied: the state changed; unchanged: it was already so; unknown_server: no such "
                            "active real server in the config"),
        "state": ADMIN,
    },
    doc="lvsd's answer to operator.server_action (its cause); the table change, if any, follows as "
    "lvsd.table_delta while lvsd is live.",
)
declare(
    "pulse.handover_refused", 1,
    {
        "by": BY,
        "role": Enum("INIT", "BACKUP", "ACTIVE", "FAULT", "STOPPED"),
        "reason": Enum("not_active", "no_peer", doc="not_active: this router is not ACTIVE; no_peer: no live peer "
                                                   "(BACKUP) would take over"),
    },
    doc="pulse did not hand over as operator.handover_requested (its cause) asked.",
)
declare(
    "pulse.handover_refused", 2,
    {
        "by": BY,
        "role": Enum("INIT", "BACKUP", "ACTIVE", "FAULT", "STOPPED"),
        "reason": Enum("not_active", "no_peer", "scale_out",
                       doc="not_active: this router is not ACTIVE; no_peer: no live peer (BACKUP) would take "
                       "over; scale_out: every router is active ([scaleout]): drain it instead (lvsbus bgp drain)"),
    },
    doc="pulse did not hand over as operator.handover_requested (its cause) asked. v2: the reason scale_out.",
    upcast=lambda p: p,
)
declare(
    "operator.config_written", 1,
    {
        "by": BY,
        "via": VIA,
        "path": Str(max_len=4096, doc="the router's config file, written atomically"),
        "digest": Str(max_len=128, doc="sha256 of the text written"),
        "previous_digest": Str(max_len=128, doc="sha256 of the file it replaced"),
        "restored": Enum("no", "yes", doc="yes: the router refused the written text and the previous one was put back"),
    },
    doc="An operator wrote a new version of the router's config file (the console's editor, checked as "
    "check-config does) and asked for a reload as SIGHUP does; the router's config.loaded (reload) or "
    "config.reload_refused follows. With restored = yes, a second record says the previous text is back.",
)
