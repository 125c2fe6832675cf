"""lvs.cf ``hard_shutdown`` with a real router: nanny that dies on every start (a fake interpreter).
hard_shutdown = 1 (Piranha's default: lvsd shut LVS down when a nanny died): the restart loop steps
the router down. hard_shutdown = 0 ("nanny died! manual action needed!"): the router stays up and
ACTIVE with its VIP, records router.service_abandoned, and a reload tries nanny again."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.wire.events import decode
from lvsbus.log import LogReader
from lvsbus.demo.netns import VIP, router_toml, write_key

ROOT = Path(__file__).resolve().parents[2]


def _events(state: Path, type_: str) -> list:
    try:
        return [e for e in (decode(b, s) for s, b in LogReader(str(state / "log")).read(1)) if e.type == type_]
    except FileNotFoundError:
        return []


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.netns
@pytest.mark.slow
def test_hard_shutdown_decides_what_a_nanny_restart_loop_does(netns, tmp_path):  # noqa: F811
    topo = netns(routers=1, private=False)
    key = write_key(tmp_path / "hb.key")
    flag = tmp_path / "nanny-dies"
    flag.touch()
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\ncase \"$*\" in *lvsbus_services.nanny*) [ -e {flag} ] && exit 3;; esac\n"
                    f"exec {sys.executable} \"$@\"\n")
    fake.chmod(0o755)

    def start(cfg: Path, state: Path) -> subprocess.Popen:
        code = ("import sys; from lvsbus.host import logs; from lvsbus.router.supervisor import Supervisor; logs.setup(); "
                f"sys.exit(Supervisor({str(cfg)!r}, {str(state)!r}, python={str(fake)!r}, spawn='exec').run())")
        return topo.popen("r1", [sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                          stderr=open(tmp_path / f"{state.name}.err", "ab"), cwd=str(ROOT),
                          env={**os.environ, "PYTHONPATH": str(ROOT), "LVSBUS_LOG_FORMAT": "json"})

    toml = router_toml(topo, key, private_link=False, priorities=(200,))

    # hard_shutdown = 1 (the default): the restart loop steps the router down, VIP released
    hard = tmp_path / "hard.toml"
    hard.write_text(toml)
    p = start(hard, tmp_path / "hard")
    try:
        assert p.wait(40) == 1
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = (tmp_path / "hard.err").read_text()
    assert "nanny died 6 times" in err and "stepping down" in err, err[-2000:]
    assert _events(tmp_path / "hard", "router.shutdown_requested")[-1].payload == {
        "reason": "restart loop: nanny", "graceful": False}
    assert not topo.has_address("r1", VIP)

    # hard_shutdown = 0: the router stays up without nanny, ACTIVE with its VIP
    soft = tmp_path / "soft.toml"
    soft.write_text("hard_shutdown = false\n" + toml)
    state = tmp_path / "soft"
    p = start(soft, state)
    try:
        ab = _wait(lambda: _events(state, "router.service_abandoned"), 40, "router.service_abandoned")
        assert ab[0].payload["service"] == "nanny" and ab[0].payload["exit"] == "exit 3"
        time.sleep(1.0)
        assert p.poll() is None, (tmp_path / "soft.err").read_text()[-2000:]
        _wait(lambda: topo.has_address("r1", VIP), 10, "the VIP on the active router")
        assert not _events(state, "router.shutdown_requested")
        err = (tmp_path / "soft.err").read_text()
        assert "manual action needed" in err.lower(), err[-2000:]
        from lvsbus.router.status import read_status

        assert read_status(str(state))["abandoned"] == ["nanny"]  # `lvsbus status`: nanny NOT RUNNING
        restarts = len(_events(state, "router.service_restarted"))
        time.sleep(1.0)
        assert len(_events(state, "router.service_restarted")) == restarts  # no longer restarted

        # the manual action: the cause fixed, a reload starts nanny again and it checks
        flag.unlink()
        p.send_signal(signal.SIGHUP)
        _wait(lambda: _events(state, "health.check_results"), 20, "nanny checking again after the reload")
        assert read_status(str(state))["abandoned"] == []
        assert p.poll() is None
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not topo.has_address("r1", VIP)
