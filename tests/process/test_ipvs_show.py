"""``lvsbus ipvs show`` says how old the desired table it shows is (issue 19): after a lost
takeover record it showed a table of an earlier active period as if it were in force."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lvsbus.cli.ipvs import desired_with_age

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "logs"


def test_the_table_shown_says_when_it_was_recorded_and_that_lvsd_stopped_since():
    table, version, _h, age = desired_with_age(str(FIX / "real_partition_heals" / "r1"))
    assert table is not None and version == 2 and age.seq == 50 and age.stopped_seq == 183
    lines = age.lines(version, age.wall_ns + 42_000_000_000)
    assert lines[0].startswith("# desired: lvsd table version 2, recorded at seq 50, 2026-12-03T07:11:23")
    assert lines[0].endswith("(42.0 s ago)")
    assert "earlier active period, not one in force" in lines[1]
    assert lines[2].startswith("# role: STOPPED since")


def test_show_prints_the_age():
    r = subprocess.run([sys.executable, "-m", "lvsbus.cli", "ipvs", "show", "--state-dir",
                        str(FIX / "real_partition_heals" / "r1")], capture_output=True, text=True, cwd=str(ROOT),
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    head = r.stdout.splitlines()[0]
    assert "recorded at seq 50" in head and " ago)" in head
