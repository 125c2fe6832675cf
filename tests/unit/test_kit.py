"""lvsbus.demo.qemu without booting: which host paths the VM's /tmp would hide, and the lines that put
them back (the boot itself: tests/kernel/test_host_tier.py runs the in-VM tests from a /tmp copy)."""
from __future__ import annotations

from lvsbus.demo.qemu import _keep_prelude, hidden_by_vm_tmp


def test_paths_under_tmp_are_kept_outermost_only(tmp_path):
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    kept = hidden_by_vm_tmp([str(inner), str(tmp_path / "a"), "/usr/lib", "", "/tmp/does-not-exist-lvsbus"])
    assert kept == [str((tmp_path / "a").resolve())]
    assert hidden_by_vm_tmp(["/", "/var/cache/lvsbus-kit"]) == []


def test_the_prelude_binds_each_path_from_under_the_tmpfs_then_cds():
    text = _keep_prelude(["/tmp/my clone"], "/tmp/my clone/sub")
    assert "mount --bind / /.lvsbus-under" in text
    assert "mkdir -p '/tmp/my clone' && mount --bind '/.lvsbus-under/tmp/my clone' '/tmp/my clone'" in text
    assert text.rstrip().endswith("cd '/tmp/my clone/sub' || exit 97")


def test_the_demo_vm_runs_from_the_checkout_that_holds_every_package():
    """The VM finds lvsbus, lvsbus_services and lvsbus_tools on PYTHONPATH=ROOT alone (no install in
    the VM): ROOT must be the checkout, not the lvsbus package (the layout move once broke this)."""
    from lvsbus.demo.vm import ROOT

    for pkg in ("lvsbus/cli/__main__.py", "lvsbus_services/__init__.py", "lvsbus_tools/__init__.py", "services", "tools"):
        assert (ROOT / pkg).exists(), (ROOT, pkg)
