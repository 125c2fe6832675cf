"""End to end with real processes: a broker, nanny's and lvsd's shells (``python -m``), and real
servers on loopback. Stop a server: DOWN and out of the desired table within fall x interval;
start it: back after rise x interval; all down: the sorry server; nanny SIGKILLed and restarted:
no flap; lvsd restarted: the same table, warm."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.bus import BusClient
from lvsbus.config import load, to_dict
from lvsbus.ipvs.table import ServiceKey, Table
from lvsbus_services.lvsd.core import apply_ops
from tests.helpers.procs import Listener, ServiceRig

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = 0.2
RISE, FALL = 2, 2


def write_config(path: Path, p1: int, p2: int, sorry: int, rise: int = RISE, initial_rise: int = RISE,
                 vs_extra: str = "") -> Path:
    path.write_text(f"""
[router.lvs1]
address = "127.0.0.1"

[virtual.web]
address = "10.9.0.1"
port = 80
sorry_server = "127.0.0.1"
sorry_server_port = {sorry}
{vs_extra}
[virtual.web.check]
kind = "tcp_connect"
interval = {INTERVAL}
timeout = {INTERVAL}
rise = {rise}
initial_rise = {initial_rise}
fall = {FALL}

[virtual.web.server.s1]
address = "127.0.0.1"
port = {p1}

[virtual.web.server.s2]
address = "127.0.0.1"
port = {p2}
""")
    return path


class NannyRig(ServiceRig):
    """The rig (tests/helpers/procs.py), and lvsd's table folded from its log."""

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.stop(name, sig)

    def table(self) -> tuple[Table | None, int]:
        t, version = None, 0
        for e in self.events("lvsd.table"):
            if e.type == "lvsd.table_desired":
                t, version = Table.from_dict(e.payload["table"]), e.payload["version"]
            elif t is not None:
                assert e.payload["base_version"] == version, "a delta that does not follow"
                t, version = apply_ops(t, e.payload["ops"]), e.payload["version"]
        return t, version

    def dests(self) -> dict[str, int]:
        t, _ = self.table()
        if t is None or ServiceKey.tcp("10.9.0.1", 80) not in t:
            return {}
        return {k: d.weight for k, d in t[ServiceKey.tcp("10.9.0.1", 80)].dests.items()}

    def describe(self) -> str:
        return f"dests={self.dests()}\n" + super().describe()


@pytest.fixture
def router(rigs):
    return lambda config: rigs(config, NannyRig)


@pytest.mark.slow
def test_down_up_sorry_and_restarts_without_flap(tmp_path, router):
    s1, s2 = Listener().start(), Listener().start()
    sorry = Listener().start()
    k1, k2, ks = f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}", f"127.0.0.1:{sorry.port}"
    r = router(write_config(tmp_path / "lvs.toml", s1.port, s2.port, sorry.port))
    # nanny first (it runs on the backup too); lvsd starts later with health already known: warm
    r.start("nanny")
    r.wait(lambda: len(r.events("health.real_server_up")) == 2, 10, "both servers UP")
    r.start("lvsd")
    r.wait(lambda: r.table()[0] is not None, 10, "lvsd's first table")
    first = r.events("lvsd.table")[0]
    assert first.type == "lvsd.table_desired" and first.payload["reason"] == "started"
    assert r.dests() == {k1: 1, k2: 1}

    # stop s1: DOWN within fall x interval (+ one interval of phase, + the batch and bus)
    s1.stop()
    took = r.wait(lambda: k1 not in r.dests(), 5, "s1 out of the table")
    assert took <= (FALL + 1) * INTERVAL + 0.3, took
    down = [e for e in r.events("health.real_server_down") if e.payload["server"] == "s1"]
    assert down and down[-1].payload["reason"] == "checks_failed" and down[-1].payload["detail"] == "refused"
    delta = [e for e in r.events("lvsd.table_delta")][-1]
    assert delta.cause == down[-1].seq and delta.payload["ops"] == [
        {"op": "del_dest", "service": "tcp:10.9.0.1:80", "dest": k1, "attrs": {}}]

    # start it again: back after rise x interval
    s1 = Listener(s1.port).start()
    took = r.wait(lambda: k1 in r.dests(), 5, "s1 back")
    assert took <= (RISE + 1) * INTERVAL + 0.3, took

    # all down: the sorry server comes in, and goes again when one is back
    s1.stop()
    s2.stop()
    r.wait(lambda: r.dests() == {ks: 1}, 5, "the sorry server alone")
    s2 = Listener(s2.port).start()
    r.wait(lambda: r.dests() == {k2: 1}, 5, "s2 back, sorry server out")
    s1 = Listener(s1.port).start()
    r.wait(lambda: r.dests() == {k1: 1, k2: 1}, 5, "both back")

    # nanny SIGKILLed and restarted: no health event, no table change
    time.sleep(3 * INTERVAL)
    before = len(r.events("health.real_server")) + len(r.events("health.state_changed"))
    _, version = r.table()
    r.kill("nanny")
    time.sleep(0.3)
    r.start("nanny")
    r.wait(lambda: "nanny_started" in (tmp_path / "nanny.err").read_text(), 10, "nanny restarted")
    n_results = len(r.events("health.check_results"))
    time.sleep(8 * INTERVAL)
    assert len(r.events("health.check_results")) > n_results, "the restarted nanny checks"
    after = len(r.events("health.real_server")) + len(r.events("health.state_changed"))
    assert after == before, [e.payload for e in r.events("health.")[-5:]]
    assert r.table()[1] == version and r.dests() == {k1: 1, k2: 1}

    # nanny stopped (SIGTERM: a snapshot) and restarted: no flap either
    r.kill("nanny", signal.SIGTERM)
    r.start("nanny")
    time.sleep(8 * INTERVAL)
    assert len(r.events("health.real_server")) + len(r.events("health.state_changed")) == before
    assert r.table()[1] == version

    # lvsd SIGKILLed and restarted: the same table again, in full (warm: health from the log)
    r.kill("lvsd")
    r.start("lvsd")
    r.wait(lambda: r.table()[1] > version, 10, "lvsd's full table after restart")
    last = r.events("lvsd.table")[-1]
    assert last.type == "lvsd.table_desired" and last.payload["reason"] == "started"
    assert r.dests() == {k1: 1, k2: 1}
    for s in (s1, s2, sorry):
        s.stop()

    # replay: the log fed to fresh cores gives every logged health verdict and table, exactly
    from lvsbus_services.lvsd.core import LvsdCore
    from lvsbus_services.nanny.core import NannyCore
    from lvsbus_tools.replay import verify

    report = verify(r.dirs.root, cores=[NannyCore(), LvsdCore()])
    print(report.format())
    assert report.ok and report.outputs > 10, report.format()


