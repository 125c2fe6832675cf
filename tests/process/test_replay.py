"""tools/replay.py and tools/timeline.py: verify, divergences, golden incidents, old logs,
timelines (text, JSON, HTML), what-if, filters, retention, compiled payload checks."""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import msgpack
import pytest

from lvsbus.cli import main as cli
from lvsbus.config import render_toml
from lvsbus.runtime.core import run_core
from lvsbus.wire.events import REGISTRY, DecodeError, Event, decode, encode
from lvsbus.log import Durability, EventLog, LogReader
from lvsbus.runtime.snapshot import SnapshotStore, encode_state
from lvsbus.wire.schema import compile_check
from lvsbus_tools.replay import make_cores, verify, what_if
from lvsbus_tools.simulate import GOLDEN, S, Cluster, Fault, make_config
from lvsbus_tools.timeline import Filters, read_events, render_html, render_text, timeline

from tests.helpers.event_log import GOLDEN_DIR, golden_logs
from tests.helpers.event_log import Quiet as _Quiet


def records(log: str) -> list[tuple[int, bytes]]:
    return list(LogReader(log).read())


def write_log(path, recs, first_seq: int = 1) -> str:
    log = EventLog(str(path), durability=Durability("none"), logger=_Quiet(), first_seq=first_seq)
    log.append_batch(recs)
    log.close()
    return str(path)


def rewrite(src: str, dest, change) -> str:
    """A copy of ``src`` where ``change(raw envelope list)`` may edit records (returns True when it did)."""
    out = []
    done = 0
    for seq, body in records(src):
        raw = msgpack.unpackb(body, raw=False)
        if change(raw):
            done += 1
            body = msgpack.packb(raw, use_bin_type=True)
        out.append((seq, body))
    assert done
    return write_log(dest, out)


def first(log: str, type_: str, **match) -> Event:
    return next(e for e in read_events(log) if e.type == type_ and all(e.payload.get(k) == v for k, v in match.items()))


# ---------------------------------------------------------------------------------------------
# verify


INCIDENTS = sorted(d.name for d in GOLDEN_DIR.iterdir() if d.is_dir())


def test_every_simulated_golden_scenario_is_committed():
    assert set(GOLDEN) <= set(INCIDENTS)
    assert {"real_sigkill_failover", "real_partition_heals", "real_pulse_restart", "real_flapping_server"} <= set(INCIDENTS)


@pytest.mark.parametrize("name", INCIDENTS)
def test_golden_logs_replay_identically(name):
    for log in golden_logs(name):
        rep = verify(log)
        assert rep.ok, rep.format()
        assert rep.outputs > 10 and rep.inputs > 20 and rep.events == rep.last_seq


@pytest.mark.parametrize("name", INCIDENTS)
def test_golden_timelines(name):
    text = render_text(timeline(golden_logs(name)))
    expected = GOLDEN_DIR / name / "timeline.txt"
    if os.environ.get("LVSBUS_UPDATE_GOLDEN"):
        expected.write_text(text)
    assert text == expected.read_text(), f"timeline of {name} changed: LVSBUS_UPDATE_GOLDEN=1 to accept (docs/replay.md)"


def test_the_golden_incidents_show_what_they_are_about():
    crash = render_text(timeline(golden_logs("failover_after_crash")))
    assert re.search(r"lvs2 .* BACKUP -> ACTIVE \(peer_dead, peer lvs1\)", crash)
    assert re.search(r"lvs2 .* fence lvs1 \(peer_dead\)", crash)
    assert re.search(r"lvs1 .* broker started \(resumed after seq \d+\); nothing logged for 6.0\d+s before: "
                     r"the router was down", crash)
    part = render_text(timeline(golden_logs("partition_heals")))
    assert "split brain: lvs1 stays active, lvs2 steps down" in part
    flap = render_text(timeline(golden_logs("real_server_flap")))
    assert "real server web/rs3 DOWN (first_check_failed" in flap or "real server web/rs3 DOWN (checks_failed" in flap
    assert re.search(r"del_dest tcp:10.0.0.100:80 192.168.100.12:80", flap)
    assert "real server web/rs2 UP -> FALLING (check_failing)" in flap
    # the same incidents from real runs (two lvsbus router processes in network namespaces)
    kill = render_text(timeline(golden_logs("real_sigkill_failover")))
    assert re.search(r"r2 .* BACKUP -> ACTIVE \(peer_dead, peer r1\)", kill) and re.search(r"r2 .* fence r1", kill)
    real_part = render_text(timeline(golden_logs("real_partition_heals")))
    assert re.search(r"r2 .* ACTIVE -> BACKUP \(split_brain, peer r1\)", real_part)
    restart = render_text(timeline(golden_logs("real_pulse_restart")))
    assert re.search(r"r1 .* pulse restarted \(attempt 1: killed by SIGKILL\)", restart)
    assert re.search(r"r2 .* peer r1 restarted \(epoch", restart)


