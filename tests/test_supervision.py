"""The supervisor's restart policy (lvsbus.supervision, pure) and the service lock helper."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from lvsbus import servicelock
from lvsbus.supervision import GIVE_UP, RESTART, RestartLimits, RestartPolicy


def test_backoff_doubles_within_the_window_and_the_sixth_death_gives_up():
    p = RestartPolicy()
    ds = [p.died("broker", t) for t in (0.0, 1.0, 2.0, 3.0, 4.0)]
    assert [d.action for d in ds] == [RESTART] * 5
    assert [d.delay_s for d in ds] == [0.0, 0.2, 0.4, 0.8, 1.6]
    assert [d.attempt for d in ds] == [1, 2, 3, 4, 5]
    assert [d.recent for d in ds] == [1, 2, 3, 4, 5]
    d = p.died("broker", 5.0)
    assert d.action == GIVE_UP and d.recent == 6 and d.attempt == 5


def test_history_is_the_services_not_a_process_records():
    """The bug: every broker restart made a new child record, so each death was 'attempt 1,
    restart in 0.0 s'. The policy keys on the service name only."""
    p = RestartPolicy()
    assert [p.died("broker", t).delay_s for t in (0.0, 0.5, 1.0)] == [0.0, 0.2, 0.4]
    assert p.died("pulse", 1.0).delay_s == 0.0  # another service: its own history
    assert p.attempts("broker") == 3 and p.attempts("pulse") == 1


def test_deaths_leave_the_window_backoff_resets_but_the_run_count_grows():
    p = RestartPolicy(RestartLimits(max_restarts=5, window_s=60.0))
    for t in (0.0, 10.0, 20.0, 30.0, 40.0):
        assert p.died("pulse", t).action == RESTART
    d = p.died("pulse", 100.5)  # the five before are all more than 60 s old
    assert d.action == RESTART and d.delay_s == 0.0 and d.recent == 1 and d.attempt == 6
    # one death at 61 s after the first: the first has left the window, four remain -> 1.6 s
    q = RestartPolicy()
    for t in (0.0, 10.0, 20.0, 30.0, 40.0):
        q.died("pulse", t)
    d = q.died("pulse", 60.5)
    assert d.action == RESTART and d.recent == 5 and d.delay_s == 1.6


def test_backoff_is_capped():
    p = RestartPolicy(RestartLimits(max_restarts=100, backoff_base_s=0.2, backoff_max_s=5.0))
    delays = [p.died("x", float(t)).delay_s for t in range(12)]
    assert delays[:7] == [0.0, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0] and set(delays[6:]) == {5.0}


def test_forget_starts_a_new_history_and_keeps_the_run_count():
    p = RestartPolicy()
    for t in (0.0, 0.1, 0.2):
        p.died("lvsd", t)
    p.forget("lvsd")  # stopped on purpose (step-down), started again later
    d = p.died("lvsd", 0.3)
    assert d.delay_s == 0.0 and d.recent == 1 and d.attempt == 4


def test_zero_restarts_allowed_gives_up_at_once():
    d = RestartPolicy(RestartLimits(max_restarts=0)).died("pulse", 0.0)
    assert d.action == GIVE_UP and d.recent == 1


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        RestartLimits(window_s=0)
    with pytest.raises(ValueError):
        RestartLimits(max_restarts=-1)


def test_policy_module_is_pure():
    import lvsbus.supervision as m

    src = open(m.__file__).read()
    for banned in ("import time", "import os", "import subprocess", "import zmq", "import socket", "import random"):
        assert banned not in src


# -- the lock a spare waits on -------------------------------------------------------------------

def test_parse_holder_skips_waiters_and_other_files():
    dev = os.makedev(0xfe, 0)
    text = ("1: FLOCK  ADVISORY  WRITE 4242 fe:00:77 0 EOF\n"
            "1: -> FLOCK  ADVISORY  WRITE 4343 fe:00:77 0 EOF\n"
            "2: POSIX  ADVISORY  WRITE 99 fe:00:78 0 EOF\n")
    assert servicelock.parse_holder(text, dev, 77) == 4242
    assert servicelock.parse_holder(text, dev, 78) is None  # a POSIX lock is not ours
    assert servicelock.parse_holder(text, os.makedev(8, 1), 77) is None


def test_a_spare_takes_the_lock_the_moment_the_holder_is_killed(tmp_path):
    """A process blocked in acquire() gets the lock when the holder dies by SIGKILL; the holder is
    what /proc/locks says."""
    code = ("import sys, time; from lvsbus import servicelock as s; "
            "s.acquire(sys.argv[1], 'svc', on_wait=lambda: print('waiting', flush=True)); "
            "print('got', time.monotonic(), flush=True); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    live = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True)
    spare = None
    try:
        assert live.stdout.readline().startswith("got")
        assert servicelock.holder(str(tmp_path), "svc") == live.pid
        spare = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True)
        assert spare.stdout.readline().strip() == "waiting"
        assert servicelock.holder(str(tmp_path), "svc") == live.pid
        live.kill()
        t0 = time.monotonic()
        got = float(spare.stdout.readline().split()[1])
        assert got - t0 < 0.5
        assert servicelock.holder(str(tmp_path), "svc") == spare.pid
    finally:
        for p in (live, spare):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
