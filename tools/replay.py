"""Replay router logs through the same pure cores the services run: verify, timeline, what-if.

    lvsbus replay LOG... --verify            every logged decision and effect comes out identical
    lvsbus replay LOG... --timeline [--html FILE]   one incident timeline over several routers
    lvsbus replay LOG --what-if CONFIG       the decisions that change under another config
    lvsbus replay LOG...                     the events themselves (filtered), as text or --json

A LOG is a log directory (a router's ``STATE_DIR/log``) or a state directory that holds ``log/``.

Verify (``verify``): for every core in ``lvsbus_services.cores.available()``, state = ``initial()``; the
log's events are fed in seq order to the cores that accept them (``Core.accepts``, asked once per
kind of event, see ``_plan``: the loop of ``lvsbus.runtime.core.run_core`` flattened over all cores in one
pass), and each input's effects must equal the logged outputs of that core (source =
the core's name, type in its ``outputs``) with cause = that input's seq, in order, type and
payload equal. A logged output that no input explains, one that differs, or one that is missing
(a later input of the same core was answered) is a divergence; the first is reported as (seq,
type, expected, got). Outputs still owed at the end of a run or of the log are reported as a note:
a stopped service (lvsd on a backup) answers its inputs only when it runs again.

* Router runs: every service's runtime starts its core from ``initial()`` at its router run's
  start seq (the ``config.loaded`` the router publishes at start, ``lvsbus/router/supervisor.py``), and within
  a run restores it from its snapshot plus the log after it, which is the same state. So replay
  starts every core again at each such ``config.loaded`` (not at a reload), and feeds a run's
  events in order with one state per core: a service restarted mid-run is seamless. Outputs still
  owed when a run ends (the router was killed between an input and its outputs) are listed as a
  note, not a divergence. ``--continuous`` carries state across runs instead.
* A log whose start was deleted by retention is checked from the first run start still in it;
  ``--from-snapshot STATE_DIR/snapshots`` restores each core from its oldest snapshot the log still
  covers and checks from there.
* What is checked of each record: its framing and CRC (``lvsbus.log``), its envelope, and that its
  (type, version) is one the catalog knows (older versions are upcast). Its payload was validated
  by the broker before it was appended, and a (type, version)'s schema never changes (the catalog's
  rule), so checking it again would only cost time (a fifth of replay's, measured): ``--strict``
  does (the catalog's schemas compiled into straight-line predicates,
  ``lvsbus.wire.schema.compile_check``). A core that raises on a record is a divergence, named with the
  record's schema errors if it has any: a hand-edited log cannot crash replay.

Pure functions return report objects; ``add_commands`` wires the CLI (``lvsbus.cli`` lists this
module).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import difflib
import errno
import gc
import json
import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

if __name__ == "__main__":  # ``python tools/replay.py``: this checkout's packages, not the tools/ directory
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import msgpack

import lvsbus.wire.catalog  # noqa: F401  (fills the registry)
from lvsbus.host.argtypes import run_one, existing_dir, file_to_write, int_range
from lvsbus.host.argtypes import name as name_arg
from lvsbus.runtime.core import Core, run_core
from lvsbus.wire.events import REGISTRY, DecodeError, Event, decode_records
from lvsbus.log import CorruptRecord, LogReader, NotALog, SeqUnavailable, describe_error, open_log_dir
from lvsbus_services.cores import available
from lvsbus_tools.timeline import (
    Filters, describe, event_json, fmt_wall, log_dir, read_events, render_html, render_text, timeline,
)

NS = 1_000_000_000
SEQ_MAX = 2**64 - 1  # a seq is a u64 in the record header (lvsbus.log.HEADER)


def make_cores(names: Iterable[str] | None = None) -> list[Core]:
    cores = available()
    return [cls() for n, cls in cores.items() if names is None or n in names]


# ---------------------------------------------------------------------------------------------
# verify


@dataclass
class Divergence:
    seq: int  # the logged event where replay and log part ways (or the input whose output is missing)
    type: str
    core: str
    reason: str
    expected: Any = None  # what the core computes: {"type", "payload", "cause"}
    got: Any = None  # what the log holds

    def describe(self) -> str:
        return (f"seq {self.seq} {self.type} ({self.core}): {self.reason}\n"
                f"  expected: {_short(self.expected)}\n  got:      {_short(self.got)}")

    def to_json(self) -> dict:
        return {"seq": self.seq, "type": self.type, "core": self.core, "reason": self.reason,
                "expected": self.expected, "got": self.got}


@dataclass
class VerifyReport:
    log: str
    cores: list[str]
    events: int = 0
    inputs: int = 0  # events fed to some core
    outputs: int = 0  # logged outputs compared
    first_seq: int = 0
    last_seq: int = 0
    runs: int = 0  # router runs (config.loaded at start) seen
    undecodable: int = 0  # records that do not decode (each a divergence; replay goes on past them)
    unheld_missing: int = 0  # heartbeats sent whose record a crash lost (Core.unheld): not divergences
    records_read: int = 0  # records read from the log (CRC-valid), fed or not
    records_expected: int = 0  # records the log holds by its seqs, its mark and its declared gaps
    unreadable: list[str] = field(default_factory=list)  # records the reader had to go past
    notes: list[str] = field(default_factory=list)
    divergences: list[Divergence] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.divergences

    def format(self) -> str:
        rate = f", {self.events / self.seconds:,.0f} events/s" if self.seconds else ""
        head = (f"{self.log}: seqs {self.first_seq}..{self.last_seq}, {self.runs} run(s), "
                f"{self.records_read} of {self.records_expected} records read, {self.events} events, "
                f"{self.inputs} inputs, "
                f"{self.outputs} outputs checked, cores {', '.join(self.cores) or '(none)'}{rate}")
        lines = [head] + [f"  note: {n}" for n in self.notes] + [f"  UNREADABLE: {u}" for u in self.unreadable]
        if self.ok:
            lines.append("  identical: every logged decision and effect comes out the same")
        else:
            lines.append("  DIVERGES at " + self.divergences[0].describe().replace("\n", "\n  "))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"log": self.log, "ok": self.ok, "cores": self.cores, "events": self.events, "inputs": self.inputs,
                "outputs": self.outputs, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "records_read": self.records_read, "records_expected": self.records_expected,
                "unreadable": self.unreadable,
                "notes": self.notes, "divergences": [d.to_json() for d in self.divergences],
                "seconds": round(self.seconds, 6)}


def _short(v: Any, n: int = 600) -> str:
    s = json.dumps(v, sort_keys=True, default=str) if v is not None else "(nothing)"
    return s if len(s) <= n else s[:n] + "..."


def _plain(v: Any) -> Any:
    """A payload as it reads back from msgpack (tuples become lists)."""
    return msgpack.unpackb(msgpack.packb(v, use_bin_type=True), raw=False, strict_map_key=False)


class _Verifier:
    def __init__(self, directory: str, cores: list[Core], continuous: bool, snapshots: str | None,
                 strict: bool = False) -> None:
        self.report = VerifyReport(directory, [c.name for c in cores])
        self.cores = cores
        self.strict = strict
        self.continuous = continuous
        self.snapshots = snapshots
        self.states: list[Any] = [c.initial() for c in cores]
        self.pending: list[deque] = [deque() for _ in cores]  # (cause seq, Effect) not yet seen in the log
        self.start: list[int] = [0] * len(cores)  # a core is fed events with seq > start
        self.out_index: dict[tuple[str, str], int] = {}
        for i, c in enumerate(cores):
            for t in c.outputs:
                self.out_index[(c.name, t)] = i
        self.custom_is_output = [type(c).is_output is not Core.is_output for c in cores]
        # Core.accepts as written in lvsbus.runtime.core depends on (type, source) and, for timer.fired,
        # on the payload's service only: for cores that keep it, its answers are cached by that key
        self.default_accepts = [type(c).accepts is Core.accepts for c in cores]
        self.plans: dict[str, dict] = {}  # type -> source (timer: (source, service)) -> _plan

    def fail(self, d: Divergence) -> None:
        self.report.divergences.append(d)

    # -- reading ------------------------------------------------------------------------------
    def _decode_batch(self, batch: list) -> tuple[list[Event], Divergence | None]:
        """The batch's events up to the first record that does not decode (and that record's divergence)."""
        evs, bad = decode_records(batch, validate=self.strict)
        if bad is not None:
            return evs, Divergence(bad[0], "?", "-", f"undecodable record: {bad[1]}")
        return evs, None

    # -- the loop -----------------------------------------------------------------------------
    def run(self, to_seq: int | None = None) -> VerifyReport:
        """Feed the log through the cores. A record the reader cannot read is the first
        divergence (if none came before); reading goes on past it, only to count, so the report
        says how many records were read of how many the log holds."""
        rep = self.report
        t0 = time.perf_counter()
        reader = LogReader(rep.log, skip_corrupt=True)
        # the writer's mark before the records: it follows the writes, so every seq it covers is
        # readable now (read after them, a live writer's next record could be counted, not read)
        hwm = reader.hwm()
        first = reader.first_seq()
        if first is None:
            rep.notes.append("empty log")
            return rep
        rep.first_seq = first
        waiting_for_start = False
        if first > 1:
            if self.snapshots:
                self._restore_snapshots(first)
            else:
                waiting_for_start = True
                rep.notes.append(f"the log starts at seq {first} (older records deleted by retention): checked from "
                                 f"the first router run start still in it (use --from-snapshot for the rest)")
        feeding = True
        last_read = first - 1
        try:
            for batch in self._slices(reader.read_batches(first, to_seq)):
                rep.records_read += len(batch)
                if feeding and reader.problems:
                    feeding = False
                    self.fail(Divergence(reader.problems[0].lost[0] if reader.problems[0].lost else rep.last_seq + 1,
                                         "?", "-", f"the log cannot be read here: {reader.problems[0]}"))
                last_read = batch[-1][0]
                if not feeding:
                    continue
                while batch:
                    evs, bad = self._decode_batch(batch)
                    decoded = len(evs)
                    if evs:
                        rep.events += len(evs)
                        rep.last_seq = evs[-1].seq
                    if waiting_for_start:
                        for k, ev in enumerate(evs):
                            if ev.type == "config.loaded" and not ev.payload["reload"]:
                                self.start = [ev.seq - 1] * len(self.cores)
                                waiting_for_start = False
                                evs = evs[k:]
                                break
                        else:
                            evs = []
                    if evs and not self._feed(evs):
                        feeding = False
                        break
                    if bad is None:
                        break
                    # everything before it was checked. No service saw it either (every reader skips a
                    # record it cannot decode, by seq): reported, and the check goes on after it
                    self.fail(bad)
                    rep.undecodable += 1
                    batch = batch[decoded + 1:]
        except (CorruptRecord, SeqUnavailable) as exc:
            self.fail(Divergence(rep.last_seq + 1, "?", "-", f"the log cannot be read on: {exc}"))
        self._account(reader, first, last_read, to_seq, hwm)
        if feeding and not rep.divergences:
            self._check_tail()
        rep.seconds = time.perf_counter() - t0
        return rep

    def _account(self, reader: LogReader, first: int, last_read: int, to_seq: int | None, hwm: int) -> None:
        """How many records the log holds (from its seqs, the writer's assigned-seq mark ``hwm`` as
        read before the records, and its declared gaps) against how many were read; a shortfall
        fails the verification."""
        rep = self.report
        rep.unreadable = [str(p) for p in reader.problems]
        if reader.problems and not rep.divergences:  # found after the last record read
            p = reader.problems[0]
            self.fail(Divergence(p.lost[0] if p.lost else last_read + 1, "?", "-", f"the log cannot be read here: {p}"))
        end = max([last_read, hwm] + [p.lost[1] for p in reader.problems if p.lost and p.lost[1]])
        if to_seq is not None:
            end = min(end, to_seq)
        declared = sum(min(b, end) - a + 1 for a, b in reader.gaps if a <= end)
        rep.records_expected = max(0, end - first + 1 - declared)
        for a, b in reader.gaps:
            rep.notes.append(f"seqs {a}..{b} are a declared gap (handed out but never written: log.gap)")
        if reader.torn_tail is not None:
            path, off, n = reader.torn_tail
            rep.notes.append(f"{n} bytes at {os.path.basename(path)}@{off} are an incomplete last record (torn "
                             "tail; the writer cuts it when it next opens the log)")
        if rep.records_read < rep.records_expected:
            missing = rep.records_expected - rep.records_read
            why = (f"the writer's mark says seqs up to {end} were written, the last one read is {last_read}"
                   if end > last_read else f"{len(reader.problems)} unreadable place(s)")
            if not rep.divergences:
                self.fail(Divergence(last_read + 1, "?", "-",
                                     f"only {rep.records_read} of {rep.records_expected} records could be read "
                                     f"({missing} missing: {why})"))
            else:
                rep.notes.append(f"only {rep.records_read} of {rep.records_expected} records could be read ({why})")

    @staticmethod
    def _slices(batches: Iterator[list], size: int = 256) -> Iterator[list]:
        """The reader's batches (thousands of records) in slices of ``size``: decoded and folded a
        slice at a time, the events of one slice are freed before the next is decoded, and their
        memory is reused while still in the CPU's caches (5% faster than whole batches, measured)."""
        for batch in batches:
            if len(batch) <= size:
                yield batch
            else:
                for k in range(0, len(batch), size):
                    yield batch[k:k + size]

    def _new_run(self, seq: int) -> None:
        for i, pend in enumerate(self.pending):
            if pend:
                self.report.notes.append(
                    f"the run before seq {seq} ended with {len(pend)} output(s) of {self.cores[i].name} never "
                    f"logged (from input #{pend[0][0]}): the router stopped before publishing them")
                pend.clear()
        self.states = [c.initial() for c in self.cores]
        self.report.runs += 1

    def _plan(self, ev: Event) -> tuple:
        """What the loop does with events like ``ev`` (same type and source, and for a
        ``timer.fired`` the same service: all that ``Core.accepts`` and ``Core.is_output`` look at):
        (the cores that take it as input, each with whether its own ``accepts`` must still be
        asked, the index of the core it is an output of or None, whether it may start a router run)."""
        takers = tuple((i, not self.default_accepts[i]) for i, c in enumerate(self.cores)
                       if not self.default_accepts[i] or c.accepts(ev))  # (core, its accepts to ask each time)
        out = self.out_index.get((ev.source, ev.type))
        if out is not None and self.custom_is_output[out]:
            out = -1  # ask is_output each time
        elif out is None and any(self.custom_is_output):
            out = -1
        return takers, out, ev.type == "config.loaded" and not self.continuous

    def _feed(self, evs: list[Event]) -> bool:
        """One pass in log order: each event starts a router run (``_new_run``), goes to the cores
        that take it (their effects join the outputs owed), and, when it is a core's output, must
        be the next output that core owes. False at the first divergence (recorded)."""
        rep = self.report
        plans = self.plans
        cores = self.cores
        decides = [c.decide for c in cores]
        states = self.states
        pending = self.pending
        start = self.start
        inputs = 0
        i = -1
        ev = None
        try:
            for ev in evs:
                t = ev.type
                # plans by type, then by source (and for a timer, the service it is for)
                by_source = plans.get(t)
                if by_source is None:
                    by_source = plans[t] = {}
                key = (ev.source, ev.payload.get("service")) if t == "timer.fired" else ev.source
                plan = by_source.get(key)
                if plan is None:
                    plan = by_source[key] = self._plan(ev)
                takers, out, run_start = plan
                if run_start and not ev.payload["reload"]:
                    self._new_run(ev.seq)
                    states = self.states
                seq = ev.seq
                for i, ask in takers:
                    if seq > start[i] and (not ask or cores[i].accepts(ev)):
                        states[i], effects = decides[i](states[i], ev)
                        inputs += 1
                        if effects:
                            pending[i].extend([(seq, e) for e in effects])
                i = -1
                if out is not None and not self._check_output(ev, out):
                    return False
        except Exception as exc:  # noqa: BLE001 - a core raised: reported as the divergence it is
            if i < 0 or ev is None:
                raise
            self._core_raised(cores[i], ev, exc)
            return False
        finally:
            rep.inputs += inputs
        return True

    def _core_raised(self, core: Core, ev: Event, exc: Exception) -> None:
        """A core raised on ``ev``: a record that breaks its schema (read unvalidated, see
        ``strict``), or a bug in the core; either way the first divergence, named."""
        try:
            REGISTRY.validate(ev.type, ev.version, ev.payload)
        except DecodeError as bad:
            reason = f"the record breaks its schema ({bad}), and {core.name} raised on it"
        else:
            reason = f"{core.name} raised {type(exc).__name__}: {_short(str(exc), 300)}"
        self.fail(Divergence(ev.seq, ev.type, core.name, reason))

    def _check_output(self, ev: Event, i: int) -> bool:
        """``ev`` is an output of core ``i`` (-1: ask the cores that define ``is_output``): it
        must be the next output that core owes."""
        if i < 0:
            custom = self.custom_is_output
            j = self.out_index.get((ev.source, ev.type))
            if j is None:
                i = next((k for k, c in enumerate(self.cores) if custom[k] and c.is_output(ev)), -1)
                if i < 0:
                    return True
            elif custom[j] and not self.cores[j].is_output(ev):
                return True
            else:
                i = j
        core = self.cores[i]
        if ev.cause is not None and ev.cause <= self.start[i]:
            return True  # answered before the point replay starts from
        self.report.outputs += 1
        pend = self.pending[i]
        unheld = core.unheld
        while unheld and pend and ev.cause is not None and pend[0][0] < ev.cause and pend[0][1].type in unheld:
            # sent at once, its record in a batch a crash lost (Core.unheld: heartbeats; docs/router.md)
            pend.popleft()
            self.report.unheld_missing += 1
        if pend:
            cause, eff = pend[0]
            if cause == ev.cause and eff.type == ev.type and (
                    eff.payload == ev.payload or _plain(eff.payload) == ev.payload):
                pend.popleft()
                return True
        got = {"type": ev.type, "cause": ev.cause, "payload": ev.payload}
        if not pend:
            self._fail_output(ev, core, "a logged output that no input explains: the core computes nothing here",
                              None, got)
            return False
        expected = {"type": eff.type, "cause": cause, "payload": _plain(eff.payload)}
        if ev.cause is None or cause < ev.cause:
            reason = f"the core's output for input #{cause} is missing from the log"
        elif cause > ev.cause:
            reason = f"a logged output for input #{ev.cause} that the core does not compute"
        elif eff.type != ev.type:
            reason = f"for input #{cause} the core computes {eff.type} next, the log has {ev.type}"
        else:
            reason = "the logged output differs from what the core computes"
        self._fail_output(ev, core, reason, expected, got)
        return False

    def _fail_output(self, ev: Event, core: Core, reason: str, expected: Any, got: Any) -> None:
        self.fail(Divergence(ev.seq, ev.type, core.name, reason, expected, got))

    def _check_tail(self) -> None:
        for i, pend in enumerate(self.pending):
            if pend:
                self.report.notes.append(
                    f"the log ends with {len(pend)} output(s) of {self.cores[i].name} not logged (from input "
                    f"#{pend[0][0]}): that service was stopped or still busy; it answers them when it runs again")

    def _restore_snapshots(self, first: int) -> None:
        from lvsbus.runtime.snapshot import SnapshotCorrupt, SnapshotStore, SnapshotVersionError, decode_state

        store = SnapshotStore(self.snapshots)
        for i, core in enumerate(self.cores):
            usable = [s for s in store.seqs(core.name) if s >= first - 1]
            if not usable:
                self.report.notes.append(f"no snapshot of {core.name} at or after seq {first - 1}: "
                                         f"it starts from initial() at seq {first}")
                self.start[i] = first - 1
                continue
            for seq in sorted(usable):
                try:
                    fmt, body = store.read(core.name, seq)
                    self.states[i] = decode_state(core, body, fmt)
                except (SnapshotCorrupt, SnapshotVersionError, OSError) as exc:  # said, and the next one is tried
                    self.report.notes.append(f"{core.name}: snapshot at seq {seq}: {exc}: not used")
                    continue
                self.start[i] = seq
                self.report.notes.append(f"{core.name} restored from its snapshot at seq {seq}")
                break
            else:
                self.report.notes.append(f"no usable snapshot of {core.name}: it starts from initial() at seq {first}")
                self.start[i] = first - 1


