"""Pure: fold bus events into the router's metrics (no I/O; the shell serves them).

Everything here is derived from recorded events, so the figures of any past moment can be
recomputed from the log, and the endpoint needs no hooks inside the services.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from prometheus_client.core import CollectorRegistry, Metric
from prometheus_client.exposition import generate_latest

from lvsbus.wire.events import Event
from lvsbus.ipvs.stats import Figures, fold as fold_ipvs_stats

#: histogram buckets of check latency, seconds (Prometheus convention: upper bounds)
CHECK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: histogram buckets of the log's append and commit latency, seconds (the broker's, bus.log_stats)
LOG_BUCKETS = (1e-05, 2.5e-05, 5e-05, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
               0.25, 0.5, 1.0, 2.5)


@dataclass
class Histogram:
    """Counts per bucket (not cumulative; the last one is above every bound) and the sum, seconds."""

    bounds: tuple
    buckets: list = field(default_factory=list)
    sum: float = 0.0

    def __post_init__(self) -> None:
        if not self.buckets:
            self.buckets = [0] * (len(self.bounds) + 1)

    def add(self, bounds_s: list, counts: list, sum_s: float) -> None:
        """Fold counts bucketed by other bounds: each count goes to the first bucket of ours whose
        bound is at least its own bucket's (the same bounds: bucket to bucket)."""
        inf = float("inf")
        for i, n in enumerate(counts):
            if n:
                upper = bounds_s[i] if i < len(bounds_s) else inf
                j = next((k for k, b in enumerate(self.bounds) if b >= upper * (1 - 1e-9)), len(self.bounds))
                self.buckets[j] += n
        self.sum += sum_s

SUBSCRIPTIONS = ("router.", "pulse.", "health.", "ipvs.", "bus.", "log.", "config.", "bgp.")


