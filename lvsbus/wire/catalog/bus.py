"""Events of the bus itself: the broker and the log."""
from lvsbus.wire.events import declare
from lvsbus.wire.schema import Enum, Int, List, Nullable, Str

NAME = Str(max_len=64, min_len=1)

declare(
    "bus.broker_started", 1,
    {
        "epoch": Str(max_len=64, doc="random id of this broker run; changes on every restart"),
        "resumed_from": Int(min=0, doc="last seq found in the log at start (0: empty log)"),
        "recovery": Str(max_len=1024, doc="what opening the log found (torn tail cut, corruption)"),
    },
    doc="The broker started and resumed the sequence from its log.",
)
declare(
    "bus.broker_stopping", 1,
    {"reason": Str(max_len=256)},
    doc="The broker is stopping cleanly.",
)
declare(
    "bus.frame_rejected", 1,
    {
        "reason": Enum(
            "malformed", "unknown_type", "unknown_version", "bad_payload", "too_large", "unknown_envelope",
            "not_allowed", "seq_mismatch", "bad_name",
            doc="short cause, stable for alerting",
        ),
        "detail": Str(max_len=1024, doc="human-readable explanation"),
        "peer": Str(max_len=128, doc="who sent it (service name, or the socket identity as hex)"),
        "size": Int(min=0, doc="frame size in bytes"),
        "count": Int(min=1, doc="rejections so far in this broker run"),
    },
    doc="A frame on the bus was refused: it was not a valid event. The sender is told; nothing else changes.",
)
declare(
    "bus.subscriber_lagged", 1,
    {
        "subscriber": NAME,
        "first_dropped": Int(min=1),
        "last_dropped": Int(min=1),
        "dropped": Int(min=1, doc="events not delivered live; the subscriber reads them from the log"),
    },
    doc="A subscriber hit its high-water mark; the broker dropped live delivery for it and told it to catch up from the log.",
)
declare(
    "bus.client_joined", 1,
    {"client": NAME, "subscriptions": Str(max_len=1024), "pid": Nullable(Int(min=0))},
    doc="A service said hello to the broker (at start, and again after a broker restart). "
    "v1 carried the subscriptions joined by commas.",
)
declare(
    "bus.client_joined", 2,
    {
        "client": NAME,
        "subscriptions": List(Str(max_len=96), max_items=64, doc="type prefixes delivered to it"),
        "pid": Nullable(Int(min=0)),
    },
    doc="A service said hello to the broker (at start, and again after a broker restart).",
    upcast=lambda p: {**p, "subscriptions": [s for s in p["subscriptions"].split(",") if s]},
)
declare(
    "log.write_failed", 1,
    {
        "errno": Int(min=0),
        "error": Str(max_len=512),
        "first_seq": Int(min=1),
        "count": Int(min=1),
    },
    doc="The broker could not append to its log (disk full, I/O error). The events were still delivered but are not durable; publishers get no ack for them.",
)
declare(
    "log.write_recovered", 1,
    {"backlog_from": Int(min=1), "backlog_to": Int(min=1)},
    doc="Appending works again; seqs backlog_from..backlog_to, delivered live while the disk refused them, are now recorded.",
)
declare(
    "log.gap", 1,
    {
        "first_lost": Int(min=1),
        "last_lost": Int(min=1),
        "reason": Str(max_len=512, doc="why they are not in the log"),
    },
    doc="Seqs first_lost..last_lost were handed out (delivered live) but are not in the log: the broker "
    "stopped or crashed while the disk refused them and no spill file could keep them. They are never "
    "reused: the log continues after them, and readers cross the gap.",
)
declare(
    "log.tail_cut", 1,
    {
        "segment": Str(max_len=512),
        "offset": Int(min=0),
        "bytes": Int(min=0),
        "kind": Enum("torn", "corrupt", doc="torn: an incomplete last write (or zeros); corrupt: complete records that fail their CRC"),
        "kept_in": Str(max_len=512, doc="the file beside the segment that keeps the cut bytes ('' when they were zeros)"),
        "last_seq": Int(min=0, doc="the last valid seq before the cut"),
    },
    doc="Opening the log cut bytes off its last segment's tail; they are kept beside it, and seqs they held are not reused.",
)
declare(
    "log.corrupt_record", 1,
    {
        "segment": Str(max_len=512),
        "offset": Int(min=-1, doc="file offset of the bad record (-1: a seq out of order)"),
        "reason": Str(max_len=512),
        "first_unreadable": Nullable(Int(min=1)),
        "last_unreadable": Nullable(Int(min=1), doc="null when unknown"),
    },
    doc="A record of the log fails its check (found at open, or by the background scan of sealed segments). "
    "Readers go past it and say so; `lvsbus log check` lists it.",
)
declare(
    "log.snapshot_written", 1,
    {"service": NAME, "at_seq": Int(min=0), "bytes": Int(min=0)},
    doc="A service saved a snapshot of its core state as of a seq.",
)
declare(
    "bus.probe", 1,
    {
        "sent_ns": Int(min=0, doc="publisher's CLOCK_MONOTONIC when sent"),
        "n": Int(min=0, doc="probe number"),
        "pad": Str(max_len=4096, doc="padding to a realistic event size"),
    },
    doc="A probe for measuring the bus (bench/bus.py) and for drills; no service acts on it.",
)

_BUCKETS = List(Int(min=0), max_items=65, doc="observations per bucket (not cumulative): one per bound, then one above the last bound")
declare(
    "bus.log_stats", 1,
    {
        "period_ms": Int(min=0, doc="time covered: since the previous bus.log_stats, or since the broker started"),
        "durability": Enum("group", "always", "none", doc="the log's fsync policy"),
        "records": Int(min=0, doc="records appended in the period"),
        "bounds_ns": List(Int(min=1), max_items=64, doc="upper bounds of the histogram buckets, nanoseconds, ascending"),
        "append_count": Int(min=0, doc="appends: one os.write of a batch of records each"),
        "append_sum_ns": Int(min=0),
        "append_max_ns": Int(min=0),
        "append_buckets": _BUCKETS,
        "commit_count": Int(min=0, doc="appends that became durable (fsynced) in the period"),
        "commit_sum_ns": Int(min=0, doc="sum of the times from the start of an append until its last record was "
                             "durable, as the broker saw it (when the acknowledgements of that batch can go out)"),
        "commit_max_ns": Int(min=0),
        "commit_buckets": _BUCKETS,
    },
    doc="The broker's log latency since the previous one: how long each append (a batch, one write) took, and "
    "how long until it was durable (group commit). Published every `lvsbus broker --log-stats-s` seconds "
    "(10 by default) while anything else was appended. No core acts on it; metrics folds it into "
    "lvsbus_log_append_seconds and lvsbus_log_commit_seconds.",
)
