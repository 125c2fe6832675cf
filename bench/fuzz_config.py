"""Fuzz every config reader (lvs.cf, TOML, from_dict and the validation behind them) for a long time.

    python bench/fuzz_config.py [--inputs 1000000] [--seed 1] [--workers 2] [--cpu-seconds 2]
                                [--report-every 10000] [--max-seconds S] [--only N]

Each input is a fixture (tests/fixtures/lvscf, tests/fixtures/toml, or a to_dict payload) with one
to three mutations (tests/helpers/config_fuzz.py: byte flips, line deletions/duplications/swaps,
numeric extremes, non-ASCII digits, deep nesting, long dotted keys, huge inputs, truncation);
input N is made from (--seed, N) alone, so a run gives the same inputs whatever --workers is, and
`--only N` makes and judges input N again here (and prints it). An outcome is fine when it is a
Config, or a ConfigError whose issues all carry the file and (for text with the thing in it) a
line, each one short line. Counted otherwise:

    exceptions           any other exception (a traceback for the user), or the reader killed its
                         process (a crash: a signal other than the CPU limit, or an exit)
    hangs                reading took more than --cpu-seconds + --cpu-per-mib per MiB of input, in
                         CPU seconds of the worker (so a loaded machine does not make false hangs)
    errors_without_line  a ConfigError with an issue missing its file or line, or not one short line

The readers run in-process in --workers long-lived processes forked from this one (a fork server:
the fixtures are read once). Each input's time is bound twice in the worker: an ITIMER_PROF alarm
(a hang in Python code: the worker goes on) and RLIMIT_CPU (a hang in C code, which no Python
signal handler interrupts: the kernel kills the worker with SIGXCPU); this process also kills a
worker silent for --wall-seconds. A hang counts only when the input hangs again alone in a fresh
process (a long-lived worker's tick-sampled CPU clock drifts). RLIMIT_AS bounds a worker's memory
(--worker-mib; a MemoryError is an exception). A worker is restarted only when it dies. An input
the fuzzer itself fails to make is counted apart (generator_errors: a bug of this bench).

Prints progress every --report-every inputs and at the end, one figure a line:

    inputs=N
    exceptions=N
    hangs=N
    errors_without_line=N
    generator_errors=N
    ok=N errors=N seconds=S
    rate=R inputs/s
    worker_restarts=N
    complete=yes|no      (no: --max-seconds stopped the run first; inputs= says how many ran)

and the first few examples of each failure kind (input number, repr of the input, cut), to stderr.
Exit 1 when any failure was counted, 2 when the run was stopped before --inputs.
"""
from __future__ import annotations

import argparse
import collections
import math
import multiprocessing as mp
import os
import resource
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection, wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import config_fuzz  # noqa: E402
from tests.helpers.config_fuzz import Outcome, fixtures, input_rng, make_input, payloads  # noqa: E402

FAILURES = ("exception", "hang", "error_without_line", "generator_error")


