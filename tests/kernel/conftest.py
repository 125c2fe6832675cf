"""The kernel tier (marker ``kernel``): ``pytest tests/kernel`` on the host boots qemu VMs with a
Debian kernel that has IPVS (``lvsbus/demo/qemu.py``).

* ``test_host_*.py`` run on the host: ``test_host_tier.py`` boots ONE VM that runs every in-VM test
  below and fails with their failures; ``test_host_demo.py`` runs ``lvsbus demo --vm`` (the README's
  demo, in its own VM).
* Every other ``test_*.py`` runs inside the VM (``LVSBUS_IN_VM=1``, set by the kit) and is
  collected only there.
"""
import glob
import os
import shutil
import subprocess
import sys

import pytest

IN_VM = os.environ.get("LVSBUS_IN_VM") == "1"

if IN_VM:
    collect_ignore_glob = ["test_host_*.py"]
else:
    collect_ignore = sorted(os.path.basename(p) for p in glob.glob(os.path.join(os.path.dirname(__file__), "test_*.py"))
                            if not os.path.basename(p).startswith("test_host_"))


@pytest.fixture(scope="session", autouse=True)
def ip_vs_loaded():
    if IN_VM:
        subprocess.run(["modprobe", "ip_vs"], check=True)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


@pytest.fixture
def ipvs():
    from lvsbus_services.ipvs.netlink import Ipvs

    with Ipvs() as x:
        x.flush()
        yield x
        x.flush()


def ipvsadm(*args: str) -> str:
    return subprocess.run(["ipvsadm", *args], check=True, capture_output=True, text=True).stdout


# -- the host side -------------------------------------------------------------------------------

def _ensure(binary: str, package: str) -> str | None:
    if shutil.which(binary):
        return None
    if os.geteuid() != 0:
        return f"{binary} missing and not root to apt-get install {package}"
    p = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                       capture_output=True, text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if p.returncode != 0 or not shutil.which(binary):
        return f"apt-get install {package} failed: {p.stderr.strip()[-500:]}"
    return None


@pytest.fixture(scope="session")
def kit():
    """The kit, built or reused (host). Needs root, qemu-system-x86 (installed here with apt-get when
    missing), busybox-static, and the Debian archive the first time; skips, loudly, only when qemu
    cannot be installed or this is not root."""
    from lvsbus.demo import qemu as kitmod

    if os.geteuid() != 0:
        pytest.skip("KERNEL TIER NOT RUN: needs root (apt-get download, dpkg -x, qemu with 9p of /)")
    for binary, package in (("qemu-system-x86_64", "qemu-system-x86"), ("busybox", "busybox-static"),
                            ("ipvsadm", "ipvsadm")):
        why = _ensure(binary, package)
        if why:
            pytest.skip(f"KERNEL TIER NOT RUN: {why}")
    try:
        return kitmod.build(log=lambda m: print(m, file=sys.stderr))
    except kitmod.KitError as exc:
        pytest.fail(f"kernel kit could not be built: {exc}")
