"""pulse: the router role (active/backup), heartbeats between routers, VIP ownership, fencing.

Three kinds of event, by who publishes them:

* observations, published by pulse's I/O shell: ``pulse.started``, ``pulse.heartbeat_received``,
  ``pulse.fence_received``, ``pulse.link_changed``, ``pulse.datagram_rejected``,
  ``pulse.notify_finished``, ``pulse.failover_cmd_finished``;
* decisions (past-tense facts) of pulse's core: ``router.role_changed``, ``pulse.peer_alive``,
  ``pulse.peer_dead``, ``pulse.peer_restarted``, ``pulse.link_degraded``, ``pulse.link_restored``,
  ``pulse.split_brain_resolved``, ``pulse.heartbeat_ignored``, ``pulse.config_rejected``;
* effects (imperative commands the shell carries out): ``pulse.send_heartbeat``,
  ``pulse.take_vips``, ``pulse.release_vips``, ``pulse.send_garp``, ``pulse.send_fence``,
  ``pulse.start_lvsd``, ``pulse.stop_lvsd``, ``pulse.run_notify``, ``pulse.run_failover``.

Every effect carries all the shell needs (addresses, ports, devices, labels, repeat counts), so the
shell never has to look at the config to carry one out. See docs/pulse.md.
"""
from lvsbus.wire.events import declare
from lvsbus.wire.schema import Bool, Enum, Int, List, Nullable, Str, Struct

NAME = Str(max_len=64, min_len=1)
ADDRESS = Str(max_len=64, min_len=2, doc="an IPv4 or IPv6 address, normalised")
DEVICE = Nullable(Str(max_len=32, min_len=1))
LINK = Enum("public", "private", doc="which heartbeat network: the public one, or the private (dedicated) one")
#: the role as the FSM names it (pulse's state); INIT is never sent on the wire
ROLE = Enum("INIT", "BACKUP", "ACTIVE", "FAULT", "STOPPED")
PRIORITY = Int(min=0, max=65535, doc="higher wins; ties are broken by the higher public address")
EPOCH = Int(min=0, doc="the sender's boot epoch: grows on every pulse start (a persisted counter)")
SEQ = Int(min=0, doc="the sender's datagram sequence number, per epoch, shared by heartbeats and fences")
COUNT = Int(min=1, doc="how many of these so far (this core's life, snapshots included)")

ROLE_REASONS = Enum(
    "started",  # INIT -> BACKUP: config and pulse.started both seen, listening for peers
    "no_active",  # BACKUP -> ACTIVE: nobody active heard while listening, and this router is the best candidate
    "peer_dead",  # BACKUP -> ACTIVE: the active router went silent on every link for deadtime
    "peer_left",  # BACKUP -> ACTIVE: the active router said it was leaving (graceful shutdown)
    "peer_stepped_down",  # BACKUP -> ACTIVE: the active router now reports another role
    "preempt",  # BACKUP -> ACTIVE: outranks the active router, preempt on, preempt_delay over
    "fenced",  # ACTIVE -> BACKUP: a valid fence from a peer that took over
    "split_brain",  # ACTIVE -> BACKUP: another router is active too and outranks this one
    "all_links_down",  # -> FAULT: every configured heartbeat link is down
    "public_link_down",  # -> FAULT: the public link (the VIPs' and the clients') is down
    "link_up",  # FAULT -> BACKUP: a link came back
    "shutdown",  # -> STOPPED
    "config",  # a reload removed this router, or gave it nothing to do
    doc="why the role changed (stable, for alerting)",
)
#: version 2 of the reasons (router.role_changed, pulse.release_vips, pulse.stop_lvsd v2): one more
ROLE_REASONS_2 = Enum(
    *ROLE_REASONS.values,
    "failover_service_failed",  # ACTIVE -> BACKUP: a failover service (service = fos) failed here: give up
    "handover",  # ACTIVE -> BACKUP: an operator asked for a handover (operator.handover_requested)
    doc="why the role changed (stable, for alerting)",
)

