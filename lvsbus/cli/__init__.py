"""The ``lvsbus`` command: one entry point, subcommands registered by the modules that own them.

Each module that provides subcommands exposes ``add_commands(subparsers)``; it adds its parsers and
sets ``func`` on each, a callable ``func(args) -> int`` (the exit status). Modules are listed in
``COMMAND_MODULES`` with the commands it adds; each keeps its heavy imports inside its commands.
``lvsbus COMMAND ...`` imports the one module that owns COMMAND (``lvsbus router`` starts without
importing the simulator or the replay tool: ~0.17 s saved on every router and broker start, issue 18
goal 2); ``lvsbus``, ``lvsbus --help`` and an unknown command build the whole parser. A module that
cannot be imported is an error, never a subcommand silently missing; a test keeps the owners table
equal to what each module adds.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from lvsbus.host.argtypes import run_parsed

#: module -> the top-level commands its ``add_commands`` adds (in ``lvsbus --help`` order)
COMMANDS: dict[str, tuple[str, ...]] = {
    "lvsbus.cli.bus": ("broker", "events", "keys", "schemas", "log"),
    "lvsbus.cli.config": ("check-config", "config"),
    "lvsbus.cli.router": ("router", "status", "fsm"),
    "lvsbus.cli.ipvs": ("ipvs",),  # ipvs save / show
    "lvsbus_tools.replay": ("replay",),
    "lvsbus_tools.simulate_cli": ("simulate",),
    "lvsbus.cli.demo": ("demo",),
    "lvsbus.cli.operator": ("server", "handover", "bgp"),  # server drain|disable|enable, bgp drain|resume
    "lvsbus_tools.web.cli": ("web",),  # web, web passwd
}
COMMAND_MODULES = tuple(COMMANDS)
#: command -> the module that owns it
OWNER = {cmd: module for module, cmds in COMMANDS.items() for cmd in cmds}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``lvsbus`` parser: every module's commands, or ``only`` that module's."""
    parser = argparse.ArgumentParser(
        prog="lvsbus",
        description="lvsbus: a Linux Virtual Server control plane (pulse, lvsd, nanny, IPVS applier) "
        "on a recorded, replayable event bus.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES if only is None else (only,):
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(OWNER.get(words[0]) if words else None)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return run_parsed(args)


if __name__ == "__main__":
    sys.exit(main())
