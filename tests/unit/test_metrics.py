"""metrics: the fold over recorded events, and the endpoint of a real router pair."""
import re

import pytest
from lvsbus_services.metrics.fold import Metrics, render

from lvsbus.wire.events import Event


def ev(seq, type_, payload):
    return Event(seq, "r1", "x", type_, 1, seq, seq, None, payload)


def test_fold_counts_what_the_bus_recorded():
    m = Metrics()
    m.apply(ev(1, "router.role_changed", {"node": "r1", "old": "BACKUP", "new": "ACTIVE", "reason": "peer_dead",
                                          "priority": 100, "epoch": 1, "peer": None}))
    m.apply(ev(2, "pulse.heartbeat_received", {"link": "public"}))
    m.apply(ev(3, "pulse.heartbeat_received", {"link": "private"}))
    m.apply(ev(4, "health.check_results", {"ok": [True, False, True], "latency_us": [300, 2_000_000, 9_000_000]}))
    m.apply(ev(5, "health.real_server_down", {"virtual": "web", "server": "s2"}))
    m.apply(ev(6, "health.real_server_up", {"virtual": "web", "server": "s1"}))
    m.apply(ev(7, "bus.frame_rejected", {"reason": "malformed"}))
    m.apply(ev(8, "ipvs.op_failed", {"errno": 17}))
    text = render(m.samples())
    assert 'lvsbus_role{role="ACTIVE"} 1.0' in text and 'lvsbus_role{role="BACKUP"} 0.0' in text
    assert "lvsbus_became_active_total 1.0" in text
    assert 'lvsbus_heartbeats_received_total{link="private"} 1.0' in text
    assert 'lvsbus_checks_total{result="failed"} 1.0' in text and 'lvsbus_checks_total{result="ok"} 2.0' in text
    assert 'lvsbus_check_latency_seconds_bucket{le="0.0005"} 1.0' in text
    assert 'lvsbus_check_latency_seconds_bucket{le="2.5"} 2.0' in text
    assert 'lvsbus_check_latency_seconds_bucket{le="+Inf"} 3.0' in text
    assert 'lvsbus_real_servers{state="down"} 1.0' in text and 'lvsbus_real_servers{state="up"} 1.0' in text
    assert 'lvsbus_rejected_total{reason="malformed",where="bus"} 1.0' in text
    assert 'lvsbus_ipvs_operation_failures_total{errno="17"} 1.0' in text
    assert text.count("# TYPE lvsbus_check_latency_seconds histogram") == 1


def test_fold_log_stats_into_append_and_commit_histograms():
    from lvsbus_services.metrics.fold import LOG_BUCKETS

    from lvsbus.bus import LOG_BOUNDS_NS

    assert [b / 1e9 for b in LOG_BOUNDS_NS] == list(LOG_BUCKETS)  # bucket to bucket
    n = len(LOG_BOUNDS_NS) + 1
    a = [0] * n
    a[0], a[1], a[-1] = 3, 1, 1  # <= 10 us, <= 25 us, above 2.5 s
    c = [0] * n
    c[6] = 5  # <= 1 ms
    base = {"period_ms": 10_000, "durability": "group", "bounds_ns": list(LOG_BOUNDS_NS)}
    m = Metrics()
    m.apply(ev(1, "bus.log_stats", {**base, "records": 900, "append_count": 5, "append_sum_ns": 3_000_050_000,
                                    "append_max_ns": 3_000_000_000, "append_buckets": a, "commit_count": 5,
                                    "commit_sum_ns": 4_000_000, "commit_max_ns": 900_000, "commit_buckets": c}))
    # another broker with other bounds (a future version of the broker): each count lands in the first
    # bucket of ours at least as large as its own
    m.apply(ev(2, "bus.log_stats", {**base, "records": 10, "bounds_ns": [20_000, 3_000_000], "append_count": 2,
                                    "append_sum_ns": 40_000, "append_max_ns": 30_000, "append_buckets": [1, 1, 0],
                                    "commit_count": 0, "commit_sum_ns": 0, "commit_max_ns": 0, "commit_buckets": [0, 0, 0]}))
    text = render(m.samples())
    assert 'lvsbus_log_append_seconds_bucket{le="1e-05"} 3.0' in text
    assert 'lvsbus_log_append_seconds_bucket{le="2.5e-05"} 5.0' in text  # + the 25 us one + the other's 20 us one
    assert 'lvsbus_log_append_seconds_bucket{le="0.005"} 6.0' in text  # the other's 3 ms one
    assert 'lvsbus_log_append_seconds_bucket{le="2.5"} 6.0' in text
    assert 'lvsbus_log_append_seconds_bucket{le="+Inf"} 7.0' in text and "lvsbus_log_append_seconds_count 7.0" in text
    assert float(re.search(r"lvsbus_log_append_seconds_sum (\S+)", text).group(1)) == pytest.approx(3.00009)
    assert 'lvsbus_log_commit_seconds_bucket{le="0.0005"} 0.0' in text and 'lvsbus_log_commit_seconds_bucket{le="0.001"} 5.0' in text
    assert "lvsbus_log_commit_seconds_count 5.0" in text
    assert float(re.search(r"lvsbus_log_commit_seconds_sum (\S+)", text).group(1)) == pytest.approx(0.004)
    assert "lvsbus_log_records_total 910.0" in text
    assert text.count("# TYPE lvsbus_log_append_seconds histogram") == 1