#: version 3 (router.role_changed, pulse.release_vips, pulse.stop_lvsd v3): tracking
ROLE_REASONS_3 = Enum(
    *ROLE_REASONS_2.values,
    "track_failed",  # -> FAULT: a tracked item with weight 0 failed ([track.NAME], docs/pulse.md)
    "track_recovered",  # FAULT -> BACKUP: every weight-0 tracked item is fine again (and the links are up)
    doc="why the role changed (stable, for alerting)",
)
#: version 4 (router.role_changed v5, pulse.take_vips v2, pulse.start_lvsd v3): scale-out
ROLE_REASONS_4 = Enum(
    *ROLE_REASONS_3.values,
    "scale_out",  # BACKUP -> ACTIVE: scale-out ([scaleout]): every router serves every VIP, none is elected
    doc="why the role changed (stable, for alerting)",
)
TRACK = Str(max_len=64, min_len=1, doc="the tracked item's name ([track.NAME])")
GROUP = Str(max_len=64, min_len=1, doc="a failover group's name ([group.NAME]; 'default' holds every VIP whose "
            "service names no group, and all of them in a config without groups)")
GROUP_STATE = Struct({"group": GROUP, "role": ROLE, "priority": PRIORITY},
                     doc="one failover group's role and priority on the sender")
GROUPS = List(GROUP_STATE, max_items=64, doc="every failover group of the sender: its role and priority there")


def _default_group(p: dict) -> list[dict]:
    """What a record from before failover groups says of the one group there was."""
    return [{"group": "default", "role": p["role"], "priority": p["priority"]}]

VIP = Struct(
    {
        "address": ADDRESS,
        "prefixlen": Int(min=0, max=128),
        "family": Enum("ipv4", "ipv6", doc="ipv4: gratuitous ARP; ipv6: unsolicited neighbour advertisement"),
        "device": DEVICE,
        "label": Nullable(Str(max_len=32, min_len=1), doc="ifa label, e.g. eth0:1 (IPv4 only)"),
        "owner": Str(max_len=256, doc="what the address is for: virtual service name(s), or nat_router"),
    },
    doc="one virtual IP this router adds to (or removes from) an interface",
)
DESTINATION = Struct(
    {
        "peer": NAME,
        "link": LINK,
        "address": ADDRESS,
        "local_address": Nullable(ADDRESS, doc="this router's own address on that link (bind/source address)"),
    },
    doc="one (peer, link) a datagram goes to",
)

# ---------------------------------------------------------------------------------------------
# observations (published by pulse's shell)

