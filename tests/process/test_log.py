"""Tests of lvsbus.log: framing, segments, index, reader, follow, retention, durability, errors,
recovery from torn tails and corruption, and the check report."""
from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib

import pytest
from structlog.testing import capture_logs

from lvsbus.log import (
    HEADER_SIZE,
    MAX_BODY_BYTES,
    SEGMENT_HEADER_SIZE,
    CorruptRecord,
    Durability,
    EventLog,
    LogReader,
    LogWriteError,
    Retention,
    SeqUnavailable,
    check,
    frame,
    frame_batch,
    iter_frames,
    list_segments,
    parse_frames,
)
from tests.helpers.log_writer import body_for
from tests.helpers.procs import tmpfs

HELPER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers", "log_writer.py")
NONE = Durability("none")


def fill(log: EventLog, n: int, body=body_for, batch: int = 500) -> None:
    start = log.next_seq
    for i in range(start, start + n, batch):
        log.append_batch([(s, body(s)) for s in range(i, min(i + batch, start + n))])


def read_all(directory, from_seq=1, to_seq=None):
    return list(LogReader(directory).read(from_seq, to_seq))


@contextlib.contextmanager
def opened(*args, **kw):
    log = EventLog(*args, **kw)
    try:
        yield log
    finally:
        log.close()


# ---------------------------------------------------------------------------------------------
# framing


def test_frame_round_trip():
    records = [(1, b""), (2, b"x"), (3, bytes(range(256)) * 10), (2**64 - 1, b"last")]
    buf = b"".join(frame(s, b) for s, b in records)
    assert frame_batch(records) == buf
    assert parse_frames(buf) == (records, len(buf))
    assert parse_frames(memoryview(buf)) == (records, len(buf))
    got = list(iter_frames(buf))
    assert [(s, b) for s, b, _ in got] == records
    assert got[-1][2] == len(buf)
    # the CRC covers the seq bytes then the body
    length, crc, seq = struct.unpack_from("<IIQ", buf, 0)
    assert (length, seq) == (0, 1) and crc == zlib.crc32((1).to_bytes(8, "little"))


def test_parse_stops_cleanly_at_a_partial_record():
    buf = frame(1, b"a" * 10) + frame(2, b"b" * 10)
    full = len(frame(1, b"a" * 10))
    for cut in range(len(buf)):
        records, consumed = parse_frames(buf[:cut])
        expect = [(1, b"a" * 10)] if cut >= full else []
        assert records == expect
        assert consumed == (full if cut >= full else 0)
    # iter_frames returns where it stopped
    gen = iter_frames(buf[:-3])
    assert [s for s, _, _ in gen] == [1]
    with pytest.raises(StopIteration) as stop:
        next(iter_frames(buf[:-3], full))
    assert stop.value.value == full
    # parse from an offset
    assert parse_frames(buf, full) == ([(2, b"b" * 10)], len(buf))


def test_parse_raises_on_bad_crc_and_impossible_length():
    good = frame(1, b"hello")
    bad = bytearray(good + frame(2, b"world"))
    bad[len(good) + HEADER_SIZE + 1] ^= 0x01
    with pytest.raises(CorruptRecord) as exc:
        parse_frames(bytes(bad))
    assert exc.value.offset == len(good) and "crc" in exc.value.reason
    with pytest.raises(CorruptRecord):
        list(iter_frames(bytes(bad)))
    huge = struct.pack("<IIQ", MAX_BODY_BYTES + 1, 0, 1) + b"x" * 10
    with pytest.raises(CorruptRecord) as exc:
        parse_frames(huge)
    assert "length" in exc.value.reason
    with pytest.raises(CorruptRecord):
        list(iter_frames(huge))


# ---------------------------------------------------------------------------------------------
# writer basics


def test_empty_log_and_contiguity(tmp_path):
    with opened(tmp_path, durability=NONE) as log:
        assert (log.next_seq, log.last_seq, log.first_seq, log.durable_seq) == (1, 0, 1, 0)
        with pytest.raises(ValueError):
            log.append(2, b"x")
        log.append(1, b"one")
        with pytest.raises(ValueError):
            log.append(1, b"again")
        with pytest.raises(ValueError):  # a gap inside a batch: nothing of the batch is written
            log.append_batch([(2, b"two"), (4, b"four")])
        log.append_batch([(2, b"two"), (3, b"three")])
        log.append_batch([])
        assert (log.next_seq, log.last_seq) == (4, 3)
    assert read_all(tmp_path) == [(1, b"one"), (2, b"two"), (3, b"three")]
    with opened(tmp_path, durability=NONE) as log:
        assert log.next_seq == 4 and log.recovery.clean


def test_first_seq_given(tmp_path):
    with opened(tmp_path, durability=NONE, first_seq=1000) as log:
        assert (log.next_seq, log.last_seq) == (1000, 999)
        log.append(1000, b"a")
    assert read_all(tmp_path, 1000) == [(1000, b"a")]
    with pytest.raises(SeqUnavailable) as exc:
        LogReader(tmp_path).read(1)
    assert exc.value.first_available == 1000


def test_one_writer_per_directory(tmp_path):
    with opened(tmp_path, durability=NONE):
        with pytest.raises(RuntimeError):
            EventLog(tmp_path, durability=NONE)


