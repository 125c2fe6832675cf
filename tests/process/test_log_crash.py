"""Crash tests of lvsbus.log with real processes.

1. A writer process (tests/helpers/log_writer.py) appends as fast as it can and prints each seq
   once it is durable; it is killed with SIGKILL at a random point; the log is reopened
   (recovery) and every acknowledged record must be there, in order, contiguous from 1, with the
   exact body, nothing corrupt; then more records are appended after recovery. Each run continues
   the same log, so recovery happens on a log with history.
2. Torn writes: the last segment is cut at many random offsets (also followed by zeros, as a
   crash can leave an extended file); exactly the records wholly before the cut survive, and the
   seqs cut are declared lost (never reused) when the assigned-seq mark says they were handed out.
"""
from __future__ import annotations

import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

from lvsbus.log import (
    HEADER_SIZE,
    HWM_NAME,
    SEGMENT_HEADER_SIZE,
    Durability,
    EventLog,
    LogReader,
    check,
    list_segments,
    parse_frames,
)
from tests.helpers.log_writer import StderrLogger, body_for

HELPER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers", "log_writer.py")
KILLS_PER_CASE = 50


class QuietLogger(StderrLogger):
    def _emit(self, level, event, **kw):
        self.events.append((level, event, kw))

    def __init__(self):
        self.events = []


def _start_writer(directory, mode: str, seed: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, HELPER, str(directory), "--durability", mode, "--segment-bytes", "65536",
         "--seed", str(seed), "--batch-max", "40", "--max-seconds", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )


def _run_and_kill(directory, mode: str, rng: random.Random) -> list[int]:
    """Start the writer, wait for its first ack, kill it 5-80 ms later; return every ack."""
    proc = _start_writer(directory, mode, rng.randrange(1 << 30))
    out = b""
    try:
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + 10
        while b"\n" not in out:
            assert time.monotonic() < deadline, "writer printed no acknowledgement"
            if select.select([fd], [], [], 0.5)[0]:
                chunk = os.read(fd, 65536)
                assert chunk, f"writer exited early with {proc.wait()}"
                out += chunk
        time.sleep(rng.uniform(0.005, 0.080))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        out += proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    lines = out.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    # the last line may be cut by the kill: only whole lines are acknowledgements
    if not out.endswith(b"\n"):
        lines.pop()
    return [int(x) for x in lines]


@pytest.mark.parametrize("mode,seed", [("group", 1), ("group", 2), ("always", 3), ("always", 4)])
def test_kill_writer_acknowledged_records_survive(tmp_path, mode, seed):
    rng = random.Random(seed)
    d = tmp_path / "log"
    acked_total = 0
    prev_last = 0
    for run in range(KILLS_PER_CASE):
        acks = _run_and_kill(d, mode, rng)
        assert acks, "no acknowledgement"
        assert acks == list(range(acks[0], acks[-1] + 1)), "acks are contiguous"
        assert acks[0] == prev_last + 1 or acks[0] <= prev_last + 1
        acked_total += len(acks)
        logger = QuietLogger()
        log = EventLog(d, durability=Durability(mode), segment_bytes=65536, logger=logger)
        try:
            assert not log.recovery.corruption, log.recovery
            assert log.last_seq >= acks[-1], f"run {run}: acked {acks[-1]} but the log ends at {log.last_seq}"
            # every record written since the previous run reads back exactly, from before it
            # (and every 10th run the whole log, from 1)
            start = 1 if run % 10 == 9 else max(1, prev_last - 5)
            assert list_segments(d)[0][0] == 1
            got = list(LogReader(d).read(start))
            assert [s for s, _ in got] == list(range(start, log.last_seq + 1))
            for s, b in got:
                assert b == body_for(s), f"run {run}: body of seq {s} differs"
            # append after recovery, and read it back
            n = log.next_seq
            log.append_batch([(s, body_for(s)) for s in range(n, n + 3)])
            assert log.wait_durable(n + 2, timeout=5)
            prev_last = n + 2
        finally:
            log.close()
        assert [s for s, _ in LogReader(d).read(n)] == [n, n + 1, n + 2]
    # the whole log, from 1, after all the kills
    got = list(LogReader(d).read(1))
    assert [s for s, _ in got] == list(range(1, prev_last + 1))
    assert all(b == body_for(s) for s, b in got)
    report = check(d)
    assert report.ok and report.last_seq == prev_last, report.format()
    assert len(report.segments) > 1  # rotation happened along the way
    assert acked_total > KILLS_PER_CASE


