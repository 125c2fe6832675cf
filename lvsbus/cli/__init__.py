"""The ``lvsbus`` command: one entry point, subcommands registered by the modules that own them.

Each module that provides subcommands exposes ``add_commands(subparsers)``; it adds its parsers and
sets ``func`` on each, a callable ``func(args) -> int`` (the exit status). Modules are listed in
``COMMAND_MODULES``; each keeps its heavy imports inside its commands, so ``lvsbus --help`` stays
fast. A module that cannot be imported is an error, never a subcommand silently missing.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from lvsbus.host.argtypes import run_parsed

COMMAND_MODULES = (
    "lvsbus.cli.bus",
    "lvsbus.cli.config",
    "lvsbus.cli.router",  # router, status, fsm
    "lvsbus.cli.ipvs",  # ipvs save / show
    "lvsbus_tools.replay",  # replay
    "lvsbus_tools.simulate_cli",  # simulate
    "lvsbus.cli.demo",  # demo
    "lvsbus.cli.operator",  # server drain|disable|enable, handover, bgp drain|resume
    "lvsbus_tools.web.cli",  # web, web passwd
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lvsbus",
        description="lvsbus: a Linux Virtual Server control plane (pulse, lvsd, nanny, IPVS applier) "
        "on a recorded, replayable event bus.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return run_parsed(args)


if __name__ == "__main__":
    sys.exit(main())
