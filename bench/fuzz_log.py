"""Fuzzing of lvsbus.log's readers and recovery with corrupted segments.

Each input is a small, real log (events from a golden incident, in 2-4 segments, written by
``EventLog`` so it carries its assigned-seq mark) with one mutation in one segment file: a flipped
byte, a truncation, a zeroed range (1 byte to 4 KB), or zeros appended (a file extended by a
crash). For each input:

* ``check`` must find it (a problem, a torn tail, or seqs missing against the writer's mark),
  unless every record still reads back identical (the mutation changed nothing that matters);
* the skipping reader, ``read_events`` (timeline, listings, what-if; every 10th input) and opening
  the log for writing (recovery) must not raise: any exception is counted in ``tracebacks``;
* after recovery, every record whose bytes the mutation did not touch must still read back (else
  ``acked_lost``), and the next seq must be above every seq the log ever held (else ``seq_reused``);
* every ``--verify-every``-th input also goes through ``replay --verify`` and ``log dump``: no
  exception, and verify never says identical when a record changed (else ``verify_missed``).

Prints ``name=value`` lines: ``logs=`` (inputs run), ``corruption_detected=`` (found / inputs that
changed a record), ``tracebacks=``, ``acked_lost=``, ``seq_reused=``, ``undetected=``, ``rate=``.
Run: ``python bench/fuzz_log.py --inputs 1000000 [--seed 1] [--recover-every 1]``. Temporary files
go under /dev/shm when it exists (a tmpfs), deleted at the end. tests/unit/test_log_fuzz.py runs a
bounded number of inputs.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lvsbus.log import (  # noqa: E402
    HWM_NAME, CorruptRecord, Durability, EventLog, LogReader, SeqUnavailable, check, list_segments,
)

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "logs",
                      "partition_heals", "lvs1", "log")


class _Quiet:
    def debug(self, *a, **k):
        pass

    info = warning = error = debug


@dataclass
class Counts:
    logs: int = 0
    changed: int = 0  # inputs whose mutation changed a record's bytes (or a segment header)
    detected: int = 0
    benign: int = 0  # mutations every record survived unchanged (not corruption of data)
    undetected: int = 0
    tracebacks: int = 0
    acked_lost: int = 0
    seq_reused: int = 0
    verified: int = 0  # inputs also run through replay --verify and log dump
    verify_missed: int = 0  # verify said identical on a log whose records changed
    examples: list = field(default_factory=list)  # the first failures, for a report

    def lines(self, seconds: float) -> list[str]:
        pct = 100.0 * self.detected / self.changed if self.changed else 100.0
        return [
            f"logs={self.logs}",
            f"corruption_detected={self.detected}/{self.changed} ({pct:.3f}%)",
            f"benign={self.benign}",
            f"undetected={self.undetected}",
            f"tracebacks={self.tracebacks}",
            f"acked_lost={self.acked_lost}",
            f"seq_reused={self.seq_reused}",
            f"verify_missed={self.verify_missed}/{self.verified}",
            f"rate={self.logs / seconds if seconds else 0:.0f} inputs/s",
        ]


def make_base(directory: str, records: int = 60, segment_bytes: int = 4096) -> list[tuple[int, bytes]]:
    """A small real log: the first ``records`` events of a golden incident, several segments."""
    src = list(LogReader(GOLDEN).read(1, records))
    with EventLog(directory, durability=Durability("none"), segment_bytes=segment_bytes, logger=_Quiet()) as log:
        for i in range(0, len(src), 7):
            log.append_batch(src[i:i + 7])
    return src


def _layout(directory: str) -> dict:
    """segment path -> (bytes, [(seq, start, end)]) of the base log."""
    out = {}
    for first, path in list_segments(directory):
        data = open(path, "rb").read()
        recs = []
        for seq, body, end in _frames(data):
            recs.append((seq, end - 16 - len(body), end))
        out[os.path.basename(path)] = (data, recs)
    return out


def _frames(data: bytes):
    from lvsbus.log import iter_frames

    return list(iter_frames(data, 16))


def mutate(rng: random.Random, data: bytes) -> tuple[bytes, int, int, str]:
    """One mutation: (new bytes, first byte touched, end of the touched range, kind)."""
    n = len(data)
    kind = rng.choice(("flip", "flip", "truncate", "zero", "extend"))
    if kind == "flip":
        off = rng.randrange(n)
        b = bytearray(data)
        b[off] ^= rng.randrange(1, 256)
        return bytes(b), off, off + 1, kind
    if kind == "truncate":
        off = rng.randrange(n)
        return data[:off], off, n, kind
    if kind == "zero":
        off = rng.randrange(n)
        length = min(n - off, rng.choice((1, 2, 8, 16, 100, 512, 4096)))
        return data[:off] + b"\0" * length + data[off + length:], off, off + length, kind
    extra = rng.choice((1, 7, 100, 4096))
    return data + b"\0" * extra, n, n, kind


def _verify_and_dump(d: str) -> bool:
    """replay --verify and log dump on the damaged log (their output discarded); verify's ok."""
    import contextlib
    import io

    from lvsbus.cli.bus import cmd_log_dump
    from lvsbus_tools.replay import verify

    rep = verify(d)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cmd_log_dump(argparse.Namespace(dir=d, from_seq=None, to_seq=None, json=False))
    return rep.ok