def judge_input(seed: int, index: int, seeds, ps, cpu_seconds: float, cpu_per_mib: float,
                cpu_limit: bool = False) -> tuple[Outcome, str, object]:
    try:
        func, args, kw, fmt, inp = make_input(input_rng(seed, index), seeds, ps, cpu_seconds,
                                              cpu_per_mib)
    except Exception:  # noqa: BLE001 - the fuzzer's own failure, not a reader's
        return Outcome("generator_error", traceback.format_exc(limit=-3)), "", None
    if not cpu_limit:
        return config_fuzz.judge(func, *args, **kw), fmt, inp
    # the kernel's bound, for a loop in C the alarm cannot interrupt: set around the reading
    # only (making the input or answering is not the reader's time), a little past the alarm
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(used.ru_utime + used.ru_stime + kw["cpu_seconds"]) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))
    try:
        return config_fuzz.judge(func, *args, **kw), fmt, inp
    finally:
        resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def worker(conn: Connection, seed: int, seeds, ps, cpu_seconds: float, cpu_per_mib: float,
           mem_mib: int) -> None:
    """Judge the chunks of input numbers it is sent; one message per input, in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    signal.signal(signal.SIGXCPU, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if mem_mib:
        resource.setrlimit(resource.RLIMIT_AS, (mem_mib * 1024 * 1024, mem_mib * 1024 * 1024))
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        for index in range(*chunk):
            outcome, fmt, inp = judge_input(seed, index, seeds, ps, cpu_seconds, cpu_per_mib,
                                            cpu_limit=True)
            if outcome.kind in FAILURES:
                conn.send((index, outcome.kind, fmt, outcome.detail[-2000:], repr(inp)[:400]))
            else:
                conn.send((index, outcome.kind))


def judge_alone(conn: Connection, seed: int, index: int, seeds, ps, cpu_seconds: float,
                cpu_per_mib: float, mem_mib: int) -> None:
    """Judge one input in a fresh process: is a hang seen in a long-lived worker a hang?"""
    signal.signal(signal.SIGXCPU, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if mem_mib:
        resource.setrlimit(resource.RLIMIT_AS, (mem_mib * 1024 * 1024, mem_mib * 1024 * 1024))
    outcome, fmt, inp = judge_input(seed, index, seeds, ps, cpu_seconds, cpu_per_mib, cpu_limit=True)
    conn.send((index, outcome.kind, fmt, outcome.detail[-2000:], repr(inp)[:400]))


class Worker:
    def __init__(self, ctx, args, seeds, ps) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker, daemon=True, args=(
            child, args.seed, seeds, ps, args.cpu_seconds, args.cpu_per_mib, args.worker_mib))
        self.proc.start()
        child.close()
        self.next = self.end = 0  # the input it judges now, and the end of its chunk
        self.heard = time.monotonic()

    def give(self, start: int, end: int) -> None:
        self.next, self.end = start, end
        self.heard = time.monotonic()
        self.conn.send((start, end))

    def busy(self) -> bool:
        return self.next < self.end

    def kill(self) -> None:
        if self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join()


def report(counts: collections.Counter, n: int, started: float, restarts: int, rechecked: int,
           complete: bool | None = None, out=sys.stdout) -> None:
    seconds = time.monotonic() - started
    print(f"inputs={n}", file=out)
    print(f"exceptions={counts['exception']}", file=out)
    print(f"hangs={counts['hang']}", file=out)
    print(f"errors_without_line={counts['error_without_line']}", file=out)
    print(f"generator_errors={counts['generator_error']}", file=out)
    print(f"ok={counts['ok']} errors={counts['error']} seconds={seconds:.0f}", file=out)
    print(f"rate={n / max(seconds, 1e-9):.1f} inputs/s", file=out)
    print(f"worker_restarts={restarts}", file=out)
    print(f"hangs_rechecked_alone={rechecked}", file=out)
    if complete is not None:
        print(f"complete={'yes' if complete else 'no'}", file=out)
    out.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=200, help="inputs given to a worker at a time")
    ap.add_argument("--cpu-seconds", type=float, default=2.0, help="the time bound of a small input")
    ap.add_argument("--cpu-per-mib", type=float, default=3.0,
                    help="and this much more a MiB of input (the readers are linear)")
    ap.add_argument("--wall-seconds", type=float, default=600.0,
                    help="a worker silent this long is killed (a hang that uses no CPU)")
    ap.add_argument("--worker-mib", type=int, default=3072, help="address space of a worker")
    ap.add_argument("--max-seconds", type=float, default=0.0,
                    help="stop after this long (0: never) and say how many inputs ran")
    ap.add_argument("--report-every", type=int, default=10_000)
    ap.add_argument("--examples", type=int, default=3, help="examples printed per failure kind")
    ap.add_argument("--only", type=int, default=None, help="judge input N here and print it")
    args = ap.parse_args(argv)
    if args.inputs < 0 or args.workers < 1 or args.chunk < 1:
        ap.error("--inputs must be >= 0, --workers and --chunk >= 1")

    seeds, ps = fixtures(), payloads()
    if args.only is not None:
        outcome, fmt, inp = judge_input(args.seed, args.only, seeds, ps, args.cpu_seconds,
                                        args.cpu_per_mib)
        print(f"input {args.only} ({fmt}, {len(repr(inp))} chars): {outcome.kind}\n"
              f"{outcome.detail}\n{repr(inp)[:2000]}")
        return 0 if outcome.kind not in FAILURES else 1

    ctx = mp.get_context("fork")
    counts: collections.Counter = collections.Counter()
    shown: collections.Counter = collections.Counter()
    started = time.monotonic()
    done = restarts = rechecked = 0
    given = 1  # input numbers 1..--inputs
    workers: list[Worker] = []

    def count(index: int, kind: str, fmt: str = "", detail: str = "", inp: str = "") -> None:
        nonlocal done
        counts[kind] += 1
        done += 1
        if kind in FAILURES and shown[kind] < args.examples:
            shown[kind] += 1
            lines = detail.strip().splitlines()
            print(f"# {kind} ({fmt}) at input {index}: {lines[-1][:300] if lines else ''}\n"
                  f"#   input: {inp}", file=sys.stderr, flush=True)
        if done % args.report_every == 0 and done < args.inputs:
            report(counts, done, started, restarts, rechecked)

    def feed(w: Worker) -> None:
        nonlocal given
        if given <= args.inputs:
            end = min(given + args.chunk, args.inputs + 1)
            w.give(given, end)
            given = end

    def settle(msg: tuple, why: str = "") -> tuple:
        """A hang counts when the input hangs again alone in a fresh process. The kernel's CPU
        clock of a long-lived worker (sampled at ticks, behind RLIMIT_CPU and ITIMER_PROF) drifts
        from its precise one: workers were killed by SIGXCPU reading inputs of 1 KB in 1 ms."""
        nonlocal rechecked
        if msg[1] != "hang":
            return msg
        rechecked += 1
        index = msg[0]
        conn, child = ctx.Pipe()
        proc = ctx.Process(target=judge_alone, daemon=True, args=(
            child, args.seed, index, seeds, ps, args.cpu_seconds, args.cpu_per_mib,
            args.worker_mib))
        proc.start()
        child.close()
        again: tuple | None = None
        if conn.poll(args.wall_seconds):
            try:
                again = conn.recv()
            except (EOFError, OSError):
                pass
        if proc.is_alive() and proc.pid:
            os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        conn.close()
        first = why or (msg[3] if len(msg) > 3 else "")
        if again is None:
            code = proc.exitcode
            kind = "hang" if code in (-signal.SIGXCPU, -signal.SIGKILL) else "exception"
            return (index, kind, "", f"{first}; alone: exit {code}", "")
        if again[1] == "hang":
            return (index, "hang", again[2], f"{first}; alone: {again[3]}", again[4])
        return again[:2] if again[1] not in FAILURES else again

    def died(w: Worker, why: str) -> Worker:
        """Count the input it was judging, start another worker with the rest of its chunk."""
        nonlocal restarts
        w.kill()
        try:  # what it said before it died, if that came after the last look
            while w.next < w.end and w.conn.poll():
                msg = w.conn.recv()
                w.next += 1
                count(*settle(msg))
        except (EOFError, OSError):
            pass
        w.conn.close()
        code = w.proc.exitcode
        index = w.next
        if why == "wall" or code == -signal.SIGXCPU:
            msg = settle((index, "hang"), f"worker killed ({why}, exit {code})")
        else:
            msg = (index, "exception", "", f"the worker died (exit {code})", "")
        if msg[1] in FAILURES and not msg[4] and shown[msg[1]] < args.examples:
            # made again here from its number, to show it
            msg = msg[:4] + (repr(make_input(input_rng(args.seed, index), seeds, ps)[4])[:400],)
        count(*msg)
        restarts += 1
        fresh = Worker(ctx, args, seeds, ps)
        if index + 1 < w.end:
            fresh.give(index + 1, w.end)
        return fresh

    complete = True
    try:
        for _ in range(args.workers):
            workers.append(Worker(ctx, args, seeds, ps))
            feed(workers[-1])
        while any(w.busy() for w in workers):
            if args.max_seconds and time.monotonic() - started > args.max_seconds:
                complete = False
                break
            ready = wait([w.conn for w in workers if w.busy()] +
                         [w.proc.sentinel for w in workers if w.busy()], timeout=5.0)
            del ready  # every busy worker is looked at: poll is cheap
            now = time.monotonic()
            for i, w in enumerate(workers):
                if not w.busy():
                    continue
                try:
                    while w.conn.poll():  # all it said before anything else
                        msg = w.conn.recv()
                        w.heard = now
                        if msg[0] != w.next:
                            raise RuntimeError(f"worker answered input {msg[0]}, expected {w.next}")
                        w.next += 1
                        count(*settle(msg))
                except (EOFError, ConnectionResetError):
                    workers[i] = w = died(w, "death")
                    continue
                if w.busy() and not w.proc.is_alive():
                    workers[i] = w = died(w, "death")
                elif w.busy() and now - w.heard > args.wall_seconds:
                    workers[i] = w = died(w, "wall")
                if not w.busy():
                    feed(w)
    except KeyboardInterrupt:
        complete = False
    finally:
        for w in workers:
            w.kill()
            w.conn.close()
    report(counts, done, started, restarts, rechecked, complete=complete and done == args.inputs)
    bad = sum(counts[k] for k in FAILURES)
    return 1 if bad else (0 if complete and done == args.inputs else 2)


if __name__ == "__main__":
    sys.exit(main())
