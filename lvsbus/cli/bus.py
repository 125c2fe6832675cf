"""Subcommands for the bus and its log: broker, events tail/emit, keys, schemas, log check/dump."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from lvsbus.host.argtypes import dir_to_write, existing_dir, float_range, int_range, regular_file, tcp_endpoint
from lvsbus.host.argtypes import name as argname
from lvsbus.host.paths import DEFAULT_STATE_DIR, StateDirs


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "broker",
        help="run one router's event broker in the foreground",
        description="Run the broker: it numbers every event, appends it to the log under STATE_DIR/log, "
        "then forwards it to subscribers over ipc://STATE_DIR/run/bus.sock (a 0700 directory). "
        "`lvsbus router` starts one itself; run this alone to try the bus.",
    )
    p.add_argument("--node", required=True, help="this router's name, stamped on every event")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, type=dir_to_write,
                   help="state directory (default %(default)s)")
    p.add_argument(
        "--durability",
        choices=("group", "always", "none"),
        default="group",
        help="fsync policy: group commit every ~1 ms (default), fsync every append, or never",
    )
    p.add_argument("--segment-mb", type=float, default=64, help="rotate log segments at this size (default %(default)s MiB)")
    p.add_argument("--retain-mb", type=float, default=4096, help="delete the oldest segments past this total (default %(default)s MiB; 0 = keep all)")
    p.add_argument("--retain-days", type=float, default=14, help="delete segments older than this (default %(default)s days; 0 = keep all)")
    p.add_argument("--sndhwm", type=int_range(1, 10_000_000), default=2000,
                   help="delivery batches queued per subscriber before dropping, 1..10,000,000 (default "
                        "%(default)s; a dropped subscriber then catches up from the log)")
    p.add_argument("--curve-endpoint", type=tcp_endpoint,
                   help="also serve read-only subscribers on this tcp://HOST:PORT endpoint, with CurveZMQ")
    p.add_argument("--curve-secret", type=regular_file, help="the broker's secret key file (from `lvsbus keys generate`)")
    p.add_argument("--curve-authorized", type=existing_dir,
                   help="directory of client public keys allowed on the tcp endpoint")
    p.add_argument("--log-stats-s", type=float, default=10.0,
                   help="record bus.log_stats (log append and commit latency histograms) every this many seconds "
                   "while events are appended (default %(default)s; 0 = never)")
    p.add_argument("--spill-dir", type=dir_to_write, help="where a clean stop writes a backlog the log's disk refused (default: the "
                   "run directory; best on another filesystem); the next start writes it into the log")
    p.add_argument("--stop-flush-s", type=float_range(0, 3600), default=5.0,
                   help="a stop with such a backlog keeps trying to write it this long first, 0..3600 s "
                        "(default %(default)s)")
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

    k = sub.add_parser("keys", help="the heartbeat key file (heartbeat) and CurveZMQ key pairs (generate)").add_subparsers(dest="keys_cmd", metavar="ACTION")
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
    h = k.add_parser(
        "heartbeat",
        help="make the heartbeat key file every router shares",
        description="Write a fresh random heartbeat key (64 hex characters, one line) to FILE with mode "
                    "0600. pulse authenticates heartbeats and fences with it, so copy the same file to "
                    "every router (the path is the config's heartbeat key_file). An existing file is "
                    "kept unless --force.",
    )
    h.add_argument("--out", metavar="FILE", default="/etc/lvsbus/heartbeat.key",
                   help="where to write it (default %(default)s, the config's default key_file)")
    h.add_argument("--force", action="store_true", help="replace an existing file (every router then needs the new one)")
    h.set_defaults(func=cmd_keys_heartbeat)

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
    from lvsbus.host import logs

    logs.setup()


def _broker_settings_problem(args) -> str | None:
    """What is wrong with the broker's numeric options (None: nothing)."""
    import math

    for opt, value, least in (("--segment-mb", args.segment_mb, None), ("--retain-mb", args.retain_mb, 0),
                              ("--retain-days", args.retain_days, 0), ("--log-stats-s", args.log_stats_s, 0)):
        if not math.isfinite(value) or (least is None and value <= 0) or (least is not None and value < least):
            return f"{opt} {value}: must be a {'positive' if least is None else 'non-negative'} number"
    return None