def run_one(work: str, base: str, layout: dict, originals: list, rng: random.Random, counts: Counts,
            recover: bool, verify: bool = False, decode: bool = True) -> None:
    from lvsbus_tools.timeline import read_events

    names = sorted(layout)
    name = names[-1] if rng.random() < 0.5 else rng.choice(names)  # the active segment is the usual victim
    data, recs = layout[name]
    new, lo, hi, kind = mutate(rng, data)
    if new == data:
        return
    d = os.path.join(work, "case")
    if os.path.exists(d):
        shutil.rmtree(d)
    os.mkdir(d)
    for fname, content in _files(base).items():  # the base log, from memory (faster than copytree)
        with open(os.path.join(d, fname), "wb") as f:
            f.write(new if fname == name else content)
    counts.logs += 1
    touched = {seq for seq, s, e in recs if s < hi and e > lo and not (kind == "extend")}
    header_touched = lo < 16 and kind != "extend"
    changed = bool(touched) or header_touched
    where = f"{kind} {name}@{lo}..{hi}"
    try:
        report = check(d)
        found = (not report.ok) or any(s.torn_tail for s in report.segments)
        reader = LogReader(d, skip_corrupt=True)
        back = list(reader.read(1))
        if decode:  # bodies behind a valid CRC are the originals: decoding them every time adds little
            for _ in read_events(d, problems=[]):
                pass
    except Exception:
        counts.tracebacks += 1
        if len(counts.examples) < 5:
            counts.examples.append(f"traceback reading {where}: {traceback.format_exc(limit=3)}")
        return
    same = back == originals and not reader.problems
    if verify:
        counts.verified += 1
        try:
            verified_ok = _verify_and_dump(d)
        except Exception:
            counts.tracebacks += 1
            if len(counts.examples) < 5:
                counts.examples.append(f"traceback in verify/dump of {where}: {traceback.format_exc(limit=3)}")
            return
        if changed and not same and verified_ok:
            counts.verify_missed += 1
            if len(counts.examples) < 5:
                counts.examples.append(f"verify said identical after {where}")
    if changed:
        counts.changed += 1
        if found:
            counts.detected += 1
        elif same:
            counts.benign += 1
            counts.changed -= 1
        else:
            counts.undetected += 1
            if len(counts.examples) < 5:
                counts.examples.append(f"undetected: {where}")
    if not recover:
        return
    try:
        with EventLog(d, durability=Durability("none"), logger=_Quiet()) as log:
            next_seq = log.next_seq
            log.append(next_seq, b"after recovery")
        after = {seq: body for seq, body in LogReader(d, skip_corrupt=True).read(1)}
    except (CorruptRecord, SeqUnavailable, OSError, ValueError, RuntimeError):
        counts.tracebacks += 1
        if len(counts.examples) < 5:
            counts.examples.append(f"traceback recovering {where}: {traceback.format_exc(limit=3)}")
        return
    lost = [seq for seq, body in originals if seq not in touched and after.get(seq) != body]
    if lost:
        counts.acked_lost += len(lost)
        if len(counts.examples) < 5:
            counts.examples.append(f"lost {lost[:5]} after {where}")
    if next_seq <= originals[-1][0]:
        counts.seq_reused += 1
        if len(counts.examples) < 5:
            counts.examples.append(f"seq {next_seq} reused after {where}")


def fuzz(inputs: int, seed: int = 1, recover_every: int = 1, workdir: str | None = None,
         progress: float = 0.0, verify_every: int = 0) -> tuple[Counts, float]:
    rng = random.Random(seed)
    top = tempfile.mkdtemp(prefix="lvsbus-fuzz-", dir=workdir or ("/dev/shm" if os.path.isdir("/dev/shm") else None))
    counts = Counts()
    t0 = time.perf_counter()
    next_report = t0 + progress if progress else None
    _FILES.clear()
    try:
        bases = []
        for k, (records, seg) in enumerate(((40, 2048), (60, 4096), (25, 100_000))):
            base = os.path.join(top, f"base{k}")
            originals = make_base(base, records, seg)
            assert _read_hwm_ok(base)
            bases.append((base, _layout(base), originals))
        i = 0
        while counts.logs < inputs:
            base, layout, originals = bases[i % len(bases)]
            run_one(top, base, layout, originals, rng, counts, recover=(i % recover_every == 0),
                    verify=bool(verify_every) and i % verify_every == 0, decode=i % 10 == 0)
            i += 1
            if next_report is not None and time.perf_counter() >= next_report:
                print(" ".join(counts.lines(time.perf_counter() - t0)), file=sys.stderr, flush=True)
                next_report = time.perf_counter() + progress
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return counts, time.perf_counter() - t0


_FILES: dict = {}


def _files(base: str) -> dict:
    """The base log's files (not its lock), read once."""
    if base not in _FILES:
        _FILES[base] = {n: open(os.path.join(base, n), "rb").read() for n in sorted(os.listdir(base)) if n != ".lock"}
    return _FILES[base]


def _read_hwm_ok(base: str) -> bool:
    return os.path.exists(os.path.join(base, HWM_NAME))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inputs", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--recover-every", type=int, default=1, help="open the log for writing (recovery) every Nth input")
    p.add_argument("--progress", type=float, default=60.0, help="a progress line on stderr every this many seconds")
    p.add_argument("--verify-every", type=int, default=50,
                   help="also run replay --verify and log dump on every Nth input (0: never)")
    args = p.parse_args(argv)
    counts, seconds = fuzz(args.inputs, args.seed, args.recover_every, progress=args.progress,
                           verify_every=args.verify_every)
    for line in counts.lines(seconds):
        print(line, flush=True)
    for ex in counts.examples:
        print("example:", ex)
    bad = counts.undetected or counts.tracebacks or counts.acked_lost or counts.seq_reused or counts.verify_missed
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
