"""The in-VM tests: collected only inside the kernel-tier VM (``LVSBUS_IN_VM=1``, set by
tests/kernel/kit.py). On the host, ``tests/test_ipvs_kernel.py`` boots the VM and runs them."""
import os
import subprocess

import pytest

IN_VM = os.environ.get("LVSBUS_IN_VM") == "1"

if not IN_VM:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session", autouse=True)
def ip_vs_loaded():
    if IN_VM:
        subprocess.run(["modprobe", "ip_vs"], check=True)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


@pytest.fixture
def ipvs():
    from services.ipvs.netlink import Ipvs

    with Ipvs() as x:
        x.flush()
        yield x
        x.flush()


def ipvsadm(*args: str) -> str:
    return subprocess.run(["ipvsadm", *args], check=True, capture_output=True, text=True).stdout
