"""A tracked script run by a real nanny (``python -m lvsbus_services.nanny`` on a real broker): a
shell script that exits 0 until a flag file exists. The flag touched: health.track_changed to DOWN
after fall failures; removed: RISING, then UP after rise passes. Nothing about real servers."""
from __future__ import annotations

from pathlib import Path

from tests.helpers.procs import ServiceRig

INTERVAL = 0.1


def write_config(path: Path, script: Path) -> Path:
    path.write_text(f"""
[router.lvs1]
address = "127.0.0.1"

[track.probe]
kind = "script"
command = "{script}"
interval = {INTERVAL}
timeout = 1.0
rise = 2
fall = 2
weight = -30

[track.elsewhere]
kind = "script"
command = "true"
on_routers = ["lvs2"]

[router.lvs2]
address = "127.0.0.2"
priority = 50
""")
    return path


def test_a_real_script_goes_down_when_it_fails_and_up_after_rise_passes(tmp_path, rigs):
    flag = tmp_path / "fail"
    script = tmp_path / "probe.sh"
    script.write_text(f'#!/bin/sh\n[ -e "{flag}" ] && exit 1\nexit 0\n')
    script.chmod(0o755)
    r: ServiceRig = rigs(write_config(tmp_path / "lvs.toml", script))
    r.start("nanny")

    def moves():
        return [(e.payload["track"], e.payload["old"], e.payload["new"], e.payload["reason"], e.payload["detail"])
                for e in r.events("health.track_changed")]

    r.wait(lambda: moves()[-1:] == [("probe", "INIT", "UP", "checks_passed", "ok")], 10, "the script UP")
    flag.touch()
    r.wait(lambda: moves()[-1:][0][2] == "DOWN", 10, "the script DOWN")
    flag.unlink()
    r.wait(lambda: moves()[-1:][0][2] == "UP", 10, "the script UP again")
    assert moves() == [
        ("probe", "INIT", "UP", "checks_passed", "ok"),  # never failed: one pass
        ("probe", "UP", "FALLING", "check_failing", "exit_code"),
        ("probe", "FALLING", "DOWN", "checks_failed", "exit_code"),  # fall 2
        ("probe", "DOWN", "RISING", "first_check_passed", "ok"),
        ("probe", "RISING", "UP", "checks_passed", "ok"),  # rise 2
    ]
    counts = [e.payload["count"] for e in r.events("health.track_changed")]
    assert counts == [1, 1, 2, 1, 2]
    # lvs2's script is not run here, and no real-server verdict is made of a script
    assert not r.events("health.real_server") and not r.events("health.state_changed")
    assert {i for e in r.events("health.check_results") for i in e.payload["ids"]} == {"track/probe"}


def test_a_script_has_no_address_and_a_stray_percent_h_or_p_does_not_break_it():
    import asyncio

    from lvsbus.config.model import Track, TrackKind
    from lvsbus_services.nanny.checks import Spec, run_check
    from lvsbus_services.nanny.core import track_check

    chk = track_check(Track(name="t", kind=TrackKind.SCRIPT, command='test -z %h && test %p = 0', timeout=5.0))
    spec = Spec("track/t", "", 0, chk)  # what the shell builds from plan(): address "", port 0
    assert asyncio.run(run_check(spec.address, spec.port, chk, spec.matcher)) == (True, "ok")
    bad = track_check(Track(name="t", kind=TrackKind.SCRIPT, command="exit 3", timeout=5.0))
    assert asyncio.run(run_check("", 0, bad)) == (False, "exit_code")
