"""nanny's check schedule and result batches, pure: time is an argument (seconds of the router's
monotonic clock), nothing here sleeps, reads a clock or touches a socket.

The real shell (``checks.Scheduler`` on an asyncio loop, ``shell.NannyShell``) and the simulator
(``tools/simulate.py``) both run this code, so a simulated nanny checks when the real one does.

* ``Schedule``: each check every ``interval`` seconds, at a phase given by the crc32 of its id
  (deterministic, spread evenly over the interval, so 10,000 checks never fire at once). Checks
  due within ``TICK`` start together; a check that fell more than an interval behind (a stall)
  resumes at its schedule rather than bursting; a check still running when it is due again is
  skipped (counted), never run twice at once. ``set_checks`` keeps the schedule of a check whose
  settings did not change.
* ``checks_for``: what to schedule, from the config the core is under (at the shell's start and on
  every ``config.loaded``); ``wake_delay``: when the shell's scheduler wakes next.
* ``ResultBatch``: results leave as one ``health.check_results`` payload every ``FLUSH_S`` seconds,
  or as soon as ``FLUSH_N`` are waiting, tagged with the config digest they were scheduled under.
"""
from __future__ import annotations

import heapq
import zlib
from typing import Any

from .core import NannyState, PlannedCheck, plan

TICK = 0.002  # seconds: checks due within a tick start together
FLUSH_S = 0.05  # results leave every 50 ms...
FLUSH_N = 2000  # ... or as soon as this many wait


def phase_of(check_id: str, interval: float) -> float:
    """Where in its interval a check runs: the crc32 of its id, spread over the interval."""
    return (zlib.crc32(check_id.encode()) / 2**32) * interval


def checks_for(state: NannyState | None, planned_digest: str) -> list[PlannedCheck] | None:
    """The checks the shell is to schedule now: the enabled checks of nanny's plan of the config its
    core is under, or None when there is nothing to plan again: no config yet, or
    the one whose ``digest`` was planned already (``planned_digest``). Asked at the shell's start
    and on every ``config.loaded``; before the new plan, the results of the old one leave tagged
    with its digest."""
    if state is None or state.config is None or state.digest == planned_digest:
        return None
    return [pc for pc in plan(state.config, state.local) if pc.enabled]


def wake_delay(due: float, now: float, tick: float = TICK) -> float:
    """How long the shell's scheduler sleeps before it asks ``take_due`` again: until the next check
    is due, at least a tick (``tick``: in the unit of ``due`` and ``now``)."""
    return max(due - now, tick)


def first_due(phase: float, interval: float, now: float) -> float:
    """The first time after ``now`` that is ``phase`` plus a whole number of intervals."""
    return phase + ((now - phase) // interval + 1) * interval


class Schedule:
    """Every check of a router, in due order. ``take_due(now)`` gives the checks to start now
    (with how late each is); ``next_deadline()`` is when to call it again.

    A check is any object with ``id``, ``interval``, ``phase``, ``due``, ``running`` (its run under
    way: set by whoever runs it, cleared by ``finished``), ``alive``, ``same(other)`` (the same
    settings) and optionally ``retry_delay`` (seconds, or None):
    ``checks.Spec`` in the real shell, a small record in the simulator."""

    def __init__(self) -> None:
        self.specs: dict[str, Any] = {}
        self.heap: list[tuple[float, int, Any]] = []
        self._n = 0
        self.skipped = 0  # due while the previous run was still going

    def set_checks(self, specs: list[Any], now: float) -> list[Any]:
        """Replace the checks: one whose settings did not change (``same``) keeps its schedule, a
        new or changed one starts at its phase. Returns the checks dropped (they are no longer alive)."""
        new: dict[str, Any] = {}
        dropped = []
        for s in specs:
            old = self.specs.get(s.id)
            if old is not None and old.same(s):
                new[s.id] = old
                continue
            if old is not None:
                old.alive = False
                dropped.append(old)
            s.due = first_due(s.phase, s.interval, now)
            new[s.id] = s
            self._push(s)
        for id_, old in self.specs.items():
            if id_ not in new:
                old.alive = False
                dropped.append(old)
        self.specs = new
        return dropped

    def _push(self, s: Any) -> None:
        self._n += 1
        heapq.heappush(self.heap, (s.due, self._n, s))

    def next_deadline(self) -> float | None:
        """When to call ``take_due`` next (None: no check); an entry of a dropped check may come first."""
        return self.heap[0][0] if self.heap else None

    def take_due(self, now: float) -> list[tuple[Any, float]]:
        """The checks to start at ``now`` (due within half a tick), each with how late it is
        (seconds, >= 0); each is scheduled again (a check still running is skipped this time)."""
        out = []
        horizon = now + TICK / 2
        heap = self.heap
        pop = heapq.heappop
        while heap and heap[0][0] <= horizon:
            due, _n, s = pop(heap)
            if not s.alive or due != s.due:  # dropped, or moved earlier by a retry (``finished``)
                continue
            late = now - due
            if late > s.interval:  # fell behind (a stall): resume at the schedule, don't burst
                s.due = first_due(s.phase, s.interval, now)
            else:
                s.due = due + s.interval
            self._push(s)
            if s.running:
                self.skipped += 1
                continue
            out.append((s, late if late > 0 else 0.0))
        return out


    def finished(self, s: Any, ok: bool, now: float) -> None:
        """A run of ``s`` ended (``ok``: it passed) at ``now``: a failed one is tried again
        ``retry_delay`` seconds later when that comes before its next run (keepalived's
        ``delay_before_retry``), and from there on every interval."""
        s.running = False
        delay = getattr(s, "retry_delay", None)
        if ok or delay is None or not s.alive:
            return
        due = now + delay
        if due < s.due:
            s.due = due
            self._push(s)


class ResultBatch:
    """Check results waiting to leave as one ``health.check_results`` payload."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.ok: list[bool] = []
        self.latency_us: list[int] = []
        self.detail: list[str] = []
        self.late_us = 0
        self.weights: dict[str, int] = {}  # id -> the weight a dynamic_weight program check gave

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, id_: str, ok: bool, latency_us: int, detail: str, late_us: int, weight: int | None = None) -> bool:
        """Keep one result (``weight``: a program check's dynamic weight); True when the batch is
        full (it should leave now)."""
        if weight is not None:
            self.weights[id_] = weight
        self.ids.append(id_)
        self.ok.append(ok)
        self.latency_us.append(latency_us)
        self.detail.append(detail)
        if late_us > self.late_us:
            self.late_us = late_us
        return len(self.ids) >= FLUSH_N

    def take(self, digest: str) -> dict | None:
        """The payload of the results waiting (None: none), and an empty batch."""
        if not self.ids:
            return None
        payload = {"digest": digest, "ids": self.ids, "ok": self.ok, "latency_us": self.latency_us,
                   "detail": self.detail, "late_us": self.late_us}
        if self.weights:  # only when a dynamic_weight check gave one: the usual batch stays as it was
            payload["weights"] = self.weights
            self.weights = {}
        self.ids, self.ok, self.latency_us, self.detail, self.late_us = [], [], [], [], 0
        return payload


def next_flush(started: float, now: float, period: float = FLUSH_S) -> float:
    """The shell's next flush after ``now``: it flushes every ``period`` from its start."""
    return now + period - (now - started) % period