_READ_FAILURES = ("the log cannot be read", "only ")  # divergences of the reading, not of a record's content


def verify(directory: str, cores: list[Core] | None = None, continuous: bool = False,
           snapshots: str | None = None, to_seq: int | None = None, strict: bool = False) -> VerifyReport:
    """Replay one log through every available core and compare; see the module doc.
    ``strict``: validate every payload against its schema as well (the broker did when it wrote it)."""
    open_log_dir(log_dir(directory))  # one clear error (OSError, NotALog) when it is not a log
    verifier = _Verifier(log_dir(directory), cores if cores is not None else make_cores(), continuous, snapshots,
                         strict)
    # replay allocates many short-lived, acyclic objects: a rarer young-generation collection is
    # ~10% faster (measured with bench/replay.py); the process's setting is restored afterwards
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 50_000), old[1], old[2])
    try:
        rep = verifier.run(to_seq)
        if (rep.divergences and not strict and rep.divergences[0].core != "-"
                and not rep.divergences[0].reason.startswith(_READ_FAILURES)):
            # name the root cause: a record before the divergence that breaks its schema, if any
            again = _Verifier(verifier.report.log, cores if cores is not None else make_cores(), continuous,
                              snapshots, strict=True).run(rep.divergences[0].seq)
            if again.divergences:
                again.notes.append("verified again with --strict up to the first divergence")
                rep = again
        return rep
    finally:
        gc.set_threshold(*old)