def test_an_old_log_with_version_1_events_replays():
    log = golden_logs("old_client_joined_v1")[0]
    olds = [(s, b) for s, b in records(log) if msgpack.unpackb(b, raw=False)[4] == "bus.client_joined"]
    assert olds and all(msgpack.unpackb(b, raw=False)[5] == 1 for _, b in olds)  # stored as written: v1
    assert REGISTRY.latest("bus.client_joined").version == 2
    ev = decode(*reversed(olds[1]))
    assert ev.version == 2 and isinstance(ev.payload["subscriptions"], list) and "config.loaded" in ev.payload["subscriptions"]
    rep = verify(log)
    assert rep.ok, rep.format()
    assert "pulse joined the bus (7 subscriptions: config.loaded" in (GOLDEN_DIR / "old_client_joined_v1" / "timeline.txt").read_text()


def test_a_changed_decision_is_the_first_divergence(tmp_path, capsys):
    src = golden_logs("failover_after_crash")[1]  # lvs2
    take = first(src, "pulse.take_vips")

    def change(raw):
        if raw[1] == take.seq:
            raw[9]["reason"] = "preempt"
            return True
        return False

    bad = rewrite(src, tmp_path / "log", change)
    rep = verify(bad)
    assert not rep.ok
    d = rep.divergences[0]
    assert (d.seq, d.type, d.core) == (take.seq, "pulse.take_vips", "pulse")
    assert d.expected["payload"]["reason"] == "peer_dead" and d.got["payload"]["reason"] == "preempt"
    assert cli(["replay", bad, "--verify"]) == 1
    out = capsys.readouterr().out
    assert f"DIVERGES at seq {take.seq} pulse.take_vips (pulse)" in out and "expected:" in out and "got:" in out
    assert cli(["replay", bad, "--verify", "--json"]) == 1
    js = json.loads(capsys.readouterr().out)
    assert js[0]["ok"] is False and js[0]["divergences"][0]["seq"] == take.seq


def test_a_missing_output_is_a_divergence(tmp_path):
    src = golden_logs("failover_after_crash")[1]
    fence = first(src, "pulse.send_fence")

    def change(raw):  # the fence never made it into the log: something else is there
        if raw[1] == fence.seq:
            raw[3:10] = ["ops", "bus.probe", 1, raw[6], raw[7], None, {"sent_ns": 0, "n": 1, "pad": ""}]
            return True
        return False

    rep = verify(rewrite(src, tmp_path / "log", change))
    d = rep.divergences[0]
    assert d.expected["type"] == "pulse.send_fence" and d.expected["cause"] == fence.cause
    assert d.seq > fence.seq  # found at the next output of pulse, which is not the fence


