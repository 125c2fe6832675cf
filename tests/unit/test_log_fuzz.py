"""Fuzzing of the log's readers and recovery (issue 19): small real logs with one flipped byte, a
truncation, a zeroed range or appended zeros in one segment. Every change to a record is detected,
nothing raises, no untouched record is lost by recovery, no seq is reused. bench/fuzz_log.py runs
the same for a million inputs."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))

import fuzz_log  # noqa: E402


def test_corrupted_logs_are_detected_and_never_crash_lose_or_reuse(tmp_path):
    counts, seconds = fuzz_log.fuzz(1200, seed=19, workdir=str(tmp_path), verify_every=12)
    report = "\n".join(counts.lines(seconds) + counts.examples)
    assert counts.logs == 1200
    assert counts.changed > 800, report
    assert counts.detected == counts.changed and counts.undetected == 0, report
    assert counts.tracebacks == 0, report
    assert counts.acked_lost == 0 and counts.seq_reused == 0, report
    assert counts.verified >= 100 and counts.verify_missed == 0, report
