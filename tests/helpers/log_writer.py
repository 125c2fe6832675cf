"""Append records to an lvsbus log as fast as possible, acknowledging durable seqs on stdout.

Run as a script: ``python tests/helpers/log_writer.py DIR --durability group``. After each
record is durable (per ``EventLog.durable_seq``) its seq is written to stdout, one a line, flushed.
Bodies are derived from the seq (``body_for``), so a reader can check every byte.
Used by tests/process/test_log_crash.py (killed with SIGKILL at random points) and by the follow test.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time

if __name__ == "__main__":  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def body_for(seq: int) -> bytes:
    """A body derived from the seq, 0..299 bytes, different content for every seq."""
    n = (seq * 2654435761) % 300
    seed = hashlib.blake2b(seq.to_bytes(8, "little"), digest_size=32).digest()
    return (seed * (n // 32 + 1))[:n]


class StderrLogger:
    """A minimal structured logger (structlog's method names) that writes to stderr, so stdout
    carries only acknowledgements and the process starts without importing structlog."""

    def _emit(self, level: str, event: str, **kw) -> None:
        sys.stderr.write(f"{level} {event} " + " ".join(f"{k}={v}" for k, v in kw.items()) + "\n")

    def debug(self, event: str, **kw) -> None:
        pass

    def info(self, event: str, **kw) -> None:
        self._emit("info", event, **kw)

    def warning(self, event: str, **kw) -> None:
        self._emit("warning", event, **kw)

    def error(self, event: str, **kw) -> None:
        self._emit("error", event, **kw)


def main(argv: list[str] | None = None) -> int:
    from lvsbus.log import Durability, EventLog

    p = argparse.ArgumentParser()
    p.add_argument("directory")
    p.add_argument("--durability", default="group", choices=("always", "group", "none"))
    p.add_argument("--interval-ms", type=float, default=1.0)
    p.add_argument("--segment-bytes", type=int, default=256 * 1024)
    p.add_argument("--count", type=int, default=0, help="stop after this many records (0: never)")
    p.add_argument("--batch-max", type=int, default=50)
    p.add_argument("--sleep-ms", type=float, default=0.0, help="pause between batches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=60.0, help="safety limit")
    args = p.parse_args(argv)

    rng = random.Random(args.seed)
    log = EventLog(args.directory, durability=Durability(args.durability, interval_ms=args.interval_ms),
                   segment_bytes=args.segment_bytes, logger=StderrLogger())
    out = sys.stdout
    acked = log.durable_seq
    deadline = time.monotonic() + args.max_seconds
    written = 0
    try:
        while time.monotonic() < deadline and (not args.count or written < args.count):
            k = rng.randint(1, args.batch_max)
            if args.count:
                k = min(k, args.count - written)
            start = log.next_seq
            log.append_batch([(s, body_for(s)) for s in range(start, start + k)])
            written += k
            durable = log.durable_seq
            if durable > acked:
                out.write("".join(f"{s}\n" for s in range(acked + 1, durable + 1)))
                out.flush()
                acked = durable
            if args.sleep_ms:
                time.sleep(args.sleep_ms / 1000.0)
        log.sync()
        durable = log.durable_seq
        if durable > acked:
            out.write("".join(f"{s}\n" for s in range(acked + 1, durable + 1)))
            out.flush()
    finally:
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