# ---------------------------------------------------------------------------------------------
# what-if

#: outputs that are chatter, not decisions: left out of the what-if comparison
CHATTER = frozenset({"pulse.send_heartbeat", "pulse.heartbeat_ignored", "pulse.send_garp", "pulse.run_notify"})


@dataclass
class Decision:
    mono_ns: int
    wall_ns: int
    core: str
    type: str
    text: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.core, self.type, self.text)


@dataclass
class WhatIfReport:
    log: str
    config: str
    baseline: list[Decision]
    alternative: list[Decision]
    changes: list[dict]

    def format(self) -> str:
        t0 = min([d.wall_ns for d in self.baseline + self.alternative] or [0])
        rel = lambda d: f"+{(d.wall_ns - t0) / NS:.3f}s"  # noqa: E731  (wall clock: monotonic restarts with a reboot)
        lines = [f"what-if: {self.log} replayed under {self.config}",
                 f"  {len(self.baseline)} decisions as recorded, {len(self.alternative)} under the new config"]
        if not self.changes:
            lines.append("  no decision changes")
        for c in self.changes:
            if c["change"] == "removed":
                d = c["before"]
                lines.append(f"  - {rel(d)} {d.type}: {d.text}   (would not happen)")
            elif c["change"] == "added":
                d = c["after"]
                lines.append(f"  + {rel(d)} {d.type}: {d.text}   (would happen)")
            else:
                b, a = c["before"], c["after"]
                lines.append(f"  ~ {b.type}: {b.text}   at {rel(b)} -> {rel(a)} ({(a.mono_ns - b.mono_ns) / NS:+.3f}s)")
        return "\n".join(lines)

    def to_json(self) -> dict:
        dj = lambda d: d and {"mono_ns": d.mono_ns, "wall_ns": d.wall_ns, "core": d.core, "type": d.type,  # noqa: E731
                              "text": d.text}
        return {"log": self.log, "config": self.config, "changes": [
            {"change": c["change"], "before": dj(c.get("before")), "after": dj(c.get("after"))} for c in self.changes]}


