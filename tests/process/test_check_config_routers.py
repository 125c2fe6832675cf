"""``python -m lvsbus.cli check-config r1.toml r2.toml``, a real process on real files: the
files of a scale-out group's routers compared (docs/scaleout.md "Configuration"). The routers'
addresses (tests/helpers/lvs_config.py, 10.99.1.x) are none of this host's, so only the files are
checked."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.lvs_config import lvs_toml, scaleout_toml

ROOT = Path(__file__).resolve().parents[2]


def check_config(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lvsbus.cli", "check-config", *map(str, files)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_two_routers_the_same_then_different(tmp_path):
    group = lvs_toml("mh") + '[virtual.web.server.s2]\naddress = "10.99.3.102"\n' + scaleout_toml()
    a = write(tmp_path / "a.toml", group)
    b = write(tmp_path / "b.toml", group)
    r = check_config(a, b)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("  web: 10.200.0.1:80/tcp, mh, direct") == 2  # each file as check-config FILE shows it
    assert r.stdout.splitlines()[-1] == (f"{a}, {b}: the same on 2 routers (virtual services, schedulers, "
                                         "forwarding, real servers, weights and order, VIPs)")
    assert r.stderr == ""

    # b lists the real servers the other way round (mh's table would differ), and has one more
    swapped = (lvs_toml("mh").replace('[virtual.web.server.s1]\naddress = "10.99.3.101"\n',
                                      '[virtual.web.server.s2]\naddress = "10.99.3.102"\n'
                                      '[virtual.web.server.s1]\naddress = "10.99.3.101"\n')
               + '[virtual.web.server.s3]\naddress = "10.99.3.103"\n' + scaleout_toml())
    write(b, swapped)
    r = check_config(a, b)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {b}:17: virtual.web.server.s3: real server 10.99.3.103:80 is not in {a}'s web "
                      f"({a}:9): every router needs the same real servers"]
    assert r.stderr.splitlines()[-1] == f"{a}, {b}: the routers' configs differ, 1 error"

    write(b, swapped.replace('[virtual.web.server.s3]\naddress = "10.99.3.103"\n', ""))
    r = check_config(a, b)
    assert r.returncode == 1
    assert f"error: {b}:9: virtual.web: the real servers are in another order than in {a}:9: number 1 is " \
           "10.99.3.102:80 here, 10.99.3.101:80 there" in r.stderr


def test_a_scaleout_router_beside_an_active_backup_one(tmp_path):
    a = write(tmp_path / "a.toml", lvs_toml("mh") + scaleout_toml())
    b = write(tmp_path / "b.toml", lvs_toml("mh"))
    r = check_config(a, b)
    assert r.returncode == 1
    assert f"error: {b}: no [scaleout], but {a}:16 has it" in r.stderr
    assert r.stdout.count(": valid (0 warnings)") == 2  # each file is valid on its own
