"""The supervisor's restart policy (lvsbus.router.supervision, pure) and the service lock helper."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from lvsbus.host import servicelock
from lvsbus.router.supervision import GIVE_UP, RESTART, RestartLimits, RestartPolicy


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
    import lvsbus.router.supervision as m

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
    code = ("import sys, time; from lvsbus.host import servicelock as s; "
            "s.acquire(sys.argv[1], 'svc', on_wait=lambda: print('waiting', flush=True)); "
            "print('got', time.monotonic(), flush=True); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
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


# -- the supervisor's shell over the policy: spares, promotion, backoff, step-down (no processes) --

class FakeProc:
    pids = iter(range(4_000_000_000, 4_000_100_000))  # no real process has these

    def __init__(self) -> None:
        self.pid = next(FakeProc.pids)
        self.returncode = None
        self.stdin = self.stderr = None

    def poll(self):
        return self.returncode

    def die(self, code: int = -9) -> None:
        self.returncode = code

    def kill(self) -> None:
        self.returncode = -9

    def wait(self, timeout=None):
        return self.returncode

    def send_signal(self, sig) -> None:
        self.returncode = -sig


class FakeBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict]] = []

    def publish(self, type_, payload):
        self.published.append((type_, payload))

    def publish_acked(self, type_, payload, timeout=None):
        self.published.append((type_, payload))
        return len(self.published)


def _router(monkeypatch, tmp_path, clock):
    from lvsbus.router import supervisor as R

    monkeypatch.setattr(R.Child, "_spawn", lambda self, what: FakeProc())
    monkeypatch.setattr(R, "_renice", lambda pid, nice: None)  # fake PIDs: never touch a real process
    monkeypatch.setattr(R.time, "monotonic", lambda: clock[0])
    r = R.Supervisor(str(tmp_path / "none.toml"), str(tmp_path / "s"))
    r.client = FakeBus()
    holders = {}
    monkeypatch.setattr(R.servicelock, "holder", lambda run, name: holders.get(name))
    c = R.Child("pulse", ["pulse"], spare=True)
    r.children = {"pulse": c}
    c.start()
    c.spare_at = clock[0]
    monkeypatch.setattr(r, "_shutdown", lambda reason, graceful: r._flags.add(f"shutdown:{reason}"))
    return r, c, holders


def test_a_spare_is_started_only_once_the_live_one_holds_the_lock_then_takes_over(monkeypatch, tmp_path):
    clock = [100.0]
    r, c, holders = _router(monkeypatch, tmp_path, clock)
    assert r._supervise() and c.spare is None  # the live one has not taken the lock yet
    holders["pulse"] = c.pid
    assert r._supervise() and c.spare is not None
    live, spare = c.proc, c.spare
    live.die()
    clock[0] += 0.01
    assert r._supervise()
    assert c.proc is spare and c.spare is None  # promoted at once, no process start
    assert r.client.published[-1] == ("router.service_restarted", {"service": "pulse", "attempt": 1, "exit": "killed by SIGKILL"})
    holders["pulse"] = spare.pid
    assert r._supervise() and c.spare is not None  # next spare at once (first death in the window)
    # the second death: the spare takes over, the next spare waits 0.2 s
    second = c.spare
    c.proc.die()
    clock[0] += 1.0
    r._supervise()
    assert c.proc is second and c.spare is None and c.spare_at == pytest.approx(clock[0] + 0.2)
    holders["pulse"] = second.pid
    clock[0] += 0.1
    r._supervise()
    assert c.spare is None
    clock[0] += 0.11
    r._supervise()
    assert c.spare is not None


def test_deaths_faster_than_spares_leave_the_service_down_for_the_backoff_then_step_down(monkeypatch, tmp_path):
    clock = [0.0]
    r, c, holders = _router(monkeypatch, tmp_path, clock)
    delays = []
    for n in range(5):
        c.proc.die(3)  # dies while no spare is ready (none: the live one never takes the lock here)
        t0 = clock[0]
        r._supervise()
        while not c.alive():
            clock[0] = round(clock[0] + 0.05, 3)
            r._supervise()
        delays.append(round(clock[0] - t0, 3))  # started again, as the live one, after the backoff
    assert delays == pytest.approx([0.0, 0.2, 0.4, 0.8, 1.6], abs=0.051)  # the clock steps 0.05 s
    assert [p["attempt"] for t, p in r.client.published if t == "router.service_restarted"] == [1, 2, 3, 4, 5]
    c.proc.die(3)
    assert not r._supervise()  # the 6th death within 60 s
    assert "shutdown:restart loop: pulse" in r._flags and r.exit_code == 1


def test_a_spare_that_dies_while_it_waits_is_a_death_of_the_service(monkeypatch, tmp_path):
    clock = [0.0]
    r, c, holders = _router(monkeypatch, tmp_path, clock)
    holders["pulse"] = c.pid
    r._supervise()
    first = c.spare
    first.die(3)
    clock[0] += 0.5
    r._supervise()
    assert c.alive() and c.spare is not None and c.spare is not first  # the first death: a new one at once
    assert r.client.published[-1] == ("router.service_restarted", {"service": "pulse", "attempt": 1, "exit": "spare: exit 3"})
    assert r.policy.attempts("pulse") == 1


# -- the supervisor's other decisions (lvsbus.router.supervision.Supervision: the real router and the simulator) --

def test_which_services_run_follows_pulse_and_the_config():
    from lvsbus.router.supervision import LVSD_START, LVSD_STOP, Supervision

    s = Supervision()
    assert s.starts() == ["pulse", "nanny", "ipvs"]
    assert s.starts(configured={"metrics"}) == ["pulse", "nanny", "ipvs", "metrics"]
    assert s.starts(configured={"metrics", "web"})[-2:] == ["metrics", "web"]
    assert not s.wanted("lvsd") and s.wanted("ipvs")
    assert s.lvsd_order("pulse.start_lvsd") == LVSD_START and s.active and s.wanted("lvsd")
    assert s.lvsd_order("router.role_changed") is None and s.active
    assert s.lvsd_order("pulse.stop_lvsd") == LVSD_STOP and not s.wanted("lvsd")


def test_a_restart_loop_steps_down_unless_nanny_may_be_abandoned():
    from lvsbus.router.supervision import ABANDON, Supervision

    for service, hard, last in (("nanny", False, ABANDON), ("nanny", True, GIVE_UP), ("pulse", False, GIVE_UP),
                                ("web", True, ABANDON)):  # the console's loss never steps the router down
        s = Supervision()
        ds = [s.died(service, float(t), hard_shutdown=hard) for t in range(6)]
        assert [d.action for d in ds] == [RESTART] * 5 + [last]
        assert ds[-1].recent == 6


def test_on_death_promotes_a_live_spare_at_once_and_delays_the_next_spare():
    from lvsbus.router.supervision import Supervision

    s = Supervision()
    d = s.on_death("pulse", 10.0, spare_alive=True, exit_="killed by SIGKILL")
    assert d.promote and d.start_at is None and d.spare_at == 10.0 and d.restarted is None
    assert d.events == (("router.service_restarted", {"service": "pulse", "attempt": 1, "exit": "killed by SIGKILL"}),)
    d = s.on_death("pulse", 11.0, spare_alive=True)
    assert d.promote and d.spare_at == pytest.approx(11.2)  # the policy's delay: for the next spare
    # no spare alive (deaths faster than spares): a new process after the delay, recorded then
    d = s.on_death("pulse", 11.1, spare_alive=False, exit_="exit 3")
    assert not d.promote and d.spare_at is None and d.start_at == pytest.approx(11.5) and d.events == ()
    assert d.restarted == {"service": "pulse", "attempt": 3, "exit": "exit 3"}
    # a spare that dies while it waits: a death of the service, the next spare after the delay
    d = s.on_death("pulse", 12.0, spare_alive=True, of_spare=True, exit_="spare: exit 3")
    assert not d.promote and d.start_at is None and d.spare_at == pytest.approx(12.8)
    assert d.events[0][1]["exit"] == "spare: exit 3"
    s.on_death("pulse", 12.1)
    d = s.on_death("pulse", 12.2)
    assert d.action == GIVE_UP and d.reason == "restart loop: pulse" and d.events == ()


def test_on_death_abandons_with_the_event_and_lvsd_started_forgets_its_deaths():
    from lvsbus.router.supervision import ABANDON, Supervision

    s = Supervision()
    for t in range(5):
        assert s.on_death("nanny", float(t), hard_shutdown=False).action == RESTART
    d = s.on_death("nanny", 5.0, hard_shutdown=False, exit_="x" * 300)
    assert d.action == ABANDON and d.events == (("router.service_abandoned",
                                                 {"service": "nanny", "restarts": 5, "exit": "x" * 256}),)
    for t in (0.0, 0.1, 0.2):
        s.on_death("lvsd", t)
    s.lvsd_started()  # the standby after a stop: a new history, the run's count stays
    d = s.on_death("lvsd", 0.3)
    assert d.start_at == 0.3 and d.restarted is not None and d.restarted["attempt"] == 4