_PULSE_STARTED_1 = declare(
    "pulse.started", 1,
    {
        "epoch": EPOCH,
        "hostname": Str(max_len=256),
        "addresses": List(Str(max_len=64), max_items=1024, doc="the host's local addresses at start"),
        "key_loaded": Bool(doc="the heartbeat key file was read (0600); false: heartbeats cannot be authenticated"),
    },
    doc="pulse's shell started: its boot epoch (which must grow on every start) and the host's addresses.",
)
_PULSE_STARTED_2 = declare(
    "pulse.started", 2,
    {
        **_PULSE_STARTED_1.payload.fields,
        "listen": Bool(doc="the shell heard nothing while it was down: a BACKUP restored from the log listens "
                       "for deadtime before it may take over, and from now on peers' deaths are judged on "
                       "pulse's own inputs only (its timer, datagrams, links), never on an input another "
                       "service recorded; false only in v1 records"),
    },
    doc="pulse's shell started: its boot epoch (which must grow on every start) and the host's addresses. "
    "v2 added listen: a v1 core, restarted under a running router as BACKUP, judged its peers by what it "
    "had heard before it went down and took over at once when that was more than deadtime ago, on its own "
    "inputs or on one another service had recorded while pulse was down.",
    upcast=lambda p: {**p, "listen": False},
)
declare(
    "pulse.started", 3,
    {
        **_PULSE_STARTED_2.payload.fields,
        "rules": Int(min=2, max=1000, doc="the decision rules of the pulse that started: 2 for every record "
                     "before this field; 3: a router leaving ACTIVE for FAULT (a link down) tells its peers at "
                     "once with a FAULT heartbeat, so that a backup takes over without waiting for deadtime; 4: a split "
                     "brain is resolved again when a router's priority changes during it (tracking)"),
    },
    doc="pulse's shell started: its boot epoch (which must grow on every start), the host's addresses, "
    "whether it listens first, and the decision rules it runs (v3: an older record replays under the rules "
    "it was decided by).",
    upcast=lambda p: {**p, "rules": 2},
)
_HB_RECEIVED_1 = declare(
    "pulse.heartbeat_received", 1,
    {
        "link": LINK,
        "peer": NAME,
        "address": ADDRESS,
        "role": ROLE,
        "priority": PRIORITY,
        "epoch": EPOCH,
        "seq": SEQ,
        "leaving": Bool(doc="the sender is shutting down and has released its VIPs: take over at once"),
    },
    doc="An authenticated, well-formed heartbeat arrived. Sequence and epoch checks are the core's.",
)
declare(
    "pulse.heartbeat_received", 2,
    {**_HB_RECEIVED_1.payload.fields, "groups": GROUPS},
    doc="An authenticated, well-formed heartbeat arrived. Sequence and epoch checks are the core's. v2: "
    "each failover group's role and priority (role and priority: the default group's, or the first "
    "group's); a v1 record (and a heartbeat of wire version 1) is the default group alone.",
    upcast=lambda p: {**p, "groups": _default_group(p)},
)
_FENCE_RECEIVED_1 = declare(
    "pulse.fence_received", 1,
    {
        "link": LINK,
        "peer": NAME,
        "address": ADDRESS,
        "target": NAME,
        "epoch": EPOCH,
        "seq": SEQ,
        "reason": Str(max_len=64),
    },
    doc="An authenticated fence arrived: the sender took over and tells the target to stop lvsd and release its VIPs.",
)
declare(
    "pulse.fence_received", 2,
    {**_FENCE_RECEIVED_1.payload.fields, "groups": List(GROUP, max_items=64, doc="the groups fenced")},
    doc="An authenticated fence arrived: the sender took over these failover groups and tells the target "
    "to release them. v2: the groups (a v1 record, and a fence of wire version 1, fences the default group).",
    upcast=lambda p: {**p, "groups": ["default"]},
)
declare(
    "pulse.link_changed", 1,
    {"link": LINK, "up": Bool(), "device": DEVICE},
    doc="A heartbeat link's carrier or address went up or down (only when monitor_links is on).",
)
declare(
    "pulse.track_observed", 1,
    {
        "track": TRACK,
        "kind": Enum("interface", "file", doc="a tracked interface's link, or a tracked file's number"),
        "value": Int(min=-(2**31), max=2**31 - 1,
                     doc="interface: 1 up (carrier and admin up), 0 down; file: the integer it holds "
                     "(0 when missing, empty or not a number)"),
        "detail": Str(max_len=128, doc="what was seen, for people: 'up', 'down', 'missing', 'not a number'..."),
    },
    doc="pulse's shell saw a tracked interface or file change (and every one once when it starts or "
    "a reload adds one). Tracked scripts are run by nanny: health.track_changed.",
)
declare(
    "pulse.datagram_rejected", 1,
    {
        "reason": Enum(
            "bad_mac", "malformed", "wrong_version", "too_large", "unknown_peer", "address_mismatch",
            doc="short cause, stable for alerting",
        ),
        "link": LINK,
        "address": Str(max_len=64, doc="the source address of the datagram"),
        "size": Int(min=0),
        "detail": Str(max_len=512),
        "count": COUNT,
    },
    doc="The shell dropped a datagram before it became a heartbeat or fence. It never changes a decision.",
)
declare(
    "pulse.notify_finished", 1,
    {
        "kind": Enum("active_cmd", "inactive_cmd", "notify", "fault_cmd"),
        "command": Str(max_len=4096),
        "exit_code": Nullable(Int()),
        "duration_ms": Int(min=0),
        "error": Str(max_len=1024, doc="empty when it ran; otherwise why not (not found, timed out...)"),
    },
    doc="A notify command the shell ran in the background has finished.",
)
declare(
    "pulse.failover_cmd_finished", 1,
    {
        "service": NAME,
        "action": Enum("start", "stop"),
        "command": Str(max_len=4096),
        "exit_code": Nullable(Int(), doc="None when it did not run or was killed at its timeout"),
        "duration_ms": Int(min=0),
        "stderr_tail": Str(max_len=1024, doc="the last bytes of its standard error (decoded, replaced)"),
        "error": Str(max_len=1024, doc="empty when it ran to its end; otherwise why not (not found, timed out...)"),
    },
    doc="A failover service's start_cmd or stop_cmd has finished (its result, for replay and the timeline).",
)

# ---------------------------------------------------------------------------------------------
# decisions (facts) of pulse's core

