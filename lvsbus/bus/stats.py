"""What the broker counts (``Broker.stats``) and measures of its log (``bus.log_stats``)."""
from __future__ import annotations

import bisect
from dataclasses import dataclass

#: bucket upper bounds of the log latency histograms in bus.log_stats, nanoseconds
LOG_BOUNDS_NS = (10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
                 10_000_000, 25_000_000, 50_000_000, 100_000_000, 250_000_000, 500_000_000, 1_000_000_000,
                 2_500_000_000)


@dataclass
class BrokerStats:
    received: int = 0
    recorded: int = 0
    rejected: int = 0
    lagged: int = 0
    write_failures: int = 0
    failed_frames: int = 0  # frames _on_message raised on (a bug), refused


class _Latency:
    """One histogram of nanosecond latencies (count, sum, max, bucket counts over LOG_BOUNDS_NS)."""

    __slots__ = ("count", "sum", "max", "buckets")

    def __init__(self) -> None:
        self.count = self.sum = self.max = 0
        self.buckets = [0] * (len(LOG_BOUNDS_NS) + 1)

    def observe(self, ns: int) -> None:
        self.count += 1
        self.sum += ns
        if ns > self.max:
            self.max = ns
        self.buckets[bisect.bisect_left(LOG_BOUNDS_NS, ns)] += 1


class LogStats:
    """What the broker measures of its log between two ``bus.log_stats`` events."""

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.records = 0
        self.append = _Latency()
        self.commit = _Latency()
        self.own_records = 0  # records of the bus.log_stats event itself (an idle bus stays quiet)

    def payload(self, now_ns: int, durability: str) -> dict:
        a, c = self.append, self.commit
        return {
            "period_ms": max(0, now_ns - self.start_ns) // 1_000_000, "durability": durability,
            "records": self.records, "bounds_ns": list(LOG_BOUNDS_NS),
            "append_count": a.count, "append_sum_ns": a.sum, "append_max_ns": a.max, "append_buckets": a.buckets,
            "commit_count": c.count, "commit_sum_ns": c.sum, "commit_max_ns": c.max, "commit_buckets": c.buckets,
        }



class ReportLimit:
    """At most ``per_s`` reports a second (monotonic seconds, one-second windows): what is past the
    limit is counted, and the count of a window handed over when the next one starts."""

    def __init__(self, per_s: int) -> None:
        self.per_s = per_s
        self.window = 0.0  # start of the second being counted in
        self.in_window = 0
        self.unreported = 0  # past the limit in this window (no report)

    def admit(self, now: float) -> tuple[bool, int]:
        """Whether to report one more now, and how many went unreported in the window that ended
        (0 if none ended)."""
        ended = 0
        if now - self.window >= 1.0:
            ended = self.unreported
            self.window, self.in_window, self.unreported = now, 0, 0
        if self.in_window >= self.per_s:
            self.unreported += 1
            return False, ended
        self.in_window += 1
        return True, ended
