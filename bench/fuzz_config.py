"""Fuzz every config reader (lvs.cf, TOML, from_dict and the validation behind them) for a long time.

    python bench/fuzz_config.py [--inputs 1000000] [--seed 1] [--cpu-seconds 2] [--report-every 10000]

Each input is a fixture (tests/fixtures/lvscf, tests/fixtures/toml, or a to_dict payload) with one
to three mutations (tests/helpers/config_fuzz.py: byte flips, line deletions/duplications/swaps,
numeric extremes, non-ASCII digits, deep nesting, long dotted keys, huge inputs, truncation). An
outcome is fine when it is a Config, or a ConfigError whose issues all carry the file and (for text
with the thing in it) a line, each one short line. Counted otherwise:

    exceptions           any other exception (a traceback for the user)
    hangs                reading took more than --cpu-seconds + --cpu-per-mib per MiB of input, in
                         CPU seconds of this process (so a loaded machine does not make false hangs)
    errors_without_line  a ConfigError with an issue missing its file or line, or not one short line

Prints progress lines every --report-every inputs and at the end, one figure a line:

    inputs=N
    exceptions=N
    hangs=N
    errors_without_line=N
    ok=N errors=N seconds=S

and the first few examples of each failure kind (repr of the input, cut), to stderr.
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.config_fuzz import fixtures, payloads, run_one  # noqa: E402


def report(counts: collections.Counter, n: int, started: float, out=sys.stdout) -> None:
    print(f"inputs={n}", file=out)
    print(f"exceptions={counts['exception']}", file=out)
    print(f"hangs={counts['hang']}", file=out)
    print(f"errors_without_line={counts['error_without_line']}", file=out)
    print(f"ok={counts['ok']} errors={counts['error']} seconds={time.monotonic() - started:.0f}",
          file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cpu-seconds", type=float, default=2.0, help="the time bound of a small input")
    ap.add_argument("--cpu-per-mib", type=float, default=3.0,
                    help="and this much more a MiB of input (the readers are linear)")
    ap.add_argument("--report-every", type=int, default=10_000)
    ap.add_argument("--examples", type=int, default=3, help="examples printed per failure kind")
    args = ap.parse_args(argv)

    seeds, ps = fixtures(), payloads()
    rng = random.Random(args.seed)
    counts: collections.Counter = collections.Counter()
    shown: collections.Counter = collections.Counter()
    started = time.monotonic()
    for n in range(1, args.inputs + 1):
        outcome, fmt, inp = run_one(rng, seeds, ps, cpu_seconds=args.cpu_seconds,
                                    cpu_per_mib=args.cpu_per_mib)
        counts[outcome.kind] += 1
        if outcome.kind not in ("ok", "error") and shown[outcome.kind] < args.examples:
            shown[outcome.kind] += 1
            detail = outcome.detail.strip().splitlines()
            print(f"# {outcome.kind} ({fmt}) at input {n}: {detail[-1][:300] if detail else ''}\n"
                  f"#   input: {repr(inp)[:400]}", file=sys.stderr, flush=True)
        if n % args.report_every == 0 and n < args.inputs:
            report(counts, n, started)
    report(counts, args.inputs, started)
    bad = counts["exception"] + counts["hang"] + counts["error_without_line"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
