"""Chaos under test: a bounded, seeded run of bench/chaos.py's faults, and the full disk.

tests/helpers/chaos.py has the setup, the faults and the documented windows. The run here is short
(25 s of faults, seed fixed, every kind of fault in the mix) so CI can afford it; bench/chaos.py
runs the same for minutes.
"""
from __future__ import annotations

import pytest

from tests.helpers.chaos import chaos, disk_full

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def test_chaos_run_has_no_false_failover_and_replays_identically(netns, tmp_path):  # noqa: F811  (the fixture)
    topo = netns(routers=2, servers=2)
    r = chaos(topo, tmp_path, seed=7, duration=25.0, interval=2.0,
              mix={"service": 6, "broker": 2, "router": 1, "link": 1, "flap": 1, "reload": 2})
    faults = [f"{f['at_s']}s {f['kind']} {f['router']} {f['what']}" for f in r["faults"]]
    assert r["faults_injected"] >= 6, faults
    assert r["false_failovers"] == 0, (r.get("false_failover_after"), faults)
    assert r["requests_failed_outside_windows"] == 0, (r["requests_failed"], faults)
    assert r["requests_sent"] > 100
    assert r["missed_failovers"] == 0, faults
    assert r["two_holder_ms_outside_windows"] == 0, faults
    if r["faults_reload"]:
        assert max(r[f"reloads_applied_{x}"] for x in topo.routers) >= 1, r
    if r["faults_flap"]:
        assert max(r[f"real_server_downs_seen_{x}"] for x in topo.routers) >= 1, r
    for router in topo.routers:
        assert r[f"reloads_refused_{router}"] == 0, r
        assert r[f"log_check_{router}"] == "ok", r.get(f"log_check_{router}_report")
        assert r[f"replay_verify_{router}"] == "identical", (r.get(f"replay_divergence_{router}"),
                                                             r.get(f"replay_divergence_{router}_after"))


def test_full_disk_keeps_the_role_and_writes_the_backlog_when_space_returns(netns, tmp_path):  # noqa: F811  (the fixture)
    """r1's log directory is an 8 MiB tmpfs; filled under a running pair, then freed: r1 stays
    ACTIVE with the VIP (r2 hears it ACTIVE, no role change anywhere), its broker reports
    log_write_failed at once and log_write_recovered once space returns, and the backlog is in
    the log (log.write_failed and log.write_recovered recorded, log check ok, replay identical)."""
    topo = netns(routers=2)
    r = disk_full(topo, tmp_path, hold_s=4.0)
    assert r["write_failed_reported"], r
    assert r["r1_role_while_full"] == "ACTIVE" and r["r1_holds_vip_while_full"], r
    assert r["r2_heard_r1_active_while_full"], r
    assert r["write_recovered_reported"], r
    assert r["role_changes_since_fill"] == 0 and r["r1_role_at_end"] == "ACTIVE", r
    assert r["backlog_records"] and r["backlog_records"] > 0, r
    assert r["recorded_write_failed"] == 1 and r["recorded_write_recovered"] == 1, r
    assert r["log_check_r1"] == "ok", r.get("log_check_r1_report")
    assert r["replay_verify_r1"] == "identical", r.get("replay_divergence_r1")
    assert r["ok"]


def test_slow_disk_keeps_the_role_and_reports_the_commit_latency(netns, tmp_path):  # noqa: F811  (the fixture)
    """r1's log on ext4 on a loop device, r1's processes in a blkio cgroup throttled to 2 writes/s
    for 12 s (each fsync of the log takes ~1 s): r1 stays ACTIVE with the VIP, r2 hears it
    ACTIVE throughout, no role changes anywhere; the broker's bus.log_stats shows the slow commits
    (over 300 ms); log check ok and replay identical afterwards."""
    from pathlib import Path

    if not Path("/sys/fs/cgroup/blkio/blkio.throttle.write_iops_device").exists():
        pytest.skip("no cgroup v1 blkio controller")
    if not Path("/dev/loop-control").exists():
        pytest.skip("no loop devices")
    from tests.helpers.chaos import slow_disk

    topo = netns(routers=2)
    r = slow_disk(topo, tmp_path, iops=2, hold_s=12.0)
    assert r["r1_role_while_slow"] == "ACTIVE" and r["r1_holds_vip_while_slow"], r
    assert r["r2_heard_r1_active_while_slow"], r
    assert r["role_changes_since_slow"] == 0 and r["r1_role_at_end"] == "ACTIVE", r
    assert r["log_stats_while_slow"] >= 1 and r["commit_max_ms_while_slow"] > 300, r
    assert r["log_check_r1"] == "ok", r.get("log_check_r1_report")
    assert r["replay_verify_r1"] == "identical", r.get("replay_divergence_r1")
