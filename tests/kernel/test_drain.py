"""Operator actions down to the kernel, in the VM (issue 16): a router (broker, nanny, lvsd and the
applier as real processes) in test_datapath's topology by NAT, real servers with distinct weights.
With the CLI's own code (``lvsbus server drain|disable|enable``, its main called in the test
process; the same operator request the console's buttons send): a drained real server stays in the
kernel's IPVS table (the applier's netlink read, and ``ipvsadm -L -n``) with weight 0 while the
others keep theirs, and gets no new connection; a disabled one leaves the kernel table; enabled,
both come back with their configured weights. The log replays clean."""
from __future__ import annotations

import time

import pytest

from lvsbus.cli import main
from lvsbus.ipvs.table import ServiceKey

from .conftest import ipvsadm
from .harness import KernelRig, kernel_table
from .topology import CONFIG, RS, VIP, requests, topology  # noqa: F401  (topology: the fixture)

KEY = ServiceKey.tcp(VIP, 80)
NAMES = {f"{a}:80": n for n, a in RS.items()}
WEIGHTS = {"rs1": 2, "rs2": 3, "rs3": 1}  # distinct: an enable must give back each one's own


def kernel_weights() -> dict[str, int]:
    """The VIP's real servers and their weights in the kernel, by the applier's netlink read (name -> weight)."""
    t = kernel_table()
    return {NAMES[d]: x.weight for d, x in t[KEY].dests.items()} if KEY in t else {}


def ipvsadm_weights() -> dict[str, int]:
    """The same, as ``ipvsadm -L -n`` prints it."""
    return {NAMES[f[1]]: int(f[3]) for f in (line.split() for line in ipvsadm("-L", "-n", "-t", f"{VIP}:80").splitlines())
            if len(f) >= 4 and f[0] == "->" and f[1] in NAMES}


@pytest.mark.parametrize("topology", ["nat"], indirect=True)
def test_drain_disable_enable_in_the_kernel(tmp_path, topology, ipvs, capsys):  # noqa: F811  (the fixture)
    config = CONFIG.replace("FORWARDING", "nat")
    for n, a in RS.items():
        config = config.replace(f'address = "{a}"\n', f'address = "{a}"\nweight = {WEIGHTS[n]}\n')
    cfg = tmp_path / "lvs.toml"
    cfg.write_text(config)
    r = KernelRig(tmp_path, cfg)
    try:
        r.start("ipvs")
        r.start("nanny")
        r.start("lvsd")
        r.wait(lambda: kernel_weights() == WEIGHTS, 120, "three real servers in the kernel", every=1)

        def server(action: str, name: str, expect: dict[str, int]) -> None:
            # the CLI's main in this process: a python started per command costs 15-35 s in the VM
            assert main(["server", action, "web", name, "--state-dir", r.dirs.root, "--wait", "60",
                         "--reason", "kernel tier"]) == 0
            state = {"drain": "drained", "disable": "disabled", "enable": "enabled"}[action]
            out = capsys.readouterr().out
            assert f"web/{name} now {state}" in out, out
            t0 = time.monotonic()
            r.wait(lambda: kernel_weights() == expect, 60, f"{name} {state} in the kernel: {expect}", every=0.25)
            assert ipvsadm_weights() == expect
            with capsys.disabled():
                print(f"{out.strip()}; in the kernel {time.monotonic() - t0:.1f}s after the answer: {expect}")

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