def _decisions(observations: list[Event], cores: list[Core], model: dict | None) -> list[Decision]:
    """Feed recorded observations to fresh cores on an in-memory bus: timers fire exactly at each
    core's deadline, outputs feed the other cores; returns the decisions (outputs but chatter)."""
    states = [c.initial() for c in cores]
    out: list[Decision] = []
    seq = 0
    last_mono, last_wall = 0, 0

    def feed(ev: Event) -> None:
        nonlocal seq
        queue = deque([ev])
        while queue:
            e = queue.popleft()
            for i, core in enumerate(cores):
                for states[i], step in run_core(core, states[i], (e,)):
                    for eff in step.effects:
                        seq += 1
                        oe = Event(seq, e.node, core.name, eff.type, REGISTRY.latest(eff.type).version, e.mono_ns,
                                   e.wall_ns, e.seq, eff.payload)
                        queue.append(oe)
                        if eff.type not in CHATTER:
                            out.append(Decision(e.mono_ns, e.wall_ns, core.name, eff.type, describe(oe)))

    def timers_until(mono: int, node: str) -> None:
        nonlocal seq
        for _ in range(100_000):
            due = [(d, i) for i, c in enumerate(cores) if (d := c.next_deadline(states[i])) is not None and d <= mono]
            if not due:
                return
            d, i = min(due)
            seq += 1
            before = cores[i].next_deadline(states[i])
            feed(Event(seq, node, cores[i].name, "timer.fired", 1, d, last_wall + (d - last_mono), None,
                       {"service": cores[i].name, "deadline_ns": d}))
            if cores[i].next_deadline(states[i]) == before:
                return  # a deadline the core does not consume (as the runtime, fire it once)

    for ev in observations:
        if ev.type == "config.loaded" and not ev.payload["reload"]:  # a router run starts: as verify
            states[:] = [c.initial() for c in cores]
        elif ev.mono_ns >= last_mono:
            timers_until(ev.mono_ns, ev.node)
        if model is not None and ev.type == "config.loaded":
            ev = ev._replace(payload={**ev.payload, "model": model})
        seq += 1
        feed(ev._replace(seq=seq))
        last_mono, last_wall = ev.mono_ns, ev.wall_ns
    return out