_ROLE_CHANGED_1 = declare(
    "router.role_changed", 1,
    {
        "node": NAME,
        "old": ROLE,
        "new": ROLE,
        "reason": ROLE_REASONS,
        "priority": PRIORITY,
        "epoch": EPOCH,
        "peer": Nullable(NAME, doc="the peer the change is about (dead, fencing, preempted...), if any"),
    },
    doc="This router's role changed.",
)
declare(
    "router.role_changed", 2,
    {**_ROLE_CHANGED_1.payload.fields, "reason": ROLE_REASONS_2},
    doc="This router's role changed. v2: the reason failover_service_failed.",
    upcast=lambda p: p,
)
declare(
    "router.role_changed", 3,
    {**_ROLE_CHANGED_1.payload.fields, "reason": ROLE_REASONS_3},
    doc="This router's role changed. v3: the reasons track_failed and track_recovered; ``priority`` is "
    "the effective priority (tracking applied).",
    upcast=lambda p: p,
)
declare(
    "router.role_changed", 4,
    {**_ROLE_CHANGED_1.payload.fields, "reason": ROLE_REASONS_3, "group": GROUP},
    doc="This router's role in a failover group changed. v4: the group (a v3 record is the default group's).",
    upcast=lambda p: {**p, "group": "default"},
)
declare(
    "router.role_changed", 5,
    {**_ROLE_CHANGED_1.payload.fields, "reason": ROLE_REASONS_4, "group": GROUP},
    doc="This router's role in a failover group changed. v5: the reason scale_out (every router active, "
    "docs/scaleout.md).",
    upcast=lambda p: p,
)
declare(
    "pulse.peer_alive", 1,
    {"peer": NAME, "link": LINK, "role": ROLE, "priority": PRIORITY, "epoch": EPOCH},
    doc="A peer was heard for the first time, or again after it was declared dead or left.",
)
declare(
    "pulse.peer_dead", 1,
    {
        "peer": NAME,
        "cause": Enum("silent", "left", doc="silent on every link for deadtime, or said it was leaving"),
        "role": ROLE,
        "last_heard_ns": Int(min=0),
    },
    doc="A peer is gone: silent on every link for deadtime, or it sent a leaving heartbeat.",
)
declare(
    "pulse.peer_restarted", 1,
    {"peer": NAME, "old_epoch": EPOCH, "new_epoch": EPOCH},
    doc="A peer's heartbeats carry a newer boot epoch: it restarted; its sequence numbers start again.",
)
declare(
    "pulse.link_degraded", 1,
    {"peer": NAME, "link": LINK, "silent_ns": Int(min=0)},
    doc="A peer is still heard on another link but this link was silent for deadtime. An alarm, never a failover.",
)
declare(
    "pulse.link_restored", 1,
    {"peer": NAME, "link": LINK},
    doc="A degraded link carries the peer's heartbeats again.",
)
_SPLIT_1 = declare(
    "pulse.split_brain_resolved", 1,
    {
        "winner": NAME,
        "loser": NAME,
        "winner_priority": PRIORITY,
        "loser_priority": PRIORITY,
        "this_router_stays": Bool(doc="true on the winner (it re-announces its VIPs), false on the loser"),
    },
    doc="Two routers were active at once (a healed partition); the lower (priority, then address) steps down.",
)
declare(
    "pulse.split_brain_resolved", 2,
    {**_SPLIT_1.payload.fields, "group": GROUP},
    doc="Two routers were active at once for a failover group; the lower (priority, then address) steps "
    "down. v2: the group (a v1 record is the default group's).",
    upcast=lambda p: {**p, "group": "default"},
)
declare(
    "pulse.priority_changed", 1,
    {
        "group": GROUP,
        "old": PRIORITY,
        "new": PRIORITY,
        "base": PRIORITY,
        "items": List(Struct({
            "track": TRACK,
            "failed": Bool(doc="the item is failed (interface down, script failed, file value not 0)"),
            "effect": Int(min=-(2**31), max=2**31 - 1, doc="what it adds to the priority now (0 for a weight-0 item)"),
        }), max_items=256, doc="every tracked item of this router, with what it does now"),
        "fault": Nullable(TRACK, doc="a failed weight-0 item (it holds the router in FAULT), if any"),
    },
    doc="This router's effective priority (its own plus every tracked item's effect, clamped to 1..254 "
    "once an effect applies) or tracking fault changed: the heartbeats carry the new priority from now on.",
)
declare(
    "pulse.heartbeat_ignored", 1,
    {
        "datagram": Enum("heartbeat", "fence"),
        "peer": NAME,
        "link": LINK,
        "reason": Enum(
            "stale_seq", "stale_epoch", "unknown_peer", "self", "not_configured", "not_for_us",
            doc="stale_seq: not newer than the last one on that link (replay, reorder, duplicate)",
        ),
        "seq": SEQ,
        "last_seq": Nullable(Int(min=0)),
        "epoch": EPOCH,
        "count": COUNT,
    },
    doc="pulse's core ignored an authenticated heartbeat or fence; it changed nothing.",
)
declare(
    "pulse.config_rejected", 1,
    {"error": Str(max_len=1024), "count": COUNT},
    doc="pulse could not use a config.loaded payload (its router is missing, a field is unusable); the previous settings stay.",
)

