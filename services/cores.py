"""Every service core, by name: what the runtime, replay and the simulator look up.

Values are "module:Class"; a core whose module is not there (yet) is simply absent.
"""
from __future__ import annotations

from importlib import import_module

from lvsbus.core import Core

CORES = {
    "pulse": "lvsbus_services.pulse.core:PulseCore",
    "nanny": "lvsbus_services.nanny.core:NannyCore",
    "lvsd": "lvsbus_services.lvsd.core:LvsdCore",
    "ipvs": "lvsbus_services.ipvs.core:ApplierCore",
}


def load(name: str) -> type[Core]:
    module, _, cls = CORES[name].partition(":")
    return getattr(import_module(module), cls)


def available() -> dict[str, type[Core]]:
    out = {}
    for name in CORES:
        try:
            out[name] = load(name)
        except ModuleNotFoundError as exc:
            if exc.name and CORES[name].startswith(exc.name):
                continue
            raise
    return out