def test_a_lost_heartbeat_record_is_not_a_divergence(tmp_path):
    """Core.unheld: a heartbeat runs before its record is durable, so a crash can lose the record
    of one that was sent; replay counts it (unheld_missing) when a later output of pulse comes."""
    src = golden_logs("partition_heals")[0]
    hbs = [e for e in read_events(src) if e.type == "pulse.send_heartbeat"]
    hb = hbs[len(hbs) // 2]
    assert [e.seq for e in read_events(src) if e.cause == hb.cause] == [hb.seq]  # a step of heartbeats only

    def change(raw):  # the heartbeat's record was lost: something else has its seq
        if raw[1] == hb.seq:
            raw[3:10] = ["ops", "bus.probe", 1, raw[6], raw[7], None, {"sent_ns": 0, "n": 1, "pad": ""}]
            return True
        return False

    rep = verify(rewrite(src, tmp_path / "log", change))
    assert rep.ok, rep.format()
    assert rep.unheld_missing == 1
    assert verify(src).unheld_missing == 0  # (a lost fence still is: test_a_missing_output_is_a_divergence)


def test_an_output_no_input_explains_is_a_divergence(tmp_path):
    src = golden_logs("partition_heals")[0]
    probe_at = next(e for e in read_events(src) if e.type == "bus.client_joined" and e.payload["client"] == "nanny")

    def change(raw):
        if raw[1] == probe_at.seq:
            raw[3:10] = ["pulse", "pulse.start_lvsd", 1, raw[6], raw[7], 1, {"reason": "no_active"}]
            return True
        return False

    rep = verify(rewrite(src, tmp_path / "log", change))
    d = rep.divergences[0]
    assert d.seq == probe_at.seq and d.type == "pulse.start_lvsd" and "does not compute" in d.reason


@pytest.mark.parametrize("strict", [False, True], ids=["trusted", "strict"])
def test_an_invalid_record_is_reported_where_it_is_not_replayed(tmp_path, strict):
    src = golden_logs("partition_heals")[0]
    hb = first(src, "pulse.heartbeat_received")

    def change(raw):
        if raw[1] == hb.seq:
            raw[9]["priority"] = "high"
            return True
        return False

    rep = verify(rewrite(src, tmp_path / "log", change), strict=strict)
    d = rep.divergences[0]
    assert d.seq == hb.seq and "undecodable record" in d.reason and "priority" in d.reason
    # without --strict the payload is trusted: the divergence its effects cause is verified again
    # with --strict up to there, which names the record itself
    assert any("again" in n for n in rep.notes) == (not strict)


def test_a_record_a_core_raises_on_is_a_divergence_not_a_crash(tmp_path):
    src = golden_logs("partition_heals")[0]
    hb = first(src, "pulse.heartbeat_received")

    def change(raw):
        if raw[1] == hb.seq:
            del raw[9]["link"]  # pulse's core reads it first thing
            return True
        return False

    log = rewrite(src, tmp_path / "log", change)
    rep = verify(log)
    d = rep.divergences[0]
    assert d.seq == hb.seq and "link" in d.reason, rep.format()
    # the core itself raising (here: unvalidated, the trusted path) is reported as such
    from lvsbus_tools.replay import _Verifier, make_cores

    raw = _Verifier(log, make_cores(), False, None).run()
    d = raw.divergences[0]
    assert d.seq == hb.seq and d.core == "pulse" and "breaks its schema" in d.reason and "raised" in d.reason


def test_a_service_restart_mid_run_replays(tmp_path):
    faults = [Fault(8 * S, "service_crash", "lvs1/pulse", 2 * S), Fault(11 * S, "service_crash", "lvs1/nanny", 1 * S)]
    res = Cluster(8, faults=faults, log_root=str(tmp_path)).run()
    assert res.ok, res.summary()
    rep = verify(res.logs["lvs1"])
    assert rep.ok and rep.runs == 1, rep.format()
    assert any(e.type == "router.service_restarted" for e in read_events(res.logs["lvs1"]))


def test_retention_cut_log_is_checked_from_the_next_run_start_or_from_snapshots(tmp_path):
    src = golden_logs("failover_after_crash")[0]  # lvs1: two runs (it crashed and booted again)
    recs = records(src)
    starts = [e.seq for e in read_events(src) if e.type == "config.loaded"]
    assert len(starts) == 2
    cut = 20
    log = write_log(tmp_path / "cut", recs[cut - 1:], first_seq=cut)
    rep = verify(log)
    assert rep.ok and rep.runs == 1 and "retention" in rep.notes[0], rep.format()
    # with snapshots taken at seq cut-1 (as the runtime saves them), from the cut on
    store = SnapshotStore(str(tmp_path / "snaps"))
    evs = [e for e in read_events(src) if e.seq < cut]
    for core in make_cores():
        state = core.initial()
        for state, _step in run_core(core, state, evs):
            pass
        store.save(core.name, cut - 1, encode_state(core, state))
    rep = verify(log, snapshots=str(tmp_path / "snaps"))
    assert rep.ok and rep.runs == 1 and any("restored from its snapshot" in n for n in rep.notes), rep.format()
    assert rep.outputs > verify(log).outputs  # the first run's tail is checked too
    # a corrupt snapshot is said and not used (no traceback): that core starts from initial()
    snap = tmp_path / "snaps" / "pulse" / f"{cut - 1:020d}.snap"
    data = bytearray(snap.read_bytes())
    data[-1] ^= 0xFF
    snap.write_bytes(bytes(data))
    rep = verify(log, snapshots=str(tmp_path / "snaps"))
    assert any("pulse" in n and "crc mismatch" in n for n in rep.notes), rep.format()
    assert any("no usable snapshot of pulse" in n for n in rep.notes), rep.format()


def test_continuous_state_across_runs_is_not_what_the_router_does():
    log = golden_logs("failover_after_crash")[0]
    assert verify(log).ok
    assert not verify(log, continuous=True).ok  # the runtime starts every core again at the run start


# ---------------------------------------------------------------------------------------------
# compiled payload checks: never more lenient than the catalog's


def _mutations(payload: dict, rng: random.Random):
    pool = [None, -1, 0, 1, 2**70, -(2**70), "", "x", "a" * 5000, True, False, 1.5, float("nan"), [], [1], {},
            {"x": 1}, b"b", ["x"] * 3, [{"address": "1.2.3.4"}]]
    keys = list(payload)
    for k in keys:
        for v in pool:
            yield {**payload, k: v}
        yield {kk: vv for kk, vv in payload.items() if kk != k}
        inner = payload[k]
        if isinstance(inner, list) and inner:
            for v in pool:
                yield {**payload, k: [v] + inner[1:]}
            if isinstance(inner[0], dict):
                for ik in inner[0]:
                    for v in rng.sample(pool, 6):
                        yield {**payload, k: [{**inner[0], ik: v}] + inner[1:]}
    yield {**payload, "extra": 1}
    yield []


def test_compiled_checks_agree_with_the_catalog():
    samples: dict[tuple[str, int], dict] = {}
    for name in GOLDEN:
        for log in golden_logs(name):
            for seq, body in records(log):
                raw = msgpack.unpackb(body, raw=False)
                samples.setdefault((raw[4], raw[5]), raw[9])
    assert len(samples) > 30
    rng = random.Random(5)
    checked = 0
    for (type_, version), payload in sorted(samples.items()):
        spec = REGISTRY.get(type_, version)
        fast = compile_check(spec.payload)
        assert fast(payload), (type_, version)  # real payloads take the fast path
        for p in _mutations(payload, rng):
            try:
                REGISTRY.validate(type_, version, p)
                ok = True
            except DecodeError:
                ok = False
            if fast(p):
                assert ok, (type_, p)  # never accepts what the catalog refuses
            checked += 1
    assert checked > 2000


def test_decode_records_decodes_like_the_careful_path_and_refuses_the_same():
    """decode_records' inline path against _decode_one (field by field) on every golden record, in
    both modes; and the records each refuses."""
    from lvsbus.wire.events import _decode_one, decode_records

    n = 0
    for name in INCIDENTS:
        for log in golden_logs(name):
            recs = records(log)
            for validate in (True, False):
                evs, bad = decode_records(recs, validate=validate)
                assert bad is None and len(evs) == len(recs)
                assert evs == [_decode_one(body, seq, REGISTRY, True, validate) for seq, body in recs]
            n += len(recs)
    assert n > 2000
    seq, body = records(golden_logs("real_server_flap")[0])[5]
    raw = msgpack.unpackb(body, raw=False)
    bad_payload = raw[:9] + [{"nonsense": 1}]
    for rec, reason in (((seq, msgpack.packb(bad_payload)), "bad_payload"), ((seq, b"\xc1"), "malformed"),
                        ((seq + 1, body), "seq_mismatch"), ((seq, msgpack.packb(raw[:9])), "malformed")):
        evs, bad = decode_records([(seq - 1, records(golden_logs("real_server_flap")[0])[4][1]), rec])
        assert len(evs) == 1 and bad[0] == rec[0] and bad[1].reason == reason, (reason, bad)
        with pytest.raises(DecodeError) as exc:
            decode(rec[1], rec[0])
        assert exc.value.reason == reason
    # trusted: a payload of the wrong shape passes (the broker validated it), a non-dict does not
    evs, bad = decode_records([(seq, msgpack.packb(bad_payload))], validate=False)
    assert bad is None and evs[0].payload == {"nonsense": 1}
    evs, bad = decode_records([(seq, msgpack.packb(raw[:9] + [[1]]))], validate=False)
    assert bad is not None and bad[1].reason == "bad_payload"


# ---------------------------------------------------------------------------------------------
# timeline


def test_timeline_merges_routers_by_wall_clock_with_their_own_seqs():
    rows = timeline(golden_logs("failover_after_crash"))
    assert [r.wall_ns for r in rows] == sorted(r.wall_ns for r in rows)
    assert {r.node for r in rows} == {"lvs1", "lvs2"}
    for node in ("lvs1", "lvs2"):
        seqs = [r.seq for r in rows if r.node == node]
        assert seqs == sorted(seqs)
    cats = {r.category for r in rows}
    assert {"role", "heartbeat", "fence", "vip", "health", "ipvs", "router"} <= cats
    assert not any(r.type in ("pulse.send_heartbeat", "pulse.heartbeat_received", "timer.fired",
                              "health.check_results") for r in rows)


def test_timeline_html_is_self_contained(tmp_path, capsys):
    logs = golden_logs("failover_after_crash")
    page = tmp_path / "incident.html"
    assert cli(["replay", *logs, "--timeline", "--html", str(page)]) == 0
    assert "BACKUP -> ACTIVE" in capsys.readouterr().out
    html = page.read_text()
    low = html.lower()
    assert "<script" not in low and "src=" not in low and "@import" not in low and "url(" not in low
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html)  # the SVG namespace is a name, not a fetch
    svg = ET.fromstring(html[html.index("<svg"):html.index("</svg>") + 6])
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "lvs1" in texts and "lvs2" in texts and "ACTIVE" in texts and "DOWN" in texts  # lvs1's crash
    titles = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}title")]
    assert any("fence lvs1" in (t or "") for t in titles)
    assert "<table>" in html and "take VIPs 10.0.0.100" in html


