"""A seeded mutator over the config fixtures, and the oracle every outcome is judged by.

Used by tests/unit/test_config_limits.py (a bounded run) and bench/fuzz_config.py (a long one). Each input
is a fixture (tests/fixtures/lvscf, tests/fixtures/toml, or a ``to_dict`` payload for
``from_dict``) with one to three mutations: byte flips, line deletions/duplications/swaps,
numeric extremes, non-ASCII digits, deep nesting, long dotted keys, huge inputs, truncation.

The oracle: reading the input must give a Config, or a ConfigError whose issues all carry the file
and, for a text input, a line (an issue about something absent from the text, like a missing
``primary``, may have none); any other exception is a failure, and so is an input whose reading
takes more than the time bound (CPU seconds of this process, so a loaded machine does not make
false hangs); a large input gets more time in proportion (the readers must be linear, and a
16 MiB file of 300,000 virtual services takes seconds).
"""
from __future__ import annotations

import copy
import dataclasses
import random
import re
import signal
import traceback
from pathlib import Path
from typing import Any

from lvsbus.config import ConfigError, from_dict, loads, to_dict

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

#: numbers that broke or could break a reader: overflow, underflow, huge, signed, odd syntax
NUMBERS = (
    "1e-310", "5e-324", "1e308", "1e309", "1.7976931348623157e308", "-1e308", "inf", "-inf",
    "nan", "+nan", "0", "-0", "-1", "0.0", "-0.0", "1e-9", "0x10", "0xffffffffffffffffffff",
    "0b101", "0o17", "1_000", "4294967295", "4294967296", "9223372036854775807",
    "9223372036854775808", "18446744073709551616", "2147483648", "65536", "99999999999999999999",
    "9" * 4301, "9" * 5000, "1" + "0" * 400, "0x" + "f" * 5000, "1e400", ".5", "5.", "1.5e",
    "00012", "+12", "--1", "1e+308", "0.01", "3600.0000001", "86400", "1e3",
)
#: digits str.isdigit() or int() accept that are not ASCII: superscripts, Arabic-Indic,
#: full-width, mathematical bold, Devanagari
UNICODE_DIGITS = ("²", "³", "¹", "٣", "١٢", "０", "１２", "𝟗", "९", "⁹", "①", "½", "Ⅻ", "٫")
PUNCT = list("=}{[]\"'#.\\,:\n\t -+_") + ["\r", "\x00", "\x7f", "\u2028", "\ufeff", "é", "ﬀ"]


def fixtures() -> list[tuple[str, str, str]]:
    """(name, format, text) of every lvs.cf and TOML fixture, broken ones included."""
    out = []
    for sub, fmt in (("lvscf", "lvscf"), ("toml", "toml")):
        for p in sorted((FIXTURES / sub).iterdir()):
            out.append((p.name, fmt, p.read_text(encoding="utf-8")))
    return out


def payloads() -> list[dict]:
    """``to_dict`` of every valid fixture: the inputs ``from_dict`` (the config.loaded event
    payload) is fuzzed with."""
    out = []
    for name, fmt, text in fixtures():
        try:
            out.append(to_dict(loads(text, name, fmt).config))
        except ConfigError:
            pass
    return out


# ---- text mutations -------------------------------------------------------------------------

def _lines(text: str) -> list[str]:
    return text.split("\n")


def _flip(rng: random.Random, text: str, fmt: str) -> str:
    if not text:
        return rng.choice(PUNCT)
    out = list(text)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(out))
        r = rng.random()
        if r < 0.4:
            out[i] = rng.choice(PUNCT)
        elif r < 0.6:
            out[i] = chr(rng.randrange(0x20, 0x7f))
        elif r < 0.7:
            out[i] = chr(rng.randrange(0x80, 0x3000))
        elif r < 0.85:
            del out[i]
            if not out:
                break
        else:
            out.insert(i, rng.choice(PUNCT))
    return "".join(out)


def _delete_line(rng: random.Random, text: str, fmt: str) -> str:
    lines = _lines(text)
    del lines[rng.randrange(len(lines))]
    return "\n".join(lines)


