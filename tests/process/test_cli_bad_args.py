"""Every ``lvsbus`` subcommand, every option, given bad values: a one-line error and a non-zero
exit, never a traceback, never a bad value taken as fine.

The commands and their options are read from the parser itself, so a new option without a row in
KINDS fails test_every_option_has_a_kind. Each case runs ``lvsbus.cli.main(argv)`` in a forked
child (the modules are imported once, in this process), stdout and stderr to files, under a
wall-clock bound; a child still running at the bound is killed (by its pid) and counted as a bad
value taken as fine (a daemon started, or a sweep began).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

from lvsbus.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
LVSCF = ROOT / "fixtures" / "lvscf" / "nat_router.cf"
GOLDEN_LOG = ROOT / "fixtures" / "logs" / "partition_heals"

#: what an option takes, by (command path, dest): decides its bad values
KINDS: dict[tuple[str, str], str] = {
    ("broker", "node"): "name",
    ("broker", "state_dir"): "dir_out",
    ("broker", "segment_mb"): "pos_float",
    ("broker", "retain_mb"): "nonneg_float",
    ("broker", "retain_days"): "nonneg_float",
    ("broker", "sndhwm"): "pos_int",
    ("broker", "curve_endpoint"): "endpoint",
    ("broker", "curve_secret"): "file_in",
    ("broker", "curve_authorized"): "dir_in",
    ("broker", "log_stats_s"): "nonneg_float",
    ("broker", "spill_dir"): "dir_out",
    ("broker", "stop_flush_s"): "nonneg_float",
    ("keys heartbeat", "out"): "file_out_made",  # its directory is made when missing
    ("router", "max_restarts"): "pos_int",
    ("router", "restart_window"): "pos_float",
    ("ipvs zero", "service"): "name",
    ("events tail", "state_dir"): "dir_in",
    ("events tail", "type"): "name",
    ("events tail", "from_seq"): "pos_int",
    ("events tail", "count"): "pos_int",
    ("events tail", "timeout"): "pos_float",
    ("events tail", "connect"): "endpoint",
    ("events tail", "key"): "file_in",
    ("events tail", "server_key"): "file_in",
    ("events emit", "state_dir"): "dir_in",
    ("events emit", "type"): "event_type",
    ("events emit", "payload"): "json",
    ("events emit", "name"): "name",
    ("keys generate", "dir"): "dir_out",
    ("keys generate", "name"): "name",
    ("schemas export", "dir"): "dir_out",
    ("log check", "dir"): "dir_in",
    ("log dump", "dir"): "dir_in",
    ("log dump", "from_seq"): "pos_int",
    ("log dump", "to_seq"): "pos_int",
    ("check-config", "file"): "file_in",
    ("config convert", "file"): "file_in",
    ("config diff", "old"): "file_in",
    ("config diff", "new"): "file_in",
    ("router", "config"): "file_in",
    ("router", "state_dir"): "dir_out",
    ("status", "state_dir"): "dir_in",
    ("ipvs save", "config"): "file_in",
    ("ipvs save", "state_dir"): "dir_in",
    ("ipvs show", "state_dir"): "dir_in",
    ("replay", "logs"): "dir_in",
    ("replay", "what_if"): "file_in",
    ("replay", "html"): "file_out",
    ("replay", "from_seq"): "pos_int",
    ("replay", "to_seq"): "pos_int",
    ("replay", "since"): "time",
    ("replay", "until"): "time",
    ("replay", "type"): "name",
    ("replay", "service"): "name",
    ("replay", "from_snapshot"): "dir_in",
    ("simulate", "seed"): "nonneg_int",
    ("simulate", "seeds"): "range",
    ("simulate", "routers"): "pos_int",
    ("simulate", "servers"): "pos_int",
    ("simulate", "faults"): "file_in",
    ("simulate", "logs"): "dir_out",
    ("simulate", "golden"): "dir_out",
    ("demo", "out"): "dir_out",
    ("demo", "vm_timeout"): "pos_float",
    ("demo", "vm_cpus"): "nonneg_int",  # 0 = as many as suit the host
    ("bgp drain", "state_dir"): "dir_in",
    ("bgp drain", "reason"): "text256",
    ("bgp drain", "wait"): "nonneg_float",
    ("bgp resume", "state_dir"): "dir_in",
    ("bgp resume", "reason"): "text256",
    ("bgp resume", "wait"): "nonneg_float",
    ("server drain", "virtual"): "name",
    ("server drain", "server"): "name",
    ("server drain", "state_dir"): "dir_in",
    ("server drain", "reason"): "text256",
    ("server drain", "wait"): "nonneg_float",
    ("server disable", "virtual"): "name",
    ("server disable", "server"): "name",
    ("server disable", "state_dir"): "dir_in",
    ("server disable", "reason"): "text256",
    ("server disable", "wait"): "nonneg_float",
    ("server enable", "virtual"): "name",
    ("server enable", "server"): "name",
    ("server enable", "state_dir"): "dir_in",
    ("server enable", "reason"): "text256",
    ("server enable", "wait"): "nonneg_float",
    ("handover", "state_dir"): "dir_in",
    ("handover", "reason"): "text256",
    ("handover", "wait"): "nonneg_float",
    ("handover", "hold"): "pos_int",
    ("web passwd", "user"): "name",
    ("web passwd", "file"): "file_out",
}

#: required arguments (and a cheap mode) each command gets when another option is the bad one
BASE: dict[str, list[str]] = {
    "broker": ["--node", "n1", "--state-dir", "{tmp}/state"],
    "events tail": ["--state-dir", "{tmp}/state", "--timeout", "0.2"],
    "events emit": ["--state-dir", "{tmp}/state", "bus.probe", '{"sent_ns": 1, "n": 0, "pad": ""}'],
    "keys generate": ["--dir", "{tmp}/keys", "--name", "k1"],
    "keys heartbeat": ["--out", "{tmp}/hb.key"],
    "ipvs zero": [],
    "schemas export": ["--check"],
    "log check": [str(GOLDEN_LOG / "lvs1")],
    "log dump": [str(GOLDEN_LOG / "lvs1")],
    "check-config": [str(LVSCF)],
    "config convert": [str(LVSCF)],
    "config diff": [str(LVSCF), str(LVSCF)],
    "router": ["--config", str(LVSCF), "--state-dir", "{tmp}/state"],
    "status": ["--state-dir", "{tmp}/state"],
    "ipvs save": ["--config", str(LVSCF)],
    "ipvs show": ["--state-dir", "{tmp}/state"],
    "replay": ["--verify", str(GOLDEN_LOG / "lvs1")],
    "simulate": ["--seed", "0"],
    "demo": ["bus"],
    **{f"server {a}": ["--state-dir", "{tmp}/state", "web", "s1"] for a in ("drain", "disable", "enable")},
    "handover": ["--state-dir", "{tmp}/state"],
    "web passwd": ["--file", "{tmp}/web.passwd", "u1"],
}

#: where one option needs another baseline (ipvs save reads the log only without --config)
BASE_FOR: dict[tuple[str, str], list[str]] = {("ipvs save", "state_dir"): []}

#: a bad value is left out where it is a good one for that option (an output directory that does
#: not exist yet is made)
BAD: dict[str, list[str]] = {
    "file_in": ["{tmp}/missing/file", "{tmp}/adir", "/dev/null", ""],
    "dir_in": ["{tmp}/missing/dir", "{tmp}/afile", "/dev/null", ""],
    "dir_out": ["{tmp}/afile", "{tmp}/afile/sub", "/dev/null", ""],
    "file_out": ["{tmp}/adir", "{tmp}/missing/file.html", "/dev/null/x", ""],
    "file_out_made": ["{tmp}/adir", "/dev/null/x", ""],
    "pos_int": ["abc", "-1", "0", "", "99999999999999999999999999"],
    "nonneg_int": ["abc", "-1", "", "99999999999999999999999999"],
    "pos_float": ["abc", "-1", "0", "", "nan", "inf", "1e400"],
    "nonneg_float": ["abc", "-1", "", "nan", "inf", "1e400"],
    "name": [""],
    "endpoint": ["", "nonsense", "tcp://"],
    "event_type": ["", "no.such_type"],
    "json": ["", "{", "[1]", "nan"],
    "time": ["", "abc", "1e400", "nan"],
    "range": ["abc", "", "5-1", "-", "0-99999999999999999999", "1-2-3", "a-b"],
    "text256": ["x" * 257],
}

TIMEOUT_S = 8.0


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) of every subcommand that runs something."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs and path:
        yield " ".join(path), parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaves(child, path + (name,))


def _options(parser: argparse.ArgumentParser):
    """(dest, option string or None for a positional) of every value-taking argument."""
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) or a.nargs == 0:
            continue
        if a.choices is not None:  # argparse itself refuses other values
            continue
        yield a.dest, (a.option_strings[0] if a.option_strings else None)


LEAVES = dict(_leaves(build_parser()))


def _cases():
    for cmd, parser in LEAVES.items():
        for dest, opt in _options(parser):
            kind = KINDS.get((cmd, dest))
            if kind is None:
                continue
            for value in BAD[kind]:
                yield pytest.param(cmd, dest, opt, value, id=f"{cmd}:{dest}={value or 'EMPTY'}")


def _argv(cmd: str, dest: str, opt: str | None, value: str) -> list[str]:
    base = list(BASE_FOR.get((cmd, dest), BASE.get(cmd, [])))
    parser = LEAVES[cmd]
    if opt is not None:
        if opt in base:  # replace the baseline's value
            i = base.index(opt)
            del base[i:i + 2]
        return cmd.split() + base + [opt, value]
    # a positional: replace the baseline's value for it, in its place
    positionals = [a.dest for a in parser._actions if not a.option_strings and a.nargs != 0
                   and not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction))]
    index = positionals.index(dest)
    plain = [i for i, x in enumerate(base) if not x.startswith("-")
             and not (i > 0 and base[i - 1].startswith("--") and base[i - 1] not in ("--verify",))]
    if index < len(plain):
        base[plain[index]] = value
    else:
        base.append(value)
    return cmd.split() + base


def run_cli(argv: list[str], tmp: Path, timeout: float = TIMEOUT_S) -> tuple[int | None, str, str]:
    """``main(argv)`` in a forked child: (exit status or None if killed at the bound, out, err)."""
    out_path, err_path = tmp / "stdout", tmp / "stderr"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.setpgid(0, 0)
            fd_out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            fd_err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd_out, 1)
            os.dup2(fd_err, 2)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            os.chdir(tmp)
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # noqa: BLE001 - what a user would see
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(st)
            break
        time.sleep(0.02)
    if status is None:
        try:
            os.killpg(pid, signal.SIGKILL)  # its own group: the child and what it started
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    return status, out_path.read_text(errors="replace"), err_path.read_text(errors="replace")


def error_lines(err: str) -> list[str]:
    """stderr without argparse's usage block (its error is the line after it)."""
    lines = [line for line in err.splitlines() if line.strip()]
    if lines and lines[0].startswith("usage:"):
        for i, line in enumerate(lines):
            if ": error: " in line:
                return lines[i:]
    return lines