def _record_ends(seg_path: str) -> list[tuple[int, int]]:
    """(seq, end offset) of every record in a segment."""
    data = open(seg_path, "rb").read()
    records, consumed = parse_frames(data, SEGMENT_HEADER_SIZE)
    assert consumed == len(data)
    out, pos = [], SEGMENT_HEADER_SIZE
    for s, b in records:
        pos += HEADER_SIZE + len(b)
        out.append((s, pos))
    return out


def test_torn_writes_at_random_offsets(tmp_path):
    rng = random.Random(20261126)
    src = tmp_path / "src"
    with EventLog(src, durability=Durability("none"), segment_bytes=32768, logger=QuietLogger()) as log:
        n = 1
        while len(list_segments(src)) < 3 or n < 400:
            k = rng.randint(1, 20)
            log.append_batch([(s, body_for(s)) for s in range(n, n + k)])
            n += k
        last = n - 1
    segs = list_segments(src)
    first, seg = segs[-1]
    ends = _record_ends(seg)
    size = os.path.getsize(seg)
    assert ends[-1] == (last, size)
    offsets = set(rng.sample(range(size), min(size, 240)))
    offsets |= {0, 1, SEGMENT_HEADER_SIZE - 1, SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE + 1, size - 1}
    offsets |= {e for _, e in ends[:5]} | {e + 1 for _, e in ends[-5:-1]}
    case = tmp_path / "case"
    cases = 0
    for i, cut in enumerate(sorted(offsets)):
        zeros = rng.choice([0, 0, 7, 4096])
        shutil.copytree(src, case)
        try:
            case_seg = os.path.join(case, os.path.basename(seg))
            with open(case_seg, "r+b") as f:
                f.truncate(cut)
                if zeros:
                    f.seek(cut)
                    f.write(b"\0" * zeros)
            survivors = [s for s, e in ends if e <= cut]
            expect_last = survivors[-1] if survivors else first - 1
            # with the assigned-seq mark (a process crash, or a machine crash after it was written
            # back): the seqs cut are declared lost and never reused; without it (a machine crash
            # that lost it too): the log continues after the survivors, as before the mark existed
            keep_mark = i % 2 == 0
            if not keep_mark:
                os.unlink(os.path.join(case, HWM_NAME))
            resume = last if keep_mark else expect_last
            logger = QuietLogger()
            with EventLog(case, durability=Durability("none"), segment_bytes=32768, logger=logger) as log:
                assert not log.recovery.corruption, (cut, zeros, log.recovery)
                assert log.last_seq == resume, (cut, zeros, keep_mark)
                assert log.recovery.lost == ((expect_last + 1, last) if resume > expect_last else None)
                torn = (cut + zeros) - (max([e for _, e in ends if e <= cut], default=SEGMENT_HEADER_SIZE))
                if cut >= SEGMENT_HEADER_SIZE:
                    assert log.recovery.torn_bytes_cut == torn, (cut, zeros)
                    if torn:
                        assert any(ev == "log.torn_tail_cut" for _, ev, _ in logger.events)
                else:
                    header = open(seg, "rb").read(SEGMENT_HEADER_SIZE)
                    damaged = (header[:cut] + b"\0" * zeros)[:SEGMENT_HEADER_SIZE]
                    assert log.recovery.header_repaired == (damaged != header), (cut, zeros)
                log.append_batch([(resume + 1, b"after-1"), (resume + 2, b"after-2")])
            reader = LogReader(case)
            got = list(reader.read(1))
            assert [s for s, _ in got] == list(range(1, expect_last + 1)) + [resume + 1, resume + 2], (cut, zeros)
            assert reader.gaps == ([(expect_last + 1, last)] if resume > expect_last else [])
            assert all(b == body_for(s) for s, b in got[:-2])
            assert got[-2:] == [(resume + 1, b"after-1"), (resume + 2, b"after-2")]
            report = check(case)
            assert report.ok, report.format()
            assert report.declared_gaps == ([(expect_last + 1, last)] if resume > expect_last else [])
            cases += 1
        finally:
            shutil.rmtree(case, ignore_errors=True)
    assert cases >= 200
