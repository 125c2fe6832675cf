"""``lvsbus ipvs save --config keepalived.conf`` against the kernel (issue 15): a keepalived.conf
with a virtual_server_group (an address, a range, a fwmark), a fwmark virtual_server and
persistence_granularity (a netmask and a prefix length) is run by nanny (MISC_CHECK /bin/true: every
real server up), lvsd and the applier as real processes; ``ipvsadm --save -n`` then prints
exactly the lines ``lvsbus ipvs save --config`` printed before anything ran: the table keepalived
would program with every real server up."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import ipvsadm
from .harness import ROOT, KernelRig

CONF = Path(__file__).resolve().parent.parent / "fixtures" / "keepalived-save" / "vsg_fwmark_granularity.conf"


def _kernel_lines() -> list[str]:
    return sorted(x.strip() for x in ipvsadm("--save", "-n").split("\n") if x.strip())


def test_ipvs_save_of_a_keepalived_conf_is_what_the_applier_programs(tmp_path, ipvs):
    conf = tmp_path / "keepalived.conf"
    conf.write_text(CONF.read_text())
    saved = subprocess.run([sys.executable, "-m", "lvsbus.cli", "ipvs", "save", "--config", str(conf)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=True).stdout
    want = sorted(x.strip() for x in saved.split("\n") if x.strip())
    assert len([x for x in want if x.startswith("-A")]) == 6  # 4 addresses + fwmark 7 (the group), fwmark 9
    assert "-A -f 9 -s rr -p 60 -M 255.255.255.0" in want and "-a -f 9 -r 192.168.1.3:0 -m -w 1" in want
    r = KernelRig(tmp_path, conf, local_router="lvs-10-0-0-1")  # a keepalived.conf names routers by address
    try:
        r.start("ipvs")
        r.start("nanny")
        r.start("lvsd")
        try:
            r.wait(lambda: _kernel_lines() == want, 120, "the kernel's table as `lvsbus ipvs save` printed it")
        except AssertionError:
            got = _kernel_lines()
            raise AssertionError(f"only in the kernel: {sorted(set(got) - set(want))}; only in `ipvs save`: "
                                 f"{sorted(set(want) - set(got))}; health: "
                                 f"{[(e.type, e.payload['virtual'], e.payload['server'], e.payload['detail']) for e in r.events('health.real_server')]}"
                                 ) from None
        assert not r.events("ipvs.op_failed")
    finally:
        r.close()