@pytest.fixture
def sandbox(tmp_path):
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "state").mkdir()
    return tmp_path


def test_every_option_has_a_kind():
    missing = [(cmd, dest) for cmd, parser in LEAVES.items() for dest, _ in _options(parser)
               if (cmd, dest) not in KINDS]
    assert not missing, f"options without a row in KINDS (add their bad values): {missing}"


@pytest.mark.parametrize("cmd,dest,opt,value", list(_cases()))
def test_bad_value_is_a_one_line_error(sandbox, cmd, dest, opt, value):
    argv = [a.replace("{tmp}", str(sandbox)) for a in _argv(cmd, dest, opt, value)]
    status, out, err = run_cli(argv, sandbox)
    problems = []
    if status is None:
        problems.append(f"still running after {TIMEOUT_S}s: the bad value was taken as fine")
    elif status == 0:
        problems.append("exit 0: the bad value was taken as fine")
    if "Traceback" in err:
        problems.append("a traceback:\n" + err[-1500:])
    elif status is not None and status != 0 and len(error_lines(err)) != 1:
        problems.append(f"not one line of error: {error_lines(err)[:6]}")
    assert not problems, f"lvsbus {' '.join(argv)}: " + "; ".join(problems)


def test_a_command_module_that_cannot_be_imported_is_an_error_not_a_missing_subcommand(monkeypatch):
    """The parser used to skip a listed module it could not find, so a subcommand could vanish
    from ``lvsbus --help`` without a word."""
    import lvsbus.cli as cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "lvsbus.cli.no_such_module"))
    with pytest.raises(ModuleNotFoundError, match="no_such_module"):
        cli.build_parser()


def test_the_command_owners_table_is_what_each_module_adds():
    """``lvsbus COMMAND`` imports only COMMAND's module (lvsbus.cli.OWNER): the table must say
    exactly what each module's ``add_commands`` adds, or a command would be missing from its own
    parser (or taken by the wrong module)."""
    import lvsbus.cli as cli

    for module, cmds in cli.COMMANDS.items():
        parser = cli.build_parser(only=module)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert tuple(sub.choices) == cmds, module
    full = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(full.choices) == sorted(cli.OWNER)


def test_a_router_start_imports_neither_the_simulator_nor_the_replay_tool():
    """Every router and broker start goes through ``lvsbus.cli.main``: it must not import the
    other commands' modules (the simulator alone took ~0.16 s; issue 18 goal 2)."""
    code = ("import sys; from lvsbus.cli import main\n"
            "try:\n    main(['router', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('lvsbus_tools', 'lvsbus.cli.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip().splitlines()[-1] == "['lvsbus.cli.router']"