def cmd_broker(args) -> int:
    from lvsbus.bus import Broker, BrokerSettingsError, CurveServer, check_broker_settings
    from lvsbus.log import Durability

    problem = _broker_settings_problem(args)
    dirs = StateDirs(args.state_dir)
    if problem is not None:
        print(f"lvsbus broker: {problem}", file=sys.stderr)
        return 2
    _setup_logs()
    dirs.make()
    lock_fd = _take_broker_lock(dirs)  # noqa: F841  (held, open, for the process's life)
    try:  # the log checked once this broker owns it (a spare waited for the lock until now)
        check_broker_settings(args.node, dirs.log, int(args.segment_mb * 2**20))
    except BrokerSettingsError as exc:
        print(f"lvsbus broker: {exc}", file=sys.stderr)
        return 2
    curve = None
    if args.curve_endpoint:
        if not (args.curve_secret and args.curve_authorized):
            print("lvsbus broker: --curve-endpoint needs --curve-secret and --curve-authorized", file=sys.stderr)
            return 2
        curve = CurveServer(args.curve_endpoint, args.curve_secret, args.curve_authorized)
    from lvsbus.log import Retention

    retention = Retention(
        max_bytes=int(args.retain_mb * 2**20) or None, max_age_s=args.retain_days * 86400 or None
    )
    deadline = time.monotonic() + 2.0
    while True:
        try:
            broker = Broker(
                args.node, dirs.run, dirs.log, Durability(args.durability), sndhwm=args.sndhwm, curve=curve,
                segment_bytes=int(args.segment_mb * 2**20), retention=retention, log_stats_s=args.log_stats_s,
                spill_dir=args.spill_dir, stop_flush_s=args.stop_flush_s,
            )
            break
        except BrokerSettingsError as exc:
            print(f"lvsbus broker: {exc}", file=sys.stderr)
            return 2
        except RuntimeError as exc:
            # the broker we replace holds the log's own lock until the kernel has closed all its
            # files, a moment after it dropped the broker lock
            if "open by another writer" not in str(exc) or time.monotonic() > deadline:
                print(f"lvsbus broker: {exc}", file=sys.stderr)
                return 2
            time.sleep(0.001)
    signal.signal(signal.SIGTERM, lambda *_: broker.stop())
    signal.signal(signal.SIGINT, lambda *_: broker.stop())
    line = f"broker ready on ipc://{dirs.run}/bus.sock\n".encode()
    try:
        broker.run(ready=lambda: os.write(2, line))  # one write: a whole line, never merged with another's
    except Exception as exc:  # recorded (bus.broker_stopping "crashed: ...") and logged with its traceback
        os.write(2, f"lvsbus broker: crashed: {type(exc).__name__}: {exc}"[:500].encode() + b"\n")
        return 1
    return 0


def _take_broker_lock(dirs: StateDirs) -> int:
    """One broker per state directory. A second one (the supervisor's warm spare) has imported
    everything by now and waits here until the live broker dies: then it recovers the log tail,
    binds the socket and serves (clients reconnect within 10 ms)."""
    from lvsbus.host import servicelock

    import structlog

    def waiting() -> None:
        structlog.get_logger("lvsbus.bus").info("spare_waiting", service="broker", pid=os.getpid())

    return servicelock.acquire(dirs.run, "broker", on_wait=waiting)


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
    from lvsbus.host import logs
    from lvsbus.bus import BusClient

    logs.setup(level="error")  # stdout is the events; tail says itself (stderr) what it skips

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
    sock_path = None if args.connect else os.path.join(dirs.run, "bus.sock")
    n = 0
    import time

    start = last_event = time.monotonic()
    skipped = 0
    try:
        while args.count is None or n < args.count:
            ev = client.recv(0.2)
            new = client.core.undecodable - skipped
            if new:  # records no reader decodes: said (by seq), then passed
                for seq, why in list(client.core.skipped)[-new:]:
                    print(f"lvsbus events tail: #{seq} does not decode, skipped: {why}", file=sys.stderr, flush=True)
                skipped = client.core.undecodable
            now = time.monotonic()
            if ev is not None:
                print(format_event(ev, args.json), flush=True)
                n += 1
                last_event = now
                continue
            gone = _broker_gone(client.core, sock_path, now, start)
            if gone:
                print(f"lvsbus events tail: {gone}", file=sys.stderr)
                return 1
            if args.timeout is not None and now - last_event >= args.timeout:
                gone = _broker_gone(client.core, sock_path, now, start, quiet_s=1.0)
                if gone:  # not a quiet bus: no broker (it ticks every 0.2 s)
                    print(f"lvsbus events tail: {gone}", file=sys.stderr)
                    return 1
                break
    finally:
        client.close()
    return 0


#: `events tail` says the broker is gone after this long without a word from it (it ticks every 0.2 s)
TAIL_GONE_S = 3.0


def _broker_gone(core, sock_path: str | None, now: float, start: float, quiet_s: float = TAIL_GONE_S) -> str | None:
    """Why the broker ``events tail`` follows is gone, or None: no word from it (not even a tick)
    for TAIL_GONE_S, or (a local broker) its socket file removed, as a cleanly stopped broker does,
    and not back within a second (a restart)."""
    heard = core.last_heard or start
    if sock_path is not None and not os.path.exists(sock_path) and now - heard > 1.0:
        return f"the broker is gone (stopped: {sock_path} was removed)"
    if now - heard > quiet_s:
        where = sock_path or "its endpoint"
        return f"the broker is gone (no word from it at {where} for {now - heard:.1f} s)"
    return None


