"""bgp: scale-out (docs/scaleout.md). Every router announces the VIPs to its upstream router(s) by
BGP while it can serve them; the upstream spreads flows over the routers by ECMP.

* observations, published by the bgp shell (the driver of the BGP speaker, BIRD 2):
  ``bgp.speaker_started`` (the speaker runs and answers on its control socket; the core answers
  with the whole route set), ``bgp.session_changed`` (a BGP session to a peer came up or went
  down, as the speaker reports it), ``bgp.routes_applied`` (the speaker took a route set, or why
  not);
* observation published by ``lvsbus bgp drain|resume``: ``operator.bgp_drain``;
* decisions of the bgp core: ``bgp.vip_changed`` (one VIP's announcement: announce, drain,
  withdraw, and why), ``bgp.drain_taken`` (the answer to an operator drain), ``bgp.config_rejected``;
* effect: ``bgp.set_routes`` (the whole set of routes the speaker must announce now, each plain
  or with the GRACEFUL_SHUTDOWN community; a VIP not in it is withdrawn).
"""
from lvsbus.wire.events import declare
from lvsbus.wire.schema import Bool, Enum, Int, List, Str, Struct

ADDRESS = Str(max_len=64, min_len=2, doc="an IPv4 or IPv6 address, normalised")
PREFIXLEN = Int(min=0, max=128)
STATE = Enum("announce", "drain", "withdraw",
             doc="announce: a plain route; drain: announced with GRACEFUL_SHUTDOWN (65535:0), so the upstream "
                 "prefers the other routers; withdraw: not announced")

_SPEAKER_STARTED_1 = declare(
    "bgp.speaker_started", 1,
    {
        "speaker": Str(max_len=32, min_len=1, doc="which speaker: bird"),
        "version": Str(max_len=128, doc="the speaker's version as it reports it"),
        "pid": Int(min=0),
        "epoch": Int(min=0, doc="the shell's start, unique per start (its monotonic start time, ns)"),
    },
    doc="The BGP speaker runs and answers on its control socket (started by the bgp shell, or found running). "
    "The core answers with the whole route set.",
)
declare(
    "bgp.speaker_started", 2,
    {**_SPEAKER_STARTED_1.payload.fields,
     "adopted": Bool(doc="found running, started by an earlier run of the bgp service: it may announce routes "
                         "this run of the core has not decided (a v1 record: false)")},
    doc="The BGP speaker runs and answers on its control socket (started by the bgp shell, or found running). "
    "The core answers with the whole route set; v2: an adopted speaker in a run that has decided nothing yet "
    "keeps its routes until the run's decision is known (the role and each VIP's quorum, or 10 s).",
    upcast=lambda p: {**p, "adopted": False},
)
declare(
    "bgp.session_changed", 1,
    {
        "peer": ADDRESS,
        "state": Enum("up", "down", doc="up: established; down: any other BGP state"),
        "info": Str(max_len=256, doc="the speaker's own words (BIRD: Established, Active, Connect, its last error)"),
    },
    doc="A BGP session to a peer came up or went down, as the speaker reports it.",
)
declare(
    "bgp.routes_applied", 1,
    {
        "version": Int(min=1, doc="the bgp.set_routes version the speaker was given"),
        "ok": Bool(),
        "error": Str(max_len=1024, doc="empty when ok; else why the speaker refused or could not be reached"),
    },
    doc="The bgp shell handed a route set (bgp.set_routes, its cause) to the speaker: done, or why not "
    "(the core tries again a second later).",
)
declare(
    "bgp.vip_changed", 1,
    {
        "address": ADDRESS,
        "prefixlen": PREFIXLEN,
        "old": STATE,
        "new": STATE,
        "reason": Enum(
            "serving",  # the router is healthy and every virtual service on the VIP has quorum
            "quorum_lost",  # a virtual service on the VIP is below quorum on this router
            "router_unhealthy",  # pulse reports FAULT or STOPPED (or has not reported a role yet)
            "shutdown_drain",  # a planned stop: drain_time of GRACEFUL_SHUTDOWN before the withdraw
            "operator_drain",  # an operator drained this router (lvsbus bgp drain) until lvsbus bgp resume
            "shutdown",  # the router is stopping (after the drain, or at once when not graceful)
            "config",  # a reload removed the VIP, or [scaleout]
            doc="why (stable, for alerting)",
        ),
        "virtuals": List(Str(max_len=64, min_len=1), max_items=4096,
                         doc="the virtual services on the VIP; with quorum_lost, the ones below quorum"),
    },
    doc="This router's announcement of one VIP changed.",
)
declare(
    "bgp.set_routes", 1,
    {
        "version": Int(min=1, doc="grows by one with every route set of this core"),
        "routes": List(Struct({"address": ADDRESS, "prefixlen": PREFIXLEN,
                               "state": Enum("announce", "drain")}), max_items=65536),
        "reason": Str(max_len=256, doc="readable: what changed"),
    },
    doc="The whole set of routes the speaker must announce now; a VIP not in it is withdrawn.",
)
declare(
    "operator.bgp_drain", 1,
    {
        "action": Enum("drain", "resume", doc="drain: announce every VIP with GRACEFUL_SHUTDOWN, so the upstream "
                                              "sends its new flows to the other routers; resume: plain again"),
        "by": Str(max_len=128, min_len=1, doc="who asked: the Unix user (and the sudo user) of the CLI"),
        "via": Enum("cli", "web", doc="through what the operator asked"),
        "reason": Str(max_len=256, doc="free text the operator gave (may be empty)"),
    },
    doc="An operator asked this router to drain (or stop draining) its BGP announcements (lvsbus bgp drain|resume).",
)
declare(
    "bgp.drain_taken", 1,
    {
        "action": Enum("drain", "resume"),
        "by": Str(max_len=128, min_len=1),
        "outcome": Enum("applied", "unchanged", "not_scaleout",
                        doc="applied: the state changed; unchanged: it was already so; not_scaleout: the config in "
                            "force has no [scaleout]: nothing announced, nothing done"),
        "vips": Int(min=0, doc="the VIPs this router announces now (drained or not)"),
    },
    doc="The bgp core's answer to operator.bgp_drain (its cause); the announcements follow as bgp.vip_changed.",
)
declare(
    "bgp.config_rejected", 1,
    {"error": Str(max_len=1024), "count": Int(min=1)},
    doc="The bgp core could not use a config.loaded payload; the previous announcements stay.",
)
