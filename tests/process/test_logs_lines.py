"""Every structured log line reaches stderr whole (issue 19): the services share the supervisor's
stderr, and with PYTHONUNBUFFERED set a line and its newline used to be two writes, so two
processes' lines could merge into one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WRITER = r"""
import sys
from lvsbus.host import logs
import structlog
logs.setup(json=True, service=sys.argv[1])
log = structlog.get_logger("t")
for i in range(int(sys.argv[2])):
    log.info("line", n=i, pad="x" * (i % 300))
"""


def _run_writers(stderr, n_procs: int = 6, lines: int = 1500) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, f"w{k}", str(lines)], stderr=stderr, env=env)
             for k in range(n_procs)]
    for p in procs:
        assert p.wait(120) == 0


def _check(text: str, n_procs: int = 6, lines: int = 1500) -> None:
    got = text.splitlines()
    bad = [x for x in got if not _parses(x)]
    assert not bad, f"{len(bad)} of {len(got)} lines are not one JSON object each, e.g. {bad[0][:300]!r}"
    seen = {}
    for x in got:
        d = json.loads(x)
        seen.setdefault(d["service"], []).append(d["n"])
    assert {k: sorted(v) for k, v in seen.items()} == {f"w{k}": list(range(lines)) for k in range(n_procs)}


def _parses(x: str) -> bool:
    try:
        return isinstance(json.loads(x), dict)
    except ValueError:
        return False


def test_lines_from_several_processes_on_one_file_stay_whole(tmp_path):
    path = tmp_path / "shared.err"
    with open(path, "ab") as fh:  # O_APPEND, as a redirected service log
        _run_writers(fh)
    _check(path.read_text())


def test_lines_from_several_processes_on_one_pipe_stay_whole():
    import threading

    r, w = os.pipe()
    chunks: list[bytes] = []

    def drain() -> None:
        while data := os.read(r, 65536):
            chunks.append(data)

    t = threading.Thread(target=drain)
    t.start()
    try:
        _run_writers(w)
    finally:
        os.close(w)
        t.join(60)
        os.close(r)
    _check(b"".join(chunks).decode())
