"""pulse's shell in a real router: a restart loop steps the router down (network namespaces)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.demo.netns import router_toml, write_key

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.netns
def test_a_restart_loop_steps_the_router_down(netns, tmp_path):
    """pulse dies at once on every start (a fake interpreter, so services start by exec): after MAX_RESTARTS within the
    window the router publishes router.shutdown_requested {graceful: false}, releases the VIP it
    finds and exits 1."""
    topo = netns(routers=1, private=False)
    key = write_key(tmp_path / "hb.key")
    cfg = tmp_path / "lvs.toml"
    cfg.write_text(router_toml(topo, key, private_link=False, priorities=(200,)))
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\ncase \"$*\" in *lvsbus_services.pulse*) exit 3;; esac\nexec {sys.executable} \"$@\"\n")
    fake.chmod(0o755)
    topo.run("r1", "ip", "addr", "add", "10.99.1.50/32", "dev", "eth0")  # left behind by a crash
    code = (
        "import sys; from lvsbus.host import logs; from lvsbus.router.supervisor import Supervisor; logs.setup(); "
        f"sys.exit(Supervisor({str(cfg)!r}, {str(tmp_path / 's')!r}, python={str(fake)!r}, spawn='exec').run())"
    )
    r = topo.run("r1", "env", f"PYTHONPATH={ROOT}", sys.executable, "-c", code, check=False)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "pulse died 6 times" in r.stderr and "stepping down" in r.stderr
    assert not topo.has_address("r1", "10.99.1.50")
    from lvsbus.wire.events import decode
    from lvsbus.log import LogReader

    evs = [decode(b, s) for s, b in LogReader(str(tmp_path / "s" / "log")).read(1)]
    restarts = [e for e in evs if e.type == "router.service_restarted"]
    assert [e.payload["attempt"] for e in restarts] == [1, 2, 3, 4, 5]
    assert all(e.payload["exit"] == "exit 3" for e in restarts)
    down = [e for e in evs if e.type == "router.shutdown_requested"]
    assert down and down[-1].payload == {"reason": "restart loop: pulse", "graceful": False}
