"""The kernel tier, from the host: boot ONE VM with a Debian kernel that has IPVS (lvsbus/demo/qemu.py)
and run every in-VM test (tests/kernel/test_*.py but test_host_*) inside it; fail here with the
in-VM failures.

The in-VM tests run from a copy of this checkout under /tmp, which newcomers often clone to: the VM
covers /tmp with its own tmpfs, so the kit binds the host paths it needs back over it
(``lvsbus.demo.qemu.hidden_by_vm_tmp``). One boot shows both (it was a second VM for the /tmp case).

Needs root, qemu-system-x86 (installed here with apt-get when missing), busybox-static and
network access to the Debian archive the first time (the kit is cached in /var/cache/lvsbus-kit;
the ``kit`` fixture is in conftest.py). Skips, loudly, only when qemu cannot be installed or run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lvsbus.demo import qemu as kitmod

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = [pytest.mark.kernel, pytest.mark.slow]


def _copy_checkout(clone: Path) -> None:
    """This checkout's files (tracked and untracked, not ignored) copied to ``clone``."""
    shutil.rmtree(clone, ignore_errors=True)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / rel)
    (clone / "MARK").write_text("the /tmp clone\n")


def test_kernel_tier_in_vm(kit, tmp_path):
    out = tmp_path / "out"
    clone = Path("/tmp") / f"lvsbus-tmp-checkout-{tmp_path.name}"
    # the in-VM tests, and the applier under the router's privilege drop against the real IPVS
    args = os.environ.get("LVSBUS_KERNEL_TESTS",
                          "tests/kernel tests/process/test_privileges.py::test_applier_with_net_admin_only_in_the_vm")
    cmd = (f"{sys.executable} -c 'import lvsbus, pathlib; print(lvsbus.__file__); print(pathlib.Path(\"MARK\").read_text())'"
           " > /mnt/out/where.txt 2>&1; "
           f"{sys.executable} -m pytest -q -p no:cacheprovider --color=no -rA --durations=5 "
           f"--junitxml=/mnt/out/junit.xml {args} > /mnt/out/pytest.log 2>&1")
    try:
        _copy_checkout(clone)
        res = kitmod.run(kit, cmd, str(out), cwd=str(clone), timeout=1800, memory_mb=2048, cpus=2)
    finally:
        shutil.rmtree(clone, ignore_errors=True)
    where = (out / "where.txt").read_text(errors="replace") if (out / "where.txt").exists() else ""
    log = (out / "pytest.log").read_text(errors="replace") if (out / "pytest.log").exists() else ""
    print(where, log[-6000:], sep="\n")
    print(f"[kernel tier] VM ran {res.seconds:.1f}s, rc={res.rc}")
    if res.rc is None:
        pytest.fail(f"the VM never finished the tests (boot or qemu problem):\n{res.console[-4000:]}")
    junit = out / "junit.xml"
    assert junit.exists(), f"no junit report from the VM:\n{log[-4000:]}\n{res.console[-2000:]}"
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests = int(suite.get("tests", 0))
    failures = [tc for tc in suite.iter("testcase") if tc.find("failure") is not None or tc.find("error") is not None]
    assert tests > 0, f"no in-VM test ran:\n{log[-4000:]}"
    if failures or res.rc != 0:
        details = "\n\n".join(
            f"{tc.get('classname')}::{tc.get('name')}\n{(tc.find('failure') if tc.find('failure') is not None else tc.find('error')).get('message', '')}"
            for tc in failures)
        pytest.fail(f"{len(failures)} of {tests} in-VM tests failed (rc={res.rc}):\n{details}\n\n{log[-6000:]}")
    # the tests ran from the /tmp copy, its own code (not this tree's, not an installed one)
    assert where.startswith(str(clone / "lvsbus")) and "the /tmp clone" in where, where + res.console[-3000:]