def test_timeline_json_and_filters(capsys):
    logs = golden_logs("failover_after_crash")
    assert cli(["replay", *logs, "--timeline", "--json", "--type", "router.role_changed"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["type"] == "router.role_changed" for r in rows)
    assert {"wall_ns", "time", "node", "seq", "category", "text", "payload"} <= set(rows[0])
    assert cli(["replay", logs[1], "--json", "--from-seq", "10", "--to-seq", "30", "--service", "pulse"]) == 0
    evs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert evs and all(10 <= e["seq"] <= 30 and e["source"] == "pulse" for e in evs)
    t0 = rows[0]["wall_ns"]
    kept = list(read_events(logs[0], Filters(since_ns=t0 + 5 * S, until_ns=t0 + 12 * S)))
    assert kept and all(t0 + 5 * S <= e.wall_ns <= t0 + 12 * S for e in kept)


def test_render_text_empty():
    assert render_text([]) == "(no incident events)\n"
    assert "<svg" in render_html([])


# ---------------------------------------------------------------------------------------------
# what-if


def test_what_if_longer_deadtime_means_no_failover(tmp_path, capsys):
    cfg = tmp_path / "lvs.toml"
    cfg.write_text(render_toml(make_config(deadtime=10.0)))
    lvs2 = golden_logs("failover_after_crash")[1]
    rep = what_if(lvs2, str(cfg))
    gone = [c for c in rep.changes if c["change"] == "removed"]
    assert any(c["before"].type == "router.role_changed" and "peer_dead" in c["before"].text for c in gone), rep.format()
    assert any(c["before"].type == "pulse.send_fence" for c in gone)
    assert cli(["replay", lvs2, "--what-if", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "BACKUP -> ACTIVE (peer_dead, peer lvs1)   (would not happen)" in out


def _as_recorded_v1(cfg):
    """The golden simulated logs carry config.loaded v1: no initial_rise, and their cores asked
    rise passes of a server with no history too (the v1 -> v2 upcaster says so: initial_rise = rise)."""
    from dataclasses import replace

    vs = cfg.virtual_services[0]
    return replace(cfg, virtual_services=(replace(vs, check=replace(vs.check, initial_rise=vs.check.rise)),))


def test_what_if_same_config_changes_nothing(tmp_path):
    cfg = tmp_path / "lvs.toml"
    cfg.write_text(render_toml(_as_recorded_v1(make_config())))
    rep = what_if(golden_logs("real_server_flap")[0], str(cfg))
    assert rep.changes == [] and len(rep.baseline) > 10


def test_what_if_todays_default_brings_fresh_servers_in_after_one_pass(tmp_path):
    """The v1 log under today's model default (initial_rise 1): every server enters at its first
    passed check instead of its second; the server that failed later still needs rise."""
    cfg = tmp_path / "lvs.toml"
    cfg.write_text(render_toml(make_config()))
    rep = what_if(golden_logs("real_server_flap")[0], str(cfg))
    gone = [c["before"].text for c in rep.changes if c["change"] == "removed"]
    assert any("INIT -> RISING" in t for t in gone), rep.format()
    assert all(c["after"].mono_ns < c["before"].mono_ns for c in rep.changes
               if c["change"] == "moved" and c["before"].type == "health.real_server_up"), rep.format()


def test_what_if_more_rise_checks_delays_real_servers(tmp_path):
    base = _as_recorded_v1(make_config())
    from dataclasses import replace

    vs = base.virtual_services[0]
    cfg = replace(base, virtual_services=(replace(vs, check=replace(vs.check, rise=4)),))
    path = tmp_path / "lvs.toml"
    path.write_text(render_toml(cfg))
    rep = what_if(golden_logs("real_server_flap")[0], str(path))
    moved = [c for c in rep.changes if c["change"] == "moved" and c["before"].type == "health.real_server_up"]
    later = [c for c in rep.changes if c["change"] in ("moved", "removed", "added") and "UP" in
             (c.get("before") or c.get("after")).text]
    assert later, rep.format()
    assert all(c["after"].mono_ns > c["before"].mono_ns for c in moved)
    js = rep.to_json()
    assert js["changes"] and {"change", "before", "after"} <= set(js["changes"][0])


def test_replay_accepts_a_state_directory(tmp_path):
    src = GOLDEN_DIR / "partition_heals" / "lvs1"
    shutil.copytree(src, tmp_path / "lvs1")
    assert verify(str(tmp_path / "lvs1")).ok


def test_log_bodies_round_trip():  # the helper used above writes what the broker writes
    for seq, body in records(golden_logs("partition_heals")[0])[:50]:
        assert encode(decode(body, seq, upcast=False)) == body


def test_a_corrupt_log_is_a_divergence_not_a_crash(tmp_path, capsys):
    src = GOLDEN_DIR / "partition_heals" / "lvs1" / "log"
    shutil.copytree(src, tmp_path / "log")
    seg = tmp_path / "log" / "00000000000000000001.seg"
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit in the middle of the segment: a CRC mismatch
    seg.write_bytes(bytes(data))
    rep = verify(str(tmp_path / "log"))
    assert not rep.ok and "cannot be read here" in rep.divergences[0].reason, rep.format()
    assert rep.events > 10  # what came before was checked
    # the reading went past the bad record, to count: one record of the log could not be read
    assert (rep.records_read, rep.records_expected) == (136, 137), rep.format()
    assert "seqs 65..65 unreadable" in rep.unreadable[0] and "136 of 137 records read" in rep.format()
    assert cli(["replay", str(tmp_path / "nowhere"), "--verify"]) == 2
    assert "nowhere: no such directory" in capsys.readouterr().err


def test_records_before_an_undecodable_one_are_checked_first(tmp_path):
    src = golden_logs("failover_after_crash")[1]
    take = first(src, "pulse.take_vips")
    hb_after = next(e for e in read_events(src) if e.type == "pulse.heartbeat_received" and e.seq > take.seq)

    def change(raw):  # two faults: a changed decision, and later a record that does not decode
        if raw[1] == take.seq:
            raw[9]["reason"] = "preempt"
            return True
        if raw[1] == hb_after.seq:
            raw[9]["priority"] = "high"
            return True
        return False

    rep = verify(rewrite(src, tmp_path / "log", change))
    assert rep.divergences[0].seq == take.seq  # the first one, though both are in one read batch


def test_cores_with_their_own_accepts_and_is_output_are_asked_each_time():
    """A core may refine ``accepts`` / ``is_output`` beyond (type, source): replay's plans then ask
    it for every event. The same pulse, its methods overridden (as a new core might), verifies the
    same log with the same counts; one that refuses the heartbeats then diverges."""
    from lvsbus_services.pulse.core import PulseCore

    class Asked(PulseCore):
        calls = 0

        def accepts(self, event):
            Asked.calls += 1
            return super().accepts(event)

        def is_output(self, event):
            return super().is_output(event)

    class Deaf(Asked):
        def accepts(self, event):
            return event.type != "pulse.heartbeat_received" and super().accepts(event)

    log = golden_logs("partition_heals")[0]
    plain = verify(log, cores=make_cores(["pulse"]))
    asked = verify(log, cores=[Asked()])
    assert plain.ok and asked.ok, asked.format()
    assert (asked.inputs, asked.outputs) == (plain.inputs, plain.outputs) and Asked.calls >= asked.events
    assert not verify(log, cores=[Deaf()]).ok


def test_python_tools_replay_py_is_lvsbus_replay(tmp_path):
    """The design's entry point runs the CLI (it used to import and exit 0 doing nothing, which
    looked like a passed verification), from any directory, installed or not."""
    import subprocess
    import sys

    script = str(Path(__file__).resolve().parents[2] / "tools" / "replay.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    log = str(GOLDEN_DIR / "real_server_flap" / "lvs1")
    r = subprocess.run([sys.executable, script, log, "--verify"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0 and "identical: every logged decision" in r.stdout, r.stderr[-2000:]
    r = subprocess.run([sys.executable, script, str(tmp_path / "missing"), "--verify"], capture_output=True, text=True,
                       cwd=tmp_path, env=env)
    assert r.returncode == 2 and "no such directory" in r.stderr
    r = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0 and r.stdout.startswith("usage: lvsbus replay")



def test_verify_of_a_live_log_counts_only_what_was_written_before_it_read(tmp_path, monkeypatch):
    """The writer's mark follows its writes; verify reads it before the records. Read after them
    (as it was), a record the live writer appended meanwhile was counted by the mark but not read:
    'only 3 of 4 records could be read' (the kernel tier's datapath test failed on it once)."""
    from lvsbus.wire.events import Event, encode
    from lvsbus.log import Durability, EventLog, LogReader
    from lvsbus_tools.replay import verify

    log = EventLog(str(tmp_path / "log"), durability=Durability("none"))

    def append(seq: int) -> None:
        log.append(seq, encode(Event(seq, "r1", "x", "timer.fired", 1, seq, seq, None,
                                     {"service": "x", "deadline_ns": seq})))
        log.note_assigned(seq)

    for seq in (1, 2, 3):
        append(seq)
    original = LogReader.read_batches

    def racing(self, *a, **kw):  # the writer appends while the verification reads
        for batch in original(self, *a, **kw):
            yield batch
        append(4)

    monkeypatch.setattr(LogReader, "read_batches", racing)
    try:
        rep = verify(str(tmp_path / "log"), cores=[])
    finally:
        log.close()
    assert rep.ok, rep.format()
    assert (rep.records_read, rep.records_expected) == (3, 3)


def test_the_other_tools_scripts_run_their_cli_or_say_they_have_none(tmp_path):
    """tools/simulate_cli.py is ``lvsbus simulate``; simulate.py, timeline.py and agreement.py are
    libraries: run as scripts they say so and fail (they exited 0 doing nothing). Also: the console's
    ``--help`` names its own module (it said lvsbus_services.web)."""
    import subprocess
    import sys

    tools = Path(__file__).resolve().parents[2] / "tools"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=tmp_path, env=env)

    r = run(str(tools / "simulate_cli.py"), "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: lvsbus simulate"), r.stderr[-2000:]
    r = run(str(tools / "simulate_cli.py"), "--seed", "1", "--routers", "9")
    assert r.returncode == 2 and "--routers" in r.stderr
    for name, says in (("timeline", "lvsbus replay LOG... --timeline"), ("agreement", "is a library"),
                       ("simulate", "its command line is: lvsbus simulate")):
        r = run(str(tools / f"{name}.py"))
        assert r.returncode == 1 and says in r.stderr, (name, r.stderr[-2000:])
    r = subprocess.run([sys.executable, "-m", "lvsbus_tools.web", "--help"], capture_output=True, text=True,
                       cwd=tools.parent)
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m lvsbus_tools.web"), r.stderr[-2000:]

# ---------------------------------------------------------------------------------------------
# issue 19: a partial read never passes as a whole one; bad logs and command lines are one line


def _golden_copy(tmp_path, name="partition_heals", router="lvs1") -> Path:
    dst = tmp_path / "log"
    shutil.copytree(GOLDEN_DIR / name / router / "log", dst)
    return dst


def _record_offsets(seg: Path) -> list[int]:
    from lvsbus.log import HEADER_SIZE, SEGMENT_HEADER_SIZE, parse_frames

    records, _ = parse_frames(seg.read_bytes(), SEGMENT_HEADER_SIZE)
    out = [SEGMENT_HEADER_SIZE]
    for _, b in records:
        out.append(out[-1] + HEADER_SIZE + len(b))
    return out


def test_verify_fails_on_a_bad_length_in_the_active_segment(tmp_path, capsys):
    d = _golden_copy(tmp_path)
    seg = d / "00000000000000000001.seg"
    offs = _record_offsets(seg)
    total = len(offs) - 1
    data = bytearray(seg.read_bytes())
    data[offs[total // 2] + 2] ^= 0x7F  # the length now runs past the end of the segment
    seg.write_bytes(bytes(data))
    rep = verify(str(d))
    assert not rep.ok, rep.format()
    assert (rep.records_read, rep.records_expected) == (total - 1, total), rep.format()
    assert cli(["replay", str(d), "--verify"]) == 1
    out = capsys.readouterr().out
    assert f"{total - 1} of {total} records read" in out and "identical" not in out


def test_verify_fails_on_a_truncated_log_whose_mark_says_more(tmp_path, capsys):
    d = _golden_copy(tmp_path)
    EventLog(str(d), durability=Durability("none")).close()  # a writer opened it: the log has its mark
    seg = d / "00000000000000000001.seg"
    offs = _record_offsets(seg)
    total = len(offs) - 1
    with open(seg, "r+b") as f:
        f.truncate(offs[total // 2] + 7)  # mid-record
    rep = verify(str(d))
    assert not rep.ok and (rep.records_read, rep.records_expected) == (total // 2, total), rep.format()
    assert "only" in rep.divergences[0].reason and "torn tail" in " ".join(rep.notes)
    assert cli(["replay", str(d), "--verify", "--json"]) == 1
    j = json.loads(capsys.readouterr().out)[0]
    assert j["ok"] is False and j["records_read"] == total // 2 and j["records_expected"] == total


def test_timeline_listing_and_dump_go_past_unreadable_records(tmp_path, capsys):
    d = _golden_copy(tmp_path)
    seg = d / "00000000000000000001.seg"
    offs = _record_offsets(seg)
    data = bytearray(seg.read_bytes())
    for k in (10, len(offs) // 2):
        data[offs[k] + 20] ^= 0xFF
    seg.write_bytes(bytes(data))
    clean = render_text(timeline(golden_logs("partition_heals")[:1]))
    assert cli(["replay", str(d), "--timeline"]) == 1
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err and cap.err.count(": unreadable: corrupt record") == 2 and "seqs 11..11 unreadable" in cap.err
    assert cap.out.splitlines()[-3:] == clean.splitlines()[-3:]  # the rows after the damage are there
    assert cli(["replay", str(d)]) == 1
    cap = capsys.readouterr()
    assert len(cap.out.splitlines()) == len(offs) - 1 - 2
    assert cli(["log", "dump", str(d)]) == 1
    cap = capsys.readouterr()
    assert cap.out.count("UNREADABLE") == 2 and len(cap.out.splitlines()) == len(offs) - 1


@pytest.mark.parametrize("argv, says", [
    (["log", "check", "{tmp}/nowhere"], "nowhere: no such directory"),
    (["log", "check", "/dev/null"], "/dev/null: not a directory"),
    (["log", "dump", "{tmp}/file"], "file: not a directory"),
    (["log", "check", "{tmp}/empty"], "not an lvsbus log"),
    (["replay", "{tmp}/empty", "--verify"], "not an lvsbus log"),
    (["replay", "{tmp}/nowhere", "--timeline"], "no such directory"),
    (["replay", "{golden}", "--what-if", "{tmp}/missing.toml"], "missing.toml: no such config file"),
])
def test_bad_command_lines_are_one_line_and_fail(tmp_path, capsys, argv, says):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    golden = str(golden_logs("partition_heals")[0])
    argv = [a.format(tmp=tmp_path, golden=golden) for a in argv]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv, says", [
    (["--since", "yesterday"], "argument --since: 'yesterday' is not a time"),
    (["--until", "soon"], "argument --until: 'soon' is not a time"),
    (["--verify", "--since", "1e400"], "argument --since: '1e400' is out of range"),
    (["--verify", "--until", "nan"], "argument --until: 'nan' is out of range"),
])
def test_bad_times_are_refused_while_parsing(capsys, argv, says):
    """Checked by argparse, so also where the mode (--verify) would not use them."""
    with pytest.raises(SystemExit) as exc:
        cli(["replay", str(golden_logs("partition_heals")[0]), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage:") and says in err[-1], err


def test_a_foreign_segment_and_a_log_another_user_cannot_read(tmp_path, capsys):
    import subprocess
    import sys
    import tempfile

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "00000000000000000001.seg").write_bytes(os.urandom(3000))
    assert cli(["log", "check", str(foreign)]) == 1
    assert "not an lvsbus log segment" in capsys.readouterr().out
    assert cli(["replay", str(foreign), "--verify"]) == 1
    assert "0 of" in capsys.readouterr().out
    assert cli(["log", "dump", str(foreign)]) == 1
    # a 0700 log of another user (nobody), read by a process without the capabilities that bypass
    # file permissions (this interpreter lives under root's home, which nobody cannot read)
    top = tempfile.mkdtemp(prefix="lvsbus-perm-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        d = Path(top) / "log"
        shutil.copytree(golden_logs("partition_heals")[0], d)
        for p in [d, *d.iterdir()]:
            os.chown(p, 65534, 65534)
        os.chmod(d, 0o700)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        for argv in (["log", "check", str(d)], ["log", "dump", str(d)], ["replay", str(d), "--verify"],
                     ["replay", str(d), "--timeline"]):
            r = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all",
                                sys.executable, "-m", "lvsbus.cli", *argv],
                               capture_output=True, text=True, env=env, cwd=top)
            if r.returncode != 0 and "Operation not permitted" in r.stderr and "setpriv" in r.stderr:
                pytest.skip("setpriv cannot switch users here")
            assert r.returncode == 2 and "Permission denied" in r.stderr, (argv, r.stdout, r.stderr)
            assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    finally:
        shutil.rmtree(top, ignore_errors=True)
