"""argparse ``type=`` checkers for the ``lvsbus`` commands: a bad value is refused while the
command line is parsed, as one line (``lvsbus CMD: error: argument --x: ...``, exit 2), before
anything runs. Pure argument checks: only ``os.path`` looks at the file system."""
from __future__ import annotations

import argparse
import math
import os
import re

__all__ = ["int_range", "float_range", "existing_file", "regular_file", "existing_dir", "dir_to_write",
           "file_to_write", "seed_range", "name", "tcp_endpoint", "SEED_MAX"]

#: simulator seeds: 0..2**32-1
SEED_MAX = 2**32 - 1


def _int(text: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]{1,20}", text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    return int(text)


def int_range(lo: int, hi: int):
    def check(text: str) -> int:
        value = _int(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {lo}..{hi}")
        return value
    check.__name__ = "integer"
    return check


def float_range(lo: float, hi: float, *, low_open: bool = False):
    def check(text: str) -> float:
        try:
            value = float(text) if re.fullmatch(r"[0-9eE.+-]{1,40}", text.strip()) else None
        except ValueError:
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number")
        if not math.isfinite(value) or not lo <= value <= hi or (low_open and value == lo):
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: must be {'more than ' if low_open else ''}{lo:g}"
                f"{'' if low_open else '..' + format(hi, 'g')}"
                + (f" and at most {hi:g}" if low_open else ""))
        return value
    check.__name__ = "number"
    return check


def existing_file(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("a file name is needed, not ''")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: is a directory, not a file")
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return text


def regular_file(text: str) -> str:
    """An existing regular file (a key: not a directory, not a device such as /dev/null)."""
    existing_file(text)
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text}: not a regular file")
    return text


def tcp_endpoint(text: str) -> str:
    """``tcp://HOST:PORT`` (HOST an address, a name or ``*``; PORT 1..65535), as ZeroMQ takes it."""
    m = re.fullmatch(r"tcp://(\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.:-]{1,253}):([0-9]{1,5})", text)
    if m is None or not 1 <= int(m.group(2)) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a tcp://HOST:PORT endpoint (PORT 1..65535)")
    return text


def existing_dir(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("a directory name is needed, not ''")
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: not a directory")
    return text


def _nearest_existing(path: str) -> str:
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return probe


def dir_to_write(text: str) -> str:
    """A directory that exists, or can be made (its nearest existing ancestor is a directory)."""
    if not text:
        raise argparse.ArgumentTypeError("a directory name is needed, not ''")
    if os.path.exists(text):
        if not os.path.isdir(text):
            raise argparse.ArgumentTypeError(f"{text}: not a directory")
        return text
    ancestor = _nearest_existing(text)
    if not os.path.isdir(ancestor):
        raise argparse.ArgumentTypeError(f"{text}: cannot be made: {ancestor} is not a directory")
    return text


def file_to_write(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("a file name is needed, not ''")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: is a directory, not a file")
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"{text}: {parent} is not a directory")
    return text


def name(text: str) -> str:
    """A file-name-safe name: 1-64 of ``A-Z a-z 0-9 _ . -``, not starting with ``.`` or ``-``."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid name: use 1-64 letters, digits, "
                                         "'_', '.' or '-', not starting with '.' or '-'")
    return text


def seed_range(text: str) -> range:
    """``A-B`` (inclusive) or ``A``: seeds 0..SEED_MAX, at most a million of them."""
    m = re.fullmatch(r"\s*([0-9]{1,20})\s*(?:-\s*([0-9]{1,20})\s*)?", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed range: give A-B, like 0-999")
    a = int(m.group(1))
    b = int(m.group(2)) if m.group(2) is not None else a
    if b > SEED_MAX:
        raise argparse.ArgumentTypeError(f"{b} is out of range: seeds are 0..{SEED_MAX}")
    if a > b:
        raise argparse.ArgumentTypeError(f"{text!r}: the first seed is after the last")
    if b - a + 1 > 1_000_000:
        raise argparse.ArgumentTypeError(f"{text!r}: at most 1,000,000 seeds a run")
    return range(a, b + 1)


def run_parsed(args: argparse.Namespace) -> int:
    """Run a parsed command (its ``func``) as every lvsbus command runs: its exit status, 130 on
    Ctrl-C, 0 when whoever read the output went away (a closed pipe: ``lvsbus events tail | head``)."""
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def run_one(add_commands, name: str, argv: list[str]) -> int:
    """``python tools/<name>.py ARGS`` as ``lvsbus <name> ARGS``: the module's own subcommand
    (``add_commands``), parsed and run alone, so a tool needs no import of the command line above it."""
    sub = argparse.ArgumentParser(prog="lvsbus").add_subparsers()
    add_commands(sub)
    return run_parsed(sub.choices[name].parse_args(argv))
