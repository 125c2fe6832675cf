"""``lvsbus status``'s fold (``read_status``): every event type it reads, the walk back over
segments to the run's start, and its output for every golden incident log (tests/fixtures/logs),
pinned in tests/fixtures/status.json: what read_status returned when the test was written. A
deliberate change to the output rewrites it: ``python -m tests.unit.test_status``. What ``lvsbus status``
prints from those (and from a few variants) is pinned in tests/fixtures/status_text.txt."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.config import loads
from lvsbus.wire.events import Event, decodable, encode
from lvsbus.log import Durability, EventLog, LogReader
from lvsbus.router.supervisor import config_payload
from lvsbus.router.status import read_status
from tests.helpers.lvs_config import lvs_toml, scaleout_toml

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "fixtures" / "status.json"
GOLDEN_TEXT = ROOT / "tests" / "fixtures" / "status_text.txt"
LOGS = sorted((ROOT / "tests" / "fixtures" / "logs").glob("*/*/log"))
LOCAL = {"10.99.1.50", "10.200.0.1"}  # this "host's" addresses: one VIP present, others not

TOML = lvs_toml(r1='private_address = "10.99.2.11"') + "[heartbeat]\nkeepalive = 1\ndeadtime = 3\n"
SCALEOUT = scaleout_toml()


@pytest.fixture
def host(monkeypatch):
    """Pin what read_status asks the host: its addresses, and that no recorded pid is alive."""
    from lvsbus.host import netutil

    exists = os.path.exists
    monkeypatch.setattr(netutil, "local_addresses", lambda: set(LOCAL))
    monkeypatch.setattr(os.path, "exists", lambda p: False if str(p).startswith("/proc/") else exists(p))


def _last_mono(log: Path) -> int:
    return max(e.mono_ns for e in decodable(LogReader(str(log), skip_corrupt=True).read(1), []))


def _golden_status() -> dict:
    return {str(log.parent.relative_to(log.parents[2])): read_status(str(log.parent), _last_mono(log) + 500_000_000)
            for log in LOGS}


def test_status_of_every_golden_log_is_as_pinned(host):
    # rewritten by `python -m tests.unit.test_status` (under the same pins as the `host` fixture)
    assert LOGS
    got = json.loads(json.dumps(_golden_status()))  # as `lvsbus status --json` prints it
    assert got == json.loads(GOLDEN.read_text())


def _payload(text: str, reload: bool) -> dict:
    return config_payload(loads(text, "x.toml"), "r1", reload, {})


VIP = {"address": "10.99.1.50", "prefixlen": 32, "family": "ipv4", "device": "eth0", "label": None, "owner": "web"}
VIP2 = {**VIP, "address": "10.99.1.51", "device": "eth1"}


def _version(type_: str) -> int:
    return 2 if type_ == "bus.client_joined" else 1


def _hb(peer: str, link: str, seq: int, role: str = "BACKUP") -> dict:
    return {"link": link, "peer": peer, "address": "10.99.1.12", "role": role, "priority": 100, "epoch": 5,
            "seq": seq, "leaving": False}


def _every_event_log(directory: Path) -> tuple[int, int]:
    """A log of small segments: an earlier run (its VIPs, restarts and shutdown must not count),
    the supervisor's hello just before this run's config.loaded, then every event read_status
    folds, a reload among them. (seq of the run's config.loaded, last seq)."""
    old_run = [
        ("router", "bus.client_joined", {"client": "router", "subscriptions": [], "pid": 111}),
        ("router", "config.loaded", _payload(TOML, False)),
        ("pulse", "pulse.take_vips", {"vips": [VIP2], "reason": "no_active"}),
        ("router", "router.service_restarted", {"service": "lvsd", "attempt": 3, "exit": "exit 1"}),
        ("pulse", "pulse.datagram_rejected", {"reason": "bad_mac", "link": "public", "address": "10.0.0.9",
                                              "size": 10, "detail": "", "count": 1}),
        ("router", "router.shutdown_requested", {"reason": "sigterm", "graceful": True}),
    ]
    run = [
        ("router", "bus.client_joined", {"client": "router", "subscriptions": [], "pid": 4242}),
        ("nanny", "bus.client_joined", {"client": "nanny", "subscriptions": [], "pid": 4243}),
        ("router", "config.loaded", _payload(TOML + SCALEOUT, False)),
        ("pulse", "router.role_changed", {"node": "r1", "old": "INIT", "new": "BACKUP", "reason": "started",
                                          "priority": 200, "epoch": 1, "peer": None}),
        ("pulse", "pulse.heartbeat_received", _hb("r2", "public", 1)),
        ("pulse", "pulse.heartbeat_received", _hb("r2", "private", 2)),
        ("pulse", "pulse.heartbeat_received", _hb("r9", "public", 1)),  # no such peer: left out
        ("pulse", "pulse.peer_alive", {"peer": "r2", "link": "public", "role": "BACKUP", "priority": 100, "epoch": 5}),
        ("pulse", "pulse.link_degraded", {"peer": "r2", "link": "private", "silent_ns": 10}),
        ("pulse", "pulse.link_degraded", {"peer": "r2", "link": "public", "silent_ns": 10}),
        ("pulse", "pulse.link_restored", {"peer": "r2", "link": "public"}),
        ("pulse", "pulse.peer_dead", {"peer": "r2", "cause": "silent", "role": "BACKUP", "last_heard_ns": 1}),
        ("pulse", "pulse.peer_alive", {"peer": "r2", "link": "public", "role": "BACKUP", "priority": 100, "epoch": 5}),
        ("pulse", "router.role_changed", {"node": "r1", "old": "BACKUP", "new": "ACTIVE", "reason": "no_active",
                                          "priority": 200, "epoch": 1, "peer": None}),
        ("pulse", "pulse.take_vips", {"vips": [VIP, VIP2], "reason": "no_active"}),
        ("pulse", "pulse.release_vips", {"vips": [VIP2], "reason": "config"}),
        ("pulse", "pulse.start_lvsd", {"reason": "no_active"}),
        ("pulse", "pulse.stop_lvsd", {"reason": "config"}),
        ("pulse", "pulse.start_lvsd", {"reason": "config"}),
        ("pulse", "pulse.datagram_rejected", {"reason": "bad_mac", "link": "public", "address": "10.0.0.9",
                                              "size": 10, "detail": "", "count": 1}),
        ("pulse", "pulse.datagram_rejected", {"reason": "malformed", "link": "public", "address": "10.0.0.9",
                                              "size": 10, "detail": "", "count": 2}),
        ("pulse", "pulse.heartbeat_ignored", {"datagram": "heartbeat", "peer": "r2", "link": "public",
                                              "reason": "stale_seq", "seq": 1, "last_seq": 2, "epoch": 5, "count": 7}),
        ("router", "router.service_restarted", {"service": "nanny", "attempt": 1, "exit": "exit 1"}),
        ("router", "router.service_abandoned", {"service": "nanny", "restarts": 5, "exit": "exit 1"}),
        ("router", "router.service_abandoned", {"service": "nanny", "restarts": 5, "exit": "exit 1"}),
        ("router", "router.service_abandoned", {"service": "metrics", "restarts": 5, "exit": "exit 1"}),
        ("router", "router.service_restarted", {"service": "nanny", "attempt": 2, "exit": "exit 1"}),
        ("router", "config.reload_refused", {"path": "x.toml", "errors": ["bad"], "kept_digest": "d"}),
        ("router", "config.reload_refused", {"path": "x.toml", "errors": ["bad"], "kept_digest": "d"}),
        ("bgp", "bgp.session_changed", {"peer": "10.99.1.100", "state": "up", "info": "Established"}),
        ("bgp", "bgp.vip_changed", {"address": "10.200.0.1", "prefixlen": 32, "old": "withdraw", "new": "announce",
                                    "reason": "serving", "virtuals": ["web"]}),
        ("bgp", "bgp.vip_changed", {"address": "10.200.0.2", "prefixlen": 32, "old": "withdraw", "new": "announce",
                                    "reason": "serving", "virtuals": ["web"]}),
        ("bgp", "bgp.vip_changed", {"address": "10.200.0.2", "prefixlen": 32, "old": "announce", "new": "withdraw",
                                    "reason": "config", "virtuals": ["web"]}),
        ("bgp", "bgp.drain_taken", {"action": "drain", "by": "op", "outcome": "applied", "vips": 1}),
        ("bgp", "bgp.drain_taken", {"action": "resume", "by": "op", "outcome": "unchanged", "vips": 1}),
        ("router", "config.loaded", _payload(TOML + SCALEOUT, True)),  # a reload keeps the run, its peers, bgp
        ("pulse", "pulse.heartbeat_received", _hb("r2", "public", 3, role="ACTIVE")),
    ]
    log = EventLog(str(directory / "log"), durability=Durability("none"), segment_bytes=2000)
    for i, (src, t, p) in enumerate(old_run + run, 1):
        log.append(i, encode(Event(i, "r1", src, t, _version(t), 1_000_000_000 * i, 7_000 + i, None, p)))
    log.close()
    skipped: list = []
    assert len(list(decodable(LogReader(str(directory / "log")).read(1), skipped))) == len(old_run + run)
    assert not skipped
    return len(old_run) + 3, len(old_run) + len(run)


def test_status_folds_every_event_it_reads_from_the_runs_start(tmp_path, host):
    start, last = _every_event_log(tmp_path)
    firsts = [first for first, _ in LogReader(str(tmp_path / "log")).segments()]

    def segment_of(seq: int) -> int:
        return max(f for f in firsts if f <= seq)

    # the walk back crosses segments; the supervisor's hello shares its segment with the run's
    # config.loaded (the walk reads no segment before it)
    assert segment_of(start) == segment_of(start - 2) != segment_of(2) and len(firsts) >= 4
    st = read_status(str(tmp_path), now_mono_ns=1_000_000_000 * last + 250_000_000)

    assert (st["router"], st["service"], st["run_start_seq"], st["last_seq"]) == ("r1", "lvs", start, last)
    assert (st["role"], st["role_reason"], st["role_since_wall_ns"]) == ("ACTIVE", "no_active", 7_000 + start + 11)
    assert (st["deadtime_s"], st["keepalive_s"]) == (3, 1)
    assert st["config_digest"] == loads(TOML + SCALEOUT, "x.toml").digest
    assert st["supervisor_pid"] == 4242 and st["running"] is False  # pid 4242 is not alive (pinned)
    assert st["vips"] == [{"address": "10.99.1.50", "device": "eth0", "present": True}]
    assert st["lvsd"] is True
    assert (st["datagrams_rejected"], st["heartbeats_ignored"], st["reload_refused"]) == (2, 7, 2)
    assert st["service_restarts"] == {"nanny": 2} and st["abandoned"] == ["metrics"]
    assert st["failover"] == {}
    assert st["bgp"] == {"sessions": {"10.99.1.100": {"state": "up", "info": "Established"}},
                         "announced": {"10.200.0.1": {"state": "announce", "reason": "serving"}}, "drained": True}
    assert list(st["peers"]) == ["r2"]
    r2 = st["peers"]["r2"]
    assert {k: r2[k] for k in ("address", "private_address", "priority", "alive", "role")} == {
        "address": "10.99.1.12", "private_address": None, "priority": 100, "alive": True, "role": "ACTIVE"}
    assert r2["links"]["public"] == {"state": "up", "degraded": False, "last_heard_mono_ns": 1_000_000_000 * last,
                                     "heard_ns": 7_000 + last, "last_seq": 3, "age_s": 0.25, "healthy": True}
    private_heard = 1_000_000_000 * (start + 3)
    private_age = round((1_000_000_000 * last + 250_000_000 - private_heard) / 1e9, 3)
    assert r2["links"]["private"] == {"state": "degraded", "degraded": True, "last_heard_mono_ns": private_heard,
                                      "heard_ns": 7_000 + start + 3, "last_seq": 2, "age_s": private_age, "healthy": False}


def test_status_of_a_run_without_scaleout_or_a_shutdown(tmp_path, monkeypatch, host):
    """No [scaleout]: bgp None and bgp events ignored; no shutdown recorded: running is whether the
    supervisor's pid is alive; a link only degraded (never heard) has no age and is unhealthy, and
    the configured one never heard is silent."""
    evs = [
        ("router", "bus.client_joined", {"client": "router", "subscriptions": [], "pid": 4242}),
        ("router", "config.loaded", _payload(TOML, False)),
        ("bgp", "bgp.session_changed", {"peer": "10.99.1.100", "state": "up", "info": "Established"}),
        ("pulse", "pulse.link_degraded", {"peer": "r2", "link": "private", "silent_ns": 10}),
    ]
    log = EventLog(str(tmp_path / "log"), durability=Durability("none"))
    for i, (src, t, p) in enumerate(evs, 1):
        log.append(i, encode(Event(i, "r1", src, t, _version(t), 1_000_000_000 * i, 0, None, p)))
    log.close()
    monkeypatch.setattr(os.path, "exists", lambda p: p == "/proc/4242")
    st = read_status(str(tmp_path), now_mono_ns=10_000_000_000)
    assert st["bgp"] is None and st["running"] is True and st["role"] == "UNKNOWN"
    never = {"state": "silent", "age_s": None, "heard_ns": None, "last_heard_mono_ns": None, "last_seq": None,
             "healthy": False}
    assert st["peers"]["r2"]["links"] == {"private": {**never, "degraded": True}, "public": {**never, "degraded": False}}


def test_the_supervisors_hello_in_the_segment_before_the_run_is_found(tmp_path, monkeypatch, host):
    """The supervisor says hello just before the run's config.loaded; when a segment ends between
    them, the walk back reads one segment more for it (a running router showed as stopped: its
    pid unknown). One record a segment here (a segment of 50 bytes is full after any record)."""
    evs = [
        ("router", "bus.client_joined", {"client": "router", "subscriptions": [], "pid": 4242}),
        ("router", "config.loaded", _payload(TOML, False)),
        ("pulse", "pulse.heartbeat_received", _hb("r2", "public", 3, role="ACTIVE")),
    ]
    log = EventLog(str(tmp_path / "log"), durability=Durability("none"), segment_bytes=50)
    for i, (src, t, p) in enumerate(evs, 1):
        log.append(i, encode(Event(i, "r1", src, t, _version(t), 1_000_000_000 * i, 0, None, p)))
    log.close()
    assert len(LogReader(str(tmp_path / "log")).segments()) == 3
    monkeypatch.setattr(os.path, "exists", lambda p: p == "/proc/4242")
    st = read_status(str(tmp_path), now_mono_ns=10_000_000_000)
    assert (st["supervisor_pid"], st["running"], st["run_start_seq"]) == (4242, True, 2)
    assert st["peers"]["r2"]["role"] == "ACTIVE"  # the run's events after it are read too


def test_status_without_a_log_says_where_it_looked(tmp_path, capsys):
    import argparse

    from lvsbus.cli.router import cmd_status

    with pytest.raises(FileNotFoundError, match=f"no event log under {tmp_path / 'log'}"):
        read_status(str(tmp_path))
    assert cmd_status(argparse.Namespace(state_dir=str(tmp_path), json=False)) == 1
    assert capsys.readouterr().err == f"lvsbus status: no event log under {tmp_path / 'log'}\n"



def _variants(golden: dict) -> dict[str, dict]:
    """Golden statuses changed where no golden log goes: VIPs whose presence is unknown, a link
    never heard, failover services down, inactive, failed to start, a DRAINED scale-out router, and
    one with nothing announced."""
    fos = json.loads(json.dumps(golden["fos_service_killed/lvs1"]))
    web = fos["failover"]["web"]
    fos["failover"] = {
        "web": {**web, "health": "DOWN", "detail": "connection refused",
                "last_command": {**web["last_command"], "error": "timed out after 10 s"}},
        "ftp": {**web, "address": "10.0.0.21", "port": 21, "active": False, "running": False, "last_command": None},
        "dns": {**web, "port": 53, "last_command": {**web["last_command"], "exit_code": 3}},
    }
    unknown = json.loads(json.dumps(golden["failover_after_crash/lvs1"]))
    unknown["vips"] = [{**v, "present": None} for v in unknown["vips"]]
    unknown["role_reason"] = None
    unknown["running"] = True
    unknown["peers"]["lvs2"]["links"]["private"] = {"state": "silent", "age_s": None, "healthy": False}  # never heard
    drained = json.loads(json.dumps(golden["real_sigkill_failover/r1"]))
    drained["bgp"] = {"sessions": {"10.99.1.100": {"state": "down", "info": "Active"}}, "drained": True,
                      "announced": {"10.200.0.1": {"state": "drain", "reason": "operator_drain"}}}
    quiet = json.loads(json.dumps(drained))
    quiet["bgp"] = {"sessions": {}, "announced": {}, "drained": False}
    return {"fos_variants": fos, "vips_unknown": unknown, "bgp_drained": drained, "bgp_nothing_announced": quiet}


def _status_texts(statuses: dict[str, dict]) -> str:
    """What ``lvsbus status`` (and ``--json`` for the first) prints for each status, by name."""
    import argparse
    import contextlib
    import io

    from lvsbus.cli import router as routercli

    read = routercli.read_status
    routercli.read_status = lambda state_dir, now_mono_ns=None: statuses[state_dir]  # type: ignore[assignment]
    try:
        out = []
        for k, name in enumerate(statuses):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                assert routercli.cmd_status(argparse.Namespace(state_dir=name, json=k == 0)) == 0
            out.append(f"=== {name}\n{buf.getvalue()}")
        return "\n".join(out)
    finally:
        routercli.read_status = read  # type: ignore[assignment]


def _text_cases(directory: Path) -> dict[str, dict]:
    golden = json.loads(GOLDEN.read_text())
    start, last = _every_event_log(directory)
    every = read_status(str(directory), now_mono_ns=1_000_000_000 * last + 250_000_000)
    return {**golden, **_variants(golden), "every_event": json.loads(json.dumps(every))}


def test_status_text_is_as_pinned(tmp_path, host):
    assert _status_texts(_text_cases(tmp_path)) == GOLDEN_TEXT.read_text()


if __name__ == "__main__":  # rewrite tests/fixtures/status.json and status_text.txt (a deliberate change)
    from lvsbus.host import netutil

    netutil.local_addresses = lambda: set(LOCAL)  # type: ignore[assignment]
    _exists = os.path.exists
    os.path.exists = lambda p: False if str(p).startswith("/proc/") else _exists(p)  # type: ignore[assignment]
    GOLDEN.write_text(json.dumps(_golden_status(), indent=1, sort_keys=True) + "\n")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        GOLDEN_TEXT.write_text(_status_texts(_text_cases(Path(tmp))))