@dataclass
class Metrics:
    role: str = "INIT"
    failovers: int = 0  # times this router became ACTIVE
    role_changes: Counter = field(default_factory=Counter)  # reason -> count
    heartbeats_sent: Counter = field(default_factory=Counter)  # link -> datagrams
    heartbeats_received: Counter = field(default_factory=Counter)  # link -> datagrams
    links_degraded: Counter = field(default_factory=Counter)  # link -> times
    peers_dead: int = 0
    fences_sent: int = 0
    fences_received: int = 0
    rejected: Counter = field(default_factory=Counter)  # (where, reason) -> count
    checks: Counter = field(default_factory=Counter)  # "ok" / "failed" -> count
    check_latency_buckets: list = field(default_factory=lambda: [0] * (len(CHECK_BUCKETS) + 1))
    check_latency_sum: float = 0.0
    servers: dict = field(default_factory=dict)  # (virtual, server) -> "up" / "down"
    failover_health: dict = field(default_factory=dict)  # failover service -> nanny's state (service = fos)
    failover_cmds: Counter = field(default_factory=Counter)  # (service, action, "ok"/"failed") -> count
    group_roles: dict = field(default_factory=dict)  # failover group -> this router's role in it
    priority: int | None = None  # the effective priority, once pulse assessed tracking (pulse.priority_changed)
    tracks: dict = field(default_factory=dict)  # tracked item -> (failed, effect)
    ipvs_ops: int = 0
    ipvs_failures: Counter = field(default_factory=Counter)  # errno -> count
    ipvs_unavailable: int = 0
    ipvs_figures: Figures = field(default_factory=Figures)  # ipvs.stats folded: per service and real server
    log_write_failures: int = 0
    log_append: Histogram = field(default_factory=lambda: Histogram(LOG_BUCKETS))
    log_commit: Histogram = field(default_factory=lambda: Histogram(LOG_BUCKETS))
    log_records: int = 0
    subscriber_lags: int = 0
    last_seq: int = 0
    last_mono_ns: int = 0
    config_digest: str = ""
    bgp_sessions: dict = field(default_factory=dict)  # peer -> "up" / "down" (scale-out)
    bgp_vips: dict = field(default_factory=dict)  # VIP -> "announce" / "drain" / "withdraw" (scale-out)
    bgp_vip_changes: Counter = field(default_factory=Counter)  # (new, reason) -> count
    bgp_session_changes: Counter = field(default_factory=Counter)  # (peer, state) -> count

    def apply(self, ev: Event) -> None:
        self.last_seq, self.last_mono_ns = ev.seq, ev.mono_ns
        t, p = ev.type, ev.payload
        if t == "pulse.heartbeat_received":
            self.heartbeats_received[p["link"]] += 1
        elif t == "pulse.send_heartbeat":
            for d in p["destinations"]:
                self.heartbeats_sent[d["link"]] += 1
        elif t == "health.check_results":
            buckets = self.check_latency_buckets
            for ok, us in zip(p["ok"], p["latency_us"]):
                self.checks["ok" if ok else "failed"] += 1
                s = us / 1e6
                self.check_latency_sum += s
                for i, bound in enumerate(CHECK_BUCKETS):
                    if s <= bound:
                        buckets[i] += 1
                        break
                else:
                    buckets[-1] += 1
        elif t == "router.role_changed":
            self.group_roles[p.get("group", "default")] = p["new"]
            roles = set(self.group_roles.values())
            self.role = next((r for r in ("ACTIVE", "BACKUP", "FAULT") if r in roles), p["new"])
            self.role_changes[p["reason"]] += 1
            if p["new"] == "ACTIVE":
                self.failovers += 1
        elif t == "health.real_server_up":
            self.servers[(p["virtual"], p["server"])] = "up"
        elif t == "health.real_server_down":
            self.servers[(p["virtual"], p["server"])] = "down"
        elif t == "health.failover_changed":
            self.failover_health[p["service"]] = p["new"]
        elif t == "pulse.priority_changed":
            self.priority = p["new"]
            self.tracks = {i["track"]: (i["failed"], i["effect"]) for i in p["items"]}
        elif t == "pulse.failover_cmd_finished":
            ok = p["exit_code"] == 0 and not p["error"]
            self.failover_cmds[(p["service"], p["action"], "ok" if ok else "failed")] += 1
        elif t == "pulse.link_degraded":
            self.links_degraded[p["link"]] += 1
        elif t == "pulse.peer_dead":
            self.peers_dead += 1
        elif t == "pulse.send_fence":
            self.fences_sent += 1
        elif t == "pulse.fence_received":
            self.fences_received += 1
        elif t == "pulse.datagram_rejected":
            self.rejected[("heartbeat", p["reason"])] += 1
        elif t == "pulse.heartbeat_ignored":
            self.rejected[("heartbeat", p["reason"])] += 1
        elif t == "bus.frame_rejected":
            self.rejected[("bus", p["reason"])] += 1
        elif t == "ipvs.ops_applied":
            self.ipvs_ops += p["count"]
        elif t == "ipvs.op_applied":  # logs of shells before ipvs.ops_applied
            self.ipvs_ops += 1
        elif t == "ipvs.op_failed":
            self.ipvs_ops += 1
            self.ipvs_failures[str(p["errno"])] += 1
        elif t == "ipvs.unavailable":
            self.ipvs_unavailable += 1
        elif t == "ipvs.stats":
            fold_ipvs_stats(self.ipvs_figures, p)
        elif t == "log.write_failed":
            self.log_write_failures += 1
        elif t == "bus.log_stats":
            bounds = [b / 1e9 for b in p["bounds_ns"]]
            self.log_append.add(bounds, p["append_buckets"], p["append_sum_ns"] / 1e9)
            self.log_commit.add(bounds, p["commit_buckets"], p["commit_sum_ns"] / 1e9)
            self.log_records += p["records"]
        elif t == "bus.subscriber_lagged":
            self.subscriber_lags += 1
        elif t == "config.loaded":
            self.config_digest = p["digest"]
        elif t == "bgp.session_changed":
            self.bgp_sessions[p["peer"]] = p["state"]
            self.bgp_session_changes[(p["peer"], p["state"])] += 1
        elif t == "bgp.vip_changed":
            self.bgp_vips[p["address"]] = p["new"]
            self.bgp_vip_changes[(p["new"], p["reason"])] += 1

    def samples(self) -> list[tuple[str, str, str, dict, float]]:
        """(name, type, help, labels, value) for every sample, Prometheus-style."""
        out: list[tuple[str, str, str, dict, float]] = []

        def add(name, kind, help_, value, **labels):
            out.append((name, kind, help_, labels, float(value)))

        for role in ("INIT", "BACKUP", "ACTIVE", "FAULT", "STOPPED"):
            add("lvsbus_role", "gauge", "1 for the router's current role", 1 if self.role == role else 0, role=role)
        if self.priority is not None:
            add("lvsbus_priority", "gauge", "the priority this router elects with (tracking applied)", self.priority)
        for name, (failed, effect) in sorted(self.tracks.items()):
            add("lvsbus_track_failed", "gauge", "1 while the tracked item is failed", 1 if failed else 0, track=name)
            add("lvsbus_track_effect", "gauge", "what the tracked item adds to the priority now", effect, track=name)
        if set(self.group_roles) - {"default"}:
            for group, grole in sorted(self.group_roles.items()):
                for role in ("BACKUP", "ACTIVE", "FAULT"):
                    add("lvsbus_group_role", "gauge", "1 for the router's role in each failover group",
                        1 if grole == role else 0, group=group, role=role)
        add("lvsbus_became_active_total", "counter", "times this router took the VIPs", self.failovers)
        for reason, n in sorted(self.role_changes.items()):
            add("lvsbus_role_changes_total", "counter", "role changes by reason", n, reason=reason)
        for link, n in sorted(self.heartbeats_sent.items()):
            add("lvsbus_heartbeats_sent_total", "counter", "heartbeat datagrams sent", n, link=link)
        for link, n in sorted(self.heartbeats_received.items()):
            add("lvsbus_heartbeats_received_total", "counter", "valid heartbeat datagrams received", n, link=link)
        for link, n in sorted(self.links_degraded.items()):
            add("lvsbus_link_degraded_total", "counter", "a link went silent while another carried heartbeats", n, link=link)
        add("lvsbus_peers_dead_total", "counter", "peers declared dead (silent on every link)", self.peers_dead)
        add("lvsbus_fences_sent_total", "counter", "fence commands sent", self.fences_sent)
        add("lvsbus_fences_received_total", "counter", "valid fence commands received", self.fences_received)
        for (where, reason), n in sorted(self.rejected.items()):
            add("lvsbus_rejected_total", "counter", "frames and datagrams refused", n, where=where, reason=reason)
        for result, n in sorted(self.checks.items()):
            add("lvsbus_checks_total", "counter", "health checks finished", n, result=result)
        histogram(add, "lvsbus_check_latency_seconds", "health check latency",
                  Histogram(CHECK_BUCKETS, self.check_latency_buckets, self.check_latency_sum))
        states = Counter(self.servers.values())
        for state in ("up", "down"):
            add("lvsbus_real_servers", "gauge", "real servers by health", states.get(state, 0), state=state)
        for name, state in sorted(self.failover_health.items()):
            add("lvsbus_failover_service_up", "gauge", "1 when nanny says the failover service is UP (service = fos)",
                1 if state == "UP" else 0, service=name)
        for (name, action, result), n in sorted(self.failover_cmds.items()):
            add("lvsbus_failover_commands_total", "counter", "failover services' start_cmd/stop_cmd runs", n,
                service=name, action=action, result=result)
        add("lvsbus_ipvs_operations_total", "counter", "IPVS operations attempted", self.ipvs_ops)
        for err, n in sorted(self.ipvs_failures.items()):
            add("lvsbus_ipvs_operation_failures_total", "counter", "IPVS operations refused", n, errno=err)
        add("lvsbus_ipvs_unavailable_total", "counter", "times IPVS could not be reached", self.ipvs_unavailable)
        ipvs_traffic(add, self.ipvs_figures)
        add("lvsbus_log_write_failures_total", "counter", "log appends that failed (disk full, I/O error)", self.log_write_failures)
        histogram(add, "lvsbus_log_append_seconds", "time to append one batch of records to the event log (one write)",
                  self.log_append)
        histogram(add, "lvsbus_log_commit_seconds",
                  "time from the start of an append until it is durable (fsynced; group commit): when acks go out",
                  self.log_commit)
        add("lvsbus_log_records_total", "counter", "records appended to the event log (counted in bus.log_stats)",
            self.log_records)
        add("lvsbus_subscriber_lags_total", "counter", "subscribers that fell behind and caught up from the log", self.subscriber_lags)
        for peer, state in sorted(self.bgp_sessions.items()):
            add("lvsbus_bgp_session_up", "gauge", "1 while the BGP session to the peer is established (scale-out)",
                1 if state == "up" else 0, peer=peer)
        for (peer, state), n in sorted(self.bgp_session_changes.items()):
            add("lvsbus_bgp_session_changes_total", "counter", "BGP sessions that came up or went down", n,
                peer=peer, state=state)
        for vip, state in sorted(self.bgp_vips.items()):
            add("lvsbus_bgp_vip_announced", "gauge", "1 while this router announces the VIP by BGP (drained or not)",
                0 if state == "withdraw" else 1, vip=vip)
            add("lvsbus_bgp_vip_draining", "gauge", "1 while the VIP is announced with GRACEFUL_SHUTDOWN (a drain)",
                1 if state == "drain" else 0, vip=vip)
        for (new, reason), n in sorted(self.bgp_vip_changes.items()):
            add("lvsbus_bgp_vip_changes_total", "counter", "changes of a VIP's announcement, by new state and reason", n,
                state=new, reason=reason)
        add("lvsbus_last_seq", "gauge", "the last event seq folded", self.last_seq)
        return out