def test_fold_bgp_sessions_and_announcements():
    m = Metrics()
    evs = [
        ("bgp.session_changed", {"peer": "10.99.1.100", "state": "up", "info": "up Established"}),
        ("bgp.vip_changed", {"address": "10.200.0.1", "prefixlen": 32, "old": "withdraw", "new": "announce",
                             "reason": "serving", "virtuals": ["web"]}),
        ("bgp.vip_changed", {"address": "10.200.0.2", "prefixlen": 32, "old": "withdraw", "new": "announce",
                             "reason": "serving", "virtuals": ["dns"]}),
        ("bgp.vip_changed", {"address": "10.200.0.2", "prefixlen": 32, "old": "announce", "new": "withdraw",
                             "reason": "quorum_lost", "virtuals": ["dns"]}),
        ("bgp.vip_changed", {"address": "10.200.0.1", "prefixlen": 32, "old": "announce", "new": "drain",
                             "reason": "operator_drain", "virtuals": ["web"]}),
        ("bgp.session_changed", {"peer": "10.99.1.100", "state": "down", "info": "the speaker died"}),
    ]
    for i, (t, p) in enumerate(evs, 1):
        m.apply(Event(i, "r1", "bgp", t, 1, i, i, None, p))
    text = render(m.samples())
    assert 'lvsbus_bgp_session_up{peer="10.99.1.100"} 0.0' in text
    assert 'lvsbus_bgp_session_changes_total{peer="10.99.1.100",state="down"} 1.0' in text
    assert 'lvsbus_bgp_vip_announced{vip="10.200.0.1"} 1.0' in text
    assert 'lvsbus_bgp_vip_draining{vip="10.200.0.1"} 1.0' in text
    assert 'lvsbus_bgp_vip_announced{vip="10.200.0.2"} 0.0' in text
    assert 'lvsbus_bgp_vip_changes_total{reason="quorum_lost",state="withdraw"} 1.0' in text


def test_fold_tracking_priority_and_items():
    m = Metrics()
    assert "lvsbus_priority" not in render(m.samples())  # nothing tracked: no gauge
    m.apply(ev(1, "pulse.priority_changed", {"old": 200, "new": 80, "base": 200, "fault": None, "items": [
        {"track": "uplink", "failed": True, "effect": -120}, {"track": "gw", "failed": False, "effect": 0}]}))
    text = render(m.samples())
    assert "lvsbus_priority 80.0" in text
    assert 'lvsbus_track_failed{track="uplink"} 1.0' in text and 'lvsbus_track_failed{track="gw"} 0.0' in text
    assert 'lvsbus_track_effect{track="uplink"} -120.0' in text
