"""A checkout cloned under /tmp (newcomers often do) runs the kernel tier and the VM demo: the VM
covers /tmp with its own tmpfs, so the kit binds the host paths it needs back over it
(``lvsbus.kit.hidden_by_vm_tmp``). ONE VM: this checkout's files copied under /tmp, and an in-VM
IPVS test run from that copy (its own code, not this tree's)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lvsbus import kit as kitmod

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = [pytest.mark.kernel, pytest.mark.slow]


def test_a_checkout_under_tmp_runs_in_the_vm(kit, tmp_path):
    clone = Path("/tmp") / f"lvsbus-tmp-checkout-{tmp_path.name}"
    shutil.rmtree(clone, ignore_errors=True)
    try:
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.split()
        for rel in files:
            src = ROOT / rel
            if src.is_file():
                (clone / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, clone / rel)
        (clone / "MARK").write_text("the /tmp clone\n")
        out = tmp_path / "out"
        cmd = (f"{sys.executable} -c 'import lvsbus, pathlib; print(lvsbus.__file__); print(pathlib.Path(\"MARK\").read_text())'"
               " > /mnt/out/where.txt 2>&1 && "
               f"{sys.executable} -m pytest -q -p no:cacheprovider --color=no "
               "tests/kernel/test_netlink.py::test_everything_round_trips > /mnt/out/pytest.log 2>&1")
        res = kitmod.run(kit, cmd, str(out), cwd=str(clone), timeout=1200)
        where = (out / "where.txt").read_text(errors="replace") if (out / "where.txt").exists() else ""
        log = (out / "pytest.log").read_text(errors="replace") if (out / "pytest.log").exists() else ""
        print(where, log[-3000:], f"[tmp checkout] VM ran {res.seconds:.1f}s, rc={res.rc}", sep="\n")
        assert res.rc == 0, f"rc={res.rc}\n{where}\n{log[-3000:]}\n{res.console[-3000:]}"
        assert where.startswith(str(clone / "lvsbus")) and "the /tmp clone" in where
        assert "1 passed" in log
    finally:
        shutil.rmtree(clone, ignore_errors=True)