def test_read_from_any_seq_across_rotated_segments(tmp_path):
    with opened(tmp_path, durability=NONE, segment_bytes=2048) as log:
        fill(log, 3000, batch=7)
        assert len(list_segments(tmp_path)) > 50
    reader = LogReader(tmp_path)
    everything = list(reader.read())
    assert [s for s, _ in everything] == list(range(1, 3001))
    assert all(b == body_for(s) for s, b in everything)
    for start in [1, 2, 17, 100, 1023, 1024, 1025, 1500, 2999, 3000]:
        got = list(reader.read(start))
        assert [s for s, _ in got] == list(range(start, 3001))
        assert got[0][1] == body_for(start)
    assert list(reader.read(3001)) == []
    assert [s for s, _ in reader.read(10, 20)] == list(range(10, 21))
    assert [s for s, _ in reader.read(5, 5)] == [5]
    batches = list(reader.read_batches(1))
    assert sum(len(b) for b in batches) == 3000
    # reopening continues the last segment
    with opened(tmp_path, durability=NONE, segment_bytes=2048) as log:
        assert log.next_seq == 3001 and log.recovery.clean
        log.append(3001, b"more")
    assert read_all(tmp_path, 3000) == [(3000, body_for(3000)), (3001, b"more")]


@pytest.fixture(scope="module")
def big_log(tmp_path_factory):
    """A 200k-record log (100-byte bodies) in one segment."""
    d = tmp_path_factory.mktemp("biglog")
    with opened(d, durability=NONE, segment_bytes=1 << 30) as log:
        body = b"b" * 100
        for i in range(1, 200001, 1000):
            log.append_batch([(s, body) for s in range(i, i + 1000)])
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_index_is_used(big_log):
    (first, seg), = list_segments(big_log)
    size = os.path.getsize(seg)
    reader = LogReader(big_log)
    t0 = time.perf_counter()
    assert list(reader.read(200000)) == [(200000, b"b" * 100)]
    t_index = time.perf_counter() - t0
    # the index entry (<= 1024 records back) plus one chunk, not the 23 MB segment
    assert reader.bytes_read < 2 * 1024 * 1024 < size
    assert reader.index_misses == 0
    # a reader without the index has to scan: much more bytes, more time
    saved = seg[:-4] + ".idx"
    tmp = saved + ".bak"
    os.rename(saved, tmp)
    try:
        r2 = LogReader(big_log)
        t0 = time.perf_counter()
        assert list(r2.read(200000)) == [(200000, b"b" * 100)]
        t_scan = time.perf_counter() - t0
        assert r2.bytes_read >= size - 1024
        assert t_scan > t_index
    finally:
        os.rename(tmp, saved)


def test_corrupt_or_missing_index_still_reads_right(tmp_path):
    with opened(tmp_path, durability=NONE, segment_bytes=1 << 30) as log:
        fill(log, 20000)
    (first, seg), = list_segments(tmp_path)
    idx = seg[:-4] + ".idx"
    good = open(idx, "rb").read()
    assert len(good) >= 16 * 10
    variants = {
        "garbage": os.urandom(len(good)),
        "shifted offsets": b"".join(struct.pack("<QQ", s, o + 3) for s, o in struct.iter_unpack("<QQ", good)),
        "wrong seqs": b"".join(struct.pack("<QQ", s + 1, o) for s, o in struct.iter_unpack("<QQ", good)),
        "truncated entry": good[:-5],
        "beyond the end": struct.pack("<QQ", 15000, 10**9),
        "empty": b"",
    }
    for name, content in variants.items():
        with open(idx, "wb") as f:
            f.write(content)
        for start in (1, 5000, 12345, 20000):
            got = read_all(tmp_path, start)
            assert [s for s, _ in got] == list(range(start, 20001)), name
            assert got[0][1] == body_for(start), name
    os.unlink(idx)
    assert [s for s, _ in read_all(tmp_path, 19999)] == [19999, 20000]
    assert check(tmp_path).segments[0].index == "missing"
    # the writer rebuilds the active segment's index on open
    with open(idx, "wb") as f:
        f.write(os.urandom(64))
    with opened(tmp_path, durability=NONE):
        pass
    assert open(idx, "rb").read() == good
    assert check(tmp_path).segments[0].index == "ok"


# ---------------------------------------------------------------------------------------------
# reader: follow, partial tails


def test_partial_record_at_the_tail_is_not_yet_written(tmp_path):
    with opened(tmp_path, durability=NONE) as log:
        fill(log, 10)
    (first, seg), = list_segments(tmp_path)
    rec = frame(11, body_for(11) + b"!")
    with open(seg, "ab") as f:
        f.write(rec[:7])
    assert [s for s, _ in read_all(tmp_path)] == list(range(1, 11))
    got = []
    reader = LogReader(tmp_path)

    def follow():
        for r in reader.follow(1, poll_interval=0.01, stop=lambda: len(got) >= 11):
            got.append(r)

    t = threading.Thread(target=follow)
    t.start()
    try:
        time.sleep(0.1)
        assert len(got) == 10
        with open(seg, "ab") as f:
            f.write(rec[7:])
    finally:
        t.join(5)
    assert not t.is_alive()
    assert got[-1] == (11, body_for(11) + b"!")