#: cores the what-if does not run (see what_if)
WHATIF_LEAVE_OUT = ("ipvs",)


def available_outputs() -> list[Core]:
    return make_cores()


def what_if(directory: str, config_path: str, cores: list[Core] | None = None,
            problems: list[str] | None = None) -> WhatIfReport:
    """Replay a log's observations under another config (every config.loaded carries it instead)
    and list the decisions that change, as Pacemaker's crm_simulate. Peers' behaviour is taken as
    recorded: their heartbeats arrive when they did, whatever this router now decides."""
    from lvsbus.config import to_dict
    from lvsbus.host.configfiles import load_config as load

    # lvsd's and the applier's shells run only while the router is active: what they observed
    # (their starts, the kernel's answers to the applier's own requests) follows from pulse's
    # decisions, which the what-if may change. lvsd is driven by pulse's start/stop effects
    # instead (its tables and deltas show which real servers would be in or out); the applier,
    # whose inputs are kernel dumps, is left out.
    cores = cores if cores is not None else make_cores([n for n in available() if n not in WHATIF_LEAVE_OUT])
    outputs = {(c.name, t) for c in available_outputs() for t in c.outputs}
    obs = [ev for ev in read_events(directory, problems=problems) if (ev.source, ev.type) not in outputs and ev.type != "timer.fired"
           and ev.source not in WHATIF_LEAVE_OUT and ev.source != "lvsd"]
    model = to_dict(load(config_path).config)
    before = _decisions(obs, make_cores([c.name for c in cores]), None)
    after = _decisions(obs, make_cores([c.name for c in cores]), model)
    changes: list[dict] = []
    sm = difflib.SequenceMatcher(a=[d.key for d in before], b=[d.key for d in after], autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            for b, a in zip(before[i1:i2], after[j1:j2]):
                if abs(a.mono_ns - b.mono_ns) > 1_000_000:
                    changes.append({"change": "moved", "before": b, "after": a})
            continue
        changes += [{"change": "removed", "before": b} for b in before[i1:i2]]
        changes += [{"change": "added", "after": a} for a in after[j1:j2]]
    changes.sort(key=lambda c: (c.get("before") or c.get("after")).wall_ns)
    return WhatIfReport(directory, config_path, before, after, changes)


# ---------------------------------------------------------------------------------------------
# the command line


def _parse_time(s: str) -> int:
    """``--since``/``--until`` (an argparse type): ISO 8601 (UTC if no zone) or seconds since
    the epoch, as ns."""
    try:
        secs = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(secs) or abs(secs) > 1e11:
            raise argparse.ArgumentTypeError(f"{s!r} is out of range: seconds since the epoch, at most 1e11")
        return int(secs * NS)
    try:
        dt = _dt.datetime.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a time (ISO 8601 such as 2026-01-01T10:00:00, UTC if no "
                                         "zone, or seconds since the epoch)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.timezone.utc)
    return int(dt.timestamp()) * NS + dt.microsecond * 1000


def _filters(args) -> Filters:
    return Filters(
        from_seq=args.from_seq, to_seq=args.to_seq,
        since_ns=args.since, until_ns=args.until,
        types=tuple(args.type or ()), services=tuple(args.service or ()),
    )


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "replay", help="replay router logs through the cores: --verify, --timeline, --what-if CONFIG",
        description="Replay router logs (LOG: a log directory, or a state directory holding log/) through the "
        "same pure cores the services run.")
    p.add_argument("logs", nargs="+", metavar="LOG")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--verify", action="store_true", help="check every logged decision and effect comes out identical")
    mode.add_argument("--timeline", action="store_true", help="one incident timeline over all the logs, by wall clock")
    mode.add_argument("--what-if", metavar="CONFIG", help="replay the inputs under another config; show what changes")
    p.add_argument("--html", metavar="FILE", type=file_to_write, help="with --timeline: also write a self-contained HTML page")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--from-seq", type=int_range(1, SEQ_MAX))
    p.add_argument("--to-seq", type=int_range(1, SEQ_MAX), help="also stops --verify there")
    p.add_argument("--since", type=_parse_time,
                   help="wall clock: ISO time (UTC if no zone) or seconds since the epoch")
    p.add_argument("--until", type=_parse_time, help="wall clock, as --since")
    p.add_argument("--type", action="append", metavar="PREFIX", type=name_arg,
                   help="only these event types (prefixes; repeat)")
    p.add_argument("--service", action="append", metavar="NAME", type=name_arg,
                   help="only events from this source (repeat)")
    p.add_argument("--continuous", action="store_true",
                   help="--verify: carry core state across router runs (default: initial() at each run's "
                        "config.loaded, as lvsbus.runtime.engine does with its run start seq)")
    p.add_argument("--strict", action="store_true",
                   help="--verify: also check every payload against its schema (the broker did when it wrote "
                        "the record; a record's CRC is always checked; ~17%% slower)")
    p.add_argument("--from-snapshot", metavar="DIR", type=existing_dir, help="--verify: a log cut by retention starts from these snapshots")
    p.set_defaults(func=_cmd_replay)


def _cmd_replay(args) -> int:
    out = sys.stdout
    if args.verify:
        worst = 0
        reports = []
        for d in args.logs:
            try:
                rep = verify(d, continuous=args.continuous, snapshots=args.from_snapshot, to_seq=args.to_seq,
                             strict=args.strict)
            except (OSError, NotALog) as exc:
                sys.stderr.write(f"lvsbus replay: {describe_error(exc)}\n")
                return 2
            reports.append(rep)
            worst = max(worst, 0 if rep.ok else 1)
            if not args.json:
                out.write(rep.format() + "\n")
        if args.json:
            json.dump([r.to_json() for r in reports], out, indent=1, default=str)
            out.write("\n")
        return worst
    from lvsbus.config import ConfigError

    problems: list[str] = []
    try:
        return _cmd_replay_read(args, out, problems)
    except (OSError, NotALog, ConfigError) as exc:
        msg = describe_error(exc) if not isinstance(exc, ConfigError) else str(exc).replace("\n", " ")
        sys.stderr.write(f"lvsbus replay: {msg}\n")
        return 2
    finally:
        for p in problems:
            sys.stderr.write(f"lvsbus replay: {p}\n")


def _cmd_replay_read(args, out, problems: list[str]) -> int:
    """The modes that read logs (what-if, timeline, listing): records that cannot be read are
    skipped and said on stderr, and the exit status is 1."""
    for d in args.logs:
        open_log_dir(log_dir(d))
    if args.what_if:
        if len(args.logs) != 1:
            sys.stderr.write("lvsbus replay: --what-if takes one LOG\n")
            return 2
        if not os.path.isfile(args.what_if):
            raise FileNotFoundError(errno.ENOENT, "no such config file (--what-if)", args.what_if)
        rep = what_if(args.logs[0], args.what_if, problems=problems)
        if args.json:
            json.dump(rep.to_json(), out, indent=1)
            out.write("\n")
        else:
            out.write(rep.format() + "\n")
        return 1 if problems else 0
    filters = _filters(args)
    if args.timeline:
        rows = timeline(args.logs, filters, problems=problems)
        if args.html:
            with open(args.html, "w", encoding="utf-8") as fh:
                fh.write(render_html(rows))
        if args.json:
            json.dump([r.to_json() for r in rows], out, indent=1)
            out.write("\n")
        else:
            out.write(render_text(rows))
        return 1 if problems else 0
    for d in args.logs:
        for ev in read_events(d, filters, problems=problems):
            if args.json:
                out.write(json.dumps(event_json(ev), separators=(",", ":")) + "\n")
            else:
                out.write(f"{fmt_wall(ev.wall_ns)}  {ev.short()}  cause={ev.cause}  {_short(ev.payload, 200)}\n")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """``python tools/replay.py ARGS`` is ``lvsbus replay ARGS`` (the design's entry point): the same
    parser, built here, so the tools layer does not import the command line above it."""
    return run_one(add_commands, "replay", sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
