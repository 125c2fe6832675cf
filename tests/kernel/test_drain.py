"""Operator actions down to the kernel, in the VM (issue 16): a router (broker, nanny, lvsd and the
applier as real processes) in test_datapath's topology by NAT, real servers with distinct weights.
With the real CLI (``lvsbus server drain|disable|enable``, the operator request the console's
buttons send too): a drained real server stays in the kernel's IPVS table with weight 0 while the
others keep theirs, and gets no new connection; a disabled one leaves the kernel table; enabled,
both come back with their configured weights. The log replays clean."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ipvsadm
from .harness import ROOT, Router
from .topology import CONFIG, RS, VIP, requests, topology  # noqa: F401  (topology: the fixture)

WEIGHTS = {"rs1": 2, "rs2": 3, "rs3": 1}  # distinct: an enable must give back each one's own


def kernel_weights() -> dict[str, int]:
    """The VIP's real servers and their weights, as ``ipvsadm -L -n`` prints them (name -> weight)."""
    names = {f"{a}:80": n for n, a in RS.items()}
    try:
        out = ipvsadm("-L", "-n", "-t", f"{VIP}:80")
    except subprocess.CalledProcessError:  # the service is not in the kernel yet
        return {}
    return {names[f[1]]: int(f[3]) for f in (line.split() for line in out.splitlines())
            if len(f) >= 4 and f[0] == "->" and f[1] in names}


def lvsbus(*argv: str) -> str:
    p = subprocess.run([sys.executable, "-m", "lvsbus.cli", *argv], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, (p.stdout, p.stderr)
    return p.stdout


@pytest.mark.parametrize("topology", ["nat"], indirect=True)
def test_drain_disable_enable_in_the_kernel(tmp_path, topology, ipvs):  # noqa: F811  (the fixture)
    config = CONFIG.replace("FORWARDING", "nat")
    for n, a in RS.items():
        config = config.replace(f'address = "{a}"\n', f'address = "{a}"\nweight = {WEIGHTS[n]}\n')
    cfg = tmp_path / "lvs.toml"
    cfg.write_text(config)
    r = Router(tmp_path, cfg)
    try:
        r.start("ipvs")
        r.start("nanny")
        r.start("lvsd")
        r.wait(lambda: kernel_weights() == WEIGHTS, 120, "three real servers in the kernel", every=0.5)

        def server(action: str, name: str, expect: dict[str, int]) -> None:
            out = lvsbus("server", action, "web", name, "--state-dir", r.dirs.root, "--wait", "60",
                         "--reason", "kernel tier")
            state = {"drain": "drained", "disable": "disabled", "enable": "enabled"}[action]
            assert f"web/{name} now {state}" in out, out
            r.wait(lambda: kernel_weights() == expect, 60, f"{name} {state} in the kernel: {expect}", every=0.25)

        server("drain", "rs1", {"rs1": 0, "rs2": 3, "rs3": 1})  # in the table, weight 0, the others kept
        server("disable", "rs3", {"rs1": 0, "rs2": 3})  # out of the table
        assert requests(4) == ["rs2"] * 4  # no new connection to the drained one (rr skips weight 0)
        server("enable", "rs1", {"rs1": 2, "rs2": 3})
        server("enable", "rs3", WEIGHTS)  # the configured weights back

        asked = r.events("operator.server_action")
        assert [(e.payload["action"], e.payload["server"], e.payload["via"]) for e in asked] == [
            ("drain", "rs1", "cli"), ("disable", "rs3", "cli"), ("enable", "rs1", "cli"), ("enable", "rs3", "cli")]
        r.stop_and_settle("nanny", "lvsd", "ipvs")
        r.verify_replay("nanny", "lvsd", "ipvs")
    finally:
        r.close()
