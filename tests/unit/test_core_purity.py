"""A pure core imports no I/O: no module it reaches (inside lvsbus/ and services/) imports a
clock, a socket, netlink, randomness, asyncio, logging, a process module, the file system or sys.

Static: follows the import statements of our own modules from each core module, so that even
`time` (already loaded by the interpreter at start) is caught.
"""
import pytest

from lvsbus_services.cores import CORES
from tests.helpers.imports import OURS, imports_of, module_path

FORBIDDEN = {
    "zmq", "socket", "pyroute2", "time", "random", "asyncio", "structlog", "logging", "subprocess",
    "threading", "os", "select", "selectors", "uuid", "secrets", "datetime", "signal", "uvloop", "ssl",
    "pathlib", "shutil", "sys",
}
def reachable(start: str) -> dict[str, str]:
    """Every module reachable from start -> the module that imported it."""
    seen = {start: ""}
    todo = [start]
    while todo:
        mod = todo.pop()
        for imp in imports_of(mod):
            if imp not in seen:
                seen[imp] = mod
                if imp.split(".")[0] in OURS and module_path(imp):
                    # a package's __init__ is executed too
                    parts = imp.split(".")
                    for i in range(1, len(parts)):
                        parent = ".".join(parts[:i])
                        if parent not in seen and module_path(parent):
                            seen[parent] = imp
                            todo.append(parent)
                    todo.append(imp)
    return seen


PURE = [CORES[n].split(":")[0] for n in CORES] + [
    "lvsbus.runtime.core", "lvsbus.runtime.timer", "lvsbus.wire.events", "lvsbus.wire.schema", "lvsbus.ipvs.table", "lvsbus.ipvs.stats", "lvsbus.config.model",
    "lvsbus_services.metrics.fold", "lvsbus.router.supervision", "lvsbus_services.nanny.schedule", "lvsbus_services.bgp.watch", "lvsbus_services.pulse.watch", "lvsbus_services.pulse.tracking", "lvsbus.config.derive",
    # the config package (parsers, validation, diff) and pulse's wire format (were file-local checks in
    # test_config_model and test_pulse_core)
    "lvsbus.config", "lvsbus.config.validate", "lvsbus.config.native", "lvsbus.config.lvscf", "lvsbus.config.diff",
    "lvsbus_services.pulse.wire",
]


@pytest.mark.parametrize("module", PURE)
def test_core_reaches_no_io_module(module):
    assert module_path(module), f"{module}: no such module (a core listed in lvsbus_services.cores, or above)"
    seen = reachable(module)
    bad = {m: by for m, by in seen.items() if m.split(".")[0] in FORBIDDEN}
    assert not bad, f"{module} reaches I/O modules: " + ", ".join(f"{m} (imported by {by})" for m, by in bad.items())


def test_the_check_can_fail():
    seen = reachable("lvsbus.bus")
    assert "zmq" in seen and "time" in seen
