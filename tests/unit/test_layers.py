"""The tree reads as layers (README "Layout"): every import of this project's own modules points
down or sideways, never up, and no two modules import each other when loaded (no cycles).

Static (ast), over every import statement, also those inside functions: a lazy import is still a
dependency. From the top: the command line and the demo, the tools, the services, the router
(supervisor, status, operator requests), the runtime that runs a core on the bus, the bus, the
log, host I/O, the domain model (config, the IPVS table), the wire (envelope, schema, catalog).
"""
from tests.helpers.imports import OURS, all_modules, imports_of

#: top first; a module may import its own layer and those below it
LAYERS = (
    ("lvsbus.cli",),
    ("lvsbus.demo",),
    ("lvsbus_tools",),
    ("lvsbus_services",),
    ("lvsbus.router",),
    ("lvsbus.runtime",),
    ("lvsbus.bus",),
    ("lvsbus.log",),
    ("lvsbus.host",),
    ("lvsbus.config", "lvsbus.ipvs"),
    ("lvsbus.wire",),
)


def layer(module: str) -> int | None:
    for i, packages in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in packages):
            return i
    return None


def test_every_module_is_in_a_layer():
    """A new top-level module or package must be given its place in LAYERS (``lvsbus`` itself is
    an empty namespace)."""
    assert [m for m in all_modules() if layer(m) is None and m not in OURS] == []


def test_no_import_points_up():
    upward = []
    for m in all_modules():
        here = layer(m)
        if here is None:
            continue
        for imp in imports_of(m):
            there = layer(imp)
            if there is not None and there < here:
                upward.append(f"{m} imports {imp} ({LAYERS[there][0]} is above {LAYERS[here][0]})")
    assert upward == []


def test_no_import_cycle():
    """Among the imports run at load (not those in functions or under TYPE_CHECKING)."""
    modules = set(all_modules())
    graph = {m: sorted(i for i in imports_of(m, top_level_only=True) if i in modules and i != m)
             for m in modules}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in graph[m]:
            if state.get(n) == 1:
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m)
    assert cycles == []


def test_the_layer_check_sees_an_upward_import(monkeypatch):
    """The check itself bites: a wire module importing the bus is reported."""
    import tests.unit.test_layers as me

    real = imports_of
    monkeypatch.setattr(me, "imports_of", lambda m, **kw: real(m, **kw) | ({"lvsbus.bus"} if m == "lvsbus.wire.events" else set()))
    try:
        test_no_import_points_up()
    except AssertionError as exc:
        assert "lvsbus.wire.events imports lvsbus.bus" in str(exc)
    else:
        raise AssertionError("an upward import went unseen")


def test_the_cycle_check_sees_a_cycle(monkeypatch):
    """events imports schema at load; schema importing events back is a cycle, and is reported."""
    import tests.unit.test_layers as me

    real = imports_of
    monkeypatch.setattr(me, "imports_of", lambda m, **kw: real(m, **kw) | ({"lvsbus.wire.events"} if m == "lvsbus.wire.schema" else set()))
    try:
        test_no_import_cycle()
    except AssertionError as exc:
        assert "lvsbus.wire.schema" in str(exc) and "lvsbus.wire.events" in str(exc)
    else:
        raise AssertionError("an import cycle went unseen")