def cmd_emit(args) -> int:
    from lvsbus.bus import BusClient, PublishRefused

    from lvsbus.wire import catalog  # noqa: F401  (fills the registry)
    from lvsbus.wire.events import REGISTRY

    if args.type not in REGISTRY:
        print(f"lvsbus events emit: unknown event type {args.type!r} (see `lvsbus schemas list`)", file=sys.stderr)
        return 2
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        print(f"lvsbus events emit: the payload is not JSON: {exc}", file=sys.stderr)
        return 2
    if type(payload) is not dict:
        print(f"lvsbus events emit: the payload must be a JSON object, not {type(payload).__name__}", file=sys.stderr)
        return 2
    dirs = StateDirs(args.state_dir)
    client = BusClient(dirs.run, args.name)
    try:
        seq = client.publish_acked(args.type, payload, timeout=5.0)
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


def cmd_keys_heartbeat(args) -> int:
    from lvsbus.host.keyfile import write_heartbeat_key

    try:
        write_heartbeat_key(args.out, force=args.force)
    except FileExistsError:
        print(f"lvsbus keys heartbeat: {args.out} exists; kept (use --force to replace it, then copy the new "
              "file to every router)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"lvsbus keys heartbeat: {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (mode 0600, a random 256-bit key). Copy this same file to every router, to the "
          f"path of the config's heartbeat key_file (e.g. scp -p {args.out} OTHER-ROUTER:{args.out}); routers "
          "with different keys refuse each other's heartbeats.")
    return 0


def cmd_schemas(args) -> int:
    from lvsbus.wire.export import drift, export

    if args.check:
        problems = drift(args.dir)
        for p in problems:
            print(p)
        return 1 if problems else 0
    for name in export(args.dir):
        print(f"wrote {args.dir}/{name}")
    return 0


def cmd_schemas_list(args) -> int:
    from lvsbus.wire.events import REGISTRY
    from lvsbus.wire.export import generated  # noqa: F401 (fills the registry)

    for spec in REGISTRY.all_specs():
        print(f"{spec.type:<36} v{spec.version}  {spec.doc}")
    return 0


def cmd_log_check(args) -> int:
    from lvsbus.log import NotALog, describe_error, check

    try:
        report = check(args.dir)
    except (OSError, NotALog) as exc:
        print(f"lvsbus log check: {describe_error(exc)}", file=sys.stderr)
        return 2
    print(report.format())
    undecodable = _undecodable(args.dir)
    for seq, exc in undecodable[:20]:
        print(f"#{seq} does not decode (every reader skips it): {exc}")
    if len(undecodable) > 20:
        print(f"... and {len(undecodable) - 20} more records that do not decode")
    if undecodable:
        print(f"{len(undecodable)} record(s) with a right CRC do not decode")
    return 0 if report.ok and not undecodable else 1


def _undecodable(log_dir: str) -> list:
    """(seq, DecodeError) of the records that are framed right but do not decode (a broker before
    the exact type checks let a version of true through, docs/bus.md); stops quietly where the log
    cannot be read on (the check above reports that)."""
    from lvsbus.wire import catalog  # noqa: F401
    from lvsbus.wire.events import decodable
    from lvsbus.log import LogReader

    skipped: list = []
    try:
        for _ in decodable(LogReader(log_dir, skip_corrupt=True).read(1), skipped):
            pass
    except Exception:  # corruption, a missing segment: check() has said so
        pass
    return skipped


def cmd_log_dump(args) -> int:
    """Every record, decoded; a record that cannot be read or decoded is a line saying so (which
    seq, segment, offset), and the dump goes on past it; exit 1 if there was any."""
    from lvsbus.wire import catalog  # noqa: F401
    from lvsbus.wire.events import DecodeError, decode
    from lvsbus.log import LogReader, NotALog, SeqUnavailable, describe_error, open_log_dir

    bad = 0

    def problem(exc) -> None:
        nonlocal bad
        bad += 1
        print(f"UNREADABLE {exc}", flush=True)

    try:
        open_log_dir(args.dir)
        reader = LogReader(args.dir, skip_corrupt=True, on_problem=problem,
                           on_gap=lambda a, b: print(f"GAP seqs {a}..{b}: declared lost (handed out, never written)"))
        for seq, body in reader.read(max(args.from_seq or 1, reader.first_seq() or 1), args.to_seq):
            try:
                ev = decode(body, seq)
            except DecodeError as exc:
                bad += 1
                print(f"#{seq} UNDECODABLE {exc}")
                continue
            print(format_event(ev, args.json))
    except (OSError, NotALog, SeqUnavailable) as exc:
        print(f"lvsbus log dump: {describe_error(exc)}", file=sys.stderr)
        return 2
    if bad:
        print(f"lvsbus log dump: {bad} record(s) could not be read or decoded (see UNREADABLE/UNDECODABLE lines)",
              file=sys.stderr)
        return 1
    return 0