def ipvs_traffic(add, fig: Figures) -> None:
    """The kernel's IPVS figures (``ipvs.stats``), one series per service (``server=""``: the
    virtual service's own counters, which keep the traffic of real servers since removed) and per
    real server. Counters are the kernel's absolute values: ``ipvs zero`` (ipvsadm -Z) shows as a
    counter reset; rates are the kernel's per-second estimates."""
    rows = []
    for svc in sorted(fig.services):
        rows.append((svc, "", fig.services[svc]))
        dests = fig.dests.get(svc, {})
        for d in sorted(dests):
            rows.append((svc, d, dests[d]))
    for name, kind, help_, columns in _IPVS_SERIES:
        for direction, i in columns:
            labels = {} if direction is None else {"direction": direction}
            for svc, server, r in rows:
                add(name, kind, help_, r[i], service=svc, server=server, **labels)


#: the series of an ``ipvs_stats`` row (lvsbus.ipvs.stats.row's columns): name, kind, help, and
#: (direction label or None, column) per series, in the order they are written
_IPVS_SERIES = (
    ("lvsbus_ipvs_connections_total", "counter", "IPVS connections scheduled (the kernel's counter)", ((None, 0),)),
    ("lvsbus_ipvs_packets_total", "counter", "IPVS packets (the kernel's counter)", (("in", 1), ("out", 2))),
    ("lvsbus_ipvs_bytes_total", "counter", "IPVS bytes (the kernel's counter)", (("in", 3), ("out", 4))),
    ("lvsbus_ipvs_connection_rate", "gauge", "IPVS connections per second (the kernel's estimate)", ((None, 5),)),
    ("lvsbus_ipvs_packet_rate", "gauge", "IPVS packets per second (the kernel's estimate)", (("in", 6), ("out", 7))),
    ("lvsbus_ipvs_byte_rate", "gauge", "IPVS bytes per second (the kernel's estimate)", (("in", 8), ("out", 9))),
    ("lvsbus_ipvs_active_connections", "gauge", "IPVS active connections (a service's: its real servers' sum)",
     ((None, 10),)),
    ("lvsbus_ipvs_inactive_connections", "gauge", "IPVS inactive connections (a service's: its real servers' sum)",
     ((None, 11),)),
)


