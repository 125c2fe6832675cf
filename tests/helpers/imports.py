"""The import statements of this project's own modules, read statically (ast): for the purity and
layer tests. ``lvsbus_services`` is ``services/`` and ``lvsbus_tools`` is ``tools/``."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = ("lvsbus", "lvsbus_services", "lvsbus_tools")
#: import name -> directory
DIRS = {"lvsbus_services": "services", "lvsbus_tools": "tools"}


def module_path(name: str) -> Path | None:
    parts = name.split(".")
    base = ROOT.joinpath(DIRS.get(parts[0], parts[0]), *parts[1:])
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.exists():
            return p
    return None


def all_modules() -> list[str]:
    """Every module of lvsbus, lvsbus_services and lvsbus_tools."""
    out = []
    for top in OURS:
        d = ROOT / DIRS.get(top, top)
        for p in sorted(d.rglob("*.py")):
            rel = p.relative_to(d).with_suffix("")
            parts = [top, *rel.parts]
            if parts[-1] == "__init__":
                parts.pop()
            out.append(".".join(parts))
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(name: str, top_level_only: bool = False) -> set[str]:
    """The modules ``name`` imports (``from pkg import module`` names the module). With
    ``top_level_only``: only the imports run when the module is loaded (not those inside functions
    or under ``if TYPE_CHECKING``): the ones that can make an import cycle."""
    path = module_path(name)
    assert path is not None, name
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes: list[ast.AST] = []
    if top_level_only:
        todo: list[ast.AST] = list(tree.body)
        while todo:
            n = todo.pop()
            if isinstance(n, ast.If) and _is_type_checking(n):
                todo.extend(n.orelse)
            elif isinstance(n, (ast.If, ast.Try)):
                todo.extend(n.body + n.orelse + getattr(n, "finalbody", []))
                for h in getattr(n, "handlers", []):
                    todo.extend(h.body)
            else:
                nodes.append(n)
    else:
        nodes = list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            out.add(mod)
            for a in node.names:  # "from pkg import module"
                if module_path(f"{mod}.{a.name}"):
                    out.add(f"{mod}.{a.name}")
    return out