# ---------------------------------------------------------------------------------------------
# effects (commands for pulse's shell)

_SEND_HB_1 = declare(
    "pulse.send_heartbeat", 1,
    {
        "node": NAME,
        "role": ROLE,
        "priority": PRIORITY,
        "epoch": EPOCH,
        "seq": SEQ,
        "leaving": Bool(),
        "port": Int(min=1, max=65535),
        "destinations": List(DESTINATION, max_items=1024),
    },
    doc="Send one heartbeat datagram (the same body, same seq) to every destination.",
)
declare(
    "pulse.send_heartbeat", 2,
    {**_SEND_HB_1.payload.fields, "groups": GROUPS},
    doc="Send one heartbeat datagram (the same body, same seq) to every destination. v2: each failover "
    "group's role and priority (wire version 2; version 1, without them, when the only group is the "
    "default one, so that a router of an older release still hears it).",
    upcast=lambda p: {**p, "groups": _default_group(p)},
)
_SEND_FENCE_1 = declare(
    "pulse.send_fence", 1,
    {
        "node": NAME,
        "target": NAME,
        "epoch": EPOCH,
        "seq": SEQ,
        "reason": Str(max_len=64),
        "port": Int(min=1, max=65535),
        "destinations": List(DESTINATION, max_items=16, doc="the target's address on every link"),
    },
    doc="Send a fence ('stop your lvs daemon and release your VIPs') to the target over every link.",
)
declare(
    "pulse.send_fence", 2,
    {**_SEND_FENCE_1.payload.fields, "groups": List(GROUP, max_items=64, doc="the groups fenced")},
    doc="Send a fence (release these failover groups) to the target over every link. v2: the groups "
    "(wire version 1, without them, when the only group is the default one).",
    upcast=lambda p: {**p, "groups": ["default"]},
)
_TAKE_VIPS_1 = declare(
    "pulse.take_vips", 1,
    {"vips": List(VIP, max_items=4096), "reason": ROLE_REASONS},
    doc="Add each VIP to its interface (with its label). Idempotent: an address already there is fine.",
)
declare(
    "pulse.take_vips", 2,
    {**_TAKE_VIPS_1.payload.fields, "reason": ROLE_REASONS_4},
    doc="Add each VIP to its interface (with its label). Idempotent: an address already there is fine. "
    "v2: the reasons of role changes since v1 (scale_out: on the loopback device, no ARP).",
    upcast=lambda p: p,
)
_RELEASE_VIPS_1 = declare(
    "pulse.release_vips", 1,
    {"vips": List(VIP, max_items=4096), "reason": ROLE_REASONS},
    doc="Remove each VIP from its interface. Idempotent: an address already gone is fine.",
)
declare(
    "pulse.release_vips", 2,
    {**_RELEASE_VIPS_1.payload.fields, "reason": ROLE_REASONS_2},
    doc="Remove each VIP from its interface. Idempotent: an address already gone is fine. "
    "v2: the reason failover_service_failed.",
    upcast=lambda p: p,
)
declare(
    "pulse.release_vips", 3,
    {**_RELEASE_VIPS_1.payload.fields, "reason": ROLE_REASONS_3},
    doc="Remove each VIP from its interface. Idempotent: an address already gone is fine. "
    "v3: the reason track_failed.",
    upcast=lambda p: p,
)
_GARP_REASONS = Enum("takeover", "refresh", "split_brain", "config", "peer_returned", "restarted", "peer_was_active")
_SEND_GARP_1 = declare(
    "pulse.send_garp", 1,
    {
        "vips": List(VIP, max_items=4096),
        "repeat": Int(min=1, max=1000, doc="datagrams per address"),
        "interval_ms": Int(min=0, max=60000, doc="pause between the repeats"),
        "reason": _GARP_REASONS,
    },
    doc="Announce the VIPs: gratuitous ARP (IPv4) or unsolicited neighbour advertisements (IPv6).",
)
declare(
    "pulse.send_garp", 2,
    {**_SEND_GARP_1.payload.fields,
     "reason": Enum(*_GARP_REASONS.values, "peer_stepped_down")},
    doc="Announce the VIPs: gratuitous ARP (IPv4) or unsolicited neighbour advertisements (IPv6). "
    "v2 adds the reason peer_stepped_down (a v1 payload is a v2 one as it is).",
    upcast=lambda p: p,
)
declare(
    "pulse.start_lvsd", 1,
    {"reason": ROLE_REASONS},
    doc="Start the lvs daemon (the desired IPVS table) on this router.",
)
declare(
    "pulse.start_lvsd", 2,
    {"reason": ROLE_REASONS_3,
     "groups": Nullable(List(GROUP, max_items=64),
                        doc="the failover groups this router now holds: lvsd programs their virtual services "
                        "only (null, a v1 record: every virtual service)")},
    doc="Start the lvs daemon (the desired IPVS table) on this router, or, running, change the failover "
    "groups it programs (sent again whenever the groups held change while one is). v2: the groups.",
    upcast=lambda p: {**p, "groups": None},
)
declare(
    "pulse.start_lvsd", 3,
    {"reason": ROLE_REASONS_4,
     "groups": Nullable(List(GROUP, max_items=64),
                        doc="the failover groups this router now holds: lvsd programs their virtual services "
                        "only (null: every virtual service)")},
    doc="Start the lvs daemon (the desired IPVS table) on this router, or, running, change the failover "
    "groups it programs. v3: the reason scale_out.",
    upcast=lambda p: p,
)
declare(
    "pulse.stop_lvsd", 1,
    {"reason": ROLE_REASONS},
    doc="Stop the lvs daemon on this router.",
)
declare(
    "pulse.stop_lvsd", 2,
    {"reason": ROLE_REASONS_2},
    doc="Stop the lvs daemon on this router. v2: the reason failover_service_failed.",
    upcast=lambda p: p,
)
declare(
    "pulse.stop_lvsd", 3,
    {"reason": ROLE_REASONS_3},
    doc="Stop the lvs daemon on this router. v3: the reason track_failed.",
    upcast=lambda p: p,
)
_RUN_FAILOVER_1 = declare(
    "pulse.run_failover", 1,
    {
        "service": NAME,
        "action": Enum("start", "stop", doc="start_cmd on becoming active, stop_cmd on leaving active"),
        "command": Str(max_len=4096, doc="the configured start_cmd or stop_cmd, run with /bin/sh -c"),
        "reason": ROLE_REASONS_2,
        "timeout_ms": Int(min=0, doc="killed (its process group) after this long"),
    },
    doc="Run a failover service's start_cmd or stop_cmd (service = fos) in the background; the shell "
    "publishes pulse.failover_cmd_finished with its result. Start commands run after the VIPs are added.",
)
declare(
    "pulse.run_failover", 2,
    {**_RUN_FAILOVER_1.payload.fields, "reason": ROLE_REASONS_3},
    doc="Run a failover service's start_cmd or stop_cmd (service = fos) in the background. v2: the "
    "reason track_failed.",
    upcast=lambda p: p,
)
declare(
    "pulse.run_notify", 1,
    {
        "kind": Enum("active_cmd", "inactive_cmd", "notify", "fault_cmd"),
        "command": Str(max_len=4096, doc="the configured command line, run with /bin/sh -c"),
        "args": List(Str(max_len=256), max_items=8, doc="appended, shell-quoted: notify gets INSTANCE NAME STATE PRIORITY"),
        "role": ROLE,
        "old_role": ROLE,
        "timeout_ms": Int(min=0),
    },
    doc="Run a notify command in the background (never waited for by the core).",
)