@pytest.mark.slow
def test_reload_keeps_unchanged_servers_and_inhibit_on_failure_keeps_a_failed_one_at_weight_zero(tmp_path, router):
    from lvsbus.config import diff

    s1, s2, s2b = Listener().start(), Listener().start(), Listener().start()
    k1, k2 = f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}"
    cfg1 = write_config(tmp_path / "lvs.toml", s1.port, s2.port, 9)
    r = router(cfg1)
    r.start("nanny")
    r.start("lvsd")
    r.wait(lambda: r.dests() == {k1: 1, k2: 1}, 10, "both servers in the table")
    before = {e.seq for e in r.events("health.")} - {e.seq for e in r.events("health.check_results")}

    # reload: inhibit_on_failure on, and s2's check probes another port (its check changed: it starts over)
    text = cfg1.read_text().replace('sorry_server_port = 9\n', 'sorry_server_port = 9\ninhibit_on_failure = true\n')
    text += f"\n[virtual.web.server.s2.check]\nport = {s2b.port}\n"
    cfg2 = tmp_path / "lvs2.toml"
    cfg2.write_text(text)
    old, new = load(str(cfg1)), load(str(cfg2))
    c = BusClient(r.dirs.run, "supervisor")
    c.publish_acked("config.loaded", {
        "path": str(cfg2), "format": new.format, "digest": new.digest, "model": to_dict(new.config), "warnings": [],
        "local_router": "lvs1", "reload": True, "diff": diff(old.config, new.config).to_dict()})
    c.close()
    r.wait(lambda: any(e.payload.get("reason") == "config" for e in r.events("lvsd.table")), 5, "the reload's table")
    full = [e for e in r.events("lvsd.table") if e.payload.get("reason") == "config"][0]
    dests = full.payload["table"]["tcp:10.9.0.1:80"]["dests"]
    assert {k: d["weight"] for k, d in dests.items()} == {k1: 1, k2: 0}  # s2 unknown again: weight 0
    r.wait(lambda: r.dests() == {k1: 1, k2: 1}, 5, "s2 back after rise on its new check")
    changed = [e for e in r.events("health.") if e.type != "health.check_results" and e.seq not in before]
    assert {e.payload["server"] for e in changed} == {"s2"}  # s1 kept its state: no event at all
    assert changed[0].payload["reason"] == "check_changed"

    # inhibit_on_failure: a failed server stays in the table with weight 0
    s1.stop()
    r.wait(lambda: r.dests() == {k1: 0, k2: 1}, 5, "s1 quiesced")
    for s in (s2, s2b):
        s.stop()


