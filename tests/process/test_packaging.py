"""Packaging: services/ and tools/ are installed under the project's own names (lvsbus_services,
lvsbus_tools), never as top-level ``services``/``tools`` that another distribution could collide
with; a checkout run with PYTHONPATH and an installed wheel both work."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"lvsbus": "lvsbus", "lvsbus_services": "services", "lvsbus_tools": "tools"}


def test_pyproject_lists_every_package_of_the_tree():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["package-dir"] == {"lvsbus_services": "services", "lvsbus_tools": "tools"}
    tree = set()
    for name, directory in NAMES.items():
        for init in (ROOT / directory).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / directory)
            tree.add(".".join([name, *rel.parts]))
    assert set(cfg["packages"]) == tree


def test_a_checkout_imports_lvsbus_services_from_services_and_refuses_the_bare_name():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = ("import lvsbus_services.nanny.core as m, lvsbus_tools.replay as r; print(m.__file__); print(r.__file__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", env=env, check=True).stdout
    assert out.split() == [str(ROOT / "services" / "nanny" / "core.py"), str(ROOT / "tools" / "replay.py")]
    r = subprocess.run([sys.executable, "-c", "import services"], capture_output=True, text=True, cwd=str(ROOT), env=env)
    assert r.returncode == 1 and "import lvsbus_services, not services" in r.stderr


@pytest.mark.slow
def test_pip_install_into_a_venv_installs_no_top_level_services_or_tools(tmp_path):
    """A real ``pip install .`` (a wheel built from a copy of the tree) into a fresh venv that sees
    this interpreter's site-packages for the dependencies."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((ROOT / rel).read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(src)],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, env=env, check=True).stdout.strip())
    top = {p.name for p in site.iterdir()}
    assert {"lvsbus", "lvsbus_services", "lvsbus_tools"} <= top
    assert not {"services", "tools"} & top
    assert (site / "lvsbus_services" / "nanny" / "core.py").exists() and (site / "lvsbus_tools" / "replay.py").exists()
    # the installed copy is the one used, from any directory, and the CLI works
    code = ("import importlib.util as u, lvsbus, lvsbus_services, lvsbus_tools.replay as r; "
            "print(lvsbus.__file__, r.__file__, u.find_spec('services') is None or "
            "not u.find_spec('services').origin.startswith(" + repr(str(venv)) + "))")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    words = out.stdout.split()
    assert words[0].startswith(str(site)) and words[1].startswith(str(site)) and words[2] == "True", out.stdout
    r = subprocess.run([str(venv / "bin" / "lvsbus"), "replay", "--help"], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("usage: lvsbus replay"), r.stderr[-2000:]
    r = subprocess.run([str(py), "-m", "lvsbus_services.nanny", "--help"], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0 and "lvsbus_services.nanny" in r.stdout, r.stderr[-2000:]