def _duplicate_line(rng: random.Random, text: str, fmt: str) -> str:
    lines = _lines(text)
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return "\n".join(lines)


def _swap_lines(rng: random.Random, text: str, fmt: str) -> str:
    lines = _lines(text)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


_NUMBER = re.compile(r"[0-9][0-9A-Za-z._]*", re.ASCII)


def _number_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each run that starts with an ASCII digit and goes on over ASCII letters,
    digits, dots and underscores (a regex: a character loop took a second on a 16 MiB input)."""
    return [m.span() for m in _NUMBER.finditer(text)]


def _extreme_number(rng: random.Random, text: str, fmt: str) -> str:
    spans = _number_spans(text)
    if not spans:
        return text + "\n" + rng.choice(("keepalive", "port", "weight")) + " = " + rng.choice(NUMBERS)
    a, b = rng.choice(spans)
    return text[:a] + rng.choice(NUMBERS) + text[b:]


def _unicode_digit(rng: random.Random, text: str, fmt: str) -> str:
    spans = _number_spans(text)
    if not spans:
        return text + rng.choice(UNICODE_DIGITS)
    a, b = rng.choice(spans)
    d = rng.choice(UNICODE_DIGITS)
    r = rng.random()
    if r < 0.4:
        new = d
    elif r < 0.7:
        new = text[a:b] + d
    else:
        k = rng.randrange(a, b)
        new = text[a:k] + d + text[k + 1:b]
    return text[:a] + new + text[b:]


def _key_lines(text: str, fmt: str) -> list[int]:
    return [i for i, line in enumerate(_lines(text)) if "=" in line]


def _deep_nesting(rng: random.Random, text: str, fmt: str) -> str:
    depth = rng.choice((10, 33, 100, 400, 1000, 3000, 20000))
    lines = _lines(text)
    at = rng.randrange(len(lines) + 1)
    if fmt == "toml":
        kind = rng.random()
        if kind < 0.4:
            new = "x = " + "[" * depth + "1" + "]" * depth
        elif kind < 0.8:
            new = "x = " + "{a = " * depth + "1" + "}" * depth
        else:
            new = "x = " + "[{a = " * (depth // 2) + "1" + "}]" * (depth // 2)
        if rng.random() < 0.3:  # unclosed
            new = new[: len(new) // 2]
        lines.insert(at, new)
    else:
        blocks = ["virtual v {", "server s {", "failover f {", "foo x {"]
        opened = [rng.choice(blocks) for _ in range(depth)]
        lines[at:at] = opened + ["}"] * (depth if rng.random() < 0.7 else depth // 2)
    return "\n".join(lines)


def _dotted_key(rng: random.Random, text: str, fmt: str) -> str:
    parts = rng.choice((3, 60, 65, 200, 2000, 50000, 300000))
    part = rng.choice(("a", "virtual", '"q.x"', "'l'", "a ", "1"))
    key = ".".join([part] * parts)
    lines = _lines(text)
    at = rng.randrange(len(lines) + 1)
    lines.insert(at, f"[{key}]" if rng.random() < 0.3 else f"{key} = 1")
    return "\n".join(lines)


def _huge(rng: random.Random, text: str, fmt: str) -> str:
    r = rng.random()
    if r < 0.3:  # many copies of a line
        lines = _lines(text)
        line = rng.choice(lines)
        n = rng.choice((1000, 30000, 200000))
        at = rng.randrange(len(lines) + 1)
        # at most 64 MiB, past the size bound: 200,000 copies of a line already 300 KB long
        # (an earlier mutation) is 60 GB to make
        n = min(n, max(2, _HUGE_AT_MOST // (len(line) + 1)))
        return "\n".join(lines[:at] + [line] * n + lines[at:])
    if r < 0.55:  # a very long value
        lines = _lines(text)
        keys = _key_lines(text, fmt) or [0]
        i = rng.choice(keys)
        lines[i] = lines[i] + rng.choice(("x", "9", "é", " ", '"', "\\")) * rng.choice((5000, 300000))
        return "\n".join(lines)
    if r < 0.75:  # many virtual services
        n = rng.choice((100, 3000, 20000))
        if fmt == "toml":
            block = "\n".join(f'[virtual.v{i}]\naddress = "10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"'
                              for i in range(n))
        else:
            block = "\n".join(f"virtual v{i} {{\naddress = 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
                              " eth0\n}" for i in range(n))
        return text + "\n" + block
    if r < 0.9:  # over the size bound
        return text + "\n#" + "x" * (16 * 1024 * 1024 + 10)
    copies = rng.choice((50, 500))
    # past the size bound the readers refuse at once, however far: 64 MiB is as good as 8 GiB
    # (a 16 MiB input made 500 times over would take 8 GiB of memory to make)
    return text * max(2, min(copies, _HUGE_AT_MOST // max(len(text), 1)))


#: the largest input _huge makes (when one mutation follows another): 4 times the size bound
_HUGE_AT_MOST = 64 << 20


def _truncate(rng: random.Random, text: str, fmt: str) -> str:
    return text[: rng.randrange(len(text) + 1)]


def _insert_key(rng: random.Random, text: str, fmt: str) -> str:
    from lvsbus.config.lvscf import FAILOVER_KEYS, GLOBAL_KEYS, SERVER_KEYS, VIRTUAL_KEYS

    keys = GLOBAL_KEYS + VIRTUAL_KEYS + SERVER_KEYS + FAILOVER_KEYS + (
        "interval", "rise", "fall", "status", "exit_code", "priority", "garp_repeat", "garp_refresh",
        "preempt_delay", "quorum", "hysteresis", "upper_threshold", "lower_threshold", "sync_id",
        "metrics_address", "vip_prefixlen", "prefixlen", "sorry_server_port", "persistence")
    value = rng.choice(NUMBERS + UNICODE_DIGITS + ('"x"', "[1, 2]", "{}", "true", "", "'a'",
                                                  "[200, 1e400]", '"127.0.0.1:٩٥٣٩"', '"[::1]:²"'))
    lines = _lines(text)
    lines.insert(rng.randrange(len(lines) + 1), f"{rng.choice(keys)} = {value}")
    return "\n".join(lines)


MUTATIONS = (
    (_flip, 6), (_delete_line, 3), (_duplicate_line, 3), (_swap_lines, 2), (_extreme_number, 6),
    (_unicode_digit, 4), (_insert_key, 5), (_deep_nesting, 1), (_dotted_key, 1), (_huge, 1),
    (_truncate, 1),
)
_FUNCS = [f for f, _ in MUTATIONS]
_WEIGHTS = [w for _, w in MUTATIONS]


def mutate(rng: random.Random, text: str, fmt: str) -> str:
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        text = rng.choices(_FUNCS, _WEIGHTS)[0](rng, text, fmt)
    return text


# ---- payload mutations (from_dict) ----------------------------------------------------------

_PAYLOAD_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**31, 2**63, 2**64, 10**400, -(10**400), 1e-310, 1e308,
    float("inf"), float("-inf"), float("nan"), "", "x", "²", "١٢", "0x10", [], {}, [1, [2, [3]]],
    {"a": {"b": {}}}, [200, 10**30], "2001:db8::1", "10.0.0.1", "eth0", "eth0:1", "/x",
)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.extend(_paths(v, prefix + (i,)))
    return out


def mutate_payload(rng: random.Random, payload: dict) -> Any:
    d = copy.deepcopy(payload)
    for _ in range(rng.choice((1, 1, 2, 3))):
        paths = [p for p in _paths(d) if p]
        if not paths:
            return rng.choice(_PAYLOAD_VALUES)
        path = rng.choice(paths)
        parent = d
        for k in path[:-1]:
            parent = parent[k]
        last = path[-1]
        r = rng.random()
        if r < 0.7:
            parent[last] = copy.deepcopy(rng.choice(_PAYLOAD_VALUES))
        elif r < 0.85:
            del parent[last]
        elif isinstance(parent, dict):
            parent[rng.choice(("bogus", "name", "routers", "check", "servers"))] = \
                copy.deepcopy(rng.choice(_PAYLOAD_VALUES))
        else:
            parent.append(copy.deepcopy(parent[last]))
    return d


# ---- the oracle -----------------------------------------------------------------------------

class Hang(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise Hang()


@dataclasses.dataclass
class Outcome:
    kind: str  # "ok", "error", "error_without_line", "exception", "hang"
    detail: str = ""


def _judge_error(exc: ConfigError, filename: str | None, text: str | None) -> Outcome:
    if not exc.issues:
        return Outcome("error_without_line", "a ConfigError without issues")
    lines = text.count("\n") + 1 if text is not None else 0  # once: 200,000 issues on 2 MiB
    for issue in exc.issues:
        if filename is not None and issue.file != filename:
            return Outcome("error_without_line", f"issue without the file: {issue}")
        if text is not None and issue.line is None and not _absent(issue):
            return Outcome("error_without_line", str(issue))
        if text is not None and issue.line is not None and not 1 <= issue.line <= lines:
            return Outcome("error_without_line", f"line out of the file: {issue}")
        s = str(issue)
        if "\n" in s or len(s) > 2000:
            return Outcome("error_without_line", f"issue not one short line: {s[:200]!r}")
    return Outcome("error")


def _absent(issue) -> bool:
    """An issue about something the text does not contain: it has no line to point at."""
    return issue.message.startswith(("is required", "the primary router's address is missing",
                                     "no router is configured", "the configuration must be"))


def judge(func, *args, filename: str | None = None, text: str | None = None,
          cpu_seconds: float = 2.0) -> Outcome:
    """Run ``func(*args)`` under the CPU-time bound and classify the outcome."""
    old = signal.signal(signal.SIGPROF, _alarm)
    signal.setitimer(signal.ITIMER_PROF, cpu_seconds)
    try:
        func(*args)
        outcome = Outcome("ok")
    except Hang:
        outcome = Outcome("hang", f"more than {cpu_seconds} CPU seconds")
    except ConfigError as exc:
        signal.setitimer(signal.ITIMER_PROF, 0)
        outcome = _judge_error(exc, filename, text)
    except RecursionError:
        outcome = Outcome("exception", "RecursionError")
    except Exception:  # noqa: BLE001 - the point is to catch anything
        outcome = Outcome("exception", traceback.format_exc(limit=-3))
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)
    return outcome


def make_input(rng: random.Random, seeds: list[tuple[str, str, str]], payload_seeds: list[dict],
               cpu_seconds: float = 2.0, cpu_per_mib: float = 3.0
               ) -> tuple[Any, tuple, dict, str, Any]:
    """Mutate one input: (reader, its arguments, judge's keyword arguments, format, the input)."""
    if payload_seeds and rng.random() < 0.15:
        payload = mutate_payload(rng, rng.choice(payload_seeds))
        return from_dict, (payload,), {"cpu_seconds": cpu_seconds}, "dict", payload
    name, seed_fmt, text = rng.choice(seeds)
    text = mutate(rng, text, seed_fmt)
    fmt: str | None = seed_fmt
    filename = "fuzz.toml" if fmt == "toml" else "fuzz.cf"
    if rng.random() < 0.1:  # and by content detection, with a neutral name
        filename, fmt = "fuzz.conf", None
    bound = cpu_seconds + cpu_per_mib * len(text) / (1024 * 1024)  # linear time is fine
    return (loads, (text, filename, fmt), {"filename": filename, "text": text, "cpu_seconds": bound},
            fmt or "auto", text)


def input_rng(seed: int, index: int) -> random.Random:
    """The generator of input ``index`` of a run: each input has its own, so a run split over
    processes makes the same inputs, and one input is made again from (seed, index) alone."""
    return random.Random(seed * 2**40 + index)


def run_one(rng: random.Random, seeds: list[tuple[str, str, str]], payload_seeds: list[dict],
            cpu_seconds: float = 2.0, cpu_per_mib: float = 3.0) -> tuple[Outcome, str, Any]:
    """Mutate one input and judge it: (outcome, format, the input)."""
    func, args, kw, fmt, inp = make_input(rng, seeds, payload_seeds, cpu_seconds, cpu_per_mib)
    return judge(func, *args, **kw), fmt, inp