@pytest.mark.slow
def test_piranha_timing_one_pass_at_start_reentry_after_a_failure_and_quiesce(tmp_path, router):
    """Piranha's nanny, with real processes: at start a server enters after one passed check (not
    after reentry); once it has failed it must stay healthy for reentry (rise x interval) before it
    is back; with quiesce (lvs.cf quiesce_server) the failed server stays at weight 0 meanwhile."""
    rise = 15  # reentry 3 s at a 0.2 s keepalive
    s1, s2 = Listener().start(), Listener().start()
    k1, k2 = f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}"
    cfg = write_config(tmp_path / "lvs.toml", s1.port, s2.port, 9, rise=rise, initial_rise=1,
                       vs_extra="quiesce = true\n")
    r = router(cfg)
    r.start("lvsd")
    r.wait(lambda: r.table()[0] is not None, 10, "lvsd's first table")
    # quiesce: a server never in is not added at weight 0 (Piranha added it when up); the sorry server serves
    assert r.dests() == {"127.0.0.1:9": 1}
    r.start("nanny")
    r.wait(lambda: r.dests() == {k1: 1, k2: 1}, 10, "both servers in")
    first = r.events("health.check_results")[0].mono_ns
    ups = r.events("health.real_server_up")
    assert len(ups) == 2 and all(e.payload["passes"] == 1 for e in ups)
    assert max(e.mono_ns for e in ups) - first < rise * INTERVAL * 1e9 / 2  # far sooner than reentry

    s1.stop()
    r.wait(lambda: r.dests() == {k1: 0, k2: 1}, 5, "s1 quiesced at weight 0")
    # nanny SIGKILLed and restarted by then: the server's history survives (snapshot + log of this run)
    r.kill("nanny")
    r.start("nanny")
    s1 = Listener(s1.port).start()
    t0 = time.monotonic()
    took = r.wait(lambda: r.dests() == {k1: 1, k2: 1}, 15, "s1 back after reentry")
    assert took >= (rise - 2) * INTERVAL, took  # it had failed: the full reentry, also after the restart
    back = [e for e in r.events("health.real_server_up") if e.payload["server"] == "s1"][-1]
    assert back.payload["passes"] == rise and back.payload["previous"] == "RISING", time.monotonic() - t0
    for s in (s1, s2):
        s.stop()


@pytest.mark.slow
def test_a_dynamic_weight_program_sets_the_weight_lvsd_programs(tmp_path, router):
    """keepalived's misc_dynamic (``dynamic_weight``) with real processes: s1's program exits with
    the status in a file; 7 (weight 5) puts s1 in the table at weight 5; 2 sets weight 0; 1 takes it
    out; 0 brings it back with its last weight. nanny's and lvsd's decisions replay."""
    s1, s2 = Listener().start(), Listener().start()
    status = tmp_path / "status"
    status.write_text("7")
    cfg = write_config(tmp_path / "lvs.toml", s1.port, s2.port, 9, rise=1, initial_rise=1)
    cfg.write_text(cfg.read_text() + f"""
[virtual.web.server.s1.check]
kind = "program"
command = "exit $(cat {status})"
dynamic_weight = true
""")
    k1, k2 = f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}"
    r = router(cfg)
    r.start("nanny")
    r.start("lvsd")
    try:
        r.wait(lambda: r.dests() == {k1: 5, k2: 1}, 10, "s1 at its program's weight 5")
        ups = [e for e in r.events("health.") if e.type in ("health.weight_changed", "health.real_server_up")
               and e.payload["server"] == "s1"]
        assert [e.type for e in ups][:2] == ["health.weight_changed", "health.real_server_up"]  # weight first
        status.write_text("2")
        r.wait(lambda: r.dests() == {k1: 0, k2: 1}, 10, "weight 0 (status 2)")
        status.write_text("1")
        r.wait(lambda: r.dests() == {k2: 1}, 10, "s1 out (status 1 fails)")
        status.write_text("0")
        r.wait(lambda: r.dests() == {k1: 0, k2: 1}, 10, "s1 back with the weight it had (status 0)")
        changes = [(e.payload["previous"], e.payload["weight"]) for e in r.events("health.weight_changed")]
        assert changes == [(None, 5), (5, 0)]
    finally:
        for s in (s1, s2):
            s.stop()
    r.kill("nanny", signal.SIGTERM)
    r.kill("lvsd", signal.SIGTERM)
    from lvsbus_tools.replay import make_cores, verify

    rep = verify(r.dirs.root, cores=make_cores(("nanny", "lvsd")))
    assert rep.ok, rep.format()


@pytest.mark.slow
def test_a_file_check_s_weight_is_added_to_the_configured_weight(tmp_path, router):
    """keepalived's FILE_CHECK with a weight (``file_weight``): s2 (configured weight 3) reads a
    number from a file; 2 x weight 4 puts it in at 3 + 8 = 11; -1 gives 3 - 4, clamped to 0."""
    s1, s2 = Listener().start(), Listener().start()
    state = tmp_path / "s2.state"
    state.write_text("2\n")
    cfg = write_config(tmp_path / "lvs.toml", s1.port, s2.port, 9, rise=1, initial_rise=1)
    cfg.write_text(cfg.read_text() + f"""weight = 3

[virtual.web.server.s2.check]
kind = "file"
file = "{state}"
file_weight = 4
""")
    k1, k2 = f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}"
    r = router(cfg)
    r.start("nanny")
    r.start("lvsd")
    try:
        r.wait(lambda: r.dests() == {k1: 1, k2: 11}, 10, "s2 at 3 + 2 x 4")
        state.write_text("-1\n")
        r.wait(lambda: r.dests() == {k1: 1, k2: 0}, 10, "s2 at 3 - 4, clamped to 0")
    finally:
        for s in (s1, s2):
            s.stop()