def test_follow_while_another_process_appends_and_rotates(tmp_path):
    count = 20000
    proc = subprocess.Popen(
        [sys.executable, HELPER, str(tmp_path), "--durability", "none", "--count", str(count),
         "--segment-bytes", "32768", "--batch-max", "200", "--sleep-ms", "0.5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        while not list_segments(tmp_path) and proc.poll() is None:
            time.sleep(0.005)
        got = []
        deadline = time.monotonic() + 30
        for seq, body in LogReader(tmp_path).follow(1, poll_interval=0.01,
                                                     stop=lambda: time.monotonic() > deadline):
            assert seq == len(got) + 1 and body == body_for(seq)
            got.append(seq)
            if seq == count:
                break
        assert len(got) == count
        assert proc.wait(10) == 0
        assert len(list_segments(tmp_path)) > 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_records_written_to_a_segment_just_before_it_is_sealed_are_read_before_the_next(tmp_path):
    """The reader at the end of a segment finds a next one (the writer rotated meanwhile): it reads
    the rest of the old one once more, and the records written there are read, not taken for a
    gap before the next segment."""
    d = str(tmp_path / "log")
    with opened(d, durability=NONE, segment_bytes=4096) as log:
        log.append_batch([(s, body_for(s)) for s in range(1, 4)])
        reader = LogReader(d)
        real = reader._next_segment

        def writer_appends_then_rotates(cur, known):  # right after the reader found the end of segment 1
            if log.next_seq == 4:
                log.append_batch([(s, b"x" * 700) for s in range(4, 11)])  # into segment 1, now full
                log.append_batch([(11, body_for(11))])  # rotates: segment 11
            return real(cur, known)

        reader._next_segment = writer_appends_then_rotates  # type: ignore[method-assign]
        assert [s for s, _ in reader.read(1)] == list(range(1, 12))
        assert len(list_segments(d)) == 2


def test_follow_stops_and_waits_for_an_empty_log(tmp_path):
    d = tmp_path / "log"
    got = []
    stop = threading.Event()

    def follow():
        for r in LogReader(d).follow(1, poll_interval=0.01, stop=stop.is_set):
            got.append(r)
            if len(got) == 3:
                stop.set()

    t = threading.Thread(target=follow)
    t.start()
    try:
        time.sleep(0.05)
        with opened(d, durability=NONE) as log:
            fill(log, 3)
    finally:
        t.join(5)
        stop.set()
    assert [s for s, _ in got] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# retention


def test_retention_by_size(tmp_path):
    with opened(tmp_path, durability=NONE, segment_bytes=4096) as log:
        fill(log, 2000, batch=10)
        segs = list_segments(tmp_path)
        total = sum(os.path.getsize(p) for _, p in segs)
        log.retention = Retention(max_bytes=total // 2)
        deleted = log.apply_retention()
        assert deleted and deleted == [p for _, p in segs[: len(deleted)]]
        remaining = list_segments(tmp_path)
        assert sum(os.path.getsize(p) for _, p in remaining) <= total // 2
        assert log.first_seq == remaining[0][0] > 1
        assert not any(os.path.exists(p[:-4] + ".idx") for p in deleted)
        first = log.first_seq
        # never the active segment, even with a tiny limit
        log.retention = Retention(max_bytes=1)
        log.apply_retention()
        assert [p for _, p in list_segments(tmp_path)] == [log.active_segment]
        # also applied on rotation
        fill(log, 200, batch=10)
        assert len(list_segments(tmp_path)) <= 2
    reader = LogReader(tmp_path)
    with pytest.raises(SeqUnavailable) as exc:
        reader.read(first)
    assert exc.value.first_available == reader.first_seq()
    got = list(reader.read(reader.first_seq()))
    assert got[-1][0] == 2200 and [s for s, _ in got] == list(range(reader.first_seq(), 2201))


def test_retention_by_age(tmp_path):
    with opened(tmp_path, durability=NONE, segment_bytes=4096, retention=Retention(max_age_s=3600)) as log:
        fill(log, 1000, batch=10)
        segs = list_segments(tmp_path)
        now = time.time()
        assert log.apply_retention(now) == []
        for _, p in segs[:3]:
            os.utime(p, (now - 7200, now - 7200))
        deleted = log.apply_retention(now)
        assert deleted == [p for _, p in segs[:3]]
        assert log.first_seq == segs[3][0]
        # everything old, but the active segment stays
        assert len(log.apply_retention(now + 10**6)) == len(segs) - 4
        assert [p for _, p in list_segments(tmp_path)] == [log.active_segment]


# ---------------------------------------------------------------------------------------------
# durability


def test_group_commit(tmp_path):
    # an append returns before its fsync: with a long interval nothing is durable until a sync
    seen = []
    with opened(tmp_path / "a", durability=Durability("group", interval_ms=60_000), on_durable=seen.append) as log:
        fd = log.durable_fd()
        log.append(1, b"a")
        assert log.durable_seq == 0 and seen == []
        assert select.select([fd], [], [], 0)[0] == []
        assert not log.wait_durable(1, timeout=0.05)
        assert log.sync() == 1 and log.durable_seq == 1 and seen == [1]
        assert select.select([fd], [], [], 1.0)[0] == [fd]
        assert log.drain_durable_fd() == 1
        assert select.select([fd], [], [], 0)[0] == []
    # the interval commits by itself (no timing upper bound asserted: the machine may be loaded)
    with opened(tmp_path / "i", durability=Durability("group", interval_ms=50)) as log:
        log.append(1, b"a")
        assert log.wait_durable(1, timeout=5.0)
        assert not log.wait_durable(5, timeout=0.01)
        log.append_batch([(2, b"b"), (3, b"c")])
        assert log.wait_durable(3, timeout=5.0) and log.durable_seq == 3
        log.append(4, b"d")
        assert log.sync() == 4
    # max_records makes it sooner than the interval
    with opened(tmp_path / "b", durability=Durability("group", interval_ms=10_000, max_records=10)) as log:
        fill(log, 9)
        assert not log.wait_durable(9, timeout=0.1)
        fill(log, 1)
        assert log.wait_durable(10, timeout=2.0)


def test_group_commit_interval_1ms(tmp_path):
    with opened(tmp_path, durability=Durability("group", interval_ms=1.0)) as log:
        for i in range(1, 201):
            log.append(i, b"x" * 100)
        assert log.wait_durable(200, timeout=1.0)


def test_always_and_none(tmp_path):
    with opened(tmp_path / "a", durability=Durability("always")) as log:
        fd = log.durable_fd()
        log.append(1, b"a")
        assert log.durable_seq == 1
        assert select.select([fd], [], [], 0)[0] == [fd]
        assert log.wait_durable(1, 0)
    with opened(tmp_path / "n", durability=NONE) as log:
        log.append(1, b"a")
        assert log.durable_seq == 1 and log.sync() == 1


# ---------------------------------------------------------------------------------------------
# write errors


@pytest.fixture
def tiny_tmpfs(tmp_path):
    with tmpfs(tmp_path / "tmpfs", "256k") as mnt:
        yield mnt


@pytest.mark.parametrize("mode", ["none", "group", "always"])
def test_enospc_then_recovers(tiny_tmpfs, mode):
    d = tiny_tmpfs / "log"
    log = EventLog(d, durability=Durability(mode), segment_bytes=1 << 20)
    try:
        fill(log, 100)
        filler = tiny_tmpfs / "filler"
        ffd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while True:
                os.write(ffd, b"\0" * 512)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(ffd)
        (first, seg), = list_segments(d)
        size_before = os.path.getsize(seg)
        failures = 0
        # appends fail cleanly (maybe after a few fit in the last free bytes)
        for _ in range(50):
            seq = log.next_seq
            try:
                log.append_batch([(s, b"y" * 300) for s in range(seq, seq + 20)])
            except LogWriteError as exc:
                assert exc.errno == errno.ENOSPC
                assert isinstance(exc, OSError)
                failures += 1
                assert log.next_seq == seq
                break
        assert failures == 1
        # nothing partial was left behind
        records = read_all(d)
        assert [s for s, _ in records] == list(range(1, log.next_seq))
        assert os.path.getsize(seg) >= size_before
        os.unlink(filler)
        seq = log.next_seq
        log.append_batch([(s, b"z" * 50) for s in range(seq, seq + 20)])
        log.sync()
        assert log.durable_seq == seq + 19
    finally:
        log.close()
    records = read_all(d)
    assert [s for s, _ in records] == list(range(1, seq + 20))
    assert records[-1][1] == b"z" * 50
    assert check(d).ok
    with opened(d, durability=NONE) as log:
        assert log.recovery.clean and log.next_seq == seq + 20


# ---------------------------------------------------------------------------------------------
# recovery


def test_torn_tail_is_cut_with_a_log_line(tmp_path):
    with opened(tmp_path, durability=NONE) as log:
        fill(log, 50)
    (first, seg), = list_segments(tmp_path)
    size = os.path.getsize(seg)
    with open(seg, "ab") as f:
        f.write(frame(51, b"q" * 40)[:30])
    with capture_logs() as logs, opened(tmp_path, durability=NONE) as log:
        assert log.next_seq == 51
        assert log.recovery.torn_bytes_cut == 30 and log.recovery.torn_offset == size
        assert not log.recovery.corruption
        log.append(51, b"fresh")
    cut = [e for e in logs if e["event"] == "log.torn_tail_cut"]
    assert cut and cut[0]["bytes_cut"] == 30 and cut[0]["offset"] == size and cut[0]["segment"] == seg
    assert read_all(tmp_path, 50) == [(50, body_for(50)), (51, b"fresh")]
    # a zero-filled tail (a bad last record with nothing valid after it)
    with open(seg, "ab") as f:
        f.write(b"\0" * 5000)
    with capture_logs() as logs, opened(tmp_path, durability=NONE) as log:
        assert log.recovery.torn_bytes_cut == 5000 and log.next_seq == 52
    assert any(e["event"] == "log.torn_tail_cut" for e in logs)
    assert check(tmp_path).ok
    # a large zero-filled tail (a file extended by a crash) is skipped quickly, not byte by byte
    with open(seg, "ab") as f:
        f.write(frame(52, b"half")[:9] + b"\0" * (8 << 20))
    t0 = time.perf_counter()
    with opened(tmp_path, durability=NONE) as log:
        assert log.recovery.torn_bytes_cut == 9 + (8 << 20) and log.next_seq == 52
    assert time.perf_counter() - t0 < 2.0


def test_corrupt_record_in_the_middle(tmp_path):
    with opened(tmp_path, durability=NONE, segment_bytes=1 << 20) as log:
        fill(log, 300)
    (first, seg), = list_segments(tmp_path)
    data = open(seg, "rb").read()
    records, _ = parse_frames(data, SEGMENT_HEADER_SIZE)
    offsets = [SEGMENT_HEADER_SIZE]
    for s, b in records:
        offsets.append(offsets[-1] + HEADER_SIZE + len(b))
    bad_seq = 150
    while not body_for(bad_seq):
        bad_seq += 1
    bad_off = offsets[bad_seq - 1]
    with open(seg, "r+b") as f:
        f.seek(bad_off + HEADER_SIZE)
        b = f.read(1)
        f.seek(bad_off + HEADER_SIZE)
        f.write(bytes([b[0] ^ 0x20]))
    with capture_logs() as logs:
        log = EventLog(tmp_path, durability=NONE)
    try:
        assert [(c.segment, c.offset) for c in log.recovery.corruption] == [(seg, bad_off)]
        assert log.next_seq == 301  # the valid records after the corrupt one are kept
        assert log.recovery.new_segment == os.path.join(tmp_path, "00000000000000000301.seg")
        assert any(e["event"] == "log.corrupt_record" and e["log_level"] == "error" and e["offset"] == bad_off
                   for e in logs)
        log.append_batch([(301, b"after"), (302, b"more")])
    finally:
        log.close()
    assert os.path.getsize(seg) == len(data)  # not truncated
    got = []
    with pytest.raises(CorruptRecord) as exc:
        for r in LogReader(tmp_path).read(1):
            got.append(r)
    assert exc.value.offset == bad_off and exc.value.segment == seg
    assert got == [(s, body_for(s)) for s in range(1, bad_seq)]
    with pytest.raises(CorruptRecord):
        list(LogReader(tmp_path).read(bad_seq))
    assert read_all(tmp_path, 301) == [(301, b"after"), (302, b"more")]
    report = check(tmp_path)
    assert not report.ok
    assert report.corrupt_offsets() == [(seg, bad_off, "crc mismatch")]
    assert "CORRUPT" in report.format()
    # reopening again: the sealed corrupt segment stays sealed, the new one continues
    with opened(tmp_path, durability=NONE) as log:
        assert log.next_seq == 303 and log.recovery.clean


def test_corrupt_length_in_the_middle_is_not_taken_for_a_torn_tail(tmp_path):
    with opened(tmp_path, durability=NONE) as log:
        fill(log, 100)
    (first, seg), = list_segments(tmp_path)
    records, _ = parse_frames(open(seg, "rb").read(), SEGMENT_HEADER_SIZE)
    off = SEGMENT_HEADER_SIZE + sum(HEADER_SIZE + len(b) for _, b in records[:40])
    with open(seg, "r+b") as f:
        f.seek(off + 2)
        f.write(b"\x7f")  # the length now runs past the end of the file
    size = os.path.getsize(seg)
    with opened(tmp_path, durability=NONE) as log:
        assert log.recovery.corruption and log.recovery.corruption[0].offset == off
        assert log.next_seq == 101 and log.recovery.torn_bytes_cut == 0
    assert os.path.getsize(seg) == size


def test_check_report(tmp_path):
    with opened(tmp_path, durability=NONE, segment_bytes=2048) as log:
        fill(log, 500, batch=10)
    report = check(tmp_path)
    assert report.ok and report.records == 500 and (report.first_seq, report.last_seq) == (1, 500)
    assert all(s.index == "ok" for s in report.segments)
    segs = list_segments(tmp_path)
    assert [s.first_seq for s in report.segments] == [f for f, _ in segs]
    # torn tail noted
    with open(segs[-1][1], "ab") as f:
        f.write(b"\x05\x00")
    report = check(tmp_path)
    assert report.segments[-1].torn_tail == (os.path.getsize(segs[-1][1]) - 2, 2)
    # a missing middle segment is a gap in seq continuity
    os.unlink(segs[3][1])
    report = check(tmp_path)
    assert not report.ok and report.gaps and "starts at seq" in report.gaps[0]
    with pytest.raises(CorruptRecord):
        list(LogReader(tmp_path).read(1))


def test_log_check_command(tmp_path, capsys):
    import lvsbus.wire.catalog  # noqa: F401  (fills the registry)
    from lvsbus.cli import build_parser
    from lvsbus.wire.events import REGISTRY, Event, encode

    def timer(seq: int) -> bytes:  # the live command also decodes every record
        return encode(Event(seq, "lvs1", "pulse", "timer.fired", REGISTRY.latest("timer.fired").version, 5, 6,
                            None, {"service": "pulse", "deadline_ns": 10}))

    with opened(tmp_path, durability=NONE) as log:
        fill(log, 10, body=timer)
    args = build_parser().parse_args(["log", "check", str(tmp_path)])
    assert args.func(args) == 0
    assert "10 records" in capsys.readouterr().out
    (first, seg), = list_segments(tmp_path)
    with open(seg, "r+b") as f:
        f.seek(SEGMENT_HEADER_SIZE + HEADER_SIZE)
        f.write(b"\xff\xfe")
    assert args.func(args) == 1
    assert "CORRUPT" in capsys.readouterr().out


def test_corrupt_record_in_a_sealed_segment(tmp_path):
    with opened(tmp_path, durability=NONE, segment_bytes=2048) as log:
        fill(log, 400, batch=5)
    segs = list_segments(tmp_path)
    first, seg = segs[2]
    data = open(seg, "rb").read()
    records, _ = parse_frames(data, SEGMENT_HEADER_SIZE)
    off = SEGMENT_HEADER_SIZE + sum(HEADER_SIZE + len(b) for _, b in records[:3])
    with open(seg, "r+b") as f:
        f.seek(off + 5)  # inside the CRC field
        f.write(b"\xaa")
    got = []
    with pytest.raises(CorruptRecord) as exc:
        for r in LogReader(tmp_path).read(1):
            got.append(r)
    assert (exc.value.segment, exc.value.offset) == (seg, off)
    assert [s for s, _ in got] == list(range(1, first + 3))
    later = segs[4][0]
    assert [s for s, _ in read_all(tmp_path, later)] == list(range(later, 401))
    assert check(tmp_path).corrupt_offsets() == [(seg, off, "crc mismatch")]
    # the writer only rescans the last segment; it opens and appends as usual
    with opened(tmp_path, durability=NONE, segment_bytes=2048) as log:
        assert log.recovery.clean and log.next_seq == 401


def test_damaged_segment_header_with_records_behind_it(tmp_path):
    with opened(tmp_path, durability=NONE) as log:
        fill(log, 20)
    (first, seg), = list_segments(tmp_path)
    with open(seg, "r+b") as f:
        f.write(b"XXXX")
    with capture_logs() as logs, opened(tmp_path, durability=NONE) as log:
        assert [c.offset for c in log.recovery.corruption] == [0]
        assert log.next_seq == 21  # records kept, a new segment started
        log.append(21, b"new")
    assert any(e["event"] == "log.corrupt_record" for e in logs)
    with pytest.raises(CorruptRecord) as exc:
        list(LogReader(tmp_path).read(1))
    assert exc.value.offset == 0
    assert read_all(tmp_path, 21) == [(21, b"new")]


def test_records_bigger_than_the_read_chunk(tmp_path):
    bodies = [os.urandom(n) for n in (10, 3 << 20, 5, 1 << 20, (1 << 20) - 20, 7)]
    with opened(tmp_path, durability=NONE) as log:
        log.append_batch([(i + 1, b) for i, b in enumerate(bodies)])
    assert [b for _, b in read_all(tmp_path)] == bodies
    assert [b for _, b in read_all(tmp_path, 4)] == bodies[3:]


def test_follower_sees_records_written_over_a_cut_torn_tail(tmp_path):
    with opened(tmp_path, durability=NONE) as log:
        fill(log, 5)
    (first, seg), = list_segments(tmp_path)
    with open(seg, "ab") as f:  # a crashed writer's incomplete record
        f.write(frame(6, b"lost" * 20)[:40])
    got = []
    done = threading.Event()

    def follow():
        for r in LogReader(tmp_path).follow(1, poll_interval=0.005, stop=done.is_set):
            got.append(r)
            if len(got) == 8:
                done.set()

    t = threading.Thread(target=follow)
    t.start()
    try:
        time.sleep(0.05)
        assert len(got) == 5
        with opened(tmp_path, durability=NONE) as log:  # recovery cuts the tail, new records go there
            assert log.recovery.torn_bytes_cut == 40
            log.append_batch([(6, b"six"), (7, b"seven"), (8, b"eight")])
    finally:
        t.join(5)
        done.set()
    assert got[5:] == [(6, b"six"), (7, b"seven"), (8, b"eight")]


# ---------------------------------------------------------------------------------------------
# issue 19: no seq reused, nothing cut silently, readers go past corruption


def _offsets(seg):
    data = open(seg, "rb").read()
    records, _ = parse_frames(data, SEGMENT_HEADER_SIZE)
    offsets = [SEGMENT_HEADER_SIZE]
    for _, b in records:
        offsets.append(offsets[-1] + HEADER_SIZE + len(b))
    return records, offsets


def test_seqs_handed_out_but_not_written_are_declared_lost_never_reused(tmp_path):
    with opened(tmp_path, durability=NONE) as log:
        fill(log, 40)
        log.note_assigned(55, sync=True)  # 41..55 delivered live while the disk refused them, then a stop
    with capture_logs() as logs, opened(tmp_path, durability=NONE) as log:
        assert log.recovery.lost == (41, 55) and not log.recovery.clean
        assert log.next_seq == 56 and log.last_seq == 55
        log.append_batch([(56, b"new")])
        assert "41..55" in log.recovery.summary()
    assert any(e["event"] == "log.seqs_lost" and e["first_lost"] == 41 for e in logs)
    assert [f for f, _ in list_segments(tmp_path)] == [1, 56]
    reader = LogReader(tmp_path)
    assert [s for s, _ in reader.read(1)] == list(range(1, 41)) + [56]
    assert reader.gaps == [(41, 55)] and not reader.problems
    report = check(tmp_path)
    assert report.ok and report.declared_gaps == [(41, 55)] and "declared gap" in report.format()
    with opened(tmp_path, durability=NONE) as log:  # said once: the next open is clean
        assert log.recovery.clean and log.next_seq == 57


def test_a_corrupt_last_record_is_not_taken_for_a_torn_write(tmp_path):
    """One flipped byte in the last complete record: kept beside the segment, said, seq not reused
    (even without the assigned-seq mark: the record's header names its seq)."""
    with opened(tmp_path, durability=NONE) as log:
        fill(log, 30)
    os.unlink(tmp_path / "assigned.hwm")  # a log from before the mark: the headers still tell
    (first, seg), = list_segments(tmp_path)
    records, offsets = _offsets(seg)
    last_off = offsets[29]
    size = os.path.getsize(seg)
    with open(seg, "r+b") as f:
        f.seek(size - 1)
        b = f.read(1)
        f.seek(size - 1)
        f.write(bytes([b[0] ^ 0x01]))
    report = check(tmp_path)
    assert not report.ok and report.corrupt_offsets() == [(seg, last_off, "crc mismatch")]
    assert report.segments[0].torn_tail is None
    damaged = open(seg, "rb").read()[last_off:]
    with capture_logs() as logs, opened(tmp_path, durability=NONE) as log:
        rec = log.recovery
        assert rec.cut_kind == "corrupt" and rec.torn_offset == last_off
        assert rec.cut_copy == f"{seg}.cut-{last_off}"
        assert open(rec.cut_copy, "rb").read() == damaged
        assert os.path.getsize(seg) == last_off
        assert log.next_seq == 31 and rec.lost == (30, 30)  # seq 30 is not given to a new record
        log.append(31, b"new")
    assert any(e["event"] == "log.corrupt_tail_cut" and e["log_level"] == "error" and e["kept_in"] == rec.cut_copy
               for e in logs)
    report = check(tmp_path)
    assert report.ok and report.declared_gaps == [(30, 30)] and report.cut_files == [rec.cut_copy]


def test_a_zeroed_last_4k_is_kept_and_its_seqs_are_not_reused(tmp_path):
    with opened(tmp_path, durability=NONE) as log:
        fill(log, 200)
    (first, seg), = list_segments(tmp_path)
    records, offsets = _offsets(seg)
    size = os.path.getsize(seg)
    intact = [s for s, _ in records if offsets[s] <= size - 4096]  # records wholly before the zeroed 4 KB
    with open(seg, "r+b") as f:
        f.seek(size - 4096)
        f.write(b"\0" * 4096)
    damaged = open(seg, "rb").read()[offsets[intact[-1]]:]
    assert 200 - intact[-1] > 10  # many complete records were zeroed
    with capture_logs() as logs, opened(tmp_path, durability=NONE) as log:
        rec = log.recovery
        assert log.last_seq == 200 and rec.lost == (intact[-1] + 1, 200)  # the mark: 200 were handed out
        assert open(rec.cut_copy, "rb").read() == damaged
        log.append(201, b"after")
    assert any(e["event"] in ("log.corrupt_tail_cut", "log.torn_tail_cut") for e in logs)
    assert [s for s, _ in read_all(tmp_path)] == intact + [201]


def _flip_middle(seg, which):
    records, offsets = _offsets(seg)
    off = offsets[which]
    with open(seg, "r+b") as f:
        f.seek(off + HEADER_SIZE)
        b = f.read(1)
        f.seek(off + HEADER_SIZE)
        f.write(bytes([b[0] ^ 0x20]))
    return records[which][0], off


def test_readers_go_past_a_corrupt_record_and_say_where(tmp_path):
    with opened(tmp_path, durability=NONE, segment_bytes=4096) as log:
        fill(log, 300, batch=5)
    segs = list_segments(tmp_path)
    old_seq, old_off = _flip_middle(segs[1][1], 2)  # in an old sealed segment
    last_first, last_seg = segs[-1]
    with opened(tmp_path, durability=NONE, segment_bytes=4096) as log:
        assert log.recovery.clean  # only the last segment is rescanned at open
    new_seq, new_off = _flip_middle(last_seg, 1)  # and in the active one
    with opened(tmp_path, durability=NONE, segment_bytes=4096) as log:
        assert [c.offset for c in log.recovery.corruption] == [new_off] and log.next_seq == 301
        log.append_batch([(301, b"x"), (302, b"y")])
    with pytest.raises(CorruptRecord):  # the default reader still refuses to go on
        read_all(tmp_path)
    seen = []
    reader = LogReader(tmp_path, skip_corrupt=True, on_problem=seen.append)
    got = [s for s, _ in reader.read(1)]
    assert got == [s for s in range(1, 303) if s not in (old_seq, new_seq)]
    assert seen == reader.problems
    assert [(p.segment, p.offset, p.lost) for p in seen] == [
        (segs[1][1], old_off, (old_seq, old_seq)), (last_seg, new_off, (new_seq, new_seq))]
    assert "crc mismatch" in str(seen[0]) and f"seqs {old_seq}..{old_seq} unreadable" in str(seen[0])
    # from a seq after the corruption, nothing is said
    assert [s for s, _ in LogReader(tmp_path, skip_corrupt=True).read(new_seq + 1)] == list(range(new_seq + 1, 303))
    report = check(tmp_path)
    assert sorted(report.corrupt_offsets()) == sorted([(segs[1][1], old_off, "crc mismatch"),
                                                       (last_seg, new_off, "crc mismatch")])


def test_a_bad_length_in_the_active_segment_is_found_not_taken_for_the_end(tmp_path):
    with opened(tmp_path, durability=NONE) as log:
        fill(log, 100)
    (first, seg), = list_segments(tmp_path)
    records, offsets = _offsets(seg)
    with open(seg, "r+b") as f:
        f.seek(offsets[40] + 2)
        f.write(b"\x7f")  # the length of seq 41 now runs past the end of the file
    reader = LogReader(tmp_path, skip_corrupt=True)
    got = [s for s, _ in reader.read(1)]
    assert got == [s for s in range(1, 101) if s != 41]
    assert [p.lost for p in reader.problems] == [(41, 41)] and reader.torn_tail is None
    assert [s for s, _ in LogReader(tmp_path).read(1)] == list(range(1, 41))  # the default reader stops
    assert not check(tmp_path).ok


def test_a_spilled_backlog_is_written_at_open(tmp_path):
    d = tmp_path / "log"
    with opened(d, durability=NONE) as log:
        fill(log, 10)
        log.note_assigned(15)
    spill = tmp_path / "backlog.spill"
    spill.write_bytes(frame_batch([(s, body_for(s)) for s in range(11, 16)]))
    with opened(d, durability=NONE, backlog_file=str(spill)) as log:
        assert log.recovery.backlog_restored == (11, 15) and log.recovery.lost is None
        assert log.next_seq == 16
    assert not spill.exists()
    assert read_all(d) == [(s, body_for(s)) for s in range(1, 16)]
    # a backlog that does not follow the log is left for the operator; the mark still protects its seqs
    with opened(d, durability=NONE) as log:
        log.note_assigned(20)
    spill.write_bytes(frame_batch([(s, body_for(s)) for s in range(30, 32)]))
    with opened(d, durability=NONE, backlog_file=str(spill)) as log:
        assert log.recovery.backlog_left == str(spill) and log.recovery.lost == (16, 20)
    assert spill.exists()


def test_check_and_readers_on_what_is_not_a_log(tmp_path):
    from lvsbus.log import NotALog

    with pytest.raises(FileNotFoundError):
        check(tmp_path / "nowhere")
    with pytest.raises(NotADirectoryError):
        check("/dev/null")
    with pytest.raises(NotALog):
        check(tmp_path)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "00000000000000000001.seg").write_bytes(b"PK\x03\x04 not a log segment at all" * 10)
    report = check(foreign)
    assert not report.ok and "not an lvsbus log segment" in report.format()
    reader = LogReader(foreign, skip_corrupt=True)
    assert list(reader.read(1)) == [] and reader.problems


def test_reopening_a_big_last_segment_checks_its_tail_and_the_rest_in_the_background(tmp_path, monkeypatch):
    """A broker restart reopens the last segment from its last index entry: only the tail is
    read and checked before serving (a 64 MiB segment took 0.55 s of checking, more than a short
    deadtime, while pulse's timers waited for the bus). The part before is checked by the start-up
    scan, which finds a record damaged there; appends and the sealed sum go on as usual."""
    import lvsbus.log as L
    import lvsbus.log.framing as F
    import lvsbus.log.writer as W

    d = str(tmp_path / "log")
    with EventLog(d, durability=Durability("none")) as log:
        for b in range(20):
            log.append_batch([(s, body_for(s) * 4) for s in range(b * 500 + 1, b * 500 + 501)])
    seg = os.path.join(d, L.segment_name(1))
    size = os.path.getsize(seg)
    assert size > 4 * F.INDEX_EVERY_BYTES
    with open(seg, "r+b") as f:  # a flipped byte in a record near the start (never rewritten)
        f.seek(L.SEGMENT_HEADER_SIZE + 5000)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    checked: list[int] = []
    real = W._validate_run

    def counting(buf, pos, n, expect, index_state=None):
        checked.append(n - pos)
        return real(buf, pos, n, expect, index_state)

    monkeypatch.setattr(W, "_validate_run", counting)  # the name recovery calls
    log = EventLog(d, durability=Durability("none"))
    try:
        assert checked and sum(checked) <= F.INDEX_EVERY_BYTES + 64 * 1024, (sum(checked), size)
        assert log.recovery.clean and log.recovery.records == 10_000
        assert log.next_seq == 10_001
        log.append_batch([(10_001, body_for(10_001))])
        scan = log.scan_sealed()
        assert [(p.offset, p.reason) for p in scan.problems][:1] and scan.problems[0].offset < 10_000, scan.problems
    finally:
        log.close()
    assert [s for s, _b in LogReader(d, skip_corrupt=True).read(9_990)][-12:] == list(range(9_990, 10_002))


def test_a_reopened_last_segment_sealed_before_the_scan_is_checked_and_reported_once(tmp_path):
    """The segment reopened from its index is sealed (rotated) before the background scan runs:
    the scan checks it whole, as any sealed segment without a sum, and the damage in its
    checked-later part is one problem, not a second report of it by the prefix check."""
    import lvsbus.log as L
    import lvsbus.log.framing as F

    d = str(tmp_path / "log")
    with EventLog(d, durability=Durability("none")) as log:
        for b in range(20):
            log.append_batch([(s, body_for(s) * 4) for s in range(b * 500 + 1, b * 500 + 501)])
    seg = os.path.join(d, L.segment_name(1))
    with open(seg, "r+b") as f:
        f.seek(L.SEGMENT_HEADER_SIZE + 5000)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    log = EventLog(d, durability=Durability("none"), segment_bytes=F.INDEX_EVERY_BYTES)
    try:
        assert log.recovery.unchecked_prefix is not None
        log.append_batch([(10_001, body_for(10_001))])
        log.append_batch([(10_002, body_for(10_002))])  # the reopened segment is sealed now
        assert len(L.list_segments(d)) == 2
        scan = log.scan_sealed()
        assert len(scan.problems) == 1 and scan.problems[0].segment == seg, scan.problems
    finally:
        log.close()
