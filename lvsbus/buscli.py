"""Subcommands for the bus and its log: broker, events tail/emit, keys, schemas, log check/dump."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from .argtypes import dir_to_write
from .argtypes import name as argname
from .paths import DEFAULT_STATE_DIR, StateDirs


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "broker",
        help="run one router's event broker in the foreground",
        description="Run the broker: it numbers every event, appends it to the log under STATE_DIR/log, "
        "then forwards it to subscribers over ipc://STATE_DIR/run/bus.sock (a 0700 directory). "
        "`lvsbus router` starts one itself; run this alone to try the bus.",
    )
    p.add_argument("--node", required=True, help="this router's name, stamped on every event")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="state directory (default %(default)s)")
    p.add_argument(
        "--durability",
        choices=("group", "always", "none"),
        default="group",
        help="fsync policy: group commit every ~1 ms (default), fsync every append, or never",
    )
    p.add_argument("--segment-mb", type=float, default=64, help="rotate log segments at this size (default %(default)s MiB)")
    p.add_argument("--retain-mb", type=float, default=4096, help="delete the oldest segments past this total (default %(default)s MiB; 0 = keep all)")
    p.add_argument("--retain-days", type=float, default=14, help="delete segments older than this (default %(default)s days; 0 = keep all)")
    p.add_argument("--sndhwm", type=int, default=2000, help="delivery batches queued per subscriber before dropping (it then catches up from the log)")
    p.add_argument("--curve-endpoint", help="also serve read-only subscribers on this tcp:// endpoint, with CurveZMQ")
    p.add_argument("--curve-secret", help="the broker's secret key file (from `lvsbus keys generate`)")
    p.add_argument("--curve-authorized", help="directory of client public keys allowed on the tcp endpoint")
    p.add_argument("--log-stats-s", type=float, default=10.0,
                   help="record bus.log_stats (log append and commit latency histograms) every this many seconds "
                   "while events are appended (default %(default)s; 0 = never)")
    p.set_defaults(func=cmd_broker)

    ev = sub.add_parser("events", help="watch or publish bus events").add_subparsers(dest="events_cmd", metavar="ACTION")
    t = ev.add_parser(
        "tail",
        help="follow the bus live",
        description="Print events as they are recorded, one per line (or JSON lines with --json). "
        "With --from, start with older events from the log, then follow live.",
    )
    t.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    t.add_argument("--type", action="append", default=[], metavar="PREFIX", help="only types with this prefix (repeatable), e.g. router. or health.")
    t.add_argument("--from", dest="from_seq", type=int, help="start from this seq (read from the log)")
    t.add_argument("--json", action="store_true", help="JSON lines")
    t.add_argument("--count", type=int, help="stop after this many events")
    t.add_argument("--timeout", type=float, help="stop after this many seconds without an event")
    t.add_argument("--connect", help="a remote broker's tcp:// endpoint (CurveZMQ)")
    t.add_argument("--key", help="with --connect: this client's secret key file")
    t.add_argument("--server-key", help="with --connect: the broker's public key file")
    t.set_defaults(func=cmd_tail)
    e = ev.add_parser("emit", help="publish one event (for tests and drills)")
    e.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    e.add_argument("type")
    e.add_argument("payload", help="the payload as JSON")
    e.add_argument("--name", default="cli", help="source name (default %(default)s)")
    e.set_defaults(func=cmd_emit)

    k = sub.add_parser("keys", help="CurveZMQ keys for cross-router endpoints").add_subparsers(dest="keys_cmd", metavar="ACTION")
    g = k.add_parser(
        "generate",
        help="make a key pair",
        description="Write NAME.key (public) and NAME.key_secret (secret, mode 0600) into DIR.",
    )
    g.add_argument("--dir", required=True, type=dir_to_write,
                   help="where to write them (made if missing)")
    g.add_argument("--name", required=True, type=argname,
                   help="the key's name: 1-64 letters, digits, '_', '.' or '-'")
    g.set_defaults(func=cmd_keys_generate)

    s = sub.add_parser("schemas", help="the JSON Schemas of every event").add_subparsers(dest="schemas_cmd", metavar="ACTION")
    x = s.add_parser("export", help="write schemas/ from the declarations in code")
    x.add_argument("--dir", default="schemas", type=dir_to_write)
    x.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files differ from the code")
    x.set_defaults(func=cmd_schemas)
    s.add_parser("list", help="every event type and version").set_defaults(func=cmd_schemas_list)

    lg = sub.add_parser("log", help="inspect an event log").add_subparsers(dest="log_cmd", metavar="ACTION")
    c = lg.add_parser("check", help="verify every record (CRC, framing, seq continuity)")
    c.add_argument("dir", help="a log directory (STATE_DIR/log)")
    c.set_defaults(func=cmd_log_check)
    d = lg.add_parser("dump", help="print records")
    d.add_argument("dir")
    d.add_argument("--from", dest="from_seq", type=int, default=None)
    d.add_argument("--to", dest="to_seq", type=int, default=None)
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_log_dump)


def _setup_logs() -> None:
    from . import logs

    logs.setup()


def cmd_broker(args) -> int:
    _setup_logs()
    from .bus import Broker, CurveServer
    from .log import Durability

    dirs = StateDirs(args.state_dir).make()
    curve = None
    if args.curve_endpoint:
        if not (args.curve_secret and args.curve_authorized):
            print("lvsbus broker: --curve-endpoint needs --curve-secret and --curve-authorized", file=sys.stderr)
            return 2
        curve = CurveServer(args.curve_endpoint, args.curve_secret, args.curve_authorized)
    from .log import Retention

    retention = Retention(
        max_bytes=int(args.retain_mb * 2**20) or None, max_age_s=args.retain_days * 86400 or None
    )
    broker = Broker(
        args.node, dirs.run, dirs.log, Durability(args.durability), sndhwm=args.sndhwm, curve=curve,
        segment_bytes=int(args.segment_mb * 2**20), retention=retention, log_stats_s=args.log_stats_s,
    )
    signal.signal(signal.SIGTERM, lambda *_: broker.stop())
    signal.signal(signal.SIGINT, lambda *_: broker.stop())
    broker.run(ready=lambda: print(f"broker ready on ipc://{dirs.run}/bus.sock", file=sys.stderr, flush=True))
    return 0


def format_event(ev, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {
                "seq": ev.seq, "node": ev.node, "source": ev.source, "type": ev.type, "version": ev.version,
                "mono_ns": ev.mono_ns, "wall_ns": ev.wall_ns, "cause": ev.cause, "payload": ev.payload,
            },
            default=lambda b: b.hex() if isinstance(b, bytes) else str(b),
        )
    import datetime

    ts = datetime.datetime.fromtimestamp(ev.wall_ns / 1e9, datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    cause = f" <-#{ev.cause}" if ev.cause else ""
    body = " ".join(f"{k}={v}" for k, v in ev.payload.items() if k != "model")
    return f"{ts} #{ev.seq:<8} {ev.node}/{ev.source:<8} {ev.type}{cause} {body}"


def cmd_tail(args) -> int:
    from .bus import BusClient

    dirs = StateDirs(args.state_dir)
    subs = tuple(args.type) or ("",)
    curve = None
    if args.connect:
        import zmq.auth

        if not (args.key and args.server_key):
            print("lvsbus events tail: --connect needs --key and --server-key", file=sys.stderr)
            return 2
        pub, sec = zmq.auth.load_certificate(args.key)
        spub, _ = zmq.auth.load_certificate(args.server_key)
        curve = (pub, sec, spub)
    elif not os.path.exists(os.path.join(dirs.run, "bus.sock")):
        print(f"lvsbus events tail: no broker at {dirs.run}/bus.sock (is the router running? --state-dir?)", file=sys.stderr)
        return 1
    client = BusClient(
        dirs.run, f"tail-{os.getpid()}", subs=subs, log_dir=None if args.connect else dirs.log,
        from_seq=args.from_seq, connect=args.connect, curve=curve,
    )
    n = 0
    try:
        while args.count is None or n < args.count:
            ev = client.recv(args.timeout)
            if ev is None:
                break
            print(format_event(ev, args.json), flush=True)
            n += 1
    finally:
        client.close()
    return 0


def cmd_emit(args) -> int:
    from .bus import BusClient, PublishRefused

    dirs = StateDirs(args.state_dir)
    client = BusClient(dirs.run, args.name)
    try:
        seq = client.publish_acked(args.type, json.loads(args.payload), timeout=5.0)
    except PublishRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except TimeoutError as exc:
        print(f"lvsbus events emit: {exc} (is the broker running?)", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(seq)
    return 0


def cmd_keys_generate(args) -> int:
    import zmq.auth

    try:
        os.makedirs(args.dir, mode=0o700, exist_ok=True)
        public, secret = zmq.auth.create_certificates(args.dir, args.name)
        os.chmod(secret, 0o600)
        os.chmod(public, 0o644)
    except OSError as exc:
        print(f"lvsbus keys generate: {exc.filename or args.dir}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    print(f"public: {public}\nsecret: {secret} (0600)")
    return 0


def cmd_schemas(args) -> int:
    from .schemas_export import drift, export

    if args.check:
        problems = drift(args.dir)
        for p in problems:
            print(p)
        return 1 if problems else 0
    for name in export(args.dir):
        print(f"wrote {args.dir}/{name}")
    return 0


def cmd_schemas_list(args) -> int:
    from .events import REGISTRY
    from .schemas_export import generated  # noqa: F401 (fills the registry)

    for spec in REGISTRY.all_specs():
        print(f"{spec.type:<36} v{spec.version}  {spec.doc}")
    return 0


def cmd_log_check(args) -> int:
    from .log import check

    report = check(args.dir)
    print(report.format() if hasattr(report, "format") else report)
    return 0 if getattr(report, "ok", True) else 1


def cmd_log_dump(args) -> int:
    from . import catalog  # noqa: F401
    from .events import DecodeError, decode
    from .log import LogReader

    for seq, body in LogReader(args.dir).read(args.from_seq or 1, args.to_seq):
        try:
            ev = decode(body, seq)
        except DecodeError as exc:
            print(f"#{seq} UNDECODABLE {exc}")
            continue
        print(format_event(ev, args.json))
    return 0