def histogram(add, name: str, help_: str, h: Histogram) -> None:
    """A Prometheus histogram's samples: cumulative buckets, +Inf, count, sum."""
    cum = 0
    for bound, n in zip(h.bounds, h.buckets):
        cum += n
        add(f"{name}_bucket", "histogram", help_, cum, le=repr(bound))
    cum += h.buckets[-1]
    add(f"{name}_bucket", "histogram", help_, cum, le="+Inf")
    add(f"{name}_count", "histogram", help_, cum)
    add(f"{name}_sum", "histogram", help_, h.sum)


def render(samples: list[tuple[str, str, str, dict, float]]) -> str:
    """The Prometheus text exposition format (0.0.4), written by prometheus-client from the samples
    (each family once: HELP, TYPE, then its samples; counters named ``..._total``)."""
    families: dict[str, Metric] = {}
    for name, kind, help_, labels, value in samples:
        family = name
        if kind == "histogram":
            for suffix in ("_bucket", "_count", "_sum"):
                if name.endswith(suffix):
                    family = name[: -len(suffix)]
                    break
        elif kind == "counter" and name.endswith("_total"):
            family = name[: -len("_total")]  # the client's convention: the family without _total
        m = families.get(family)
        if m is None:
            m = families[family] = Metric(family, help_, kind)
        m.add_sample(name, {k: str(v) for k, v in labels.items()}, value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry).decode()


class _Families:
    """A prometheus-client collector of metric families already computed (by ``Metrics.samples``)."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)
