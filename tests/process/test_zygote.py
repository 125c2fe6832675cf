"""The router's zygote (lvsbus/router/zygote.py), with real processes: a driver process plays the
supervisor (a child subreaper), forks services through the zygote and reports what they saw."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def seen(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("zygote")
    r = subprocess.run([sys.executable, "-m", "tests.helpers.zygote_driver", str(d)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_forked_service_is_the_supervisors_child_in_a_session_of_its_own(seen):
    assert seen["subreaper"] is True
    rep = seen["report"]
    assert seen["report_rc"] == 0
    assert rep["ppid"] == seen["me"]  # adopted: the supervisor waits for it as for an exec'd child
    assert rep["sid"] == rep["pid"]
    assert rep["name"] == "__main__"  # run as python -m would
    assert rep["argv"][1:] == ["report", rep["argv"][2]] and rep["argv"][0].endswith("zygote_child.py")
    assert rep["nice"] == 5
    assert rep["fds"] == [0, 1, 2, 3]  # nothing of the zygote's (3: the listdir itself)
    assert rep["sigpipe"] and rep["sigint"]  # as a fresh interpreter has them


def test_exit_codes_pipes_and_signals_reach_the_supervisor(seen):
    assert seen["stdin_rc"] == 7
    assert seen["stderr_line"] == "a line on stderr\n" and seen["stderr_rc"] == 0
    assert seen["sleeper_rc"] == -9


def test_a_forked_service_starts_with_the_zygotes_imports(seen):
    # what makes a start take ms: the child did not import lvsbus.cli, the zygote had (an exec'd
    # python -m tests.helpers.zygote_child would not have it)
    assert seen["report"]["preloaded"] is True


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping capabilities needs root")
def test_the_privilege_drop_is_the_same_as_between_fork_and_exec(seen):
    caps = seen["caps"]
    assert seen["caps_rc"] == 0
    assert int(caps["CapEff"], 16) == 1 << 12 and int(caps["CapPrm"], 16) == 1 << 12  # CAP_NET_ADMIN only
    assert int(caps["CapBnd"], 16) == 1 << 12  # root has CAP_SETPCAP: the bounding set is lowered too
    assert caps["NoNewPrivs"] == "1"
    assert int(seen["report"]["caps"]["CapEff"], 16) == int(seen["my_caps"]["CapEff"], 16)  # keep=None: no drop


def test_ps_shows_the_command_line_the_service_would_have_had(seen):
    assert "-m tests.helpers.zygote_child sleep" in seen["cmdline"], seen["cmdline"]


def test_the_zygotes_death_stops_nothing_and_it_comes_back(seen):
    assert seen["sleeper_alive_after_zygote_kill"] is True
    assert seen["early_respawn"].startswith("down:")  # within RESTART_AFTER: the caller starts by exec
    assert seen["again_rc"] == 0 and seen["zygote_restarted"] is True


ORPHANS = """
import os, sys, time
from lvsbus.router import zygote
from lvsbus.router.supervisor import Supervisor
assert zygote.become_subreaper()
sup = Supervisor.__new__(Supervisor)
sup.broker, sup.children, sup.launcher = None, {}, None
r, w = os.pipe()
if os.fork() == 0:  # a service that forks a check program and dies first
    if os.fork() == 0:
        os.read(r, 1)  # until the test says: then the orphan exits
        os._exit(0)
    os._exit(0)
os.wait()  # the service
os.write(w, b"x")
time.sleep(0.3)
zombie = [p for p in os.listdir("/proc") if p.isdigit() and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[:2] == ["Z", str(os.getpid())]]
sup._reap_orphans()
left = [p for p in zombie if os.path.exists(f"/proc/{p}")]
print(len(zombie), len(left))
"""


def test_the_supervisor_reaps_the_orphans_it_adopts_as_a_subreaper():
    r = subprocess.run([sys.executable, "-c", ORPHANS], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[-1].split() == ["1", "0"], r.stdout  # a zombie of ours, then reaped
    assert "orphan_reaped" in r.stdout


BARRIER_DRIVER = r'''
import json, os, sys, time
from lvsbus.router import zygote
d = sys.argv[1]
assert zygote.become_subreaper()
launcher = zygote.Launcher(preload=("lvsbus.cli", "@tests.helpers.zygote_child", "xml.dom.minidom"))
launcher.start()
seen = {}
time.sleep(1.0)  # without the barrier, the zygote would have imported everything by now (HOLD_MAX is 3 s)
try:
    for name in ("first", "second"):
        p = launcher.spawn([sys.executable, "-m", "tests.helpers.zygote_child", "report", os.path.join(d, name)])
        assert p.wait(10) == 0
        with open(os.path.join(d, name)) as fh:
            seen[name] = json.load(fh)["after_barrier"]
        time.sleep(1.0)  # (the zygote imports what the barrier held, between requests)
finally:
    launcher.close()
print(json.dumps(seen))
'''


def test_a_barrier_holds_the_imports_after_it_until_its_service_was_forked(tmp_path):
    """PRELOAD's ``@MODULE``: what comes after it is imported only once MODULE's service has been
    forked (a router's start: broker, then pulse, the rest after), and then without a request."""
    r = subprocess.run([sys.executable, "-c", BARRIER_DRIVER, str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"first": False, "second": True}
