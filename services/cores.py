"""Every service core, by name: what the runtime, replay and the simulator look up.

Values are "module:Class". Every core is always there: one that cannot be imported is an error,
never a core silently left out of a replay or a simulation.
"""
from __future__ import annotations

from importlib import import_module

from lvsbus.runtime.core import Core

CORES = {
    "pulse": "lvsbus_services.pulse.core:PulseCore",
    "nanny": "lvsbus_services.nanny.core:NannyCore",
    "lvsd": "lvsbus_services.lvsd.core:LvsdCore",
    "ipvs": "lvsbus_services.ipvs.core:ApplierCore",
    "bgp": "lvsbus_services.bgp.core:BgpCore",
    "alerts": "lvsbus_services.alerts.core:AlertsCore",
}


def load(name: str) -> type[Core]:
    module, _, cls = CORES[name].partition(":")
    return getattr(import_module(module), cls)


def available() -> dict[str, type[Core]]:
    """Every core class by name (an ImportError propagates: a replay must fail loudly if a core
    it needs is absent)."""
    return {name: load(name) for name in CORES}
